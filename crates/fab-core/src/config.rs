//! Configuration: raw key/value pairs in, one validated [`Config`] out.
//!
//! The `fab` binary reads `fab.toml` and the environment into a [`RawConfig`] (every key has the
//! deployment guide's name, in the file and in the environment alike); [`Config::from_raw`] turns
//! it into typed settings in one step and reports *every* problem at once, each naming its key:
//! `SECRET_KEY: 12 characters, production needs at least 32`. After that nothing re-checks it.

use crate::password::{HashParams, PasswordPolicy};
use crate::secret::Secret;
use crate::session::SessionPolicy;
use chrono::Duration;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

/// A value as the file or the environment gave it.
#[derive(Debug, Clone, PartialEq)]
pub enum RawValue {
    /// A string (every environment variable is one).
    Text(String),
    /// A TOML boolean.
    Bool(bool),
    /// A TOML integer.
    Integer(i64),
}

impl fmt::Display for RawValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RawValue::Text(s) => f.write_str(s),
            RawValue::Bool(b) => write!(f, "{b}"),
            RawValue::Integer(i) => write!(f, "{i}"),
        }
    }
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// fab's built-in default.
    Default,
    /// Generated at first run (e.g. the development SECRET_KEY kept in the data directory).
    Generated(String),
    /// The config file at this path.
    File(String),
    /// This environment variable.
    Env(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::Generated(what) => write!(f, "generated ({what})"),
            Origin::File(path) => write!(f, "file {path}"),
            Origin::Env(name) => write!(f, "env {name}"),
        }
    }
}

/// One raw value and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct RawEntry {
    /// The value.
    pub value: RawValue,
    /// Its source.
    pub origin: Origin,
}

/// Unvalidated configuration: canonical key name to value.
#[derive(Debug, Clone, Default)]
pub struct RawConfig {
    entries: BTreeMap<String, RawEntry>,
    problems: Vec<ConfigProblem>,
}

impl RawConfig {
    /// An empty configuration (every key at its default).
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` (a canonical name or an alias), later sources overriding earlier ones.
    /// Unknown keys are recorded as problems.
    pub fn set(&mut self, key: &str, value: RawValue, origin: Origin) {
        let upper = key.to_ascii_uppercase();
        match canonical_key(&upper) {
            Some(name) => {
                self.entries
                    .insert(name.to_owned(), RawEntry { value, origin });
            }
            None => self.problems.push(ConfigProblem::new(
                &upper,
                format!("unknown key (from {origin})"),
            )),
        }
    }

    /// Records a problem found while reading a source (e.g. a file value of a type no key
    /// takes), so validation reports it with all the others.
    pub fn report_problem(&mut self, key: &str, message: impl Into<String>) {
        self.problems
            .push(ConfigProblem::new(&key.to_ascii_uppercase(), message));
    }

    /// The raw entry for a canonical key.
    pub fn get(&self, key: &str) -> Option<&RawEntry> {
        self.entries.get(key)
    }

    /// Whether a canonical key has a value.
    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }
}

/// The description of one configuration key.
#[derive(Debug, Clone, Copy)]
pub struct KeySpec {
    /// Canonical name (file and environment).
    pub name: &'static str,
    /// Other names accepted for it (Flask's and SQLAlchemy's).
    pub aliases: &'static [&'static str],
    /// Whether its value is redacted in every display.
    pub secret: bool,
    /// The default, as shown in the reference.
    pub default: &'static str,
    /// What it does and why the default.
    pub doc: &'static str,
}

/// Every configuration key fab reads.
pub const KEYS: &[KeySpec] = &[
    KeySpec {
        name: "FAB_ENV",
        aliases: &["FLASK_ENV"],
        secret: false,
        default: "development",
        doc: "`development` or `production`. Production refuses weak secrets and insecure cookies.",
    },
    KeySpec {
        name: "SECRET_KEY",
        aliases: &[],
        secret: true,
        default: "generated in development",
        doc: "Signs API tokens. Production needs at least 32 characters; development generates one and keeps it in the data directory.",
    },
    KeySpec {
        name: "FAB_DATA_DIR",
        aliases: &[],
        secret: false,
        default: "data",
        doc: "Directory for the embedded SQLite database and generated development secrets.",
    },
    KeySpec {
        name: "DATABASE_URL",
        aliases: &["SQLALCHEMY_DATABASE_URI"],
        secret: true,
        default: "sqlite://<FAB_DATA_DIR>/fab.db",
        doc: "`sqlite:///abs/path.db`, `sqlite://relative.db` or `postgresql://user:pass@host:5432/db`.",
    },
    KeySpec {
        name: "FAB_BIND",
        aliases: &[],
        secret: false,
        default: "127.0.0.1:8080",
        doc: "Address `fab serve` listens on. Loopback by default: expose it through a proxy or on purpose.",
    },
    KeySpec {
        name: "SESSION_TIMEOUT",
        aliases: &[],
        secret: false,
        default: "3600",
        doc: "Idle timeout of a session, in seconds (or `30m`, `1h`).",
    },
    KeySpec {
        name: "PERMANENT_SESSION_LIFETIME",
        aliases: &[],
        secret: false,
        default: "28800",
        doc: "Absolute lifetime of a session whatever its use, in seconds (or `8h`).",
    },
    KeySpec {
        name: "SESSION_COOKIE_SECURE",
        aliases: &[],
        secret: false,
        default: "true in production, false in development",
        doc: "Send the session cookie over HTTPS only; its name then takes the `__Host-` prefix.",
    },
    KeySpec {
        name: "SESSION_COOKIE_HTTPONLY",
        aliases: &[],
        secret: false,
        default: "true",
        doc: "Hide the session cookie from JavaScript.",
    },
    KeySpec {
        name: "SESSION_COOKIE_SAMESITE",
        aliases: &[],
        secret: false,
        default: "Lax",
        doc: "`Strict`, `Lax` or `None` (None requires Secure). Lax keeps cross-site posts from carrying the cookie.",
    },
    KeySpec {
        name: "SESSION_BACKEND",
        aliases: &[],
        secret: false,
        default: "sql",
        doc: "`sql` (the database) or `memory` (one process only; sessions end at restart).",
    },
    KeySpec {
        name: "PASSWORD_MIN_LENGTH",
        aliases: &[],
        secret: false,
        default: "12",
        doc: "Fewest characters in a new password.",
    },
    KeySpec {
        name: "FAB_PASSWORD_COMPLEXITY_ENABLED",
        aliases: &[],
        secret: false,
        default: "false",
        doc: "Flask-AppBuilder's complexity rule: two capitals, one of !@#$&*, two digits, three lower case letters.",
    },
    KeySpec {
        name: "PASSWORD_HASH_MEMORY_KIB",
        aliases: &[],
        secret: false,
        default: "19456",
        doc: "argon2id memory cost (OWASP minimum 19456 KiB; production refuses less).",
    },
    KeySpec {
        name: "PASSWORD_HASH_ITERATIONS",
        aliases: &[],
        secret: false,
        default: "2",
        doc: "argon2id time cost (OWASP minimum 2; production refuses less).",
    },
    KeySpec {
        name: "PASSWORD_HASH_PARALLELISM",
        aliases: &[],
        secret: false,
        default: "1",
        doc: "argon2id lanes.",
    },
    KeySpec {
        name: "JWT_ACCESS_TOKEN_EXPIRES",
        aliases: &[],
        secret: false,
        default: "900",
        doc: "Lifetime of an API access token, in seconds (15 minutes, as Flask-AppBuilder).",
    },
    KeySpec {
        name: "JWT_REFRESH_TOKEN_EXPIRES",
        aliases: &[],
        secret: false,
        default: "86400",
        doc: "Lifetime of an API refresh token, in seconds.",
    },
    KeySpec {
        name: "FAB_ADMIN_USERNAME",
        aliases: &[],
        secret: false,
        default: "admin",
        doc: "Username of the admin `fab serve` creates when there is none.",
    },
    KeySpec {
        name: "FAB_ADMIN_EMAIL",
        aliases: &[],
        secret: false,
        default: "admin@fab.localhost",
        doc: "Email of that first admin.",
    },
    KeySpec {
        name: "FAB_ADMIN_PASSWORD",
        aliases: &[],
        secret: true,
        default: "generated and printed once",
        doc: "Password of that first admin.",
    },
    KeySpec {
        name: "APP_NAME",
        aliases: &[],
        secret: false,
        default: "fab",
        doc: "Name shown in page titles and the navigation bar.",
    },
    KeySpec {
        name: "FAB_TEMPLATE_FOLDER",
        aliases: &[],
        secret: false,
        default: "none",
        doc: "Folder whose templates override the built-in ones of the same name.",
    },
    KeySpec {
        name: "FAB_LOG",
        aliases: &["RUST_LOG"],
        secret: false,
        default: "info",
        doc: "Log filter (tracing-subscriber syntax).",
    },
    KeySpec {
        name: "FAB_LOG_FORMAT",
        aliases: &[],
        secret: false,
        default: "text",
        doc: "`text` or `json`.",
    },
];

fn canonical_key(upper: &str) -> Option<&'static str> {
    KEYS.iter()
        .find(|k| k.name == upper || k.aliases.contains(&upper))
        .map(|k| k.name)
}

/// The key a value is filed under, for an environment variable name; None when fab ignores it.
pub fn key_for_env(name: &str) -> Option<&'static str> {
    canonical_key(name)
}

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The key at fault.
    pub key: String,
    /// Why.
    pub message: String,
}

impl ConfigProblem {
    fn new(key: &str, message: impl Into<String>) -> Self {
        Self {
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Every problem found, at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigProblem>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "invalid configuration ({} problems):", self.0.len())?;
        for problem in &self.0 {
            writeln!(f, "  {problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Deployment mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    /// Local work: generated secrets, plain-HTTP cookies allowed, automatic SQLite migration.
    Development,
    /// Real deployments: every insecure setting is refused.
    Production,
}

/// Where data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// An SQLite file (created when missing).
    Sqlite {
        /// Path of the database file.
        path: PathBuf,
    },
    /// A PostgreSQL server.
    Postgres {
        /// The full `postgres://` URL (may carry a password).
        url: Secret,
    },
}

impl DatabaseUrl {
    /// Parses `sqlite://...` and `postgres(ql)(+driver)://...`.
    pub fn parse(value: &str) -> Result<Self, String> {
        let value = value.trim();
        if let Some(rest) = value.strip_prefix("sqlite:") {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            let path = if let Some(abs) = path.strip_prefix('/') {
                // sqlite:///abs/path (and SQLAlchemy's sqlite:////abs/path)
                format!("/{}", abs.trim_start_matches('/'))
            } else {
                path.to_owned()
            };
            let path = path.split('?').next().unwrap_or_default().to_owned();
            if path.is_empty() {
                return Err(
                    "an sqlite URL needs a file path, e.g. sqlite:///var/lib/fab/fab.db".into(),
                );
            }
            return Ok(DatabaseUrl::Sqlite {
                path: PathBuf::from(path),
            });
        }
        let scheme_end = value
            .find("://")
            .ok_or_else(|| "not a URL: expected sqlite://... or postgresql://...".to_owned())?;
        let scheme = &value[..scheme_end];
        let base_scheme = scheme.split('+').next().unwrap_or_default();
        if base_scheme != "postgresql" && base_scheme != "postgres" {
            return Err(format!(
                "unsupported database scheme `{scheme}`: use sqlite or postgresql"
            ));
        }
        let normalised = format!("postgres{}", &value[scheme_end..]);
        let parsed = url::Url::parse(&normalised).map_err(|e| format!("unreadable URL: {e}"))?;
        if parsed.host_str().is_none_or(str::is_empty) {
            return Err("a postgresql URL needs a host".into());
        }
        if parsed.path().trim_start_matches('/').is_empty() {
            return Err("a postgresql URL needs a database name".into());
        }
        Ok(DatabaseUrl::Postgres {
            url: Secret::new(normalised),
        })
    }

    /// The URL with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        match self {
            DatabaseUrl::Sqlite { path } => format!("sqlite://{}", path.display()),
            DatabaseUrl::Postgres { url } => match url::Url::parse(url.expose()) {
                Ok(mut parsed) => {
                    if parsed.password().is_some() {
                        let _ = parsed.set_password(Some("***"));
                    }
                    parsed.to_string()
                }
                Err(_) => "postgres://***".into(),
            },
        }
    }
}

/// The SameSite attribute of the session cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    /// Never sent cross-site.
    Strict,
    /// Sent on top-level cross-site navigations only (not on cross-site posts).
    Lax,
    /// Always sent (requires Secure).
    None,
}

impl SameSite {
    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            SameSite::Strict => "Strict",
            SameSite::Lax => "Lax",
            SameSite::None => "None",
        }
    }
}

/// Which session store to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionBackend {
    /// The database.
    Sql,
    /// Process memory.
    Memory,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Session and cookie settings.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// Expiry rules.
    pub policy: SessionPolicy,
    /// Secure cookie attribute (and `__Host-` name prefix).
    pub cookie_secure: bool,
    /// HttpOnly cookie attribute.
    pub cookie_http_only: bool,
    /// SameSite cookie attribute.
    pub same_site: SameSite,
    /// The store.
    pub backend: SessionBackend,
}

impl SessionSettings {
    /// The session cookie's name.
    pub fn cookie_name(&self) -> &'static str {
        if self.cookie_secure {
            "__Host-fab_session"
        } else {
            "fab_session"
        }
    }
}

/// The first admin `fab serve` creates when none exists.
#[derive(Debug, Clone)]
pub struct AdminBootstrap {
    /// Username.
    pub username: String,
    /// Email.
    pub email: String,
    /// Given password; None generates one.
    pub password: Option<Secret>,
}

/// One line of the effective configuration, for `fab config check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EffectiveEntry {
    /// Key.
    pub key: &'static str,
    /// Value, `[redacted]` for secrets.
    pub value: String,
    /// Where it came from.
    pub origin: Origin,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Deployment mode.
    pub environment: Environment,
    /// Signing key for tokens.
    pub secret_key: Secret,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Database.
    pub database: DatabaseUrl,
    /// Listen address.
    pub bind: SocketAddr,
    /// Sessions and cookies.
    pub session: SessionSettings,
    /// Rules for new passwords.
    pub password_policy: PasswordPolicy,
    /// argon2id costs.
    pub hash_params: HashParams,
    /// API access token lifetime.
    pub jwt_access_ttl: Duration,
    /// API refresh token lifetime.
    pub jwt_refresh_ttl: Duration,
    /// First admin.
    pub admin: AdminBootstrap,
    /// Application name.
    pub app_name: String,
    /// Template overrides.
    pub template_folder: Option<PathBuf>,
    /// Log filter.
    pub log_filter: String,
    /// Log format.
    pub log_format: LogFormat,
    /// Things worth saying that are not errors.
    pub warnings: Vec<String>,
    /// Every key's effective value, redacted.
    pub effective: Vec<EffectiveEntry>,
}

/// The example secret of the deployment guide, refused in production.
pub const GUIDE_EXAMPLE_SECRET: &str = "your-very-long-random-secret-key-minimum-32-chars";

struct Reader<'a> {
    raw: &'a RawConfig,
    problems: Vec<ConfigProblem>,
    effective: Vec<EffectiveEntry>,
}

impl Reader<'_> {
    fn spec(key: &'static str) -> &'static KeySpec {
        #[allow(
            clippy::expect_used,
            reason = "keys are compile-time constants of this module"
        )]
        KEYS.iter()
            .find(|k| k.name == key)
            .expect("key is declared in KEYS")
    }

    fn record(&mut self, key: &'static str, shown: String) {
        let origin = self
            .raw
            .get(key)
            .map_or(Origin::Default, |entry| entry.origin.clone());
        let value = if Self::spec(key).secret && origin != Origin::Default {
            "[redacted]".to_owned()
        } else {
            shown
        };
        self.effective.push(EffectiveEntry { key, value, origin });
    }

    fn problem(&mut self, key: &str, message: impl Into<String>) {
        self.problems.push(ConfigProblem::new(key, message));
    }

    fn text(&mut self, key: &'static str) -> Option<String> {
        self.raw.get(key).map(|entry| entry.value.to_string())
    }

    fn string(&mut self, key: &'static str, default: &str) -> String {
        let value = self.text(key).unwrap_or_else(|| default.to_owned());
        self.record(key, value.clone());
        value
    }

    fn bool(&mut self, key: &'static str, default: bool) -> bool {
        let value = match self.raw.get(key).map(|e| &e.value) {
            None => default,
            Some(RawValue::Bool(b)) => *b,
            Some(RawValue::Integer(1)) => true,
            Some(RawValue::Integer(0)) => false,
            Some(other) => match other.to_string().trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => true,
                "0" | "false" | "no" | "off" => false,
                text => {
                    self.problem(key, format!("`{text}` is not a boolean (true/false)"));
                    default
                }
            },
        };
        self.record(key, value.to_string());
        value
    }

    fn integer(&mut self, key: &'static str, default: u64, min: u64, max: u64) -> u64 {
        let value = match self.text(key) {
            None => default,
            Some(text) => match text.trim().parse::<u64>() {
                Ok(n) if (min..=max).contains(&n) => n,
                Ok(n) => {
                    self.problem(key, format!("{n} is out of range ({min}..={max})"));
                    default
                }
                Err(_) => {
                    self.problem(key, format!("`{text}` is not a whole number"));
                    default
                }
            },
        };
        self.record(key, value.to_string());
        value
    }

    fn seconds(&mut self, key: &'static str, default: i64, min: i64, max: i64) -> Duration {
        let value = match self.text(key) {
            None => default,
            Some(text) => match parse_seconds(&text) {
                Some(n) if (min..=max).contains(&n) => n,
                Some(n) => {
                    self.problem(key, format!("{n} seconds is out of range ({min}..={max})"));
                    default
                }
                None => {
                    self.problem(
                        key,
                        format!("`{text}` is not a duration (seconds, or a number with s/m/h/d)"),
                    );
                    default
                }
            },
        };
        self.record(key, value.to_string());
        Duration::seconds(value)
    }
}

/// `3600`, `3600s`, `60m`, `1h`, `7d` as seconds.
pub fn parse_seconds(text: &str) -> Option<i64> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => text.split_at(i),
        None => (text, ""),
    };
    let n: i64 = number.parse().ok()?;
    let factor = match unit.trim() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    n.checked_mul(factor)
}

/// Everything validation found, usable configuration or not: what `fab config check` shows.
#[derive(Debug, Clone)]
pub struct ConfigReport {
    /// The validated configuration; None when there are problems.
    pub config: Option<Config>,
    /// Every key's effective value (the default where a value was refused), redacted.
    pub effective: Vec<EffectiveEntry>,
    /// Things worth saying that are not errors.
    pub warnings: Vec<String>,
    /// Every problem, each naming its key.
    pub problems: Vec<ConfigProblem>,
}

impl Config {
    /// Validates `raw`, reporting every problem at once.
    pub fn from_raw(raw: &RawConfig) -> Result<Config, ConfigErrors> {
        let report = Self::check(raw);
        report.config.ok_or(ConfigErrors(report.problems))
    }

    /// Validates `raw` and keeps the whole picture (effective values, warnings and problems)
    /// even when it is not usable.
    pub fn check(raw: &RawConfig) -> ConfigReport {
        let mut r = Reader {
            raw,
            problems: raw.problems.clone(),
            effective: Vec::new(),
        };
        let mut warnings = Vec::new();

        let env_text = r.string("FAB_ENV", "development");
        let environment = match env_text.trim().to_ascii_lowercase().as_str() {
            "development" | "dev" => Environment::Development,
            "production" | "prod" => Environment::Production,
            other => {
                r.problem(
                    "FAB_ENV",
                    format!("`{other}` is neither development nor production"),
                );
                Environment::Development
            }
        };
        let production = environment == Environment::Production;

        let secret_key = Secret::new(r.text("SECRET_KEY").unwrap_or_default());
        r.record("SECRET_KEY", "[unset]".into());
        let secret_length = secret_key.char_count();
        if secret_key.is_empty() {
            r.problem(
                "SECRET_KEY",
                "is required (set it to at least 32 random characters, e.g. `openssl rand -base64 48`)",
            );
        } else if secret_key.expose() == GUIDE_EXAMPLE_SECRET {
            if production {
                r.problem(
                    "SECRET_KEY",
                    "is the deployment guide's example value; generate your own",
                );
            } else {
                warnings.push("SECRET_KEY is the deployment guide's example value".to_owned());
            }
        } else if secret_length < 32 {
            if production {
                r.problem(
                    "SECRET_KEY",
                    format!("{secret_length} characters, production needs at least 32"),
                );
            } else {
                warnings.push(format!(
                    "SECRET_KEY has {secret_length} characters; production needs at least 32"
                ));
            }
        }

        let data_dir = PathBuf::from(r.string("FAB_DATA_DIR", "data"));
        let default_db = format!("sqlite://{}", data_dir.join("fab.db").display());
        let database_text = r.text("DATABASE_URL").unwrap_or(default_db);
        let database = match DatabaseUrl::parse(&database_text) {
            Ok(url) => url,
            Err(message) => {
                r.problem("DATABASE_URL", message);
                DatabaseUrl::Sqlite {
                    path: data_dir.join("fab.db"),
                }
            }
        };
        r.record("DATABASE_URL", database.redacted());

        let bind_text = r.string("FAB_BIND", "127.0.0.1:8080");
        let bind = bind_text.trim().parse::<SocketAddr>().unwrap_or_else(|_| {
            r.problem(
                "FAB_BIND",
                format!("`{bind_text}` is not HOST:PORT (e.g. 127.0.0.1:8080)"),
            );
            SocketAddr::from(([127, 0, 0, 1], 8080))
        });

        let idle_timeout = r.seconds("SESSION_TIMEOUT", 3600, 60, 30 * 86_400);
        let absolute_lifetime = r.seconds("PERMANENT_SESSION_LIFETIME", 28_800, 60, 365 * 86_400);
        if absolute_lifetime < idle_timeout {
            warnings.push(
                "PERMANENT_SESSION_LIFETIME is shorter than SESSION_TIMEOUT; sessions end at the absolute lifetime".into(),
            );
        }
        let cookie_secure = r.bool("SESSION_COOKIE_SECURE", production);
        if production && !cookie_secure {
            r.problem(
                "SESSION_COOKIE_SECURE",
                "must be true in production: the session cookie would travel over plain HTTP",
            );
        }
        let cookie_http_only = r.bool("SESSION_COOKIE_HTTPONLY", true);
        if production && !cookie_http_only {
            r.problem(
                "SESSION_COOKIE_HTTPONLY",
                "must be true in production: scripts could read the session cookie",
            );
        }
        let same_site_text = r.string("SESSION_COOKIE_SAMESITE", "Lax");
        let same_site = match same_site_text.trim().to_ascii_lowercase().as_str() {
            "lax" => SameSite::Lax,
            "strict" => SameSite::Strict,
            "none" => {
                if !cookie_secure {
                    r.problem(
                        "SESSION_COOKIE_SAMESITE",
                        "None requires SESSION_COOKIE_SECURE=true",
                    );
                }
                SameSite::None
            }
            other => {
                r.problem(
                    "SESSION_COOKIE_SAMESITE",
                    format!("`{other}` is not Strict, Lax or None"),
                );
                SameSite::Lax
            }
        };
        let backend_text = r.string("SESSION_BACKEND", "sql");
        let backend = match backend_text.trim().to_ascii_lowercase().as_str() {
            "sql" | "database" => SessionBackend::Sql,
            "memory" => SessionBackend::Memory,
            other => {
                r.problem("SESSION_BACKEND", format!("`{other}` is not sql or memory"));
                SessionBackend::Sql
            }
        };

        let min_length = r.integer("PASSWORD_MIN_LENGTH", 12, 1, 1024);
        if production && min_length < 8 {
            r.problem(
                "PASSWORD_MIN_LENGTH",
                format!("{min_length} is below 8, the least NIST SP 800-63B allows"),
            );
        }
        let complexity = r.bool("FAB_PASSWORD_COMPLEXITY_ENABLED", false);
        let memory_kib = r.integer("PASSWORD_HASH_MEMORY_KIB", 19_456, 8, 4 * 1024 * 1024);
        let iterations = r.integer("PASSWORD_HASH_ITERATIONS", 2, 1, 64);
        let parallelism = r.integer("PASSWORD_HASH_PARALLELISM", 1, 1, 64);
        if production && memory_kib < 19_456 {
            r.problem(
                "PASSWORD_HASH_MEMORY_KIB",
                format!("{memory_kib} is below OWASP's minimum of 19456"),
            );
        }
        if production && iterations < 2 {
            r.problem(
                "PASSWORD_HASH_ITERATIONS",
                format!("{iterations} is below OWASP's minimum of 2"),
            );
        }

        let jwt_access_ttl = r.seconds("JWT_ACCESS_TOKEN_EXPIRES", 900, 30, 86_400);
        let jwt_refresh_ttl = r.seconds("JWT_REFRESH_TOKEN_EXPIRES", 86_400, 60, 90 * 86_400);

        let admin_username = r.string("FAB_ADMIN_USERNAME", "admin");
        if let Err(e) = crate::user::validate_username(admin_username.trim()) {
            r.problem("FAB_ADMIN_USERNAME", e.message);
        }
        let admin_email = r.string("FAB_ADMIN_EMAIL", "admin@fab.localhost");
        if let Err(e) = crate::user::validate_email(admin_email.trim()) {
            r.problem("FAB_ADMIN_EMAIL", e.message);
        }
        let admin_password = r.text("FAB_ADMIN_PASSWORD").map(Secret::new);
        r.record("FAB_ADMIN_PASSWORD", "[unset]".into());

        let app_name = r.string("APP_NAME", "fab");
        let template_folder = r.text("FAB_TEMPLATE_FOLDER").map(PathBuf::from);
        r.record(
            "FAB_TEMPLATE_FOLDER",
            template_folder
                .as_ref()
                .map_or("none".into(), |p| p.display().to_string()),
        );
        let log_filter = r.string("FAB_LOG", "info");
        let log_format = match r
            .string("FAB_LOG_FORMAT", "text")
            .trim()
            .to_ascii_lowercase()
            .as_str()
        {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                r.problem("FAB_LOG_FORMAT", format!("`{other}` is not text or json"));
                LogFormat::Text
            }
        };
        let password_policy = PasswordPolicy {
            min_length: usize::try_from(min_length).unwrap_or(12),
            complexity,
            ..PasswordPolicy::default()
        };

        if !r.problems.is_empty() {
            return ConfigReport {
                config: None,
                effective: r.effective,
                warnings,
                problems: r.problems,
            };
        }
        let as_u32 = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        let config = Config {
            environment,
            secret_key,
            data_dir,
            database,
            bind,
            session: SessionSettings {
                policy: SessionPolicy {
                    idle_timeout,
                    absolute_lifetime,
                    ..SessionPolicy::default()
                },
                cookie_secure,
                cookie_http_only,
                same_site,
                backend,
            },
            password_policy,
            hash_params: HashParams {
                memory_kib: as_u32(memory_kib),
                iterations: as_u32(iterations),
                parallelism: as_u32(parallelism),
            },
            jwt_access_ttl,
            jwt_refresh_ttl,
            admin: AdminBootstrap {
                username: admin_username.trim().to_owned(),
                email: admin_email.trim().to_owned(),
                password: admin_password,
            },
            app_name,
            template_folder,
            log_filter,
            log_format,
            warnings: warnings.clone(),
            effective: r.effective.clone(),
        };
        ConfigReport {
            config: Some(config),
            effective: r.effective,
            warnings,
            problems: Vec::new(),
        }
    }

    /// Whether this is a production deployment.
    pub fn is_production(&self) -> bool {
        self.environment == Environment::Production
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(pairs: &[(&str, &str)]) -> RawConfig {
        let mut raw = RawConfig::new();
        for (k, v) in pairs {
            raw.set(k, RawValue::Text((*v).into()), Origin::Env((*k).into()));
        }
        raw
    }

    #[test]
    fn development_defaults_validate() {
        let config = Config::from_raw(&raw(&[("SECRET_KEY", "x".repeat(40).as_str())])).unwrap();
        assert_eq!(config.environment, Environment::Development);
        assert_eq!(config.session.policy.idle_timeout, Duration::seconds(3600));
        assert!(!config.session.cookie_secure);
        assert_eq!(config.session.same_site, SameSite::Lax);
        assert_eq!(
            config.database,
            DatabaseUrl::Sqlite {
                path: PathBuf::from("data/fab.db")
            }
        );
    }

    #[test]
    fn production_reports_every_problem_naming_the_key() {
        let errors = Config::from_raw(&raw(&[
            ("FLASK_ENV", "production"),
            ("SECRET_KEY", "short-secret"),
            ("SESSION_COOKIE_SECURE", "false"),
            ("SQLALCHEMY_DATABASE_URI", "mysql://x"),
            ("SESSION_TIMEOUT", "soon"),
        ]))
        .unwrap_err();
        let text = errors.to_string();
        assert!(
            text.contains("SECRET_KEY: 12 characters, production needs at least 32"),
            "{text}"
        );
        assert!(
            text.contains("SESSION_COOKIE_SECURE: must be true in production"),
            "{text}"
        );
        assert!(
            text.contains("DATABASE_URL: unsupported database scheme `mysql`"),
            "{text}"
        );
        assert!(
            text.contains("SESSION_TIMEOUT: `soon` is not a duration"),
            "{text}"
        );
        assert_eq!(errors.0.len(), 4);
    }

    #[test]
    fn guide_example_secret_is_refused_in_production() {
        let errors = Config::from_raw(&raw(&[
            ("FAB_ENV", "production"),
            ("SECRET_KEY", GUIDE_EXAMPLE_SECRET),
        ]))
        .unwrap_err();
        assert_eq!(errors.0[0].key, "SECRET_KEY");
    }

    #[test]
    fn unknown_file_keys_are_problems() {
        let mut r = raw(&[("SECRET_KEY", "k".repeat(40).as_str())]);
        r.set(
            "SECRET_KEYS",
            RawValue::Text("x".into()),
            Origin::File("fab.toml".into()),
        );
        let errors = Config::from_raw(&r).unwrap_err();
        assert_eq!(errors.0[0].key, "SECRET_KEYS");
    }

    #[test]
    fn check_keeps_the_effective_view_when_there_are_problems() {
        let mut r = raw(&[("FAB_ENV", "production"), ("SECRET_KEY", "short")]);
        r.report_problem("session_timeout", "arrays are not supported");
        let report = Config::check(&r);
        assert!(report.config.is_none());
        let keys: Vec<_> = report.problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["SESSION_TIMEOUT", "SECRET_KEY"]);
        assert!(
            report
                .effective
                .iter()
                .any(|e| e.key == "FAB_ENV" && e.value == "production")
        );
    }

    #[test]
    fn database_urls() {
        assert_eq!(
            DatabaseUrl::parse("sqlite:///abs/path/fab.db").unwrap(),
            DatabaseUrl::Sqlite {
                path: PathBuf::from("/abs/path/fab.db")
            }
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite:////abs/fab.db").unwrap(),
            DatabaseUrl::Sqlite {
                path: PathBuf::from("/abs/fab.db")
            }
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite://rel/fab.db").unwrap(),
            DatabaseUrl::Sqlite {
                path: PathBuf::from("rel/fab.db")
            }
        );
        let pg = DatabaseUrl::parse("postgresql+psycopg2://u:pw@db:5432/app").unwrap();
        assert_eq!(pg.redacted(), "postgres://u:***@db:5432/app");
        assert!(DatabaseUrl::parse("postgresql://u@/app").is_err());
        assert!(DatabaseUrl::parse("postgresql://u@host").is_err());
    }

    #[test]
    fn secrets_are_redacted_in_the_effective_view() {
        let config = Config::from_raw(&raw(&[
            ("SECRET_KEY", "s".repeat(40).as_str()),
            ("DATABASE_URL", "postgresql://u:topsecret@h/db"),
        ]))
        .unwrap();
        let shown: Vec<_> = config.effective.iter().map(|e| e.value.clone()).collect();
        assert!(
            !shown
                .iter()
                .any(|v| v.contains("topsecret") || v.contains("ssss")),
            "{shown:?}"
        );
    }

    #[test]
    fn durations_accept_units() {
        assert_eq!(parse_seconds("90"), Some(90));
        assert_eq!(parse_seconds("30m"), Some(1800));
        assert_eq!(parse_seconds("1h"), Some(3600));
        assert_eq!(parse_seconds("2d"), Some(172_800));
        assert_eq!(parse_seconds("1w"), None);
        assert_eq!(parse_seconds("-5"), None);
    }
}

//! Configuration: raw key/value pairs in, one validated [`Config`] out.
//!
//! The `fab` binary reads `fab.toml` and the environment into a [`RawConfig`] (every key has the
//! deployment guide's name, in the file and in the environment alike); [`Config::from_raw`] turns
//! it into typed settings in one step and reports *every* problem at once, each naming its key:
//! `SECRET_KEY: 12 characters, production needs at least 32`. After that nothing re-checks it.

use crate::password::{HashParams, PasswordPolicy};
use crate::ratelimit::Rate;
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
    /// A TOML array of strings.
    List(Vec<String>),
    /// A TOML table of string values, in file order (e.g. `CSP_POLICY`).
    Table(Vec<(String, String)>),
}

impl fmt::Display for RawValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RawValue::Text(s) => f.write_str(s),
            RawValue::Bool(b) => write!(f, "{b}"),
            RawValue::Integer(i) => write!(f, "{i}"),
            RawValue::List(items) => f.write_str(&items.join(",")),
            RawValue::Table(pairs) => {
                let text: Vec<String> = pairs.iter().map(|(k, v)| format!("{k} {v}")).collect();
                f.write_str(&text.join("; "))
            }
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
        doc: "`sql` (the database), `redis` (REDIS_URL, shared by every instance) or `memory` (one process only; sessions end at restart).",
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
    KeySpec {
        name: "ENABLE_CSP_HEADERS",
        aliases: &[],
        secret: false,
        default: "true",
        doc: "Send a Content-Security-Policy on every response.",
    },
    KeySpec {
        name: "CSP_POLICY",
        aliases: &[],
        secret: false,
        default: "fab's strict policy (see below)",
        doc: "The policy: a TOML table of directives (`'default-src' = \"'self'\"`), or in the environment the CSP text (`default-src 'self'; img-src 'self' data:`). fab adds a per-request nonce to script-src and style-src.",
    },
    KeySpec {
        name: "CSP_REPORT_ONLY",
        aliases: &[],
        secret: false,
        default: "false",
        doc: "Send the policy as Content-Security-Policy-Report-Only: browsers report violations without blocking.",
    },
    KeySpec {
        name: "CSP_REPORT_URI",
        aliases: &[],
        secret: false,
        default: "/csp-report",
        doc: "Where browsers send violation reports (report-uri and the Reporting API's report-to); fab's own endpoint by default. Empty disables reporting.",
    },
    KeySpec {
        name: "ENFORCE_HTTPS",
        aliases: &["SSL_REQUIRE"],
        secret: false,
        default: "true in production, false in development",
        doc: "Redirect plain-HTTP GET/HEAD to https (308) and refuse other methods (403).",
    },
    KeySpec {
        name: "HTTPS_EXEMPT_PATHS",
        aliases: &[],
        secret: false,
        default: "/health,/health/ready",
        doc: "Paths (and their sub-paths) reachable over plain HTTP even with ENFORCE_HTTPS, for load-balancer probes.",
    },
    KeySpec {
        name: "HSTS_MAX_AGE",
        aliases: &[],
        secret: false,
        default: "31536000",
        doc: "Strict-Transport-Security max-age in seconds, sent on every HTTPS response; 0 disables HSTS.",
    },
    KeySpec {
        name: "HSTS_INCLUDE_SUBDOMAINS",
        aliases: &[],
        secret: false,
        default: "true",
        doc: "Add includeSubDomains to HSTS.",
    },
    KeySpec {
        name: "HSTS_PRELOAD",
        aliases: &[],
        secret: false,
        default: "false",
        doc: "Add preload to HSTS (only once the domain is ready for the browsers' preload lists).",
    },
    KeySpec {
        name: "TRUSTED_PROXIES",
        aliases: &[],
        secret: false,
        default: "none",
        doc: "IPs and CIDRs of reverse proxies whose X-Forwarded-For/-Proto/-Host and X-Real-IP are believed. From anyone else these headers are ignored.",
    },
    KeySpec {
        name: "TLS_CERT_FILE",
        aliases: &[],
        secret: false,
        default: "none",
        doc: "PEM certificate chain for fab's own HTTPS listener (TLS 1.2 and 1.3 only); re-read when the file changes or on SIGHUP.",
    },
    KeySpec {
        name: "TLS_KEY_FILE",
        aliases: &[],
        secret: false,
        default: "none",
        doc: "PEM private key for TLS_CERT_FILE.",
    },
    KeySpec {
        name: "MAX_BODY_FORM",
        aliases: &[],
        secret: false,
        default: "65536",
        doc: "Largest form body in bytes (413 beyond).",
    },
    KeySpec {
        name: "MAX_BODY_API",
        aliases: &[],
        secret: false,
        default: "1048576",
        doc: "Largest JSON API body in bytes (413 beyond).",
    },
    KeySpec {
        name: "MAX_BODY_UPLOAD",
        aliases: &[],
        secret: false,
        default: "16777216",
        doc: "Largest upload body in bytes, for upload routes (413 beyond).",
    },
    KeySpec {
        name: "MAX_HEADER_BYTES",
        aliases: &[],
        secret: false,
        default: "16384",
        doc: "Largest request head (request line and headers) in bytes (431 beyond).",
    },
    KeySpec {
        name: "HEADER_READ_TIMEOUT",
        aliases: &[],
        secret: false,
        default: "10",
        doc: "Seconds a client may take to send its request head before the connection is closed (slowloris).",
    },
    KeySpec {
        name: "REQUEST_TIMEOUT",
        aliases: &[],
        secret: false,
        default: "30",
        doc: "Seconds a request may take, body included, before 408.",
    },
    KeySpec {
        name: "MAX_CONNECTIONS",
        aliases: &[],
        secret: false,
        default: "1024",
        doc: "Concurrent connections served; further clients wait in the kernel's accept queue.",
    },
    KeySpec {
        name: "HEALTH_SECURITY_ACCESS",
        aliases: &[],
        secret: false,
        default: "trusted",
        doc: "Who may read /health/security: `trusted` (TRUSTED_NETWORKS), `authenticated` (Admin), or `public`.",
    },
    KeySpec {
        name: "TRUSTED_NETWORKS",
        aliases: &[],
        secret: false,
        default: "127.0.0.0/8,::1",
        doc: "Networks allowed to read /health/security when HEALTH_SECURITY_ACCESS=trusted.",
    },
    KeySpec {
        name: "SECURITY_CONTACT",
        aliases: &[],
        secret: false,
        default: "none",
        doc: "Where to report vulnerabilities (`mailto:security@company.com`, an https URL or `tel:`; comma-separated for several), served as /.well-known/security.txt.",
    },
    KeySpec {
        name: "SECURITY_ENCRYPTION_URL",
        aliases: &[],
        secret: false,
        default: "none",
        doc: "URL of the key to encrypt reports with (security.txt Encryption).",
    },
    KeySpec {
        name: "SECURITY_POLICY_URL",
        aliases: &[],
        secret: false,
        default: "none",
        doc: "URL of the disclosure policy (security.txt Policy).",
    },
    KeySpec {
        name: "SECURITY_TXT_EXPIRES",
        aliases: &[],
        secret: false,
        default: "180 days after start-up",
        doc: "Expires of security.txt, an RFC 3339 date; RFC 9116 asks for less than a year ahead.",
    },
    KeySpec {
        name: "ALLOW_INSECURE",
        aliases: &[],
        secret: false,
        default: "none",
        doc: "Production overrides, by name, for combinations fab otherwise refuses: `plain-http` (no HTTPS enforcement, TLS or proxy), `insecure-cookies` (cookies without Secure/HttpOnly). Each is logged loudly at start-up.",
    },
    KeySpec {
        name: "REDIS_URL",
        aliases: &[],
        secret: true,
        default: "none",
        doc: "Redis for the shared rate limiter and sessions: `redis://host:6379/0` or `rediss://` (TLS); a password may be in the URL.",
    },
    KeySpec {
        name: "REDIS_SSL",
        aliases: &[],
        secret: false,
        default: "false",
        doc: "Use TLS to Redis even when REDIS_URL says `redis://`.",
    },
    KeySpec {
        name: "REDIS_PASSWORD",
        aliases: &[],
        secret: true,
        default: "none",
        doc: "Redis password, when not in REDIS_URL.",
    },
    KeySpec {
        name: "REDIS_TIMEOUT_MS",
        aliases: &[],
        secret: false,
        default: "250",
        doc: "Longest wait for Redis per command or connection attempt: short, so a dead Redis costs a request a quarter second, never a hang.",
    },
    KeySpec {
        name: "RATE_LIMIT_ENABLED",
        aliases: &[],
        secret: false,
        default: "true",
        doc: "Apply the rate limits.",
    },
    KeySpec {
        name: "RATE_LIMIT_BACKEND",
        aliases: &[],
        secret: false,
        default: "memory",
        doc: "`memory` (this process) or `redis` (REDIS_URL, one budget across every instance).",
    },
    KeySpec {
        name: "RATE_LIMIT_DEFAULT",
        aliases: &[],
        secret: false,
        default: "100/hour",
        doc: "Requests per client IP across all routes (health and static assets exempt). `N/second|minute|hour|day` or `10 per 20 second`.",
    },
    KeySpec {
        name: "RATE_LIMIT_LOGIN_ATTEMPTS",
        aliases: &[],
        secret: false,
        default: "5/minute",
        doc: "Credential checks (page and API login) per username and, separately, per client IP.",
    },
    KeySpec {
        name: "RATE_LIMIT_API_CALLS",
        aliases: &[],
        secret: false,
        default: "1000/hour",
        doc: "API calls per authenticated principal under /api.",
    },
    KeySpec {
        name: "RATE_LIMIT_EXEMPT_PATHS",
        aliases: &[],
        secret: false,
        default: "/health,/static",
        doc: "Paths (and sub-paths) outside the default per-IP limit.",
    },
    KeySpec {
        name: "RATE_LIMIT_ROUTES",
        aliases: &[],
        secret: false,
        default: "none",
        doc: "Per-route limits instead of RATE_LIMIT_DEFAULT, per client IP: a TOML table `\"/api/v1/security/users/\" = \"30/minute\"`, or `path=rate,path=rate`.",
    },
    KeySpec {
        name: "RATE_LIMIT_EMERGENCY_FACTOR",
        aliases: &[],
        secret: false,
        default: "10",
        doc: "In emergency mode (`redis-cli SET rate_limit_emergency_mode 1` or `fab rate-limit emergency on`) every limit is divided by this.",
    },
    KeySpec {
        name: "RATE_LIMIT_EMERGENCY_DEFAULT",
        aliases: &[],
        secret: false,
        default: "RATE_LIMIT_DEFAULT / factor",
        doc: "The default limit in emergency mode, instead of dividing.",
    },
    KeySpec {
        name: "RATE_LIMIT_EMERGENCY_LOGIN_ATTEMPTS",
        aliases: &[],
        secret: false,
        default: "RATE_LIMIT_LOGIN_ATTEMPTS / factor",
        doc: "The login limit in emergency mode, instead of dividing.",
    },
    KeySpec {
        name: "RATE_LIMIT_EMERGENCY_API_CALLS",
        aliases: &[],
        secret: false,
        default: "RATE_LIMIT_API_CALLS / factor",
        doc: "The API limit in emergency mode, instead of dividing.",
    },
    KeySpec {
        name: "RATE_LIMIT_FAIL_MODE",
        aliases: &[],
        secret: false,
        default: "local",
        doc: "When Redis does not answer: `local` (each instance limits in memory until Redis is back), `open` (no limit) or `closed` (503).",
    },
    KeySpec {
        name: "FAB_INSTANCES",
        aliases: &[],
        secret: false,
        default: "1",
        doc: "How many fab instances serve this deployment; more than one with the memory limiter is a warning, since each would keep its own budget.",
    },
    KeySpec {
        name: "LOCKOUT_THRESHOLD",
        aliases: &[],
        secret: false,
        default: "10",
        doc: "Failed logins for one account (since its last success) that lock it; 0 disables the lock.",
    },
    KeySpec {
        name: "LOCKOUT_DURATION",
        aliases: &[],
        secret: false,
        default: "900",
        doc: "How long a locked account stays locked, in seconds (`fab user-unlock` ends it sooner).",
    },
    KeySpec {
        name: "LOCKOUT_DELAY_AFTER",
        aliases: &[],
        secret: false,
        default: "3",
        doc: "Failures after which each further attempt on the account must wait: 1 s, then doubling up to 60 s.",
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
    /// Redis (`REDIS_URL`), shared by every instance.
    Redis,
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

/// A production override of a refused combination, named in `ALLOW_INSECURE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InsecureOverride {
    /// Serve plain HTTP in production (no HTTPS enforcement, no TLS, no proxy).
    PlainHttp,
    /// Session cookies without Secure or HttpOnly in production.
    InsecureCookies,
}

impl InsecureOverride {
    /// The name used in `ALLOW_INSECURE`.
    pub fn name(self) -> &'static str {
        match self {
            InsecureOverride::PlainHttp => "plain-http",
            InsecureOverride::InsecureCookies => "insecure-cookies",
        }
    }
}

/// Content-Security-Policy settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CspSettings {
    /// Whether the header is sent.
    pub enabled: bool,
    /// Send as `Content-Security-Policy-Report-Only`.
    pub report_only: bool,
    /// Directives in order, name to value (`("img-src", "'self' data:")`).
    pub directives: Vec<(String, String)>,
    /// Report endpoint, when reporting is on.
    pub report_uri: Option<String>,
}

/// fab's default policy: the deployment guide's restrictive policy without `'unsafe-inline'`
/// (fab's pages carry a per-request nonce instead), plus the directives that close what
/// `default-src` does not cover.
pub const DEFAULT_CSP: &[(&str, &str)] = &[
    ("default-src", "'self'"),
    ("script-src", "'self'"),
    ("style-src", "'self'"),
    ("img-src", "'self' data: blob:"),
    ("font-src", "'self' data:"),
    ("connect-src", "'self'"),
    ("object-src", "'none'"),
    ("base-uri", "'none'"),
    ("form-action", "'self'"),
    ("frame-ancestors", "'none'"),
];

/// HTTPS enforcement and HSTS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpsSettings {
    /// Redirect / refuse plain-HTTP requests.
    pub enforce: bool,
    /// Paths exempt from enforcement.
    pub exempt_paths: Vec<String>,
    /// HSTS max-age (0: no HSTS).
    pub hsts_max_age: u64,
    /// HSTS includeSubDomains.
    pub hsts_include_subdomains: bool,
    /// HSTS preload.
    pub hsts_preload: bool,
}

/// fab's own TLS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSettings {
    /// Certificate chain (PEM).
    pub cert_file: PathBuf,
    /// Private key (PEM).
    pub key_file: PathBuf,
}

/// Request size and time limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLimits {
    /// Form bodies.
    pub body_form: usize,
    /// JSON API bodies.
    pub body_api: usize,
    /// Upload bodies.
    pub body_upload: usize,
    /// Request head.
    pub max_header_bytes: usize,
    /// Time to send the request head.
    pub header_read_timeout: Duration,
    /// Time for the whole request.
    pub request_timeout: Duration,
    /// Concurrent connections.
    pub max_connections: usize,
}

/// Who may read `/health/security`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthAccess {
    /// Clients in TRUSTED_NETWORKS.
    Trusted,
    /// Logged-in Admins.
    Authenticated,
    /// Anyone.
    Public,
}

/// The security contact (RFC 9116 security.txt).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SecurityContact {
    /// Contact URIs.
    pub contact: Vec<String>,
    /// Encryption key URL.
    pub encryption: Option<String>,
    /// Policy URL.
    pub policy: Option<String>,
    /// Fixed expiry, if configured.
    pub expires: Option<chrono::DateTime<chrono::Utc>>,
}

/// Everything about how requests reach fab and what responses carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeSettings {
    /// Content-Security-Policy.
    pub csp: CspSettings,
    /// HTTPS and HSTS.
    pub https: HttpsSettings,
    /// Reverse proxies whose forwarded headers are believed.
    pub trusted_proxies: Vec<crate::net::IpNet>,
    /// Native TLS, when configured.
    pub tls: Option<TlsSettings>,
    /// Size and time limits.
    pub limits: RequestLimits,
    /// `/health/security` access rule.
    pub health_access: HealthAccess,
    /// Networks trusted for `/health/security`.
    pub trusted_networks: Vec<crate::net::IpNet>,
    /// security.txt.
    pub contact: SecurityContact,
    /// Production overrides in force.
    pub allow_insecure: Vec<InsecureOverride>,
}

/// What to do when the shared limiter does not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailMode {
    /// Limit in this process's memory until Redis answers again.
    Local,
    /// Let requests through unlimited.
    Open,
    /// Refuse requests with 503.
    Closed,
}

/// Which rate-limiter backend to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimiterBackend {
    /// This process's memory.
    Memory,
    /// Redis, shared by every instance.
    Redis,
}

/// Redis connection settings.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `redis://` or `rediss://` URL (may carry a password).
    pub url: Secret,
    /// Password given apart from the URL.
    pub password: Option<Secret>,
    /// Per-command and connect timeout.
    pub timeout: Duration,
}

/// Rate limiting and account lockout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitSettings {
    /// Whether limits apply.
    pub enabled: bool,
    /// Backend.
    pub backend: LimiterBackend,
    /// Per client IP, every route.
    pub default: Rate,
    /// Per username and per IP, every credential check.
    pub login: Rate,
    /// Per principal, under /api.
    pub api: Rate,
    /// Paths outside the default limit.
    pub exempt_paths: Vec<String>,
    /// Per-route limits instead of the default, by path.
    pub routes: Vec<(String, Rate)>,
    /// Emergency divisor.
    pub emergency_factor: u32,
    /// Emergency limits (already divided where not configured).
    pub emergency_default: Rate,
    /// Emergency login limit.
    pub emergency_login: Rate,
    /// Emergency API limit.
    pub emergency_api: Rate,
    /// Behaviour on a Redis outage.
    pub fail_mode: FailMode,
    /// Failures that lock an account (0: never).
    pub lockout_threshold: u32,
    /// How long the lock lasts.
    pub lockout_duration: Duration,
    /// Failures before attempts must wait.
    pub lockout_delay_after: u32,
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
    /// Headers, HTTPS, proxies, TLS, request limits, health access and the security contact.
    pub edge: EdgeSettings,
    /// Rate limits and lockout.
    pub rate_limit: RateLimitSettings,
    /// Redis, when configured.
    pub redis: Option<RedisSettings>,
    /// Instances serving this deployment.
    pub instances: u32,
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

    fn list(&mut self, key: &'static str, default: &str) -> Vec<String> {
        let items: Vec<String> = match self.raw.get(key).map(|e| &e.value) {
            Some(RawValue::List(items)) => items.clone(),
            Some(other) => other.to_string().split(',').map(str::to_owned).collect(),
            None => default.split(',').map(str::to_owned).collect(),
        };
        let items: Vec<String> = items
            .into_iter()
            .map(|i| i.trim().to_owned())
            .filter(|i| !i.is_empty())
            .collect();
        self.record(key, items.join(","));
        items
    }

    fn networks(&mut self, key: &'static str, default: &str) -> Vec<crate::net::IpNet> {
        let mut networks = Vec::new();
        for item in self.list(key, default) {
            match item.parse::<crate::net::IpNet>() {
                Ok(net) => networks.push(net),
                Err(message) => self.problem(key, message),
            }
        }
        networks
    }

    fn optional(&mut self, key: &'static str) -> Option<String> {
        let value = self
            .text(key)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty());
        self.record(key, value.clone().unwrap_or_else(|| "none".into()));
        value
    }

    fn allow_insecure(&mut self) -> Vec<InsecureOverride> {
        let mut out = Vec::new();
        for name in self.list("ALLOW_INSECURE", "") {
            match name.to_ascii_lowercase().as_str() {
                "plain-http" => out.push(InsecureOverride::PlainHttp),
                "insecure-cookies" => out.push(InsecureOverride::InsecureCookies),
                other => self.problem(
                    "ALLOW_INSECURE",
                    format!("`{other}` is not an override (plain-http, insecure-cookies)"),
                ),
            }
        }
        out.sort();
        out.dedup();
        out
    }

    fn csp(&mut self) -> CspSettings {
        let enabled = self.bool("ENABLE_CSP_HEADERS", true);
        let report_only = self.bool("CSP_REPORT_ONLY", false);
        let directives: Vec<(String, String)> =
            match self.raw.get("CSP_POLICY").map(|e| e.value.clone()) {
                None => DEFAULT_CSP
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
                Some(RawValue::Table(pairs)) => pairs,
                Some(other) => other
                    .to_string()
                    .split(';')
                    .filter_map(|part| {
                        let part = part.trim();
                        (!part.is_empty()).then(|| match part.split_once(char::is_whitespace) {
                            Some((name, value)) => (name.to_owned(), value.trim().to_owned()),
                            None => (part.to_owned(), String::new()),
                        })
                    })
                    .collect(),
            };
        let mut checked = Vec::new();
        for (name, value) in directives {
            let name = name.trim().to_ascii_lowercase();
            let valid_name =
                !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c == '-');
            let valid_value = !value.contains([';', ',', '\n', '\r']) && value.is_ascii();
            if !valid_name || !valid_value {
                self.problem(
                    "CSP_POLICY",
                    format!("`{name} {value}` is not a CSP directive"),
                );
                continue;
            }
            if value.contains("'unsafe-inline'") && (name == "script-src" || name == "style-src") {
                // With a nonce present, browsers ignore 'unsafe-inline' anyway.
                self.problem(
                    "CSP_POLICY",
                    format!("{name}: 'unsafe-inline' is refused: fab's pages use a per-request nonce, so it would only weaken a custom page's policy"),
                );
                continue;
            }
            checked.push((name, value.trim().to_owned()));
        }
        let shown: Vec<String> = checked.iter().map(|(k, v)| format!("{k} {v}")).collect();
        self.record("CSP_POLICY", shown.join("; "));
        let report_uri = match self.text("CSP_REPORT_URI") {
            None => Some("/csp-report".to_owned()),
            Some(text) if text.trim().is_empty() => None,
            Some(text) => Some(text.trim().to_owned()),
        };
        self.record(
            "CSP_REPORT_URI",
            report_uri.clone().unwrap_or_else(|| "none".into()),
        );
        if let Some(uri) = &report_uri
            && (uri.contains([';', ',', ' '])
                || !(uri.starts_with('/') || uri.starts_with("https://")))
        {
            self.problem(
                "CSP_REPORT_URI",
                "must be a path (/csp-report) or an https:// URL",
            );
        }
        CspSettings {
            enabled,
            report_only,
            directives: checked,
            report_uri,
        }
    }

    fn bytes(&mut self, key: &'static str, default: u64, min: u64, max: u64) -> usize {
        usize::try_from(self.integer(key, default, min, max)).unwrap_or(usize::MAX)
    }

    fn edge(
        &mut self,
        production: bool,
        allow_insecure: &[InsecureOverride],
        warnings: &mut Vec<String>,
    ) -> EdgeSettings {
        let csp = self.csp();
        let enforce = self.bool("ENFORCE_HTTPS", production);
        let exempt_paths = self.list("HTTPS_EXEMPT_PATHS", "/health,/health/ready");
        for path in &exempt_paths {
            if !path.starts_with('/') {
                self.problem(
                    "HTTPS_EXEMPT_PATHS",
                    format!("`{path}` is not a path starting with /"),
                );
            }
        }
        let hsts_max_age = self.integer("HSTS_MAX_AGE", 31_536_000, 0, 2 * 31_536_000);
        let hsts_include_subdomains = self.bool("HSTS_INCLUDE_SUBDOMAINS", true);
        let hsts_preload = self.bool("HSTS_PRELOAD", false);
        if hsts_preload && (hsts_max_age < 31_536_000 || !hsts_include_subdomains) {
            self.problem(
                "HSTS_PRELOAD",
                "preload lists require HSTS_MAX_AGE of at least 31536000 and HSTS_INCLUDE_SUBDOMAINS=true",
            );
        }
        let trusted_proxies = self.networks("TRUSTED_PROXIES", "");
        let cert = self.optional("TLS_CERT_FILE");
        let key = self.optional("TLS_KEY_FILE");
        let tls = match (cert, key) {
            (Some(cert), Some(key)) => Some(TlsSettings {
                cert_file: PathBuf::from(cert),
                key_file: PathBuf::from(key),
            }),
            (None, None) => None,
            (Some(_), None) => {
                self.problem("TLS_KEY_FILE", "is required with TLS_CERT_FILE");
                None
            }
            (None, Some(_)) => {
                self.problem("TLS_CERT_FILE", "is required with TLS_KEY_FILE");
                None
            }
        };
        let limits = RequestLimits {
            body_form: self.bytes("MAX_BODY_FORM", 65_536, 1024, 64 * 1024 * 1024),
            body_api: self.bytes("MAX_BODY_API", 1_048_576, 1024, 256 * 1024 * 1024),
            body_upload: self.bytes("MAX_BODY_UPLOAD", 16_777_216, 1024, 4 * 1024 * 1024 * 1024),
            max_header_bytes: self.bytes("MAX_HEADER_BYTES", 16_384, 4096, 1024 * 1024),
            header_read_timeout: self.seconds("HEADER_READ_TIMEOUT", 10, 1, 600),
            request_timeout: self.seconds("REQUEST_TIMEOUT", 30, 1, 3600),
            max_connections: self.bytes("MAX_CONNECTIONS", 1024, 1, 1_000_000),
        };
        let health_access = match self
            .string("HEALTH_SECURITY_ACCESS", "trusted")
            .trim()
            .to_ascii_lowercase()
            .as_str()
        {
            "trusted" => HealthAccess::Trusted,
            "authenticated" => HealthAccess::Authenticated,
            "public" => HealthAccess::Public,
            other => {
                self.problem(
                    "HEALTH_SECURITY_ACCESS",
                    format!("`{other}` is not trusted, authenticated or public"),
                );
                HealthAccess::Trusted
            }
        };
        let trusted_networks = self.networks("TRUSTED_NETWORKS", "127.0.0.0/8,::1");
        let contact_items = self.list("SECURITY_CONTACT", "");
        for item in &contact_items {
            if !(item.starts_with("mailto:")
                || item.starts_with("https://")
                || item.starts_with("tel:"))
            {
                self.problem(
                    "SECURITY_CONTACT",
                    format!("`{item}` must start with mailto:, https:// or tel:"),
                );
            }
        }
        let encryption = self.optional("SECURITY_ENCRYPTION_URL");
        let policy = self.optional("SECURITY_POLICY_URL");
        for (key, value) in [
            ("SECURITY_ENCRYPTION_URL", &encryption),
            ("SECURITY_POLICY_URL", &policy),
        ] {
            if value.as_ref().is_some_and(|v| !v.starts_with("https://")) {
                self.problem(key, "must be an https:// URL");
            }
        }
        let expires = match self.optional("SECURITY_TXT_EXPIRES") {
            None => None,
            Some(text) => match chrono::DateTime::parse_from_rfc3339(&text) {
                Ok(at) => Some(at.with_timezone(&chrono::Utc)),
                Err(_) => {
                    self.problem(
                        "SECURITY_TXT_EXPIRES",
                        format!("`{text}` is not an RFC 3339 date (2027-06-30T00:00:00Z)"),
                    );
                    None
                }
            },
        };

        if production {
            let behind_https = tls.is_some() || !trusted_proxies.is_empty();
            let plain_ok = allow_insecure.contains(&InsecureOverride::PlainHttp);
            if !enforce && !behind_https {
                if plain_ok {
                    warnings.push("ALLOW_INSECURE=plain-http: production serves plain HTTP with no TLS, no proxy and no HTTPS enforcement".into());
                } else {
                    self.problem(
                        "ENFORCE_HTTPS",
                        "is off in production with neither TLS_CERT_FILE nor TRUSTED_PROXIES: fab would serve plain HTTP (set ALLOW_INSECURE=plain-http to accept that)",
                    );
                }
            }
            if enforce && !behind_https && !plain_ok {
                self.problem(
                    "ENFORCE_HTTPS",
                    "needs TLS_CERT_FILE or TRUSTED_PROXIES: without either fab cannot see a request arrive over HTTPS and would redirect every request",
                );
            }
        }
        if !trusted_proxies.is_empty()
            && trusted_proxies
                .iter()
                .any(|n| n.to_string().ends_with("/0"))
        {
            warnings.push(
                "TRUSTED_PROXIES contains a /0 network: every client may set X-Forwarded-For"
                    .into(),
            );
        }
        EdgeSettings {
            csp,
            https: HttpsSettings {
                enforce,
                exempt_paths,
                hsts_max_age,
                hsts_include_subdomains,
                hsts_preload,
            },
            trusted_proxies,
            tls,
            limits,
            health_access,
            trusted_networks,
            contact: SecurityContact {
                contact: contact_items,
                encryption,
                policy,
                expires,
            },
            allow_insecure: allow_insecure.to_vec(),
        }
    }

    fn rate(&mut self, key: &'static str, default: &str) -> Rate {
        let text = self.text(key).unwrap_or_else(|| default.to_owned());
        let rate = match text.parse::<Rate>() {
            Ok(rate) => rate,
            Err(error) => {
                self.problem(key, error.to_string());
                constant_rate(default)
            }
        };
        self.record(key, rate.to_string());
        rate
    }

    fn emergency_rate(&mut self, key: &'static str, normal: Rate, factor: u32) -> Rate {
        match self.text(key) {
            None => {
                let rate = normal.divided(factor);
                self.record(key, format!("{rate} (divided)"));
                rate
            }
            Some(_) => self.rate(key, "1/minute"),
        }
    }

    fn route_rates(&mut self) -> Vec<(String, Rate)> {
        let pairs: Vec<(String, String)> =
            match self.raw.get("RATE_LIMIT_ROUTES").map(|e| e.value.clone()) {
                None => Vec::new(),
                Some(RawValue::Table(pairs)) => pairs,
                Some(other) => other
                    .to_string()
                    .split(',')
                    .filter(|p| !p.trim().is_empty())
                    .map(|p| match p.split_once('=') {
                        Some((path, rate)) => (path.trim().to_owned(), rate.trim().to_owned()),
                        None => (p.trim().to_owned(), String::new()),
                    })
                    .collect(),
            };
        let mut out = Vec::new();
        for (path, rate) in pairs {
            if !path.starts_with('/') {
                self.problem(
                    "RATE_LIMIT_ROUTES",
                    format!("`{path}` is not a path starting with /"),
                );
                continue;
            }
            match rate.parse::<Rate>() {
                Ok(rate) => out.push((path, rate)),
                Err(error) => self.problem("RATE_LIMIT_ROUTES", format!("{path}: {error}")),
            }
        }
        let shown: Vec<String> = out.iter().map(|(p, r)| format!("{p}={r}")).collect();
        self.record(
            "RATE_LIMIT_ROUTES",
            if shown.is_empty() {
                "none".into()
            } else {
                shown.join(",")
            },
        );
        out
    }

    fn rate_limits(
        &mut self,
        production: bool,
        session_backend: SessionBackend,
        warnings: &mut Vec<String>,
    ) -> (RateLimitSettings, Option<RedisSettings>, u32) {
        let enabled = self.bool("RATE_LIMIT_ENABLED", true);
        let backend = match self
            .string("RATE_LIMIT_BACKEND", "memory")
            .trim()
            .to_ascii_lowercase()
            .as_str()
        {
            "memory" => LimiterBackend::Memory,
            "redis" => LimiterBackend::Redis,
            other => {
                self.problem(
                    "RATE_LIMIT_BACKEND",
                    format!("`{other}` is not memory or redis"),
                );
                LimiterBackend::Memory
            }
        };
        let default = self.rate("RATE_LIMIT_DEFAULT", "100/hour");
        let login = self.rate("RATE_LIMIT_LOGIN_ATTEMPTS", "5/minute");
        let api = self.rate("RATE_LIMIT_API_CALLS", "1000/hour");
        let exempt_paths = self.list("RATE_LIMIT_EXEMPT_PATHS", "/health,/static");
        let routes = self.route_rates();
        let emergency_factor =
            u32::try_from(self.integer("RATE_LIMIT_EMERGENCY_FACTOR", 10, 1, 1_000_000))
                .unwrap_or(10);
        let emergency_default =
            self.emergency_rate("RATE_LIMIT_EMERGENCY_DEFAULT", default, emergency_factor);
        let emergency_login = self.emergency_rate(
            "RATE_LIMIT_EMERGENCY_LOGIN_ATTEMPTS",
            login,
            emergency_factor,
        );
        let emergency_api =
            self.emergency_rate("RATE_LIMIT_EMERGENCY_API_CALLS", api, emergency_factor);
        let fail_mode = match self
            .string("RATE_LIMIT_FAIL_MODE", "local")
            .trim()
            .to_ascii_lowercase()
            .as_str()
        {
            "local" => FailMode::Local,
            "open" => FailMode::Open,
            "closed" => FailMode::Closed,
            other => {
                self.problem(
                    "RATE_LIMIT_FAIL_MODE",
                    format!("`{other}` is not local, open or closed"),
                );
                FailMode::Local
            }
        };
        let lockout_threshold =
            u32::try_from(self.integer("LOCKOUT_THRESHOLD", 10, 0, 1000)).unwrap_or(10);
        let lockout_duration = self.seconds("LOCKOUT_DURATION", 900, 1, 86_400 * 30);
        let lockout_delay_after =
            u32::try_from(self.integer("LOCKOUT_DELAY_AFTER", 3, 1, 1000)).unwrap_or(3);
        let instances = u32::try_from(self.integer("FAB_INSTANCES", 1, 1, 10_000)).unwrap_or(1);

        let url = self
            .text("REDIS_URL")
            .map(|u| u.trim().to_owned())
            .filter(|u| !u.is_empty());
        let ssl = self.bool("REDIS_SSL", false);
        let password = self
            .text("REDIS_PASSWORD")
            .filter(|p| !p.is_empty())
            .map(Secret::new);
        self.record("REDIS_PASSWORD", "[unset]".into());
        let timeout_ms = self.integer("REDIS_TIMEOUT_MS", 250, 10, 60_000);
        let needs_redis =
            backend == LimiterBackend::Redis || session_backend == SessionBackend::Redis;
        let redis = match url {
            None => {
                self.record("REDIS_URL", "none".into());
                if needs_redis {
                    self.problem(
                        "REDIS_URL",
                        "is required when RATE_LIMIT_BACKEND or SESSION_BACKEND is redis",
                    );
                }
                None
            }
            Some(url) => {
                let url = if ssl {
                    url.replacen("redis://", "rediss://", 1)
                } else {
                    url
                };
                let redacted = match url::Url::parse(&url) {
                    Ok(mut parsed)
                        if matches!(parsed.scheme(), "redis" | "rediss")
                            && parsed.host_str().is_some() =>
                    {
                        if parsed.password().is_some() {
                            let _ = parsed.set_password(Some("***"));
                        }
                        Some(parsed.to_string())
                    }
                    _ => None,
                };
                match redacted {
                    Some(shown) => {
                        self.record("REDIS_URL", shown);
                        Some(RedisSettings {
                            url: Secret::new(url),
                            password,
                            timeout: Duration::milliseconds(
                                i64::try_from(timeout_ms).unwrap_or(250),
                            ),
                        })
                    }
                    None => {
                        self.record("REDIS_URL", "[unreadable]".into());
                        self.problem(
                            "REDIS_URL",
                            "must be redis://host[:port][/db] or rediss://...",
                        );
                        None
                    }
                }
            }
        };
        if production && instances > 1 && backend == LimiterBackend::Memory && enabled {
            warnings.push(format!(
                "RATE_LIMIT_BACKEND=memory with FAB_INSTANCES={instances}: each instance keeps its own budget, so clients get {instances} times the limits; use redis"
            ));
        }
        if production && instances > 1 && session_backend == SessionBackend::Memory {
            warnings.push(format!(
                "SESSION_BACKEND=memory with FAB_INSTANCES={instances}: a session exists on one instance only"
            ));
        }
        let settings = RateLimitSettings {
            enabled,
            backend,
            default,
            login,
            api,
            exempt_paths,
            routes,
            emergency_factor,
            emergency_default,
            emergency_login,
            emergency_api,
            fail_mode,
            lockout_threshold,
            lockout_duration,
            lockout_delay_after,
        };
        (settings, redis, instances)
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

/// A rate written as a constant of this module.
fn constant_rate(text: &str) -> Rate {
    #[allow(
        clippy::expect_used,
        reason = "the defaults are constants of this module, checked by its tests"
    )]
    text.parse().expect("default rates parse")
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
        let allow_insecure = r.allow_insecure();
        let cookie_secure = r.bool("SESSION_COOKIE_SECURE", production);
        let cookie_http_only = r.bool("SESSION_COOKIE_HTTPONLY", true);
        if production && (!cookie_secure || !cookie_http_only) {
            if allow_insecure.contains(&InsecureOverride::InsecureCookies) {
                warnings.push(
                    "ALLOW_INSECURE=insecure-cookies: the session cookie lacks Secure or HttpOnly in production".into(),
                );
            } else if !cookie_secure {
                r.problem(
                    "SESSION_COOKIE_SECURE",
                    "must be true in production: the session cookie would travel over plain HTTP",
                );
            }
            if !cookie_http_only && !allow_insecure.contains(&InsecureOverride::InsecureCookies) {
                r.problem(
                    "SESSION_COOKIE_HTTPONLY",
                    "must be true in production: scripts could read the session cookie",
                );
            }
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
            "redis" => SessionBackend::Redis,
            other => {
                r.problem(
                    "SESSION_BACKEND",
                    format!("`{other}` is not sql, memory or redis"),
                );
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

        let edge = r.edge(production, &allow_insecure, &mut warnings);
        let (rate_limit, redis, instances) = r.rate_limits(production, backend, &mut warnings);

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
            edge,
            rate_limit,
            redis,
            instances,
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
        assert!(
            text.contains("ENFORCE_HTTPS: needs TLS_CERT_FILE or TRUSTED_PROXIES"),
            "{text}"
        );
        assert_eq!(errors.0.len(), 5);
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
        assert_eq!(keys, ["SESSION_TIMEOUT", "SECRET_KEY", "ENFORCE_HTTPS"]);
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
    fn redis_is_required_by_the_redis_backends_and_redacted() {
        let errors = Config::from_raw(&raw(&[
            ("SECRET_KEY", "s".repeat(40).as_str()),
            ("RATE_LIMIT_BACKEND", "redis"),
        ]))
        .unwrap_err();
        assert_eq!(errors.0[0].key, "REDIS_URL");
        let config = Config::from_raw(&raw(&[
            ("SECRET_KEY", "s".repeat(40).as_str()),
            ("SESSION_BACKEND", "redis"),
            ("REDIS_URL", "redis://:hunter2@redis.internal:6379/0"),
            ("REDIS_SSL", "true"),
        ]))
        .unwrap();
        let redis = config.redis.unwrap();
        assert!(redis.url.expose().starts_with("rediss://"));
        let shown = config
            .effective
            .iter()
            .find(|e| e.key == "REDIS_URL")
            .unwrap();
        assert!(!shown.value.contains("hunter2"), "{}", shown.value);
    }

    #[test]
    fn emergency_limits_divide_unless_given() {
        let config = Config::from_raw(&raw(&[
            ("SECRET_KEY", "s".repeat(40).as_str()),
            ("RATE_LIMIT_EMERGENCY_LOGIN_ATTEMPTS", "2/hour"),
            ("RATE_LIMIT_ROUTES", "/api/v1/security/users/=30/minute"),
        ]))
        .unwrap();
        let limits = config.rate_limit;
        let rate = |t: &str| t.parse::<Rate>().unwrap();
        assert_eq!(limits.emergency_default, rate("10/hour"));
        assert_eq!(limits.emergency_login, rate("2/hour"));
        assert_eq!(
            limits.routes,
            vec![("/api/v1/security/users/".to_owned(), rate("30/minute"))]
        );
    }

    #[test]
    fn named_overrides_turn_refusals_into_loud_warnings() {
        let secret = "s".repeat(40);
        let base = [
            ("FAB_ENV", "production"),
            ("SECRET_KEY", secret.as_str()),
            ("ENFORCE_HTTPS", "false"),
            ("SESSION_COOKIE_SECURE", "false"),
        ];
        let errors = Config::from_raw(&raw(&base)).unwrap_err();
        let keys: Vec<_> = errors.0.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["SESSION_COOKIE_SECURE", "ENFORCE_HTTPS"]);
        let mut overridden = base.to_vec();
        overridden.push(("ALLOW_INSECURE", "plain-http, insecure-cookies"));
        let config = Config::from_raw(&raw(&overridden)).unwrap();
        assert_eq!(
            config.edge.allow_insecure,
            [
                InsecureOverride::PlainHttp,
                InsecureOverride::InsecureCookies
            ]
        );
        assert!(
            config
                .warnings
                .iter()
                .any(|w| w.starts_with("ALLOW_INSECURE=plain-http"))
        );
        assert!(
            config
                .warnings
                .iter()
                .any(|w| w.starts_with("ALLOW_INSECURE=insecure-cookies"))
        );
        let errors = Config::from_raw(&raw(&[
            ("SECRET_KEY", secret.as_str()),
            ("ALLOW_INSECURE", "everything"),
        ]))
        .unwrap_err();
        assert_eq!(errors.0[0].key, "ALLOW_INSECURE");
    }

    #[test]
    fn memory_backends_with_several_instances_warn_in_production() {
        let secret = "s".repeat(40);
        let config = Config::from_raw(&raw(&[
            ("FAB_ENV", "production"),
            ("SECRET_KEY", secret.as_str()),
            ("TRUSTED_PROXIES", "10.0.0.1"),
            ("FAB_INSTANCES", "3"),
            ("SESSION_BACKEND", "memory"),
        ]))
        .unwrap();
        assert!(
            config
                .warnings
                .iter()
                .any(|w| w.starts_with("RATE_LIMIT_BACKEND=memory with FAB_INSTANCES=3")),
            "{:?}",
            config.warnings
        );
        assert!(
            config
                .warnings
                .iter()
                .any(|w| w.starts_with("SESSION_BACKEND=memory with FAB_INSTANCES=3")),
            "{:?}",
            config.warnings
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

//! Configuration loading: `fab.toml` and the environment into one validated [`Config`].
//!
//! This module is the only place in the workspace that reads environment variables or
//! configuration files; everything else receives an `Arc<Config>`. The order is: built-in defaults,
//! then the file (`--config PATH`, else `FAB_CONFIG`, else `./fab.toml` when it exists), then every
//! environment variable fab knows (`SECRET_KEY`, `FLASK_ENV`, `SQLALCHEMY_DATABASE_URI`, ...),
//! where a canonical name beats its alias. The environment is passed in as `(name, value)` pairs,
//! so tests never touch the process environment: [`process_env`] is the one call that reads it.
//!
//! In development only, an unset `SECRET_KEY` is generated once (48 random bytes) and kept in
//! `<FAB_DATA_DIR>/secret_key` with mode 0600, so sessions and tokens survive restarts. Production
//! never generates one: validation refuses to start without it.

use fab_core::config::{
    Config, ConfigErrors, ConfigReport, KEYS, Origin, RawConfig, RawValue, key_for_env,
};
use fab_core::random::{RandomSource, random_token};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

/// The environment variable naming the configuration file.
pub const CONFIG_FILE_ENV: &str = "FAB_CONFIG";
/// The file read when neither `--config` nor `FAB_CONFIG` names one and it exists.
pub const DEFAULT_CONFIG_FILE: &str = "fab.toml";
/// The file, inside `FAB_DATA_DIR`, that keeps the generated development `SECRET_KEY`.
pub const SECRET_KEY_FILE: &str = "secret_key";
/// Random bytes in a generated development `SECRET_KEY` (64 base64url characters).
const GENERATED_SECRET_BYTES: usize = 48;

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The configuration file is not valid TOML.
    #[error("{path}:{line}:{column}: {message}")]
    Syntax {
        /// The file.
        path: String,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// What the TOML parser said.
        message: String,
    },
    /// The configuration file could not be read.
    #[error("{path}: cannot read the configuration file: {source}")]
    Read {
        /// The file.
        path: String,
        /// The IO error.
        source: io::Error,
    },
    /// The generated development `SECRET_KEY` could not be read or kept.
    #[error("{path}: cannot keep the generated development SECRET_KEY: {source}")]
    SecretKeyFile {
        /// The file.
        path: String,
        /// The IO error.
        source: io::Error,
    },
    /// Validation found problems.
    #[error("{}", one_line(.0))]
    Invalid(ConfigErrors),
}

fn one_line(errors: &ConfigErrors) -> String {
    let problems: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
    format!(
        "invalid configuration: {} (run `fab config check` for the whole picture)",
        problems.join("; ")
    )
}

/// Every environment variable of this process, as `(name, value)` pairs (non-UTF-8 bytes
/// replaced). The only place fab reads the process environment.
pub fn process_env() -> Vec<(String, String)> {
    std::env::vars_os()
        .map(|(name, value)| {
            (
                name.to_string_lossy().into_owned(),
                value.to_string_lossy().into_owned(),
            )
        })
        .collect()
}

/// Reads the configuration file and the environment into a [`RawConfig`], generating the
/// development `SECRET_KEY` when needed. `config_flag` is the `--config` argument.
pub fn read_raw(
    config_flag: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    rng: &dyn RandomSource,
) -> Result<RawConfig, SettingsError> {
    let env: Vec<(String, String)> = env.into_iter().collect();
    let mut raw = RawConfig::new();

    if let Some(path) = config_file(config_flag, &env) {
        read_file(&path, &mut raw)?;
    }

    // Aliases first, canonical names last: `FAB_ENV` beats `FLASK_ENV` whatever order the
    // operating system lists them in.
    let mut overrides: Vec<(bool, &str, &str)> = env
        .iter()
        .filter_map(|(name, value)| {
            key_for_env(name).map(|key| (key == name.as_str(), name.as_str(), value.as_str()))
        })
        .collect();
    overrides.sort_by_key(|(canonical, name, _)| (*canonical, *name));
    for (_, name, value) in overrides {
        raw.set(
            name,
            RawValue::Text(value.to_owned()),
            Origin::Env(name.to_owned()),
        );
    }

    if !raw.contains("SECRET_KEY") && is_development(&raw) {
        let path = data_dir(&raw).join(SECRET_KEY_FILE);
        let key =
            development_secret(&path, rng).map_err(|source| SettingsError::SecretKeyFile {
                path: path.display().to_string(),
                source,
            })?;
        raw.set(
            "SECRET_KEY",
            RawValue::Text(key),
            Origin::Generated(path.display().to_string()),
        );
    }
    Ok(raw)
}

/// Reads and validates the configuration.
pub fn load(
    config_flag: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    rng: &dyn RandomSource,
) -> Result<Config, SettingsError> {
    let raw = read_raw(config_flag, env, rng)?;
    Config::from_raw(&raw).map_err(SettingsError::Invalid)
}

/// Reads the configuration and reports on it whether or not it is usable (`fab config check`).
pub fn check(
    config_flag: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
    rng: &dyn RandomSource,
) -> Result<ConfigReport, SettingsError> {
    let raw = read_raw(config_flag, env, rng)?;
    Ok(Config::check(&raw))
}

/// The file to read: the flag, else `FAB_CONFIG`, else `./fab.toml` when it exists.
fn config_file(config_flag: Option<&Path>, env: &[(String, String)]) -> Option<PathBuf> {
    if let Some(path) = config_flag {
        return Some(path.to_path_buf());
    }
    if let Some((_, value)) = env
        .iter()
        .find(|(name, value)| name == CONFIG_FILE_ENV && !value.is_empty())
    {
        return Some(PathBuf::from(value));
    }
    let default = PathBuf::from(DEFAULT_CONFIG_FILE);
    default.is_file().then_some(default)
}

fn read_file(path: &Path, raw: &mut RawConfig) -> Result<(), SettingsError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read {
        path: shown.clone(),
        source,
    })?;
    let table = text
        .parse::<toml::Table>()
        .map_err(|error| syntax_error(&shown, &text, &error))?;
    for (key, value) in table {
        let origin = Origin::File(shown.clone());
        let raw_value = match value {
            toml::Value::String(s) => RawValue::Text(s),
            toml::Value::Boolean(b) => RawValue::Bool(b),
            toml::Value::Integer(i) => RawValue::Integer(i),
            other if key_for_env(&key.to_ascii_uppercase()).is_some() => {
                raw.report_problem(
                    &key,
                    format!(
                        "{} values are not supported (in {shown}); write a string, boolean or integer",
                        other.type_str()
                    ),
                );
                continue;
            }
            // An unknown key: let `set` report it under its name, whatever its type.
            other => RawValue::Text(other.to_string()),
        };
        raw.set(&key, raw_value, origin);
    }
    Ok(())
}

fn syntax_error(path: &str, text: &str, error: &toml::de::Error) -> SettingsError {
    let offset = error.span().map_or(0, |span| span.start).min(text.len());
    let before = text.get(..offset).unwrap_or_default();
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map_or(0, |current| current.chars().count())
        + 1;
    SettingsError::Syntax {
        path: path.to_owned(),
        line,
        column,
        message: error.message().trim().to_owned(),
    }
}

/// Whether the raw configuration asks for development (the default), with the same names
/// validation accepts. An unreadable `FAB_ENV` is not development: validation reports it.
fn is_development(raw: &RawConfig) -> bool {
    raw.get("FAB_ENV").is_none_or(|entry| {
        matches!(
            entry.value.to_string().trim().to_ascii_lowercase().as_str(),
            "development" | "dev"
        )
    })
}

fn data_dir(raw: &RawConfig) -> PathBuf {
    let default = KEYS
        .iter()
        .find(|k| k.name == "FAB_DATA_DIR")
        .map_or("data", |k| k.default);
    PathBuf::from(
        raw.get("FAB_DATA_DIR")
            .map_or_else(|| default.to_owned(), |entry| entry.value.to_string()),
    )
}

/// The key kept at `path`, created (mode 0600, in a directory created as needed) when missing.
fn development_secret(path: &Path, rng: &dyn RandomSource) -> io::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(existing) if !existing.trim().is_empty() => return Ok(existing.trim().to_owned()),
        Ok(_) => std::fs::remove_file(path)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let key = random_token(rng, GENERATED_SECRET_BYTES);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(mut file) => {
            file.write_all(key.as_bytes())?;
            file.write_all(b"\n")?;
            file.sync_all()?;
            Ok(key)
        }
        // Another process created it first: use theirs, so both agree.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            Ok(std::fs::read_to_string(path)?.trim().to_owned())
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fab_core::config::{Environment, SessionBackend};
    use fab_core::random::OsRandom;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    const KEY: &str = "0123456789abcdef0123456789abcdef0123";

    #[test]
    fn file_keys_are_case_insensitive_and_typed() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "fab.toml",
            &format!(
                "secret_key = \"{KEY}\"\nSession_Backend = \"memory\"\nSESSION_TIMEOUT = 120\n\
                 SESSION_COOKIE_HTTPONLY = true\n"
            ),
        );
        let config = load(Some(&path), env(&[]), &OsRandom).unwrap();
        assert_eq!(config.secret_key.expose(), KEY);
        assert_eq!(config.session.backend, SessionBackend::Memory);
        assert_eq!(config.session.policy.idle_timeout.num_seconds(), 120);
        let timeout = config
            .effective
            .iter()
            .find(|e| e.key == "SESSION_TIMEOUT")
            .unwrap();
        assert_eq!(timeout.origin, Origin::File(path.display().to_string()));
    }

    #[test]
    fn environment_overrides_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "fab.toml",
            &format!("SECRET_KEY = \"{KEY}\"\nSESSION_TIMEOUT = 120\n"),
        );
        let config = load(
            Some(&path),
            env(&[("SESSION_TIMEOUT", "30m"), ("UNRELATED", "x")]),
            &OsRandom,
        )
        .unwrap();
        assert_eq!(config.session.policy.idle_timeout.num_seconds(), 1800);
        let timeout = config
            .effective
            .iter()
            .find(|e| e.key == "SESSION_TIMEOUT")
            .unwrap();
        assert_eq!(timeout.origin, Origin::Env("SESSION_TIMEOUT".into()));
    }

    #[test]
    fn canonical_name_beats_its_alias_in_any_order() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().display().to_string();
        for pairs in [
            [("FLASK_ENV", "production"), ("FAB_ENV", "development")],
            [("FAB_ENV", "development"), ("FLASK_ENV", "production")],
        ] {
            let mut vars = env(&pairs);
            vars.push(("FAB_DATA_DIR".into(), data.clone()));
            let config = load(None, vars, &OsRandom).unwrap();
            assert_eq!(config.environment, Environment::Development);
        }
    }

    #[test]
    fn flask_and_sqlalchemy_names_are_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        let config = load(
            None,
            env(&[
                ("FLASK_ENV", "development"),
                ("SECRET_KEY", KEY),
                (
                    "SQLALCHEMY_DATABASE_URI",
                    &format!("sqlite:///{}", db.display()),
                ),
            ]),
            &OsRandom,
        )
        .unwrap();
        assert_eq!(
            config.database,
            fab_core::config::DatabaseUrl::Sqlite { path: db }
        );
    }

    #[test]
    fn config_file_env_names_the_file_and_the_flag_beats_it() {
        let dir = tempfile::tempdir().unwrap();
        let by_env = write(
            dir.path(),
            "env.toml",
            &format!("SECRET_KEY = \"{KEY}\"\nAPP_NAME = \"from env file\"\n"),
        );
        let by_flag = write(
            dir.path(),
            "flag.toml",
            &format!("SECRET_KEY = \"{KEY}\"\nAPP_NAME = \"from flag file\"\n"),
        );
        let vars = env(&[(CONFIG_FILE_ENV, by_env.to_str().unwrap())]);
        let config = load(None, vars.clone(), &OsRandom).unwrap();
        assert_eq!(config.app_name, "from env file");
        let config = load(Some(&by_flag), vars, &OsRandom).unwrap();
        assert_eq!(config.app_name, "from flag file");
    }

    #[test]
    fn a_named_file_that_is_missing_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.toml");
        let error = load(Some(&missing), env(&[]), &OsRandom).unwrap_err();
        assert!(matches!(error, SettingsError::Read { .. }), "{error}");
        assert!(error.to_string().contains("nope.toml"), "{error}");
    }

    #[test]
    fn syntax_error_names_the_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "fab.toml",
            "APP_NAME = \"ok\"\n\nSESSION_TIMEOUT = = 3\n",
        );
        let error = load(Some(&path), env(&[]), &OsRandom).unwrap_err();
        let SettingsError::Syntax { line, .. } = &error else {
            panic!("expected a syntax error, got {error}");
        };
        assert_eq!(*line, 3);
        let text = error.to_string();
        assert!(
            text.starts_with(&format!("{}:3:", path.display())),
            "{text}"
        );
    }

    #[test]
    fn unknown_file_keys_and_unsupported_types_are_reported_together() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "fab.toml",
            &format!("SECRET_KEY = \"{KEY}\"\nSECRET_KYE = \"typo\"\nSESSION_TIMEOUT = [1, 2]\n"),
        );
        let report = check(Some(&path), env(&[]), &OsRandom).unwrap();
        let keys: Vec<_> = report.problems.iter().map(|p| p.key.as_str()).collect();
        assert!(keys.contains(&"SECRET_KYE"), "{keys:?}");
        assert!(keys.contains(&"SESSION_TIMEOUT"), "{keys:?}");
        let error = load(Some(&path), env(&[]), &OsRandom).unwrap_err();
        assert!(
            error.to_string().contains("SECRET_KYE: unknown key"),
            "{error}"
        );
    }

    #[test]
    fn development_secret_is_generated_once_and_kept_private() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("nested/data");
        let vars = env(&[("FAB_DATA_DIR", data.to_str().unwrap())]);
        let first = load(None, vars.clone(), &OsRandom).unwrap();
        let second = load(None, vars, &OsRandom).unwrap();
        assert_eq!(first.secret_key.expose(), second.secret_key.expose());
        assert_eq!(first.secret_key.char_count(), 64);
        let file = data.join(SECRET_KEY_FILE);
        let kept = std::fs::read_to_string(&file).unwrap();
        assert_eq!(kept.trim(), first.secret_key.expose());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let entry = first
            .effective
            .iter()
            .find(|e| e.key == "SECRET_KEY")
            .unwrap();
        assert_eq!(entry.origin, Origin::Generated(file.display().to_string()));
        assert_eq!(entry.value, "[redacted]");
    }

    #[test]
    fn production_never_generates_a_secret() {
        let dir = tempfile::tempdir().unwrap();
        let vars = env(&[
            ("FAB_ENV", "production"),
            ("FAB_DATA_DIR", dir.path().to_str().unwrap()),
        ]);
        let error = load(None, vars, &OsRandom).unwrap_err();
        assert!(
            error.to_string().contains("SECRET_KEY: is required"),
            "{error}"
        );
        assert!(!dir.path().join(SECRET_KEY_FILE).exists());
    }

    #[test]
    fn a_given_secret_is_never_replaced_by_a_generated_one() {
        let dir = tempfile::tempdir().unwrap();
        let vars = env(&[
            ("SECRET_KEY", KEY),
            ("FAB_DATA_DIR", dir.path().to_str().unwrap()),
        ]);
        let config = load(None, vars, &OsRandom).unwrap();
        assert_eq!(config.secret_key.expose(), KEY);
        assert!(!dir.path().join(SECRET_KEY_FILE).exists());
    }
}

//! Logging: tracing events to stderr, filtered by `FAB_LOG` and shaped by `FAB_LOG_FORMAT`.
//!
//! Logs go to stderr so a command's stdout stays its result (a table, or JSON for scripts).

use fab_core::config::{Config, LogFormat};
use std::io::IsTerminal as _;
use tracing_subscriber::EnvFilter;

/// `FAB_LOG` is not a filter tracing-subscriber understands.
#[derive(Debug, thiserror::Error)]
#[error("FAB_LOG: `{filter}` is not a valid log filter: {reason}")]
pub struct LogFilterError {
    /// The filter given.
    pub filter: String,
    /// Why it was refused.
    pub reason: String,
}

/// Parses a log filter (`info`, `fab=debug,sqlx=warn`, ...).
pub fn parse_filter(filter: &str) -> Result<EnvFilter, LogFilterError> {
    EnvFilter::builder()
        .with_regex(false)
        .parse(filter)
        .map_err(|e| LogFilterError {
            filter: filter.to_owned(),
            reason: e.to_string(),
        })
}

/// Installs the process-wide subscriber; a second call keeps the first one.
pub fn init(config: &Config) -> Result<(), LogFilterError> {
    let filter = parse_filter(&config.log_filter)?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never into a log file or collector.
        .with_ansi(std::io::stderr().is_terminal());
    // An error means a subscriber is already installed (tests that run several commands).
    let _ = match config.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_checked() {
        assert!(parse_filter("info").is_ok());
        assert!(parse_filter("fab=debug,sqlx=warn").is_ok());
        let error = parse_filter("fab=loud").unwrap_err();
        assert!(
            error.to_string().starts_with("FAB_LOG: `fab=loud`"),
            "{error}"
        );
    }
}

//! How database errors become [`StoreError`]s: connection trouble is `Unavailable`, a broken
//! uniqueness rule is a `Conflict` the caller words for the user, everything else `Internal`.
//!
//! Messages come from the driver (constraint names, server messages), never from SQL text or a
//! connection URL, so they are safe for logs; only `Conflict` messages reach clients, and those
//! are written by the store itself.

use fab_core::StoreError;
use sea_orm::sqlx;
use sea_orm::{DbErr, RuntimeErr, SqlErr};

/// Maps a database error that carries no meaning for the caller.
pub(crate) fn from_db(err: DbErr) -> StoreError {
    if is_unavailable(&err) {
        StoreError::Unavailable(err.to_string())
    } else {
        StoreError::Internal(err.to_string())
    }
}

/// The name of the unique constraint or index `err` broke, when it is a unique violation.
pub(crate) fn unique_violation(err: &DbErr) -> Option<String> {
    match err.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(message)) => Some(message),
        _ => None,
    }
}

/// Whether `err` is a foreign-key violation (a referenced row is missing).
pub(crate) fn is_foreign_key_violation(err: &DbErr) -> bool {
    matches!(
        err.sql_err(),
        Some(SqlErr::ForeignKeyConstraintViolation(_))
    )
}

fn is_unavailable(err: &DbErr) -> bool {
    match err {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(inner)) | DbErr::Query(RuntimeErr::SqlxError(inner)) => {
            is_unavailable_sqlx(inner)
        }
        _ => false,
    }
}

fn is_unavailable_sqlx(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::BeginFailed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| is_unavailable_code(&code)),
        _ => false,
    }
}

/// Error codes that mean "try again later" rather than "this request is wrong". The two
/// databases number their errors differently, so both vocabularies are listed.
fn is_unavailable_code(code: &str) -> bool {
    // PostgreSQL SQLSTATE: class 08 connection exception, class 53 insufficient resources
    // (too many connections, disk full), 57P01..57P05 server shutting down or idle timeouts.
    let postgres = code.starts_with("08") || code.starts_with("53") || code.starts_with("57P");
    // SQLite result codes: SQLITE_BUSY (5) and SQLITE_LOCKED (6) with their extended codes,
    // which the busy timeout could not wait out.
    let sqlite = matches!(code, "5" | "6" | "261" | "262" | "517" | "773");
    postgres || sqlite
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is the test failing"
)]
mod tests {
    use super::*;

    #[test]
    fn connection_errors_are_unavailable() {
        let err = DbErr::Conn(RuntimeErr::SqlxError(std::sync::Arc::new(
            sqlx::Error::PoolTimedOut,
        )));
        assert!(matches!(from_db(err), StoreError::Unavailable(_)));
        let err = DbErr::Query(RuntimeErr::SqlxError(std::sync::Arc::new(
            sqlx::Error::PoolClosed,
        )));
        assert!(matches!(from_db(err), StoreError::Unavailable(_)));
    }

    #[test]
    fn other_errors_are_internal() {
        let err = DbErr::Custom("broken".into());
        assert!(matches!(from_db(err), StoreError::Internal(m) if m.contains("broken")));
        let err = DbErr::Query(RuntimeErr::SqlxError(std::sync::Arc::new(
            sqlx::Error::RowNotFound,
        )));
        assert!(matches!(from_db(err), StoreError::Internal(_)));
    }

    #[test]
    fn busy_and_shutdown_codes_are_unavailable() {
        for code in ["08006", "53300", "57P01", "5", "517"] {
            assert!(is_unavailable_code(code), "{code}");
        }
        for code in ["23505", "42P01", "19", "2067"] {
            assert!(!is_unavailable_code(code), "{code}");
        }
    }
}

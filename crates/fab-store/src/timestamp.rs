//! Timestamps as the database keeps them: naive UTC (FAB's `timestamp without time zone`) at
//! microsecond precision, the finest PostgreSQL stores.
//!
//! Every value is truncated to whole microseconds before it is written, on SQLite too, so a
//! record reads back equal to what was written on both databases.

use chrono::{DateTime, NaiveDateTime, SubsecRound, Utc};

/// The stored form of `at`.
pub(crate) fn to_db(at: DateTime<Utc>) -> NaiveDateTime {
    at.trunc_subsecs(6).naive_utc()
}

/// The instant a stored value names.
pub(crate) fn from_db(at: NaiveDateTime) -> DateTime<Utc> {
    at.and_utc()
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
    fn round_trip_keeps_microseconds() {
        let at = DateTime::from_timestamp(1_700_000_000, 123_456_789).unwrap();
        let back = from_db(to_db(at));
        assert_eq!(
            back,
            DateTime::from_timestamp(1_700_000_000, 123_456_000).unwrap()
        );
    }
}

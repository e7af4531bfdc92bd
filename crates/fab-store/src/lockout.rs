//! Account lockout state in `fab_lockout`: one row per account whose state was ever changed,
//! deleted with its user (foreign key, `ON DELETE CASCADE`).
//!
//! The one thing to know: [`update`] is a read-modify-write that must not lose an update when
//! logins for the same account race, on one instance or many. It runs in one transaction that
//! holds the account's row from the read to the write: on SQLite `BEGIN IMMEDIATE` takes the
//! database's write lock before the read; on PostgreSQL `SELECT ... FOR UPDATE` locks the row, and
//! the first write of an account is `INSERT ... ON CONFLICT DO NOTHING`, which waits for a
//! competing first insert to commit and then reports that it inserted nothing, so the update is
//! redone on the row the competitor wrote instead of overwriting it. The change may therefore
//! run more than once; only its last run, on the state actually stored, is kept and returned,
//! so callers learn outcomes (did this failure lock the account?) from the returned state, not
//! from side effects of the closure.
//!
//! Values are stored as the columns hold them (timestamps at microseconds, counters in 32 bits,
//! addresses up to 64 characters), and [`update`] returns the state as stored, so it equals what
//! [`state`] reads back. `changed_at` is bookkeeping for operators, written with the database's
//! clock (the trait gives the store no instant of its own); no lockout rule reads it: the rules
//! use the instants inside the state, which come from fab's `Clock`.

use crate::entity::fab_lockout;
use crate::error::{from_db, is_foreign_key_violation};
use crate::sql_store::{SqlStore, commit};
use crate::timestamp;
use crate::users::table_key;
use fab_core::StoreError;
use fab_core::lockout::{Counter, LockoutState};
use fab_core::user::UserId;
use sea_orm::sea_query::{Expr, OnConflict, Query};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect};

/// Longest address `fab_lockout.known_ip` holds (an IPv6 address takes at most 45).
const IP_MAX: usize = 64;

/// How often [`update`] goes round when its first insert keeps meeting a row that is gone again
/// by the time it reads (a competitor inserting and `fab user-unlock` deleting, over and over).
const ATTEMPTS: usize = 8;

/// The stored state of `user`, or the default when none is stored (or no such user exists).
pub(crate) async fn state<C: ConnectionTrait>(
    connection: &C,
    user: UserId,
) -> Result<LockoutState, StoreError> {
    let Some(key) = table_key(user.0) else {
        return Ok(LockoutState::default());
    };
    let row = fab_lockout::Entity::find_by_id(key)
        .one(connection)
        .await
        .map_err(from_db)?;
    Ok(row.as_ref().map(to_state).unwrap_or_default())
}

/// Applies `change` to the state of `user` and stores the result, in one transaction that no
/// other update of the same account can interleave with. `NotFound` when there is no such user.
pub(crate) async fn update(
    store: &SqlStore,
    user: UserId,
    change: &(dyn Fn(&mut LockoutState) + Send + Sync),
) -> Result<LockoutState, StoreError> {
    let key = table_key(user.0).ok_or(StoreError::NotFound)?;
    let transaction = store.begin_locking_write().await?;
    for _ in 0..ATTEMPTS {
        let current = fab_lockout::Entity::find_by_id(key)
            .lock_exclusive()
            .one(&transaction)
            .await
            .map_err(from_db)?;
        let mut state = current.as_ref().map(to_state).unwrap_or_default();
        change(&mut state);
        let row = to_row(key, &state);
        if current.is_some() {
            let mut update = fab_lockout::Entity::update_many();
            for (column, value) in written_values(&row) {
                update = update.col_expr(column, value);
            }
            update
                .filter(fab_lockout::Column::UserId.eq(key))
                .exec(&transaction)
                .await
                .map_err(from_db)?;
            commit(transaction).await?;
            return Ok(to_state(&row));
        }
        let (columns, values): (Vec<_>, Vec<_>) = written_values(&row).into_iter().unzip();
        let insert = Query::insert()
            .into_table(fab_lockout::Entity)
            .columns(columns)
            .values(values)
            .map_err(|e| StoreError::Internal(e.to_string()))?
            .on_conflict(
                OnConflict::column(fab_lockout::Column::UserId)
                    .do_nothing()
                    .to_owned(),
            )
            .to_owned();
        let inserted = transaction.execute(&insert).await.map_err(|e| {
            if is_foreign_key_violation(&e) {
                StoreError::NotFound
            } else {
                from_db(e)
            }
        })?;
        if inserted.rows_affected() == 1 {
            commit(transaction).await?;
            return Ok(to_state(&row));
        }
        // A competing transaction stored the account's first state after our read and
        // committed while our insert waited: read (and lock) its row, and apply the change to
        // that. Only PostgreSQL gets here; SQLite's write lock admits no competitor.
    }
    Err(StoreError::Unavailable(format!(
        "the lockout state of user {user} kept changing; try again"
    )))
}

/// Deletes the stored state of `user`; nothing to delete is not an error.
pub(crate) async fn clear(store: &SqlStore, user: UserId) -> Result<(), StoreError> {
    let Some(key) = table_key(user.0) else {
        return Ok(());
    };
    let transaction = store.begin_write().await?;
    fab_lockout::Entity::delete_many()
        .filter(fab_lockout::Column::UserId.eq(key))
        .exec(&transaction)
        .await
        .map_err(from_db)?;
    commit(transaction).await
}

fn to_state(row: &fab_lockout::Model) -> LockoutState {
    let counter = |failures: i32, last: Option<_>, until: Option<_>| Counter {
        failures: u32::try_from(failures).unwrap_or(0),
        last_failure_at: last.map(timestamp::from_db),
        locked_until: until.map(timestamp::from_db),
    };
    LockoutState {
        known: counter(
            row.known_failures,
            row.known_last_failure_at,
            row.known_locked_until,
        ),
        other: counter(
            row.other_failures,
            row.other_last_failure_at,
            row.other_locked_until,
        ),
        known_ip: row.known_ip.clone(),
        known_ip_at: row.known_ip_at.map(timestamp::from_db),
    }
}

/// The row holding `state` as the columns can: counters beyond 32 bits stay at the largest,
/// and an address too long for its column is not remembered (attempts from it then count as
/// coming from elsewhere, the safe side). `changed_at` is left to the database.
fn to_row(key: i32, state: &LockoutState) -> fab_lockout::Model {
    let failures = |counter: &Counter| i32::try_from(counter.failures).unwrap_or(i32::MAX);
    fab_lockout::Model {
        user_id: key,
        known_failures: failures(&state.known),
        known_last_failure_at: state.known.last_failure_at.map(timestamp::to_db),
        known_locked_until: state.known.locked_until.map(timestamp::to_db),
        other_failures: failures(&state.other),
        other_last_failure_at: state.other.last_failure_at.map(timestamp::to_db),
        other_locked_until: state.other.locked_until.map(timestamp::to_db),
        known_ip: state
            .known_ip
            .clone()
            .filter(|ip| ip.chars().count() <= IP_MAX),
        known_ip_at: state.known_ip_at.map(timestamp::to_db),
        changed_at: chrono::NaiveDateTime::default(),
    }
}

/// Every column an update or insert writes, `changed_at` from the database's clock.
fn written_values(row: &fab_lockout::Model) -> Vec<(fab_lockout::Column, Expr)> {
    use fab_lockout::Column;
    vec![
        (Column::UserId, Expr::val(row.user_id)),
        (Column::KnownFailures, Expr::val(row.known_failures)),
        (
            Column::KnownLastFailureAt,
            Expr::val(row.known_last_failure_at),
        ),
        (Column::KnownLockedUntil, Expr::val(row.known_locked_until)),
        (Column::OtherFailures, Expr::val(row.other_failures)),
        (
            Column::OtherLastFailureAt,
            Expr::val(row.other_last_failure_at),
        ),
        (Column::OtherLockedUntil, Expr::val(row.other_locked_until)),
        (Column::KnownIp, Expr::val(row.known_ip.clone())),
        (Column::KnownIpAt, Expr::val(row.known_ip_at)),
        (Column::ChangedAt, Expr::current_timestamp()),
    ]
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is the test failing"
)]
mod tests {
    use super::*;
    use chrono::DateTime;

    #[test]
    fn state_round_trips_through_its_row_as_the_columns_hold_it() {
        let at = DateTime::from_timestamp(1_800_000_000, 123_456_789).unwrap();
        let state = LockoutState {
            known: Counter {
                failures: 3,
                last_failure_at: Some(at),
                locked_until: None,
            },
            other: Counter {
                failures: u32::MAX,
                last_failure_at: None,
                locked_until: Some(at),
            },
            known_ip: Some("2001:db8::1".into()),
            known_ip_at: Some(at),
        };
        let stored = to_state(&to_row(7, &state));
        let micros = DateTime::from_timestamp(1_800_000_000, 123_456_000).unwrap();
        assert_eq!(stored.known.failures, 3);
        assert_eq!(stored.known.last_failure_at, Some(micros));
        assert_eq!(stored.other.failures, i32::MAX as u32, "counters saturate");
        assert_eq!(stored.other.locked_until, Some(micros));
        assert_eq!(stored.known_ip.as_deref(), Some("2001:db8::1"));
        assert_eq!(stored.known_ip_at, Some(micros));
        assert_eq!(to_state(&to_row(7, &stored)), stored, "stable once stored");
    }

    #[test]
    fn an_address_too_long_for_its_column_is_not_remembered() {
        let state = LockoutState {
            known_ip: Some("a".repeat(IP_MAX + 1)),
            ..LockoutState::default()
        };
        assert_eq!(to_row(1, &state).known_ip, None);
        let fits = LockoutState {
            known_ip: Some("a".repeat(IP_MAX)),
            ..LockoutState::default()
        };
        assert_eq!(to_row(1, &fits).known_ip, fits.known_ip);
    }

    #[test]
    fn a_negative_stored_counter_reads_as_zero() {
        let mut row = to_row(1, &LockoutState::default());
        row.other_failures = -5;
        assert_eq!(to_state(&row).other.failures, 0);
    }
}

//! Named operational flags in `fab_flag` (emergency mode when the rate limiter is in memory,
//! and whatever else every instance must agree on).
//!
//! Setting or clearing a flag writes its audit event in the same transaction, after the change,
//! so a failure anywhere leaves neither. Names and values longer than their columns are refused
//! the same way on both databases, before anything is written.

use crate::audit;
use crate::entity::fab_flag;
use crate::error::from_db;
use crate::sql_store::{SqlStore, commit};
use crate::timestamp;
use fab_core::StoreError;
use fab_core::audit::AuditEvent;
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect,
};

/// Longest flag name `fab_flag.name` holds.
pub(crate) const NAME_MAX: usize = 64;
/// Longest flag value `fab_flag.value` holds.
pub(crate) const VALUE_MAX: usize = 256;

/// The value of flag `name`, if it is set.
pub(crate) async fn value<C: ConnectionTrait>(
    connection: &C,
    name: &str,
) -> Result<Option<String>, StoreError> {
    if name.chars().count() > NAME_MAX {
        // No stored flag can have this name.
        return Ok(None);
    }
    fab_flag::Entity::find_by_id(name.to_owned())
        .select_only()
        .column(fab_flag::Column::Value)
        .into_tuple::<String>()
        .one(connection)
        .await
        .map_err(from_db)
}

/// Sets flag `name` to `value` (or clears it for `None`), with `audit` in the same transaction;
/// the flag's `changed_at` is the event's instant.
pub(crate) async fn set(
    store: &SqlStore,
    name: &str,
    value: Option<&str>,
    audit: &AuditEvent,
) -> Result<(), StoreError> {
    check_sizes(name, value)?;
    let transaction = store.begin_write().await?;
    match value {
        Some(value) => {
            let row = fab_flag::ActiveModel {
                name: Set(name.to_owned()),
                value: Set(value.to_owned()),
                changed_at: Set(timestamp::to_db(audit.at)),
            };
            fab_flag::Entity::insert(row)
                .on_conflict(
                    OnConflict::column(fab_flag::Column::Name)
                        .update_columns([fab_flag::Column::Value, fab_flag::Column::ChangedAt])
                        .to_owned(),
                )
                .exec_without_returning(&transaction)
                .await
                .map_err(from_db)?;
        }
        None => {
            fab_flag::Entity::delete_many()
                .filter(fab_flag::Column::Name.eq(name))
                .exec(&transaction)
                .await
                .map_err(from_db)?;
        }
    }
    audit::insert(&transaction, audit).await?;
    commit(transaction).await
}

fn check_sizes(name: &str, value: Option<&str>) -> Result<(), StoreError> {
    if name.is_empty() {
        return Err(StoreError::Conflict("a flag needs a name".into()));
    }
    if name.chars().count() > NAME_MAX {
        return Err(StoreError::Conflict(format!(
            "flag name is longer than {NAME_MAX} characters"
        )));
    }
    if value.is_some_and(|value| value.chars().count() > VALUE_MAX) {
        return Err(StoreError::Conflict(format!(
            "flag value is longer than {VALUE_MAX} characters"
        )));
    }
    Ok(())
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
    fn sizes_are_counted_in_characters() {
        assert!(check_sizes(&"é".repeat(NAME_MAX), Some(&"é".repeat(VALUE_MAX))).is_ok());
        assert!(check_sizes(&"é".repeat(NAME_MAX + 1), None).is_err());
        assert!(check_sizes("n", Some(&"é".repeat(VALUE_MAX + 1))).is_err());
        assert!(check_sizes("", None).is_err());
    }
}

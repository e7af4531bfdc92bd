//! The audit trail in `fab_audit`: writing an event (inside the caller's transaction, so it is
//! committed with the change it records) and reading the newest ones back.
//!
//! Text is cut to the column sizes on the way in, so an over-long user agent never makes the
//! change it accompanies fail; an event whose name this build does not know (written by a newer
//! fab) is skipped on the way out rather than failing the whole listing.

use crate::entity::fab_audit;
use crate::error::from_db;
use crate::timestamp;
use fab_core::StoreError;
use fab_core::audit::{Actor, AuditEvent, AuditKind, Outcome, RequestOrigin, StoredAuditEvent};
use fab_core::user::UserId;
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};

/// The most records one listing returns.
const MAX_LISTING: u64 = 10_000;

/// Writes `event` through `connection` (a transaction, or the pool for a standalone event).
pub(crate) async fn insert<C: ConnectionTrait>(
    connection: &C,
    event: &AuditEvent,
) -> Result<(), StoreError> {
    let row = fab_audit::ActiveModel {
        id: NotSet,
        at: Set(timestamp::to_db(event.at)),
        event: Set(event.kind.name().to_owned()),
        outcome: Set(event.outcome.as_str().to_owned()),
        actor_user_id: Set(event.actor.as_ref().and_then(|a| a.user_id).map(|id| id.0)),
        actor_name: Set(event.actor.as_ref().map(|a| truncated(&a.name, 256))),
        target: Set(event.target.as_deref().map(|t| truncated(t, 256))),
        ip: Set(event.origin.ip.as_deref().map(|ip| truncated(ip, 64))),
        user_agent: Set(event
            .origin
            .user_agent
            .as_deref()
            .map(|ua| truncated(ua, 256))),
        detail: Set((!event.detail.is_null()).then(|| event.detail.to_string())),
    };
    fab_audit::Entity::insert(row)
        .exec_without_returning(connection)
        .await
        .map_err(from_db)?;
    Ok(())
}

/// The newest `limit` events, newest first, optionally only those named `kind`.
pub(crate) async fn recent<C: ConnectionTrait>(
    connection: &C,
    limit: u64,
    kind: Option<&str>,
) -> Result<Vec<StoredAuditEvent>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let mut query = fab_audit::Entity::find();
    if let Some(kind) = kind {
        query = query.filter(fab_audit::Column::Event.eq(kind));
    }
    let rows = query
        .order_by_desc(fab_audit::Column::Id)
        .limit(limit.min(MAX_LISTING))
        .all(connection)
        .await
        .map_err(from_db)?;
    Ok(rows.into_iter().filter_map(stored_event).collect())
}

fn stored_event(row: fab_audit::Model) -> Option<StoredAuditEvent> {
    let Some(kind) = AuditKind::ALL.into_iter().find(|k| k.name() == row.event) else {
        tracing::warn!(id = row.id, event = %row.event, "skipping audit record of an unknown event");
        return None;
    };
    let outcome = if row.outcome == Outcome::Success.as_str() {
        Outcome::Success
    } else {
        Outcome::Failure
    };
    let actor = match (row.actor_user_id, row.actor_name) {
        (None, None) => None,
        (user_id, name) => Some(Actor {
            user_id: user_id.map(UserId),
            name: name.unwrap_or_default(),
        }),
    };
    let detail = match row.detail {
        None => serde_json::Value::Null,
        Some(text) => serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    };
    Some(StoredAuditEvent {
        id: row.id,
        event: AuditEvent {
            at: timestamp::from_db(row.at),
            kind,
            outcome,
            actor,
            target: row.target,
            origin: RequestOrigin {
                ip: row.ip,
                user_agent: row.user_agent,
            },
            detail,
        },
    })
}

/// `text` cut to at most `max` characters.
pub(crate) fn truncated(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
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
    fn truncation_counts_characters_not_bytes() {
        assert_eq!(truncated("ééé", 2), "éé");
        assert_eq!(truncated("ab", 5), "ab");
    }

    #[test]
    fn unknown_events_are_skipped_and_bad_detail_kept_as_text() {
        let row = |event: &str, detail: Option<&str>| fab_audit::Model {
            id: 1,
            at: chrono::NaiveDateTime::default(),
            event: event.into(),
            outcome: "failure".into(),
            actor_user_id: None,
            actor_name: Some("cli:root".into()),
            target: None,
            ip: None,
            user_agent: None,
            detail: detail.map(str::to_owned),
        };
        assert!(stored_event(row("future.event", None)).is_none());
        let stored = stored_event(row("user.login", Some("{not json"))).unwrap();
        assert_eq!(stored.event.kind, AuditKind::UserLogin);
        assert_eq!(stored.event.outcome, Outcome::Failure);
        assert_eq!(stored.event.detail, serde_json::json!("{not json"));
        assert_eq!(stored.event.actor.unwrap().name, "cli:root");
    }
}

//! [`SessionStore`] on `fab_session`: one row per session, keyed by the SHA-256 of its token.
//!
//! Rows reference `ab_user` with `ON DELETE CASCADE`, so a session cannot outlive its user even
//! when a row is deleted by hand. A session for a user that does not exist is refused. A row
//! whose stage this build cannot read is treated as absent: the request is then anonymous, never
//! more privileged.

use crate::entity::fab_session;
use crate::error::{from_db, is_foreign_key_violation, unique_violation};
use crate::sql_store::SqlStore;
use crate::timestamp;
use crate::users::table_key;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use fab_core::StoreError;
use fab_core::session::{SessionIdHash, SessionPolicy, SessionRecord, SessionStage, SessionStore};
use fab_core::user::UserId;
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveValue::Set, ColumnTrait, Condition, EntityTrait, QueryFilter, QueryOrder};

fn to_record(row: fab_session::Model) -> Option<SessionRecord> {
    let Some(stage) = SessionStage::parse(&row.stage) else {
        tracing::warn!(stage = %row.stage, "ignoring a session with an unknown stage");
        return None;
    };
    Some(SessionRecord {
        id_hash: SessionIdHash(row.id_hash),
        user_id: UserId(i64::from(row.user_id)),
        stage,
        created_at: timestamp::from_db(row.created_at),
        last_seen_at: timestamp::from_db(row.last_seen_at),
        expires_at: timestamp::from_db(row.expires_at),
        ip: row.ip,
        user_agent: row.user_agent,
    })
}

#[async_trait]
impl SessionStore for SqlStore {
    async fn create(&self, record: &SessionRecord) -> Result<(), StoreError> {
        let unknown_user =
            || StoreError::Conflict(format!("user {} does not exist", record.user_id));
        let user = table_key(record.user_id.0).ok_or_else(unknown_user)?;
        let row = fab_session::ActiveModel {
            id_hash: Set(record.id_hash.as_str().to_owned()),
            user_id: Set(user),
            stage: Set(record.stage.as_str().to_owned()),
            created_at: Set(timestamp::to_db(record.created_at)),
            last_seen_at: Set(timestamp::to_db(record.last_seen_at)),
            expires_at: Set(timestamp::to_db(record.expires_at)),
            ip: Set(record
                .ip
                .as_deref()
                .map(|ip| crate::audit::truncated(ip, 64))),
            user_agent: Set(record
                .user_agent
                .as_deref()
                .map(|ua| crate::audit::truncated(ua, 256))),
        };
        fab_session::Entity::insert(row)
            .exec_without_returning(&self.connection)
            .await
            .map_err(|e| {
                if unique_violation(&e).is_some() {
                    StoreError::Conflict("the session already exists".into())
                } else if is_foreign_key_violation(&e) {
                    unknown_user()
                } else {
                    from_db(e)
                }
            })?;
        Ok(())
    }

    async fn find(&self, id_hash: &SessionIdHash) -> Result<Option<SessionRecord>, StoreError> {
        let row = fab_session::Entity::find_by_id(id_hash.as_str().to_owned())
            .one(&self.connection)
            .await
            .map_err(from_db)?;
        Ok(row.and_then(to_record))
    }

    async fn touch(&self, id_hash: &SessionIdHash, at: DateTime<Utc>) -> Result<(), StoreError> {
        fab_session::Entity::update_many()
            .col_expr(
                fab_session::Column::LastSeenAt,
                Expr::val(timestamp::to_db(at)),
            )
            .filter(fab_session::Column::IdHash.eq(id_hash.as_str()))
            .exec(&self.connection)
            .await
            .map_err(from_db)?;
        Ok(())
    }

    async fn delete(&self, id_hash: &SessionIdHash) -> Result<bool, StoreError> {
        let deleted = fab_session::Entity::delete_many()
            .filter(fab_session::Column::IdHash.eq(id_hash.as_str()))
            .exec(&self.connection)
            .await
            .map_err(from_db)?;
        Ok(deleted.rows_affected > 0)
    }

    async fn delete_for_user(&self, user_id: UserId) -> Result<u64, StoreError> {
        let Some(user) = table_key(user_id.0) else {
            return Ok(0);
        };
        let deleted = fab_session::Entity::delete_many()
            .filter(fab_session::Column::UserId.eq(user))
            .exec(&self.connection)
            .await
            .map_err(from_db)?;
        Ok(deleted.rows_affected)
    }

    async fn delete_all(&self) -> Result<u64, StoreError> {
        let deleted = fab_session::Entity::delete_many()
            .exec(&self.connection)
            .await
            .map_err(from_db)?;
        Ok(deleted.rows_affected)
    }

    async fn list_for_user(&self, user_id: UserId) -> Result<Vec<SessionRecord>, StoreError> {
        let Some(user) = table_key(user_id.0) else {
            return Ok(Vec::new());
        };
        let rows = fab_session::Entity::find()
            .filter(fab_session::Column::UserId.eq(user))
            .order_by_desc(fab_session::Column::CreatedAt)
            .order_by_asc(fab_session::Column::IdHash)
            .all(&self.connection)
            .await
            .map_err(from_db)?;
        Ok(rows.into_iter().filter_map(to_record).collect())
    }

    async fn purge_expired(
        &self,
        now: DateTime<Utc>,
        policy: &SessionPolicy,
    ) -> Result<u64, StoreError> {
        // `last_seen_at + idle_timeout <= now` is computed as `last_seen_at <= now - idle` in
        // Rust: interval arithmetic is written differently in every SQL dialect.
        let idle_cutoff = now - policy.idle_timeout;
        let deleted = fab_session::Entity::delete_many()
            .filter(
                Condition::any()
                    .add(fab_session::Column::ExpiresAt.lte(timestamp::to_db(now)))
                    .add(fab_session::Column::LastSeenAt.lte(timestamp::to_db(idle_cutoff))),
            )
            .exec(&self.connection)
            .await
            .map_err(from_db)?;
        Ok(deleted.rows_affected)
    }
}

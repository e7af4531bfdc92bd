//! [`SqlStore`]: the security store, audit sink, session store, lockout store and flag store on
//! one SQL database.
//!
//! Every change runs in one write transaction together with the audit record describing it, so
//! both are committed or neither is. On SQLite write transactions start with `BEGIN IMMEDIATE`:
//! a transaction that read first and wrote later could otherwise fail with "database is locked"
//! when another writer got in between, instead of waiting its turn (PostgreSQL ignores the
//! option).

use crate::error::from_db;
use crate::{audit, flags, lockout, permissions, users};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use fab_core::StoreError;
use fab_core::audit::{AuditEvent, AuditSink, StoredAuditEvent};
use fab_core::lockout::{FlagStore, LockoutState, LockoutStore};
use fab_core::rbac::{
    Grant, PermissionSet, PermissionView, PermissionViewId, Role, RoleExport, RoleId,
};
use fab_core::secret::Secret;
use fab_core::store::{CleanupReport, Page, RoleSummary, SecurityStore, SyncReport, UserQuery};
use fab_core::user::{NewUser, User, UserId, UserProfile};
use sea_orm::{
    DatabaseConnection, DatabaseTransaction, DbBackend, IsolationLevel, SqliteTransactionMode,
    TransactionOptions, TransactionTrait,
};

/// Users, roles, permissions, the audit trail, sessions, lockout state and flags in SQL. Cheap
/// to clone.
#[derive(Clone, Debug)]
pub struct SqlStore {
    pub(crate) connection: DatabaseConnection,
}

impl SqlStore {
    pub(crate) fn new(connection: DatabaseConnection) -> Self {
        Self { connection }
    }

    /// Starts a write transaction; dropping it uncommitted rolls it back.
    pub(crate) async fn begin_write(&self) -> Result<DatabaseTransaction, StoreError> {
        let options = TransactionOptions {
            sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
            ..TransactionOptions::default()
        };
        self.connection
            .begin_with_options(options)
            .await
            .map_err(from_db)
    }

    /// Starts a write transaction for a locked read-modify-write (`SELECT ... FOR UPDATE`, then
    /// `INSERT ... ON CONFLICT DO NOTHING` for a row that is not there yet). On PostgreSQL it is
    /// READ COMMITTED whatever the server's default, because that is the level at which each
    /// statement sees what competing transactions committed while it waited for their locks
    /// (under REPEATABLE READ the same wait ends in a serialization failure). SQLite has no
    /// isolation levels to choose from (sea-orm warns if one is named) and needs none: its
    /// `BEGIN IMMEDIATE` already admits one writer at a time.
    pub(crate) async fn begin_locking_write(&self) -> Result<DatabaseTransaction, StoreError> {
        let isolation_level = (self.connection.get_database_backend() == DbBackend::Postgres)
            .then_some(IsolationLevel::ReadCommitted);
        let options = TransactionOptions {
            isolation_level,
            sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
            ..TransactionOptions::default()
        };
        self.connection
            .begin_with_options(options)
            .await
            .map_err(from_db)
    }
}

/// Commits `transaction`.
pub(crate) async fn commit(transaction: DatabaseTransaction) -> Result<(), StoreError> {
    transaction.commit().await.map_err(from_db)
}

#[async_trait]
impl AuditSink for SqlStore {
    async fn record(&self, event: &AuditEvent) -> Result<(), StoreError> {
        audit::insert(&self.connection, event).await
    }
}

#[async_trait]
impl SecurityStore for SqlStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.connection
            .ping()
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))
    }

    async fn user_by_id(&self, id: UserId) -> Result<Option<User>, StoreError> {
        users::by_id(&self.connection, id).await
    }

    async fn user_by_login(&self, login: &str) -> Result<Option<User>, StoreError> {
        users::by_login(&self.connection, login).await
    }

    async fn list_users(&self, query: &UserQuery) -> Result<Page<User>, StoreError> {
        users::list(&self.connection, query).await
    }

    async fn count_users(&self) -> Result<u64, StoreError> {
        users::count(&self.connection).await
    }

    async fn count_active_users_with_role(&self, role: &str) -> Result<u64, StoreError> {
        users::count_active_with_role(&self.connection, role).await
    }

    async fn create_user(&self, user: &NewUser, audit: &AuditEvent) -> Result<User, StoreError> {
        users::create(self, user, audit).await
    }

    async fn update_user(
        &self,
        id: UserId,
        profile: &UserProfile,
        changed_by: Option<UserId>,
        audit: &AuditEvent,
    ) -> Result<User, StoreError> {
        users::update(self, id, profile, changed_by, audit).await
    }

    async fn delete_user(&self, id: UserId, audit: &AuditEvent) -> Result<(), StoreError> {
        users::delete(self, id, audit).await
    }

    async fn set_user_active(
        &self,
        id: UserId,
        active: bool,
        changed_by: Option<UserId>,
        audit: &AuditEvent,
    ) -> Result<(), StoreError> {
        users::set_active(self, id, active, changed_by, audit).await
    }

    async fn set_password_hash(
        &self,
        id: UserId,
        hash: &Secret,
        changed_by: Option<UserId>,
        audit: Option<&AuditEvent>,
    ) -> Result<(), StoreError> {
        users::set_password_hash(self, id, hash, changed_by, audit).await
    }

    async fn record_login_success(
        &self,
        id: UserId,
        at: DateTime<Utc>,
        audit: &AuditEvent,
    ) -> Result<(), StoreError> {
        users::record_login_success(self, id, at, audit).await
    }

    async fn record_login_failure(&self, id: UserId, audit: &AuditEvent) -> Result<(), StoreError> {
        users::record_login_failure(self, id, audit).await
    }

    async fn list_roles(&self) -> Result<Vec<RoleSummary>, StoreError> {
        permissions::list_roles(&self.connection).await
    }

    async fn role_by_id(&self, id: RoleId) -> Result<Option<Role>, StoreError> {
        permissions::role_by_id(&self.connection, id).await
    }

    async fn role_by_name(&self, name: &str) -> Result<Option<Role>, StoreError> {
        permissions::role_by_name(&self.connection, name).await
    }

    async fn create_role(&self, name: &str, audit: &AuditEvent) -> Result<Role, StoreError> {
        permissions::create_role(self, name, audit).await
    }

    async fn rename_role(
        &self,
        id: RoleId,
        name: &str,
        audit: &AuditEvent,
    ) -> Result<(), StoreError> {
        permissions::rename_role(self, id, name, audit).await
    }

    async fn delete_role(&self, id: RoleId, audit: &AuditEvent) -> Result<(), StoreError> {
        permissions::delete_role(self, id, audit).await
    }

    async fn role_grants(&self, id: RoleId) -> Result<Vec<PermissionView>, StoreError> {
        permissions::role_grants(&self.connection, id).await
    }

    async fn set_role_grants(
        &self,
        id: RoleId,
        grants: &[PermissionViewId],
        audit: &AuditEvent,
    ) -> Result<(), StoreError> {
        permissions::set_role_grants(self, id, grants, audit).await
    }

    async fn permissions_of_roles(&self, roles: &[RoleId]) -> Result<PermissionSet, StoreError> {
        permissions::of_roles(&self.connection, roles).await
    }

    async fn permissions_of_role_name(&self, name: &str) -> Result<PermissionSet, StoreError> {
        permissions::of_role_name(&self.connection, name).await
    }

    async fn list_permissions(&self) -> Result<Vec<(i64, String)>, StoreError> {
        permissions::list_permissions(&self.connection).await
    }

    async fn list_view_menus(&self) -> Result<Vec<(i64, String)>, StoreError> {
        permissions::list_view_menus(&self.connection).await
    }

    async fn list_permission_views(&self) -> Result<Vec<PermissionView>, StoreError> {
        permissions::list_permission_views(&self.connection).await
    }

    async fn sync_permissions(
        &self,
        declared: &[Grant],
        admin_role: &str,
        public_role: &str,
    ) -> Result<SyncReport, StoreError> {
        permissions::sync(self, declared, admin_role, public_role).await
    }

    async fn cleanup_permissions(
        &self,
        declared: &[Grant],
        audit: &AuditEvent,
    ) -> Result<CleanupReport, StoreError> {
        permissions::cleanup(self, declared, audit).await
    }

    async fn export_roles(&self) -> Result<Vec<RoleExport>, StoreError> {
        permissions::export_roles(&self.connection).await
    }

    async fn import_roles(
        &self,
        roles: &[RoleExport],
        audit: &AuditEvent,
    ) -> Result<u64, StoreError> {
        permissions::import_roles(self, roles, audit).await
    }

    async fn recent_audit(
        &self,
        limit: u64,
        kind: Option<&str>,
    ) -> Result<Vec<StoredAuditEvent>, StoreError> {
        audit::recent(&self.connection, limit, kind).await
    }
}

#[async_trait]
impl LockoutStore for SqlStore {
    async fn lockout_state(&self, user: UserId) -> Result<LockoutState, StoreError> {
        lockout::state(&self.connection, user).await
    }

    async fn update_lockout(
        &self,
        user: UserId,
        change: &(dyn for<'a> Fn(&'a mut LockoutState) + Send + Sync),
    ) -> Result<LockoutState, StoreError> {
        lockout::update(self, user, change).await
    }

    async fn clear_lockout(&self, user: UserId) -> Result<(), StoreError> {
        lockout::clear(self, user).await
    }
}

#[async_trait]
impl FlagStore for SqlStore {
    async fn flag(&self, name: &str) -> Result<Option<String>, StoreError> {
        flags::value(&self.connection, name).await
    }

    async fn set_flag(
        &self,
        name: &str,
        value: Option<&str>,
        audit: &AuditEvent,
    ) -> Result<(), StoreError> {
        flags::set(self, name, value, audit).await
    }
}

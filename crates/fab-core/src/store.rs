//! The security store: users, roles, permissions and the audit trail, behind one trait that SQL
//! (SQLite and PostgreSQL) implements and the conformance suite in fab-testkit checks.
//!
//! Every method that changes security state takes the [`AuditEvent`] that records it and writes
//! both in one transaction: a change is never stored without its audit record, nor the reverse.

use crate::audit::{AuditEvent, AuditSink, StoredAuditEvent};
use crate::error::StoreError;
use crate::rbac::{
    Grant, PermissionSet, PermissionView, PermissionViewId, Role, RoleExport, RoleId,
};
use crate::secret::Secret;
use crate::user::{NewUser, User, UserId, UserProfile};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

/// How to list users.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserQuery {
    /// Case-insensitive substring over username, names and email.
    pub search: Option<String>,
    /// Zero-based page.
    pub page: u64,
    /// Rows per page (1..=500).
    pub page_size: u64,
}

impl Default for UserQuery {
    fn default() -> Self {
        Self {
            search: None,
            page: 0,
            page_size: 25,
        }
    }
}

/// One page of results.
#[derive(Debug, Clone, Serialize)]
pub struct Page<T> {
    /// The rows.
    pub items: Vec<T>,
    /// Rows matching in all.
    pub total: u64,
    /// This page (zero-based).
    pub page: u64,
    /// Rows per page.
    pub page_size: u64,
}

impl<T> Page<T> {
    /// Number of pages (at least 1).
    pub fn page_count(&self) -> u64 {
        self.total.div_ceil(self.page_size.max(1)).max(1)
    }
}

/// A role with how many users hold it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RoleSummary {
    /// The role.
    #[serde(flatten)]
    pub role: Role,
    /// Users holding it.
    pub user_count: u64,
    /// Grants it holds.
    pub grant_count: u64,
}

/// What synchronising the declared permissions changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SyncReport {
    /// Permission-on-view rows created.
    pub created: u64,
    /// Grants added to the Admin role.
    pub granted_to_admin: u64,
}

/// What `security-cleanup` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CleanupReport {
    /// Permission-on-view rows no route declares any more.
    pub permission_views: Vec<Grant>,
    /// View menus left without permissions.
    pub view_menus: Vec<String>,
    /// Permissions left unused.
    pub permissions: Vec<String>,
}

/// Users, roles, permissions and the audit trail.
#[async_trait]
pub trait SecurityStore: AuditSink {
    /// A cheap round trip proving the store answers (for readiness checks).
    async fn ping(&self) -> Result<(), StoreError>;
    /// The user with this id.
    async fn user_by_id(&self, id: UserId) -> Result<Option<User>, StoreError>;
    /// The user whose username or email equals `login`, case-insensitively.
    async fn user_by_login(&self, login: &str) -> Result<Option<User>, StoreError>;
    /// A page of users, ordered by username.
    async fn list_users(&self, query: &UserQuery) -> Result<Page<User>, StoreError>;
    /// Number of users.
    async fn count_users(&self) -> Result<u64, StoreError>;
    /// Number of active users holding the role `role`.
    async fn count_active_users_with_role(&self, role: &str) -> Result<u64, StoreError>;
    /// Creates a user. Conflict when the username or email (case-insensitively) is taken.
    async fn create_user(&self, user: &NewUser, audit: &AuditEvent) -> Result<User, StoreError>;
    /// Replaces a user's profile and roles.
    async fn update_user(
        &self,
        id: UserId,
        profile: &UserProfile,
        changed_by: Option<UserId>,
        audit: &AuditEvent,
    ) -> Result<User, StoreError>;
    /// Deletes a user and their role links.
    async fn delete_user(&self, id: UserId, audit: &AuditEvent) -> Result<(), StoreError>;
    /// Sets `active`.
    async fn set_user_active(
        &self,
        id: UserId,
        active: bool,
        changed_by: Option<UserId>,
        audit: &AuditEvent,
    ) -> Result<(), StoreError>;
    /// Stores a new password hash; `audit` is None for a silent rehash on login.
    async fn set_password_hash(
        &self,
        id: UserId,
        hash: &Secret,
        changed_by: Option<UserId>,
        audit: Option<&AuditEvent>,
    ) -> Result<(), StoreError>;
    /// A successful login: login_count + 1, last_login = at, fail_login_count = 0.
    async fn record_login_success(
        &self,
        id: UserId,
        at: DateTime<Utc>,
        audit: &AuditEvent,
    ) -> Result<(), StoreError>;
    /// A failed login of a known user: fail_login_count + 1.
    async fn record_login_failure(&self, id: UserId, audit: &AuditEvent) -> Result<(), StoreError>;

    /// Every role with its counts, ordered by name.
    async fn list_roles(&self) -> Result<Vec<RoleSummary>, StoreError>;
    /// The role with this id.
    async fn role_by_id(&self, id: RoleId) -> Result<Option<Role>, StoreError>;
    /// The role with this name (exact).
    async fn role_by_name(&self, name: &str) -> Result<Option<Role>, StoreError>;
    /// Creates a role. Conflict when the name is taken.
    async fn create_role(&self, name: &str, audit: &AuditEvent) -> Result<Role, StoreError>;
    /// Renames a role.
    async fn rename_role(
        &self,
        id: RoleId,
        name: &str,
        audit: &AuditEvent,
    ) -> Result<(), StoreError>;
    /// Deletes a role and its links.
    async fn delete_role(&self, id: RoleId, audit: &AuditEvent) -> Result<(), StoreError>;
    /// The grants a role holds.
    async fn role_grants(&self, id: RoleId) -> Result<Vec<PermissionView>, StoreError>;
    /// Replaces the grants a role holds.
    async fn set_role_grants(
        &self,
        id: RoleId,
        grants: &[PermissionViewId],
        audit: &AuditEvent,
    ) -> Result<(), StoreError>;
    /// The evaluated permissions of a set of roles (Admin among them makes an admin set).
    async fn permissions_of_roles(&self, roles: &[RoleId]) -> Result<PermissionSet, StoreError>;
    /// The evaluated permissions of the role named `name` (e.g. Public); empty when missing.
    async fn permissions_of_role_name(&self, name: &str) -> Result<PermissionSet, StoreError>;

    /// Every permission name.
    async fn list_permissions(&self) -> Result<Vec<(i64, String)>, StoreError>;
    /// Every view menu name.
    async fn list_view_menus(&self) -> Result<Vec<(i64, String)>, StoreError>;
    /// Every permission-on-view row.
    async fn list_permission_views(&self) -> Result<Vec<PermissionView>, StoreError>;
    /// Makes every declared grant exist, the Admin and Public roles exist, and Admin hold every
    /// grant. Idempotent.
    async fn sync_permissions(
        &self,
        declared: &[Grant],
        admin_role: &str,
        public_role: &str,
    ) -> Result<SyncReport, StoreError>;
    /// Removes permission-on-view rows (and then orphaned permissions and view menus) that are
    /// not in `declared`.
    async fn cleanup_permissions(
        &self,
        declared: &[Grant],
        audit: &AuditEvent,
    ) -> Result<CleanupReport, StoreError>;
    /// Every role and its grants, in Flask-AppBuilder's export format.
    async fn export_roles(&self) -> Result<Vec<RoleExport>, StoreError>;
    /// Creates or updates roles from Flask-AppBuilder's export format (grants are added, missing
    /// permissions and view menus created); the number of roles touched.
    async fn import_roles(
        &self,
        roles: &[RoleExport],
        audit: &AuditEvent,
    ) -> Result<u64, StoreError>;

    /// The newest audit records, newest first, optionally only of one event name.
    async fn recent_audit(
        &self,
        limit: u64,
        kind: Option<&str>,
    ) -> Result<Vec<StoredAuditEvent>, StoreError>;
}

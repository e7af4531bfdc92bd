//! Audit events: what happened, who did it, to whom, from where, and whether it worked.
//!
//! Event names are the deployment guide's `AUDIT_EVENTS` (`user.login`, `admin.user_create`, ...)
//! plus fab's own in the same `area.action` form. Changes are audited in the same transaction as
//! the change itself: store methods that change security state take the [`AuditEvent`] to write.

use crate::error::StoreError;
use crate::user::UserId;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

/// The kinds of audited event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum AuditKind {
    /// A successful login.
    UserLogin,
    /// A logout.
    UserLogout,
    /// A failed login (wrong password, unknown or inactive user).
    UserFailedLogin,
    /// A user changed their own password.
    UserPasswordChange,
    /// An administrator created a user.
    AdminUserCreate,
    /// An administrator changed a user's profile or roles.
    AdminUserUpdate,
    /// An administrator deleted a user.
    AdminUserDelete,
    /// An administrator disabled a user.
    AdminUserDisable,
    /// An administrator enabled a user.
    AdminUserEnable,
    /// An administrator reset a user's password.
    AdminPasswordReset,
    /// Roles or their permissions changed.
    AdminPermissionChange,
    /// Sessions were revoked by an operator.
    AdminSessionRevoke,
    /// A browser reported a Content-Security-Policy violation.
    SecurityCspViolation,
    /// An account was locked after repeated failed logins.
    SecurityLockout,
    /// An operator unlocked an account.
    AdminUserUnlock,
    /// Emergency rate limits were switched on or off.
    SecurityEmergencyMode,
    /// The shared rate limiter stopped answering, or answered again.
    SecurityRateLimitFallback,
    /// An operator gave a rate-limit key its whole budget back.
    AdminRateLimitReset,
}

impl AuditKind {
    /// The event's stable name.
    pub fn name(self) -> &'static str {
        match self {
            AuditKind::UserLogin => "user.login",
            AuditKind::UserLogout => "user.logout",
            AuditKind::UserFailedLogin => "user.failed_login",
            AuditKind::UserPasswordChange => "user.password_change",
            AuditKind::AdminUserCreate => "admin.user_create",
            AuditKind::AdminUserUpdate => "admin.user_update",
            AuditKind::AdminUserDelete => "admin.user_delete",
            AuditKind::AdminUserDisable => "admin.user_disable",
            AuditKind::AdminUserEnable => "admin.user_enable",
            AuditKind::AdminPasswordReset => "admin.password_reset",
            AuditKind::AdminPermissionChange => "admin.permission_change",
            AuditKind::AdminSessionRevoke => "admin.session_revoke",
            AuditKind::SecurityCspViolation => "security.csp_violation",
            AuditKind::SecurityLockout => "security.lockout",
            AuditKind::AdminUserUnlock => "admin.user_unlock",
            AuditKind::SecurityEmergencyMode => "security.emergency_mode",
            AuditKind::SecurityRateLimitFallback => "security.rate_limit_fallback",
            AuditKind::AdminRateLimitReset => "admin.rate_limit_reset",
        }
    }

    /// Every kind, for documentation and filters.
    pub const ALL: [AuditKind; 18] = [
        AuditKind::UserLogin,
        AuditKind::UserLogout,
        AuditKind::UserFailedLogin,
        AuditKind::UserPasswordChange,
        AuditKind::AdminUserCreate,
        AuditKind::AdminUserUpdate,
        AuditKind::AdminUserDelete,
        AuditKind::AdminUserDisable,
        AuditKind::AdminUserEnable,
        AuditKind::AdminPasswordReset,
        AuditKind::AdminPermissionChange,
        AuditKind::AdminSessionRevoke,
        AuditKind::SecurityCspViolation,
        AuditKind::SecurityLockout,
        AuditKind::AdminUserUnlock,
        AuditKind::SecurityEmergencyMode,
        AuditKind::SecurityRateLimitFallback,
        AuditKind::AdminRateLimitReset,
    ];
}

/// Whether the audited action succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// It worked.
    Success,
    /// It was refused or failed.
    Failure,
}

impl Outcome {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
        }
    }
}

/// Who acted: a user, or an operator at the CLI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Actor {
    /// The acting user, when there is one.
    pub user_id: Option<UserId>,
    /// A name: the username, or `cli:<os user>` for the command line.
    pub name: String,
}

/// Where a request came from.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RequestOrigin {
    /// Client IP (as resolved by the edge, never a client-supplied header from an untrusted peer).
    pub ip: Option<String>,
    /// User agent, truncated.
    pub user_agent: Option<String>,
}

/// One audit record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEvent {
    /// When.
    pub at: DateTime<Utc>,
    /// What.
    pub kind: AuditKind,
    /// Whether it worked.
    pub outcome: Outcome,
    /// Who acted, when known.
    pub actor: Option<Actor>,
    /// What it was done to (e.g. `user:42 alice`, `role:3 Viewer`).
    pub target: Option<String>,
    /// From where.
    pub origin: RequestOrigin,
    /// Extra structured detail (never a secret).
    pub detail: serde_json::Value,
}

impl AuditEvent {
    /// An event of `kind` with `outcome` at `at`, with nothing else filled in.
    pub fn new(kind: AuditKind, outcome: Outcome, at: DateTime<Utc>) -> Self {
        Self {
            at,
            kind,
            outcome,
            actor: None,
            target: None,
            origin: RequestOrigin::default(),
            detail: serde_json::Value::Null,
        }
    }

    /// Sets the actor.
    pub fn by(mut self, actor: Option<Actor>) -> Self {
        self.actor = actor;
        self
    }

    /// Sets the target.
    pub fn on(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }

    /// Sets the request origin.
    pub fn from_origin(mut self, origin: RequestOrigin) -> Self {
        self.origin = origin;
        self
    }

    /// Sets the detail.
    pub fn with_detail(mut self, detail: serde_json::Value) -> Self {
        self.detail = detail;
        self
    }
}

/// A stored audit record, with its sequence number.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredAuditEvent {
    /// Monotonic id.
    pub id: i64,
    /// The event.
    #[serde(flatten)]
    pub event: AuditEvent,
}

/// Where audit events go when they accompany no stored change (e.g. a failed login of an unknown
/// user).
#[async_trait]
pub trait AuditSink: Send + Sync + 'static {
    /// Records one event.
    async fn record(&self, event: &AuditEvent) -> Result<(), StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guide_event_names_are_kept() {
        let names: Vec<_> = AuditKind::ALL.iter().map(|k| k.name()).collect();
        for guide in [
            "user.login",
            "user.logout",
            "user.failed_login",
            "admin.user_create",
            "admin.user_delete",
            "admin.permission_change",
        ] {
            assert!(names.contains(&guide), "{guide}");
        }
    }
}

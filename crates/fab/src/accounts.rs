//! User accounts as an operator manages them from the command line: creating users, resetting
//! passwords, disabling and enabling, ending sessions.
//!
//! Each change goes through the security store with the audit event that records it (one
//! transaction), and each one that takes access away also ends the user's sessions, so a
//! disabled user or a replaced password stops working at once, not at the next idle timeout.

use crate::app::AppError;
use fab_core::Secret;
use fab_core::audit::{Actor, AuditEvent, AuditKind, Outcome};
use fab_core::rbac::RoleId;
use fab_core::user::{NewUser, User, UserId, UserProfile};
use fab_web::AppParts;
use std::sync::Arc;

/// The actor name of an operator at the command line: `cli:<login name>`, or `cli:operator`
/// when the login name is unknown.
pub fn cli_actor(login_name: Option<&str>) -> Actor {
    let name = login_name
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .unwrap_or("operator");
    Actor {
        user_id: None,
        name: format!("cli:{name}"),
    }
}

/// An audit event of `kind` by `actor`, now.
pub fn operator_event(parts: &AppParts, kind: AuditKind, actor: &Actor) -> AuditEvent {
    AuditEvent::new(kind, Outcome::Success, parts.clock.now()).by(Some(actor.clone()))
}

/// A user to create, as given on the command line.
#[derive(Debug, Clone)]
pub struct NewAccount {
    /// Login name.
    pub username: String,
    /// Given name.
    pub first_name: String,
    /// Family name.
    pub last_name: String,
    /// Email address.
    pub email: String,
    /// The password in clear; it must pass the password policy.
    pub password: Secret,
    /// Names of the roles to hold.
    pub roles: Vec<String>,
}

/// Hashes `password` on a blocking thread (argon2 costs tens of milliseconds by design).
pub async fn hash_password(parts: &AppParts, password: Secret) -> Result<Secret, AppError> {
    let hasher = Arc::clone(&parts.hasher);
    let rng = Arc::clone(&parts.rng);
    let hash = tokio::task::spawn_blocking(move || hasher.hash(&password, &*rng))
        .await
        .map_err(|e| AppError::Task(e.to_string()))??;
    Ok(Secret::new(hash))
}

/// Checks `password` against the configured policy for this user.
pub fn check_password(
    parts: &AppParts,
    password: &Secret,
    username: &str,
    email: &str,
) -> Result<(), AppError> {
    parts
        .config
        .password_policy
        .check(password, &[username, email])
        .map_err(|e| AppError::Invalid(vec![e]))
}

/// Creates a user holding the named roles.
pub async fn create_user(
    parts: &AppParts,
    account: NewAccount,
    actor: &Actor,
) -> Result<User, AppError> {
    let mut roles = Vec::with_capacity(account.roles.len());
    for name in &account.roles {
        roles.push(role_id(parts, name).await?);
    }
    let profile = UserProfile {
        first_name: account.first_name,
        last_name: account.last_name,
        username: account.username,
        email: account.email,
        active: true,
        roles,
    }
    .normalised()
    .map_err(AppError::Invalid)?;
    check_password(parts, &account.password, &profile.username, &profile.email)?;
    let password_hash = hash_password(parts, account.password).await?;
    let audit = operator_event(parts, AuditKind::AdminUserCreate, actor)
        .on(format!("user {}", profile.username))
        .with_detail(serde_json::json!({ "roles": account.roles }));
    let user = NewUser {
        profile,
        password_hash,
        created_by: None,
    };
    Ok(parts.store.create_user(&user, &audit).await?)
}

async fn role_id(parts: &AppParts, name: &str) -> Result<RoleId, AppError> {
    if let Some(role) = parts.store.role_by_name(name).await? {
        return Ok(role.id);
    }
    let known = parts
        .store
        .list_roles()
        .await?
        .into_iter()
        .map(|summary| summary.role.name)
        .collect();
    Err(AppError::NoSuchRole {
        name: name.to_owned(),
        known,
    })
}

/// The user whose username is `username` (case-insensitively); an email does not match.
pub async fn user_by_username(parts: &AppParts, username: &str) -> Result<User, AppError> {
    let wanted = username.trim();
    match parts.store.user_by_login(wanted).await? {
        Some(user) if user.username.to_lowercase() == wanted.to_lowercase() => Ok(user),
        _ => Err(AppError::NoSuchUser(wanted.to_owned())),
    }
}

/// The user with this id.
pub async fn user_by_id(parts: &AppParts, id: i64) -> Result<User, AppError> {
    parts
        .store
        .user_by_id(UserId(id))
        .await?
        .ok_or(AppError::NoSuchUserId(id))
}

/// What a password reset did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PasswordReset {
    /// Whose password.
    pub username: String,
    /// Sessions ended.
    pub sessions_ended: u64,
}

/// Replaces a user's password and ends their sessions.
pub async fn reset_password(
    parts: &AppParts,
    user: &User,
    password: Secret,
    actor: &Actor,
) -> Result<PasswordReset, AppError> {
    check_password(parts, &password, &user.username, &user.email)?;
    let hash = hash_password(parts, password).await?;
    let audit = operator_event(parts, AuditKind::AdminPasswordReset, actor).on(user.audit_target());
    parts
        .store
        .set_password_hash(user.id, &hash, None, Some(&audit))
        .await?;
    let sessions_ended = parts.sessions.delete_for_user(user.id).await?;
    Ok(PasswordReset {
        username: user.username.clone(),
        sessions_ended,
    })
}

/// What enabling or disabling did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ActiveChange {
    /// Whose account.
    pub username: String,
    /// Whether it is active now.
    pub active: bool,
    /// Whether it was active before.
    pub was_active: bool,
    /// Sessions ended (disabling ends them all).
    pub sessions_ended: u64,
}

/// Enables or disables a user; disabling also ends every session of theirs.
pub async fn set_active(
    parts: &AppParts,
    user: &User,
    active: bool,
    actor: &Actor,
) -> Result<ActiveChange, AppError> {
    let kind = if active {
        AuditKind::AdminUserEnable
    } else {
        AuditKind::AdminUserDisable
    };
    let audit = operator_event(parts, kind, actor)
        .on(user.audit_target())
        .with_detail(serde_json::json!({ "was_active": user.active }));
    // Counted first: a store may end the sessions itself in the same transaction (the SQL store
    // does), and the operator is told how many ended either way.
    let open_before = if active {
        0
    } else {
        count_u64(parts.sessions.list_for_user(user.id).await?.len())
    };
    parts
        .store
        .set_user_active(user.id, active, None, &audit)
        .await?;
    let sessions_ended = if active {
        0
    } else {
        let deleted = parts.sessions.delete_for_user(user.id).await?;
        deleted.max(open_before)
    };
    Ok(ActiveChange {
        username: user.username.clone(),
        active,
        was_active: user.active,
        sessions_ended,
    })
}

fn count_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// Whose sessions to end.
#[derive(Debug, Clone)]
pub enum SessionScope {
    /// One user's.
    User(Box<User>),
    /// Everyone's.
    All,
}

/// Ends sessions and records it; the number ended.
pub async fn end_sessions(
    parts: &AppParts,
    scope: &SessionScope,
    actor: &Actor,
) -> Result<u64, AppError> {
    let (ended, on) = match scope {
        SessionScope::User(user) => (
            parts.sessions.delete_for_user(user.id).await?,
            user.audit_target(),
        ),
        SessionScope::All => (
            parts.sessions.delete_all().await?,
            "all sessions".to_owned(),
        ),
    };
    let audit = operator_event(parts, AuditKind::AdminSessionRevoke, actor)
        .on(on)
        .with_detail(serde_json::json!({ "sessions_ended": ended }));
    parts.store.record(&audit).await?;
    Ok(ended)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_actor_names_the_login_or_operator() {
        assert_eq!(cli_actor(Some("alice")).name, "cli:alice");
        assert_eq!(cli_actor(Some("  ")).name, "cli:operator");
        assert_eq!(cli_actor(None).name, "cli:operator");
        assert_eq!(cli_actor(None).user_id, None);
    }
}

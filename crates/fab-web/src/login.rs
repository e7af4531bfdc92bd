//! Checking a username and password, shared by the login page and the API login.
//!
//! Login is by username or email, case-insensitively. An unknown user costs the same hashing work
//! as a known one and gets the same answer, and so does an inactive user, so neither timing nor
//! wording tells an attacker which accounts exist. Flask-AppBuilder's counters are kept
//! (login_count, last_login, fail_login_count) and every attempt is audited. A hash of an older
//! scheme (werkzeug's) or weaker parameters is replaced after a successful check.

use crate::client::ClientInfo;
use crate::error::Failure;
use crate::state::AppState;
use fab_core::audit::{Actor, AuditEvent, AuditKind, Outcome};
use fab_core::lockout::{Assessment, LockoutPolicy};
use fab_core::ratelimit::RateKey;
use fab_core::secret::Secret;
use fab_core::user::User;

/// The one message every failed login gets, whatever the cause.
pub(crate) const INVALID_LOGIN: &str = "Invalid login. Please try again.";

/// Longest login name considered; longer input fails without a lookup.
const LOGIN_MAX: usize = 320;

/// Checks credentials. Ok(Some(user)) on success, Ok(None) on any refusal (already audited);
/// `Err(Failure::TooManyRequests)` when the login rate limits refuse the attempt.
pub(crate) async fn authenticate(
    state: &AppState,
    login: &str,
    password: Secret,
    client: &ClientInfo,
    method: &'static str,
) -> Result<Option<User>, Failure> {
    let parts = &state.parts;
    let login = login.trim();
    let within_limits = !login.is_empty()
        && login.chars().count() <= LOGIN_MAX
        && !password.is_empty()
        && password.char_count() <= parts.config.password_policy.max_length;
    check_login_limits(state, login, client).await?;
    let user = if within_limits {
        parts.store.user_by_login(login).await?
    } else {
        None
    };
    let lockout = lockout_policy(state);
    let now = parts.clock.now();
    let ip = client.ip.as_deref();
    let lockout_state = match &user {
        Some(user) => Some(parts.lockouts.lockout_state(user.id).await?),
        None => None,
    };
    let assessment = lockout_state
        .as_ref()
        .map_or(Assessment::Allowed, |current| {
            lockout.assess(current, ip, now)
        });
    // A locked or delayed account is answered like a wrong password, after the same hashing
    // work, so neither the answer nor its timing tells which accounts exist or are locked.
    let checkable = assessment == Assessment::Allowed;
    let hasher = parts.hasher.clone();
    let stored = user
        .as_ref()
        .filter(|_| checkable)
        .map(|u| u.password_hash.clone());
    let password_for_check = password.clone();
    let verification = tokio::task::spawn_blocking(move || match stored {
        Some(stored) => Some(hasher.verify(&password_for_check, stored.expose())),
        None => {
            hasher.verify_dummy(&password_for_check);
            None
        }
    })
    .await
    .map_err(|e| Failure::Internal(format!("password check task failed: {e}")))?;

    let failure = |reason: &str| {
        AuditEvent::new(AuditKind::UserFailedLogin, Outcome::Failure, now)
            .from_origin(client.origin())
            .with_detail(serde_json::json!({ "reason": reason, "method": method }))
    };
    let Some(user) = user else {
        let event = failure("unknown_user").on(format!("login:{}", truncate(login, 64)));
        parts.store.record(&event).await?;
        return Ok(None);
    };
    let target = user.audit_target();
    let actor = Some(Actor {
        user_id: Some(user.id),
        name: user.username.clone(),
    });
    let Some(verification) = verification else {
        let reason = match assessment {
            Assessment::Locked(_) => "locked",
            _ => "delayed",
        };
        parts
            .store
            .record(&failure(reason).on(target).by(actor))
            .await?;
        return Ok(None);
    };
    if !verification.is_match() {
        let event = failure("wrong_password")
            .on(target.clone())
            .by(actor.clone());
        parts.store.record_login_failure(user.id, &event).await?;
        record_lockout_failure(state, &lockout, &user, client, now).await?;
        return Ok(None);
    }
    if !user.active {
        let event = failure("inactive_user").on(target).by(actor);
        parts.store.record(&event).await?;
        return Ok(None);
    }
    if verification.needs_rehash() {
        let hasher = parts.hasher.clone();
        let rng = parts.rng.clone();
        let rehashed = tokio::task::spawn_blocking(move || hasher.hash(&password, rng.as_ref()))
            .await
            .map_err(|e| Failure::Internal(format!("password hash task failed: {e}")))?;
        match rehashed {
            Ok(hash) => {
                parts
                    .store
                    .set_password_hash(user.id, &Secret::new(hash), None, None)
                    .await?;
            }
            Err(e) => tracing::warn!(user = %user.id, error = %e, "rehash after login failed"),
        }
    }
    let event = AuditEvent::new(AuditKind::UserLogin, Outcome::Success, now)
        .by(actor)
        .on(target)
        .from_origin(client.origin())
        .with_detail(serde_json::json!({ "method": method }));
    parts
        .store
        .record_login_success(user.id, now, &event)
        .await?;
    // Most logins change nothing here (no failures, same address, remembered recently): skip
    // the write then, so a login costs one lockout read, not a read and a write.
    let unchanged = lockout_state
        .as_ref()
        .is_some_and(|current| !lockout.success_changes(current, ip, now));
    if !unchanged {
        parts
            .lockouts
            .update_lockout(user.id, &|state| lockout.record_success(state, ip, now))
            .await?;
    }
    Ok(Some(user))
}

/// Counts a wrong password against the account's lockout state; audits `security.lockout` when
/// this failure locked it.
async fn record_lockout_failure(
    state: &AppState,
    lockout: &LockoutPolicy,
    user: &User,
    client: &ClientInfo,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), Failure> {
    let ip = client.ip.as_deref();
    let after = state
        .parts
        .lockouts
        .update_lockout(user.id, &|current| {
            lockout.record_failure(current, ip, now);
        })
        .await?;
    // The store may run the change more than once under contention, so whether this failure
    // locked the account is read from the stored result: a lock set by this very failure ends
    // exactly one lock duration from now.
    let locked_now = [after.known.locked_until, after.other.locked_until]
        .contains(&Some(now + lockout.duration));
    if locked_now {
        tracing::warn!(user = %user.username, ip = ?client.ip, "account locked after repeated failed logins");
        let event = AuditEvent::new(AuditKind::SecurityLockout, Outcome::Failure, now)
            .by(Some(Actor {
                user_id: Some(user.id),
                name: user.username.clone(),
            }))
            .on(user.audit_target())
            .from_origin(client.origin())
            .with_detail(serde_json::json!({
                "failures": after.other.failures.max(after.known.failures),
                "locked_seconds": lockout.duration.num_seconds(),
            }));
        state.parts.store.record(&event).await?;
    }
    Ok(())
}

fn lockout_policy(state: &AppState) -> LockoutPolicy {
    let limits = &state.parts.config.rate_limit;
    LockoutPolicy {
        threshold: limits.lockout_threshold,
        duration: limits.lockout_duration,
        delay_after: limits.lockout_delay_after,
    }
}

/// `RATE_LIMIT_LOGIN_ATTEMPTS` per client IP and per username: each credential check takes one
/// unit from both budgets, and either one running dry refuses the check before any password is
/// hashed (so a refused flood costs no CPU either).
pub(crate) async fn check_login_limits(
    state: &AppState,
    login: &str,
    client: &ClientInfo,
) -> Result<(), Failure> {
    let limits = &state.parts.config.rate_limit;
    if !limits.enabled {
        return Ok(());
    }
    let rate = if state.emergency() {
        limits.emergency_login
    } else {
        limits.login
    };
    let mut keys = Vec::with_capacity(2);
    if let Some(ip) = client.addr {
        keys.push(RateKey::login_ip(ip));
    }
    if !login.is_empty() {
        keys.push(RateKey::login_user(&truncate(login, 64)));
    }
    for key in keys {
        let verdict = state.decide("login", &key, rate).await?;
        if !verdict.decision.allowed {
            tracing::warn!(key = %key.as_str(), ip = ?client.ip, "login attempts rate-limited");
            return Err(crate::ratelimit::refusal(verdict));
        }
    }
    Ok(())
}

fn truncate(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

/// The actor of an audited change made by the requester.
pub(crate) fn actor_of(principal: &crate::principal::Principal) -> Option<Actor> {
    principal.user().map(|u| Actor {
        user_id: Some(u.user.id),
        name: u.user.username.clone(),
    })
}

/// Checks a new password against the policy and hashes it off the async runtime.
pub(crate) async fn hash_new_password(
    state: &AppState,
    password: &Secret,
    context: &[&str],
) -> Result<Secret, Failure> {
    state
        .parts
        .config
        .password_policy
        .check(password, context)?;
    let hasher = state.parts.hasher.clone();
    let rng = state.parts.rng.clone();
    let password = password.clone();
    tokio::task::spawn_blocking(move || hasher.hash(&password, rng.as_ref()))
        .await
        .map_err(|e| Failure::Internal(format!("password hash task failed: {e}")))?
        .map(Secret::new)
        .map_err(|e| Failure::Internal(e.to_string()))
}

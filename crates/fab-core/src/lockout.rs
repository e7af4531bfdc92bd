//! Account lockout: progressive delays, then a lock, after repeated failed logins for one account
//! — beyond the per-username and per-IP rate limits, which an attacker with many addresses can
//! spread out.
//!
//! Rule, per account, with failures counted since the last success:
//! - after `delay_after` failures, each further attempt must wait 1 s after the previous failure,
//!   doubling per failure up to 60 s (refused attempts in the wait do not count as failures);
//! - at `threshold` failures the account is locked for `duration` (`security.lockout` audit
//!   event); `fab user-unlock` ends a lock early;
//! - a success resets the counters and remembers the client address.
//!
//! An attacker who knows a username could lock its owner out on purpose. To prevent that,
//! failures from the address of the account's last successful login (within 30 days) are
//! counted apart from failures from everywhere else: the attacker exhausts and locks the
//! "elsewhere" counter, while the owner, logging in from their usual address, is judged by their
//! own counter only. An attacker who also sits at the owner's address is not stopped by this,
//! but is then within reach of the per-IP rate limit.

use crate::error::StoreError;
use crate::user::UserId;
use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};

/// How long the address of a successful login counts as the owner's.
pub const KNOWN_ADDRESS_TTL_DAYS: i64 = 30;
/// Longest progressive delay.
pub const MAX_DELAY_SECONDS: i64 = 60;

/// The lockout rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Failures that lock (0: never lock).
    pub threshold: u32,
    /// Lock length.
    pub duration: Duration,
    /// Failures before delays begin.
    pub delay_after: u32,
}

/// Failure counting for one origin class (the owner's known address, or everywhere else).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counter {
    /// Failures since the last success.
    pub failures: u32,
    /// When the last failure happened.
    pub last_failure_at: Option<DateTime<Utc>>,
    /// Locked until this instant.
    pub locked_until: Option<DateTime<Utc>>,
}

/// The stored lockout state of one account.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LockoutState {
    /// Failures from the address of the last successful login.
    pub known: Counter,
    /// Failures from anywhere else.
    pub other: Counter,
    /// Address of the last successful login.
    pub known_ip: Option<String>,
    /// When that login happened.
    pub known_ip_at: Option<DateTime<Utc>>,
}

/// What an attempt may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assessment {
    /// The password may be checked.
    Allowed,
    /// Too soon after the last failure: retry at the instant given.
    Wait(DateTime<Utc>),
    /// The account is locked (for attempts from this origin) until the instant given.
    Locked(DateTime<Utc>),
}

impl LockoutState {
    fn is_known(&self, ip: Option<&str>, now: DateTime<Utc>) -> bool {
        match (ip, &self.known_ip, self.known_ip_at) {
            (Some(ip), Some(known), Some(at)) => {
                ip == known && now - at < Duration::days(KNOWN_ADDRESS_TTL_DAYS)
            }
            _ => false,
        }
    }

    fn counter(&self, ip: Option<&str>, now: DateTime<Utc>) -> &Counter {
        if self.is_known(ip, now) {
            &self.known
        } else {
            &self.other
        }
    }

    fn counter_mut(&mut self, ip: Option<&str>, now: DateTime<Utc>) -> &mut Counter {
        if self.is_known(ip, now) {
            &mut self.known
        } else {
            &mut self.other
        }
    }

    /// Whether either counter is locked at `now`.
    pub fn locked_anywhere(&self, now: DateTime<Utc>) -> bool {
        [self.known.locked_until, self.other.locked_until]
            .into_iter()
            .flatten()
            .any(|until| until > now)
    }
}

impl LockoutPolicy {
    /// The wait after `failures` failures (none before `delay_after`).
    pub fn delay(&self, failures: u32) -> Option<Duration> {
        if failures < self.delay_after {
            return None;
        }
        let exponent = (failures - self.delay_after).min(6);
        Some(Duration::seconds(
            (1_i64 << exponent).min(MAX_DELAY_SECONDS),
        ))
    }

    /// What an attempt from `ip` may do at `now`.
    pub fn assess(&self, state: &LockoutState, ip: Option<&str>, now: DateTime<Utc>) -> Assessment {
        let counter = state.counter(ip, now);
        if let Some(until) = counter.locked_until
            && until > now
        {
            return Assessment::Locked(until);
        }
        if counter.locked_until.is_some() {
            // A lock that ran out leaves a clean slate.
            return Assessment::Allowed;
        }
        match (self.delay(counter.failures), counter.last_failure_at) {
            (Some(delay), Some(last)) if now < last + delay => Assessment::Wait(last + delay),
            _ => Assessment::Allowed,
        }
    }

    /// The state after a failed password from `ip` at `now`; `true` when this failure locked it.
    pub fn record_failure(
        &self,
        state: &mut LockoutState,
        ip: Option<&str>,
        now: DateTime<Utc>,
    ) -> bool {
        let counter = state.counter_mut(ip, now);
        if counter.locked_until.is_some_and(|until| until <= now) {
            *counter = Counter::default();
        }
        counter.failures = counter.failures.saturating_add(1);
        counter.last_failure_at = Some(now);
        if self.threshold > 0
            && counter.failures >= self.threshold
            && counter.locked_until.is_none()
        {
            counter.locked_until = Some(now + self.duration);
            return true;
        }
        false
    }

    /// Whether a successful login from `ip` at `now` would change `state` in a way worth
    /// storing: failures to clear, a new address, or a known address last confirmed more than a
    /// day ago (so it stays known for 30 days after the owner's last login, give or take a day).
    pub fn success_changes(
        &self,
        state: &LockoutState,
        ip: Option<&str>,
        now: DateTime<Utc>,
    ) -> bool {
        let counters_dirty = state.known != Counter::default() || state.other != Counter::default();
        let stale = state
            .known_ip_at
            .is_none_or(|at| now - at >= Duration::days(1));
        counters_dirty || state.known_ip.as_deref() != ip || stale
    }

    /// The state after a successful login from `ip` at `now`.
    pub fn record_success(&self, state: &mut LockoutState, ip: Option<&str>, now: DateTime<Utc>) {
        state.known = Counter::default();
        if !state.is_known(ip, now) {
            state.other = Counter::default();
        }
        state.known_ip = ip.map(str::to_owned);
        state.known_ip_at = Some(now);
    }
}

/// Where lockout state lives (SQL, for every instance to share).
#[async_trait]
pub trait LockoutStore: Send + Sync + 'static {
    /// The state of an account (default when none is stored).
    async fn lockout_state(&self, user: UserId) -> Result<LockoutState, StoreError>;
    /// Applies `change` to the stored state atomically (no lost update under concurrent logins)
    /// and returns the new state. Under contention a store may run `change` more than once
    /// (only the last run is stored), so callers judge the outcome from the returned state.
    // The `for<'a>` is spelled out because `#[async_trait]` gives every elided lifetime in the
    // signature a name of its own, the one inside `Fn(&mut ..)` included: the closure would then
    // only accept a borrow chosen by the caller, and no implementation could pass it its state.
    async fn update_lockout(
        &self,
        user: UserId,
        change: &(dyn for<'a> Fn(&'a mut LockoutState) + Send + Sync),
    ) -> Result<LockoutState, StoreError>;
    /// Clears the counters and locks of an account (`fab user-unlock`).
    async fn clear_lockout(&self, user: UserId) -> Result<(), StoreError>;
}

/// Named operational flags shared through the database (e.g. emergency mode when the rate
/// limiter is in memory).
#[async_trait]
pub trait FlagStore: Send + Sync + 'static {
    /// The flag's value, if set.
    async fn flag(&self, name: &str) -> Result<Option<String>, StoreError>;
    /// Sets (Some) or clears (None) a flag, with its audit event in the same transaction.
    async fn set_flag(
        &self,
        name: &str,
        value: Option<&str>,
        audit: &crate::audit::AuditEvent,
    ) -> Result<(), StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> LockoutPolicy {
        LockoutPolicy {
            threshold: 5,
            duration: Duration::minutes(15),
            delay_after: 2,
        }
    }

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000, 0).unwrap_or_default()
    }

    #[test]
    fn delays_grow_then_the_account_locks() {
        let p = policy();
        let mut state = LockoutState::default();
        let ip = Some("203.0.113.9");
        let mut now = t0();
        assert_eq!(p.assess(&state, ip, now), Assessment::Allowed);
        p.record_failure(&mut state, ip, now);
        p.record_failure(&mut state, ip, now);
        assert_eq!(
            p.assess(&state, ip, now),
            Assessment::Wait(now + Duration::seconds(1))
        );
        now += Duration::seconds(1);
        assert_eq!(p.assess(&state, ip, now), Assessment::Allowed);
        p.record_failure(&mut state, ip, now);
        assert_eq!(
            p.assess(&state, ip, now),
            Assessment::Wait(now + Duration::seconds(2))
        );
        now += Duration::seconds(2);
        p.record_failure(&mut state, ip, now);
        now += Duration::seconds(4);
        let locked = p.record_failure(&mut state, ip, now);
        assert!(locked, "the fifth failure locks");
        assert_eq!(
            p.assess(&state, ip, now),
            Assessment::Locked(now + Duration::minutes(15))
        );
        now += Duration::minutes(15);
        assert_eq!(
            p.assess(&state, ip, now),
            Assessment::Allowed,
            "the lock runs out"
        );
        assert!(
            !p.record_failure(&mut state, ip, now),
            "a clean slate after the lock"
        );
        assert_eq!(state.other.failures, 1);
    }

    #[test]
    fn the_owners_known_address_is_counted_apart() {
        let p = policy();
        let mut state = LockoutState::default();
        let owner = Some("198.51.100.7");
        let attacker = Some("203.0.113.9");
        p.record_success(&mut state, owner, t0());
        let mut now = t0() + Duration::hours(1);
        for _ in 0..5 {
            p.record_failure(&mut state, attacker, now);
            now += Duration::minutes(1);
        }
        assert!(matches!(
            p.assess(&state, attacker, now),
            Assessment::Locked(_)
        ));
        assert_eq!(
            p.assess(&state, owner, now),
            Assessment::Allowed,
            "the owner is not locked out"
        );
        p.record_success(&mut state, owner, now);
        assert!(
            matches!(p.assess(&state, attacker, now), Assessment::Locked(_)),
            "the attacker stays locked"
        );
        // After 30 days the address is no longer known.
        let later = now + Duration::days(KNOWN_ADDRESS_TTL_DAYS);
        assert!(!state.is_known(owner, later));
    }

    #[test]
    fn a_repeat_login_from_the_known_address_changes_nothing_worth_storing() {
        let p = policy();
        let mut state = LockoutState::default();
        let ip = Some("198.51.100.7");
        assert!(
            p.success_changes(&state, ip, t0()),
            "first login remembers the address"
        );
        p.record_success(&mut state, ip, t0());
        assert!(!p.success_changes(&state, ip, t0() + Duration::hours(3)));
        assert!(
            p.success_changes(&state, Some("203.0.113.9"), t0()),
            "another address"
        );
        assert!(
            p.success_changes(&state, ip, t0() + Duration::days(1)),
            "refreshed daily"
        );
        p.record_failure(&mut state, ip, t0());
        assert!(p.success_changes(&state, ip, t0()), "failures to clear");
    }

    #[test]
    fn threshold_zero_never_locks() {
        let p = LockoutPolicy {
            threshold: 0,
            ..policy()
        };
        let mut state = LockoutState::default();
        for _ in 0..100 {
            assert!(!p.record_failure(&mut state, None, t0()));
        }
        assert!(!state.locked_anywhere(t0()));
        assert_eq!(p.delay(100), Some(Duration::seconds(MAX_DELAY_SECONDS)));
    }
}

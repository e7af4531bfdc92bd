//! Rate limiting, pure: rates and their syntax, the GCRA decision, human-readable keys, and the
//! [`RateLimiter`] trait every backend (the in-memory [`memory::MemoryRateLimiter`], fab-redis'
//! limiter) implements.
//!
//! # Why GCRA
//!
//! The generic cell rate algorithm is a token bucket written as one number: per key it keeps the
//! *theoretical arrival time* (TAT), the instant at which the key's budget would be whole again.
//! That gives three properties the alternatives lack together:
//!
//! - **Exact.** Integer microseconds, no sampling or approximation: `N` requests are allowed from
//!   an idle key and request `N + 1` is refused, on every backend, at the boundary included.
//! - **O(1) state per key.** One integer (plus the rate it was written under, for `fab rate-limit
//!   status`), read and written once per decision: one atomic Lua script in Redis, one short
//!   critical section in memory. A sliding log keeps one entry per request.
//! - **No boundary bursts.** A fixed window admits `N` requests at the end of one window and `N`
//!   more a moment later at the start of the next: `2N` within milliseconds. GCRA admits at most
//!   `N` at any instant and then one per emission interval, so in any interval of length `t` it
//!   admits at most `N + ⌊t / T⌋`.
//!
//! # The exact rule
//!
//! For a rate of `N` per period `P`, the emission interval is `T = P / N` (rounded *up* to a whole
//! microsecond when `P` does not divide evenly, so the sustained rate never exceeds `N` per `P`)
//! and the tolerance is `τ = P − T` (exactly `(N − 1)·T`, which is `P − T` whenever `T` divides
//! `P`): a burst of `N`. With the stored TAT (`now` when the key has none):
//!
//! ```text
//! tat     = max(stored_tat, now)
//! allowed = tat − now ≤ τ             (equivalently: tat + T − now ≤ N·T)
//! allowed → store tat + T, with a TTL of tat + T − now (after that the key carries no state)
//! refused → store nothing; Retry-After = tat − τ − now
//! ```
//!
//! [`decide`] is that rule; the Redis script computes the same comparison on Redis' clock and
//! fab-redis checks its answer with [`decide`], so both backends agree to the microsecond.
//!
//! The one thing to know: time comes from the caller ([`decide`] takes `now`; the memory limiter
//! asks its [`Clock`](crate::clock::Clock); Redis uses its own `TIME` so instances with skewed
//! clocks agree), and a refused request consumes nothing, so hammering a limited key does not
//! push its reset further away.

pub mod memory;

use async_trait::async_trait;
use chrono::Duration;
use sha2::{Digest, Sha256};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use thiserror::Error;

/// Every rate-limit key starts with this, as the deployment guide's `redis-cli KEYS
/// "rate_limit:*"` expects.
pub const KEY_PREFIX: &str = "rate_limit:";

/// The flag that switches every instance to the emergency limits (`redis-cli SET
/// rate_limit_emergency_mode 1`, from the deployment guide's incident response).
pub const EMERGENCY_MODE_KEY: &str = "rate_limit_emergency_mode";

const MICROS_PER_SECOND: i64 = 1_000_000;
/// The longest period a rate may have: a year (366 days) in microseconds stays far inside the
/// 2^53 integers a Lua number holds exactly.
const LONGEST_PERIOD_MICROS: i64 = 366 * 86_400 * MICROS_PER_SECOND;

/// A rate: `count` requests per `period`, with a burst of `count`.
///
/// Built by [`Rate::new`] or parsed from the deployment guide's `100/hour` and Flask-Limiter's
/// `10 per 20 second`; once built it is valid (at least one request, a period between one
/// microsecond per request and 366 days).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    count: u32,
    period: Duration,
}

/// Why a rate could not be built or parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{input:?}: {reason} (expected N/second|minute|hour|day, N/s|m|h|d, or \"N per M unit\")")]
pub struct RateError {
    /// The text (or the values) that were refused.
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

impl RateError {
    fn new(input: &str, reason: impl Into<String>) -> Self {
        Self {
            input: input.to_owned(),
            reason: reason.into(),
        }
    }
}

/// The period units, in microseconds, longest first (so [`Rate`]'s `Display` picks the largest
/// unit that divides the period).
const UNITS: [(&str, i64); 6] = [
    ("day", 86_400 * MICROS_PER_SECOND),
    ("hour", 3_600 * MICROS_PER_SECOND),
    ("minute", 60 * MICROS_PER_SECOND),
    ("second", MICROS_PER_SECOND),
    ("millisecond", 1_000),
    ("microsecond", 1),
];

fn unit_micros(name: &str) -> Option<i64> {
    let seconds = match name {
        "s" | "sec" | "secs" | "second" | "seconds" => 1,
        "m" | "min" | "mins" | "minute" | "minutes" => 60,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3_600,
        "d" | "day" | "days" => 86_400,
        // Not in the guide's syntax; accepted so that every rate `Display` prints parses back.
        "ms" | "millisecond" | "milliseconds" => return Some(1_000),
        "us" | "microsecond" | "microseconds" => return Some(1),
        _ => return None,
    };
    Some(seconds * MICROS_PER_SECOND)
}

impl Rate {
    /// `count` requests per `period`.
    pub fn new(count: u32, period: Duration) -> Result<Self, RateError> {
        let input = format!("{count} per {period}");
        if count == 0 {
            return Err(RateError::new(&input, "the count must be at least 1"));
        }
        let Some(micros) = period.num_microseconds() else {
            return Err(RateError::new(&input, "the period is longer than 366 days"));
        };
        if micros <= 0 {
            return Err(RateError::new(&input, "the period must be positive"));
        }
        if micros > LONGEST_PERIOD_MICROS {
            return Err(RateError::new(&input, "the period is longer than 366 days"));
        }
        if micros < i64::from(count) {
            return Err(RateError::new(
                &input,
                "more than one request per microsecond cannot be limited exactly",
            ));
        }
        Ok(Self { count, period })
    }

    /// `count` per second.
    pub fn per_second(count: u32) -> Result<Self, RateError> {
        Self::new(count, Duration::seconds(1))
    }

    /// `count` per minute.
    pub fn per_minute(count: u32) -> Result<Self, RateError> {
        Self::new(count, Duration::minutes(1))
    }

    /// `count` per hour.
    pub fn per_hour(count: u32) -> Result<Self, RateError> {
        Self::new(count, Duration::hours(1))
    }

    /// `count` per day.
    pub fn per_day(count: u32) -> Result<Self, RateError> {
        Self::new(count, Duration::days(1))
    }

    /// How many requests per period (also the burst).
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The period.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// The emergency limit: `count / factor` per the same period, never below 1 per period.
    /// A factor of 0 or 1 leaves the rate as it is.
    pub fn divided(&self, factor: u32) -> Self {
        Self {
            count: (self.count / factor.max(1)).max(1),
            period: self.period,
        }
    }

    fn period_micros(&self) -> i64 {
        // Checked in `new`: positive and at most 366 days.
        self.period
            .num_microseconds()
            .unwrap_or(LONGEST_PERIOD_MICROS)
    }

    /// The emission interval `T` in microseconds: the period over the count, rounded up.
    pub fn emission_interval_micros(&self) -> i64 {
        let count = i64::from(self.count);
        (self.period_micros() + count - 1) / count
    }

    /// The burst window `N·T` in microseconds: how far ahead of now a key's TAT may be after an
    /// allowed request (`τ + T`).
    pub fn window_micros(&self) -> i64 {
        self.emission_interval_micros() * i64::from(self.count)
    }

    /// The tolerance `τ = (N − 1)·T` in microseconds: how far ahead of now a key's TAT may be
    /// for one more request to be allowed.
    pub fn tolerance_micros(&self) -> i64 {
        self.window_micros() - self.emission_interval_micros()
    }
}

impl fmt::Display for Rate {
    /// `5/minute` when the period is one unit, `10 per 20 second` when it is several, in the
    /// largest unit that divides the period; every form parses back to the same rate.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let micros = self.period_micros();
        for (name, unit) in UNITS {
            if micros % unit == 0 {
                let multiple = micros / unit;
                return if multiple == 1 {
                    write!(f, "{}/{name}", self.count)
                } else {
                    write!(f, "{} per {multiple} {name}", self.count)
                };
            }
        }
        // Unreachable: every period is a whole number of microseconds.
        write!(f, "{} per {micros} microsecond", self.count)
    }
}

impl FromStr for Rate {
    type Err = RateError;

    /// Parses `N/unit`, `N/M unit`, `N per unit` and `N per M unit`, where unit is second,
    /// minute, hour or day (singular or plural, or `s`, `m`, `h`, `d`), case-insensitive.
    fn from_str(text: &str) -> Result<Self, RateError> {
        let lowered = text.trim().to_ascii_lowercase();
        if lowered.is_empty() {
            return Err(RateError::new(text, "empty"));
        }
        if lowered.contains([';', ',']) {
            return Err(RateError::new(
                text,
                "one rate per setting; fab does not combine several limits in one value",
            ));
        }
        let spaced = lowered.replace('/', " / ");
        let tokens: Vec<&str> = spaced.split_whitespace().collect();
        let (count, rest) = match tokens.as_slice() {
            [count, "/" | "per", rest @ ..] if !rest.is_empty() => (*count, rest.concat()),
            _ => {
                return Err(RateError::new(
                    text,
                    "no `/` or `per` between count and period",
                ));
            }
        };
        let count: u32 = count
            .parse()
            .map_err(|_| RateError::new(text, format!("{count:?} is not a whole number")))?;
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (multiple, unit) = rest.split_at(digits);
        let multiple: i64 = if multiple.is_empty() {
            1
        } else {
            multiple
                .parse()
                .map_err(|_| RateError::new(text, format!("{multiple:?} is too large")))?
        };
        if multiple == 0 {
            return Err(RateError::new(text, "the period must be positive"));
        }
        if matches!(unit, "month" | "months" | "year" | "years") {
            return Err(RateError::new(
                text,
                "month and year periods are not supported; use days",
            ));
        }
        let unit = unit_micros(unit)
            .ok_or_else(|| RateError::new(text, format!("unknown period unit {unit:?}")))?;
        let period = multiple
            .checked_mul(unit)
            .filter(|micros| *micros <= LONGEST_PERIOD_MICROS)
            .ok_or_else(|| RateError::new(text, "the period is longer than 366 days"))?;
        Self::new(count, Duration::microseconds(period)).map_err(|e| RateError {
            input: text.to_owned(),
            reason: e.reason,
        })
    }
}

/// What one request's check decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may proceed (it consumed one unit of the budget).
    pub allowed: bool,
    /// How many more requests would be allowed right now (0 when refused).
    pub remaining: u32,
    /// When refused, how long until one request is allowed again (`Retry-After`); zero when
    /// allowed.
    pub retry_after: Duration,
    /// How long until the whole budget is back (the key then holds no state).
    pub reset_after: Duration,
    /// The key's TAT after this decision, in microseconds since the Unix epoch on the clock
    /// that decided (unchanged when refused).
    pub new_tat: i64,
}

/// The GCRA decision for a key whose stored TAT is `tat` (None: no state), at `now`
/// (microseconds since the Unix epoch), under `rate`. See the module doc for the rule.
pub fn decide(tat: Option<i64>, now: i64, rate: &Rate) -> Decision {
    let interval = rate.emission_interval_micros();
    let tolerance = rate.tolerance_micros();
    let window = rate.window_micros();
    let tat = tat.map_or(now, |stored| stored.max(now));
    let ahead = tat.saturating_sub(now);
    if ahead <= tolerance {
        let new_tat = tat.saturating_add(interval);
        let new_ahead = ahead + interval;
        Decision {
            allowed: true,
            remaining: remaining_within(window, new_ahead, interval, rate.count()),
            retry_after: Duration::zero(),
            reset_after: Duration::microseconds(new_ahead),
            new_tat,
        }
    } else {
        Decision {
            allowed: false,
            remaining: 0,
            retry_after: Duration::microseconds(ahead - tolerance),
            reset_after: Duration::microseconds(ahead),
            new_tat: tat,
        }
    }
}

/// How many emission intervals fit between `ahead` and the window, capped at `burst`.
fn remaining_within(window: i64, ahead: i64, interval: i64, burst: u32) -> u32 {
    let free = (window - ahead.max(0)).max(0) / interval.max(1);
    u32::try_from(free).unwrap_or(u32::MAX).min(burst)
}

/// Whether a stored emergency flag value means "on": absent, empty, `0`, `false`, `off` and
/// `no` are off; anything else (`1` as the deployment guide sets it, but also a typo) is on,
/// because the mistake to avoid is believing strict limits are in force when they are not.
pub fn emergency_flag_is_on(value: Option<&str>) -> bool {
    match value.map(|v| v.trim().to_ascii_lowercase()) {
        None => false,
        Some(v) => !matches!(v.as_str(), "" | "0" | "false" | "off" | "no"),
    }
}

/// The longest policy name kept as written; longer ones are shortened with a hash suffix.
const POLICY_MAX: usize = 32;
/// The longest subject value kept as written (usernames are at most 64 characters).
const VALUE_MAX: usize = 128;

/// A rate-limit key, rendered the way the deployment guide shows them in Redis:
/// `rate_limit:login:user:alice`, `rate_limit:login:ip:203.0.113.9`, `rate_limit:api:user:42`.
///
/// Everything a client can influence is sanitised: usernames are trimmed and lower-cased (so
/// `ALICE` and ` alice` share a budget, as they share an account), `%`, whitespace, control
/// characters and the glob characters `* ? [ ] \` are percent-encoded (so keys stay one
/// readable token and `KEYS "rate_limit:*"` patterns mean what they say), and over-long parts
/// are cut and suffixed with a hash of the whole (so distinct inputs never share a key and no key
/// grows without bound). IPv6 clients are keyed by their /64, the block one subscriber holds,
/// so rotating addresses inside it buys no new budget.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RateKey(String);

/// Why text is not a rate-limit key.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0:?} is not a rate-limit key (expected rate_limit:<policy>:<kind>:<value>)")]
pub struct RateKeyError(pub String);

impl RateKey {
    /// `rate_limit:<policy>:user:<username>`, the username trimmed and lower-cased.
    pub fn username(policy: &str, username: &str) -> Self {
        Self::custom(policy, "user", &username.trim().to_lowercase())
    }

    /// `rate_limit:<policy>:user:<id>`, for an authenticated principal's id.
    pub fn user_id(policy: &str, id: impl fmt::Display) -> Self {
        Self::custom(policy, "user", &id.to_string())
    }

    /// `rate_limit:<policy>:ip:<address>`; IPv4-mapped IPv6 addresses as IPv4, other IPv6
    /// addresses as their /64 (`2001:db8:1:2::/64`).
    pub fn ip(policy: &str, ip: IpAddr) -> Self {
        let rendered = match ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => v4.to_string(),
                None => {
                    let mut segments = v6.segments();
                    segments[4..].fill(0);
                    format!("{}/64", std::net::Ipv6Addr::from(segments))
                }
            },
        };
        Self::custom(policy, "ip", &rendered)
    }

    /// `rate_limit:<policy>:<kind>:<value>`, each part sanitised (policy and kind lower-cased).
    pub fn custom(policy: &str, kind: &str, value: &str) -> Self {
        let policy = bounded(&escape(&policy.trim().to_lowercase(), true), POLICY_MAX);
        let kind = bounded(&escape(&kind.trim().to_lowercase(), true), POLICY_MAX);
        let value = bounded(&escape(value, false), VALUE_MAX);
        Self(format!("{KEY_PREFIX}{policy}:{kind}:{value}"))
    }

    /// The login policy's per-username key (`rate_limit:login:user:alice`).
    pub fn login_user(username: &str) -> Self {
        Self::username("login", username)
    }

    /// The login policy's per-client-IP key (`rate_limit:login:ip:203.0.113.9`).
    pub fn login_ip(ip: IpAddr) -> Self {
        Self::ip("login", ip)
    }

    /// The API policy's per-principal key (`rate_limit:api:user:42`).
    pub fn api_user(id: impl fmt::Display) -> Self {
        Self::user_id("api", id)
    }

    /// The default policy's per-client-IP key (`rate_limit:default:ip:203.0.113.9`).
    pub fn default_ip(ip: IpAddr) -> Self {
        Self::ip("default", ip)
    }

    /// A key as an operator types it (`fab rate-limit reset --key K`), with or without the
    /// `rate_limit:` prefix. What [`RateKey::as_str`] shows parses back to the same key.
    pub fn parse(text: &str) -> Result<Self, RateKeyError> {
        let trimmed = text.trim();
        let rest = trimmed.strip_prefix(KEY_PREFIX).unwrap_or(trimmed);
        let mut parts = rest.splitn(3, ':');
        let (Some(policy), Some(kind), Some(value)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(RateKeyError(text.to_owned()));
        };
        if policy.is_empty() || kind.is_empty() || value.is_empty() {
            return Err(RateKeyError(text.to_owned()));
        }
        // Already-escaped text stays as it is: escaping leaves `%XX` sequences alone only when
        // they are valid escapes, so parsing what `as_str` printed is the identity.
        let key = Self(format!(
            "{KEY_PREFIX}{}:{}:{}",
            bounded(&reescape(&lower_outside_escapes(policy)), POLICY_MAX),
            bounded(&reescape(&lower_outside_escapes(kind)), POLICY_MAX),
            bounded(&reescape(value), VALUE_MAX)
        ));
        Ok(key)
    }

    /// The full key, `rate_limit:` prefix included.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn needs_escape(c: char) -> bool {
    c == '%' || c.is_whitespace() || c.is_control() || matches!(c, '*' | '?' | '[' | ']' | '\\')
}

fn push_escaped(out: &mut String, c: char) {
    let mut buffer = [0u8; 4];
    for byte in c.encode_utf8(&mut buffer).bytes() {
        out.push_str(&format!("%{byte:02X}"));
    }
}

/// Percent-encodes the characters [`needs_escape`] names, and `:` when `colon` (in the policy
/// and kind, so they cannot run into each other); injective, so distinct inputs stay distinct.
fn escape(value: &str, colon: bool) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if needs_escape(c) || (colon && c == ':') {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    out
}

/// Lower-cases `value` except the hex digits of `%XX` escapes (which [`escape`] writes in
/// upper case).
fn lower_outside_escapes(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut keep = 0;
    for c in value.chars() {
        if keep > 0 {
            keep -= 1;
            out.push(c);
        } else {
            if c == '%' {
                keep = 2;
            }
            out.extend(c.to_lowercase());
        }
    }
    out
}

/// Escapes like [`escape`] but keeps `%XX` sequences that are already escapes.
fn reescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let bytes = value.as_bytes();
    for (index, c) in value.char_indices() {
        let is_escape = c == '%'
            && bytes.get(index + 1).is_some_and(u8::is_ascii_hexdigit)
            && bytes.get(index + 2).is_some_and(u8::is_ascii_hexdigit);
        if needs_escape(c) && !is_escape {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    out
}

/// `value` when it has at most `max` characters, else its first `max - 17` characters, `~` and
/// 16 hex digits of its SHA-256: bounded length, and still distinct per input.
fn bounded(value: &str, max: usize) -> String {
    if value.chars().count() <= max {
        return value.to_owned();
    }
    let digest = hex::encode(Sha256::digest(value.as_bytes()));
    let head: String = value.chars().take(max - 17).collect();
    format!("{head}~{}", &digest[..16])
}

/// The state of one limited key, for `fab rate-limit status` and [`RateLimiter::peek`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyState {
    /// The key.
    pub key: RateKey,
    /// The burst (requests per period) of the rate the key was last allowed under.
    pub burst: u32,
    /// How much of the burst is in use now.
    pub used: u32,
    /// How many requests would be allowed right now.
    pub remaining: u32,
    /// How long until one request is allowed again (zero while `remaining > 0`).
    pub retry_after: Duration,
    /// How long until the whole budget is back and the key holds no state.
    pub reset_after: Duration,
}

impl KeyState {
    /// The state of `key` whose stored TAT is `tat`, written under emission interval
    /// `interval_micros` and burst `burst`, seen at `now` (all in microseconds). None when the
    /// TAT is not in the future: such a key carries no state.
    pub fn at(key: RateKey, tat: i64, interval_micros: i64, burst: u32, now: i64) -> Option<Self> {
        let ahead = tat.saturating_sub(now);
        if ahead <= 0 {
            return None;
        }
        let interval = interval_micros.max(1);
        let window = interval.saturating_mul(i64::from(burst));
        let remaining = remaining_within(window, ahead, interval, burst);
        let retry_after = if remaining > 0 {
            Duration::zero()
        } else {
            Duration::microseconds((ahead + interval - window).max(0))
        };
        Some(Self {
            key,
            burst,
            used: burst - remaining,
            remaining,
            retry_after,
            reset_after: Duration::microseconds(ahead),
        })
    }

    /// Orders the most-limited keys first: the larger share of the burst in use, then the
    /// longer wait until reset, then the key.
    pub fn most_limited_first(a: &Self, b: &Self) -> std::cmp::Ordering {
        let share_a = u64::from(a.used) * u64::from(b.burst.max(1));
        let share_b = u64::from(b.used) * u64::from(a.burst.max(1));
        share_b
            .cmp(&share_a)
            .then_with(|| b.reset_after.cmp(&a.reset_after))
            .then_with(|| a.key.cmp(&b.key))
    }
}

/// An error from a rate-limiter backend.
#[derive(Debug, Clone, Error)]
pub enum LimiterError {
    /// The backend could not be reached or did not answer in time; the caller applies its
    /// fail mode (`RATE_LIMIT_FAIL_MODE`).
    #[error("rate limiter unavailable: {0}")]
    Unavailable(String),
    /// Anything else (an unexpected reply); the message is for the log, never for a client.
    #[error("rate limiter error: {0}")]
    Internal(String),
}

/// A shared or local store of rate-limit state. Every backend passes the same conformance suite
/// (fab-testkit's `rate_limiter_conformance!`).
#[async_trait]
pub trait RateLimiter: Send + Sync {
    /// Decides one request for `key` under `rate`, consuming one unit of the budget when it is
    /// allowed (a refused request consumes nothing).
    async fn check(&self, key: &RateKey, rate: &Rate) -> Result<Decision, LimiterError>;

    /// The state of `key` without consuming anything; None when it holds no state.
    async fn peek(&self, key: &RateKey) -> Result<Option<KeyState>, LimiterError>;

    /// Forgets `key`'s state (its whole budget is back); true when it held state.
    async fn reset(&self, key: &RateKey) -> Result<bool, LimiterError>;

    /// Up to `limit` keys holding state, most limited first
    /// ([`KeyState::most_limited_first`]).
    async fn hottest(&self, limit: usize) -> Result<Vec<KeyState>, LimiterError>;

    /// Whether emergency mode is on.
    async fn emergency(&self) -> Result<bool, LimiterError>;

    /// Switches emergency mode on or off.
    async fn set_emergency(&self, on: bool) -> Result<(), LimiterError>;

    /// Whether the backend answers (for `fab rate-limit status` and health checks).
    async fn ping(&self) -> Result<(), LimiterError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn rate(text: &str) -> Rate {
        text.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn guide_syntax_parses() {
        for (text, count, seconds) in [
            ("100/hour", 100, 3_600),
            ("5/minute", 5, 60),
            ("1000/hour", 1_000, 3_600),
            ("10/second", 10, 1),
            ("3/day", 3, 86_400),
            ("7/s", 7, 1),
            ("7/m", 7, 60),
            ("7/h", 7, 3_600),
            ("7/d", 7, 86_400),
            (" 5 / Minute ", 5, 60),
            ("5/minutes", 5, 60),
        ] {
            let parsed = rate(text);
            assert_eq!(parsed.count(), count, "{text}");
            assert_eq!(parsed.period(), Duration::seconds(seconds), "{text}");
        }
    }

    #[test]
    fn flask_limiter_syntax_parses() {
        for (text, count, seconds) in [
            ("10 per 20 second", 10, 20),
            ("100 per hour", 100, 3_600),
            ("10 per 20 seconds", 10, 20),
            ("2 PER 3 DAYS", 2, 259_200),
            ("10/20 seconds", 10, 20),
            ("10/20s", 10, 20),
        ] {
            let parsed = rate(text);
            assert_eq!(
                (parsed.count(), parsed.period()),
                (count, Duration::seconds(seconds)),
                "{text}"
            );
        }
    }

    #[test]
    fn bad_rates_are_refused_with_the_reason() {
        for (text, reason) in [
            ("", "empty"),
            ("100", "no `/` or `per`"),
            ("100/", "no `/` or `per`"),
            ("/hour", "no `/` or `per`"),
            ("0/minute", "at least 1"),
            ("-5/minute", "not a whole number"),
            ("five/minute", "not a whole number"),
            ("5/fortnight", "unknown period unit \"fortnight\""),
            ("5/0 minute", "positive"),
            ("5/month", "month and year"),
            ("5/400 days", "366 days"),
            ("5/99999999999999999999 days", "too large"),
            ("100/hour;10/minute", "one rate per setting"),
            ("2000000/second", "one request per microsecond"),
            ("5/minute/hour", "unknown period unit"),
        ] {
            let error = text.parse::<Rate>().unwrap_err();
            assert!(
                error.reason.contains(reason),
                "{text:?}: {error} lacks {reason:?}"
            );
            assert!(error.to_string().contains("N/second|minute|hour|day"));
        }
        assert!(Rate::new(0, Duration::seconds(1)).is_err());
        assert!(Rate::new(1, Duration::zero()).is_err());
        assert!(Rate::new(1, Duration::seconds(-1)).is_err());
    }

    #[test]
    fn display_round_trips() {
        for text in [
            "5/minute",
            "100/hour",
            "10 per 20 second",
            "3/day",
            "2 per 3 day",
        ] {
            assert_eq!(rate(text).to_string(), text);
            assert_eq!(rate(&rate(text).to_string()), rate(text));
        }
        let odd = Rate::new(3, Duration::milliseconds(1_500)).unwrap();
        assert_eq!(odd.to_string(), "3 per 1500 millisecond");
        assert_eq!(rate(&odd.to_string()), odd);
        assert_eq!(
            Rate::new(3, Duration::microseconds(1_500_000))
                .unwrap()
                .period(),
            odd.period()
        );
    }

    #[test]
    fn divided_never_goes_below_one_per_period() {
        assert_eq!(rate("100/hour").divided(10), rate("10/hour"));
        assert_eq!(rate("5/minute").divided(10), rate("1/minute"));
        assert_eq!(rate("1000/hour").divided(3), rate("333/hour"));
        assert_eq!(rate("5/minute").divided(0), rate("5/minute"));
        assert_eq!(rate("5/minute").divided(1), rate("5/minute"));
        assert_eq!(rate("5/minute").divided(u32::MAX), rate("1/minute"));
    }

    #[test]
    fn emission_interval_rounds_up_so_the_rate_is_never_exceeded() {
        let even = rate("5/second");
        assert_eq!(even.emission_interval_micros(), 200_000);
        assert_eq!(even.tolerance_micros(), 800_000);
        let uneven = rate("3/second");
        assert_eq!(uneven.emission_interval_micros(), 333_334);
        assert!(uneven.emission_interval_micros() * 3 >= 1_000_000);
        let fast = rate("3000/second");
        assert_eq!(fast.emission_interval_micros(), 334);
    }

    const NOW: i64 = 1_714_564_800_000_000;

    #[test]
    fn exactly_count_requests_pass_from_an_idle_key() {
        for rate in [
            rate("5/minute"),
            rate("3/second"),
            rate("3000/second"),
            rate("1/day"),
        ] {
            let mut tat = None;
            for n in 0..rate.count() {
                let d = decide(tat, NOW, &rate);
                assert!(d.allowed, "{rate}: request {n}");
                assert_eq!(d.remaining, rate.count() - n - 1, "{rate}: request {n}");
                tat = Some(d.new_tat);
            }
            let refused = decide(tat, NOW, &rate);
            assert!(!refused.allowed, "{rate}: request {}", rate.count());
            assert_eq!(refused.remaining, 0);
            assert_eq!(refused.new_tat, tat.unwrap(), "a refusal changes nothing");
        }
    }

    #[test]
    fn retry_after_is_exactly_when_the_next_request_passes() {
        let rate = rate("5/minute");
        let mut tat = None;
        for _ in 0..5 {
            tat = Some(decide(tat, NOW, &rate).new_tat);
        }
        let refused = decide(tat, NOW, &rate);
        assert_eq!(refused.retry_after, Duration::seconds(12));
        assert_eq!(refused.reset_after, Duration::seconds(60));
        let wait = refused.retry_after.num_microseconds().unwrap();
        assert!(!decide(tat, NOW + wait - 1, &rate).allowed);
        let later = decide(tat, NOW + wait, &rate);
        assert!(later.allowed);
        assert_eq!(later.remaining, 0);
        assert!(!decide(Some(later.new_tat), NOW + wait, &rate).allowed);
    }

    #[test]
    fn allowed_decision_reports_reset_and_a_full_budget_after_it() {
        let rate = rate("5/minute");
        let first = decide(None, NOW, &rate);
        assert_eq!(first.reset_after, Duration::seconds(12));
        assert_eq!(first.retry_after, Duration::zero());
        assert_eq!(first.new_tat, NOW + 12_000_000);
        // Long after the TAT the key is as good as new.
        let later = decide(Some(first.new_tat), NOW + 3_600_000_000, &rate);
        assert_eq!(later.remaining, 4);
    }

    #[test]
    fn no_boundary_burst_one_per_interval_after_the_burst() {
        let rate = rate("10/minute");
        let mut tat = None;
        let mut allowed = 0;
        // A request every 100 ms for two minutes: a burst of 10, then one per 6 s.
        for step in 0..1_200 {
            let d = decide(tat, NOW + step * 100_000, &rate);
            if d.allowed {
                allowed += 1;
                tat = Some(d.new_tat);
            }
        }
        assert_eq!(allowed, 10 + 119_900_000 / 6_000_000);
    }

    #[test]
    fn clock_going_back_never_grants_more() {
        let rate = rate("2/minute");
        let a = decide(None, NOW, &rate);
        let b = decide(Some(a.new_tat), NOW, &rate);
        let earlier = decide(Some(b.new_tat), NOW - 10_000_000, &rate);
        assert!(!earlier.allowed);
    }

    #[test]
    fn key_state_agrees_with_decide() {
        let rate = rate("5/minute");
        let key = RateKey::login_user("alice");
        let interval = rate.emission_interval_micros();
        assert_eq!(KeyState::at(key.clone(), NOW, interval, 5, NOW), None);
        let mut tat = None;
        for used in 1..=5u32 {
            tat = Some(decide(tat, NOW, &rate).new_tat);
            let state = KeyState::at(key.clone(), tat.unwrap(), interval, 5, NOW).unwrap();
            assert_eq!((state.used, state.remaining), (used, 5 - used));
            assert_eq!(state.reset_after, Duration::seconds(12 * i64::from(used)));
        }
        let state = KeyState::at(key, tat.unwrap(), interval, 5, NOW).unwrap();
        assert_eq!(state.retry_after, decide(tat, NOW, &rate).retry_after);
    }

    #[test]
    fn keys_read_as_the_guide_shows_them() {
        let v4 = IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9));
        assert_eq!(
            RateKey::login_user("alice").as_str(),
            "rate_limit:login:user:alice"
        );
        assert_eq!(
            RateKey::login_user(" ALICE ").as_str(),
            "rate_limit:login:user:alice"
        );
        assert_eq!(
            RateKey::login_ip(v4).as_str(),
            "rate_limit:login:ip:203.0.113.9"
        );
        assert_eq!(RateKey::api_user(42).as_str(), "rate_limit:api:user:42");
        assert_eq!(
            RateKey::default_ip(v4).as_str(),
            "rate_limit:default:ip:203.0.113.9"
        );
        assert_eq!(
            RateKey::custom("Reports-Export", "user", "bob").as_str(),
            "rate_limit:reports-export:user:bob"
        );
    }

    #[test]
    fn ipv6_clients_share_their_64_and_mapped_v4_is_v4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(
            RateKey::login_ip(a).as_str(),
            "rate_limit:login:ip:2001:db8:1:2::/64"
        );
        assert_eq!(RateKey::login_ip(a), RateKey::login_ip(b));
        assert_ne!(RateKey::login_ip(a), RateKey::login_ip(other));
        let mapped = IpAddr::V6(Ipv4Addr::new(198, 51, 100, 1).to_ipv6_mapped());
        assert_eq!(
            RateKey::login_ip(mapped).as_str(),
            "rate_limit:login:ip:198.51.100.1"
        );
        let loopback = IpAddr::V6(Ipv6Addr::LOCALHOST);
        assert_eq!(
            RateKey::login_ip(loopback).as_str(),
            "rate_limit:login:ip:::/64"
        );
    }

    #[test]
    fn hostile_usernames_stay_one_bounded_distinct_token() {
        let spaced = RateKey::login_user("al ice\n*");
        assert_eq!(spaced.as_str(), "rate_limit:login:user:al%20ice%0A%2A");
        assert_ne!(
            RateKey::login_user("al%20ice"),
            RateKey::login_user("al ice")
        );
        assert_eq!(
            RateKey::login_user("Ünïcode").as_str(),
            "rate_limit:login:user:ünïcode"
        );
        let long_a = "a".repeat(500);
        let long_b = format!("{}b", "a".repeat(499));
        let (ka, kb) = (RateKey::login_user(&long_a), RateKey::login_user(&long_b));
        assert_ne!(ka, kb);
        assert!(ka.as_str().chars().count() <= KEY_PREFIX.len() + 32 + 1 + 4 + 1 + VALUE_MAX);
        assert!(ka.as_str().contains('~'));
        assert!(
            !RateKey::custom("lo gin", "us*er", "x")
                .as_str()
                .contains([' ', '*'])
        );
        assert_ne!(
            RateKey::custom("a:b", "c", "d"),
            RateKey::custom("a", "b", "c:d"),
            "a colon in a policy cannot shift the parts"
        );
    }

    #[test]
    fn parsed_keys_equal_the_ones_shown() {
        for key in [
            RateKey::login_user("al ice\n*"),
            RateKey::login_ip("2001:db8::1".parse().unwrap()),
            RateKey::api_user(42),
            RateKey::login_user(&"z".repeat(300)),
            RateKey::login_user("100%"),
            RateKey::custom("a:b", "c", "d"),
        ] {
            assert_eq!(RateKey::parse(key.as_str()).unwrap(), key, "{key}");
        }
        assert_eq!(
            RateKey::parse("login:user:alice").unwrap(),
            RateKey::login_user("alice")
        );
        assert_eq!(
            RateKey::parse("LOGIN:User:alice").unwrap(),
            RateKey::login_user("alice")
        );
        assert_eq!(
            RateKey::parse("A%3AB:c:d").unwrap(),
            RateKey::custom("a:b", "c", "d")
        );
        for bad in [
            "",
            "rate_limit:",
            "rate_limit:login",
            "login:user",
            "login::x",
            ":user:x",
        ] {
            assert!(RateKey::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn emergency_flag_values() {
        for on in ["1", " 1\n", "true", "ON", "yes", "2", "typo"] {
            assert!(emergency_flag_is_on(Some(on)), "{on:?}");
        }
        for off in ["0", "", "false", "OFF", "no", " 0 "] {
            assert!(!emergency_flag_is_on(Some(off)), "{off:?}");
        }
        assert!(!emergency_flag_is_on(None));
    }
}

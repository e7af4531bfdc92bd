//! [`MemoryRateLimiter`]: the embedded default backend, a sharded map from key to GCRA state in
//! this process's memory (one instance, or the per-instance fallback when Redis is down).
//!
//! The one thing to know: memory is bounded whatever clients send. A key whose TAT is past
//! carries no state and is dropped (each shard sweeps itself once a minute of clock time, and
//! [`MemoryRateLimiter::sweep`] does all shards at once), and each shard holds at most a fixed
//! number of keys. When a new key arrives at a full shard, the expired keys go first and then
//! the key closest to expiry. That is the trade-off: a flood of distinct keys (many usernames or
//! addresses) can make the limiter forget the key with the least state left, whose budget is then
//! whole again a little early; the keys an attacker has pushed far ahead (a username under a
//! brute-force attack) are the last to go, and memory never grows past the cap. With the default
//! cap (262,144 keys) that is a few tens of MiB at worst.
//!
//! Sixty-four shards, each behind its own mutex held for one map operation, keep contention
//! low; the shard is chosen with a per-process random hash so clients cannot aim every key at one
//! shard.

use super::{Decision, KeyState, LimiterError, Rate, RateKey, RateLimiter, decide};
use crate::clock::Clock;
use async_trait::async_trait;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// How many shards the keys are spread over.
pub const SHARDS: usize = 64;

/// The default cap on keys held (over all shards).
pub const DEFAULT_MAX_KEYS: usize = 262_144;

/// How often (in the limiter clock's time) a shard drops its expired keys by itself.
const SWEEP_INTERVAL_MICROS: i64 = 60_000_000;

/// The GCRA state of one key and the rate it was last allowed under.
#[derive(Debug, Clone, Copy)]
struct Entry {
    tat: i64,
    interval: i64,
    burst: u32,
}

#[derive(Debug, Default)]
struct Shard {
    entries: HashMap<RateKey, Entry>,
    next_sweep: i64,
}

impl Shard {
    fn sweep(&mut self, now: i64) -> usize {
        let before = self.entries.len();
        self.entries.retain(|_, entry| entry.tat > now);
        self.next_sweep = now.saturating_add(SWEEP_INTERVAL_MICROS);
        before - self.entries.len()
    }

    /// Makes room for one more key under `cap`: expired keys first, then the key closest to
    /// expiry (the one with the least state to lose).
    fn make_room(&mut self, now: i64, cap: usize) {
        if self.entries.len() < cap {
            return;
        }
        self.sweep(now);
        while self.entries.len() >= cap {
            let closest = self
                .entries
                .iter()
                .min_by_key(|(_, entry)| entry.tat)
                .map(|(key, _)| key.clone());
            match closest {
                Some(key) => {
                    self.entries.remove(&key);
                }
                None => break,
            }
        }
    }
}

/// Rate-limit state in process memory. Share one limiter behind an `Arc`.
pub struct MemoryRateLimiter {
    clock: Arc<dyn Clock>,
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    max_keys_per_shard: usize,
    emergency: AtomicBool,
}

impl std::fmt::Debug for MemoryRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryRateLimiter")
            .field("keys", &self.len())
            .field("max_keys", &(self.max_keys_per_shard * SHARDS))
            .finish_non_exhaustive()
    }
}

impl MemoryRateLimiter {
    /// A limiter on `clock` holding at most [`DEFAULT_MAX_KEYS`] keys.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self::with_max_keys(clock, DEFAULT_MAX_KEYS)
    }

    /// A limiter on `clock` holding at most about `max_keys` keys (rounded up to a multiple of
    /// [`SHARDS`]; at least one per shard).
    pub fn with_max_keys(clock: Arc<dyn Clock>, max_keys: usize) -> Self {
        Self {
            clock,
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect(),
            hasher: RandomState::new(),
            max_keys_per_shard: max_keys.div_ceil(SHARDS).max(1),
            emergency: AtomicBool::new(false),
        }
    }

    /// The most keys this limiter holds at once.
    pub fn max_keys(&self) -> usize {
        self.max_keys_per_shard * SHARDS
    }

    /// Keys held now (expired ones not yet swept included).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| lock(shard).entries.len())
            .sum()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every key whose TAT is past (they carry no state); the number dropped.
    pub fn sweep(&self) -> usize {
        let now = self.now();
        self.shards.iter().map(|shard| lock(shard).sweep(now)).sum()
    }

    /// [`RateLimiter::check`] without the `async`: decides one request for `key` at the
    /// clock's now.
    pub fn check_now(&self, key: &RateKey, rate: &Rate) -> Decision {
        let now = self.now();
        let mut shard = self.shard(key);
        if now >= shard.next_sweep {
            shard.sweep(now);
        }
        let decision = decide(shard.entries.get(key).map(|e| e.tat), now, rate);
        if decision.allowed {
            let entry = Entry {
                tat: decision.new_tat,
                interval: rate.emission_interval_micros(),
                burst: rate.count(),
            };
            if let Some(existing) = shard.entries.get_mut(key) {
                *existing = entry;
            } else {
                shard.make_room(now, self.max_keys_per_shard);
                shard.entries.insert(key.clone(), entry);
            }
        }
        decision
    }

    fn now(&self) -> i64 {
        self.clock.now().timestamp_micros()
    }

    fn shard(&self, key: &RateKey) -> MutexGuard<'_, Shard> {
        let index = usize::try_from(self.hasher.hash_one(key) % SHARDS as u64).unwrap_or(0);
        lock(&self.shards[index])
    }
}

// Every change under a shard's lock is one map operation (or a sweep that only removes), so a
// panic elsewhere cannot leave a half-written entry: a poisoned lock is still safe to use.
fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

#[async_trait]
impl RateLimiter for MemoryRateLimiter {
    async fn check(&self, key: &RateKey, rate: &Rate) -> Result<Decision, LimiterError> {
        Ok(self.check_now(key, rate))
    }

    async fn peek(&self, key: &RateKey) -> Result<Option<KeyState>, LimiterError> {
        let now = self.now();
        let entry = self.shard(key).entries.get(key).copied();
        Ok(entry.and_then(|e| KeyState::at(key.clone(), e.tat, e.interval, e.burst, now)))
    }

    async fn reset(&self, key: &RateKey) -> Result<bool, LimiterError> {
        let now = self.now();
        let removed = self.shard(key).entries.remove(key);
        Ok(removed.is_some_and(|entry| entry.tat > now))
    }

    async fn hottest(&self, limit: usize) -> Result<Vec<KeyState>, LimiterError> {
        let now = self.now();
        let mut states: Vec<KeyState> = Vec::new();
        for shard in &self.shards {
            let shard = lock(shard);
            states.extend(
                shard.entries.iter().filter_map(|(key, e)| {
                    KeyState::at(key.clone(), e.tat, e.interval, e.burst, now)
                }),
            );
        }
        states.sort_by(KeyState::most_limited_first);
        states.truncate(limit);
        Ok(states)
    }

    async fn emergency(&self) -> Result<bool, LimiterError> {
        Ok(self.emergency.load(Ordering::SeqCst))
    }

    async fn set_emergency(&self, on: bool) -> Result<(), LimiterError> {
        self.emergency.store(on, Ordering::SeqCst);
        Ok(())
    }

    async fn ping(&self) -> Result<(), LimiterError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use chrono::{DateTime, Duration};

    fn clock() -> ManualClock {
        ManualClock::new(DateTime::from_timestamp(1_714_564_800, 0).unwrap_or_default())
    }

    fn rate(text: &str) -> Rate {
        text.parse().unwrap_or_else(|e| panic!("{e}"))
    }

    fn key(n: usize) -> RateKey {
        RateKey::custom("flood", "ip", &n.to_string())
    }

    #[test]
    fn expired_keys_are_swept_and_carry_no_state() {
        let clock = clock();
        let limiter = MemoryRateLimiter::new(Arc::new(clock.clone()));
        let per_minute = rate("5/minute");
        for n in 0..100 {
            assert!(limiter.check_now(&key(n), &per_minute).allowed);
        }
        assert_eq!(limiter.len(), 100);
        clock.advance(Duration::seconds(11));
        assert_eq!(limiter.sweep(), 0, "12 s of state left on each");
        clock.advance(Duration::seconds(1));
        assert_eq!(limiter.sweep(), 100);
        assert!(limiter.is_empty());
    }

    #[test]
    fn shards_sweep_themselves_as_the_clock_moves() {
        let clock = clock();
        let limiter = MemoryRateLimiter::new(Arc::new(clock.clone()));
        let per_second = rate("1/second");
        for n in 0..1_000 {
            limiter.check_now(&key(n), &per_second);
        }
        clock.advance(Duration::minutes(2));
        for n in 0..1_000 {
            limiter.check_now(&key(n + 1_000_000), &per_second);
        }
        assert!(
            limiter.len() <= 1_000 + SHARDS,
            "expired keys are dropped on use: {}",
            limiter.len()
        );
    }

    #[test]
    fn a_flood_of_distinct_keys_stays_under_the_cap() {
        let clock = clock();
        let limiter = MemoryRateLimiter::with_max_keys(Arc::new(clock.clone()), 640);
        assert_eq!(limiter.max_keys(), 640);
        let per_hour = rate("100/hour");
        for n in 0..20_000 {
            assert!(limiter.check_now(&key(n), &per_hour).allowed);
            if n % 1_000 == 0 {
                clock.advance(Duration::milliseconds(1));
            }
        }
        assert!(limiter.len() <= 640, "{} keys held", limiter.len());
    }

    #[test]
    fn a_full_shard_evicts_the_key_closest_to_expiry_and_keeps_the_limited_one() {
        let clock = clock();
        // One key per shard: every new key in a shard must push one out.
        let limiter = MemoryRateLimiter::with_max_keys(Arc::new(clock.clone()), SHARDS * 2);
        let login = rate("5/minute");
        let victim = RateKey::login_user("victim");
        for _ in 0..5 {
            assert!(limiter.check_now(&victim, &login).allowed);
        }
        assert!(!limiter.check_now(&victim, &login).allowed);
        let light = rate("100/hour");
        for n in 0..10_000 {
            limiter.check_now(&key(n), &light);
        }
        assert!(
            !limiter.check_now(&victim, &login).allowed,
            "the brute-forced key is the last to be evicted"
        );
    }

    #[tokio::test]
    async fn reset_reports_only_live_state() {
        let clock = clock();
        let limiter = MemoryRateLimiter::new(Arc::new(clock.clone()));
        let (alice, bob) = (RateKey::login_user("alice"), RateKey::login_user("bob"));
        let login = rate("5/minute");
        limiter.check_now(&alice, &login);
        limiter.check_now(&bob, &login);
        assert!(limiter.reset(&alice).await.unwrap());
        assert!(!limiter.reset(&alice).await.unwrap());
        clock.advance(Duration::seconds(12));
        assert!(
            !limiter.reset(&bob).await.unwrap(),
            "an entry whose TAT is past holds no state even before a sweep"
        );
    }
}

//! The conformance suite every [`RateLimiter`] backend must pass, and the Redis fixtures its
//! tests need: a fresh key namespace on the shared test Redis, and a private `redis-server` a
//! test may kill and restart.
//!
//! A backend's test file invokes [`rate_limiter_conformance!`](crate::rate_limiter_conformance)
//! with an `async` block building a fresh [`RateLimiterUnderTest`], and gets one
//! `#[tokio::test]` per check:
//!
//! ```ignore
//! fab_testkit::rate_limiter_conformance!(async { RateLimiterUnderTest::memory() });
//! fab_testkit::rate_limiter_conformance!(async { RateLimiterUnderTest::redis().await });
//! ```
//!
//! The one thing to know: the memory backend runs on a [`ManualClock`] and its checks never
//! sleep and compare durations exactly; Redis decides on its own clock (`TIME`), so there the
//! checks use rates whose emission interval dwarfs the test's own duration, sleep only to see
//! a refill (about one 200 ms interval), and accept the few milliseconds the test itself took.
//!
//! Tests that need Redis read `FAB_TEST_REDIS_URL` (default `redis://127.0.0.1:6379/0`) and fail,
//! never skip, when it cannot be reached. Each gets its own key namespace, deleted afterwards.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "conformance checks are test code: a failed expectation is the test failing"
)]

use chrono::{DateTime, Duration};
use fab_core::Secret;
use fab_core::clock::ManualClock;
use fab_core::ratelimit::memory::MemoryRateLimiter;
use fab_core::ratelimit::{Decision, Rate, RateKey, RateLimiter};
use fab_redis::{RedisConnection, RedisOptions, RedisRateLimiter, RedisSessionStore};
use std::any::Any;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

/// How the limiter under test tells time.
#[derive(Debug, Clone)]
pub enum TestTime {
    /// The limiter reads this clock; the checks move it.
    Manual(ManualClock),
    /// The limiter reads a clock the test cannot move (Redis' `TIME`); the checks sleep.
    Real,
}

/// A rate limiter to check, with how it tells time.
pub struct RateLimiterUnderTest {
    /// The limiter under test.
    pub limiter: Arc<dyn RateLimiter>,
    /// Its clock.
    pub time: TestTime,
    // Declared last: dropped after the limiter.
    _guard: Box<dyn Any + Send>,
}

impl RateLimiterUnderTest {
    /// `limiter` on `time`, keeping `guard` alive until the limiter is dropped.
    pub fn new(limiter: Arc<dyn RateLimiter>, time: TestTime, guard: impl Any + Send) -> Self {
        Self {
            limiter,
            time,
            _guard: Box::new(guard),
        }
    }

    /// A fresh [`MemoryRateLimiter`] on a [`ManualClock`].
    pub fn memory() -> Self {
        let clock = ManualClock::new(DateTime::from_timestamp(1_714_564_800, 0).unwrap());
        let limiter = MemoryRateLimiter::new(Arc::new(clock.clone()));
        Self::new(Arc::new(limiter), TestTime::Manual(clock), ())
    }

    /// A [`RedisRateLimiter`] on the test Redis, in a fresh namespace deleted afterwards.
    pub async fn redis() -> Self {
        let namespace = RedisNamespace::fresh().await;
        let limiter = namespace.limiter();
        Self::new(Arc::new(limiter), TestTime::Real, namespace)
    }

    /// Lets `by` pass: moves the manual clock, or sleeps.
    pub async fn wait(&self, by: Duration) {
        match &self.time {
            TestTime::Manual(clock) => clock.advance(by),
            TestTime::Real => tokio::time::sleep(by.to_std().unwrap_or_default()).await,
        }
    }

    /// Whether durations can be compared exactly.
    pub fn exact(&self) -> bool {
        matches!(self.time, TestTime::Manual(_))
    }
}

/// Expands to one `#[tokio::test]` per rate-limiter check. The argument is an `async` block
/// evaluating to a [`RateLimiterUnderTest`].
#[macro_export]
macro_rules! rate_limiter_conformance {
    ($factory:expr) => {
        $crate::__rate_limiter_checks!($factory;
            exactly_the_limit_passes_then_requests_are_refused,
            refused_requests_consume_nothing,
            retry_after_and_reset_after_are_exact,
            budget_refills_one_interval_at_a_time,
            keys_are_independent,
            concurrent_requests_never_exceed_the_limit,
            reset_restores_the_whole_budget,
            peek_and_hottest_show_the_most_limited_keys_first,
            a_stricter_rate_applies_to_the_budget_already_used,
            emergency_flag_is_off_until_set,
            ping_answers,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __rate_limiter_checks {
    ($factory:expr; $($check:ident),+ $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let subject: $crate::ratelimit_conformance::RateLimiterUnderTest = $factory.await;
                $crate::ratelimit_conformance::checks::$check(&subject).await;
            }
        )+
    };
}

fn rate(text: &str) -> Rate {
    text.parse().unwrap()
}

/// `actual` is `expected` exactly, or (on a real clock) at most `expected` and no less than
/// `expected - slack`: the time the test itself took can only have shortened it.
fn assert_close(
    subject: &RateLimiterUnderTest,
    actual: Duration,
    expected: Duration,
    slack: Duration,
    what: &str,
) {
    if subject.exact() {
        assert_eq!(actual, expected, "{what}");
    } else {
        assert!(
            actual <= expected && actual >= expected - slack,
            "{what}: {actual} is not within {slack} below {expected}"
        );
    }
}

/// The rate-limiter checks.
pub mod checks {
    use super::*;

    async fn check(subject: &RateLimiterUnderTest, key: &RateKey, rate: &Rate) -> Decision {
        subject.limiter.check(key, rate).await.unwrap()
    }

    /// From an idle key exactly `N` requests pass, counting down `remaining`, and request
    /// `N + 1` is refused.
    pub async fn exactly_the_limit_passes_then_requests_are_refused(
        subject: &RateLimiterUnderTest,
    ) {
        for (key, rate) in [
            (RateKey::login_user("alice"), rate("5/minute")),
            (RateKey::api_user(42), rate("1000/hour")),
            (
                RateKey::default_ip(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9))),
                rate("1/day"),
            ),
        ] {
            for n in 0..rate.count() {
                let decision = check(subject, &key, &rate).await;
                assert!(decision.allowed, "{key} under {rate}: request {n} refused");
                assert_eq!(
                    decision.remaining,
                    rate.count() - n - 1,
                    "{key}: request {n}"
                );
                assert_eq!(decision.retry_after, Duration::zero());
            }
            let refused = check(subject, &key, &rate).await;
            assert!(
                !refused.allowed,
                "{key} under {rate}: request {} allowed",
                rate.count()
            );
            assert_eq!(refused.remaining, 0);
            assert!(refused.retry_after > Duration::zero());
        }
    }

    /// Hammering a limited key does not push its reset further away.
    pub async fn refused_requests_consume_nothing(subject: &RateLimiterUnderTest) {
        let key = RateKey::login_user("mallory");
        let rate = rate("3/hour");
        for _ in 0..3 {
            assert!(check(subject, &key, &rate).await.allowed);
        }
        let first = check(subject, &key, &rate).await;
        for _ in 0..20 {
            assert!(!check(subject, &key, &rate).await.allowed);
        }
        let last = check(subject, &key, &rate).await;
        assert!(!last.allowed);
        assert!(last.retry_after <= first.retry_after);
        assert!(last.reset_after <= first.reset_after);
        assert_eq!(last.new_tat, first.new_tat, "a refusal stores nothing");
    }

    /// After a burst of 5 at 5/minute the next request may come in 12 s and the budget is whole
    /// in 60 s.
    pub async fn retry_after_and_reset_after_are_exact(subject: &RateLimiterUnderTest) {
        let key = RateKey::login_ip("198.51.100.7".parse().unwrap());
        let rate = rate("5/minute");
        let started = Instant::now();
        let first = check(subject, &key, &rate).await;
        assert_close(
            subject,
            first.reset_after,
            Duration::seconds(12),
            Duration::zero(),
            "reset after one",
        );
        for _ in 1..5 {
            assert!(check(subject, &key, &rate).await.allowed);
        }
        let refused = check(subject, &key, &rate).await;
        let slack = Duration::from_std(started.elapsed()).unwrap();
        assert!(!refused.allowed);
        assert_close(
            subject,
            refused.retry_after,
            Duration::seconds(12),
            slack,
            "Retry-After",
        );
        assert_close(
            subject,
            refused.reset_after,
            Duration::seconds(60),
            slack,
            "reset",
        );
        assert_eq!(
            refused.reset_after - refused.retry_after,
            Duration::seconds(48),
            "the tolerance is four emission intervals"
        );
    }

    /// A refused key gets exactly one request back per emission interval.
    pub async fn budget_refills_one_interval_at_a_time(subject: &RateLimiterUnderTest) {
        let key = RateKey::custom("refill", "user", "carol");
        let rate = rate("5/second");
        for _ in 0..5 {
            assert!(check(subject, &key, &rate).await.allowed);
        }
        let refused = check(subject, &key, &rate).await;
        assert!(!refused.allowed);
        assert!(refused.retry_after <= Duration::milliseconds(200));
        if subject.exact() {
            subject
                .wait(refused.retry_after - Duration::microseconds(1))
                .await;
            assert!(
                !check(subject, &key, &rate).await.allowed,
                "one microsecond early"
            );
            subject.wait(Duration::microseconds(1)).await;
        } else {
            subject
                .wait(refused.retry_after + Duration::milliseconds(10))
                .await;
        }
        let refilled = check(subject, &key, &rate).await;
        assert!(refilled.allowed, "one request is back after Retry-After");
        assert_eq!(refilled.remaining, 0);
        assert!(!check(subject, &key, &rate).await.allowed, "and only one");
    }

    /// One key's budget is its own: a limited username leaves other usernames, the same name
    /// under another policy, and IP keys alone.
    pub async fn keys_are_independent(subject: &RateLimiterUnderTest) {
        let rate = rate("2/hour");
        let alice = RateKey::login_user("alice");
        for _ in 0..2 {
            assert!(check(subject, &alice, &rate).await.allowed);
        }
        assert!(!check(subject, &alice, &rate).await.allowed);
        assert!(
            !check(subject, &RateKey::login_user(" ALICE "), &rate)
                .await
                .allowed,
            "same account"
        );
        for other in [
            RateKey::login_user("bob"),
            RateKey::username("api", "alice"),
            RateKey::login_ip("203.0.113.9".parse().unwrap()),
        ] {
            let decision = check(subject, &other, &rate).await;
            assert!(decision.allowed, "{other}");
            assert_eq!(decision.remaining, 1, "{other}");
        }
    }

    /// 64 tasks making 10 requests each on one key limited to 100 get exactly 100 through.
    pub async fn concurrent_requests_never_exceed_the_limit(subject: &RateLimiterUnderTest) {
        let key = RateKey::api_user(7);
        let rate = rate("100/hour");
        let mut tasks = Vec::new();
        for _ in 0..64 {
            let limiter = subject.limiter.clone();
            let key = key.clone();
            tasks.push(tokio::spawn(async move {
                let mut allowed = 0u32;
                for _ in 0..10 {
                    if limiter.check(&key, &rate).await.unwrap().allowed {
                        allowed += 1;
                    }
                }
                allowed
            }));
        }
        let mut total = 0;
        for task in tasks {
            total += task.await.unwrap();
        }
        assert_eq!(total, 100, "accepted across 64 concurrent tasks");
    }

    /// `fab rate-limit reset --key K`: the whole budget is back; resetting a key without state
    /// says so.
    pub async fn reset_restores_the_whole_budget(subject: &RateLimiterUnderTest) {
        let key = RateKey::login_user("dave");
        let rate = rate("3/hour");
        for _ in 0..4 {
            check(subject, &key, &rate).await;
        }
        assert!(subject.limiter.reset(&key).await.unwrap());
        assert!(!subject.limiter.reset(&key).await.unwrap());
        assert!(
            !subject
                .limiter
                .reset(&RateKey::login_user("nobody"))
                .await
                .unwrap()
        );
        let fresh = check(subject, &key, &rate).await;
        assert!(fresh.allowed);
        assert_eq!(fresh.remaining, 2);
    }

    /// `fab rate-limit status`: `peek` reads without consuming, `hottest` lists the keys using
    /// the largest share of their budget first.
    pub async fn peek_and_hottest_show_the_most_limited_keys_first(subject: &RateLimiterUnderTest) {
        let login = rate("5/minute");
        let api = rate("1000/hour");
        let (alice, bob, api_key) = (
            RateKey::login_user("alice"),
            RateKey::login_user("bob"),
            RateKey::api_user(42),
        );
        assert!(subject.limiter.hottest(10).await.unwrap().is_empty());
        assert_eq!(subject.limiter.peek(&alice).await.unwrap(), None);
        for _ in 0..6 {
            check(subject, &alice, &login).await;
        }
        check(subject, &bob, &login).await;
        for _ in 0..3 {
            check(subject, &api_key, &api).await;
        }
        let state = subject
            .limiter
            .peek(&alice)
            .await
            .unwrap()
            .expect("alice holds state");
        assert_eq!(
            (state.key.clone(), state.burst, state.used, state.remaining),
            (alice.clone(), 5, 5, 0)
        );
        assert!(state.retry_after > Duration::zero() && state.retry_after <= Duration::seconds(12));
        let again = subject.limiter.peek(&alice).await.unwrap().unwrap();
        assert_eq!(again.used, 5, "peek consumes nothing");

        let hottest = subject.limiter.hottest(2).await.unwrap();
        let keys: Vec<&RateKey> = hottest.iter().map(|s| &s.key).collect();
        assert_eq!(keys, [&alice, &bob]);
        assert_eq!((hottest[1].used, hottest[1].remaining), (1, 4));
        let all = subject.limiter.hottest(100).await.unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(
            (all[2].key.clone(), all[2].used, all[2].burst),
            (api_key, 3, 1000)
        );

        subject.limiter.reset(&alice).await.unwrap();
        let after = subject.limiter.hottest(10).await.unwrap();
        assert!(after.iter().all(|s| s.key != alice));
    }

    /// Switching a key to the emergency rate (the policy divided by 10) counts what it already
    /// used: 10 of 100/hour leave 8 of 10/hour.
    pub async fn a_stricter_rate_applies_to_the_budget_already_used(
        subject: &RateLimiterUnderTest,
    ) {
        let key = RateKey::default_ip("192.0.2.44".parse().unwrap());
        let normal = rate("100/hour");
        for _ in 0..10 {
            assert!(check(subject, &key, &normal).await.allowed);
        }
        let emergency = normal.divided(10);
        assert_eq!(emergency, rate("10/hour"));
        let decision = check(subject, &key, &emergency).await;
        assert!(decision.allowed);
        assert_eq!(decision.remaining, 8);
    }

    /// Emergency mode is off by default and follows `set_emergency`.
    pub async fn emergency_flag_is_off_until_set(subject: &RateLimiterUnderTest) {
        let limiter = &subject.limiter;
        assert!(!limiter.emergency().await.unwrap());
        limiter.set_emergency(true).await.unwrap();
        assert!(limiter.emergency().await.unwrap());
        limiter.set_emergency(true).await.unwrap();
        assert!(limiter.emergency().await.unwrap());
        limiter.set_emergency(false).await.unwrap();
        assert!(!limiter.emergency().await.unwrap());
    }

    /// A reachable backend answers a ping.
    pub async fn ping_answers(subject: &RateLimiterUnderTest) {
        subject.limiter.ping().await.unwrap();
    }
}

/// The test Redis: `FAB_TEST_REDIS_URL`, or the machine's `redis://127.0.0.1:6379/0`.
pub fn redis_url() -> String {
    // Test support reads its own FAB_TEST_* variables; the server's configuration never does.
    std::env::var("FAB_TEST_REDIS_URL")
        .ok()
        .filter(|url| !url.trim().is_empty())
        .unwrap_or_else(|| "redis://127.0.0.1:6379/0".to_owned())
}

fn random_hex(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    getrandom::fill(&mut buffer).unwrap();
    hex::encode(buffer)
}

/// A key namespace of one test on the test Redis (`fab_t_<random>:`); its keys are deleted when
/// it is dropped. Creating one checks that Redis answers and panics, naming the URL, when not.
pub struct RedisNamespace {
    /// The Redis URL.
    pub url: String,
    /// The prefix every key of the test starts with.
    pub prefix: String,
}

impl RedisNamespace {
    /// A fresh namespace on [`redis_url`].
    pub async fn fresh() -> Self {
        Self::fresh_on(&redis_url()).await
    }

    /// A fresh namespace on `url`.
    pub async fn fresh_on(url: &str) -> Self {
        let namespace = Self {
            url: url.to_owned(),
            prefix: format!("fab_t_{}:", random_hex(8)),
        };
        let mut raw = namespace.raw().await;
        let pong: String = redis::cmd("PING").query_async(&mut raw).await.unwrap_or_else(|e| {
            panic!("Redis at {url} does not answer PING ({e}); tests need it: start it or set FAB_TEST_REDIS_URL")
        });
        assert_eq!(pong, "PONG");
        namespace
    }

    /// fab's client for this Redis, with the default timeouts.
    pub fn connection(&self) -> RedisConnection {
        RedisConnection::open(&Secret::new(self.url.clone()), &RedisOptions::default()).unwrap()
    }

    /// A rate limiter in this namespace, on its own connection.
    pub fn limiter(&self) -> RedisRateLimiter {
        RedisRateLimiter::new(self.connection()).with_key_namespace(self.prefix.clone())
    }

    /// A session store in this namespace, on its own connection.
    pub fn session_store(&self, policy: &fab_core::session::SessionPolicy) -> RedisSessionStore {
        RedisSessionStore::new(self.connection(), policy).with_key_prefix(self.prefix.clone())
    }

    /// A plain connection of the test's own, outside fab (as `redis-cli` would be).
    pub async fn raw(&self) -> redis::aio::MultiplexedConnection {
        let url = &self.url;
        let client = redis::Client::open(url.as_str())
            .unwrap_or_else(|e| panic!("FAB_TEST_REDIS_URL {url} is not a Redis URL: {e}"));
        tokio::time::timeout(std::time::Duration::from_secs(5), client.get_multiplexed_async_connection())
            .await
            .unwrap_or_else(|_| panic!("Redis at {url} did not accept a connection within 5 s"))
            .unwrap_or_else(|e| {
                panic!("Redis is not reachable at {url} ({e}); tests need it: start it or set FAB_TEST_REDIS_URL")
            })
    }

    /// Every key of this namespace, found with `SCAN`.
    pub async fn keys(&self) -> Vec<String> {
        let mut raw = self.raw().await;
        let pattern = format!("{}*", self.prefix);
        let mut keys: Vec<String> = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut raw)
                .await
                .unwrap();
            keys.extend(batch);
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        keys.sort();
        keys.dedup();
        keys
    }
}

impl Drop for RedisNamespace {
    fn drop(&mut self) {
        // Synchronous client: Drop may run inside the test's runtime, which cannot be blocked on.
        let pattern = format!("{}*", self.prefix);
        let cleaned = redis::Client::open(self.url.as_str()).and_then(|client| {
            let mut connection =
                client.get_connection_with_timeout(std::time::Duration::from_secs(2))?;
            let mut cursor: u64 = 0;
            loop {
                let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query(&mut connection)?;
                if !keys.is_empty() {
                    redis::cmd("DEL").arg(&keys).exec(&mut connection)?;
                }
                cursor = next;
                if cursor == 0 {
                    return Ok(());
                }
            }
        });
        if let Err(e) = cleaned {
            eprintln!("warning: could not delete the test keys {pattern}: {e}");
        }
    }
}

/// A `redis-server` of the test's own on a free loopback port, without persistence, which the
/// test may kill, restart on the same port, pause and resume. Stopped when dropped.
pub struct PrivateRedis {
    port: u16,
    args: Vec<String>,
    child: Option<Child>,
    _directory: tempfile::TempDir,
}

impl PrivateRedis {
    /// Starts one and waits until it answers.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts one with extra `redis-server` arguments (e.g. `--requirepass`).
    pub fn start_with(args: &[&str]) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map(|addr| addr.port())
            .unwrap();
        let mut redis = Self {
            port,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            child: None,
            _directory: tempfile::Builder::new()
                .prefix("fab-redis-")
                .tempdir()
                .unwrap(),
        };
        redis.spawn();
        redis
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:<port>/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn spawn(&mut self) {
        let port = self.port.to_string();
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(["--dir", &self._directory.path().display().to_string()])
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start redis-server (is it installed?): {e}"));
        self.child = Some(child);
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server on port {port} did not start within 10 s"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Kills it (SIGKILL) and waits until it is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty (no persistence).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("redis-server is running").id();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} {pid}");
    }

    /// Freezes it (SIGSTOP): connections stay open and nothing answers, as with a hung server.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets it run again (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

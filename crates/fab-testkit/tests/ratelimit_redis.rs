//! The rate-limiter conformance suite on Redis, and what only Redis must show: the guide's key
//! names with bounded TTLs, `redis-cli SET rate_limit_emergency_mode 1`, one budget shared by
//! several instances, the Lua script reloaded after `SCRIPT FLUSH` and after a restart, and fast
//! failure then recovery, without rebuilding anything, when Redis dies or hangs.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is the test failing"
)]

use fab_core::Secret;
use fab_core::ratelimit::{LimiterError, Rate, RateKey, RateLimiter};
use fab_redis::{RedisConnection, RedisOptions, RedisRateLimiter};
use fab_testkit::ratelimit_conformance::{PrivateRedis, RateLimiterUnderTest, RedisNamespace};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

fab_testkit::rate_limiter_conformance!(async { RateLimiterUnderTest::redis().await });

fn rate(text: &str) -> Rate {
    text.parse().unwrap()
}

async fn raw_command<T: redis::FromRedisValue>(
    namespace: &RedisNamespace,
    command: &mut redis::Cmd,
) -> T {
    command
        .query_async(&mut namespace.raw().await)
        .await
        .unwrap()
}

/// Each key is `rate_limit:<policy>:<kind>:<value>` (after the test's namespace), a hash, with a
/// TTL of exactly the time until it holds no state: one emission interval after one request, one
/// period after a full burst, never more; a refusal does not extend it.
#[tokio::test]
async fn keys_carry_the_guides_names_and_a_bounded_ttl() {
    let namespace = RedisNamespace::fresh().await;
    let limiter = namespace.limiter();
    let key = RateKey::login_user("Alice");
    let redis_key = format!("{}rate_limit:login:user:alice", namespace.prefix);
    assert_eq!(limiter.redis_key(&key), redis_key);
    let login = rate("5/minute");

    limiter.check(&key, &login).await.unwrap();
    let ttl: i64 = raw_command(&namespace, redis::cmd("PTTL").arg(&redis_key)).await;
    assert!(
        (11_000..=12_000).contains(&ttl),
        "one request: PTTL {ttl} ms"
    );
    let kind: String = raw_command(&namespace, redis::cmd("TYPE").arg(&redis_key)).await;
    assert_eq!(kind, "hash");
    let fields: std::collections::HashMap<String, String> =
        raw_command(&namespace, redis::cmd("HGETALL").arg(&redis_key)).await;
    assert_eq!(fields["interval"], "12000000");
    assert_eq!(fields["burst"], "5");
    assert!(fields["tat"].parse::<i64>().unwrap() > 1_700_000_000_000_000);

    for _ in 0..4 {
        limiter.check(&key, &login).await.unwrap();
    }
    let full: i64 = raw_command(&namespace, redis::cmd("PTTL").arg(&redis_key)).await;
    assert!(
        (59_000..=60_000).contains(&full),
        "full burst: PTTL {full} ms"
    );
    for _ in 0..10 {
        assert!(!limiter.check(&key, &login).await.unwrap().allowed);
    }
    let after: i64 = raw_command(&namespace, redis::cmd("PTTL").arg(&redis_key)).await;
    assert!(
        after <= full,
        "refusals do not extend the TTL ({after} > {full})"
    );

    limiter
        .check(&RateKey::login_ip("203.0.113.9".parse().unwrap()), &login)
        .await
        .unwrap();
    limiter
        .check(&RateKey::api_user(42), &rate("1000/hour"))
        .await
        .unwrap();
    // What the guide's `redis-cli KEYS "rate_limit:*"` shows (inside this test's namespace).
    let mut keys: Vec<String> = raw_command(
        &namespace,
        redis::cmd("KEYS").arg(format!("{}rate_limit:*", namespace.prefix)),
    )
    .await;
    keys.sort();
    let shown: Vec<&str> = keys.iter().map(|k| &k[namespace.prefix.len()..]).collect();
    assert_eq!(
        shown,
        [
            "rate_limit:api:user:42",
            "rate_limit:login:ip:203.0.113.9",
            "rate_limit:login:user:alice"
        ]
    );
    for key in &keys {
        let ttl: i64 = raw_command(&namespace, redis::cmd("PTTL").arg(key)).await;
        assert!(ttl > 0 && ttl <= 3_600_000, "{key}: PTTL {ttl}");
    }
}

/// The flag is the plain key the guide's incident response sets with `redis-cli`.
#[tokio::test]
async fn redis_cli_set_switches_emergency_mode() {
    let namespace = RedisNamespace::fresh().await;
    let limiter = namespace.limiter();
    let flag = format!("{}rate_limit_emergency_mode", namespace.prefix);
    assert_eq!(limiter.emergency_key(), flag);
    assert!(!limiter.emergency().await.unwrap());
    let _: () = raw_command(&namespace, redis::cmd("SET").arg(&flag).arg("1")).await;
    assert!(
        limiter.emergency().await.unwrap(),
        "SET rate_limit_emergency_mode 1 is on"
    );
    let _: () = raw_command(&namespace, redis::cmd("SET").arg(&flag).arg("0")).await;
    assert!(!limiter.emergency().await.unwrap(), "0 is off");
    limiter.set_emergency(true).await.unwrap();
    let value: String = raw_command(&namespace, redis::cmd("GET").arg(&flag)).await;
    assert_eq!(value, "1");
    limiter.set_emergency(false).await.unwrap();
    let exists: i64 = raw_command(&namespace, redis::cmd("EXISTS").arg(&flag)).await;
    assert_eq!(exists, 0, "off removes the key");
}

/// Without a namespace, as in production: the real `redis-cli` sets the flag and lists the keys
/// exactly as the deployment guide shows.
#[tokio::test]
async fn real_redis_cli_sees_the_production_key_names() {
    let server = PrivateRedis::start();
    let limiter = RedisRateLimiter::new(
        RedisConnection::open(&Secret::new(server.url()), &RedisOptions::default()).unwrap(),
    );
    let redis_cli = |args: &[&str]| -> String {
        let output = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &server.port().to_string()])
            .args(args)
            .output()
            .expect("redis-cli runs");
        assert!(output.status.success(), "redis-cli {args:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    assert_eq!(redis_cli(&["ping"]).trim(), "PONG");
    assert!(!limiter.emergency().await.unwrap());
    assert_eq!(
        redis_cli(&["SET", "rate_limit_emergency_mode", "1"]).trim(),
        "OK"
    );
    assert!(limiter.emergency().await.unwrap());
    limiter.set_emergency(false).await.unwrap();
    assert_eq!(
        redis_cli(&["EXISTS", "rate_limit_emergency_mode"]).trim(),
        "0"
    );

    limiter
        .check(&RateKey::login_user("alice"), &rate("5/minute"))
        .await
        .unwrap();
    limiter
        .check(&RateKey::api_user(42), &rate("1000/hour"))
        .await
        .unwrap();
    let mut listed: Vec<String> = redis_cli(&["KEYS", "rate_limit:*"])
        .lines()
        .map(str::to_owned)
        .collect();
    listed.sort();
    assert_eq!(
        listed,
        ["rate_limit:api:user:42", "rate_limit:login:user:alice"]
    );
}

/// Two instances (two limiters, two connections) sharing one Redis accept the limit between
/// them, however the requests interleave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_budget() {
    let namespace = RedisNamespace::fresh().await;
    let instances: [Arc<dyn RateLimiter>; 2] =
        [Arc::new(namespace.limiter()), Arc::new(namespace.limiter())];
    let key = RateKey::login_ip("198.51.100.20".parse().unwrap());
    let limit = rate("100/hour");
    let mut tasks = Vec::new();
    for task in 0..64 {
        let limiter = instances[task % 2].clone();
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let mut allowed = 0;
            for _ in 0..10 {
                allowed += u32::from(limiter.check(&key, &limit).await.unwrap().allowed);
            }
            allowed
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap();
    }
    assert_eq!(total, 100);
}

/// `SCRIPT FLUSH` (as after a restart or a failover) costs one reload, not a failure.
#[tokio::test]
async fn script_is_reloaded_after_script_flush() {
    let namespace = RedisNamespace::fresh().await;
    let limiter = namespace.limiter();
    let key = RateKey::login_user("erin");
    let login = rate("5/minute");
    assert_eq!(limiter.check(&key, &login).await.unwrap().remaining, 4);
    let _: () = raw_command(&namespace, &mut redis::cmd("SCRIPT").arg("FLUSH").clone()).await;
    assert_eq!(limiter.check(&key, &login).await.unwrap().remaining, 3);
    assert!(limiter.peek(&key).await.unwrap().is_some());
    let _: () = raw_command(&namespace, &mut redis::cmd("SCRIPT").arg("FLUSH").clone()).await;
    assert_eq!(limiter.peek(&key).await.unwrap().unwrap().used, 2);
}

/// Calls the limiter, bounded by one second whatever happens, and says how long it took.
async fn bounded_check(
    limiter: &RedisRateLimiter,
    key: &RateKey,
    rate: &Rate,
) -> (Result<bool, LimiterError>, Duration) {
    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(1), limiter.check(key, rate))
        .await
        .expect("a limiter call must not take a second");
    (result.map(|d| d.allowed), started.elapsed())
}

/// Waits (at most `within`) until the limiter answers again, counting the failed calls.
async fn until_recovered(
    limiter: &RedisRateLimiter,
    key: &RateKey,
    rate: &Rate,
    within: Duration,
) -> usize {
    let deadline = Instant::now() + within;
    let mut failures = 0;
    loop {
        match bounded_check(limiter, key, rate).await.0 {
            Ok(_) => return failures,
            Err(LimiterError::Unavailable(_)) => failures += 1,
            Err(other) => panic!("expected unavailable while recovering, got {other:?}"),
        }
        assert!(
            Instant::now() < deadline,
            "no recovery within {within:?} ({failures} failures)"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Redis killed: every call fails within the bound as unavailable, never hangs. Redis back on
/// the same port (empty, its script cache too): the same limiter answers again by itself, the
/// script is loaded again, and counts are exact.
#[tokio::test]
async fn dead_redis_fails_fast_and_the_limiter_recovers_without_being_rebuilt() {
    let mut server = PrivateRedis::start();
    let limiter = RedisRateLimiter::new(
        RedisConnection::open(&Secret::new(server.url()), &RedisOptions::default()).unwrap(),
    );
    let key = RateKey::login_user("frank");
    let login = rate("5/minute");
    for _ in 0..3 {
        assert!(limiter.check(&key, &login).await.unwrap().allowed);
    }

    server.kill();
    for _ in 0..5 {
        let (result, took) = bounded_check(&limiter, &key, &login).await;
        assert!(
            matches!(result, Err(LimiterError::Unavailable(_))),
            "{result:?}"
        );
        assert!(took < Duration::from_millis(600), "failed in {took:?}");
    }
    assert!(matches!(
        limiter.ping().await,
        Err(LimiterError::Unavailable(_))
    ));
    assert!(matches!(
        limiter.emergency().await,
        Err(LimiterError::Unavailable(_))
    ));

    server.restart();
    let failures = until_recovered(&limiter, &key, &login, Duration::from_secs(3)).await;
    assert!(
        failures <= 2,
        "{failures} calls failed after Redis was back"
    );
    // The restarted Redis is empty: the first call above began a new budget.
    for n in 1..5 {
        let decision = limiter.check(&key, &login).await.unwrap();
        assert!(decision.allowed, "request {n} after the restart");
    }
    assert!(!limiter.check(&key, &login).await.unwrap().allowed);
    limiter.ping().await.unwrap();
}

/// A hung Redis (SIGSTOP: the connection stays open, nothing answers) makes calls fail after the
/// command timeout instead of holding requests; when it runs again, so does the limiter.
#[tokio::test]
async fn hung_redis_times_out_fast_and_the_limiter_recovers() {
    let server = PrivateRedis::start();
    let options = RedisOptions {
        command_timeout: Duration::from_millis(200),
        connect_timeout: Duration::from_millis(200),
        ..RedisOptions::default()
    };
    let limiter =
        RedisRateLimiter::new(RedisConnection::open(&Secret::new(server.url()), &options).unwrap());
    let key = RateKey::api_user(9);
    let api = rate("1000/hour");
    assert!(limiter.check(&key, &api).await.unwrap().allowed);

    server.pause();
    for _ in 0..3 {
        let (result, took) = bounded_check(&limiter, &key, &api).await;
        assert!(
            matches!(result, Err(LimiterError::Unavailable(_))),
            "{result:?}"
        );
        assert!(
            took >= Duration::from_millis(150) && took < Duration::from_millis(600),
            "{took:?}"
        );
    }
    server.resume();
    until_recovered(&limiter, &key, &api, Duration::from_secs(3)).await;
    assert!(limiter.peek(&key).await.unwrap().unwrap().used >= 2);
}

/// Opening while Redis is down succeeds; calls fail fast until it starts, then work.
#[tokio::test]
async fn a_limiter_opened_before_redis_starts_works_once_it_does() {
    let mut server = PrivateRedis::start();
    server.kill();
    let limiter = RedisRateLimiter::new(
        RedisConnection::open(&Secret::new(server.url()), &RedisOptions::default()).unwrap(),
    );
    let key = RateKey::login_user("grace");
    let login = rate("5/minute");
    let (result, _) = bounded_check(&limiter, &key, &login).await;
    assert!(
        matches!(result, Err(LimiterError::Unavailable(_))),
        "{result:?}"
    );
    server.restart();
    until_recovered(&limiter, &key, &login, Duration::from_secs(3)).await;
}

/// `REDIS_PASSWORD` works beside the URL, a password in the URL works, and a wrong one is an
/// unavailable limiter (the fail mode applies), not a panic; no error shows the password.
#[tokio::test]
async fn password_in_the_url_or_given_apart() {
    let server = PrivateRedis::start_with(&["--requirepass", "s3cret-pw"]);
    let url = server.url();
    let with_password = |password: Option<&str>, url: &str| {
        let options = RedisOptions {
            password: password.map(Secret::new),
            ..RedisOptions::default()
        };
        RedisRateLimiter::new(RedisConnection::open(&Secret::new(url), &options).unwrap())
    };
    with_password(Some("s3cret-pw"), &url).ping().await.unwrap();
    let in_url = url.replace("redis://", "redis://:s3cret-pw@");
    with_password(None, &in_url).ping().await.unwrap();
    for limiter in [
        with_password(None, &url),
        with_password(Some("wrong"), &url),
    ] {
        let error = limiter.ping().await.unwrap_err();
        assert!(matches!(error, LimiterError::Unavailable(_)), "{error:?}");
        assert!(!error.to_string().contains("s3cret-pw"));
    }
}

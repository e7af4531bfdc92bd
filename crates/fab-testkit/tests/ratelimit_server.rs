//! Rate limits through a real server: login attempts per username and per IP, the per-IP
//! default, the per-principal API limit, 429 answers and their headers, forged forwarded
//! addresses that buy nothing, two servers sharing one Redis budget, emergency mode set with a
//! plain Redis command, and a Redis that dies and comes back.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use fab_testkit::ratelimit_conformance::PrivateRedis;
use fab_testkit::{ADMIN_PASSWORD, ADMIN_USERNAME, TestServer, TestServerOptions};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

fn strict(backend_settings: &[(&str, &str)]) -> TestServerOptions {
    let mut options = TestServerOptions::default()
        .set("RATE_LIMIT_LOGIN_ATTEMPTS", "3/minute")
        .set("RATE_LIMIT_DEFAULT", "100000/hour");
    for (k, v) in backend_settings {
        options = options.set(k, v);
    }
    options
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_attempts_are_limited_per_username_and_refill_with_time() {
    let server = TestServer::start_with(strict(&[])).await;
    let client = server.client();
    for attempt in 0..3 {
        let response = client.login("alice-unknown", "wrong-password").await;
        assert_eq!(response.status(), 401, "attempt {attempt}");
    }
    let refused = client.login("alice-unknown", "wrong-password").await;
    assert_eq!(refused.status(), 429);
    let retry: i64 = header(&refused, "retry-after").unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry), "{retry}");
    assert_eq!(
        header(&refused, "ratelimit-policy").as_deref(),
        Some("\"login\";q=3;w=60")
    );
    assert!(
        header(&refused, "ratelimit")
            .unwrap()
            .starts_with("\"login\";r=0;t=")
    );
    let page = refused.text().await.unwrap();
    assert!(page.contains("Too many login attempts"), "{page}");
    assert!(page.contains(r#"name="password""#), "the form stays usable");
    // Refused checks are not audited one by one, and hash nothing.
    let failures = server
        .store
        .recent_audit(50, Some("user.failed_login"))
        .await
        .unwrap();
    assert_eq!(failures.len(), 3);

    // The API login shares the budget.
    let api = client
        .post_json(
            "/api/v1/security/login",
            &json!({"username": "alice-unknown", "password": "x", "provider": "db"}),
            &[],
        )
        .await;
    assert_eq!(api.status(), 429);
    assert!(
        api.json::<Value>().await.unwrap()["message"]
            .as_str()
            .unwrap()
            .contains("Too many requests")
    );

    server.clock.advance(chrono::Duration::seconds(20));
    assert_eq!(
        client
            .login("alice-unknown", "wrong-password")
            .await
            .status(),
        401,
        "one attempt refilled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_attempts_are_limited_per_ip_whatever_the_username() {
    let server = TestServer::start_with(strict(&[])).await;
    let client = server.client();
    for name in ["u1", "u2", "u3"] {
        assert_eq!(client.login(name, "wrong-password").await.status(), 401);
    }
    assert_eq!(
        client.login("u4", "wrong-password").await.status(),
        429,
        "the IP's budget is spent"
    );
    // A forged X-Forwarded-For from an untrusted peer buys no new budget.
    for fake in ["203.0.113.1", "203.0.113.2", "198.51.100.77"] {
        let body = "username=u5&password=wrong".as_bytes().to_vec();
        let response = client
            .send(
                Method::POST,
                "/login/",
                &[
                    ("x-forwarded-for", fake),
                    ("x-real-ip", fake),
                    ("sec-fetch-site", "same-origin"),
                ],
                Some(("application/x-www-form-urlencoded", body)),
            )
            .await;
        assert_eq!(response.status(), 429, "forged {fake}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_limit_applies_per_ip_and_spares_health_and_assets() {
    let server =
        TestServer::start_with(TestServerOptions::default().set("RATE_LIMIT_DEFAULT", "5/minute"))
            .await;
    let client = server.client();
    for i in 0..5 {
        let response = client.get("/login/").await;
        assert_eq!(response.status(), 200, "request {i}");
        assert_eq!(
            header(&response, "ratelimit-policy").as_deref(),
            Some("\"default\";q=5;w=60")
        );
        let remaining = header(&response, "ratelimit").unwrap();
        assert!(
            remaining.starts_with(&format!("\"default\";r={};", 4 - i)),
            "{remaining}"
        );
    }
    let refused = client.get("/login/").await;
    assert_eq!(refused.status(), 429);
    assert!(header(&refused, "retry-after").is_some());
    assert_eq!(
        header(&refused, "x-frame-options").as_deref(),
        Some("DENY"),
        "refusals carry the security headers"
    );
    assert!(refused.text().await.unwrap().contains("Too many requests"));
    let api = client.get("/api/v1/security/me").await;
    assert_eq!(api.status(), 429);
    assert!(api.json::<Value>().await.unwrap()["message"].is_string());
    for exempt in ["/health", "/health/ready", "/static/fab.css"] {
        assert_eq!(client.get(exempt).await.status(), 200, "{exempt} is exempt");
    }
    server.clock.advance(chrono::Duration::minutes(1));
    assert_eq!(client.get("/login/").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_calls_are_limited_per_principal() {
    let server = TestServer::start_with(
        TestServerOptions::default().set("RATE_LIMIT_API_CALLS", "3/minute"),
    )
    .await;
    let client = server.client();
    let tokens: Value = client
        .post_json(
            "/api/v1/security/login",
            &json!({"username": ADMIN_USERNAME, "password": ADMIN_PASSWORD, "provider": "db"}),
            &[],
        )
        .await
        .json()
        .await
        .unwrap();
    let bearer = format!("Bearer {}", tokens["access_token"].as_str().unwrap());
    for i in 0..3 {
        let response = client
            .send_authorized(Method::GET, "/api/v1/security/me", &bearer)
            .await;
        assert_eq!(response.status(), 200, "call {i}");
        assert!(
            response
                .headers()
                .get_all("ratelimit-policy")
                .iter()
                .any(|v| v == "\"api\";q=3;w=60")
        );
    }
    let refused = client
        .send_authorized(Method::GET, "/api/v1/security/me", &bearer)
        .await;
    assert_eq!(refused.status(), 429);
    // The same principal's budget follows it to another client address? No: the key is the
    // principal, so a second client with the same token is refused too.
    let other = server.client();
    let refused = other
        .send_authorized(Method::GET, "/api/v1/security/me", &bearer)
        .await;
    assert_eq!(refused.status(), 429);
    // Pages are not API calls.
    assert_eq!(
        server
            .admin_client()
            .await
            .get("/users/list/")
            .await
            .status(),
        200
    );
}

fn redis_settings(url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("RATE_LIMIT_BACKEND", "redis".to_owned()),
        ("REDIS_URL", url.to_owned()),
        ("RATE_LIMIT_LOGIN_ATTEMPTS", "4/minute".to_owned()),
    ]
}

async fn start_on_redis(url: &str, extra: &[(&str, &str)]) -> TestServer {
    let mut options = TestServerOptions::default();
    for (k, v) in redis_settings(url) {
        options = options.set(k, &v);
    }
    for (k, v) in extra {
        options = options.set(k, v);
    }
    TestServer::start_with(options).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_redis_share_one_budget() {
    let redis = PrivateRedis::start();
    let a = start_on_redis(&redis.url(), &[]).await;
    let b = start_on_redis(&redis.url(), &[]).await;
    let (ca, cb) = (a.client(), b.client());
    let mut accepted = 0;
    for i in 0..12 {
        let client = if i % 2 == 0 { &ca } else { &cb };
        let status = client.login("shared-user", "wrong-password").await.status();
        if status != 429 {
            accepted += 1;
        }
    }
    assert_eq!(accepted, 4, "the limit holds across both instances");
    // The guide's troubleshooting command shows the keys.
    let mut raw = redis_connection(&redis.url()).await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("rate_limit:*")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(
        keys.contains(&"rate_limit:login:user:shared-user".to_owned()),
        "{keys:?}"
    );
    assert!(
        keys.contains(&"rate_limit:login:ip:127.0.0.1".to_owned()),
        "{keys:?}"
    );
    let ttl: i64 = redis::cmd("PTTL")
        .arg("rate_limit:login:user:shared-user")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(ttl > 0 && ttl <= 60_000, "keys expire: {ttl}");
}

async fn redis_connection(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what} did not happen within 5 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emergency_mode_set_with_redis_cli_reaches_every_server() {
    let redis = PrivateRedis::start();
    let settings = [("RATE_LIMIT_DEFAULT", "20/minute")];
    let a = start_on_redis(&redis.url(), &settings).await;
    let b = start_on_redis(&redis.url(), &settings).await;
    let output = std::process::Command::new("redis-cli")
        .args([
            "-p",
            &redis.port().to_string(),
            "SET",
            "rate_limit_emergency_mode",
            "1",
        ])
        .output()
        .expect("redis-cli runs");
    assert!(output.status.success());
    let started = Instant::now();
    for server in [&a, &b] {
        let client = server.client();
        eventually("emergency mode showing in /health/security", async || {
            let body: Value = client.get("/health/security").await.json().await.unwrap();
            body["rate_limit_emergency"] == true
        })
        .await;
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "within a second or so: {:?}",
        started.elapsed()
    );
    // 20/minute divided by 10: two requests per client IP across both servers.
    let mut accepted = 0;
    for i in 0..6 {
        let server = if i % 2 == 0 { &a } else { &b };
        if server.client().get("/login/").await.status() == 200 {
            accepted += 1;
        }
    }
    assert!(
        accepted <= 2,
        "emergency limits in force: {accepted} accepted"
    );
    let events = a
        .store
        .recent_audit(10, Some("security.emergency_mode"))
        .await
        .unwrap();
    assert!(!events.is_empty(), "the switch is audited");

    std::process::Command::new("redis-cli")
        .args([
            "-p",
            &redis.port().to_string(),
            "SET",
            "rate_limit_emergency_mode",
            "0",
        ])
        .output()
        .unwrap();
    let client = a.client();
    eventually("emergency mode off", async || {
        let body: Value = client.get("/health/security").await.json().await.unwrap();
        body["rate_limit_emergency"] == false
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_redis_falls_back_to_local_limits_and_recovers_by_itself() {
    let mut redis = PrivateRedis::start();
    let server = start_on_redis(&redis.url(), &[("RATE_LIMIT_FAIL_MODE", "local")]).await;
    let client = server.client();
    assert_eq!(client.login("before", "wrong-password").await.status(), 401);
    redis.kill();
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let started = Instant::now();
        let status = client.login("during", "wrong-password").await.status();
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "no request hangs on a dead Redis: {:?}",
            started.elapsed()
        );
        statuses.push(status.as_u16());
    }
    // The local limiter holds the same limit (4 per minute per username) meanwhile.
    assert_eq!(
        statuses.iter().filter(|s| **s == 401).count(),
        4,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        2,
        "{statuses:?}"
    );
    let fallback = server
        .store
        .recent_audit(10, Some("security.rate_limit_fallback"))
        .await
        .unwrap();
    assert_eq!(fallback.len(), 1, "logged once, not per request");

    redis.restart();
    eventually("the limiter returning to Redis", async || {
        let _ = client.login("after", "wrong-password").await;
        let mut raw = redis_connection(&redis.url()).await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("rate_limit:*")
            .query_async(&mut raw)
            .await
            .unwrap();
        keys.iter().any(|k| k == "rate_limit:login:user:after")
    })
    .await;
    let events = server
        .store
        .recent_audit(10, Some("security.rate_limit_fallback"))
        .await
        .unwrap();
    assert_eq!(events.len(), 2, "the recovery is audited too");
    assert_eq!(events[0].event.detail["state"], "recovered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_fail_mode_refuses_and_open_fail_mode_admits() {
    let mut redis = PrivateRedis::start();
    let closed = start_on_redis(&redis.url(), &[("RATE_LIMIT_FAIL_MODE", "closed")]).await;
    let open = start_on_redis(&redis.url(), &[("RATE_LIMIT_FAIL_MODE", "open")]).await;
    redis.kill();
    let response = closed.client().get("/login/").await;
    assert_eq!(response.status(), 503);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("temporarily unavailable")
    );
    assert_eq!(
        closed.client().get("/health").await.status(),
        200,
        "health stays reachable"
    );
    for _ in 0..6 {
        assert_eq!(
            open.client().login("x", "wrong-password").await.status(),
            401,
            "open admits"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checking_the_current_password_counts_as_a_credential_check() {
    let server = TestServer::start_with(strict(&[])).await;
    let admin = server.admin_client().await; // one login: 1 of 3 for this username and IP
    let mut statuses = Vec::new();
    for attempt in 0..3 {
        let response = admin
            .post_form(
                "/resetmypassword/form",
                &[
                    ("current_password", &format!("guess-{attempt}")),
                    ("password", "a-new-password-123"),
                    ("conf_password", "a-new-password-123"),
                ],
            )
            .await;
        statuses.push(response.status().as_u16());
    }
    assert_eq!(
        statuses,
        [422, 422, 429],
        "a stolen session cannot guess the password freely"
    );
}

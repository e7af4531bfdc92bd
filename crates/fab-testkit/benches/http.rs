//! HTTP benchmarks against a real fab server on loopback (a [`TestServer`] on a fresh SQLite
//! database), measured from a client in the same process: the form login with the test suite's
//! cheap argon2id parameters and with the production ones, an authenticated page, and the
//! liveness probe. Run with `cargo bench -p fab-testkit --bench http`; docs/PERFORMANCE.md holds
//! the numbers and how to read them.
//!
//! Every iteration checks the status it got, so a benchmark cannot quietly measure a redirect or
//! an error page instead of the work it names.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "benchmark code: a set-up or request that fails must stop the run, not be measured"
)]

use criterion::{Criterion, SamplingMode};
use fab_testkit::{ADMIN_PASSWORD, ADMIN_USERNAME, TestClient, TestServer, TestServerOptions};
use std::time::Duration;

/// argon2id memory cost (KiB) the production configuration uses (OWASP's 19 MiB).
const PRODUCTION_MEMORY_KIB: &str = "19456";
/// argon2id iterations the production configuration uses.
const PRODUCTION_ITERATIONS: &str = "2";

/// One login through the form on a client holding no cookie: verify the password, create a
/// session, record the login.
async fn fresh_login(client: &TestClient) {
    client.clear_cookies();
    let response = client.login(ADMIN_USERNAME, ADMIN_PASSWORD).await;
    assert_eq!(response.status(), 303, "login succeeds");
}

/// `GET path`, read to the end, which must answer 200.
async fn fetch(client: &TestClient, path: &str) {
    let response = client.get(path).await;
    assert_eq!(response.status(), 200, "GET {path}");
    let body = response.bytes().await.expect("read the response body");
    assert!(!body.is_empty(), "GET {path} has a body");
}

fn http(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    // The test servers' clock stands still, so no budget refills during a run: limits high
    // enough for any run keep every request measured through the rate limiter (its decisions
    // are part of each figure) without one being refused.
    let unrefused = || {
        TestServerOptions::default()
            .set("RATE_LIMIT_LOGIN_ATTEMPTS", "10000000/hour")
            .set("RATE_LIMIT_DEFAULT", "100000000/day")
    };
    let cheap = runtime.block_on(TestServer::start_with(unrefused()));
    let production = runtime.block_on(TestServer::start_with(
        unrefused()
            .set("PASSWORD_HASH_MEMORY_KIB", PRODUCTION_MEMORY_KIB)
            .set("PASSWORD_HASH_ITERATIONS", PRODUCTION_ITERATIONS),
    ));

    // Logins take milliseconds (production argon2id: tens of them), so flat sampling keeps the
    // group's time bounded instead of growing the iteration count per sample.
    let mut login = c.benchmark_group("login");
    login.sampling_mode(SamplingMode::Flat);
    for (name, server) in [
        ("test_argon2id", &cheap),
        ("production_argon2id", &production),
    ] {
        let client = server.client();
        let client = &client;
        login.bench_function(name, |b| {
            b.to_async(&runtime)
                .iter(|| async move { fresh_login(client).await });
        });
    }
    login.finish();

    let mut pages = c.benchmark_group("pages");
    let admin = runtime.block_on(cheap.admin_client());
    let admin = &admin;
    pages.bench_function("users_list_authenticated", |b| {
        b.to_async(&runtime)
            .iter(|| async move { fetch(admin, "/users/list/").await });
    });
    let anonymous = cheap.client();
    let anonymous = &anonymous;
    pages.bench_function("health", |b| {
        b.to_async(&runtime)
            .iter(|| async move { fetch(anonymous, "/health").await });
    });
    pages.finish();

    runtime.block_on(async {
        cheap.stop().await;
        production.stop().await;
    });
}

fn main() {
    // What criterion_group!/criterion_main! expand to, without their undocumented public fn.
    let mut criterion = Criterion::default()
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5))
        .sample_size(30)
        .configure_from_args();
    http(&mut criterion);
    criterion.final_summary();
}

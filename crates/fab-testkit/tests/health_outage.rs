//! Health endpoints while the database is away: liveness keeps answering, readiness says what is
//! not ready, and both recover by themselves when the database comes back — no restart.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use fab_testkit::database::postgres_admin_url;
use fab_testkit::{Backend, TestServer};
use sea_orm::{ConnectionTrait, Database};
use serde_json::Value;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn liveness_survives_a_database_outage_and_readiness_recovers_without_restart() {
    let server = TestServer::start_on(Backend::Postgres).await;
    let name = server
        .database_url
        .rsplit('/')
        .next()
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_owned();
    let admin = Database::connect(postgres_admin_url()).await.unwrap();
    let client = server.client();
    assert_eq!(client.get("/health/ready").await.status(), 200);

    // The database refuses connections and drops the ones it has.
    admin
        .execute_unprepared(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false"))
        .await
        .unwrap();
    admin
        .execute_unprepared(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
        ))
        .await
        .unwrap();
    let started = Instant::now();
    let live = client.get("/health").await;
    assert_eq!(
        live.status(),
        200,
        "liveness does not depend on the database"
    );
    let ready = client.get("/health/ready").await;
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "unavailable");
    assert_ne!(body["checks"]["database"], "ok");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "probes answer promptly: {:?}",
        started.elapsed()
    );
    // A page that needs the database says so with a 503, not a 500 or a hang.
    let page = client.get("/login/").await;
    assert_eq!(page.status(), 503, "{}", page.text().await.unwrap());

    admin
        .execute_unprepared(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true"))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if client.get("/health/ready").await.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "readiness did not recover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(client.get("/login/").await.status(), 200);
}

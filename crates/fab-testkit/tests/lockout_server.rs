//! Account lockout through a real server: progressive delays, the lock, answers that do not
//! reveal it, `security.lockout` in the audit trail, unlocking, and an attacker elsewhere who
//! cannot lock the owner out.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use fab_core::lockout::LockoutStore;
use fab_testkit::{ADMIN_PASSWORD, ADMIN_USERNAME, TestServer, TestServerOptions};
use reqwest::Method;

fn options() -> TestServerOptions {
    TestServerOptions::default()
        .set("LOCKOUT_THRESHOLD", "4")
        .set("LOCKOUT_DELAY_AFTER", "2")
        .set("LOCKOUT_DURATION", "600")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failures_delay_then_lock_the_account_without_saying_so() {
    let server = TestServer::start_with(options()).await;
    let client = server.client();
    assert_eq!(client.login(ADMIN_USERNAME, "wrong-1").await.status(), 401);
    assert_eq!(client.login(ADMIN_USERNAME, "wrong-2").await.status(), 401);
    // Two failures: the next attempt must wait a second, even with the right password.
    let early = client.login(ADMIN_USERNAME, ADMIN_PASSWORD).await;
    assert_eq!(
        early.status(),
        401,
        "too soon: refused like a wrong password"
    );
    assert!(
        early
            .text()
            .await
            .unwrap()
            .contains("Invalid login. Please try again.")
    );
    server.clock.advance(chrono::Duration::seconds(1));
    assert_eq!(client.login(ADMIN_USERNAME, "wrong-3").await.status(), 401);
    server.clock.advance(chrono::Duration::seconds(2));
    assert_eq!(client.login(ADMIN_USERNAME, "wrong-4").await.status(), 401);
    let locks = server
        .store
        .recent_audit(10, Some("security.lockout"))
        .await
        .unwrap();
    assert_eq!(locks.len(), 1, "the fourth failure locks and is audited");
    assert_eq!(locks[0].event.detail["locked_seconds"], 600);

    server.clock.advance(chrono::Duration::seconds(120));
    assert_eq!(
        client.login(ADMIN_USERNAME, ADMIN_PASSWORD).await.status(),
        401,
        "locked"
    );
    let reasons: Vec<String> = server
        .store
        .recent_audit(20, Some("user.failed_login"))
        .await
        .unwrap()
        .iter()
        .map(|e| e.event.detail["reason"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        reasons.contains(&"locked".to_owned()) && reasons.contains(&"delayed".to_owned()),
        "{reasons:?}"
    );

    // An operator unlocks (what `fab user-unlock` does).
    let database = fab_store::Database::connect(
        &fab_core::config::DatabaseUrl::parse(&server.database_url).unwrap(),
    )
    .await
    .unwrap();
    let admin = server
        .store
        .user_by_login(ADMIN_USERNAME)
        .await
        .unwrap()
        .unwrap();
    database.store().clear_lockout(admin.id).await.unwrap();
    assert_eq!(
        client.login(ADMIN_USERNAME, ADMIN_PASSWORD).await.status(),
        303
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_runs_out_by_itself() {
    let server = TestServer::start_with(options()).await;
    let client = server.client();
    for (i, wait) in [0, 0, 1, 2].into_iter().enumerate() {
        server.clock.advance(chrono::Duration::seconds(wait));
        assert_eq!(
            client
                .login(ADMIN_USERNAME, &format!("wrong-{i}"))
                .await
                .status(),
            401
        );
    }
    server.clock.advance(chrono::Duration::seconds(599));
    assert_eq!(
        client.login(ADMIN_USERNAME, ADMIN_PASSWORD).await.status(),
        401
    );
    server.clock.advance(chrono::Duration::seconds(1));
    assert_eq!(
        client.login(ADMIN_USERNAME, ADMIN_PASSWORD).await.status(),
        303
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attacker_elsewhere_cannot_lock_the_owner_out() {
    let server = TestServer::start_with(options().set("TRUSTED_PROXIES", "127.0.0.1")).await;
    // The owner logs in from their usual address (127.0.0.1, no forwarding).
    let owner = server.client();
    assert_eq!(
        owner.login(ADMIN_USERNAME, ADMIN_PASSWORD).await.status(),
        303
    );
    // An attacker behind the proxy, at 203.0.113.9, guesses until the account locks for them.
    let attacker = server.client();
    for (i, wait) in [0, 0, 1, 2, 4].into_iter().enumerate() {
        server.clock.advance(chrono::Duration::seconds(wait));
        let body = format!("username={ADMIN_USERNAME}&password=guess-{i}").into_bytes();
        let response = attacker
            .send(
                Method::POST,
                "/login/",
                &[
                    ("x-forwarded-for", "203.0.113.9"),
                    ("sec-fetch-site", "same-origin"),
                ],
                Some(("application/x-www-form-urlencoded", body)),
            )
            .await;
        assert_eq!(response.status(), 401);
    }
    assert_eq!(
        server
            .store
            .recent_audit(10, Some("security.lockout"))
            .await
            .unwrap()
            .len(),
        1
    );
    // Even the right password from the attacker's side is refused now ...
    let body = format!("username={ADMIN_USERNAME}&password={ADMIN_PASSWORD}").into_bytes();
    let response = attacker
        .send(
            Method::POST,
            "/login/",
            &[
                ("x-forwarded-for", "203.0.113.9"),
                ("sec-fetch-site", "same-origin"),
            ],
            Some(("application/x-www-form-urlencoded", body)),
        )
        .await;
    assert_eq!(response.status(), 401);
    // ... while the owner, from their known address, still gets in.
    let owner = server.client();
    assert_eq!(
        owner.login(ADMIN_USERNAME, ADMIN_PASSWORD).await.status(),
        303
    );
}

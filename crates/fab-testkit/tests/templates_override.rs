//! Template overrides from `FAB_TEMPLATE_FOLDER`, as Flask-AppBuilder users override theirs: an
//! override replaces the built-in page, keeps the layout, stays HTML-escaped; a page that fails
//! while rendering is a 500 that shows no internal detail and still carries the security headers.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use fab_testkit::{TestServer, TestServerOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_override_replaces_the_built_in_page_and_stays_escaped() {
    let folder = tempfile::tempdir().unwrap();
    std::fs::write(
        folder.path().join("index.html"),
        r#"{% extends "base.html" %}{% block content %}<h1>Our own home</h1><p>{{ app_name }}</p>{% endblock %}"#,
    )
    .unwrap();
    let server = TestServer::start_with(
        TestServerOptions::default()
            .set("FAB_TEMPLATE_FOLDER", &folder.path().display().to_string())
            .set("APP_NAME", "<b>Acme</b> tools"),
    )
    .await;
    let page = server.client().get("/").await.text().await.unwrap();
    assert!(page.contains("<h1>Our own home</h1>"), "{page}");
    assert!(
        page.contains("&lt;b&gt;Acme&lt;&#x2f;b&gt; tools"),
        "escaped: {page}"
    );
    assert!(!page.contains("<b>Acme</b>"));
    // Pages not overridden are the built-in ones.
    let login = server.client().get("/login/").await.text().await.unwrap();
    assert!(login.contains(r#"name="password""#));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_failing_to_render_is_a_plain_500_with_the_headers() {
    let folder = tempfile::tempdir().unwrap();
    std::fs::write(
        folder.path().join("index.html"),
        r#"{% extends "base.html" %}{% block content %}{{ range(1, 2, 3, 4, 5) }}{% endblock %}"#,
    )
    .unwrap();
    let server = TestServer::start_with(
        TestServerOptions::default()
            .set("FAB_TEMPLATE_FOLDER", &folder.path().display().to_string()),
    )
    .await;
    let response = server.client().get("/").await;
    assert_eq!(response.status(), 500);
    assert_eq!(response.headers()["x-frame-options"], "DENY");
    assert!(response.headers().contains_key("content-security-policy"));
    let body = response.text().await.unwrap();
    assert!(body.contains("Internal error"), "{body}");
    assert!(
        !body.contains("range") && !body.contains("index.html"),
        "no internal detail: {body}"
    );
}

//! The hardened edge against a real server: the headers on every kind of response, CSP nonces
//! and reports, HTTPS enforcement and HSTS, forwarded headers believed only from trusted
//! proxies, body limits, request timeouts, `/health/security` and security.txt.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use fab_testkit::{ADMIN_PASSWORD, ADMIN_USERNAME, TestServer, TestServerOptions};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

fn assert_security_headers(response: &reqwest::Response, what: &str) {
    let csp = header(response, "content-security-policy")
        .unwrap_or_else(|| panic!("{what}: no Content-Security-Policy"));
    assert!(csp.contains("default-src 'self'"), "{what}: {csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
    assert!(!csp.contains("unsafe-inline"), "{what}: {csp}");
    assert!(csp.contains("'nonce-"), "{what}: {csp}");
    for (name, value) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "strict-origin-when-cross-origin"),
        ("cross-origin-opener-policy", "same-origin"),
        ("x-xss-protection", "0"),
    ] {
        assert_eq!(
            header(response, name).as_deref(),
            Some(value),
            "{what}: {name}"
        );
        assert_eq!(
            response.headers().get_all(name).iter().count(),
            1,
            "{what}: one {name}"
        );
    }
    assert!(
        header(response, "permissions-policy")
            .unwrap()
            .contains("camera=()"),
        "{what}"
    );
    assert!(
        header(response, "strict-transport-security").is_none(),
        "{what}: no HSTS over plain HTTP"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_class_carries_the_security_headers() {
    let server =
        TestServer::start_with(TestServerOptions::default().set("MAX_BODY_FORM", "2048")).await;
    let anonymous = server.client();
    let admin = server.admin_client().await;

    let ok = anonymous.get("/login/").await;
    assert_eq!(ok.status(), 200);
    assert_security_headers(&ok, "200 page");
    assert_eq!(header(&ok, "cache-control").as_deref(), Some("no-store"));

    let redirect = anonymous.get("/users/list/").await;
    assert_eq!(redirect.status(), 303);
    assert_security_headers(&redirect, "redirect");

    let unauthorized = anonymous.get("/api/v1/security/me").await;
    assert_eq!(unauthorized.status(), 401);
    assert_security_headers(&unauthorized, "401");

    let forbidden = admin
        .post_form_with("/users/add/", &[], &[("sec-fetch-site", "cross-site")])
        .await;
    assert_eq!(forbidden.status(), 403);
    assert_security_headers(&forbidden, "403");

    let missing = admin.get("/nothing/here").await;
    assert_eq!(missing.status(), 404);
    assert_security_headers(&missing, "404");

    let big = vec![b'a'; 4096];
    let too_large = admin
        .send(
            Method::POST,
            "/users/add/",
            &[("sec-fetch-site", "same-origin")],
            Some(("application/x-www-form-urlencoded", big)),
        )
        .await;
    assert_eq!(too_large.status(), 413);
    assert_security_headers(&too_large, "413");

    let asset = anonymous.get("/static/fab.css").await;
    assert_eq!(asset.status(), 200);
    assert_security_headers(&asset, "static file");
    assert_eq!(
        header(&asset, "cache-control").as_deref(),
        Some("public, max-age=3600")
    );

    let api = admin.get("/api/v1/security/me").await;
    assert_eq!(api.status(), 200);
    assert_eq!(header(&api, "cache-control").as_deref(), Some("no-store"));
}

fn nonce_in_header(response: &reqwest::Response) -> String {
    let csp = header(response, "content-security-policy").unwrap();
    let start = csp.find("'nonce-").unwrap() + "'nonce-".len();
    csp[start..].split('\'').next().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_response_gets_a_fresh_nonce_that_the_page_uses() {
    let server = TestServer::start().await;
    let client = server.client();
    let first = client.get("/login/").await;
    let first_nonce = nonce_in_header(&first);
    let page = first.text().await.unwrap();
    assert!(
        page.contains(&format!(
            r#"<script src="/static/fab.js" nonce="{first_nonce}""#
        )),
        "{page}"
    );
    assert!(page.contains(&format!(r#"nonce="{first_nonce}">"#)));
    let second = client.get("/login/").await;
    let second_nonce = nonce_in_header(&second);
    assert_ne!(first_nonce, second_nonce);
    assert!(first_nonce.len() >= 22, "at least 128 bits: {first_nonce}");
    // The nonce reaches script-src and style-src, nothing else.
    let csp = header(&second, "content-security-policy").unwrap();
    assert_eq!(csp.matches("'nonce-").count(), 2, "{csp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_policy_and_report_only_mode() {
    let server = TestServer::start_with(
        TestServerOptions::default()
            .set(
                "CSP_POLICY",
                "default-src 'self'; script-src 'self' https://cdn.jsdelivr.net; img-src 'self' data: https:",
            )
            .set("CSP_REPORT_ONLY", "true"),
    )
    .await;
    let response = server.client().get("/login/").await;
    assert!(header(&response, "content-security-policy").is_none());
    let csp = header(&response, "content-security-policy-report-only").unwrap();
    assert!(
        csp.starts_with("default-src 'self'; script-src 'self' https://cdn.jsdelivr.net 'nonce-"),
        "{csp}"
    );
    assert!(csp.contains("img-src 'self' data: https:"), "{csp}");
    assert!(
        csp.contains("report-uri /csp-report; report-to csp-endpoint"),
        "{csp}"
    );
    assert_eq!(
        header(&response, "reporting-endpoints").as_deref(),
        Some(r#"csp-endpoint="/csp-report""#)
    );

    let off =
        TestServer::start_with(TestServerOptions::default().set("ENABLE_CSP_HEADERS", "false"))
            .await;
    let response = off.client().get("/login/").await;
    assert!(header(&response, "content-security-policy").is_none());
    assert!(
        header(&response, "x-frame-options").is_some(),
        "other headers stay"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn csp_reports_are_recorded_bounded_and_validated() {
    let server = TestServer::start().await;
    let browser = server.client();
    let legacy = json!({"csp-report": {
        "document-uri": format!("{}/login/", server.url),
        "violated-directive": "script-src-elem",
        "blocked-uri": "inline",
        "line-number": 12
    }});
    let response = browser
        .send(
            Method::POST,
            "/csp-report",
            &[],
            Some(("application/csp-report", legacy.to_string().into_bytes())),
        )
        .await;
    assert_eq!(response.status(), 204);
    let modern = json!([{"type": "csp-violation", "age": 0, "url": "x", "body": {
        "documentURL": "https://app/x", "effectiveDirective": "img-src", "blockedURL": "https://evil.example/p.png", "disposition": "enforce"
    }}]);
    // The Reporting API posts cross-origin-style, without cookies; it must still be accepted.
    let response = browser
        .send(
            Method::POST,
            "/csp-report",
            &[("sec-fetch-site", "cross-site")],
            Some(("application/reports+json", modern.to_string().into_bytes())),
        )
        .await;
    assert_eq!(response.status(), 204);
    let events = server
        .store
        .recent_audit(10, Some("security.csp_violation"))
        .await
        .unwrap();
    assert_eq!(events.len(), 2);
    let details: Vec<&Value> = events.iter().map(|e| &e.event.detail).collect();
    assert!(
        details
            .iter()
            .any(|d| d["directive"] == "script-src-elem" && d["line"] == 12)
    );
    assert!(
        details
            .iter()
            .any(|d| d["blocked"] == "https://evil.example/p.png")
    );
    assert_eq!(events[0].event.origin.ip.as_deref(), Some("127.0.0.1"));

    for (content_type, body, status) in [
        ("text/plain", b"{}".to_vec(), 400),
        ("application/csp-report", b"{not json".to_vec(), 400),
        ("application/csp-report", b"{\"other\": 1}".to_vec(), 400),
        ("application/csp-report", vec![b' '; 64 * 1024], 413),
    ] {
        let response = browser
            .send(Method::POST, "/csp-report", &[], Some((content_type, body)))
            .await;
        assert_eq!(response.status(), status, "{content_type}");
    }

    // A flood stops being recorded after the per-minute budget.
    let mut refused = 0;
    for _ in 0..70 {
        let response = browser
            .send(
                Method::POST,
                "/csp-report",
                &[],
                Some(("application/csp-report", legacy.to_string().into_bytes())),
            )
            .await;
        if response.status() == 429 {
            refused += 1;
        }
    }
    assert!(refused >= 10, "{refused} refused");
    let recorded = server
        .store
        .recent_audit(500, Some("security.csp_violation"))
        .await
        .unwrap();
    assert_eq!(recorded.len(), 60, "the budget is 60 a minute");
    server.clock.advance(chrono::Duration::minutes(1));
    let response = browser
        .send(
            Method::POST,
            "/csp-report",
            &[],
            Some(("application/csp-report", legacy.to_string().into_bytes())),
        )
        .await;
    assert_eq!(response.status(), 204, "the budget refills with time");
}

async fn last_login_ip(server: &TestServer) -> Option<String> {
    let events = server
        .store
        .recent_audit(1, Some("user.login"))
        .await
        .unwrap();
    events[0].event.origin.ip.clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_forwarded_headers_from_an_untrusted_peer_are_ignored() {
    let server =
        TestServer::start_with(TestServerOptions::default().set("ENFORCE_HTTPS", "true")).await;
    let client = server.client();
    let response = client
        .post_form_with(
            "/login/",
            &[("username", ADMIN_USERNAME), ("password", ADMIN_PASSWORD)],
            &[
                ("x-forwarded-for", "203.0.113.9"),
                ("x-real-ip", "203.0.113.9"),
                ("x-forwarded-proto", "https"),
            ],
        )
        .await;
    assert_eq!(
        response.status(),
        403,
        "still plain HTTP: a forged proto buys nothing"
    );
    let response = client
        .send(
            Method::GET,
            "/login/",
            &[("x-forwarded-proto", "https")],
            None,
        )
        .await;
    assert_eq!(response.status(), 308);

    let server = TestServer::start().await;
    let client = server.client();
    let response = client
        .post_form_with(
            "/login/",
            &[("username", ADMIN_USERNAME), ("password", ADMIN_PASSWORD)],
            &[
                ("x-forwarded-for", "203.0.113.9"),
                ("x-real-ip", "203.0.113.9"),
            ],
        )
        .await;
    assert_eq!(response.status(), 303);
    assert_eq!(last_login_ip(&server).await.as_deref(), Some("127.0.0.1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_chain_is_resolved_and_its_scheme_believed() {
    let server = TestServer::start_with(
        TestServerOptions::default()
            .set("TRUSTED_PROXIES", "127.0.0.1, 10.0.0.0/8")
            .set("ENFORCE_HTTPS", "true"),
    )
    .await;
    let client = server.client();
    // The client wrote 6.6.6.6 itself; the edge proxy appended the real peer 198.51.100.7; an
    // inner proxy at 10.0.0.3 appended its own address.
    let body = format!("username={ADMIN_USERNAME}&password={ADMIN_PASSWORD}").into_bytes();
    let response = client
        .send(
            Method::POST,
            "/login/",
            &[
                ("x-forwarded-for", "6.6.6.6, 198.51.100.7, 10.0.0.3"),
                ("x-forwarded-proto", "https"),
                ("x-forwarded-host", "app.example"),
                ("origin", "https://app.example"),
            ],
            Some(("application/x-www-form-urlencoded", body)),
        )
        .await;
    assert_eq!(response.status(), 303);
    assert_eq!(
        last_login_ip(&server).await.as_deref(),
        Some("198.51.100.7")
    );
    assert_eq!(
        header(&response, "strict-transport-security").as_deref(),
        Some("max-age=31536000; includeSubDomains"),
        "HTTPS through a trusted proxy gets HSTS"
    );
    // Plain HTTP through the proxy is redirected to the public host.
    let response = client
        .send(
            Method::GET,
            "/users/list/?page=2",
            &[
                ("x-forwarded-proto", "http"),
                ("x-forwarded-host", "app.example"),
            ],
            None,
        )
        .await;
    assert_eq!(response.status(), 308);
    assert_eq!(
        header(&response, "location").as_deref(),
        Some("https://app.example/users/list/?page=2")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_is_redirected_or_refused_except_health_probes() {
    let server =
        TestServer::start_with(TestServerOptions::default().set("ENFORCE_HTTPS", "true")).await;
    let client = server.client();
    let response = client.get("/login/?next=%2Fusers%2F").await;
    assert_eq!(response.status(), 308);
    assert_eq!(
        header(&response, "location").unwrap(),
        format!("https://{}/login/?next=%2Fusers%2F", server.addr)
    );
    assert_security_headers(&response, "308");
    let response = client.send(Method::HEAD, "/", &[], None).await;
    assert_eq!(response.status(), 308);
    let response = client
        .post_form(
            "/login/",
            &[("username", "admin"), ("password", ADMIN_PASSWORD)],
        )
        .await;
    assert_eq!(response.status(), 403);
    assert!(response.text().await.unwrap().contains("HTTPS is required"));
    assert_eq!(client.get("/health").await.status(), 200);
    assert_eq!(client.get("/health/ready").await.status(), 200);
    // A Host that could inject a header or redirect elsewhere is not used.
    let response = client
        .send(Method::GET, "/", &[("host", "evil.example/x")], None)
        .await;
    assert_eq!(response.status(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_limits_follow_the_route_class() {
    let server = TestServer::start_with(
        TestServerOptions::default()
            .set("MAX_BODY_FORM", "4096")
            .set("MAX_BODY_API", "8192"),
    )
    .await;
    let client = server.client();
    let form = format!("username=admin&password={}", "p".repeat(5000)).into_bytes();
    let response = client
        .send(
            Method::POST,
            "/login/",
            &[("sec-fetch-site", "same-origin")],
            Some(("application/x-www-form-urlencoded", form)),
        )
        .await;
    assert_eq!(response.status(), 413);
    // The same size is fine for the API, whose limit is larger ...
    let api = json!({"username": "admin", "password": "p".repeat(5000), "provider": "db"});
    let response = client.post_json("/api/v1/security/login", &api, &[]).await;
    assert_eq!(response.status(), 401);
    // ... up to its own limit.
    let api = json!({"username": "admin", "password": "p".repeat(9000), "provider": "db"});
    let response = client.post_json("/api/v1/security/login", &api, &[]).await;
    assert_eq!(response.status(), 413);
    assert_eq!(
        response.json::<Value>().await.unwrap()["message"],
        "Request body too large"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_takes_too_long_gets_408() {
    let server =
        TestServer::start_with(TestServerOptions::default().set("REQUEST_TIMEOUT", "1")).await;
    let mut stream = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    // Headers promise a body that never comes.
    let head = format!(
        "POST /login/ HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nusername=a",
        server.addr
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut answer))
        .await
        .expect("the server answers instead of hanging")
        .unwrap();
    let text = String::from_utf8_lossy(&answer[..read]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_security_reports_what_is_in_force_to_whom_it_may() {
    let server = TestServer::start().await;
    let response = server.client().get("/health/security").await;
    assert_eq!(
        response.status(),
        200,
        "loopback is a trusted network by default"
    );
    let body: Value = response.json().await.unwrap();
    for key in [
        "mfa_enabled",
        "rate_limiting",
        "https_enforced",
        "csp_enabled",
    ] {
        assert!(body[key].is_boolean(), "{key}: {body}");
    }
    assert_eq!(body["csp_enabled"], true);
    assert_eq!(body["https_enforced"], false);
    assert_eq!(body["session_timeout"], 3600);
    assert_eq!(body["session_cookie_httponly"], true);
    let text = body.to_string();
    assert!(!text.contains("test-secret-key"), "no secret: {text}");

    let elsewhere =
        TestServer::start_with(TestServerOptions::default().set("TRUSTED_NETWORKS", "10.0.0.0/8"))
            .await;
    let response = elsewhere.client().get("/health/security").await;
    assert_eq!(response.status(), 403);

    let authenticated = TestServer::start_with(
        TestServerOptions::default().set("HEALTH_SECURITY_ACCESS", "authenticated"),
    )
    .await;
    assert_eq!(
        authenticated
            .client()
            .get("/health/security")
            .await
            .status(),
        401
    );
    let admin = authenticated.admin_client().await;
    assert_eq!(admin.get("/health/security").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_txt_follows_rfc_9116_and_error_pages_point_to_it() {
    let none = TestServer::start().await;
    assert_eq!(
        none.client()
            .get("/.well-known/security.txt")
            .await
            .status(),
        404
    );

    let server = TestServer::start_with(
        TestServerOptions::default()
            .set(
                "SECURITY_CONTACT",
                "mailto:security@company.com, https://company.com/report",
            )
            .set("SECURITY_POLICY_URL", "https://company.com/disclosure")
            .set("SECURITY_TXT_EXPIRES", "2027-06-30T00:00:00Z"),
    )
    .await;
    let response = server.client().get("/.well-known/security.txt").await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        header(&response, "content-type").as_deref(),
        Some("text/plain; charset=utf-8")
    );
    let text = response.text().await.unwrap();
    assert!(
        text.contains("Contact: mailto:security@company.com\n"),
        "{text}"
    );
    assert!(
        text.contains("Contact: https://company.com/report\n"),
        "{text}"
    );
    assert!(text.contains("Expires: 2027-06-30T00:00:00Z\n"), "{text}");
    assert!(
        text.contains("Policy: https://company.com/disclosure\n"),
        "{text}"
    );

    let page = server
        .client()
        .get("/no/such/page")
        .await
        .text()
        .await
        .unwrap();
    assert!(page.contains("security@company.com"), "{page}");

    let defaulted = TestServer::start_with(
        TestServerOptions::default().set("SECURITY_CONTACT", "mailto:s@x.io"),
    )
    .await;
    let text = defaulted
        .client()
        .get("/.well-known/security.txt")
        .await
        .text()
        .await
        .unwrap();
    let expected = (fab_testkit::server::test_epoch() + chrono::Duration::days(180))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert!(text.contains(&format!("Expires: {expected}")), "{text}");
}

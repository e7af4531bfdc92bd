//! Login, sessions, revocation, permissions and the API, against a real server on SQLite and on
//! PostgreSQL, tried the way an attacker would try them.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is a failed test"
)]

use chrono::Duration;
use fab_core::rbac::{Grant, PUBLIC_ROLE};
use fab_testkit::{ADMIN_PASSWORD, ADMIN_USERNAME, Backend, TestClient, TestServer};
use serde_json::{Value, json};

const USER_PASSWORD: &str = "user-password-for-tests-9";

fn location(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

fn session_cookie(client: &TestClient) -> Option<String> {
    client.cookie("fab_session")
}

/// Creates a user through the admin pages; returns its id.
async fn create_user(
    server: &TestServer,
    admin: &TestClient,
    username: &str,
    roles: &[&str],
) -> i64 {
    let mut fields: Vec<(String, String)> = vec![
        ("first_name".into(), "Test".into()),
        ("last_name".into(), username.into()),
        ("username".into(), username.into()),
        ("email".into(), format!("{username}@example.com")),
        ("active".into(), "y".into()),
        ("password".into(), USER_PASSWORD.into()),
        ("conf_password".into(), USER_PASSWORD.into()),
    ];
    for role in roles {
        let role = server
            .store
            .role_by_name(role)
            .await
            .unwrap()
            .expect("role exists");
        fields.push(("roles".into(), role.id.0.to_string()));
    }
    let borrowed: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let response = admin.post_form("/users/add/", &borrowed).await;
    assert_eq!(
        response.status(),
        303,
        "user creation redirects: {}",
        response.text().await.unwrap_or_default()
    );
    let user = server
        .store
        .user_by_login(username)
        .await
        .unwrap()
        .expect("user created");
    user.id.0
}

/// A role "Viewer" that may list users and see the security menu, but nothing else.
async fn viewer_role(server: &TestServer, admin: &TestClient) {
    let response = admin.post_form("/roles/add/", &[("name", "Viewer")]).await;
    assert_eq!(response.status(), 303);
    let role = server.store.role_by_name("Viewer").await.unwrap().unwrap();
    let wanted = [
        Grant::new("can_list", "UserDBModelView"),
        Grant::new("menu_access", "Security"),
        Grant::new("menu_access", "List Users"),
        Grant::new("can_userinfo", "UserDBModelView"),
    ];
    let ids: Vec<String> = server
        .store
        .list_permission_views()
        .await
        .unwrap()
        .into_iter()
        .filter(|pv| wanted.contains(&pv.grant))
        .map(|pv| pv.id.0.to_string())
        .collect();
    assert_eq!(ids.len(), wanted.len());
    let mut fields = vec![("name", "Viewer")];
    fields.extend(ids.iter().map(|id| ("permissions", id.as_str())));
    let response = admin
        .post_form(&format!("/roles/edit/{}", role.id.0), &fields)
        .await;
    assert_eq!(response.status(), 303);
}

async fn login_and_logout(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let client = server.client();
    let response = client.get("/users/list/").await;
    assert_eq!(response.status(), 303);
    assert_eq!(location(&response), "/login/?next=%2Fusers%2Flist%2F");

    let page = client.get("/login/").await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains(r#"name="username""#) && html.contains(r#"name="password""#));

    let response = client
        .post_form(
            "/login/",
            &[
                ("username", "ADMIN"),
                ("password", ADMIN_PASSWORD),
                ("next", "/users/list/"),
            ],
        )
        .await;
    assert_eq!(response.status(), 303, "login by case-insensitive username");
    assert_eq!(location(&response), "/users/list/");
    let set_cookie = response
        .headers()
        .get("set-cookie")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        set_cookie.contains("HttpOnly") && set_cookie.contains("SameSite=Lax"),
        "{set_cookie}"
    );
    let list = client.get("/users/list/").await;
    assert_eq!(list.status(), 200);
    assert_eq!(list.headers().get("cache-control").unwrap(), "no-store");
    assert!(list.text().await.unwrap().contains(ADMIN_USERNAME));

    let admin = server
        .store
        .user_by_login(ADMIN_USERNAME)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(admin.login_count, 1);
    assert!(admin.last_login.is_some());

    let response = client.post_form("/logout/", &[]).await;
    assert_eq!(response.status(), 303);
    assert!(
        session_cookie(&client).is_none(),
        "logout clears the cookie"
    );
    assert_eq!(client.get("/users/list/").await.status(), 303);

    let events: Vec<String> = server
        .store
        .recent_audit(10, None)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event.kind.name().to_owned())
        .collect();
    assert!(events.contains(&"user.login".to_owned()), "{events:?}");
    assert!(events.contains(&"user.logout".to_owned()), "{events:?}");
}

async fn login_by_email(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let admin = server.admin_client().await;
    create_user(&server, &admin, "carol", &[PUBLIC_ROLE]).await;
    let client = server.client();
    let response = client.login("Carol@Example.com", USER_PASSWORD).await;
    assert_eq!(response.status(), 303);
}

async fn failed_logins_look_alike_and_are_counted(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let admin = server.admin_client().await;
    let id = create_user(&server, &admin, "dave", &[PUBLIC_ROLE]).await;
    let disable = admin.post_form(&format!("/users/disable/{id}"), &[]).await;
    assert_eq!(disable.status(), 303);

    let client = server.client();
    let wrong = client.login(ADMIN_USERNAME, "not-the-password").await;
    let wrong_status = wrong.status();
    let wrong_body = wrong.text().await.unwrap();
    let unknown = client.login("nobody-here", "not-the-password").await;
    let unknown_status = unknown.status();
    let unknown_body = unknown.text().await.unwrap();
    let inactive = client.login("dave", USER_PASSWORD).await;
    let inactive_status = inactive.status();
    let inactive_body = inactive.text().await.unwrap();
    assert_eq!(wrong_status, 401);
    assert_eq!(unknown_status, 401);
    assert_eq!(inactive_status, 401);
    let message = "Invalid login. Please try again.";
    for body in [&wrong_body, &unknown_body, &inactive_body] {
        assert!(body.contains(message));
    }
    assert!(session_cookie(&client).is_none());

    let admin_user = server
        .store
        .user_by_login(ADMIN_USERNAME)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(admin_user.fail_login_count, 1);
    let failures = server
        .store
        .recent_audit(10, Some("user.failed_login"))
        .await
        .unwrap();
    assert_eq!(failures.len(), 3);
    // The successful login resets the counter, as Flask-AppBuilder does.
    assert_eq!(
        client.login(ADMIN_USERNAME, ADMIN_PASSWORD).await.status(),
        303
    );
    let admin_user = server
        .store
        .user_by_login(ADMIN_USERNAME)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(admin_user.fail_login_count, 0);
}

async fn session_idle_and_absolute_expiry(backend: Backend) {
    let server = TestServer::start_with(
        fab_testkit::TestServerOptions::on(backend)
            .set("SESSION_TIMEOUT", "600")
            .set("PERMANENT_SESSION_LIFETIME", "3600"),
    )
    .await;
    let client = server.admin_client().await;
    // Used every 9 minutes, the session lives on ...
    for _ in 0..5 {
        server.clock.advance(Duration::minutes(9));
        assert_eq!(client.get("/users/list/").await.status(), 200);
    }
    // ... until its absolute lifetime (45 minutes used so far, 60 allowed).
    server.clock.advance(Duration::minutes(9));
    assert_eq!(client.get("/users/list/").await.status(), 200);
    server.clock.advance(Duration::minutes(7));
    let response = client.get("/users/list/").await;
    assert_eq!(response.status(), 303, "absolute lifetime over");
    assert!(
        session_cookie(&client).is_none(),
        "a dead session's cookie is cleared"
    );

    let client = server.admin_client().await;
    server.clock.advance(Duration::minutes(10));
    assert_eq!(
        client.get("/users/list/").await.status(),
        303,
        "idle for the whole timeout"
    );
}

async fn session_id_changes_at_login(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let client = server.admin_client().await;
    let first = session_cookie(&client).unwrap();
    let response = client.login(ADMIN_USERNAME, ADMIN_PASSWORD).await;
    assert_eq!(response.status(), 303);
    let second = session_cookie(&client).unwrap();
    assert_ne!(first, second);
    // The old id is dead: an attacker who planted or saw it gets nothing.
    let attacker = server.client();
    attacker.set_cookie("fab_session", &first);
    assert_eq!(attacker.get("/users/list/").await.status(), 303);
    // Only the hash is stored, never the cookie value.
    let records = server
        .sessions
        .list_for_user(
            server
                .store
                .user_by_login(ADMIN_USERNAME)
                .await
                .unwrap()
                .unwrap()
                .id,
        )
        .await
        .unwrap();
    assert_eq!(records.len(), 1);
    assert_ne!(records[0].id_hash.as_str(), second);
}

async fn forged_and_tampered_cookies_are_refused(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let client = server.admin_client().await;
    let genuine = session_cookie(&client).unwrap();
    let mut tampered = genuine.clone().into_bytes();
    tampered[5] = if tampered[5] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    for forged in [
        tampered.as_str(),
        "admin",
        "",
        &"A".repeat(43),
        "../../etc/passwd",
        &"x".repeat(5000),
    ] {
        let attacker = server.client();
        attacker.set_cookie("fab_session", forged);
        let response = attacker.get("/users/list/").await;
        assert_eq!(response.status(), 303, "forged cookie {forged:.20}");
    }
    let attacker = server.client();
    attacker.set_cookie("fab_flash", "SGFja2Vk.forged");
    let page = attacker.get("/login/").await.text().await.unwrap();
    assert!(!page.contains("Hacked"));
}

async fn revocation_by_every_web_path(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let admin = server.admin_client().await;
    let id = create_user(&server, &admin, "erin", &["Admin"]).await;

    // Disabling ends the sessions.
    let erin = server.client();
    assert_eq!(erin.login("erin", USER_PASSWORD).await.status(), 303);
    assert_eq!(erin.get("/users/list/").await.status(), 200);
    assert_eq!(
        admin
            .post_form(&format!("/users/disable/{id}"), &[])
            .await
            .status(),
        303
    );
    assert_eq!(erin.get("/users/list/").await.status(), 303);
    assert_eq!(
        admin
            .post_form(&format!("/users/enable/{id}"), &[])
            .await
            .status(),
        303
    );

    // An administrator's password reset ends them.
    let erin = server.client();
    assert_eq!(erin.login("erin", USER_PASSWORD).await.status(), 303);
    let new_password = "a-brand-new-password-7";
    let reset = admin
        .post_form(
            &format!("/users/resetpasswords/{id}"),
            &[("password", new_password), ("conf_password", new_password)],
        )
        .await;
    assert_eq!(reset.status(), 303);
    assert_eq!(erin.get("/users/list/").await.status(), 303);
    assert_eq!(erin.login("erin", USER_PASSWORD).await.status(), 401);

    // "End all sessions" ends them.
    let erin = server.client();
    assert_eq!(erin.login("erin", new_password).await.status(), 303);
    let cleared = admin
        .post_form(&format!("/users/clearsessions/{id}"), &[])
        .await;
    assert_eq!(cleared.status(), 303);
    assert_eq!(erin.get("/users/list/").await.status(), 303);

    // Changing one's own password ends the other sessions and keeps this one.
    let laptop = server.client();
    let phone = server.client();
    assert_eq!(laptop.login("erin", new_password).await.status(), 303);
    assert_eq!(phone.login("erin", new_password).await.status(), 303);
    let third = "third-password-for-erin";
    let changed = laptop
        .post_form(
            "/resetmypassword/form",
            &[
                ("current_password", new_password),
                ("password", third),
                ("conf_password", third),
            ],
        )
        .await;
    assert_eq!(changed.status(), 303);
    assert_eq!(laptop.get("/users/list/").await.status(), 200);
    assert_eq!(phone.get("/users/list/").await.status(), 303);

    // The store path used by `fab clear-sessions` ends them too.
    let ended = server
        .sessions
        .delete_for_user(fab_core::user::UserId(id))
        .await
        .unwrap();
    assert_eq!(ended, 1);
    assert_eq!(laptop.get("/users/list/").await.status(), 303);

    let kinds: Vec<String> = server
        .store
        .recent_audit(50, None)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event.kind.name().to_owned())
        .collect();
    for kind in [
        "admin.user_create",
        "admin.user_disable",
        "admin.user_enable",
        "admin.password_reset",
        "admin.session_revoke",
        "user.password_change",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "{kind} audited: {kinds:?}");
    }
}

/// Every admin route the Viewer role does not grant, with a method and a request that reaches its
/// access check.
fn admin_routes(user_id: i64, role_id: i64) -> Vec<(&'static str, String)> {
    vec![
        ("GET", format!("/users/show/{user_id}")),
        ("GET", "/users/add/".into()),
        ("POST", "/users/add/".into()),
        ("GET", format!("/users/edit/{user_id}")),
        ("POST", format!("/users/edit/{user_id}")),
        ("POST", format!("/users/delete/{user_id}")),
        ("POST", format!("/users/disable/{user_id}")),
        ("POST", format!("/users/enable/{user_id}")),
        ("POST", format!("/users/clearsessions/{user_id}")),
        ("GET", format!("/users/resetpasswords/{user_id}")),
        ("POST", format!("/users/resetpasswords/{user_id}")),
        ("GET", "/roles/list/".into()),
        ("GET", format!("/roles/show/{role_id}")),
        ("GET", "/roles/add/".into()),
        ("POST", "/roles/add/".into()),
        ("GET", format!("/roles/edit/{role_id}")),
        ("POST", format!("/roles/edit/{role_id}")),
        ("POST", format!("/roles/delete/{role_id}")),
        ("GET", "/permissions/list/".into()),
        ("GET", "/viewmenus/list/".into()),
        ("GET", "/permissionviews/list/".into()),
        ("GET", format!("/api/v1/security/users/{user_id}")),
    ]
}

async fn request(client: &TestClient, method: &str, path: &str) -> reqwest::Response {
    match method {
        "GET" => client.get(path).await,
        _ => client.post_form(path, &[("name", "x")]).await,
    }
}

async fn every_admin_route_checks_permissions(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let admin = server.admin_client().await;
    viewer_role(&server, &admin).await;
    let victim = create_user(&server, &admin, "victim", &["Admin"]).await;
    create_user(&server, &admin, "viewer", &["Viewer"]).await;
    let role_id = server
        .store
        .role_by_name("Admin")
        .await
        .unwrap()
        .unwrap()
        .id
        .0;

    let anonymous = server.client();
    let viewer = server.client();
    assert_eq!(viewer.login("viewer", USER_PASSWORD).await.status(), 303);
    for (method, path) in admin_routes(victim, role_id) {
        let response = request(&anonymous, method, &path).await;
        let expected = if path.starts_with("/api/") { 401 } else { 303 };
        assert_eq!(response.status(), expected, "anonymous {method} {path}");
        let response = request(&viewer, method, &path).await;
        assert_eq!(response.status(), 403, "viewer {method} {path}");
    }
    // What the viewer's role grants works, and the navigation shows only that.
    assert_eq!(anonymous.get("/users/list/").await.status(), 303);
    assert_eq!(anonymous.get("/api/v1/security/users/").await.status(), 401);
    assert_eq!(viewer.get("/api/v1/security/users/").await.status(), 200);
    let list = viewer.get("/users/list/").await;
    assert_eq!(list.status(), 200);
    let html = list.text().await.unwrap();
    assert!(html.contains(">Users</a>"), "the Users entry shows: {html}");
    assert!(!html.contains(">Roles</a>"), "the Roles entry does not");
    assert!(!html.contains("Add user"));
    // Nothing the viewer tried changed anything.
    let victim_user = server
        .store
        .user_by_id(fab_core::user::UserId(victim))
        .await
        .unwrap()
        .unwrap();
    assert!(victim_user.active);
    assert!(server.store.role_by_name("x").await.unwrap().is_none());
}

async fn cross_site_posts_are_refused(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let admin = server.admin_client().await;
    let id = create_user(&server, &admin, "frank", &[PUBLIC_ROLE]).await;
    let host = server.addr.to_string();
    for headers in [
        vec![("sec-fetch-site", "cross-site")],
        vec![("sec-fetch-site", "same-site")],
        vec![("origin", "http://evil.example")],
        vec![("origin", "null")],
    ] {
        let response = admin
            .post_form_with(&format!("/users/disable/{id}"), &[], &headers)
            .await;
        assert_eq!(response.status(), 403, "{headers:?}");
        assert!(
            response
                .text()
                .await
                .unwrap()
                .contains("Cross-site request refused")
        );
    }
    let frank = server
        .store
        .user_by_id(fab_core::user::UserId(id))
        .await
        .unwrap()
        .unwrap();
    assert!(frank.active, "no cross-site post took effect");
    // Login CSRF is refused too.
    let victim = server.client();
    let response = victim
        .post_form_with(
            "/login/",
            &[("username", "frank"), ("password", USER_PASSWORD)],
            &[("sec-fetch-site", "cross-site")],
        )
        .await;
    assert_eq!(response.status(), 403);
    // A same-origin post with a matching Origin passes.
    let origin = format!("http://{host}");
    let response = admin
        .post_form_with(
            &format!("/users/disable/{id}"),
            &[],
            &[("origin", origin.as_str())],
        )
        .await;
    assert_eq!(response.status(), 303);
}

async fn api_login_tokens_and_disabled_users(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let admin = server.admin_client().await;
    let id = create_user(&server, &admin, "gina", &["Admin"]).await;
    let api = server.client();

    let bad = api
        .post_json(
            "/api/v1/security/login",
            &json!({"username": "gina", "password": "nope", "provider": "db"}),
            &[],
        )
        .await;
    assert_eq!(bad.status(), 401);
    assert_eq!(
        bad.json::<Value>().await.unwrap(),
        json!({"message": "Not authorized"})
    );

    let response = api
        .post_json(
            "/api/v1/security/login",
            &json!({"username": "gina", "password": USER_PASSWORD, "provider": "db", "refresh": true}),
            &[],
        )
        .await;
    assert_eq!(response.status(), 200);
    let tokens: Value = response.json().await.unwrap();
    let access = tokens["access_token"].as_str().unwrap().to_owned();
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let bearer = format!("Bearer {access}");
    let me = api
        .send_authorized(reqwest::Method::GET, "/api/v1/security/me", &bearer)
        .await;
    assert_eq!(me.status(), 200);
    assert_eq!(
        me.json::<Value>().await.unwrap()["result"]["username"],
        "gina"
    );
    let users = api
        .send_authorized(
            reqwest::Method::GET,
            "/api/v1/security/users/?search=gin",
            &bearer,
        )
        .await;
    assert_eq!(users.status(), 200);
    assert_eq!(users.json::<Value>().await.unwrap()["count"], 1);

    // A refresh token is not an access token, and a forged signature is nothing.
    let as_access = format!("Bearer {refresh}");
    let response = api
        .send_authorized(reqwest::Method::GET, "/api/v1/security/me", &as_access)
        .await;
    assert_eq!(response.status(), 401);
    let mut forged = access.clone();
    forged.pop();
    forged.push(if access.ends_with('A') { 'B' } else { 'A' });
    let forged = format!("Bearer {forged}");
    let response = api
        .send_authorized(reqwest::Method::GET, "/api/v1/security/me", &forged)
        .await;
    assert_eq!(response.status(), 401);

    let refreshed = api
        .send_authorized(
            reqwest::Method::POST,
            "/api/v1/security/refresh",
            &as_access,
        )
        .await;
    assert_eq!(refreshed.status(), 200);

    // Access tokens expire after 15 minutes.
    server.clock.advance(Duration::minutes(15));
    let response = api
        .send_authorized(reqwest::Method::GET, "/api/v1/security/me", &bearer)
        .await;
    assert_eq!(response.status(), 401);

    // A disabled user's tokens stop working at once.
    let fresh: Value = api
        .post_json("/api/v1/security/login", &json!({"username": "gina", "password": USER_PASSWORD, "provider": "db", "refresh": true}), &[])
        .await
        .json()
        .await
        .unwrap();
    let bearer = format!("Bearer {}", fresh["access_token"].as_str().unwrap());
    let refresh = format!("Bearer {}", fresh["refresh_token"].as_str().unwrap());
    assert_eq!(
        admin
            .post_form(&format!("/users/disable/{id}"), &[])
            .await
            .status(),
        303
    );
    let response = api
        .send_authorized(reqwest::Method::GET, "/api/v1/security/me", &bearer)
        .await;
    assert_eq!(response.status(), 401);
    let response = api
        .send_authorized(reqwest::Method::POST, "/api/v1/security/refresh", &refresh)
        .await;
    assert_eq!(response.status(), 401);
}

async fn malformed_requests_get_clear_4xx(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let admin = server.admin_client().await;
    let api = server.client();
    let cases: Vec<(reqwest::Response, u16)> = vec![
        (
            api.send(
                reqwest::Method::POST,
                "/api/v1/security/login",
                &[],
                Some(("application/json", b"{not json".to_vec())),
            )
            .await,
            400,
        ),
        (
            api.post_json("/api/v1/security/login", &json!({"username": 5}), &[])
                .await,
            400,
        ),
        (
            api.post_json(
                "/api/v1/security/login",
                &json!({"username": "a", "password": "b", "provider": "ldap"}),
                &[],
            )
            .await,
            400,
        ),
        (
            api.post_json("/api/v1/security/login", &json!({}), &[])
                .await,
            400,
        ),
        (admin.get("/users/show/not-a-number").await, 404),
        (admin.get("/users/show/999999").await, 404),
        (admin.get("/users/list/?page=abc").await, 400),
        (admin.get("/no/such/page").await, 404),
        (api.get("/api/v1/no/such/thing").await, 404),
        (
            admin
                .post_form("/roles/edit/1", &[("permissions", "DROP TABLE")])
                .await,
            400,
        ),
        (
            admin
                .send(
                    reqwest::Method::POST,
                    "/users/add/",
                    &[("sec-fetch-site", "same-origin")],
                    Some(("text/plain", b"x".to_vec())),
                )
                .await,
            400,
        ),
        (
            admin
                .send(
                    reqwest::Method::POST,
                    "/users/add/",
                    &[("sec-fetch-site", "same-origin")],
                    Some(("application/x-www-form-urlencoded", vec![b'a'; 200_000])),
                )
                .await,
            413,
        ),
        (
            api.send(
                reqwest::Method::POST,
                "/api/v1/security/login",
                &[],
                Some(("application/json", vec![b' '; 2_000_000])),
            )
            .await,
            413,
        ),
    ];
    for (i, (response, expected)) in cases.into_iter().enumerate() {
        let status = response.status().as_u16();
        let body = response.text().await.unwrap();
        assert_eq!(status, expected, "case {i}: {body}");
        assert!(!body.is_empty(), "case {i} explains itself");
    }
    // A page error still carries the layout and the security headers.
    let response = admin.get("/no/such/page").await;
    assert_eq!(response.headers().get("x-frame-options").unwrap(), "DENY");
    assert!(response.text().await.unwrap().contains("404"));
}

async fn user_administration_keeps_input_and_refuses_duplicates(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let admin = server.admin_client().await;
    create_user(&server, &admin, "hank", &[PUBLIC_ROLE]).await;
    let response = admin
        .post_form(
            "/users/add/",
            &[
                ("first_name", "Other"),
                ("last_name", "Hank"),
                ("username", "HANK"),
                ("email", "other@example.com"),
                ("password", USER_PASSWORD),
                ("conf_password", USER_PASSWORD),
            ],
        )
        .await;
    assert_eq!(response.status(), 409);
    let html = response.text().await.unwrap();
    assert!(html.contains("already taken"), "{html}");
    assert!(html.contains(r#"value="other@example.com""#), "input kept");

    let response = admin
        .post_form(
            "/users/add/",
            &[
                ("first_name", "<script>alert(1)</script>"),
                ("last_name", "X"),
                ("username", "bad name"),
                ("email", "nope"),
                ("password", "short"),
                ("conf_password", "other"),
            ],
        )
        .await;
    assert_eq!(response.status(), 422);
    let html = response.text().await.unwrap();
    assert!(!html.contains("<script>alert(1)</script>"), "escaped");
    assert!(html.contains("&lt;script&gt;"));
    for message in [
        "only letters",
        "not a valid email",
        "at least 12",
        "must match",
    ] {
        assert!(html.contains(message), "{message}");
    }

    // The last active admin cannot lock the instance out.
    let me = server
        .store
        .user_by_login(ADMIN_USERNAME)
        .await
        .unwrap()
        .unwrap();
    let response = admin
        .post_form(&format!("/users/disable/{}", me.id), &[])
        .await;
    assert_eq!(response.status(), 409);
    let response = admin
        .post_form(&format!("/users/delete/{}", me.id), &[])
        .await;
    assert_eq!(response.status(), 409);
    assert!(
        server
            .store
            .user_by_id(me.id)
            .await
            .unwrap()
            .unwrap()
            .active
    );

    // Search and delete.
    let list = admin
        .get("/users/list/?search=han")
        .await
        .text()
        .await
        .unwrap();
    assert!(list.contains("hank") && !list.contains(r#">admin<"#));
    let hank = server.store.user_by_login("hank").await.unwrap().unwrap();
    assert_eq!(
        admin
            .post_form(&format!("/users/delete/{}", hank.id), &[])
            .await
            .status(),
        303
    );
    assert!(server.store.user_by_id(hank.id).await.unwrap().is_none());
    assert_eq!(
        server
            .store
            .recent_audit(5, Some("admin.user_delete"))
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn health_endpoints(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let client = server.client();
    let live = client.get("/health").await;
    assert_eq!(live.status(), 200);
    let ready = client.get("/health/ready").await;
    assert_eq!(ready.status(), 200);
    assert_eq!(
        ready.json::<Value>().await.unwrap()["checks"]["database"],
        "ok"
    );
}

macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(super::Backend::Sqlite).await } )*
        }
        mod postgres {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(super::Backend::Postgres).await } )*
        }
    };
}

on_every_backend!(
    login_and_logout,
    login_by_email,
    failed_logins_look_alike_and_are_counted,
    session_idle_and_absolute_expiry,
    session_id_changes_at_login,
    forged_and_tampered_cookies_are_refused,
    revocation_by_every_web_path,
    every_admin_route_checks_permissions,
    cross_site_posts_are_refused,
    api_login_tokens_and_disabled_users,
    malformed_requests_get_clear_4xx,
    user_administration_keeps_input_and_refuses_duplicates,
    health_endpoints,
    flask_appbuilder_hashes_log_in_and_are_upgraded,
);

/// The deployment guide's least-privilege PostgreSQL role: CONNECT, USAGE and
/// SELECT/INSERT/UPDATE/DELETE only. The server logs users in and manages them under it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_runs_under_a_dml_only_postgres_role() {
    let server = TestServer::start_on(Backend::PostgresDmlOnly).await;
    let admin = server.admin_client().await;
    let id = create_user(&server, &admin, "ivan", &[PUBLIC_ROLE]).await;
    let ivan = server.client();
    assert_eq!(ivan.login("ivan", USER_PASSWORD).await.status(), 303);
    assert_eq!(
        admin
            .post_form(&format!("/users/disable/{id}"), &[])
            .await
            .status(),
        303
    );
    let response = admin
        .post_form("/roles/add/", &[("name", "Auditors")])
        .await;
    assert_eq!(response.status(), 303);
    assert!(
        server
            .store
            .role_by_name("Auditors")
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(admin.post_form("/logout/", &[]).await.status(), 303);
}

/// A user imported from Flask-AppBuilder keeps their werkzeug hash until their next login, which
/// replaces it with argon2id.
async fn flask_appbuilder_hashes_log_in_and_are_upgraded(backend: Backend) {
    let server = TestServer::start_on(backend).await;
    let admin = server.admin_client().await;
    let id = fab_core::user::UserId(create_user(&server, &admin, "imported", &[PUBLIC_ROLE]).await);
    // werkzeug: generate_password_hash("fab-imported-pw", "pbkdf2:sha256:1000") with salt "saltsalt"
    // is pbkdf2_hmac("sha256", password, b"saltsalt", 1000).hex(); computed here with the same
    // primitive the werkzeug docs name.
    let digest = pbkdf2_sha256(b"fab-imported-pw", b"saltsalt", 1000);
    let werkzeug = format!("pbkdf2:sha256:1000$saltsalt${digest}");
    server
        .store
        .set_password_hash(id, &fab_core::Secret::new(werkzeug.clone()), None, None)
        .await
        .unwrap();
    let client = server.client();
    assert_eq!(
        client.login("imported", "wrong-password").await.status(),
        401
    );
    let stored = server.store.user_by_id(id).await.unwrap().unwrap();
    assert_eq!(
        stored.password_hash.expose(),
        werkzeug,
        "a failed login changes nothing"
    );
    assert_eq!(
        client.login("imported", "fab-imported-pw").await.status(),
        303
    );
    let upgraded = server.store.user_by_id(id).await.unwrap().unwrap();
    assert!(
        upgraded.password_hash.expose().starts_with("$argon2id$"),
        "rehashed at login"
    );
    assert_eq!(
        server
            .client()
            .login("imported", "fab-imported-pw")
            .await
            .status(),
        303
    );
}

/// PBKDF2-HMAC-SHA256 with a 32-byte output, hex-encoded, written out from RFC 8018 so the test
/// does not share code with the implementation it checks.
fn pbkdf2_sha256(password: &[u8], salt: &[u8], iterations: u32) -> String {
    use sha2::{Digest, Sha256};
    fn hmac(key: &[u8], message: &[u8]) -> [u8; 32] {
        let mut block = [0u8; 64];
        if key.len() > 64 {
            block[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            block[..key.len()].copy_from_slice(key);
        }
        let mut inner = Sha256::new();
        inner.update(block.map(|b| b ^ 0x36));
        inner.update(message);
        let mut outer = Sha256::new();
        outer.update(block.map(|b| b ^ 0x5c));
        outer.update(inner.finalize());
        outer.finalize().into()
    }
    let mut first = salt.to_vec();
    first.extend_from_slice(&1u32.to_be_bytes());
    let mut u = hmac(password, &first);
    let mut t = u;
    for _ in 1..iterations {
        u = hmac(password, &u);
        for (a, b) in t.iter_mut().zip(u.iter()) {
            *a ^= b;
        }
    }
    t.iter().map(|b| format!("{b:02x}")).collect()
}

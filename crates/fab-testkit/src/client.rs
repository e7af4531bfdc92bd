//! [`TestClient`]: an HTTP client that behaves like one browser profile: it keeps the cookies the
//! server sets (honouring `Max-Age=0` deletion), follows no redirects on its own (tests look at
//! them), and marks its form posts `Sec-Fetch-Site: same-origin` as a browser on the page would.

use reqwest::header::{HeaderMap, HeaderValue, SET_COOKIE};
use reqwest::{Method, Response};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// A cookie-keeping client bound to one server.
#[derive(Debug)]
pub struct TestClient {
    http: reqwest::Client,
    base: String,
    cookies: Mutex<BTreeMap<String, String>>,
}

impl TestClient {
    /// A client for the server at `base` (e.g. `http://127.0.0.1:4321`).
    pub fn new(base: &str) -> Self {
        #[allow(
            clippy::expect_used,
            reason = "test support: a client that cannot be built is a broken test machine"
        )]
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("reqwest client");
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            cookies: Mutex::new(BTreeMap::new()),
        }
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The value of a cookie the client holds.
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.lock().get(name).cloned()
    }

    /// Sets (or forges) a cookie.
    pub fn set_cookie(&self, name: &str, value: &str) {
        self.lock().insert(name.to_owned(), value.to_owned());
    }

    /// Forgets every cookie.
    pub fn clear_cookies(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        self.cookies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn cookie_header(&self) -> Option<HeaderValue> {
        let cookies = self.lock();
        if cookies.is_empty() {
            return None;
        }
        let line = cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        HeaderValue::from_str(&line).ok()
    }

    fn absorb(&self, headers: &HeaderMap) {
        let mut cookies = self.lock();
        for value in headers.get_all(SET_COOKIE) {
            let Ok(text) = value.to_str() else { continue };
            let mut parts = text.split(';');
            let Some((name, value)) = parts.next().and_then(|p| p.trim().split_once('=')) else {
                continue;
            };
            let deleted = parts.any(|p| p.trim().eq_ignore_ascii_case("max-age=0"));
            if deleted || value.is_empty() {
                cookies.remove(name);
            } else {
                cookies.insert(name.to_owned(), value.to_owned());
            }
        }
    }

    /// Sends a request with the held cookies and `extra` headers; keeps the cookies it sets.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        extra: &[(&str, &str)],
        body: Option<(&str, Vec<u8>)>,
    ) -> Response {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        if let Some(cookie) = self.cookie_header() {
            request = request.header(reqwest::header::COOKIE, cookie);
        }
        for (name, value) in extra {
            request = request.header(*name, *value);
        }
        if let Some((content_type, bytes)) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(bytes);
        }
        #[allow(
            clippy::expect_used,
            reason = "test support: the server under test must answer"
        )]
        let response = request.send().await.expect("request to the test server");
        self.absorb(response.headers());
        response
    }

    /// A body-less request carrying `Authorization: <authorization>` (e.g. `Bearer <token>`).
    pub async fn send_authorized(
        &self,
        method: Method,
        path: &str,
        authorization: &str,
    ) -> Response {
        self.send(method, path, &[("authorization", authorization)], None)
            .await
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> Response {
        self.send(Method::GET, path, &[], None).await
    }

    /// `POST path` with a form, as a same-origin browser page would send it.
    pub async fn post_form(&self, path: &str, fields: &[(&str, &str)]) -> Response {
        self.post_form_with(path, fields, &[("sec-fetch-site", "same-origin")])
            .await
    }

    /// `POST path` with a form and exactly the given extra headers.
    pub async fn post_form_with(
        &self,
        path: &str,
        fields: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Response {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish()
            .into_bytes();
        self.send(
            Method::POST,
            path,
            headers,
            Some(("application/x-www-form-urlencoded", body)),
        )
        .await
    }

    /// `POST path` with a JSON body and extra headers.
    pub async fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
        headers: &[(&str, &str)],
    ) -> Response {
        self.send(
            Method::POST,
            path,
            headers,
            Some(("application/json", body.to_string().into_bytes())),
        )
        .await
    }

    /// Logs in through the login form; returns the response (a redirect on success).
    pub async fn login(&self, username: &str, password: &str) -> Response {
        self.post_form("/login/", &[("username", username), ("password", password)])
            .await
    }
}

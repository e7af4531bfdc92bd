//! Refusal of cross-site state-changing requests (CSRF).
//!
//! Threat: another site makes the victim's browser post a form to fab, riding on the victim's
//! session cookie. Rule, for every method other than GET, HEAD, OPTIONS and TRACE:
//! - if the browser sent `Sec-Fetch-Site`, only `same-origin` and `none` (typed by the user) pass;
//! - otherwise, if it sent `Origin`, the origin's host must equal the request's `Host`
//!   (`Origin: null` is refused);
//! - a request with neither header is not from a browser that could carry a victim's cookie
//!   cross-site under SameSite=Lax, and passes.
//!
//! The session cookie's `SameSite=Lax` is the second, independent barrier.
//!
//! # Deployment caveat
//! Behind a proxy the origin is compared with the host the client addressed: the trusted
//! proxy's `X-Forwarded-Host`, else `Host`. Make the proxy pass the original `Host`
//! (`proxy_set_header Host $host;`).

use crate::error::Failure;
use axum::extract::Request;
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::Response;

/// Paths that take anonymous, state-free posts from the browser itself (CSP reports).
const EXEMPT: &[&str] = &["/csp-report"];

/// Middleware: answers 403 to cross-site state-changing requests.
pub(crate) async fn refuse_cross_site(request: Request, next: Next) -> Response {
    let host = request
        .extensions()
        .get::<crate::client::ClientInfo>()
        .and_then(|c| c.host.clone());
    if is_safe(request.method())
        || EXEMPT.contains(&request.uri().path())
        || same_origin(request.headers(), host.as_deref())
    {
        return next.run(request).await;
    }
    tracing::warn!(path = %request.uri().path(), "cross-site request refused");
    Failure::Refused("Cross-site request refused".into()).into_response_for(request.uri().path())
}

fn is_safe(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// `host` is the host the client addressed (the trusted proxy's `X-Forwarded-Host`, else
/// `Host`), as [`crate::client`] resolved it.
fn same_origin(headers: &HeaderMap, host: Option<&str>) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return matches!(site.to_str(), Ok("same-origin" | "none"));
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Some(host) = host else {
        return false;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    match url::Url::parse(origin) {
        Ok(url) => {
            let origin_host = match (url.host_str(), url.port()) {
                (Some(h), Some(p)) => format!("{h}:{p}"),
                (Some(h), None) => h.to_owned(),
                _ => return false,
            };
            origin_host.eq_ignore_ascii_case(host)
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn same_origin(headers: &HeaderMap) -> bool {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        super::same_origin(headers, host)
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn fetch_metadata_decides_when_present() {
        assert!(same_origin(&headers(&[("sec-fetch-site", "same-origin")])));
        assert!(same_origin(&headers(&[("sec-fetch-site", "none")])));
        assert!(!same_origin(&headers(&[("sec-fetch-site", "cross-site")])));
        assert!(!same_origin(&headers(&[("sec-fetch-site", "same-site")])));
        // Fetch metadata wins over a matching Origin.
        assert!(!same_origin(&headers(&[
            ("sec-fetch-site", "cross-site"),
            ("origin", "http://app.test"),
            ("host", "app.test")
        ])));
    }

    #[test]
    fn origin_must_match_host() {
        assert!(same_origin(&headers(&[
            ("origin", "http://app.test:8080"),
            ("host", "app.test:8080")
        ])));
        assert!(!same_origin(&headers(&[
            ("origin", "http://evil.test"),
            ("host", "app.test")
        ])));
        assert!(!same_origin(&headers(&[
            ("origin", "null"),
            ("host", "app.test")
        ])));
        assert!(!same_origin(&headers(&[("origin", "http://app.test")])));
    }

    #[test]
    fn non_browser_requests_pass() {
        assert!(same_origin(&headers(&[("host", "app.test")])));
    }
}

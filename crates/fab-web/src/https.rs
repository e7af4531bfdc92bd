//! HTTPS enforcement (`ENFORCE_HTTPS`, alias `SSL_REQUIRE`).
//!
//! Threat: credentials and session cookies sent over plain HTTP, readable and changeable on the
//! way. Rule: a request that did not arrive over HTTPS (fab's own TLS, or `X-Forwarded-Proto:
//! https` from a trusted proxy, see [`crate::client`]) is answered, unless its path is in
//! `HTTPS_EXEMPT_PATHS` (health probes by default):
//! - GET and HEAD: `308 Permanent Redirect` to the same URL on https (308 keeps the method);
//! - any other method: `403` with a message, because a redirected POST would already have sent
//!   its body in clear and browsers would resend it.
//!
//! The redirect target uses the validated request host, never an unchecked header, so it cannot
//! be turned into an open redirect or a header injection.

use crate::client::ClientInfo;
use crate::error::Failure;
use crate::state::AppState;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Whether `path` is `exempt` or below it.
fn is_exempt(path: &str, exempt: &[String]) -> bool {
    exempt.iter().any(|e| {
        let e = e.trim_end_matches('/');
        path == e || path.starts_with(&format!("{e}/"))
    })
}

/// Middleware: redirects or refuses plain-HTTP requests when HTTPS is enforced.
pub(crate) async fn enforce_https(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let https = &state.parts.config.edge.https;
    let client = request
        .extensions()
        .get::<ClientInfo>()
        .cloned()
        .unwrap_or_default();
    let path = request.uri().path().to_owned();
    if !https.enforce || client.https || is_exempt(&path, &https.exempt_paths) {
        return next.run(request).await;
    }
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return Failure::Refused("HTTPS is required: send this request over https://".into())
            .into_response_for(&path);
    }
    let Some(host) = client.host else {
        return Failure::BadRequest("HTTPS is required and the request has no usable Host".into())
            .into_response_for(&path);
    };
    let host = host.strip_suffix(":80").unwrap_or(&host);
    let target = format!(
        "https://{host}{}",
        request.uri().path_and_query().map_or("/", |pq| pq.as_str())
    );
    let mut response = StatusCode::PERMANENT_REDIRECT.into_response();
    if let Ok(location) = HeaderValue::from_str(&target) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::is_exempt;

    #[test]
    fn exemptions_cover_sub_paths_only() {
        let exempt = vec!["/health".to_owned()];
        assert!(is_exempt("/health", &exempt));
        assert!(is_exempt("/health/ready", &exempt));
        assert!(!is_exempt("/healthz", &exempt));
        assert!(!is_exempt("/login/", &exempt));
    }
}

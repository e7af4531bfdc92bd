//! Security headers on every response, refusals and errors included (this layer sits outside
//! everything that can refuse).
//!
//! - `Content-Security-Policy` from `CSP_POLICY` (default: only fab's own origin supplies
//!   scripts, styles, images, fonts and connections; no framing, plugins or foreign form
//!   targets). Every response gets a fresh nonce, added to `script-src` and `style-src`, which
//!   templates put on their `<script>` and `<link>` tags ([`CspNonce`]); so the default needs no
//!   `'unsafe-inline'`, and an injected inline script does not run. With `CSP_REPORT_ONLY` the
//!   policy is sent as `Content-Security-Policy-Report-Only`. Violations are reported to
//!   `CSP_REPORT_URI` through both `report-uri` and the Reporting API (`report-to` with a
//!   `Reporting-Endpoints` header).
//! - `Strict-Transport-Security` on every response to a request that arrived over HTTPS (never
//!   over plain HTTP, where browsers ignore it and it would only leak intent).
//! - `X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY` (for browsers without
//!   frame-ancestors), `Referrer-Policy: strict-origin-when-cross-origin`,
//!   `Cross-Origin-Opener-Policy: same-origin`, a `Permissions-Policy` switching off powerful
//!   features, and `X-XSS-Protection: 0` (OWASP: the legacy filter itself caused leaks).
//! - `Cache-Control: no-store` on everything but static assets, so no page or API answer holding
//!   personal data stays in a shared cache or the back-button history after logout.
//!
//! # Deployment caveat
//! A reverse proxy must not add these headers again (duplicated CSP headers are both enforced,
//! duplicated HSTS headers are invalid): `deploy/nginx.conf` leaves them to fab.

use crate::client::ClientInfo;
use crate::state::AppState;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use fab_core::config::{CspSettings, HttpsSettings};
use fab_core::random::random_token;

const PERMISSIONS_POLICY: &str =
    "camera=(), microphone=(), geolocation=(), payment=(), usb=(), interest-cohort=()";

/// The Reporting API endpoint name used in `report-to`.
pub(crate) const REPORT_GROUP: &str = "csp-endpoint";

/// This response's CSP nonce (base64url, 128 bits), for templates.
#[derive(Debug, Clone)]
pub(crate) struct CspNonce(pub String);

/// The policy text with `nonce` added to script-src and style-src.
pub(crate) fn policy_text(csp: &CspSettings, nonce: &str) -> String {
    let mut parts: Vec<String> = csp
        .directives
        .iter()
        .map(|(name, value)| {
            let value = if name == "script-src" || name == "style-src" {
                format!("{value} 'nonce-{nonce}'")
            } else {
                value.clone()
            };
            if value.trim().is_empty() {
                name.clone()
            } else {
                format!("{name} {}", value.trim())
            }
        })
        .collect();
    if let Some(uri) = &csp.report_uri {
        parts.push(format!("report-uri {uri}"));
        parts.push(format!("report-to {REPORT_GROUP}"));
    }
    parts.join("; ")
}

/// The HSTS value, or None when HSTS is off.
pub(crate) fn hsts_value(https: &HttpsSettings) -> Option<String> {
    if https.hsts_max_age == 0 {
        return None;
    }
    let mut value = format!("max-age={}", https.hsts_max_age);
    if https.hsts_include_subdomains {
        value.push_str("; includeSubDomains");
    }
    if https.hsts_preload {
        value.push_str("; preload");
    }
    Some(value)
}

/// Middleware: adds the security headers.
pub(crate) async fn security_headers(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let edge = &state.parts.config.edge;
    let is_static = request.uri().path().starts_with("/static/");
    let https = request
        .extensions()
        .get::<ClientInfo>()
        .is_some_and(|c| c.https);
    let nonce = random_token(state.parts.rng.as_ref(), 16);
    request.extensions_mut().insert(CspNonce(nonce.clone()));
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    if edge.csp.enabled {
        let name = if edge.csp.report_only {
            header::CONTENT_SECURITY_POLICY_REPORT_ONLY
        } else {
            header::CONTENT_SECURITY_POLICY
        };
        if let Ok(value) = HeaderValue::from_str(&policy_text(&edge.csp, &nonce)) {
            headers.insert(name, value);
        }
        if let Some(uri) = &edge.csp.report_uri
            && let Ok(value) = HeaderValue::from_str(&format!("{REPORT_GROUP}=\"{uri}\""))
        {
            headers.insert(HeaderName::from_static("reporting-endpoints"), value);
        }
    }
    if https
        && let Some(value) = hsts_value(&edge.https).and_then(|v| HeaderValue::from_str(&v).ok())
    {
        headers.insert(header::STRICT_TRANSPORT_SECURITY, value);
    }
    let mut set = |name: HeaderName, value: &'static str| {
        headers
            .entry(name)
            .or_insert(HeaderValue::from_static(value));
    };
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(header::X_FRAME_OPTIONS, "DENY");
    set(header::REFERRER_POLICY, "strict-origin-when-cross-origin");
    set(
        HeaderName::from_static("cross-origin-opener-policy"),
        "same-origin",
    );
    set(
        HeaderName::from_static("permissions-policy"),
        PERMISSIONS_POLICY,
    );
    set(header::X_XSS_PROTECTION, "0");
    if !is_static {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use fab_core::config::DEFAULT_CSP;

    fn default_csp() -> CspSettings {
        CspSettings {
            enabled: true,
            report_only: false,
            directives: DEFAULT_CSP
                .iter()
                .map(|(k, v)| ((*k).into(), (*v).into()))
                .collect(),
            report_uri: Some("/csp-report".into()),
        }
    }

    #[test]
    fn nonce_goes_to_scripts_and_styles_only() {
        let text = policy_text(&default_csp(), "abc");
        assert!(text.contains("script-src 'self' 'nonce-abc'"), "{text}");
        assert!(text.contains("style-src 'self' 'nonce-abc'"), "{text}");
        assert!(text.contains("img-src 'self' data: blob:"), "{text}");
        assert!(!text.contains("unsafe-inline"), "{text}");
        assert!(
            text.ends_with("report-uri /csp-report; report-to csp-endpoint"),
            "{text}"
        );
    }

    #[test]
    fn hsts_variants() {
        let mut https = HttpsSettings {
            enforce: true,
            exempt_paths: vec![],
            hsts_max_age: 31_536_000,
            hsts_include_subdomains: true,
            hsts_preload: false,
        };
        assert_eq!(
            hsts_value(&https).unwrap(),
            "max-age=31536000; includeSubDomains"
        );
        https.hsts_preload = true;
        assert_eq!(
            hsts_value(&https).unwrap(),
            "max-age=31536000; includeSubDomains; preload"
        );
        https.hsts_max_age = 0;
        assert!(hsts_value(&https).is_none());
    }
}

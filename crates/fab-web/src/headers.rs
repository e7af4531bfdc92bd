//! Security headers on every response, refusals and errors included (this layer is outermost).
//!
//! - `Content-Security-Policy`: only fab's own origin may supply scripts, styles, images, fonts
//!   and connections; no framing, no plugins, forms post only to fab. fab's pages use no inline
//!   script or style, so no `'unsafe-inline'` is needed.
//! - `X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY` (for browsers without
//!   frame-ancestors), `Referrer-Policy: strict-origin-when-cross-origin`,
//!   `Cross-Origin-Opener-Policy: same-origin`, a `Permissions-Policy` switching off powerful
//!   features, and `X-XSS-Protection: 0` (OWASP: the legacy filter itself caused leaks).
//! - `Cache-Control: no-store` on everything but static assets, so no page holding personal data
//!   stays in a shared cache or the back-button history after logout.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; \
                   form-action 'self'; frame-ancestors 'none'";
const PERMISSIONS_POLICY: &str =
    "camera=(), microphone=(), geolocation=(), payment=(), usb=(), interest-cohort=()";

/// Middleware: adds the security headers.
pub(crate) async fn security_headers(request: Request, next: Next) -> Response {
    let is_static = request.uri().path().starts_with("/static/");
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    let mut set = |name: HeaderName, value: &'static str| {
        headers
            .entry(name)
            .or_insert(HeaderValue::from_static(value));
    };
    set(header::CONTENT_SECURITY_POLICY, CSP);
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
        set(header::CACHE_CONTROL, "no-store");
    }
    response
}

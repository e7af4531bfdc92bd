//! One-shot messages shown on the page after a redirect ("User alice created").
//!
//! The message travels in a short-lived cookie signed with a key derived from SECRET_KEY, so
//! nobody but fab can put words on fab's pages; it is cleared when shown.

use crate::session_cookie::read_cookie;
use crate::state::AppState;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::Mac;
use subtle::ConstantTimeEq;

const COOKIE: &str = "fab_flash";

fn sign(state: &AppState, payload: &str) -> String {
    #[allow(
        clippy::expect_used,
        reason = "HMAC-SHA256 accepts keys of every length"
    )]
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(state.flash_key.expose().as_bytes())
        .expect("HMAC accepts any key length");
    mac.update(payload.as_bytes());
    URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
}

/// A redirect to `to` that shows `message` on the next page.
pub(crate) fn redirect_with(state: &AppState, to: &str, message: &str) -> Response {
    let payload = URL_SAFE_NO_PAD.encode(message.as_bytes());
    let value = format!("{payload}.{}", sign(state, &payload));
    let mut response = Redirect::to(to).into_response();
    if let Ok(cookie) = HeaderValue::from_str(&format!(
        "{COOKIE}={value}; Path=/; Max-Age=60; HttpOnly; SameSite=Lax{}",
        if state.parts.config.session.cookie_secure {
            "; Secure"
        } else {
            ""
        }
    )) {
        response.headers_mut().append(header::SET_COOKIE, cookie);
    }
    response
}

/// The flash message in the request, if one is present and genuine.
pub(crate) fn read(state: &AppState, headers: &HeaderMap) -> Option<String> {
    let value = read_cookie(headers, COOKIE)?;
    let (payload, signature) = value.split_once('.')?;
    let expected = sign(state, payload);
    if !bool::from(expected.as_bytes().ct_eq(signature.as_bytes())) {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    String::from_utf8(bytes).ok()
}

/// `Set-Cookie` removing the flash cookie once shown.
pub(crate) fn clear(state: &AppState) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{COOKIE}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax{}",
        if state.parts.config.session.cookie_secure {
            "; Secure"
        } else {
            ""
        }
    ))
    .unwrap_or_else(|_| HeaderValue::from_static(""))
}

//! `/.well-known/security.txt` (RFC 9116): where to report a vulnerability, from
//! `SECURITY_CONTACT`, `SECURITY_ENCRYPTION_URL`, `SECURITY_POLICY_URL` and
//! `SECURITY_TXT_EXPIRES`. Without a configured contact there is no file (404): an empty
//! security.txt would invite reports to nowhere.

use crate::error::{Failure, PageError};
use crate::state::AppState;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use chrono::SecondsFormat;

/// The file's text, or None without a contact.
pub(crate) fn text(state: &AppState) -> Option<String> {
    let contact = &state.parts.config.edge.contact;
    if contact.contact.is_empty() {
        return None;
    }
    let mut out = String::new();
    for uri in &contact.contact {
        out.push_str(&format!("Contact: {uri}\n"));
    }
    out.push_str(&format!(
        "Expires: {}\n",
        state
            .security_txt_expires
            .to_rfc3339_opts(SecondsFormat::Secs, true)
    ));
    if let Some(url) = &contact.encryption {
        out.push_str(&format!("Encryption: {url}\n"));
    }
    if let Some(url) = &contact.policy {
        out.push_str(&format!("Policy: {url}\n"));
    }
    out.push_str("Preferred-Languages: en\n");
    Some(out)
}

/// The contact shown on error pages: the first contact, without its `mailto:`.
pub(crate) fn display_contact(state: &AppState) -> Option<String> {
    let first = state.parts.config.edge.contact.contact.first()?;
    Some(first.strip_prefix("mailto:").unwrap_or(first).to_owned())
}

/// `GET /.well-known/security.txt`.
pub(crate) async fn serve(State(state): State<AppState>) -> Result<Response, PageError> {
    let body = text(&state).ok_or(PageError(Failure::NotFound))?;
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(response)
}

//! The session cookie: its name, attributes, and reading it from a request.
//!
//! Attributes come from configuration: `Secure` (and then the `__Host-` name prefix, which makes
//! browsers refuse the cookie from any other path or subdomain), `HttpOnly`, `SameSite` (Lax by
//! default, so cross-site posts do not carry it), `Path=/`, and `Max-Age` of the absolute session
//! lifetime.

use axum::http::{HeaderMap, HeaderValue, header};
use fab_core::config::SessionSettings;
use fab_core::session::SessionToken;

/// The raw value of the session cookie in `headers`, if present.
pub(crate) fn read_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|line| line.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim_matches('"'))
}

/// `Set-Cookie` carrying a new session token.
pub(crate) fn set_cookie(settings: &SessionSettings, token: &SessionToken) -> HeaderValue {
    let max_age = settings.policy.absolute_lifetime.num_seconds();
    header_value(&format!(
        "{}={}; Path=/; Max-Age={max_age}{}",
        settings.cookie_name(),
        token.expose(),
        attributes(settings)
    ))
}

/// `Set-Cookie` deleting the session cookie.
pub(crate) fn clear_cookie(settings: &SessionSettings) -> HeaderValue {
    header_value(&format!(
        "{}=; Path=/; Max-Age=0{}",
        settings.cookie_name(),
        attributes(settings)
    ))
}

fn attributes(settings: &SessionSettings) -> String {
    let mut out = String::new();
    if settings.cookie_secure {
        out.push_str("; Secure");
    }
    if settings.cookie_http_only {
        out.push_str("; HttpOnly");
    }
    out.push_str("; SameSite=");
    out.push_str(settings.same_site.as_str());
    out
}

fn header_value(text: &str) -> HeaderValue {
    // Tokens are base64url and names/attributes are fixed ASCII, so this cannot fail; an empty
    // value is the harmless fallback.
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Starts a session for `user` at `stage` (a new 256-bit token, stored by its hash) and returns
/// the `Set-Cookie` that hands the token to the browser.
pub(crate) async fn start_session(
    state: &crate::state::AppState,
    user: fab_core::user::UserId,
    stage: fab_core::session::SessionStage,
    client: &crate::client::ClientInfo,
) -> Result<HeaderValue, crate::error::Failure> {
    let parts = &state.parts;
    let token = SessionToken::generate(parts.rng.as_ref());
    let record = parts.config.session.policy.new_record(
        &token,
        user,
        stage,
        parts.clock.now(),
        client.ip.clone(),
        client.user_agent.clone(),
    );
    parts.sessions.create(&record).await?;
    Ok(set_cookie(&parts.config.session, &token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_named_cookie_among_others() {
        let mut headers = HeaderMap::new();
        headers.append(
            header::COOKIE,
            HeaderValue::from_static("a=1; fab_session=tok; b=2"),
        );
        assert_eq!(read_cookie(&headers, "fab_session"), Some("tok"));
        assert_eq!(read_cookie(&headers, "fab"), None);
    }
}

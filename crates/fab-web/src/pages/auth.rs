//! Login, logout and the home page.
//!
//! A successful login always starts a new session with a new id (the old one, if any, is
//! deleted), so an id planted in the browser before login is worthless afterwards (session
//! fixation). The `next` target after login must be a path on this site, never another origin.

use super::Page;
use crate::client::ClientInfo;
use crate::error::{Failure, PageError};
use crate::forms::FormData;
use crate::login::{INVALID_LOGIN, actor_of, authenticate};
use crate::session_cookie::{clear_cookie, start_session};
use axum::extract::Query;
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use fab_core::audit::{AuditEvent, AuditKind, Outcome};
use fab_core::secret::Secret;
use fab_core::session::SessionStage;
use minijinja::context;
use serde::Deserialize;

/// `GET /`.
pub(crate) async fn index(page: Page) -> Result<Response, PageError> {
    page.render("index.html", context! {})
}

/// The query of the login page.
#[derive(Debug, Deserialize)]
pub(crate) struct LoginQuery {
    next: Option<String>,
}

/// `GET /login/`.
pub(crate) async fn login_form(
    page: Page,
    Query(query): Query<LoginQuery>,
) -> Result<Response, PageError> {
    if page.principal.user().is_some() {
        return Ok(Redirect::to(safe_next(query.next.as_deref())).into_response());
    }
    page.render(
        "login.html",
        context! { next => query.next.as_deref().map(|n| safe_next(Some(n))), username => "" },
    )
}

/// `POST /login/` with `username`, `password` and optionally `next`.
pub(crate) async fn login(
    page: Page,
    client: ClientInfo,
    form: FormData,
) -> Result<Response, PageError> {
    let username = form.text("username");
    let password = Secret::new(form.raw("password").unwrap_or_default());
    let next = safe_next(Some(&form.text("next"))).to_owned();
    let parts = &page.state.parts;
    let outcome = authenticate(&page.state, &username, password, &client, "form").await;
    if let Err(Failure::TooManyRequests(verdict)) = outcome {
        let message = format!(
            "Too many login attempts; try again in {} seconds.",
            verdict.retry_after_seconds()
        );
        let mut response = page.render_with_status(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            "login.html",
            context! { error => message, username => username, next => next },
        )?;
        crate::ratelimit::annotate(response.headers_mut(), &verdict);
        return Ok(response);
    }
    let Some(user) = outcome? else {
        return page.render_with_status(
            axum::http::StatusCode::UNAUTHORIZED,
            "login.html",
            context! { error => INVALID_LOGIN, username => username, next => next },
        );
    };
    if let Some(old) = page.principal.session() {
        parts.sessions.delete(old).await?;
    }
    let cookie = start_session(&page.state, user.id, SessionStage::Authenticated, &client).await?;
    let mut response = Redirect::to(&next).into_response();
    response.headers_mut().append(header::SET_COOKIE, cookie);
    Ok(response)
}

/// `GET /logout/`: a confirmation form (logging out on a plain GET would let any site log users
/// out with an image tag).
pub(crate) async fn logout_form(page: Page) -> Result<Response, PageError> {
    if page.principal.session().is_none() {
        return Ok(Redirect::to("/login/").into_response());
    }
    page.render("logout.html", context! {})
}

/// `POST /logout/`: ends the session.
pub(crate) async fn logout(page: Page, client: ClientInfo) -> Result<Response, PageError> {
    let parts = &page.state.parts;
    if let Some(session) = page.principal.session() {
        parts.sessions.delete(session).await?;
        if let Some(user) = page.principal.user() {
            let event = AuditEvent::new(AuditKind::UserLogout, Outcome::Success, parts.clock.now())
                .by(actor_of(&page.principal))
                .on(user.user.audit_target())
                .from_origin(client.origin());
            parts.store.record(&event).await?;
        }
    }
    let mut response =
        crate::flash::redirect_with(&page.state, "/login/", "You have been logged out.");
    response
        .headers_mut()
        .append(header::SET_COOKIE, clear_cookie(&parts.config.session));
    Ok(response)
}

/// `next` if it is a path on this site, else `/`.
pub(crate) fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(next)
            if next.starts_with('/')
                && !next.starts_with("//")
                && !next.starts_with("/\\")
                && !next.starts_with("/login")
                && !next.chars().any(|c| c.is_control() || c == '\\') =>
        {
            next
        }
        _ => "/",
    }
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn open_redirects_are_refused() {
        assert_eq!(
            safe_next(Some("/users/list/?page=2")),
            "/users/list/?page=2"
        );
        for evil in [
            "https://evil.test/",
            "//evil.test/",
            "/\\evil.test",
            "javascript:alert(1)",
            "/x\r\nSet-Cookie: a",
            "/login/",
        ] {
            assert_eq!(safe_next(Some(evil)), "/", "{evil}");
        }
        assert_eq!(safe_next(None), "/");
    }
}

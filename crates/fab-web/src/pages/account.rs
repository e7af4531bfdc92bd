//! The logged-in user's own pages: their details, and changing their own password.
//!
//! Changing one's password ends every session of the account, including the current one, which
//! is replaced by a fresh session so the user stays logged in here and nowhere else.

use super::{Page, field_errors};
use crate::client::ClientInfo;
use crate::error::{Failure, PageError};
use crate::forms::FormData;
use crate::login::{check_login_limits, hash_new_password};
use crate::session_cookie::start_session;
use axum::http::{StatusCode, header};
use axum::response::Response;
use fab_core::ValidationError;
use fab_core::audit::AuditKind;
use fab_core::secret::Secret;
use fab_core::session::SessionStage;
use minijinja::context;

/// `GET /users/userinfo/`.
pub(crate) async fn userinfo(page: Page) -> Result<Response, PageError> {
    let user = page
        .principal
        .user()
        .map(|u| u.user.clone())
        .ok_or(PageError(Failure::Unauthenticated { next: None }))?;
    page.render(
        "users/userinfo.html",
        context! {
            user => user,
            can_reset => page.principal.allows_names("can_this_form_get", crate::routes::views::RESET_MY_PASSWORD),
        },
    )
}

/// `GET /resetmypassword/form`.
pub(crate) async fn reset_my_password_form(page: Page) -> Result<Response, PageError> {
    page.render(
        "users/reset_password.html",
        context! { own => true, errors => field_errors(&[]) },
    )
}

/// `POST /resetmypassword/form` with `current_password`, `password`, `conf_password`.
pub(crate) async fn reset_my_password(
    page: Page,
    client: ClientInfo,
    form: FormData,
) -> Result<Response, PageError> {
    let Some(me) = page.principal.user().map(|u| u.user.clone()) else {
        return Err(PageError(Failure::Unauthenticated { next: None }));
    };
    let current = Secret::new(form.raw("current_password").unwrap_or_default());
    let password = Secret::new(form.raw("password").unwrap_or_default());
    let confirm = Secret::new(form.raw("conf_password").unwrap_or_default());
    let parts = &page.state.parts;

    // Checking the current password is a credential check like a login: the same per-username
    // and per-IP budget applies, so a stolen session cannot be used to guess the password.
    match check_login_limits(&page.state, &me.username, &client).await {
        Ok(()) => {}
        Err(Failure::TooManyRequests(verdict)) => {
            let message = format!(
                "Too many password checks; try again in {} seconds.",
                verdict.retry_after_seconds()
            );
            let errors = [ValidationError::new("current_password", message)];
            let mut response = page.render_with_status(
                StatusCode::TOO_MANY_REQUESTS,
                "users/reset_password.html",
                context! { own => true, errors => field_errors(&errors) },
            )?;
            crate::ratelimit::annotate(response.headers_mut(), &verdict);
            return Ok(response);
        }
        Err(other) => return Err(PageError(other)),
    }
    let hasher = parts.hasher.clone();
    let stored = me.password_hash.clone();
    let current_ok =
        tokio::task::spawn_blocking(move || hasher.verify(&current, stored.expose()).is_match())
            .await
            .map_err(|e| Failure::Internal(format!("password check task failed: {e}")))?;
    let result = if !current_ok {
        Err(Failure::Invalid(vec![ValidationError::new(
            "current_password",
            "is not your current password",
        )]))
    } else if password != confirm {
        Err(Failure::Invalid(vec![ValidationError::new(
            "conf_password",
            "passwords must match",
        )]))
    } else {
        hash_new_password(&page.state, &password, &[&me.username, &me.email]).await
    };
    let hash = match result {
        Ok(hash) => hash,
        Err(Failure::Invalid(errors)) => {
            return page.render_with_status(
                StatusCode::UNPROCESSABLE_ENTITY,
                "users/reset_password.html",
                context! { own => true, errors => field_errors(&errors) },
            );
        }
        Err(other) => return Err(PageError(other)),
    };
    let event = page.audit(AuditKind::UserPasswordChange, me.audit_target(), &client);
    parts
        .store
        .set_password_hash(me.id, &hash, Some(me.id), Some(&event))
        .await?;
    parts.sessions.delete_for_user(me.id).await?;
    let cookie = start_session(&page.state, me.id, SessionStage::Authenticated, &client).await?;
    let mut response = crate::flash::redirect_with(
        &page.state,
        "/users/userinfo/",
        "Your password was changed; your other sessions have ended.",
    );
    response.headers_mut().append(header::SET_COOKIE, cookie);
    Ok(response)
}

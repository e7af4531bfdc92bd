//! User administration: list with search and pagination, show, add, edit, disable/enable,
//! delete, reset password, end sessions.
//!
//! Disabling a user, resetting their password or ending their sessions takes effect on their very
//! next request. An administrator cannot disable or delete their own account, and nobody can
//! remove the last active Admin, so the instance cannot be locked out from the web.

use super::{Page, field_errors, parse_id};
use crate::client::ClientInfo;
use crate::error::{Failure, PageError};
use crate::forms::FormData;
use crate::login::hash_new_password;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use axum::response::Response;
use fab_core::ValidationError;
use fab_core::audit::AuditKind;
use fab_core::rbac::{ADMIN_ROLE, RoleId};
use fab_core::secret::Secret;
use fab_core::store::UserQuery;
use fab_core::user::{NewUser, User, UserId, UserProfile};
use minijinja::{Value, context};
use serde::Deserialize;

/// The query of the user list.
#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    search: Option<String>,
    page: Option<String>,
}

const PAGE_SIZE: u64 = 25;

/// `GET /users/list/?search=&page=`.
pub(crate) async fn list(
    page: Page,
    Query(query): Query<ListQuery>,
) -> Result<Response, PageError> {
    let search = query
        .search
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    let number = query
        .page
        .as_deref()
        .map(|p| {
            p.parse::<u64>()
                .map_err(|_| Failure::BadRequest("page: not a page number".into()))
        })
        .transpose()?
        .unwrap_or(1)
        .max(1);
    let result = page
        .state
        .parts
        .store
        .list_users(&UserQuery {
            search: search.clone(),
            page: number - 1,
            page_size: PAGE_SIZE,
        })
        .await?;
    let pages = result.page_count();
    page.render(
        "users/list.html",
        context! {
            users => result.items,
            total => result.total,
            page => number,
            pages => pages,
            search => search,
            can_add => page.principal.allows_names("can_add", crate::routes::views::USERS),
        },
    )
}

async fn load_user(page: &Page, id: &str) -> Result<User, PageError> {
    let id = UserId(parse_id(id)?);
    page.state
        .parts
        .store
        .user_by_id(id)
        .await?
        .ok_or(PageError(Failure::NotFound))
}

/// `GET /users/show/{id}`.
pub(crate) async fn show(page: Page, Path(id): Path<String>) -> Result<Response, PageError> {
    let user = load_user(&page, &id).await?;
    let sessions: Vec<Value> = page
        .state
        .parts
        .sessions
        .list_for_user(user.id)
        .await?
        .into_iter()
        .map(|s| {
            context! {
                created_at => s.created_at.to_rfc3339(),
                last_seen_at => s.last_seen_at.to_rfc3339(),
                ip => s.ip,
                user_agent => s.user_agent,
            }
        })
        .collect();
    let views = crate::routes::views::USERS;
    page.render(
        "users/show.html",
        context! {
            user => user,
            sessions => sessions,
            is_self => page.user_id() == Some(user.id),
            can_edit => page.principal.allows_names("can_edit", views),
            can_delete => page.principal.allows_names("can_delete", views),
            can_reset => page.principal.allows_names("can_resetpasswords", views),
        },
    )
}

async fn role_choices(page: &Page) -> Result<Vec<Value>, PageError> {
    Ok(page
        .state
        .parts
        .store
        .list_roles()
        .await?
        .into_iter()
        .map(|r| context! { id => r.role.id.0, name => r.role.name })
        .collect())
}

fn profile_from(form: &FormData) -> Result<UserProfile, Failure> {
    Ok(UserProfile {
        first_name: form.text("first_name"),
        last_name: form.text("last_name"),
        username: form.text("username"),
        email: form.text("email"),
        active: form.checked("active"),
        roles: form.ids("roles")?.into_iter().map(RoleId).collect(),
    })
}

fn profile_context(profile: &UserProfile) -> Value {
    context! {
        first_name => profile.first_name.clone(),
        last_name => profile.last_name.clone(),
        username => profile.username.clone(),
        email => profile.email.clone(),
        active => profile.active,
        roles => profile.roles.iter().map(|r| r.0).collect::<Vec<_>>(),
    }
}

/// Renders the add/edit form again with the input kept and the problems shown.
async fn form_again(
    page: &Page,
    mode: &str,
    user_id: Option<UserId>,
    profile: &UserProfile,
    failure: Failure,
) -> Result<Response, PageError> {
    let (status, errors, message) = match failure {
        Failure::Invalid(errors) => (StatusCode::UNPROCESSABLE_ENTITY, errors, None),
        Failure::Conflict(message) => (StatusCode::CONFLICT, Vec::new(), Some(message)),
        other => return Err(PageError(other)),
    };
    page.render_with_status(
        status,
        "users/form.html",
        context! {
            mode => mode,
            user_id => user_id.map(|id| id.0),
            form => profile_context(profile),
            errors => field_errors(&errors),
            message => message,
            roles => role_choices(page).await?,
        },
    )
}

/// `GET /users/add/`.
pub(crate) async fn add_form(page: Page) -> Result<Response, PageError> {
    let empty = UserProfile {
        first_name: String::new(),
        last_name: String::new(),
        username: String::new(),
        email: String::new(),
        active: true,
        roles: Vec::new(),
    };
    page.render(
        "users/form.html",
        context! {
            mode => "add",
            form => profile_context(&empty),
            errors => field_errors(&[]),
            roles => role_choices(&page).await?,
        },
    )
}

/// `POST /users/add/`.
pub(crate) async fn add(
    page: Page,
    client: ClientInfo,
    form: FormData,
) -> Result<Response, PageError> {
    let profile = profile_from(&form)?;
    let password = Secret::new(form.raw("password").unwrap_or_default());
    let confirm = Secret::new(form.raw("conf_password").unwrap_or_default());
    let mut errors = match profile.clone().normalised() {
        Ok(_) => Vec::new(),
        Err(errors) => errors,
    };
    if password != confirm {
        errors.push(ValidationError::new(
            "conf_password",
            "passwords must match",
        ));
    }
    if let Err(e) = page
        .state
        .parts
        .config
        .password_policy
        .check(&password, &[profile.username.trim(), profile.email.trim()])
    {
        errors.push(e);
    }
    if !errors.is_empty() {
        return form_again(&page, "add", None, &profile, Failure::Invalid(errors)).await;
    }
    let profile = profile.normalised().map_err(Failure::Invalid)?;
    let hash =
        hash_new_password(&page.state, &password, &[&profile.username, &profile.email]).await?;
    let new_user = NewUser {
        profile: profile.clone(),
        password_hash: hash,
        created_by: page.user_id(),
    };
    let event = page.audit(
        AuditKind::AdminUserCreate,
        format!("username:{}", profile.username),
        &client,
    );
    match page.state.parts.store.create_user(&new_user, &event).await {
        Ok(user) => Ok(crate::flash::redirect_with(
            &page.state,
            &format!("/users/show/{}", user.id),
            &format!("User {} created.", user.username),
        )),
        Err(error) => form_again(&page, "add", None, &profile, error.into()).await,
    }
}

/// `GET /users/edit/{id}`.
pub(crate) async fn edit_form(page: Page, Path(id): Path<String>) -> Result<Response, PageError> {
    let user = load_user(&page, &id).await?;
    let profile = UserProfile {
        first_name: user.first_name.clone(),
        last_name: user.last_name.clone(),
        username: user.username.clone(),
        email: user.email.clone(),
        active: user.active,
        roles: user.roles.iter().map(|r| r.id).collect(),
    };
    page.render(
        "users/form.html",
        context! {
            mode => "edit",
            user_id => user.id.0,
            form => profile_context(&profile),
            errors => field_errors(&[]),
            roles => role_choices(&page).await?,
        },
    )
}

/// Refuses changes that would leave no active Admin, or make an admin lock themselves out.
async fn guard_admin_lockout(
    page: &Page,
    user: &User,
    stays_active_admin: bool,
) -> Result<(), Failure> {
    if stays_active_admin {
        return Ok(());
    }
    if page.user_id() == Some(user.id) {
        return Err(Failure::Conflict(
            "You cannot disable, delete or remove the Admin role from your own account.".into(),
        ));
    }
    if user.active && user.has_role(ADMIN_ROLE) {
        let admins = page
            .state
            .parts
            .store
            .count_active_users_with_role(ADMIN_ROLE)
            .await?;
        if admins <= 1 {
            return Err(Failure::Conflict(
                "This is the last active Admin; it must stay.".into(),
            ));
        }
    }
    Ok(())
}

/// `POST /users/edit/{id}`.
pub(crate) async fn edit(
    page: Page,
    client: ClientInfo,
    Path(id): Path<String>,
    form: FormData,
) -> Result<Response, PageError> {
    let user = load_user(&page, &id).await?;
    let profile = profile_from(&form)?;
    let profile = match profile.clone().normalised() {
        Ok(profile) => profile,
        Err(errors) => {
            return form_again(
                &page,
                "edit",
                Some(user.id),
                &profile,
                Failure::Invalid(errors),
            )
            .await;
        }
    };
    let admin_role = page.state.parts.store.role_by_name(ADMIN_ROLE).await?;
    let keeps_admin = admin_role.is_some_and(|role| profile.roles.contains(&role.id));
    let was_admin = user.has_role(ADMIN_ROLE);
    let stays = profile.active && (keeps_admin || !was_admin);
    if let Err(failure) = guard_admin_lockout(&page, &user, stays || !user.active).await {
        return form_again(&page, "edit", Some(user.id), &profile, failure).await;
    }
    let event = page
        .audit(AuditKind::AdminUserUpdate, user.audit_target(), &client)
        .with_detail(serde_json::json!({
            "active": profile.active,
            "roles": profile.roles.iter().map(|r| r.0).collect::<Vec<_>>(),
        }));
    match page
        .state
        .parts
        .store
        .update_user(user.id, &profile, page.user_id(), &event)
        .await
    {
        Ok(updated) => {
            if user.active && !updated.active {
                page.state.parts.sessions.delete_for_user(user.id).await?;
            }
            Ok(crate::flash::redirect_with(
                &page.state,
                &format!("/users/show/{}", user.id),
                &format!("User {} saved.", updated.username),
            ))
        }
        Err(error) => form_again(&page, "edit", Some(user.id), &profile, error.into()).await,
    }
}

/// `POST /users/delete/{id}`.
pub(crate) async fn delete(
    page: Page,
    client: ClientInfo,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let user = load_user(&page, &id).await?;
    guard_admin_lockout(&page, &user, false).await?;
    let event = page.audit(AuditKind::AdminUserDelete, user.audit_target(), &client);
    page.state.parts.sessions.delete_for_user(user.id).await?;
    page.state.parts.store.delete_user(user.id, &event).await?;
    Ok(crate::flash::redirect_with(
        &page.state,
        "/users/list/",
        &format!("User {} deleted.", user.username),
    ))
}

/// `POST /users/disable/{id}`: the user's sessions end at once.
pub(crate) async fn disable(
    page: Page,
    client: ClientInfo,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    set_active(page, client, &id, false).await
}

/// `POST /users/enable/{id}`.
pub(crate) async fn enable(
    page: Page,
    client: ClientInfo,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    set_active(page, client, &id, true).await
}

async fn set_active(
    page: Page,
    client: ClientInfo,
    id: &str,
    active: bool,
) -> Result<Response, PageError> {
    let user = load_user(&page, id).await?;
    if !active {
        guard_admin_lockout(&page, &user, false).await?;
    }
    let kind = if active {
        AuditKind::AdminUserEnable
    } else {
        AuditKind::AdminUserDisable
    };
    let event = page.audit(kind, user.audit_target(), &client);
    let sessions = &page.state.parts.sessions;
    let open = sessions.list_for_user(user.id).await?.len();
    page.state
        .parts
        .store
        .set_user_active(user.id, active, page.user_id(), &event)
        .await?;
    let message = if active {
        format!("User {} enabled.", user.username)
    } else {
        // The SQL store ends the sessions in the same transaction as the change; a session store
        // elsewhere (memory, Redis) needs this call.
        sessions.delete_for_user(user.id).await?;
        format!("User {} disabled; {open} session(s) ended.", user.username)
    };
    Ok(crate::flash::redirect_with(
        &page.state,
        &format!("/users/show/{}", user.id),
        &message,
    ))
}

/// `POST /users/clearsessions/{id}`.
pub(crate) async fn clear_sessions(
    page: Page,
    client: ClientInfo,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let user = load_user(&page, &id).await?;
    let ended = page.state.parts.sessions.delete_for_user(user.id).await?;
    let event = page
        .audit(AuditKind::AdminSessionRevoke, user.audit_target(), &client)
        .with_detail(serde_json::json!({ "sessions_ended": ended }));
    page.state.parts.store.record(&event).await?;
    Ok(crate::flash::redirect_with(
        &page.state,
        &format!("/users/show/{}", user.id),
        &format!("{ended} session(s) of {} ended.", user.username),
    ))
}

/// `GET /users/resetpasswords/{id}`.
pub(crate) async fn reset_password_form(
    page: Page,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let user = load_user(&page, &id).await?;
    page.render(
        "users/reset_password.html",
        context! { user => user, errors => field_errors(&[]) },
    )
}

/// `POST /users/resetpasswords/{id}` with `password` and `conf_password`: the user's sessions end.
pub(crate) async fn reset_password(
    page: Page,
    client: ClientInfo,
    Path(id): Path<String>,
    form: FormData,
) -> Result<Response, PageError> {
    let user = load_user(&page, &id).await?;
    let password = Secret::new(form.raw("password").unwrap_or_default());
    let confirm = Secret::new(form.raw("conf_password").unwrap_or_default());
    let hash = if password == confirm {
        hash_new_password(&page.state, &password, &[&user.username, &user.email]).await
    } else {
        Err(Failure::Invalid(vec![ValidationError::new(
            "conf_password",
            "passwords must match",
        )]))
    };
    let hash = match hash {
        Ok(hash) => hash,
        Err(Failure::Invalid(errors)) => {
            return page.render_with_status(
                StatusCode::UNPROCESSABLE_ENTITY,
                "users/reset_password.html",
                context! { user => user, errors => field_errors(&errors) },
            );
        }
        Err(other) => return Err(PageError(other)),
    };
    let event = page.audit(AuditKind::AdminPasswordReset, user.audit_target(), &client);
    page.state
        .parts
        .store
        .set_password_hash(user.id, &hash, page.user_id(), Some(&event))
        .await?;
    let ended = page.state.parts.sessions.delete_for_user(user.id).await?;
    Ok(crate::flash::redirect_with(
        &page.state,
        &format!("/users/show/{}", user.id),
        &format!(
            "Password of {} reset; {ended} session(s) ended.",
            user.username
        ),
    ))
}

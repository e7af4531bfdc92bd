//! Server-rendered pages: login, home, users, roles, permission lists, and the user's own page.
//!
//! Every page is rendered through [`Page::render`], which adds what the layout needs (application
//! name, the logged-in user, the navigation the user may see, a pending flash message).

pub(crate) mod account;
pub(crate) mod assets;
pub(crate) mod auth;
pub(crate) mod roles;
pub(crate) mod security;
pub(crate) mod users;

use crate::error::{Failure, PageError};
use crate::principal::Principal;
use crate::routes::{menus, views};
use crate::state::AppState;
use crate::templates::ErrorPage;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use minijinja::{Value, context};
use serde::Serialize;

/// What every page handler needs: the state, the requester, and the request headers (for the
/// flash message).
pub(crate) struct Page {
    pub state: AppState,
    pub principal: Principal,
    pub headers: HeaderMap,
    pub path: String,
    /// This response's CSP nonce.
    pub nonce: String,
}

impl FromRequestParts<AppState> for Page {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, PageError> {
        let principal = Principal::from_request_parts(parts, state)
            .await
            .unwrap_or_else(|never| match never {});
        Ok(Page {
            state: state.clone(),
            principal,
            headers: parts.headers.clone(),
            path: parts.uri.path().to_owned(),
            nonce: nonce_of(&parts.extensions),
        })
    }
}

#[derive(Serialize)]
struct NavItem {
    label: &'static str,
    href: &'static str,
    active: bool,
}

impl Page {
    /// The layout's context for this request.
    fn base_context(&self) -> Value {
        let user = self.principal.user().map(|u| {
            context! {
                id => u.user.id.0,
                username => u.user.username.clone(),
                display_name => u.user.display_name(),
            }
        });
        let can = |menu: &str, permission: &str, view: &str| {
            self.principal.allows_names("menu_access", menu)
                && self.principal.allows_names(permission, view)
        };
        let entries: [(&str, &str, &str, &str, &str); 5] = [
            (
                "Users",
                "/users/list/",
                menus::LIST_USERS,
                "can_list",
                views::USERS,
            ),
            (
                "Roles",
                "/roles/list/",
                menus::LIST_ROLES,
                "can_list",
                views::ROLES,
            ),
            (
                "Permissions",
                "/permissions/list/",
                menus::BASE_PERMISSIONS,
                "can_list",
                views::PERMISSIONS,
            ),
            (
                "View menus",
                "/viewmenus/list/",
                menus::VIEWS_MENUS,
                "can_list",
                views::VIEW_MENUS,
            ),
            (
                "Permissions on views",
                "/permissionviews/list/",
                menus::PERMISSION_ON_VIEWS,
                "can_list",
                views::PERMISSION_VIEWS,
            ),
        ];
        let security_menu = self.principal.allows_names("menu_access", menus::SECURITY);
        let nav: Vec<NavItem> = entries
            .into_iter()
            .filter(|(_, _, menu, permission, view)| security_menu && can(menu, permission, view))
            .map(|(label, href, ..)| NavItem {
                label,
                href,
                active: self.path.starts_with(href.trim_end_matches("list/")),
            })
            .collect();
        context! {
            app_name => self.state.parts.config.app_name.clone(),
            current_user => user,
            nav => nav,
            can_userinfo => self.principal.allows_names("can_userinfo", views::USERS),
            flash => crate::flash::read(&self.state, &self.headers),
            development => !self.state.parts.config.is_production(),
            csp_nonce => self.nonce.clone(),
            security_contact => crate::security_txt::display_contact(&self.state),
        }
    }

    /// Renders `template` with `extra` merged over the layout's context.
    pub(crate) fn render(&self, template: &str, extra: Value) -> Result<Response, PageError> {
        self.render_with_status(axum::http::StatusCode::OK, template, extra)
    }

    /// Renders with a status (e.g. 422 for a form with errors).
    pub(crate) fn render_with_status(
        &self,
        status: axum::http::StatusCode,
        template: &str,
        extra: Value,
    ) -> Result<Response, PageError> {
        let base = self.base_context();
        let had_flash = !base.get_attr("flash").map(|v| v.is_none()).unwrap_or(true);
        let context = context! { ..extra, ..base };
        let html = self.state.templates.render(template, context)?;
        let mut response = (status, Html(html)).into_response();
        if had_flash {
            response
                .headers_mut()
                .append(header::SET_COOKIE, crate::flash::clear(&self.state));
        }
        Ok(response)
    }

    /// The id of the logged-in user, if any.
    pub(crate) fn user_id(&self) -> Option<fab_core::user::UserId> {
        self.principal.user().map(|u| u.user.id)
    }
}

/// Field errors as a name -> message map for templates.
pub(crate) fn field_errors(errors: &[fab_core::ValidationError]) -> Value {
    let map: std::collections::BTreeMap<String, String> = errors
        .iter()
        .map(|e| (e.field.clone(), e.message.clone()))
        .collect();
    Value::from_serialize(&map)
}

/// Middleware: gives error answers the site's layout (`error.html`). Falls back to the plain
/// body the error already carries if rendering fails, never to a 500 of its own.
pub(crate) async fn render_error_pages(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let principal = request.extensions().get::<Principal>().cloned();
    let nonce = nonce_of(request.extensions());
    let headers = request.headers().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    let Some(error) = response.extensions().get::<ErrorPage>().cloned() else {
        return response;
    };
    let Some(principal) = principal else {
        return response;
    };
    let status = response.status();
    let page = Page {
        state,
        principal,
        headers,
        path,
        nonce,
    };
    let extra = context! {
        status => status.as_u16(),
        reason => status.canonical_reason().unwrap_or("Error"),
        message => error.message,
    };
    match page.render_with_status(status, "error.html", extra) {
        Ok(mut rendered) => {
            for (name, value) in response.headers() {
                if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
                    rendered.headers_mut().append(name.clone(), value.clone());
                }
            }
            rendered
        }
        Err(PageError(failure)) => {
            if let Failure::Internal(detail) = failure {
                tracing::error!(%detail, "error page rendering failed");
            }
            response
        }
    }
}

fn nonce_of(extensions: &axum::http::Extensions) -> String {
    extensions
        .get::<crate::headers::CspNonce>()
        .map(|n| n.0.clone())
        .unwrap_or_default()
}

/// Parses a path id, or answers 404 (an id that cannot exist is simply not found).
pub(crate) fn parse_id(raw: &str) -> Result<i64, PageError> {
    raw.parse::<i64>().map_err(|_| PageError(Failure::NotFound))
}

impl Page {
    /// An audit event of `kind` by the requester, on `target`, from `client`.
    pub(crate) fn audit(
        &self,
        kind: fab_core::audit::AuditKind,
        target: String,
        client: &crate::client::ClientInfo,
    ) -> fab_core::audit::AuditEvent {
        fab_core::audit::AuditEvent::new(
            kind,
            fab_core::audit::Outcome::Success,
            self.state.parts.clock.now(),
        )
        .by(crate::login::actor_of(&self.principal))
        .on(target)
        .from_origin(client.origin())
    }
}

//! The route table: every path, its handler and the access it needs, in one place.
//!
//! [`table`] is the single source for both the router ([`build`]) and the declared permissions
//! ([`declared_grants`]). Access is enforced by one middleware per route ([`enforce`]): anonymous
//! requesters are sent to the login page (pages) or answered 401 (API); logged-in requesters
//! without the grant get 403.

use crate::error::Failure;
use crate::principal::Principal;
use crate::state::AppState;
use crate::{
    api, client, csp_report, csrf, headers, health, https, pages, ratelimit, security_txt,
};
use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{MethodRouter, get, post};
use fab_core::rbac::Grant;

/// Flask-AppBuilder's view-menu names, kept so FAB role exports and habits carry over.
pub(crate) mod views {
    /// Users (FAB's database-auth user view).
    pub const USERS: &str = "UserDBModelView";
    /// Roles.
    pub const ROLES: &str = "RoleModelView";
    /// Permission names.
    pub const PERMISSIONS: &str = "PermissionModelView";
    /// View-menu names.
    pub const VIEW_MENUS: &str = "ViewMenuModelView";
    /// Permission-on-view rows.
    pub const PERMISSION_VIEWS: &str = "PermissionViewModelView";
    /// A user's own password form.
    pub const RESET_MY_PASSWORD: &str = "ResetMyPasswordView";
}

/// Menu entries, guarded by `menu_access` as in Flask-AppBuilder.
pub(crate) mod menus {
    /// The Security menu.
    pub const SECURITY: &str = "Security";
    /// Users entry.
    pub const LIST_USERS: &str = "List Users";
    /// Roles entry.
    pub const LIST_ROLES: &str = "List Roles";
    /// Permissions entry.
    pub const BASE_PERMISSIONS: &str = "Base Permissions";
    /// View menus entry.
    pub const VIEWS_MENUS: &str = "Views/Menus";
    /// Permission views entry.
    pub const PERMISSION_ON_VIEWS: &str = "Permission on Views/Menus";
    /// Every menu entry.
    pub const ALL: [&str; 6] = [
        SECURITY,
        LIST_USERS,
        LIST_ROLES,
        BASE_PERMISSIONS,
        VIEWS_MENUS,
        PERMISSION_ON_VIEWS,
    ];
}

/// What a route requires.
#[derive(Debug, Clone)]
pub(crate) enum Access {
    /// Anyone, logged in or not.
    Anyone,
    /// Any fully logged-in user.
    LoggedIn,
    /// This grant.
    Grant(Grant),
}

fn grant(permission: &str, view: &str) -> Access {
    Access::Grant(Grant::new(permission, view))
}

/// One route.
pub(crate) struct Route {
    pub path: &'static str,
    pub access: Access,
    pub handler: MethodRouter<AppState>,
}

fn route(path: &'static str, access: Access, handler: MethodRouter<AppState>) -> Route {
    Route {
        path,
        access,
        handler,
    }
}

/// Every route fab serves.
pub(crate) fn table() -> Vec<Route> {
    use views::*;
    vec![
        route("/", Access::Anyone, get(pages::auth::index)),
        route(
            "/login/",
            Access::Anyone,
            get(pages::auth::login_form).post(pages::auth::login),
        ),
        route(
            "/logout/",
            Access::Anyone,
            get(pages::auth::logout_form).post(pages::auth::logout),
        ),
        route(
            "/users/list/",
            grant("can_list", USERS),
            get(pages::users::list),
        ),
        route(
            "/users/show/{id}",
            grant("can_show", USERS),
            get(pages::users::show),
        ),
        route(
            "/users/add/",
            grant("can_add", USERS),
            get(pages::users::add_form).post(pages::users::add),
        ),
        route(
            "/users/edit/{id}",
            grant("can_edit", USERS),
            get(pages::users::edit_form).post(pages::users::edit),
        ),
        route(
            "/users/delete/{id}",
            grant("can_delete", USERS),
            post(pages::users::delete),
        ),
        route(
            "/users/disable/{id}",
            grant("can_edit", USERS),
            post(pages::users::disable),
        ),
        route(
            "/users/enable/{id}",
            grant("can_edit", USERS),
            post(pages::users::enable),
        ),
        route(
            "/users/clearsessions/{id}",
            grant("can_edit", USERS),
            post(pages::users::clear_sessions),
        ),
        route(
            "/users/resetpasswords/{id}",
            grant("can_resetpasswords", USERS),
            get(pages::users::reset_password_form).post(pages::users::reset_password),
        ),
        route(
            "/users/userinfo/",
            grant("can_userinfo", USERS),
            get(pages::account::userinfo),
        ),
        route(
            "/resetmypassword/form",
            grant("can_this_form_get", RESET_MY_PASSWORD),
            get(pages::account::reset_my_password_form),
        ),
        route(
            "/resetmypassword/form",
            grant("can_this_form_post", RESET_MY_PASSWORD),
            post(pages::account::reset_my_password),
        ),
        route(
            "/roles/list/",
            grant("can_list", ROLES),
            get(pages::roles::list),
        ),
        route(
            "/roles/show/{id}",
            grant("can_show", ROLES),
            get(pages::roles::show),
        ),
        route(
            "/roles/add/",
            grant("can_add", ROLES),
            get(pages::roles::add_form).post(pages::roles::add),
        ),
        route(
            "/roles/edit/{id}",
            grant("can_edit", ROLES),
            get(pages::roles::edit_form).post(pages::roles::edit),
        ),
        route(
            "/roles/delete/{id}",
            grant("can_delete", ROLES),
            post(pages::roles::delete),
        ),
        route(
            "/permissions/list/",
            grant("can_list", PERMISSIONS),
            get(pages::security::permissions),
        ),
        route(
            "/viewmenus/list/",
            grant("can_list", VIEW_MENUS),
            get(pages::security::view_menus),
        ),
        route(
            "/permissionviews/list/",
            grant("can_list", PERMISSION_VIEWS),
            get(pages::security::permission_views),
        ),
        route(
            "/api/v1/security/login",
            Access::Anyone,
            post(api::security::login),
        ),
        route(
            "/api/v1/security/refresh",
            Access::Anyone,
            post(api::security::refresh),
        ),
        route(
            "/api/v1/security/me",
            Access::LoggedIn,
            get(api::security::me),
        ),
        route(
            "/api/v1/security/users/",
            grant("can_list", USERS),
            get(api::security::list_users),
        ),
        route(
            "/api/v1/security/users/{id}",
            grant("can_show", USERS),
            get(api::security::show_user),
        ),
        route("/health", Access::Anyone, get(health::live)),
        route("/health/ready", Access::Anyone, get(health::ready)),
        route("/health/security", Access::Anyone, get(health::security)),
        route("/csp-report", Access::Anyone, post(csp_report::receive)),
        route(
            "/.well-known/security.txt",
            Access::Anyone,
            get(security_txt::serve),
        ),
        route("/static/{*path}", Access::Anyone, get(pages::assets::serve)),
    ]
}

/// Every grant the table declares, plus the menu entries.
pub(crate) fn declared_grants() -> Vec<Grant> {
    let mut grants: Vec<Grant> = table()
        .into_iter()
        .filter_map(|r| match r.access {
            Access::Grant(grant) => Some(grant),
            Access::Anyone | Access::LoggedIn => None,
        })
        .chain(
            menus::ALL
                .iter()
                .map(|menu| Grant::new("menu_access", *menu)),
        )
        .collect();
    grants.sort();
    grants.dedup();
    grants
}

/// The body limit of a route: API bodies, CSP reports, and forms for everything else.
fn body_limit(path: &str, limits: &fab_core::config::RequestLimits) -> usize {
    if crate::error::is_api_path(path) {
        limits.body_api
    } else if path == "/csp-report" {
        csp_report::REPORT_BODY_LIMIT
    } else {
        limits.body_form
    }
}

/// The router with every layer.
pub(crate) fn build(state: AppState) -> Router {
    let limits = state.parts.config.edge.limits.clone();
    let mut router: Router<AppState> = Router::new();
    for Route {
        path,
        access,
        handler,
    } in table()
    {
        let handler = handler
            .route_layer(middleware::from_fn_with_state(access, enforce))
            .layer(DefaultBodyLimit::max(body_limit(path, &limits)));
        router = router.route(path, handler);
    }
    router
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            pages::render_error_pages,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            ratelimit::limit_api_principal,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::principal::resolve_principal,
        ))
        .layer(middleware::from_fn(csrf::refuse_cross_site))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            https::enforce_https,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            ratelimit::limit_by_ip,
        ))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            limits
                .request_timeout
                .to_std()
                .unwrap_or(std::time::Duration::from_secs(30)),
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            headers::security_headers,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            client::attach_client_info,
        ))
        .with_state(state)
}

async fn not_found(request: Request) -> Response {
    Failure::NotFound.into_response_for(request.uri().path())
}

/// The per-route access check.
async fn enforce(State(access): State<Access>, request: Request, next: Next) -> Response {
    let principal = request.extensions().get::<Principal>().cloned();
    let allowed = match (&access, &principal) {
        (Access::Anyone, _) => true,
        (Access::LoggedIn, Some(p)) => p.user().is_some(),
        (Access::Grant(grant), Some(p)) => p.allows(grant),
        (_, None) => false,
    };
    if allowed {
        return next.run(request).await;
    }
    let path = request.uri().path().to_owned();
    let logged_in = principal.as_ref().and_then(Principal::user).is_some();
    let failure = if logged_in {
        Failure::Forbidden
    } else {
        let next = request
            .uri()
            .path_and_query()
            .map(|pq| pq.as_str().to_owned())
            .filter(|_| request.method() == axum::http::Method::GET);
        Failure::Unauthenticated { next }
    };
    failure.into_response_for(&path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_routes_all_declare_a_grant() {
        for route in table() {
            let open = matches!(route.access, Access::Anyone);
            let public_path = matches!(
                route.path,
                "/" | "/login/"
                    | "/logout/"
                    | "/api/v1/security/login"
                    | "/api/v1/security/refresh"
                    | "/health"
                    | "/health/ready"
                    | "/health/security"
                    | "/csp-report"
                    | "/.well-known/security.txt"
                    | "/static/{*path}"
            );
            assert_eq!(
                open, public_path,
                "{} has unexpected access {:?}",
                route.path, route.access
            );
        }
    }

    #[test]
    fn declared_grants_keep_flask_appbuilder_names() {
        let grants = declared_grants();
        for (permission, view) in [
            ("can_list", "UserDBModelView"),
            ("can_add", "UserDBModelView"),
            ("can_edit", "RoleModelView"),
            ("can_this_form_post", "ResetMyPasswordView"),
            ("menu_access", "List Users"),
        ] {
            assert!(
                grants.contains(&Grant::new(permission, view)),
                "{permission} on {view}"
            );
        }
    }
}

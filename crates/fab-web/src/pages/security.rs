//! Read-only lists of the permission model: permissions, view menus, and permissions on view
//! menus (Flask-AppBuilder's "Base Permissions", "Views/Menus", "Permission on Views/Menus").

use super::Page;
use crate::error::PageError;
use axum::response::Response;
use minijinja::context;

/// `GET /permissions/list/`.
pub(crate) async fn permissions(page: Page) -> Result<Response, PageError> {
    let rows: Vec<Vec<String>> = page
        .state
        .parts
        .store
        .list_permissions()
        .await?
        .into_iter()
        .map(|(id, name)| vec![id.to_string(), name])
        .collect();
    page.render(
        "security/list.html",
        context! { title => "Permissions", columns => ["Id", "Name"], rows => rows },
    )
}

/// `GET /viewmenus/list/`.
pub(crate) async fn view_menus(page: Page) -> Result<Response, PageError> {
    let rows: Vec<Vec<String>> = page
        .state
        .parts
        .store
        .list_view_menus()
        .await?
        .into_iter()
        .map(|(id, name)| vec![id.to_string(), name])
        .collect();
    page.render(
        "security/list.html",
        context! { title => "View menus", columns => ["Id", "Name"], rows => rows },
    )
}

/// `GET /permissionviews/list/`.
pub(crate) async fn permission_views(page: Page) -> Result<Response, PageError> {
    let rows: Vec<Vec<String>> = page
        .state
        .parts
        .store
        .list_permission_views()
        .await?
        .into_iter()
        .map(|pv| vec![pv.id.0.to_string(), pv.grant.permission, pv.grant.view_menu])
        .collect();
    page.render(
        "security/list.html",
        context! { title => "Permissions on views", columns => ["Id", "Permission", "View menu"], rows => rows },
    )
}

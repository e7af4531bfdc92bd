//! Read-only lists of the permission model: permissions, view menus, and permissions on view
//! menus (Flask-AppBuilder's "Base Permissions", "Views/Menus", "Permission on Views/Menus").

use super::Page;
use crate::error::PageError;
use axum::response::Response;
use minijinja::context;

fn table(
    page: &Page,
    title: &str,
    columns: &[&str],
    rows: Vec<Vec<String>>,
) -> Result<Response, PageError> {
    page.render(
        "security/list.html",
        context! { title => title, columns => columns, rows => rows },
    )
}

fn id_and_name(rows: Vec<(i64, String)>) -> Vec<Vec<String>> {
    rows.into_iter()
        .map(|(id, name)| vec![id.to_string(), name])
        .collect()
}

/// `GET /permissions/list/`.
pub(crate) async fn permissions(page: Page) -> Result<Response, PageError> {
    let rows = id_and_name(page.state.parts.store.list_permissions().await?);
    table(&page, "Permissions", &["Id", "Name"], rows)
}

/// `GET /viewmenus/list/`.
pub(crate) async fn view_menus(page: Page) -> Result<Response, PageError> {
    let rows = id_and_name(page.state.parts.store.list_view_menus().await?);
    table(&page, "View menus", &["Id", "Name"], rows)
}

/// `GET /permissionviews/list/`.
pub(crate) async fn permission_views(page: Page) -> Result<Response, PageError> {
    let rows = page
        .state
        .parts
        .store
        .list_permission_views()
        .await?
        .into_iter()
        .map(|pv| vec![pv.id.0.to_string(), pv.grant.permission, pv.grant.view_menu])
        .collect();
    table(
        &page,
        "Permissions on views",
        &["Id", "Permission", "View menu"],
        rows,
    )
}

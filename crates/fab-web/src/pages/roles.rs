//! Role administration: list, show, add, rename and edit the permissions of a role, delete.
//!
//! Admin and Public are built in: they cannot be renamed or deleted, and Admin's permissions are
//! not edited here (Admin is allowed everything and is re-synchronised at start-up).

use super::{Page, field_errors, parse_id};
use crate::client::ClientInfo;
use crate::error::{Failure, PageError};
use crate::forms::FormData;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::Response;
use fab_core::audit::AuditKind;
use fab_core::rbac::{ADMIN_ROLE, PUBLIC_ROLE, PermissionViewId, Role, RoleId, validate_role_name};
use minijinja::{Value, context};
use std::collections::{BTreeMap, HashSet};

/// `GET /roles/list/`.
pub(crate) async fn list(page: Page) -> Result<Response, PageError> {
    let roles = page.state.parts.store.list_roles().await?;
    page.render(
        "roles/list.html",
        context! {
            roles => roles,
            can_add => page.principal.allows_names("can_add", crate::routes::views::ROLES),
        },
    )
}

async fn load_role(page: &Page, id: &str) -> Result<Role, PageError> {
    page.state
        .parts
        .store
        .role_by_id(RoleId(parse_id(id)?))
        .await?
        .ok_or(PageError(Failure::NotFound))
}

fn is_built_in(role: &Role) -> bool {
    role.name == ADMIN_ROLE || role.name == PUBLIC_ROLE
}

/// The permission checkboxes, grouped by view menu.
async fn grant_groups(
    page: &Page,
    held: &HashSet<PermissionViewId>,
) -> Result<Vec<Value>, PageError> {
    let mut groups: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for pv in page.state.parts.store.list_permission_views().await? {
        groups
            .entry(pv.grant.view_menu.clone())
            .or_default()
            .push(context! {
                id => pv.id.0,
                permission => pv.grant.permission,
                checked => held.contains(&pv.id),
            });
    }
    Ok(groups
        .into_iter()
        .map(|(view_menu, grants)| context! { view_menu => view_menu, grants => grants })
        .collect())
}

/// `GET /roles/show/{id}`.
pub(crate) async fn show(page: Page, Path(id): Path<String>) -> Result<Response, PageError> {
    let role = load_role(&page, &id).await?;
    let grants = page.state.parts.store.role_grants(role.id).await?;
    let views = crate::routes::views::ROLES;
    page.render(
        "roles/show.html",
        context! {
            role => role.clone(),
            grants => grants,
            built_in => is_built_in(&role),
            is_admin => role.name == ADMIN_ROLE,
            can_edit => page.principal.allows_names("can_edit", views),
            can_delete => page.principal.allows_names("can_delete", views),
        },
    )
}

/// `GET /roles/add/`.
pub(crate) async fn add_form(page: Page) -> Result<Response, PageError> {
    page.render(
        "roles/form.html",
        context! { mode => "add", name => "", errors => field_errors(&[]), groups => grant_groups(&page, &HashSet::new()).await? },
    )
}

/// `POST /roles/add/` with `name` and `permissions` (permission-view ids).
pub(crate) async fn add(
    page: Page,
    client: ClientInfo,
    form: FormData,
) -> Result<Response, PageError> {
    let name = form.text("name");
    let selected: Vec<PermissionViewId> = form
        .ids("permissions")?
        .into_iter()
        .map(PermissionViewId)
        .collect();
    let again = |failure: Failure| async {
        let (status, errors, message) = match failure {
            Failure::Invalid(errors) => (StatusCode::UNPROCESSABLE_ENTITY, errors, None),
            Failure::Conflict(message) => (StatusCode::CONFLICT, Vec::new(), Some(message)),
            other => return Err(PageError(other)),
        };
        let held: HashSet<_> = selected.iter().copied().collect();
        page.render_with_status(
            status,
            "roles/form.html",
            context! { mode => "add", name => name.clone(), errors => field_errors(&errors), message => message, groups => grant_groups(&page, &held).await? },
        )
    };
    if let Err(e) = validate_role_name(&name) {
        return again(e.into()).await;
    }
    let store = &page.state.parts.store;
    let event = page
        .audit(
            AuditKind::AdminPermissionChange,
            format!("role:{name}"),
            &client,
        )
        .with_detail(serde_json::json!({ "action": "create" }));
    let role = match store.create_role(&name, &event).await {
        Ok(role) => role,
        Err(error) => return again(error.into()).await,
    };
    if !selected.is_empty() {
        let event = page.audit(AuditKind::AdminPermissionChange, format!("role:{} {}", role.id.0, role.name), &client)
            .with_detail(serde_json::json!({ "action": "set_permissions", "permission_views": selected.iter().map(|p| p.0).collect::<Vec<_>>() }));
        store.set_role_grants(role.id, &selected, &event).await?;
    }
    Ok(crate::flash::redirect_with(
        &page.state,
        &format!("/roles/show/{}", role.id.0),
        &format!("Role {} created.", role.name),
    ))
}

/// `GET /roles/edit/{id}`.
pub(crate) async fn edit_form(page: Page, Path(id): Path<String>) -> Result<Response, PageError> {
    let role = load_role(&page, &id).await?;
    let held: HashSet<_> = page
        .state
        .parts
        .store
        .role_grants(role.id)
        .await?
        .into_iter()
        .map(|pv| pv.id)
        .collect();
    page.render(
        "roles/form.html",
        context! {
            mode => "edit",
            role_id => role.id.0,
            name => role.name.clone(),
            built_in => is_built_in(&role),
            is_admin => role.name == ADMIN_ROLE,
            errors => field_errors(&[]),
            groups => grant_groups(&page, &held).await?,
        },
    )
}

/// `POST /roles/edit/{id}` with `name` and `permissions`.
pub(crate) async fn edit(
    page: Page,
    client: ClientInfo,
    Path(id): Path<String>,
    form: FormData,
) -> Result<Response, PageError> {
    let role = load_role(&page, &id).await?;
    let store = &page.state.parts.store;
    let selected: Vec<PermissionViewId> = form
        .ids("permissions")?
        .into_iter()
        .map(PermissionViewId)
        .collect();
    let name = form.text("name");
    let name = if is_built_in(&role) || name.is_empty() {
        role.name.clone()
    } else {
        name
    };
    if let Err(e) = validate_role_name(&name) {
        let held: HashSet<_> = selected.iter().copied().collect();
        return page.render_with_status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "roles/form.html",
            context! { mode => "edit", role_id => role.id.0, name => name, errors => field_errors(&[e]), groups => grant_groups(&page, &held).await? },
        );
    }
    if name != role.name {
        let event = page
            .audit(
                AuditKind::AdminPermissionChange,
                format!("role:{} {}", role.id.0, role.name),
                &client,
            )
            .with_detail(serde_json::json!({ "action": "rename", "new_name": name }));
        if let Err(error) = store.rename_role(role.id, &name, &event).await {
            let held: HashSet<_> = selected.iter().copied().collect();
            let (status, message) = match Failure::from(error) {
                Failure::Conflict(message) => (StatusCode::CONFLICT, message),
                other => return Err(PageError(other)),
            };
            return page.render_with_status(
                status,
                "roles/form.html",
                context! { mode => "edit", role_id => role.id.0, name => name, message => message, errors => field_errors(&[]), groups => grant_groups(&page, &held).await? },
            );
        }
    }
    if role.name != ADMIN_ROLE {
        let event = page.audit(AuditKind::AdminPermissionChange, format!("role:{} {}", role.id.0, name), &client)
            .with_detail(serde_json::json!({ "action": "set_permissions", "permission_views": selected.iter().map(|p| p.0).collect::<Vec<_>>() }));
        store.set_role_grants(role.id, &selected, &event).await?;
    }
    Ok(crate::flash::redirect_with(
        &page.state,
        &format!("/roles/show/{}", role.id.0),
        &format!("Role {name} saved."),
    ))
}

/// `POST /roles/delete/{id}`.
pub(crate) async fn delete(
    page: Page,
    client: ClientInfo,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let role = load_role(&page, &id).await?;
    if is_built_in(&role) {
        return Err(PageError(Failure::Conflict(format!(
            "{} is a built-in role and cannot be deleted.",
            role.name
        ))));
    }
    let event = page
        .audit(
            AuditKind::AdminPermissionChange,
            format!("role:{} {}", role.id.0, role.name),
            &client,
        )
        .with_detail(serde_json::json!({ "action": "delete" }));
    page.state.parts.store.delete_role(role.id, &event).await?;
    Ok(crate::flash::redirect_with(
        &page.state,
        "/roles/list/",
        &format!("Role {} deleted.", role.name),
    ))
}

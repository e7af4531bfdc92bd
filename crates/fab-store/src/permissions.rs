//! Roles and what they may do, in Flask-AppBuilder's tables: `ab_role`, `ab_permission`,
//! `ab_view_menu`, the grants `ab_permission_view` (a permission on a view menu) and the links
//! `ab_permission_view_role` giving grants to roles.
//!
//! The permission checks made on every request ([`of_roles`], [`of_role_name`]) are one query
//! each. Synchronising the declared grants at start-up is idempotent and safe to run from several
//! instances at once: when another instance inserts the same row first, the unique constraint
//! refuses ours and the sync runs once more, finding the row.

use crate::audit;
use crate::entity::{
    ab_permission, ab_permission_view, ab_permission_view_role, ab_role, ab_user_role, ab_view_menu,
};
use crate::error::{from_db, unique_violation};
use crate::sql_store::{SqlStore, commit};
use crate::users::table_key;
use fab_core::StoreError;
use fab_core::audit::AuditEvent;
use fab_core::rbac::{
    ADMIN_ROLE, ExportedGrant, Grant, PermissionSet, PermissionView, PermissionViewId, Role,
    RoleExport, RoleId, validate_role_name,
};
use fab_core::store::{CleanupReport, RoleSummary, SyncReport};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, DbErr, EntityTrait, JoinType, QueryFilter, QueryOrder,
    QuerySelect, RelationTrait, Select,
};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// Longest permission name `ab_permission.name` holds.
const PERMISSION_MAX: usize = 100;
/// Longest view menu name `ab_view_menu.name` holds.
const VIEW_MENU_MAX: usize = 250;

fn to_role(model: ab_role::Model) -> Role {
    Role {
        id: RoleId(i64::from(model.id)),
        name: model.name,
    }
}

fn role_exists(name: &str) -> StoreError {
    StoreError::Conflict(format!("role `{name}` already exists"))
}

/// The name as stored: trimmed, and refused when it breaks the role-name rules.
fn role_name(name: &str) -> Result<&str, StoreError> {
    validate_role_name(name)
        .map_err(|e| StoreError::Conflict(format!("role name: {}", e.message)))?;
    Ok(name.trim())
}

fn check_grant(grant: &Grant) -> Result<(), StoreError> {
    for (what, value, max) in [
        ("permission", &grant.permission, PERMISSION_MAX),
        ("view menu", &grant.view_menu, VIEW_MENU_MAX),
    ] {
        let length = value.chars().count();
        if length == 0 || length > max {
            return Err(StoreError::Conflict(format!(
                "{what} name `{value}` must have 1 to {max} characters"
            )));
        }
    }
    Ok(())
}

pub(crate) async fn list_roles<C: ConnectionTrait>(
    connection: &C,
) -> Result<Vec<RoleSummary>, StoreError> {
    let roles = ab_role::Entity::find()
        .order_by_asc(ab_role::Column::Name)
        .all(connection)
        .await
        .map_err(from_db)?;
    let users: Vec<(Option<i32>, i64)> = ab_user_role::Entity::find()
        .select_only()
        .column(ab_user_role::Column::RoleId)
        .column_as(Expr::col(ab_user_role::Column::Id).count(), "n")
        .group_by(ab_user_role::Column::RoleId)
        .into_tuple()
        .all(connection)
        .await
        .map_err(from_db)?;
    let grants: Vec<(Option<i32>, i64)> = ab_permission_view_role::Entity::find()
        .select_only()
        .column(ab_permission_view_role::Column::RoleId)
        .column_as(Expr::col(ab_permission_view_role::Column::Id).count(), "n")
        .group_by(ab_permission_view_role::Column::RoleId)
        .into_tuple()
        .all(connection)
        .await
        .map_err(from_db)?;
    let counts = |rows: Vec<(Option<i32>, i64)>| -> HashMap<i32, u64> {
        rows.into_iter()
            .filter_map(|(role, n)| Some((role?, u64::try_from(n).unwrap_or(0))))
            .collect()
    };
    let (users, grants) = (counts(users), counts(grants));
    Ok(roles
        .into_iter()
        .map(|model| RoleSummary {
            user_count: users.get(&model.id).copied().unwrap_or(0),
            grant_count: grants.get(&model.id).copied().unwrap_or(0),
            role: to_role(model),
        })
        .collect())
}

pub(crate) async fn role_by_id<C: ConnectionTrait>(
    connection: &C,
    id: RoleId,
) -> Result<Option<Role>, StoreError> {
    let Some(key) = table_key(id.0) else {
        return Ok(None);
    };
    let found = ab_role::Entity::find_by_id(key)
        .one(connection)
        .await
        .map_err(from_db)?;
    Ok(found.map(to_role))
}

pub(crate) async fn role_by_name<C: ConnectionTrait>(
    connection: &C,
    name: &str,
) -> Result<Option<Role>, StoreError> {
    let found = ab_role::Entity::find()
        .filter(ab_role::Column::Name.eq(name))
        .one(connection)
        .await
        .map_err(from_db)?;
    Ok(found.map(to_role))
}

pub(crate) async fn create_role(
    store: &SqlStore,
    name: &str,
    audit: &AuditEvent,
) -> Result<Role, StoreError> {
    let name = role_name(name)?;
    let transaction = store.begin_write().await?;
    if role_by_name(&transaction, name).await?.is_some() {
        return Err(role_exists(name));
    }
    let key = insert_role(&transaction, name).await?;
    audit::insert(&transaction, audit).await?;
    commit(transaction).await?;
    Ok(Role {
        id: RoleId(i64::from(key)),
        name: name.to_owned(),
    })
}

async fn insert_role<C: ConnectionTrait>(connection: &C, name: &str) -> Result<i32, StoreError> {
    let row = ab_role::ActiveModel {
        id: NotSet,
        name: Set(name.to_owned()),
    };
    ab_role::Entity::insert(row)
        .exec(connection)
        .await
        .map(|inserted| inserted.last_insert_id)
        .map_err(|e| taken_or(e, || role_exists(name)))
}

/// `conflict()` for a unique violation, the usual mapping otherwise.
fn taken_or(err: DbErr, conflict: impl FnOnce() -> StoreError) -> StoreError {
    if unique_violation(&err).is_some() {
        conflict()
    } else {
        from_db(err)
    }
}

pub(crate) async fn rename_role(
    store: &SqlStore,
    id: RoleId,
    name: &str,
    audit: &AuditEvent,
) -> Result<(), StoreError> {
    let name = role_name(name)?;
    let key = table_key(id.0).ok_or(StoreError::NotFound)?;
    let transaction = store.begin_write().await?;
    if role_by_id(&transaction, id).await?.is_none() {
        return Err(StoreError::NotFound);
    }
    if role_by_name(&transaction, name)
        .await?
        .is_some_and(|other| other.id != id)
    {
        return Err(role_exists(name));
    }
    ab_role::Entity::update_many()
        .col_expr(ab_role::Column::Name, Expr::val(name.to_owned()))
        .filter(ab_role::Column::Id.eq(key))
        .exec(&transaction)
        .await
        .map_err(|e| taken_or(e, || role_exists(name)))?;
    audit::insert(&transaction, audit).await?;
    commit(transaction).await
}

pub(crate) async fn delete_role(
    store: &SqlStore,
    id: RoleId,
    audit: &AuditEvent,
) -> Result<(), StoreError> {
    let key = table_key(id.0).ok_or(StoreError::NotFound)?;
    let transaction = store.begin_write().await?;
    ab_user_role::Entity::delete_many()
        .filter(ab_user_role::Column::RoleId.eq(key))
        .exec(&transaction)
        .await
        .map_err(from_db)?;
    ab_permission_view_role::Entity::delete_many()
        .filter(ab_permission_view_role::Column::RoleId.eq(key))
        .exec(&transaction)
        .await
        .map_err(from_db)?;
    let deleted = ab_role::Entity::delete_many()
        .filter(ab_role::Column::Id.eq(key))
        .exec(&transaction)
        .await
        .map_err(from_db)?;
    if deleted.rows_affected == 0 {
        return Err(StoreError::NotFound);
    }
    audit::insert(&transaction, audit).await?;
    commit(transaction).await
}

pub(crate) async fn role_grants<C: ConnectionTrait>(
    connection: &C,
    id: RoleId,
) -> Result<Vec<PermissionView>, StoreError> {
    let key = table_key(id.0).ok_or(StoreError::NotFound)?;
    if role_by_id(connection, id).await?.is_none() {
        return Err(StoreError::NotFound);
    }
    let rows: Vec<(i32, String, String)> = ab_permission_view_role::Entity::find()
        .select_only()
        .column_as(ab_permission_view::Column::Id, "permission_view_id")
        .join(
            JoinType::InnerJoin,
            ab_permission_view_role::Relation::PermissionView.def(),
        )
        .grant_names(JoinType::InnerJoin)
        .filter(ab_permission_view_role::Column::RoleId.eq(key))
        .in_grant_order()
        .into_tuple()
        .all(connection)
        .await
        .map_err(from_db)?;
    Ok(rows.into_iter().map(to_permission_view).collect())
}

/// Query steps every grant-reading query shares.
trait GrantNames: Sized {
    /// Selects `permission_name` and `view_menu_name` of the `ab_permission_view` rows the query
    /// reaches, joining `ab_permission` and `ab_view_menu` with `join` (inner, or left where
    /// FAB's nullable columns may leave a side missing).
    fn grant_names(self, join: JoinType) -> Self;
    /// Orders by view menu, then permission: how pages and exports list grants.
    fn in_grant_order(self) -> Self;
}

impl<E: EntityTrait> GrantNames for Select<E> {
    fn grant_names(self, join: JoinType) -> Self {
        self.column_as(ab_permission::Column::Name, "permission_name")
            .column_as(ab_view_menu::Column::Name, "view_menu_name")
            .join(join, ab_permission_view::Relation::Permission.def())
            .join(join, ab_permission_view::Relation::ViewMenu.def())
    }

    fn in_grant_order(self) -> Self {
        self.order_by_asc(ab_view_menu::Column::Name)
            .order_by_asc(ab_permission::Column::Name)
    }
}

fn to_permission_view((id, permission, view_menu): (i32, String, String)) -> PermissionView {
    PermissionView {
        id: PermissionViewId(i64::from(id)),
        grant: Grant::new(permission, view_menu),
    }
}

pub(crate) async fn set_role_grants(
    store: &SqlStore,
    id: RoleId,
    grants: &[PermissionViewId],
    audit: &AuditEvent,
) -> Result<(), StoreError> {
    let key = table_key(id.0).ok_or(StoreError::NotFound)?;
    let missing = |id: i64| StoreError::Conflict(format!("grant {id} does not exist"));
    let mut wanted = Vec::with_capacity(grants.len());
    for grant in grants {
        wanted.push(table_key(grant.0).ok_or_else(|| missing(grant.0))?);
    }
    wanted.sort_unstable();
    wanted.dedup();
    let transaction = store.begin_write().await?;
    if role_by_id(&transaction, id).await?.is_none() {
        return Err(StoreError::NotFound);
    }
    if !wanted.is_empty() {
        let found: Vec<i32> = ab_permission_view::Entity::find()
            .select_only()
            .column(ab_permission_view::Column::Id)
            .filter(ab_permission_view::Column::Id.is_in(wanted.clone()))
            .into_tuple()
            .all(&transaction)
            .await
            .map_err(from_db)?;
        if let Some(absent) = wanted.iter().find(|key| !found.contains(key)) {
            return Err(missing(i64::from(*absent)));
        }
    }
    ab_permission_view_role::Entity::delete_many()
        .filter(ab_permission_view_role::Column::RoleId.eq(key))
        .exec(&transaction)
        .await
        .map_err(from_db)?;
    link_grants(&transaction, key, &wanted).await?;
    audit::insert(&transaction, audit).await?;
    commit(transaction).await
}

async fn link_grants<C: ConnectionTrait>(
    connection: &C,
    role: i32,
    permission_views: &[i32],
) -> Result<(), StoreError> {
    if permission_views.is_empty() {
        return Ok(());
    }
    let rows =
        permission_views
            .iter()
            .map(|permission_view| ab_permission_view_role::ActiveModel {
                id: NotSet,
                permission_view_id: Set(Some(*permission_view)),
                role_id: Set(Some(role)),
            });
    ab_permission_view_role::Entity::insert_many(rows)
        .exec_without_returning(connection)
        .await
        .map_err(|e| {
            taken_or(e, || {
                StoreError::Conflict("the role was given the same grant concurrently".into())
            })
        })?;
    Ok(())
}

pub(crate) async fn of_roles<C: ConnectionTrait>(
    connection: &C,
    roles: &[RoleId],
) -> Result<PermissionSet, StoreError> {
    let keys: Vec<i32> = roles.iter().filter_map(|r| table_key(r.0)).collect();
    if keys.is_empty() {
        return Ok(PermissionSet::none());
    }
    permission_set(connection, ab_role::Column::Id.is_in(keys)).await
}

pub(crate) async fn of_role_name<C: ConnectionTrait>(
    connection: &C,
    name: &str,
) -> Result<PermissionSet, StoreError> {
    permission_set(connection, ab_role::Column::Name.eq(name)).await
}

/// The grants of the roles matching `roles`, and whether Admin is among them: one query, a row
/// per role and grant (a role without grants still yields its name).
async fn permission_set<C: ConnectionTrait>(
    connection: &C,
    roles: Expr,
) -> Result<PermissionSet, StoreError> {
    let rows: Vec<(String, Option<String>, Option<String>)> = ab_role::Entity::find()
        .select_only()
        .column_as(ab_role::Column::Name, "role_name")
        .join(
            JoinType::LeftJoin,
            ab_permission_view_role::Relation::Role.def().rev(),
        )
        .join(
            JoinType::LeftJoin,
            ab_permission_view_role::Relation::PermissionView.def(),
        )
        .grant_names(JoinType::LeftJoin)
        .filter(roles)
        .into_tuple()
        .all(connection)
        .await
        .map_err(from_db)?;
    let admin = rows.iter().any(|(role, _, _)| role == ADMIN_ROLE);
    let grants = rows
        .into_iter()
        .filter_map(|(_, permission, view_menu)| Some(Grant::new(permission?, view_menu?)));
    Ok(PermissionSet::new(grants, admin))
}

pub(crate) async fn list_permissions<C: ConnectionTrait>(
    connection: &C,
) -> Result<Vec<(i64, String)>, StoreError> {
    let rows = ab_permission::Entity::find()
        .order_by_asc(ab_permission::Column::Name)
        .all(connection)
        .await
        .map_err(from_db)?;
    Ok(rows
        .into_iter()
        .map(|row| (i64::from(row.id), row.name))
        .collect())
}

pub(crate) async fn list_view_menus<C: ConnectionTrait>(
    connection: &C,
) -> Result<Vec<(i64, String)>, StoreError> {
    let rows = ab_view_menu::Entity::find()
        .order_by_asc(ab_view_menu::Column::Name)
        .all(connection)
        .await
        .map_err(from_db)?;
    Ok(rows
        .into_iter()
        .map(|row| (i64::from(row.id), row.name))
        .collect())
}

pub(crate) async fn list_permission_views<C: ConnectionTrait>(
    connection: &C,
) -> Result<Vec<PermissionView>, StoreError> {
    let rows: Vec<(i32, String, String)> = ab_permission_view::Entity::find()
        .select_only()
        .column_as(ab_permission_view::Column::Id, "permission_view_id")
        .grant_names(JoinType::InnerJoin)
        .in_grant_order()
        .into_tuple()
        .all(connection)
        .await
        .map_err(from_db)?;
    Ok(rows.into_iter().map(to_permission_view).collect())
}

/// The permissions, view menus and grants that exist, for creating the missing ones.
struct Catalog {
    permissions: HashMap<String, i32>,
    view_menus: HashMap<String, i32>,
    permission_views: HashMap<(i32, i32), i32>,
}

impl Catalog {
    async fn load<C: ConnectionTrait>(connection: &C) -> Result<Self, StoreError> {
        let permissions = ab_permission::Entity::find()
            .all(connection)
            .await
            .map_err(from_db)?
            .into_iter()
            .map(|row| (row.name, row.id))
            .collect();
        let view_menus = ab_view_menu::Entity::find()
            .all(connection)
            .await
            .map_err(from_db)?
            .into_iter()
            .map(|row| (row.name, row.id))
            .collect();
        let permission_views = ab_permission_view::Entity::find()
            .all(connection)
            .await
            .map_err(from_db)?
            .into_iter()
            .filter_map(|row| Some(((row.permission_id?, row.view_menu_id?), row.id)))
            .collect();
        Ok(Self {
            permissions,
            view_menus,
            permission_views,
        })
    }

    /// The key of `grant`'s permission-view row, created (with its permission and view menu)
    /// when missing; true when the permission-view row is new.
    async fn ensure<C: ConnectionTrait>(
        &mut self,
        connection: &C,
        grant: &Grant,
    ) -> Result<(i32, bool), StoreError> {
        check_grant(grant)?;
        let permission = match self.permissions.get(&grant.permission) {
            Some(key) => *key,
            None => {
                let row = ab_permission::ActiveModel {
                    id: NotSet,
                    name: Set(grant.permission.clone()),
                };
                let key = ab_permission::Entity::insert(row)
                    .exec(connection)
                    .await
                    .map_err(|e| taken_or(e, || concurrent(grant)))?
                    .last_insert_id;
                self.permissions.insert(grant.permission.clone(), key);
                key
            }
        };
        let view_menu = match self.view_menus.get(&grant.view_menu) {
            Some(key) => *key,
            None => {
                let row = ab_view_menu::ActiveModel {
                    id: NotSet,
                    name: Set(grant.view_menu.clone()),
                };
                let key = ab_view_menu::Entity::insert(row)
                    .exec(connection)
                    .await
                    .map_err(|e| taken_or(e, || concurrent(grant)))?
                    .last_insert_id;
                self.view_menus.insert(grant.view_menu.clone(), key);
                key
            }
        };
        if let Some(key) = self.permission_views.get(&(permission, view_menu)) {
            return Ok((*key, false));
        }
        let row = ab_permission_view::ActiveModel {
            id: NotSet,
            permission_id: Set(Some(permission)),
            view_menu_id: Set(Some(view_menu)),
        };
        let key = ab_permission_view::Entity::insert(row)
            .exec(connection)
            .await
            .map_err(|e| taken_or(e, || concurrent(grant)))?
            .last_insert_id;
        self.permission_views.insert((permission, view_menu), key);
        Ok((key, true))
    }
}

fn concurrent(grant: &Grant) -> StoreError {
    StoreError::Conflict(format!("`{grant}` was created concurrently"))
}

/// The key of the role named `name`, created when missing.
async fn ensure_role<C: ConnectionTrait>(connection: &C, name: &str) -> Result<i32, StoreError> {
    let name = role_name(name)?;
    match role_by_name(connection, name).await? {
        Some(role) => table_key(role.id.0)
            .ok_or_else(|| StoreError::Internal(format!("role id {} out of range", role.id.0))),
        None => insert_role(connection, name).await,
    }
}

/// The permission-view keys role `role` holds.
async fn held_grants<C: ConnectionTrait>(
    connection: &C,
    role: i32,
) -> Result<HashSet<i32>, StoreError> {
    let held: Vec<Option<i32>> = ab_permission_view_role::Entity::find()
        .select_only()
        .column(ab_permission_view_role::Column::PermissionViewId)
        .filter(ab_permission_view_role::Column::RoleId.eq(role))
        .into_tuple()
        .all(connection)
        .await
        .map_err(from_db)?;
    Ok(held.into_iter().flatten().collect())
}

pub(crate) async fn sync(
    store: &SqlStore,
    declared: &[Grant],
    admin_role: &str,
    public_role: &str,
) -> Result<SyncReport, StoreError> {
    /// Passes before giving up; each lost race means another instance committed rows this one
    /// will find on the next pass.
    const ATTEMPTS: usize = 3;
    let mut attempt = 1;
    loop {
        match sync_once(store, declared, admin_role, public_role).await {
            Err(StoreError::Conflict(reason)) if attempt < ATTEMPTS => {
                tracing::debug!(%reason, attempt, "permission sync raced another instance; retrying");
                attempt += 1;
            }
            other => return other,
        }
    }
}

async fn sync_once(
    store: &SqlStore,
    declared: &[Grant],
    admin_role: &str,
    public_role: &str,
) -> Result<SyncReport, StoreError> {
    let declared: BTreeSet<&Grant> = declared.iter().collect();
    let transaction = store.begin_write().await?;
    let mut catalog = Catalog::load(&transaction).await?;
    let mut report = SyncReport::default();
    let mut declared_keys = Vec::with_capacity(declared.len());
    for grant in declared {
        let (key, created) = catalog.ensure(&transaction, grant).await?;
        if created {
            report.created += 1;
        }
        declared_keys.push(key);
    }
    let admin = ensure_role(&transaction, admin_role).await?;
    ensure_role(&transaction, public_role).await?;
    let held = held_grants(&transaction, admin).await?;
    let missing: Vec<i32> = declared_keys
        .into_iter()
        .filter(|key| !held.contains(key))
        .collect();
    link_grants(&transaction, admin, &missing).await?;
    report.granted_to_admin = u64::try_from(missing.len()).unwrap_or(u64::MAX);
    commit(transaction).await?;
    Ok(report)
}

pub(crate) async fn cleanup(
    store: &SqlStore,
    declared: &[Grant],
    audit: &AuditEvent,
) -> Result<CleanupReport, StoreError> {
    let declared: HashSet<(&str, &str)> = declared
        .iter()
        .map(|g| (g.permission.as_str(), g.view_menu.as_str()))
        .collect();
    let transaction = store.begin_write().await?;
    // Left joins: FAB's columns are nullable, and a row missing either side is declared by no
    // route, so it goes too.
    let rows: Vec<(i32, Option<String>, Option<String>)> = ab_permission_view::Entity::find()
        .select_only()
        .column_as(ab_permission_view::Column::Id, "permission_view_id")
        .grant_names(JoinType::LeftJoin)
        .into_tuple()
        .all(&transaction)
        .await
        .map_err(from_db)?;
    let mut report = CleanupReport::default();
    let mut undeclared = Vec::new();
    for (key, permission, view_menu) in rows {
        let is_declared = match (&permission, &view_menu) {
            (Some(p), Some(v)) => declared.contains(&(p.as_str(), v.as_str())),
            _ => false,
        };
        if !is_declared {
            undeclared.push(key);
            report.permission_views.push(Grant::new(
                permission.unwrap_or_default(),
                view_menu.unwrap_or_default(),
            ));
        }
    }
    if !undeclared.is_empty() {
        ab_permission_view_role::Entity::delete_many()
            .filter(ab_permission_view_role::Column::PermissionViewId.is_in(undeclared.clone()))
            .exec(&transaction)
            .await
            .map_err(from_db)?;
        ab_permission_view::Entity::delete_many()
            .filter(ab_permission_view::Column::Id.is_in(undeclared))
            .exec(&transaction)
            .await
            .map_err(from_db)?;
    }
    let used: Vec<(Option<i32>, Option<i32>)> = ab_permission_view::Entity::find()
        .select_only()
        .column(ab_permission_view::Column::PermissionId)
        .column(ab_permission_view::Column::ViewMenuId)
        .into_tuple()
        .all(&transaction)
        .await
        .map_err(from_db)?;
    let used_permissions: HashSet<i32> = used.iter().filter_map(|(p, _)| *p).collect();
    let used_view_menus: HashSet<i32> = used.iter().filter_map(|(_, v)| *v).collect();

    let orphans: Vec<ab_permission::Model> = ab_permission::Entity::find()
        .all(&transaction)
        .await
        .map_err(from_db)?
        .into_iter()
        .filter(|row| !used_permissions.contains(&row.id))
        .collect();
    if !orphans.is_empty() {
        ab_permission::Entity::delete_many()
            .filter(ab_permission::Column::Id.is_in(orphans.iter().map(|row| row.id)))
            .exec(&transaction)
            .await
            .map_err(from_db)?;
    }
    report.permissions = orphans.into_iter().map(|row| row.name).collect();

    let orphans: Vec<ab_view_menu::Model> = ab_view_menu::Entity::find()
        .all(&transaction)
        .await
        .map_err(from_db)?
        .into_iter()
        .filter(|row| !used_view_menus.contains(&row.id))
        .collect();
    if !orphans.is_empty() {
        ab_view_menu::Entity::delete_many()
            .filter(ab_view_menu::Column::Id.is_in(orphans.iter().map(|row| row.id)))
            .exec(&transaction)
            .await
            .map_err(from_db)?;
    }
    report.view_menus = orphans.into_iter().map(|row| row.name).collect();

    audit::insert(&transaction, audit).await?;
    commit(transaction).await?;
    report.permission_views.sort();
    report.permissions.sort();
    report.view_menus.sort();
    Ok(report)
}

pub(crate) async fn export_roles<C: ConnectionTrait>(
    connection: &C,
) -> Result<Vec<RoleExport>, StoreError> {
    let roles = ab_role::Entity::find()
        .order_by_asc(ab_role::Column::Name)
        .all(connection)
        .await
        .map_err(from_db)?;
    let rows: Vec<(Option<i32>, String, String)> = ab_permission_view_role::Entity::find()
        .select_only()
        .column_as(ab_permission_view_role::Column::RoleId, "role_id")
        .join(
            JoinType::InnerJoin,
            ab_permission_view_role::Relation::PermissionView.def(),
        )
        .grant_names(JoinType::InnerJoin)
        .in_grant_order()
        .into_tuple()
        .all(connection)
        .await
        .map_err(from_db)?;
    let mut grants: BTreeMap<i32, Vec<ExportedGrant>> = BTreeMap::new();
    for (role, permission, view_menu) in rows {
        if let Some(role) = role {
            grants
                .entry(role)
                .or_default()
                .push(ExportedGrant::from(&Grant::new(permission, view_menu)));
        }
    }
    Ok(roles
        .into_iter()
        .map(|role| RoleExport {
            permissions: grants.remove(&role.id).unwrap_or_default(),
            name: role.name,
        })
        .collect())
}

pub(crate) async fn import_roles(
    store: &SqlStore,
    roles: &[RoleExport],
    audit: &AuditEvent,
) -> Result<u64, StoreError> {
    for role in roles {
        role_name(&role.name)?;
        for grant in &role.permissions {
            check_grant(&Grant::from(grant))?;
        }
    }
    let transaction = store.begin_write().await?;
    let mut catalog = Catalog::load(&transaction).await?;
    let mut touched = BTreeSet::new();
    for role in roles {
        let key = ensure_role(&transaction, &role.name).await?;
        let mut held = held_grants(&transaction, key).await?;
        let mut added = Vec::new();
        for grant in &role.permissions {
            let (permission_view, _) = catalog.ensure(&transaction, &Grant::from(grant)).await?;
            if held.insert(permission_view) {
                added.push(permission_view);
            }
        }
        link_grants(&transaction, key, &added).await?;
        touched.insert(key);
    }
    audit::insert(&transaction, audit).await?;
    commit(transaction).await?;
    Ok(u64::try_from(touched.len()).unwrap_or(u64::MAX))
}

//! Users (`ab_user`) and their role links (`ab_user_role`).
//!
//! Usernames and emails are unique case-insensitively: lookups compare `lower(column)` with
//! `lower(value)`, both computed by the database, which is also what the unique indexes of the
//! schema use, so the check before a write and the constraint behind it always agree. The check
//! gives the readable conflict; the constraint catches the race the check cannot, and its
//! violation is reported with the same words.

use crate::audit;
use crate::entity::{ab_role, ab_user, ab_user_role, fab_session};
use crate::error::{from_db, is_foreign_key_violation, unique_violation};
use crate::sql_store::{SqlStore, commit};
use crate::timestamp;
use chrono::{DateTime, Utc};
use fab_core::StoreError;
use fab_core::audit::AuditEvent;
use fab_core::rbac::RoleId;
use fab_core::secret::Secret;
use fab_core::store::{Page, UserQuery};
use fab_core::user::{
    EMAIL_MAX, NAME_MAX, NewUser, RoleRef, USERNAME_MAX, User, UserId, UserProfile,
};
use sea_orm::sea_query::{BinOper, Expr, ExprTrait, Func, Order};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, JoinType, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect, RelationTrait,
};
use std::collections::HashMap;

/// Longest password hash `ab_user.password` holds.
const PASSWORD_MAX: usize = 256;
/// Largest page of a listing.
const PAGE_SIZE_MAX: u64 = 500;

/// The key of a FAB table row for a core id; None when no row can have it (FAB keys are 32-bit).
pub(crate) fn table_key(id: i64) -> Option<i32> {
    i32::try_from(id).ok()
}

/// The user with key `id`.
pub(crate) async fn by_id<C: ConnectionTrait>(
    connection: &C,
    id: UserId,
) -> Result<Option<User>, StoreError> {
    match table_key(id.0) {
        Some(key) => load(connection, key).await,
        None => Ok(None),
    }
}

/// The user whose username, or else whose email, equals `login` case-insensitively.
pub(crate) async fn by_login<C: ConnectionTrait>(
    connection: &C,
    login: &str,
) -> Result<Option<User>, StoreError> {
    let login = login.trim();
    if login.is_empty() {
        return Ok(None);
    }
    // Username first: a username may look like another user's email address.
    for column in [ab_user::Column::Username, ab_user::Column::Email] {
        let found = ab_user::Entity::find()
            .filter(lower_equals(column, login))
            .one(connection)
            .await
            .map_err(from_db)?;
        if let Some(model) = found {
            return with_roles(connection, vec![model])
                .await
                .map(|mut users| users.pop());
        }
    }
    Ok(None)
}

/// One page of users ordered by username, filtered by `query.search`.
pub(crate) async fn list<C: ConnectionTrait>(
    connection: &C,
    query: &UserQuery,
) -> Result<Page<User>, StoreError> {
    let page_size = query.page_size.clamp(1, PAGE_SIZE_MAX);
    let mut select = ab_user::Entity::find();
    if let Some(search) = query
        .search
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        select = select.filter(search_condition(search));
    }
    let total = select.clone().count(connection).await.map_err(from_db)?;
    let offset = query.page.saturating_mul(page_size);
    let items = if offset >= total {
        Vec::new()
    } else {
        let models = select
            .order_by(lower(ab_user::Column::Username), Order::Asc)
            .order_by_asc(ab_user::Column::Username)
            .order_by_asc(ab_user::Column::Id)
            .offset(offset)
            .limit(page_size)
            .all(connection)
            .await
            .map_err(from_db)?;
        with_roles(connection, models).await?
    };
    Ok(Page {
        items,
        total,
        page: query.page,
        page_size,
    })
}

/// Number of users.
pub(crate) async fn count<C: ConnectionTrait>(connection: &C) -> Result<u64, StoreError> {
    ab_user::Entity::find()
        .count(connection)
        .await
        .map_err(from_db)
}

/// Number of active users holding the role named `role`.
pub(crate) async fn count_active_with_role<C: ConnectionTrait>(
    connection: &C,
    role: &str,
) -> Result<u64, StoreError> {
    ab_user_role::Entity::find()
        .join(JoinType::InnerJoin, ab_user_role::Relation::Role.def())
        .join(JoinType::InnerJoin, ab_user_role::Relation::User.def())
        .filter(ab_role::Column::Name.eq(role))
        .filter(ab_user::Column::Active.eq(true))
        .count(connection)
        .await
        .map_err(from_db)
}

pub(crate) async fn create(
    store: &SqlStore,
    user: &NewUser,
    audit: &AuditEvent,
) -> Result<User, StoreError> {
    let profile = &user.profile;
    check_sizes(profile)?;
    check_password_size(&user.password_hash)?;
    let created_by = user_reference(user.created_by)?;
    let transaction = store.begin_write().await?;
    check_unique(&transaction, profile, None).await?;
    let roles = existing_roles(&transaction, &profile.roles).await?;
    let at = timestamp::to_db(audit.at);
    let row = ab_user::ActiveModel {
        id: NotSet,
        first_name: Set(profile.first_name.clone()),
        last_name: Set(profile.last_name.clone()),
        username: Set(profile.username.clone()),
        password: Set(Some(user.password_hash.expose().to_owned())),
        active: Set(Some(profile.active)),
        email: Set(profile.email.clone()),
        last_login: Set(None),
        login_count: Set(Some(0)),
        fail_login_count: Set(Some(0)),
        created_on: Set(Some(at)),
        changed_on: Set(Some(at)),
        created_by_fk: Set(created_by),
        changed_by_fk: Set(created_by),
    };
    let key = ab_user::Entity::insert(row)
        .exec(&transaction)
        .await
        .map_err(|e| write_error(e, profile))?
        .last_insert_id;
    link_roles(&transaction, key, &roles).await?;
    audit::insert(&transaction, audit).await?;
    let created = load(&transaction, key)
        .await?
        .ok_or_else(|| StoreError::Internal("the user just inserted cannot be read".into()))?;
    commit(transaction).await?;
    Ok(created)
}

pub(crate) async fn update(
    store: &SqlStore,
    id: UserId,
    profile: &UserProfile,
    changed_by: Option<UserId>,
    audit: &AuditEvent,
) -> Result<User, StoreError> {
    check_sizes(profile)?;
    let key = table_key(id.0).ok_or(StoreError::NotFound)?;
    let changed_by = user_reference(changed_by)?;
    let transaction = store.begin_write().await?;
    let exists = ab_user::Entity::find_by_id(key)
        .count(&transaction)
        .await
        .map_err(from_db)?;
    if exists == 0 {
        return Err(StoreError::NotFound);
    }
    check_unique(&transaction, profile, Some(key)).await?;
    let roles = existing_roles(&transaction, &profile.roles).await?;
    let updated = ab_user::Entity::update_many()
        .col_expr(
            ab_user::Column::FirstName,
            Expr::val(profile.first_name.clone()),
        )
        .col_expr(
            ab_user::Column::LastName,
            Expr::val(profile.last_name.clone()),
        )
        .col_expr(
            ab_user::Column::Username,
            Expr::val(profile.username.clone()),
        )
        .col_expr(ab_user::Column::Email, Expr::val(profile.email.clone()))
        .col_expr(ab_user::Column::Active, Expr::val(profile.active))
        .col_expr(
            ab_user::Column::ChangedOn,
            Expr::val(timestamp::to_db(audit.at)),
        )
        .col_expr(ab_user::Column::ChangedByFk, Expr::val(changed_by))
        .filter(ab_user::Column::Id.eq(key))
        .exec(&transaction)
        .await
        .map_err(|e| write_error(e, profile))?;
    if updated.rows_affected == 0 {
        return Err(StoreError::NotFound);
    }
    ab_user_role::Entity::delete_many()
        .filter(ab_user_role::Column::UserId.eq(key))
        .exec(&transaction)
        .await
        .map_err(from_db)?;
    link_roles(&transaction, key, &roles).await?;
    if !profile.active {
        delete_sessions(&transaction, key).await?;
    }
    audit::insert(&transaction, audit).await?;
    let user = load(&transaction, key).await?.ok_or(StoreError::NotFound)?;
    commit(transaction).await?;
    Ok(user)
}

pub(crate) async fn delete(
    store: &SqlStore,
    id: UserId,
    audit: &AuditEvent,
) -> Result<(), StoreError> {
    let key = table_key(id.0).ok_or(StoreError::NotFound)?;
    let transaction = store.begin_write().await?;
    ab_user_role::Entity::delete_many()
        .filter(ab_user_role::Column::UserId.eq(key))
        .exec(&transaction)
        .await
        .map_err(from_db)?;
    delete_sessions(&transaction, key).await?;
    // Users this one created or changed keep existing; they just forget who did it.
    for column in [ab_user::Column::CreatedByFk, ab_user::Column::ChangedByFk] {
        ab_user::Entity::update_many()
            .col_expr(column, Expr::val(Option::<i32>::None))
            .filter(column.eq(key))
            .exec(&transaction)
            .await
            .map_err(from_db)?;
    }
    // Application tables may reference users too (FAB's AuditMixin adds `created_by_fk` to
    // models); those rows decide, and the user stays.
    let deleted = ab_user::Entity::delete_many()
        .filter(ab_user::Column::Id.eq(key))
        .exec(&transaction)
        .await
        .map_err(|e| {
            if is_foreign_key_violation(&e) {
                StoreError::Conflict(format!(
                    "user {id} is still referenced by other records; disable the user instead"
                ))
            } else {
                from_db(e)
            }
        })?;
    if deleted.rows_affected == 0 {
        return Err(StoreError::NotFound);
    }
    audit::insert(&transaction, audit).await?;
    commit(transaction).await
}

/// Sets `active`; disabling also ends the user's sessions stored here, in the same transaction.
pub(crate) async fn set_active(
    store: &SqlStore,
    id: UserId,
    active: bool,
    changed_by: Option<UserId>,
    audit: &AuditEvent,
) -> Result<(), StoreError> {
    let key = table_key(id.0).ok_or(StoreError::NotFound)?;
    let changed_by = user_reference(changed_by)?;
    let transaction = store.begin_write().await?;
    let updated = ab_user::Entity::update_many()
        .col_expr(ab_user::Column::Active, Expr::val(active))
        .col_expr(
            ab_user::Column::ChangedOn,
            Expr::val(timestamp::to_db(audit.at)),
        )
        .col_expr(ab_user::Column::ChangedByFk, Expr::val(changed_by))
        .filter(ab_user::Column::Id.eq(key))
        .exec(&transaction)
        .await
        .map_err(reference_error)?;
    if updated.rows_affected == 0 {
        return Err(StoreError::NotFound);
    }
    if !active {
        delete_sessions(&transaction, key).await?;
    }
    audit::insert(&transaction, audit).await?;
    commit(transaction).await
}

/// Stores a new hash. An audited change also records when and by whom; a silent rehash on
/// login (no audit event) changes nothing but the hash.
pub(crate) async fn set_password_hash(
    store: &SqlStore,
    id: UserId,
    hash: &Secret,
    changed_by: Option<UserId>,
    audit: Option<&AuditEvent>,
) -> Result<(), StoreError> {
    check_password_size(hash)?;
    let key = table_key(id.0).ok_or(StoreError::NotFound)?;
    let changed_by = user_reference(changed_by)?;
    let transaction = store.begin_write().await?;
    let mut update = ab_user::Entity::update_many()
        .col_expr(
            ab_user::Column::Password,
            Expr::val(hash.expose().to_owned()),
        )
        .filter(ab_user::Column::Id.eq(key));
    if let Some(audit) = audit {
        update = update
            .col_expr(
                ab_user::Column::ChangedOn,
                Expr::val(timestamp::to_db(audit.at)),
            )
            .col_expr(ab_user::Column::ChangedByFk, Expr::val(changed_by));
    }
    let updated = update.exec(&transaction).await.map_err(reference_error)?;
    if updated.rows_affected == 0 {
        return Err(StoreError::NotFound);
    }
    if let Some(audit) = audit {
        audit::insert(&transaction, audit).await?;
    }
    commit(transaction).await
}

pub(crate) async fn record_login_success(
    store: &SqlStore,
    id: UserId,
    at: DateTime<Utc>,
    audit: &AuditEvent,
) -> Result<(), StoreError> {
    let key = table_key(id.0).ok_or(StoreError::NotFound)?;
    let transaction = store.begin_write().await?;
    let updated = ab_user::Entity::update_many()
        .col_expr(
            ab_user::Column::LoginCount,
            incremented(ab_user::Column::LoginCount),
        )
        .col_expr(ab_user::Column::LastLogin, Expr::val(timestamp::to_db(at)))
        .col_expr(ab_user::Column::FailLoginCount, Expr::val(0))
        .filter(ab_user::Column::Id.eq(key))
        .exec(&transaction)
        .await
        .map_err(from_db)?;
    if updated.rows_affected == 0 {
        return Err(StoreError::NotFound);
    }
    audit::insert(&transaction, audit).await?;
    commit(transaction).await
}

pub(crate) async fn record_login_failure(
    store: &SqlStore,
    id: UserId,
    audit: &AuditEvent,
) -> Result<(), StoreError> {
    let key = table_key(id.0).ok_or(StoreError::NotFound)?;
    let transaction = store.begin_write().await?;
    let updated = ab_user::Entity::update_many()
        .col_expr(
            ab_user::Column::FailLoginCount,
            incremented(ab_user::Column::FailLoginCount),
        )
        .filter(ab_user::Column::Id.eq(key))
        .exec(&transaction)
        .await
        .map_err(from_db)?;
    if updated.rows_affected == 0 {
        return Err(StoreError::NotFound);
    }
    audit::insert(&transaction, audit).await?;
    commit(transaction).await
}

/// `COALESCE(column, 0) + 1`: FAB leaves the counters NULL until the first login.
fn incremented(column: ab_user::Column) -> Expr {
    Expr::expr(Func::coalesce([Expr::col(column), Expr::val(0)])).add(1)
}

fn lower(column: ab_user::Column) -> Expr {
    Expr::expr(Func::lower(Expr::col((ab_user::Entity, column))))
}

fn lower_equals(column: ab_user::Column, value: &str) -> Expr {
    lower(column).eq(Func::lower(Expr::val(value.to_owned())))
}

/// The escape character of LIKE patterns; `!` needs no quoting in either dialect's literals.
const LIKE_ESCAPE: char = '!';

/// `value` as a LIKE pattern matching itself: `%`, `_` and the escape character lose their
/// wildcard meaning.
fn like_literal(value: &str) -> String {
    let mut pattern = String::with_capacity(value.len() + 2);
    for c in value.chars() {
        if matches!(c, '%' | '_' | LIKE_ESCAPE) {
            pattern.push(LIKE_ESCAPE);
        }
        pattern.push(c);
    }
    pattern
}

/// `lower(column) LIKE lower('%search%') ESCAPE '!'` over username, names and email. Both sides
/// are lowered by the database (PostgreSQL's LIKE is case-sensitive, SQLite's only for
/// non-ASCII), so both backends match the same rows.
fn search_condition(search: &str) -> Condition {
    let pattern = format!("%{}%", like_literal(search));
    let matches = |column: ab_user::Column| {
        let right = Expr::expr(Func::lower(Expr::val(pattern.clone())))
            .binary(BinOper::Escape, Expr::Constant(LIKE_ESCAPE.into()));
        lower(column).binary(BinOper::Like, right)
    };
    Condition::any()
        .add(matches(ab_user::Column::Username))
        .add(matches(ab_user::Column::FirstName))
        .add(matches(ab_user::Column::LastName))
        .add(matches(ab_user::Column::Email))
}

/// Refuses values the columns cannot hold. SQLite would store them anyway and PostgreSQL fail
/// with an internal error, so the store checks them itself and both behave the same.
fn check_sizes(profile: &UserProfile) -> Result<(), StoreError> {
    for (field, value, max) in [
        ("username", &profile.username, USERNAME_MAX),
        ("first name", &profile.first_name, NAME_MAX),
        ("last name", &profile.last_name, NAME_MAX),
        ("email", &profile.email, EMAIL_MAX),
    ] {
        if value.chars().count() > max {
            return Err(StoreError::Conflict(format!(
                "{field} is longer than {max} characters"
            )));
        }
    }
    Ok(())
}

fn check_password_size(hash: &Secret) -> Result<(), StoreError> {
    if hash.char_count() > PASSWORD_MAX {
        return Err(StoreError::Conflict(format!(
            "password hash is longer than {PASSWORD_MAX} characters"
        )));
    }
    Ok(())
}

fn user_reference(id: Option<UserId>) -> Result<Option<i32>, StoreError> {
    id.map(|id| {
        table_key(id.0).ok_or_else(|| StoreError::Conflict(format!("user {id} does not exist")))
    })
    .transpose()
}

async fn check_unique<C: ConnectionTrait>(
    connection: &C,
    profile: &UserProfile,
    except: Option<i32>,
) -> Result<(), StoreError> {
    for column in [ab_user::Column::Username, ab_user::Column::Email] {
        let value = match column {
            ab_user::Column::Username => &profile.username,
            _ => &profile.email,
        };
        let mut query = ab_user::Entity::find().filter(lower_equals(column, value));
        if let Some(key) = except {
            query = query.filter(ab_user::Column::Id.ne(key));
        }
        if query.count(connection).await.map_err(from_db)? > 0 {
            return Err(match column {
                ab_user::Column::Username => username_taken(profile),
                _ => email_taken(profile),
            });
        }
    }
    Ok(())
}

fn username_taken(profile: &UserProfile) -> StoreError {
    StoreError::Conflict(format!("username `{}` is already taken", profile.username))
}

fn email_taken(profile: &UserProfile) -> StoreError {
    StoreError::Conflict(format!("email `{}` is already registered", profile.email))
}

/// A failed insert or update of `profile`: a unique violation (the race after the check) gets
/// the check's words, telling username from email by the constraint's name, which names the
/// column in both databases (`ab_user_email_key`, `ix_ab_user_email_lower`, `ab_user.email`).
fn write_error(err: sea_orm::DbErr, profile: &UserProfile) -> StoreError {
    match unique_violation(&err) {
        Some(constraint) if constraint.contains("email") => email_taken(profile),
        Some(constraint) if constraint.contains("username") => username_taken(profile),
        _ => reference_error(err),
    }
}

/// A failed write whose foreign keys may point nowhere (`created_by`, `changed_by`).
fn reference_error(err: sea_orm::DbErr) -> StoreError {
    if is_foreign_key_violation(&err) {
        StoreError::Conflict("the user named as creator or editor does not exist".into())
    } else {
        from_db(err)
    }
}

/// The keys of `roles`, all of which must exist.
pub(crate) async fn existing_roles<C: ConnectionTrait>(
    connection: &C,
    roles: &[RoleId],
) -> Result<Vec<i32>, StoreError> {
    let missing = |id: i64| StoreError::Conflict(format!("role {id} does not exist"));
    let mut keys = Vec::with_capacity(roles.len());
    for role in roles {
        keys.push(table_key(role.0).ok_or_else(|| missing(role.0))?);
    }
    keys.sort_unstable();
    keys.dedup();
    if keys.is_empty() {
        return Ok(keys);
    }
    let found: Vec<i32> = ab_role::Entity::find()
        .select_only()
        .column(ab_role::Column::Id)
        .filter(ab_role::Column::Id.is_in(keys.clone()))
        .into_tuple()
        .all(connection)
        .await
        .map_err(from_db)?;
    match keys.iter().find(|key| !found.contains(key)) {
        Some(key) => Err(missing(i64::from(*key))),
        None => Ok(keys),
    }
}

async fn link_roles<C: ConnectionTrait>(
    connection: &C,
    user: i32,
    roles: &[i32],
) -> Result<(), StoreError> {
    if roles.is_empty() {
        return Ok(());
    }
    let rows = roles.iter().map(|role| ab_user_role::ActiveModel {
        id: NotSet,
        user_id: Set(Some(user)),
        role_id: Set(Some(*role)),
    });
    ab_user_role::Entity::insert_many(rows)
        .exec_without_returning(connection)
        .await
        .map_err(from_db)?;
    Ok(())
}

async fn delete_sessions<C: ConnectionTrait>(connection: &C, user: i32) -> Result<(), StoreError> {
    fab_session::Entity::delete_many()
        .filter(fab_session::Column::UserId.eq(user))
        .exec(connection)
        .await
        .map_err(from_db)?;
    Ok(())
}

async fn load<C: ConnectionTrait>(connection: &C, key: i32) -> Result<Option<User>, StoreError> {
    let Some(model) = ab_user::Entity::find_by_id(key)
        .one(connection)
        .await
        .map_err(from_db)?
    else {
        return Ok(None);
    };
    with_roles(connection, vec![model])
        .await
        .map(|mut users| users.pop())
}

/// `models` as users, their roles loaded in one query.
async fn with_roles<C: ConnectionTrait>(
    connection: &C,
    models: Vec<ab_user::Model>,
) -> Result<Vec<User>, StoreError> {
    let mut roles = roles_of(connection, models.iter().map(|m| m.id).collect()).await?;
    Ok(models
        .into_iter()
        .map(|model| {
            let held = roles.remove(&model.id).unwrap_or_default();
            to_user(model, held)
        })
        .collect())
}

async fn roles_of<C: ConnectionTrait>(
    connection: &C,
    users: Vec<i32>,
) -> Result<HashMap<i32, Vec<RoleRef>>, StoreError> {
    let mut roles: HashMap<i32, Vec<RoleRef>> = HashMap::new();
    if users.is_empty() {
        return Ok(roles);
    }
    let rows: Vec<(Option<i32>, i32, String)> = ab_user_role::Entity::find()
        .select_only()
        .column_as(ab_user_role::Column::UserId, "user_id")
        .column_as(ab_role::Column::Id, "role_id")
        .column_as(ab_role::Column::Name, "role_name")
        .join(JoinType::InnerJoin, ab_user_role::Relation::Role.def())
        .filter(ab_user_role::Column::UserId.is_in(users))
        .order_by_asc(ab_role::Column::Name)
        .into_tuple()
        .all(connection)
        .await
        .map_err(from_db)?;
    for (user, id, name) in rows {
        if let Some(user) = user {
            roles.entry(user).or_default().push(RoleRef {
                id: RoleId(i64::from(id)),
                name,
            });
        }
    }
    Ok(roles)
}

fn to_user(model: ab_user::Model, roles: Vec<RoleRef>) -> User {
    User {
        id: UserId(i64::from(model.id)),
        first_name: model.first_name,
        last_name: model.last_name,
        username: model.username,
        email: model.email,
        password_hash: Secret::new(model.password.unwrap_or_default()),
        // FAB treats a NULL `active` as inactive.
        active: model.active.unwrap_or(false),
        last_login: model.last_login.map(timestamp::from_db),
        login_count: model.login_count.map_or(0, i64::from),
        fail_login_count: model.fail_login_count.map_or(0, i64::from),
        created_on: model.created_on.map(timestamp::from_db),
        changed_on: model.changed_on.map(timestamp::from_db),
        created_by: model.created_by_fk.map(|k| UserId(i64::from(k))),
        changed_by: model.changed_by_fk.map(|k| UserId(i64::from(k))),
        roles,
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is the test failing"
)]
mod tests {
    use super::*;

    #[test]
    fn like_wildcards_are_escaped() {
        assert_eq!(like_literal("50%_off!"), "50!%!_off!!");
        assert_eq!(like_literal("alice"), "alice");
    }

    #[test]
    fn keys_out_of_range_name_no_row() {
        assert_eq!(table_key(7), Some(7));
        assert_eq!(table_key(i64::from(i32::MAX) + 1), None);
        assert_eq!(table_key(-1), Some(-1));
    }
}

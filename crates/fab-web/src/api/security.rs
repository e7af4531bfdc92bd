//! Flask-AppBuilder's security API: JWT login and refresh, the caller's own record, and the user
//! list for callers allowed to see it.

use crate::client::ClientInfo;
use crate::error::{ApiError, Failure};
use crate::forms::JsonBody;
use crate::jwt::TokenType;
use crate::login::authenticate;
use crate::principal::{Principal, usable_token_user};
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use fab_core::random::random_token;
use fab_core::secret::Secret;
use fab_core::store::UserQuery;
use fab_core::user::{User, UserId};
use serde::Deserialize;
use serde_json::{Value, json};

/// The body of `POST /api/v1/security/login`.
#[derive(Debug, Deserialize)]
pub(crate) struct LoginBody {
    username: Option<String>,
    password: Option<String>,
    provider: Option<String>,
    #[serde(default)]
    refresh: bool,
}

fn issue(
    state: &AppState,
    user: UserId,
    token_type: TokenType,
    fresh: bool,
) -> Result<String, Failure> {
    let parts = &state.parts;
    let ttl = match token_type {
        TokenType::Access => parts.config.jwt_access_ttl,
        TokenType::Refresh => parts.config.jwt_refresh_ttl,
    };
    state
        .jwt
        .issue(
            user,
            token_type,
            fresh,
            parts.clock.now(),
            ttl,
            random_token(parts.rng.as_ref(), 16),
        )
        .map_err(|e| Failure::Internal(format!("token signing failed: {e}")))
}

/// `POST /api/v1/security/login`.
pub(crate) async fn login(
    State(state): State<AppState>,
    client: ClientInfo,
    JsonBody(body): JsonBody<LoginBody>,
) -> Result<Json<Value>, ApiError> {
    let provider = body.provider.as_deref().unwrap_or("db");
    if provider != "db" {
        return Err(ApiError(Failure::BadRequest(format!(
            "provider `{provider}` is not supported; use \"db\""
        ))));
    }
    let (Some(username), Some(password)) = (body.username, body.password) else {
        return Err(ApiError(Failure::BadRequest(
            "username and password are required".into(),
        )));
    };
    let Some(user) = authenticate(&state, &username, Secret::new(password), &client, "api").await?
    else {
        return Err(ApiError(Failure::Unauthenticated { next: None }));
    };
    let mut answer = json!({ "access_token": issue(&state, user.id, TokenType::Access, true)? });
    if body.refresh {
        answer["refresh_token"] = Value::String(issue(&state, user.id, TokenType::Refresh, false)?);
    }
    Ok(Json(answer))
}

/// `POST /api/v1/security/refresh` with `Authorization: Bearer <refresh token>`.
pub(crate) async fn refresh(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .ok_or(ApiError(Failure::Unauthenticated { next: None }))?;
    let (user_id, claims) = state
        .jwt
        .verify(token, TokenType::Refresh, state.parts.clock.now())
        .ok_or(ApiError(Failure::Unauthenticated { next: None }))?;
    let user = usable_token_user(&state, user_id, claims.iat)
        .await?
        .ok_or(ApiError(Failure::Unauthenticated { next: None }))?;
    Ok(Json(
        json!({ "access_token": issue(&state, user.id, TokenType::Access, false)? }),
    ))
}

fn user_json(user: &User) -> Value {
    json!({
        "id": user.id,
        "username": user.username,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "email": user.email,
        "active": user.active,
        "last_login": user.last_login,
        "login_count": user.login_count,
        "fail_login_count": user.fail_login_count,
        "created_on": user.created_on,
        "changed_on": user.changed_on,
        "roles": user.roles.iter().map(|r| json!({"id": r.id, "name": r.name})).collect::<Vec<_>>(),
    })
}

/// `GET /api/v1/security/me`.
pub(crate) async fn me(principal: Principal) -> Result<Json<Value>, ApiError> {
    let user = principal
        .user()
        .ok_or(ApiError(Failure::Unauthenticated { next: None }))?;
    Ok(Json(json!({ "result": user_json(&user.user) })))
}

/// The query of the user list.
#[derive(Debug, Deserialize)]
pub(crate) struct ListQuery {
    search: Option<String>,
    page: Option<u64>,
    page_size: Option<u64>,
}

/// `GET /api/v1/security/users/?search=&page=&page_size=` (page is zero-based, as FAB's).
pub(crate) async fn list_users(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError(Failure::BadRequest(e.body_text())))?;
    let page_size = query.page_size.unwrap_or(25);
    if !(1..=500).contains(&page_size) {
        return Err(ApiError(Failure::BadRequest(
            "page_size must be between 1 and 500".into(),
        )));
    }
    let page = state
        .parts
        .store
        .list_users(&UserQuery {
            search: query.search.filter(|s| !s.trim().is_empty()),
            page: query.page.unwrap_or(0),
            page_size,
        })
        .await?;
    Ok(Json(json!({
        "count": page.total,
        "ids": page.items.iter().map(|u| u.id).collect::<Vec<_>>(),
        "result": page.items.iter().map(user_json).collect::<Vec<_>>(),
    })))
}

/// `GET /api/v1/security/users/{id}`.
pub(crate) async fn show_user(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let id = id.parse::<i64>().map_err(|_| ApiError(Failure::NotFound))?;
    let user = state
        .parts
        .store
        .user_by_id(UserId(id))
        .await?
        .ok_or(ApiError(Failure::NotFound))?;
    Ok(Json(json!({ "id": user.id, "result": user_json(&user) })))
}

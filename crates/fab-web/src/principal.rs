//! Who is making the request: [`Principal`], resolved once per request from the session cookie or
//! a bearer token, with the permissions that go with it.
//!
//! Rules: a session must exist under the SHA-256 of the cookie value, be within its idle and
//! absolute lifetime, and belong to an active user; otherwise the request is anonymous and the
//! cookie is cleared. A session still awaiting a second factor grants no permission at all.
//! Anonymous requests get the Public role's permissions, as in Flask-AppBuilder.

use crate::jwt::TokenType;
use crate::session_cookie::{clear_cookie, read_cookie};
use crate::state::AppState;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use fab_core::rbac::{Grant, PUBLIC_ROLE, PermissionSet};
use fab_core::session::{SessionCheck, SessionIdHash, SessionStage, SessionToken};
use fab_core::user::{User, UserId};
use std::convert::Infallible;
use std::sync::Arc;

/// How an authenticated user proved who they are on this request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A session cookie; the session's id hash.
    Session(SessionIdHash),
    /// A bearer access token.
    Token,
}

/// A fully authenticated user.
#[derive(Debug, Clone)]
pub struct AuthenticatedUser {
    /// The user, as loaded for this request.
    pub user: User,
    /// The user's evaluated permissions.
    pub permissions: PermissionSet,
    /// How they authenticated.
    pub credential: Credential,
}

/// The requester.
#[derive(Debug, Clone)]
pub enum Principal {
    /// Nobody logged in: the Public role's permissions.
    Anonymous {
        /// Public's permissions.
        permissions: Arc<PermissionSet>,
    },
    /// Password checked, second factor owed: no permissions.
    AwaitingSecondFactor {
        /// The user.
        user_id: UserId,
        /// The partial session.
        session: SessionIdHash,
    },
    /// Logged in.
    User(Arc<AuthenticatedUser>),
}

impl Principal {
    /// Whether `grant` is allowed.
    pub fn allows(&self, grant: &Grant) -> bool {
        match self {
            Principal::Anonymous { permissions } => permissions.allows(grant),
            Principal::AwaitingSecondFactor { .. } => false,
            Principal::User(user) => user.permissions.allows(grant),
        }
    }

    /// Whether `permission` on `view_menu` is allowed.
    pub fn allows_names(&self, permission: &str, view_menu: &str) -> bool {
        match self {
            Principal::Anonymous { permissions } => permissions.allows_names(permission, view_menu),
            Principal::AwaitingSecondFactor { .. } => false,
            Principal::User(user) => user.permissions.allows_names(permission, view_menu),
        }
    }

    /// The logged-in user, if any.
    pub fn user(&self) -> Option<&AuthenticatedUser> {
        match self {
            Principal::User(user) => Some(user),
            _ => None,
        }
    }

    /// The session behind this request, if any (full or partial).
    pub fn session(&self) -> Option<&SessionIdHash> {
        match self {
            Principal::User(user) => match &user.credential {
                Credential::Session(hash) => Some(hash),
                Credential::Token => None,
            },
            Principal::AwaitingSecondFactor { session, .. } => Some(session),
            Principal::Anonymous { .. } => None,
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Principal {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Infallible> {
        Ok(parts
            .extensions
            .get::<Principal>()
            .cloned()
            .unwrap_or_else(|| Principal::Anonymous {
                permissions: Arc::new(PermissionSet::none()),
            }))
    }
}

/// What resolution found wrong with presented credentials (so the response can clear them).
enum Resolved {
    Principal(Principal),
    /// A cookie was presented but leads nowhere: clear it.
    StaleCookie,
    /// Nothing presented, or a bad bearer token (the access check answers 401).
    Nothing,
}

/// Middleware: resolves the [`Principal`] and puts it in the request's extensions.
pub(crate) async fn resolve_principal(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    if never_consults_the_requester(request.uri().path()) {
        return next.run(request).await;
    }
    let resolved = match resolve(&state, request.headers()).await {
        Ok(resolved) => resolved,
        Err(error) => return error.into_response_for(request.uri().path()),
    };
    let clear = matches!(resolved, Resolved::StaleCookie);
    let principal = match resolved {
        Resolved::Principal(principal) => principal,
        Resolved::StaleCookie | Resolved::Nothing => match anonymous(&state).await {
            Ok(principal) => principal,
            Err(error) => return error.into_response_for(request.uri().path()),
        },
    };
    request.extensions_mut().insert(principal);
    let mut response = next.run(request).await;
    if clear && !response.headers().contains_key(header::SET_COOKIE) {
        response.headers_mut().append(
            header::SET_COOKIE,
            clear_cookie(&state.parts.config.session),
        );
    }
    response
}

/// Liveness and readiness probes and static assets answer the same to everyone, so resolving the
/// requester (a session or Public-role lookup in the database) would only put a database round
/// trip on the paths a load balancer hits every few seconds. Their routes are open to anyone, so
/// the access check passes without a principal.
fn never_consults_the_requester(path: &str) -> bool {
    matches!(path, "/health" | "/health/ready") || path.starts_with("/static/")
}

async fn anonymous(state: &AppState) -> Result<Principal, crate::error::Failure> {
    let permissions = state
        .parts
        .store
        .permissions_of_role_name(PUBLIC_ROLE)
        .await?;
    Ok(Principal::Anonymous {
        permissions: Arc::new(permissions),
    })
}

async fn resolve(
    state: &AppState,
    headers: &axum::http::HeaderMap,
) -> Result<Resolved, crate::error::Failure> {
    let parts = &state.parts;
    let now = parts.clock.now();
    if let Some(token) = bearer_token(headers) {
        let Some((user_id, claims)) = state.jwt.verify(token, TokenType::Access, now) else {
            return Ok(Resolved::Nothing);
        };
        let Some(user) = usable_token_user(state, user_id, claims.iat).await? else {
            return Ok(Resolved::Nothing);
        };
        let permissions = permissions_of(state, &user).await?;
        return Ok(Resolved::Principal(Principal::User(Arc::new(
            AuthenticatedUser {
                user,
                permissions,
                credential: Credential::Token,
            },
        ))));
    }

    let settings = &parts.config.session;
    let Some(raw) = read_cookie(headers, settings.cookie_name()) else {
        return Ok(Resolved::Nothing);
    };
    let Some(token) = SessionToken::parse(raw) else {
        return Ok(Resolved::StaleCookie);
    };
    let id_hash = token.id_hash();
    let Some(record) = parts.sessions.find(&id_hash).await? else {
        return Ok(Resolved::StaleCookie);
    };
    match settings.policy.check(&record, now) {
        SessionCheck::IdleExpired | SessionCheck::AbsoluteExpired => {
            parts.sessions.delete(&id_hash).await?;
            return Ok(Resolved::StaleCookie);
        }
        SessionCheck::Valid { touch } => {
            if touch {
                parts.sessions.touch(&id_hash, now).await?;
            }
        }
    }
    let user = match parts.store.user_by_id(record.user_id).await? {
        Some(user) if user.active => user,
        _ => {
            // A disabled or deleted user's session ends here even if revocation missed it.
            parts.sessions.delete(&id_hash).await?;
            return Ok(Resolved::StaleCookie);
        }
    };
    if record.stage == SessionStage::AwaitingSecondFactor {
        return Ok(Resolved::Principal(Principal::AwaitingSecondFactor {
            user_id: user.id,
            session: id_hash,
        }));
    }
    let permissions = permissions_of(state, &user).await?;
    Ok(Resolved::Principal(Principal::User(Arc::new(
        AuthenticatedUser {
            user,
            permissions,
            credential: Credential::Session(id_hash),
        },
    ))))
}

/// The user behind a token issued at `issued_at`, if the token may still be used: the user exists,
/// is active, and has not changed since the token was issued.
pub(crate) async fn usable_token_user(
    state: &AppState,
    user_id: UserId,
    issued_at: i64,
) -> Result<Option<User>, crate::error::Failure> {
    let Some(user) = state.parts.store.user_by_id(user_id).await? else {
        return Ok(None);
    };
    if !user.active {
        return Ok(None);
    }
    if user
        .changed_on
        .is_some_and(|changed| changed.timestamp() > issued_at)
    {
        return Ok(None);
    }
    Ok(Some(user))
}

async fn permissions_of(
    state: &AppState,
    user: &User,
) -> Result<PermissionSet, crate::error::Failure> {
    let roles: Vec<_> = user.roles.iter().map(|r| r.id).collect();
    Ok(state.parts.store.permissions_of_roles(&roles).await?)
}

fn bearer_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

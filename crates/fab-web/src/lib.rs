//! Everything HTTP in fab: the router, extractors, middleware, server-rendered pages, the JSON API
//! and the health endpoints. This is the one place core errors become HTTP responses.
//!
//! Every route is registered once in [`routes::table`] together with the access it needs; the
//! same table builds the router and answers [`declared_grants`], so a route cannot exist without
//! its permission being known to `sync_permissions` and `fab security-cleanup`.
//!
//! Layers, outermost first: client info (IP, scheme and host, believing forwarded headers from
//! trusted proxies only), response headers (so even refusals carry them), request timeout, the
//! per-IP rate limit, HTTPS enforcement, cross-site request refusal, principal resolution
//! (session cookie or bearer token), the per-principal API rate limit, error pages, then per
//! route its body limit and its access check.

mod api;
mod client;
mod csp_report;
mod csrf;
mod error;
mod flash;
mod forms;
mod headers;
mod health;
mod https;
mod jwt;
mod login;
mod pages;
mod principal;
mod ratelimit;
mod routes;
mod security_txt;
mod session_cookie;
mod state;
mod templates;

use axum::Router;
use fab_core::clock::Clock;
use fab_core::config::Config;
use fab_core::password::PasswordHasher;
use fab_core::random::RandomSource;
use fab_core::rbac::Grant;
use fab_core::session::SessionStore;
use fab_core::store::SecurityStore;
use std::sync::Arc;

pub use principal::Principal;
pub use templates::TemplateError;

/// How a request's connection reached fab. The server inserts it into every request's
/// extensions (beside `ConnectInfo<SocketAddr>`); a request without it came over plain TCP.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Transport {
    /// The connection is TLS terminated by fab itself.
    pub tls: bool,
}

/// Why the web layer could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// A template override is unusable.
    #[error(transparent)]
    Template(#[from] TemplateError),
    /// The token signing keys could not be built.
    #[error("token signing keys: {0}")]
    Keys(String),
}

/// The backends and settings the web layer runs on; the `fab` binary chooses and builds them.
#[derive(Clone)]
pub struct AppParts {
    /// Validated configuration.
    pub config: Arc<Config>,
    /// Users, roles, permissions, audit.
    pub store: Arc<dyn SecurityStore>,
    /// Sessions.
    pub sessions: Arc<dyn SessionStore>,
    /// Password hashing with the configured costs.
    pub hasher: Arc<PasswordHasher>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Randomness.
    pub rng: Arc<dyn RandomSource>,
    /// Rate-limit decisions (memory or Redis, behind the configured fail mode).
    pub limiter: Arc<dyn fab_core::ratelimit::RateLimiter>,
    /// Whether emergency limits are in force; kept current by `fab serve`'s watcher.
    pub emergency: Arc<std::sync::atomic::AtomicBool>,
    /// Failed-login counters and account locks.
    pub lockouts: Arc<dyn fab_core::lockout::LockoutStore>,
}

/// Every grant the built-in pages and API declare, for `sync_permissions` at start-up and for
/// `fab security-cleanup`.
pub fn declared_grants() -> Vec<Grant> {
    routes::declared_grants()
}

/// The application router. Serve it with
/// `into_make_service_with_connect_info::<std::net::SocketAddr>()`: the client IP comes from the
/// socket.
///
/// Fails when a template override in `FAB_TEMPLATE_FOLDER` cannot be read or parsed, or the
/// signing keys cannot be derived.
pub fn router(parts: AppParts) -> Result<Router, SetupError> {
    let state = state::AppState::new(parts)?;
    Ok(routes::build(state))
}

//! Health endpoints for load balancers and orchestrators.
//!
//! `GET /health` answers as long as the process serves HTTP (liveness). `GET /health/ready` also
//! asks the database, with a short timeout so a hung database yields a quick 503, never a hung
//! probe; the JSON says which component is not ready, without internal detail.

use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};
use std::time::Duration;

/// How long readiness waits for the database.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

/// `GET /health`.
pub(crate) async fn live() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// `GET /health/ready`.
pub(crate) async fn ready(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    let database = match tokio::time::timeout(READY_TIMEOUT, state.parts.store.ping()).await {
        Ok(Ok(())) => "ok",
        Ok(Err(error)) => {
            tracing::warn!(%error, "readiness: database check failed");
            "unreachable"
        }
        Err(_) => "timeout",
    };
    let ready = database == "ok";
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if ready { "ready" } else { "unavailable" },
            "checks": { "database": database },
        })),
    )
}

/// `GET /health/security`: what protections are in force, as booleans and settings an operator
/// reads at a glance. It shows no secret and nothing beyond what is in force; who may read it is
/// `HEALTH_SECURITY_ACCESS` (trusted networks by default).
pub(crate) async fn security(
    State(state): State<AppState>,
    client: crate::client::ClientInfo,
    principal: crate::principal::Principal,
) -> Result<Json<Value>, crate::error::ApiError> {
    use crate::error::{ApiError, Failure};
    use fab_core::config::HealthAccess;
    let config = &state.parts.config;
    let edge = &config.edge;
    match edge.health_access {
        HealthAccess::Public => {}
        HealthAccess::Trusted => {
            let trusted = client
                .addr
                .is_some_and(|ip| fab_core::net::in_any(&edge.trusted_networks, ip));
            if !trusted {
                return Err(ApiError(Failure::Refused(
                    "/health/security is served to trusted networks only".into(),
                )));
            }
        }
        HealthAccess::Authenticated => match principal.user() {
            Some(user) if user.permissions.is_admin() => {}
            Some(_) => return Err(ApiError(Failure::Forbidden)),
            None => return Err(ApiError(Failure::Unauthenticated { next: None })),
        },
    }
    let session = &config.session;
    Ok(Json(json!({
        "mfa_enabled": false,
        "rate_limiting": config.rate_limit.enabled,
        "rate_limit_backend": match config.rate_limit.backend {
            fab_core::config::LimiterBackend::Memory => "memory",
            fab_core::config::LimiterBackend::Redis => "redis",
        },
        "rate_limit_emergency": state.emergency(),
        "https_enforced": edge.https.enforce,
        "csp_enabled": edge.csp.enabled,
        "csp_report_only": edge.csp.enabled && edge.csp.report_only,
        "hsts_enabled": edge.https.hsts_max_age > 0,
        "tls": edge.tls.is_some(),
        "production": config.is_production(),
        "session_timeout": session.policy.idle_timeout.num_seconds(),
        "session_absolute_lifetime": session.policy.absolute_lifetime.num_seconds(),
        "session_cookie_secure": session.cookie_secure,
        "session_cookie_httponly": session.cookie_http_only,
        "session_cookie_samesite": session.same_site.as_str(),
        "trusted_proxies": edge.trusted_proxies.len(),
        "insecure_overrides": edge.allow_insecure.iter().map(|o| o.name()).collect::<Vec<_>>(),
    })))
}

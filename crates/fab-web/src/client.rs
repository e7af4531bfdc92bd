//! Who is on the other end of the socket: [`ClientInfo`], the client IP and user agent that the
//! audit trail and (later) the rate limiter key on.
//!
//! The IP is the socket peer's. Forwarded headers (X-Forwarded-For, X-Real-IP) are deliberately
//! ignored here: believing them from an untrusted peer would let any client choose the address it
//! is audited and limited under.

use axum::extract::{ConnectInfo, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use fab_core::audit::RequestOrigin;
use std::convert::Infallible;
use std::net::SocketAddr;

/// The client of the current request.
#[derive(Debug, Clone, Default)]
pub(crate) struct ClientInfo {
    /// Socket peer address, when served with connect info.
    pub ip: Option<String>,
    /// The User-Agent header, truncated to 256 characters.
    pub user_agent: Option<String>,
}

impl ClientInfo {
    /// As the audit trail records it.
    pub(crate) fn origin(&self) -> RequestOrigin {
        RequestOrigin {
            ip: self.ip.clone(),
            user_agent: self.user_agent.clone(),
        }
    }
}

/// Middleware: computes [`ClientInfo`] once per request.
pub(crate) async fn attach_client_info(mut request: Request, next: Next) -> Response {
    let ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip().to_canonical().to_string());
    let user_agent = request
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|ua| ua.chars().take(256).collect());
    request
        .extensions_mut()
        .insert(ClientInfo { ip, user_agent });
    next.run(request).await
}

impl<S: Send + Sync> FromRequestParts<S> for ClientInfo {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Infallible> {
        Ok(parts
            .extensions
            .get::<ClientInfo>()
            .cloned()
            .unwrap_or_default())
    }
}

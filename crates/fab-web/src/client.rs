//! Who is on the other end: [`ClientInfo`] — the client IP, whether the request arrived over
//! HTTPS, the host it was sent to, and the user agent. The audit trail, the HTTPS rules and the
//! rate limiter all key on it.
//!
//! Threat: a client that writes `X-Forwarded-For: 10.0.0.1` or `X-Forwarded-Proto: https` itself
//! to choose the address it is audited and limited under, or to look like HTTPS.
//!
//! Rule: forwarded headers (`X-Forwarded-For`, `X-Real-IP`, `X-Forwarded-Proto`,
//! `X-Forwarded-Host`) are believed only when the socket peer is in `TRUSTED_PROXIES`. The client
//! IP is then the right-most `X-Forwarded-For` address that is not a trusted proxy (each proxy
//! appends the address it saw; whatever the client wrote stands to the left and is never
//! reached while an untrusted hop is found first). From any other peer the socket address is the
//! client, and HTTPS means fab terminated TLS itself.
//!
//! # Deployment caveat
//! List every proxy hop in `TRUSTED_PROXIES`, and only those: a trusted network that also holds
//! clients lets those clients forge their address.

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::Response;
use fab_core::audit::RequestOrigin;
use fab_core::net::{IpNet, in_any, resolve_client_ip};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};

use crate::Transport;
use crate::state::AppState;

/// The client of the current request.
#[derive(Debug, Clone, Default)]
pub(crate) struct ClientInfo {
    /// The resolved client address.
    pub ip: Option<String>,
    /// The address itself, for network checks.
    pub addr: Option<IpAddr>,
    /// Whether the request reached fab (or its trusted proxy) over HTTPS.
    pub https: bool,
    /// The host the client addressed (trusted `X-Forwarded-Host`, else `Host`), validated.
    pub host: Option<String>,
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

/// The right-most comma-separated value of the last header `name`.
fn last_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .next_back()?
        .rsplit(',')
        .map(str::trim)
        .find(|v| !v.is_empty())
}

/// Every `X-Forwarded-For` address in order; an unreadable entry ends the list where it stands
/// (entries to its left are as untrustworthy as it is).
fn forwarded_for(headers: &HeaderMap) -> Vec<IpAddr> {
    let mut chain = Vec::new();
    for value in headers.get_all("x-forwarded-for") {
        let Ok(text) = value.to_str() else {
            chain.clear();
            continue;
        };
        for item in text.split(',') {
            match parse_forwarded_address(item.trim()) {
                Some(ip) => chain.push(ip),
                None => chain.clear(),
            }
        }
    }
    chain
}

/// `203.0.113.9`, `[2001:db8::1]:443`, `203.0.113.9:5000`.
fn parse_forwarded_address(text: &str) -> Option<IpAddr> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    text.strip_prefix('[')
        .and_then(|t| t.split_once(']'))
        .and_then(|(ip, _)| ip.parse().ok())
}

/// A host header value fit to put in a redirect: a DNS name or IP literal with an optional port.
fn valid_host(host: &str) -> Option<String> {
    let ok = !host.is_empty()
        && host.len() <= 255
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    ok.then(|| host.to_ascii_lowercase())
}

/// Resolves the client from the socket peer, the transport and the headers.
pub(crate) fn resolve(
    peer: Option<SocketAddr>,
    transport: Transport,
    headers: &HeaderMap,
    trusted: &[IpNet],
) -> ClientInfo {
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|ua| ua.chars().take(256).collect());
    let direct_host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .and_then(valid_host);
    let Some(peer) = peer else {
        return ClientInfo {
            https: transport.tls,
            host: direct_host,
            user_agent,
            ..ClientInfo::default()
        };
    };
    let peer_ip = peer.ip().to_canonical();
    let from_proxy = in_any(trusted, peer_ip);
    let (addr, https, host) = if from_proxy {
        let mut chain = forwarded_for(headers);
        if chain.is_empty()
            && let Some(real) = last_value(headers, "x-real-ip").and_then(parse_forwarded_address)
        {
            chain.push(real);
        }
        let addr = resolve_client_ip(peer_ip, &chain, trusted);
        let https = match last_value(headers, "x-forwarded-proto") {
            Some(proto) => proto.eq_ignore_ascii_case("https"),
            None => transport.tls,
        };
        let host = last_value(headers, "x-forwarded-host")
            .and_then(valid_host)
            .or(direct_host);
        (addr, https, host)
    } else {
        (peer_ip, transport.tls, direct_host)
    };
    ClientInfo {
        ip: Some(addr.to_string()),
        addr: Some(addr),
        https,
        host,
        user_agent,
    }
}

/// Middleware: computes [`ClientInfo`] once per request.
pub(crate) async fn attach_client_info(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr);
    let transport = request
        .extensions()
        .get::<Transport>()
        .copied()
        .unwrap_or_default();
    let info = resolve(
        peer,
        transport,
        request.headers(),
        &state.parts.config.edge.trusted_proxies,
    );
    request.extensions_mut().insert(info);
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, HeaderValue::from_static(v));
        }
        map
    }

    fn trusted() -> Vec<IpNet> {
        vec!["10.0.0.0/8".parse().unwrap()]
    }

    fn peer(ip: &str) -> Option<SocketAddr> {
        Some(SocketAddr::new(ip.parse().unwrap(), 40000))
    }

    #[test]
    fn forged_headers_from_an_untrusted_peer_change_nothing() {
        let h = headers(&[
            ("x-forwarded-for", "10.9.9.9"),
            ("x-real-ip", "10.9.9.9"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "evil.example"),
            ("host", "app.example"),
        ]);
        let info = resolve(peer("198.51.100.4"), Transport::default(), &h, &trusted());
        assert_eq!(info.ip.as_deref(), Some("198.51.100.4"));
        assert!(!info.https);
        assert_eq!(info.host.as_deref(), Some("app.example"));
    }

    #[test]
    fn trusted_proxy_chain_resolves_the_right_most_untrusted_address() {
        let h = headers(&[
            ("x-forwarded-for", "203.0.113.66, 198.51.100.4"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "App.Example"),
        ]);
        let info = resolve(peer("10.0.0.2"), Transport::default(), &h, &trusted());
        assert_eq!(info.ip.as_deref(), Some("198.51.100.4"));
        assert!(info.https);
        assert_eq!(info.host.as_deref(), Some("app.example"));
    }

    #[test]
    fn real_ip_is_used_when_there_is_no_forwarded_for() {
        let h = headers(&[("x-real-ip", "198.51.100.7")]);
        let info = resolve(peer("10.0.0.2"), Transport::default(), &h, &trusted());
        assert_eq!(info.ip.as_deref(), Some("198.51.100.7"));
    }

    #[test]
    fn junk_in_the_chain_is_not_believed() {
        let h = headers(&[("x-forwarded-for", "198.51.100.4, not-an-ip")]);
        let info = resolve(peer("10.0.0.2"), Transport::default(), &h, &trusted());
        assert_eq!(info.ip.as_deref(), Some("10.0.0.2"));
    }

    #[test]
    fn hosts_that_could_inject_are_refused() {
        assert_eq!(
            valid_host("app.example:8443").as_deref(),
            Some("app.example:8443")
        );
        assert_eq!(valid_host("[::1]:8080").as_deref(), Some("[::1]:8080"));
        for bad in [
            "evil.example/path",
            "a b",
            "x\r\nSet-Cookie: a",
            "",
            "user@host",
        ] {
            assert!(valid_host(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn tls_terminated_by_fab_is_https() {
        let info = resolve(
            peer("198.51.100.4"),
            Transport { tls: true },
            &HeaderMap::new(),
            &[],
        );
        assert!(info.https);
    }
}

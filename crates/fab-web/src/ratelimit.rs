//! Rate limits at the edge: per client IP on every route, per principal on the API, and (in
//! [`crate::login`]) per username and per IP on every credential check.
//!
//! Threat: credential stuffing, brute force and plain floods. Rule: before anything else reads
//! the request, one decision per applicable policy is asked of the configured
//! [`RateLimiter`](fab_core::ratelimit::RateLimiter) (GCRA; memory or Redis, behind the
//! configured fail mode). A refused request gets `429` with `Retry-After` and the IETF draft's
//! `RateLimit-Policy` / `RateLimit` fields, as a page or as JSON; an allowed one carries its
//! remaining budget in the same fields. In emergency mode every policy uses its emergency rate.
//!
//! The client IP is the one [`crate::client`] resolved: a forged `X-Forwarded-For` from an
//! untrusted peer changes nothing, so it buys no new budget. Health probes and static assets are
//! exempt by default (`RATE_LIMIT_EXEMPT_PATHS`).

use crate::client::ClientInfo;
use crate::error::Failure;
use crate::principal::Principal;
use crate::state::AppState;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;
use fab_core::ratelimit::{Decision, Rate, RateKey};
use std::sync::atomic::Ordering;

/// One policy's decision, kept for the response headers.
#[derive(Debug, Clone)]
pub(crate) struct Verdict {
    /// Policy name (`default`, `api`, `login`, `route`).
    pub policy: &'static str,
    /// The rate applied.
    pub rate: Rate,
    /// The decision.
    pub decision: Decision,
}

impl Verdict {
    /// Seconds until a retry can succeed, rounded up.
    pub(crate) fn retry_after_seconds(&self) -> i64 {
        // Round up: retrying a fraction of a second early would be refused again.
        let micros = self
            .decision
            .retry_after
            .num_microseconds()
            .unwrap_or(i64::MAX);
        micros.saturating_add(999_999) / 1_000_000
    }

    fn reset_seconds(&self) -> i64 {
        let micros = self
            .decision
            .reset_after
            .num_microseconds()
            .unwrap_or(i64::MAX);
        micros.saturating_add(999_999) / 1_000_000
    }
}

/// Adds `RateLimit-Policy` and `RateLimit` for `verdict` (and `Retry-After` when refused).
pub(crate) fn annotate(headers: &mut HeaderMap, verdict: &Verdict) {
    let window = verdict.rate.period().num_seconds().max(1);
    let policy = format!(
        "\"{}\";q={};w={window}",
        verdict.policy,
        verdict.rate.count()
    );
    let state = format!(
        "\"{}\";r={};t={}",
        verdict.policy,
        verdict.decision.remaining,
        verdict.reset_seconds()
    );
    for (name, value) in [("ratelimit-policy", policy), ("ratelimit", state)] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.append(HeaderName::from_static(name), value);
        }
    }
    if !verdict.decision.allowed
        && let Ok(value) = HeaderValue::from_str(&verdict.retry_after_seconds().to_string())
    {
        headers.insert(header::RETRY_AFTER, value);
    }
}

/// The failure answering a refused verdict.
pub(crate) fn refusal(verdict: Verdict) -> Failure {
    Failure::TooManyRequests(Box::new(verdict))
}

/// Whether `path` is `exempt` or below it.
fn is_exempt(path: &str, exempt: &[String]) -> bool {
    exempt.iter().any(|e| {
        let e = e.trim_end_matches('/');
        path == e || path.starts_with(&format!("{e}/"))
    })
}

impl AppState {
    /// Whether emergency limits are in force (the watcher in `fab serve` keeps this current).
    pub(crate) fn emergency(&self) -> bool {
        self.parts.emergency.load(Ordering::Relaxed)
    }

    /// Asks the limiter; `Err` is a failure to answer with (503 in the closed fail mode).
    pub(crate) async fn decide(
        &self,
        policy: &'static str,
        key: &RateKey,
        rate: Rate,
    ) -> Result<Verdict, Failure> {
        match self.parts.limiter.check(key, &rate).await {
            Ok(decision) => Ok(Verdict {
                policy,
                rate,
                decision,
            }),
            Err(error) => {
                tracing::error!(%error, "rate limiter refused to decide");
                Err(Failure::Unavailable)
            }
        }
    }
}

/// Middleware: the per-IP default (or per-route) limit.
pub(crate) async fn limit_by_ip(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let limits = &state.parts.config.rate_limit;
    let path = request.uri().path().to_owned();
    let addr = request
        .extensions()
        .get::<ClientInfo>()
        .and_then(|c| c.addr);
    let (true, Some(ip), false) = (limits.enabled, addr, is_exempt(&path, &limits.exempt_paths))
    else {
        return next.run(request).await;
    };
    let emergency = state.emergency();
    let route = limits
        .routes
        .iter()
        .filter(|(prefix, _)| path == *prefix || path.starts_with(prefix.as_str()))
        .max_by_key(|(prefix, _)| prefix.len());
    let (policy, key, rate) = match route {
        Some((prefix, rate)) => {
            let rate = if emergency {
                rate.divided(limits.emergency_factor)
            } else {
                *rate
            };
            (
                "route",
                RateKey::custom("route", "ip", &format!("{ip}@{prefix}")),
                rate,
            )
        }
        None => {
            let rate = if emergency {
                limits.emergency_default
            } else {
                limits.default
            };
            ("default", RateKey::default_ip(ip), rate)
        }
    };
    let verdict = match state.decide(policy, &key, rate).await {
        Ok(verdict) => verdict,
        Err(failure) => return failure.into_response_for(&path),
    };
    if !verdict.decision.allowed {
        return refusal(verdict).into_response_for(&path);
    }
    let mut response = next.run(request).await;
    annotate(response.headers_mut(), &verdict);
    response
}

/// Middleware: the per-principal API limit (after the principal is known).
pub(crate) async fn limit_api_principal(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let limits = &state.parts.config.rate_limit;
    let path = request.uri().path().to_owned();
    let user = request
        .extensions()
        .get::<Principal>()
        .and_then(|p| p.user().map(|u| u.user.id));
    let (true, true, Some(user)) = (limits.enabled, crate::error::is_api_path(&path), user) else {
        return next.run(request).await;
    };
    let rate = if state.emergency() {
        limits.emergency_api
    } else {
        limits.api
    };
    let verdict = match state.decide("api", &RateKey::api_user(user), rate).await {
        Ok(verdict) => verdict,
        Err(failure) => return failure.into_response_for(&path),
    };
    if !verdict.decision.allowed {
        return refusal(verdict).into_response_for(&path);
    }
    let mut response = next.run(request).await;
    annotate(response.headers_mut(), &verdict);
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn verdict(allowed: bool) -> Verdict {
        Verdict {
            policy: "login",
            rate: "5/minute".parse().unwrap(),
            decision: Decision {
                allowed,
                remaining: if allowed { 3 } else { 0 },
                retry_after: if allowed {
                    Duration::zero()
                } else {
                    Duration::milliseconds(11_200)
                },
                reset_after: Duration::seconds(24),
                new_tat: 0,
            },
        }
    }

    #[test]
    fn headers_follow_the_ietf_draft() {
        let mut headers = HeaderMap::new();
        annotate(&mut headers, &verdict(true));
        assert_eq!(headers["ratelimit-policy"], "\"login\";q=5;w=60");
        assert_eq!(headers["ratelimit"], "\"login\";r=3;t=24");
        assert!(headers.get(header::RETRY_AFTER).is_none());
        let mut headers = HeaderMap::new();
        annotate(&mut headers, &verdict(false));
        assert_eq!(headers[header::RETRY_AFTER], "12", "rounded up");
    }

    #[test]
    fn exemptions_cover_sub_paths() {
        let exempt = vec!["/health".to_owned(), "/static".to_owned()];
        assert!(is_exempt("/health/ready", &exempt));
        assert!(is_exempt("/static/fab.css", &exempt));
        assert!(!is_exempt("/login/", &exempt));
    }
}

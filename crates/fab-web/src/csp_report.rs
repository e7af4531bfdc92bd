//! The CSP violation report endpoint (`POST /csp-report` by default).
//!
//! Browsers post reports here in two formats: `report-uri`'s `application/csp-report`
//! (`{"csp-report": {...}}`) and the Reporting API's `application/reports+json` (an array of
//! `{"type": "csp-violation", "body": {...}}`). Each violation is recorded as a
//! `security.csp_violation` audit event with its directive, blocked and document URLs.
//!
//! Anyone can post here, so the endpoint is bounded: bodies above 16 KiB are refused (413), each
//! field is truncated, at most [`REPORTS_PER_BATCH`] violations are read from one body, and at
//! most [`REPORTS_PER_MINUTE`] are recorded per minute across the server (the rest are counted in
//! the log and dropped with 429), so a flood of reports cannot flood the audit trail.

use crate::client::ClientInfo;
use crate::error::{Failure, PageError};
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, Utc};
use fab_core::audit::{AuditEvent, AuditKind, Outcome};
use serde_json::{Value, json};
use std::sync::Mutex;

/// Largest report body accepted.
pub(crate) const REPORT_BODY_LIMIT: usize = 16 * 1024;
/// Violations recorded per minute, server-wide.
pub(crate) const REPORTS_PER_MINUTE: u32 = 60;
/// Violations read from one body.
const REPORTS_PER_BATCH: usize = 10;
/// Longest field kept.
const FIELD_MAX: usize = 512;

/// A fixed-window budget of report recordings, driven by fab's clock.
#[derive(Debug, Default)]
pub(crate) struct ReportBudget {
    window: Mutex<(Option<DateTime<Utc>>, u32)>,
}

impl ReportBudget {
    /// Takes one recording from the budget at `now`; false when the minute's budget is spent.
    fn take(&self, now: DateTime<Utc>) -> bool {
        let mut window = self
            .window
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (start, used) = &mut *window;
        if start.is_none_or(|s| now - s >= Duration::minutes(1)) {
            *start = Some(now);
            *used = 0;
        }
        if *used >= REPORTS_PER_MINUTE {
            return false;
        }
        *used += 1;
        true
    }
}

fn field(body: &Value, names: &[&str]) -> Value {
    names
        .iter()
        .find_map(|name| body.get(*name))
        .map(|v| match v {
            Value::String(s) => Value::String(s.chars().take(FIELD_MAX).collect()),
            Value::Number(n) => Value::Number(n.clone()),
            _ => Value::Null,
        })
        .unwrap_or(Value::Null)
}

/// The violations in a report body, normalised.
fn violations(report: &Value) -> Vec<Value> {
    let bodies: Vec<&Value> = match report {
        Value::Object(map) => map.get("csp-report").into_iter().collect(),
        Value::Array(items) => items
            .iter()
            .filter(|i| i.get("type").and_then(Value::as_str) == Some("csp-violation"))
            .filter_map(|i| i.get("body"))
            .collect(),
        _ => Vec::new(),
    };
    bodies
        .into_iter()
        .take(REPORTS_PER_BATCH)
        .map(|body| {
            json!({
                "directive": field(body, &["effectiveDirective", "effective-directive", "violated-directive"]),
                "blocked": field(body, &["blockedURL", "blocked-uri"]),
                "document": field(body, &["documentURL", "document-uri"]),
                "source": field(body, &["sourceFile", "source-file"]),
                "line": field(body, &["lineNumber", "line-number"]),
                "disposition": field(body, &["disposition"]),
            })
        })
        .collect()
}

/// `POST /csp-report`.
pub(crate) async fn receive(
    State(state): State<AppState>,
    client: ClientInfo,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<Response, PageError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            PageError(Failure::TooLarge)
        } else {
            PageError(Failure::BadRequest("unreadable report".into()))
        }
    })?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let known = [
        "application/csp-report",
        "application/reports+json",
        "application/json",
    ];
    if !known.iter().any(|k| content_type.starts_with(k)) {
        return Err(PageError(Failure::BadRequest(
            "expected application/csp-report or application/reports+json".into(),
        )));
    }
    let report: Value = serde_json::from_slice(&body)
        .map_err(|e| PageError(Failure::BadRequest(format!("report is not JSON: {e}"))))?;
    let found = violations(&report);
    if found.is_empty() {
        return Err(PageError(Failure::BadRequest(
            "no CSP violation in the report".into(),
        )));
    }
    let now = state.parts.clock.now();
    let mut dropped = 0usize;
    for violation in found {
        if !state.csp_reports.take(now) {
            dropped += 1;
            continue;
        }
        let event = AuditEvent::new(AuditKind::SecurityCspViolation, Outcome::Failure, now)
            .from_origin(client.origin())
            .with_detail(violation);
        state.parts.store.record(&event).await?;
    }
    if dropped > 0 {
        tracing::warn!(
            dropped,
            "CSP reports over the per-minute budget were dropped"
        );
        return Ok((
            StatusCode::TOO_MANY_REQUESTS,
            "report budget exhausted; try later",
        )
            .into_response());
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_report_formats_are_read() {
        let legacy = json!({"csp-report": {"document-uri": "https://app/x", "violated-directive": "script-src", "blocked-uri": "inline"}});
        let v = violations(&legacy);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0]["directive"], "script-src");
        let modern = json!([
            {"type": "csp-violation", "body": {"documentURL": "https://app/y", "effectiveDirective": "img-src", "blockedURL": "https://evil/x.png"}},
            {"type": "deprecation", "body": {}}
        ]);
        let v = violations(&modern);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0]["blocked"], "https://evil/x.png");
        assert!(violations(&json!({"other": 1})).is_empty());
    }

    #[test]
    fn long_fields_are_truncated_and_batches_bounded() {
        let long = "x".repeat(5000);
        let v = violations(&json!({"csp-report": {"blocked-uri": long}}));
        assert_eq!(v[0]["blocked"].as_str().unwrap().len(), FIELD_MAX);
        let many: Vec<Value> = (0..50)
            .map(|_| json!({"type": "csp-violation", "body": {}}))
            .collect();
        assert_eq!(violations(&Value::Array(many)).len(), REPORTS_PER_BATCH);
    }

    #[test]
    fn budget_refills_each_minute() {
        let budget = ReportBudget::default();
        let start = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        for _ in 0..REPORTS_PER_MINUTE {
            assert!(budget.take(start));
        }
        assert!(!budget.take(start + Duration::seconds(59)));
        assert!(budget.take(start + Duration::seconds(60)));
    }
}

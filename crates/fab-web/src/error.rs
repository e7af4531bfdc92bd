//! The one mapping from failures to HTTP responses.
//!
//! Handlers return [`PageError`] (an HTML page) or [`ApiError`] (FAB-style JSON `{"message"}`),
//! both built from a [`Failure`]. What a client sees never carries internal detail: storage and
//! template errors are logged with their cause and answered with a generic message.

use crate::templates::render_error_page;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use fab_core::{StoreError, ValidationError};

/// Why a request could not be served.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Not logged in (pages redirect to the login form, the API answers 401).
    Unauthenticated {
        /// Where to come back after login (pages only).
        next: Option<String>,
    },
    /// Logged in, but lacking the permission.
    Forbidden,
    /// Refused for a stated reason (e.g. a cross-site post).
    Refused(String),
    /// No such thing.
    NotFound,
    /// The request is malformed; the message says how.
    BadRequest(String),
    /// The body exceeds the limit for its route.
    TooLarge,
    /// The input breaks rules (field by field).
    Invalid(Vec<ValidationError>),
    /// The change conflicts with stored state (e.g. a taken username).
    Conflict(String),
    /// A rate limit refused the request.
    TooManyRequests(Box<crate::ratelimit::Verdict>),
    /// A backend did not answer.
    Unavailable,
    /// Anything else; the detail goes to the log only.
    Internal(String),
}

impl From<StoreError> for Failure {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound => Failure::NotFound,
            StoreError::Conflict(message) => Failure::Conflict(message),
            StoreError::Unavailable(detail) => {
                tracing::error!(%detail, "storage unavailable");
                Failure::Unavailable
            }
            StoreError::Internal(detail) => Failure::Internal(detail),
        }
    }
}

impl From<Vec<ValidationError>> for Failure {
    fn from(errors: Vec<ValidationError>) -> Self {
        Failure::Invalid(errors)
    }
}

impl From<ValidationError> for Failure {
    fn from(error: ValidationError) -> Self {
        Failure::Invalid(vec![error])
    }
}

impl Failure {
    fn status(&self) -> StatusCode {
        match self {
            Failure::Unauthenticated { .. } => StatusCode::UNAUTHORIZED,
            Failure::Forbidden | Failure::Refused(_) => StatusCode::FORBIDDEN,
            Failure::NotFound => StatusCode::NOT_FOUND,
            Failure::BadRequest(_) => StatusCode::BAD_REQUEST,
            Failure::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Failure::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Failure::Conflict(_) => StatusCode::CONFLICT,
            Failure::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Failure::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Failure::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The message a client may see.
    fn public_message(&self) -> String {
        match self {
            Failure::Unauthenticated { .. } => "Not authorized".into(),
            Failure::Forbidden => "Access is denied".into(),
            Failure::NotFound => "Not found".into(),
            Failure::TooLarge => "Request body too large".into(),
            Failure::BadRequest(message)
            | Failure::Conflict(message)
            | Failure::Refused(message) => message.clone(),
            Failure::Invalid(errors) => errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
            Failure::TooManyRequests(verdict) => format!(
                "Too many requests; try again in {} seconds",
                verdict.retry_after_seconds()
            ),
            Failure::Unavailable => "Service temporarily unavailable, try again shortly".into(),
            Failure::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                "Internal error".into()
            }
        }
    }
}

impl Failure {
    /// The response for a request to `path`: JSON under `/api/`, a page elsewhere.
    pub(crate) fn into_response_for(self, path: &str) -> Response {
        if is_api_path(path) {
            ApiError(self).into_response()
        } else {
            PageError(self).into_response()
        }
    }
}

/// Adds the rate-limit fields to a refusal.
fn annotate_refusal(failure: &Failure, response: &mut Response) {
    if let Failure::TooManyRequests(verdict) = failure {
        crate::ratelimit::annotate(response.headers_mut(), verdict);
    }
}

/// Whether `path` belongs to the JSON API.
pub(crate) fn is_api_path(path: &str) -> bool {
    path == "/api" || path.starts_with("/api/")
}

/// A failure answered with an HTML page.
#[derive(Debug)]
pub(crate) struct PageError(pub Failure);

impl<E: Into<Failure>> From<E> for PageError {
    fn from(error: E) -> Self {
        PageError(error.into())
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        if let Failure::Unauthenticated { next } = &self.0 {
            let target = match next {
                Some(next) => format!("/login/?next={}", url_encode(next)),
                None => "/login/".to_owned(),
            };
            return Redirect::to(&target).into_response();
        }
        let status = self.0.status();
        let message = self.0.public_message();
        let mut response = render_error_page(status, &message);
        annotate_refusal(&self.0, &mut response);
        response
    }
}

/// A failure answered with JSON `{"message": ...}` (Flask-AppBuilder's API error shape).
#[derive(Debug)]
pub(crate) struct ApiError(pub Failure);

impl<E: Into<Failure>> From<E> for ApiError {
    fn from(error: E) -> Self {
        ApiError(error.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.0.status();
        let mut body = serde_json::json!({ "message": self.0.public_message() });
        if let Failure::Invalid(errors) = &self.0 {
            let fields: serde_json::Map<String, serde_json::Value> = errors
                .iter()
                .map(|e| {
                    (
                        e.field.clone(),
                        serde_json::Value::String(e.message.clone()),
                    )
                })
                .collect();
            body["errors"] = serde_json::Value::Object(fields);
        }
        let mut response = (status, axum::Json(body)).into_response();
        annotate_refusal(&self.0, &mut response);
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// Percent-encodes a value for a query string.
pub(crate) fn url_encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

//! Request bodies: HTML form posts and JSON, each turned into a clear 4xx when malformed.
//!
//! [`FormData`] keeps repeated fields (checkbox lists such as a user's roles), which serde-based
//! form extractors drop. Body size is bounded by the router's body limit before this runs.

use crate::error::{ApiError, Failure, PageError};
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header;
use serde::de::DeserializeOwned;

/// The fields of an `application/x-www-form-urlencoded` body, in order.
#[derive(Debug, Clone, Default)]
pub(crate) struct FormData {
    fields: Vec<(String, String)>,
}

impl FormData {
    /// The first value of `name`, trimmed; empty string when absent.
    pub(crate) fn text(&self, name: &str) -> String {
        self.raw(name)
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    }

    /// The first value of `name` exactly as sent (passwords are not trimmed).
    pub(crate) fn raw(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`.
    pub(crate) fn all(&self, name: &str) -> Vec<&str> {
        self.fields
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Whether a checkbox `name` was ticked.
    pub(crate) fn checked(&self, name: &str) -> bool {
        matches!(self.raw(name), Some("y" | "on" | "true" | "1"))
    }

    /// Every value of `name` parsed as an integer id; a non-integer is a 400.
    pub(crate) fn ids(&self, name: &str) -> Result<Vec<i64>, Failure> {
        self.all(name)
            .into_iter()
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| Failure::BadRequest(format!("{name}: `{v}` is not an id")))
            })
            .collect()
    }
}

impl<S: Send + Sync> FromRequest<S> for FormData {
    type Rejection = PageError;

    async fn from_request(request: Request, state: &S) -> Result<Self, PageError> {
        let is_form = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
        if !is_form {
            return Err(PageError(Failure::BadRequest(
                "expected a form (application/x-www-form-urlencoded)".into(),
            )));
        }
        let body = Bytes::from_request(request, state)
            .await
            .map_err(|e| PageError(body_failure(e.status())))?;
        let fields = url::form_urlencoded::parse(&body).into_owned().collect();
        Ok(FormData { fields })
    }
}

fn body_failure(status: axum::http::StatusCode) -> Failure {
    if status == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        Failure::TooLarge
    } else {
        Failure::BadRequest("unreadable request body".into())
    }
}

/// A JSON body; malformed JSON or a wrong shape is a 400 with the parser's reason.
#[derive(Debug)]
pub(crate) struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(JsonBody(value)),
            Err(rejection) => {
                if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    return Err(ApiError(Failure::TooLarge));
                }
                Err(ApiError(Failure::BadRequest(rejection.body_text())))
            }
        }
    }
}

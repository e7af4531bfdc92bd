//! Static assets, built into the binary: the default CSP needs no CDN and the server needs no
//! asset directory.

use crate::error::{Failure, PageError};
use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "fab.css",
        "text/css; charset=utf-8",
        include_bytes!("../../static/fab.css"),
    ),
    (
        "fab.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../static/fab.js"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_bytes!("../../static/favicon.svg"),
    ),
];

/// `GET /static/{path}`.
pub(crate) async fn serve(Path(path): Path<String>) -> Result<Response, PageError> {
    let (_, content_type, body) = ASSETS
        .iter()
        .find(|(name, ..)| *name == path)
        .ok_or(PageError(Failure::NotFound))?;
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    Ok(response)
}

//! The response body type and helpers to build bodies and read request bodies.

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};
pub use loom_http::{Body, BoxError};

/// A complete body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A JSON response.
pub fn json_response(status: StatusCode, bytes: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(full(bytes));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// Why a request body could not be read.
#[derive(Debug)]
pub enum ReadError {
    TooLarge(u64),
    Failed(String),
}

/// Reads a whole request body of at most `limit` bytes, refusing early when
/// `Content-Length` already says it is too large.
pub async fn read_limited(req: http::Request<Body>, limit: u64) -> Result<Bytes, ReadError> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ReadError::TooLarge(limit));
    }
    match loom_http::collect(req.into_body(), limit, declared.unwrap_or(0)).await {
        Ok(read) => Ok(read.data),
        Err(loom_http::CollectError::TooLarge) => Err(ReadError::TooLarge(limit)),
        Err(loom_http::CollectError::Failed(e)) => Err(ReadError::Failed(e)),
    }
}

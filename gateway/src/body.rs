//! The response body type and helpers to build bodies and read request bodies.

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};
pub use loom_proxy::{Body, BoxError};

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
    // Read frame by frame: `Limited` over a boxed body trips rustc's check
    // that the future is `Send` (rust-lang/rust#102211).
    let mut body = req.into_body();
    // The usual body arrives in one chunk: kept as it is, without a copy.
    let mut first: Option<Bytes> = None;
    let mut rest: Option<bytes::BytesMut> = None;
    let mut total = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ReadError::Failed(e.to_string()))?;
        let Ok(chunk) = frame.into_data() else {
            continue;
        };
        total += chunk.len() as u64;
        if total > limit {
            return Err(ReadError::TooLarge(limit));
        }
        if let Some(buf) = rest.as_mut() {
            buf.extend_from_slice(&chunk);
        } else if let Some(f) = first.take() {
            let mut buf = bytes::BytesMut::with_capacity(declared.unwrap_or(0).max(total) as usize);
            buf.extend_from_slice(&f);
            buf.extend_from_slice(&chunk);
            rest = Some(buf);
        } else {
            first = Some(chunk);
        }
    }
    Ok(match rest {
        Some(buf) => buf.freeze(),
        None => first.unwrap_or_default(),
    })
}

//! Reading a whole body into memory, bounded: for the AI handlers' JSON
//! requests, providers' whole answers and plugin callout answers.

use bytes::{Bytes, BytesMut};
use http::HeaderMap;
use http_body_util::BodyExt;

/// A body read whole, with its trailers (empty when it had none).
pub struct Collected {
    pub data: Bytes,
    pub trailers: HeaderMap,
}

/// Why a body could not be read whole.
#[derive(Debug)]
pub enum CollectError {
    /// More than the limit arrived.
    TooLarge,
    /// The body failed while it was read.
    Failed(String),
}

/// Reads `body` to its end, refusing it once more than `limit` bytes have
/// arrived; `expected` (a declared length) sizes the buffer.
///
/// Frame by frame rather than through `http_body_util::Limited`: `Limited`
/// over a boxed body trips rustc's check that the caller's future is `Send`
/// (rust-lang/rust#102211). The usual body arrives in one chunk and is kept
/// as it is, without a copy.
pub async fn collect<B>(body: B, limit: u64, expected: u64) -> Result<Collected, CollectError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    let mut body = std::pin::pin!(body);
    let mut first: Option<Bytes> = None;
    let mut rest: Option<BytesMut> = None;
    let mut trailers = HeaderMap::new();
    let mut total = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| CollectError::Failed(e.to_string()))?;
        let chunk = match frame.into_data() {
            Ok(chunk) => chunk,
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    trailers = t;
                }
                continue;
            }
        };
        total += chunk.len() as u64;
        if total > limit {
            return Err(CollectError::TooLarge);
        }
        if let Some(buf) = rest.as_mut() {
            buf.extend_from_slice(&chunk);
        } else if let Some(f) = first.take() {
            let mut buf = BytesMut::with_capacity(expected.max(total) as usize);
            buf.extend_from_slice(&f);
            buf.extend_from_slice(&chunk);
            rest = Some(buf);
        } else {
            first = Some(chunk);
        }
    }
    let data = match rest {
        Some(buf) => buf.freeze(),
        None => first.unwrap_or_default(),
    };
    Ok(Collected { data, trailers })
}

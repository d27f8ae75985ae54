//! gRPC-Web for browsers: a gRPC-Web request (binary or base64 text, over
//! HTTP/1.1 or HTTP/2) is sent to the upstream as gRPC, and the answer is
//! turned back into gRPC-Web: the same length-prefixed messages, with the
//! trailers (`grpc-status`, `grpc-message`, …) as a last frame flagged
//! `0x80` in the body, since browsers cannot read HTTP trailers.

use std::pin::Pin;
use std::task::{Context, Poll};

use base64::Engine;
use bytes::{BufMut, Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, TE};
use http::{HeaderMap, Request, Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;

use crate::runtime::body::{Body, BoxError};

/// A gRPC-Web request's encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Binary,
    /// Base64 bodies (`application/grpc-web-text`).
    Text,
}

/// The mode of a gRPC-Web request, if it is one.
pub fn mode(headers: &HeaderMap) -> Option<Mode> {
    let ct = headers.get(CONTENT_TYPE)?.as_bytes();
    if ct.starts_with(b"application/grpc-web-text") {
        Some(Mode::Text)
    } else if ct.starts_with(b"application/grpc-web") {
        Some(Mode::Binary)
    } else {
        None
    }
}

/// Largest gRPC-Web text request decoded (it is read whole to decode it).
const MAX_TEXT_REQUEST: usize = 4 << 20;

/// The request as gRPC: content type, `TE: trailers`, and a decoded body
/// in text mode.
pub async fn request(req: Request<Body>, mode: Mode) -> Result<Request<Body>, String> {
    let (mut parts, body) = req.into_parts();
    let subtype = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once('+').map(|(_, s)| s.to_owned()));
    let ct = match subtype {
        Some(s) => format!("application/grpc+{s}"),
        None => "application/grpc".to_owned(),
    };
    if let Ok(v) = HeaderValue::try_from(ct) {
        parts.headers.insert(CONTENT_TYPE, v);
    }
    parts
        .headers
        .insert(TE, HeaderValue::from_static("trailers"));
    parts.headers.remove("x-grpc-web");
    parts.headers.remove(CONTENT_LENGTH);
    let body = match mode {
        Mode::Binary => body,
        Mode::Text => {
            // Read frame by frame rather than through `Limited`: its error
            // conversion defeats the compiler's proof that the request's
            // future is `Send`.
            let mut body = body;
            let mut raw = BytesMut::new();
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| format!("could not read the request body: {e}"))?;
                if let Ok(data) = frame.into_data() {
                    raw.put_slice(&data);
                }
                if raw.len() > MAX_TEXT_REQUEST {
                    return Err("the gRPC-Web text body is too large".into());
                }
            }
            let cleaned: Vec<u8> = raw
                .iter()
                .copied()
                .filter(|b| !b.is_ascii_whitespace())
                .collect();
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(cleaned)
                .map_err(|e| format!("the gRPC-Web text body is not base64: {e}"))?;
            crate::runtime::body::full(decoded)
        }
    };
    Ok(Request::from_parts(parts, body))
}

/// The upstream's gRPC answer as gRPC-Web.
pub fn response(resp: Response<Body>, mode: Mode) -> Response<Body> {
    let (mut parts, body) = resp.into_parts();
    // A trailers-only answer carries its status in the headers.
    let mut early = HeaderMap::new();
    for name in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
        if let Some(v) = parts.headers.remove(name) {
            early.insert(name, v);
        }
    }
    let ct = match mode {
        Mode::Binary => "application/grpc-web+proto",
        Mode::Text => "application/grpc-web-text+proto",
    };
    parts
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static(ct));
    parts.headers.remove(CONTENT_LENGTH);
    let body = WebBody {
        inner: body,
        mode,
        early: (!early.is_empty()).then_some(early),
        done: false,
    };
    Response::from_parts(parts, body.boxed_unsync())
}

/// The trailers as a gRPC-Web frame: flag 0x80, length, `name:value\r\n` lines.
fn trailer_frame(trailers: &HeaderMap) -> Bytes {
    let mut text = BytesMut::new();
    for (name, value) in trailers {
        text.put_slice(name.as_str().as_bytes());
        text.put_u8(b':');
        text.put_slice(value.as_bytes());
        text.put_slice(b"\r\n");
    }
    let mut out = BytesMut::with_capacity(5 + text.len());
    out.put_u8(0x80);
    out.put_u32(text.len() as u32);
    out.put_slice(&text);
    out.freeze()
}

struct WebBody {
    inner: Body,
    mode: Mode,
    /// Status from a trailers-only answer, sent when the body ends.
    early: Option<HeaderMap>,
    done: bool,
}

impl WebBody {
    fn encode(&self, data: Bytes) -> Bytes {
        match self.mode {
            Mode::Binary => data,
            Mode::Text => Bytes::from(base64::engine::general_purpose::STANDARD.encode(&data)),
        }
    }
}

impl HttpBody for WebBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => Poll::Ready(Some(Ok(Frame::data(this.encode(data))))),
                Err(frame) => match frame.into_trailers() {
                    Ok(trailers) => {
                        this.done = true;
                        let bytes = this.encode(trailer_frame(&trailers));
                        Poll::Ready(Some(Ok(Frame::data(bytes))))
                    }
                    Err(_) => Poll::Ready(Some(Ok(Frame::data(Bytes::new())))),
                },
            },
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => {
                this.done = true;
                match this.early.take() {
                    Some(t) => {
                        let bytes = this.encode(trailer_frame(&t));
                        Poll::Ready(Some(Ok(Frame::data(bytes))))
                    }
                    None => Poll::Ready(None),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trailers_become_a_flagged_frame() {
        let mut t = HeaderMap::new();
        t.insert("grpc-status", HeaderValue::from_static("0"));
        let f = trailer_frame(&t);
        assert_eq!(f[0], 0x80);
        assert_eq!(
            u32::from_be_bytes([f[1], f[2], f[3], f[4]]) as usize,
            f.len() - 5
        );
        assert_eq!(&f[5..], b"grpc-status:0\r\n");
    }

    #[test]
    fn modes_are_read_from_the_content_type() {
        let mut h = HeaderMap::new();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/grpc-web+proto"),
        );
        assert_eq!(mode(&h), Some(Mode::Binary));
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/grpc-web-text"),
        );
        assert_eq!(mode(&h), Some(Mode::Text));
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        assert_eq!(mode(&h), None);
    }
}

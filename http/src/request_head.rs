//! The server side of HTTP/1.1: reading a request head.
//!
//! httparse finds the head; this module decides what Loom's own server
//! connection serves and what it hands to hyper (upgrades, `CONNECT`,
//! chunked or large bodies, an HTTP/2 preface), checks `Content-Length`
//! (one value, digits only), and builds the request's parts without
//! copying: the path and header values share the head's buffer.

use bytes::BytesMut;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri, Version};

use crate::h1::{content_length, tokens as header_tokens};

/// Largest request body read whole before the pipeline is called; larger
/// ones stream through hyper.
pub const MAX_BODY: u64 = 64 * 1024;

/// Most headers in a request head (hyper's limit too).
pub const MAX_HEADERS: usize = 100;

/// What the first bytes of an HTTP/2 prior-knowledge connection are.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";

/// Why a head is not served by Loom's own connection.
#[derive(Debug, PartialEq, Eq)]
pub enum Stop {
    /// Hyper serves the connection from this head on.
    Handoff,
    /// Answer with this status and close.
    Refuse(StatusCode),
}

/// What the request asks of the answer's framing.
#[derive(Debug, Clone, Copy)]
pub struct Wants {
    pub keep_alive: bool,
    pub http10: bool,
    pub head: bool,
    /// `TE: trailers`: the client takes trailers on a chunked answer.
    pub trailers: bool,
}

/// A parsed head, before its body is read.
#[derive(Debug)]
pub struct Parsed {
    pub parts: http::request::Parts,
    pub wants: Wants,
    /// The body's length (`Content-Length`, 0 when absent).
    pub length: u64,
    pub expect_continue: bool,
}

/// Parses a request head from the front of `rbuf`: `Ok(None)` until it is
/// whole. `first`: no request was served on the connection yet (only then
/// can an HTTP/2 prior-knowledge preface come). `max`: the largest head.
/// The head's bytes are split off `rbuf`; the body stays in it.
pub fn parse(rbuf: &mut BytesMut, first: bool, max: usize) -> Result<Option<Parsed>, Stop> {
    if first && rbuf.len() >= 3 && H2_PREFACE.starts_with(&rbuf[..rbuf.len().min(H2_PREFACE.len())])
    {
        return if rbuf.len() >= H2_PREFACE.len() {
            Err(Stop::Handoff)
        } else {
            Ok(None)
        };
    }
    let mut spans = [(0u32, 0u32, 0u32, 0u32); MAX_HEADERS];
    let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut raw);
    let len = match req.parse(rbuf) {
        Ok(httparse::Status::Complete(len)) if len <= max => len,
        Ok(httparse::Status::Complete(_)) => {
            return Err(Stop::Refuse(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE));
        }
        Ok(httparse::Status::Partial) if rbuf.len() >= max => {
            return Err(Stop::Refuse(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Stop::Refuse(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE));
        }
        Err(_) => return Err(Stop::Refuse(StatusCode::BAD_REQUEST)),
    };
    let bad = || Stop::Refuse(StatusCode::BAD_REQUEST);
    let http10 = req.version == Some(0);
    let method =
        Method::from_bytes(req.method.unwrap_or_default().as_bytes()).map_err(|_| bad())?;
    if method == Method::CONNECT {
        return Err(Stop::Handoff);
    }
    let base = rbuf.as_ptr() as usize;
    let span = |s: &[u8]| {
        let at = s.as_ptr() as usize - base;
        (at, at + s.len())
    };
    let path = span(req.path.unwrap_or_default().as_bytes());
    let mut count = 0;
    let mut length: Option<u64> = None;
    let (mut close, mut keep_alive, mut trailers, mut expect_continue) =
        (false, false, false, false);
    for h in req.headers.iter() {
        let (ns, ne) = span(h.name.as_bytes());
        let (vs, ve) = span(h.value);
        spans[count] = (ns as u32, ne as u32, vs as u32, ve as u32);
        count += 1;
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = content_length(h.value).ok_or_else(bad)?;
            if length.is_some_and(|l| l != n) {
                return Err(bad());
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding")
            || name.eq_ignore_ascii_case(b"upgrade")
        {
            return Err(Stop::Handoff);
        } else if name.eq_ignore_ascii_case(b"connection") {
            for t in header_tokens(h.value) {
                close |= t.eq_ignore_ascii_case(b"close");
                keep_alive |= t.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case(b"expect") {
            if !h.value.eq_ignore_ascii_case(b"100-continue") {
                return Err(Stop::Handoff);
            }
            expect_continue = true;
        } else if name.eq_ignore_ascii_case(b"te") {
            trailers |= header_tokens(h.value).any(|t| t.eq_ignore_ascii_case(b"trailers"));
        }
    }
    let length = length.unwrap_or(0);
    if length > MAX_BODY {
        return Err(Stop::Handoff);
    }
    let head = rbuf.split_to(len).freeze();
    let uri = Uri::from_maybe_shared(head.slice(path.0..path.1)).map_err(|_| bad())?;
    // Room for what Loom adds (the request id, `X-Forwarded-*`) without
    // growing the map; past six entries its table is over a kilobyte,
    // which glibc's allocator serves from its slow path.
    let mut headers = HeaderMap::with_capacity(count + 3);
    for &(ns, ne, vs, ve) in &spans[..count] {
        let name = HeaderName::from_bytes(&head[ns as usize..ne as usize]).map_err(|_| bad())?;
        // The value shares the head's buffer: no copy.
        let value = HeaderValue::from_maybe_shared(head.slice(vs as usize..ve as usize))
            .map_err(|_| bad())?;
        headers.append(name, value);
    }
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = method.clone();
    parts.uri = uri;
    parts.version = if http10 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    parts.headers = headers;
    Ok(Some(Parsed {
        parts,
        wants: Wants {
            keep_alive: !close && (!http10 || keep_alive),
            http10,
            head: method == Method::HEAD,
            trailers,
        },
        length,
        expect_continue,
    }))
}

/// Entry point for the fuzz target (`fuzz/`) and its corpus regression
/// test: any bytes in, never a panic; a parsed head never claims more bytes
/// than it was given.
#[doc(hidden)]
pub mod fuzzing {
    use bytes::BytesMut;

    /// A connection's first bytes, read at once and in two pieces.
    pub fn request(data: &[u8]) {
        let first = data.first().is_some_and(|b| b & 1 == 1);
        let max = 8 * 1024;
        let mut whole = BytesMut::from(data);
        let before = whole.len();
        if let Ok(Some(p)) = super::parse(&mut whole, first, max) {
            assert!(whole.len() < before, "a parsed head consumes bytes");
            assert!(p.parts.headers.len() <= super::MAX_HEADERS);
        }
        // The same bytes split: a head is found only once it is whole.
        let cut = data.len() / 2;
        let mut split = BytesMut::from(&data[..cut]);
        if let Ok(None) = super::parse(&mut split, first, max) {
            split.extend_from_slice(&data[cut..]);
            let _ = super::parse(&mut split, first, max);
        }
    }
}

//! The body type every layer passes along, the client's identity, and a
//! request rebuilt from memory.

use std::net::SocketAddr;

use bytes::Bytes;
use http::Request;
use http::header::HeaderValue;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;

/// Error type of streamed bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type requests and answers travel with between Loom's layers:
/// a boxed stream of byte frames, so a body from any source (hyper, the
/// inline client, a buffer in memory, a relay) has one type.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// What Loom knows about the downstream client; built once per connection.
#[derive(Debug, Clone)]
pub struct ClientInfo {
    pub addr: SocketAddr,
    /// The client IP as a header value, formatted once per connection.
    pub ip: HeaderValue,
    /// `http` or `https`, for `X-Forwarded-Proto`.
    pub scheme: &'static str,
}

impl ClientInfo {
    /// Information about a client connected from `addr`.
    pub fn new(addr: SocketAddr, scheme: &'static str) -> ClientInfo {
        let ip = HeaderValue::try_from(addr.ip().to_string())
            .unwrap_or(HeaderValue::from_static("unknown"));
        ClientInfo { addr, ip, scheme }
    }
}

/// A request made again from its head and its body in memory (for a
/// retry, or a copy to a shadow upstream).
pub fn rebuild(parts: &http::request::Parts, body: Bytes) -> Request<Body> {
    let mut req = Request::new(
        http_body_util::Full::new(body)
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    req
}

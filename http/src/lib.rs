//! HTTP transport: what every layer of Loom uses to speak HTTP/1.1 and
//! pass bodies along.
//!
//! - [`server`]: Loom's own HTTP/1.1 server connection (reads heads with
//!   [`request_head`], hands upgrades, HTTP/2 and large bodies to hyper);
//! - [`Pool`]: keep-alive connections to upstreams, kept per thread, with
//!   an HTTP/1.1 client connection driven by the request's own task
//!   (`h1`) and hyper's for HTTP/2 and TLS;
//! - [`Body`], [`collect`], [`rebuild`] and the hop-by-hop header rules.
//!
//! The reverse proxy (`loom-proxy`), the LLM providers (`loom-providers`),
//! the Proxy-Wasm host and the gateway's listeners build on it; it knows
//! nothing of routes, upstream groups or configuration.

mod body;
mod collect;
mod h1;
mod headers;
pub mod pool;
pub mod request_head;
pub mod server;

/// Entry points of the fuzz targets in `fuzz/` (and of the tests that
/// replay their corpora): the HTTP/1.1 heads and bodies Loom parses itself.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::h1::fuzzing::response;
    pub use crate::request_head::fuzzing::request;
}

pub use body::{Body, BoxError, ClientInfo, rebuild};
pub use collect::{CollectError, Collected, collect};
pub use h1::{content_length, tokens as header_tokens};
pub use headers::{is_upgrade, strip_hop_by_hop};
pub use pool::{Pool, PoolBody};

/// What the connection pool reports when an exchange with an origin fails.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No connection could be made (refused, unreachable, TLS failure).
    #[error("upstream {origin} refused the connection: {detail}")]
    Connect { origin: String, detail: String },
    /// The exchange failed after the connection was made.
    #[error("upstream {origin} failed: {detail}")]
    Failed { origin: String, detail: String },
    /// The request could not be sent as built (no scheme or host, a body
    /// that could not be read).
    #[error("invalid request: {0}")]
    BadRequest(String),
}

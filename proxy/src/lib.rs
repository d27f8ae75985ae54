//! The general reverse proxy.
//!
//! [`Upstream`] is one named group of endpoints built from configuration;
//! [`Forwarder`] sends a request to one of its endpoints and returns the
//! upstream's response. Both bodies stream through without buffering;
//! hop-by-hop headers are removed in each direction and the `X-Forwarded-*`
//! headers are added. A refused or failed connection is a 502, an upstream
//! that does not answer in time a 504.
//!
//! Connection pools live in the [`Forwarder`], which outlives configuration
//! reloads, so keep-alive connections survive a reload. The transport
//! itself (pool, HTTP/1.1 codec, body type) is `loom-http`.

mod balance;
mod breaker;
mod forward;
mod health;
mod retry;
mod upgrade;
mod upstream;

pub use balance::random;
pub use forward::Forwarder;
pub use retry::{Failure, MAX_REPLAY, RetryPolicy};
pub use upgrade::{is_upgrade, tunnel};
pub use upstream::{EndpointState, Upstream, cookie};

/// The crate's error type.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configured endpoint is not a usable URL.
    #[error("upstream {upstream}: invalid endpoint {endpoint:?}")]
    InvalidEndpoint { upstream: String, endpoint: String },
    /// No connection could be made (refused, unreachable, TLS failure).
    #[error("upstream {upstream} refused the connection: {detail}")]
    Connect { upstream: String, detail: String },
    /// The upstream did not send response headers in time.
    #[error("upstream {upstream} timed out")]
    Timeout { upstream: String },
    /// The exchange failed after the connection was made.
    #[error("upstream {upstream} failed: {detail}")]
    Failed { upstream: String, detail: String },
    /// The upstream's circuit breaker refused the request.
    #[error("upstream {upstream}: circuit open ({why})")]
    CircuitOpen { upstream: String, why: &'static str },
    /// The TLS settings of an upstream could not be loaded.
    #[error("upstream {upstream}: TLS: {detail}")]
    Tls { upstream: String, detail: String },
    /// The request could not be built (a path that is not a valid URI).
    #[error("invalid request: {0}")]
    BadRequest(String),
}

impl Error {
    /// The status the client sees.
    pub fn status(&self) -> http::StatusCode {
        match self {
            Error::Timeout { .. } => http::StatusCode::GATEWAY_TIMEOUT,
            Error::BadRequest(_) => http::StatusCode::BAD_REQUEST,
            Error::CircuitOpen { .. } => http::StatusCode::SERVICE_UNAVAILABLE,
            _ => http::StatusCode::BAD_GATEWAY,
        }
    }
}

impl From<loom_http::Error> for Error {
    fn from(e: loom_http::Error) -> Error {
        match e {
            loom_http::Error::Connect { origin, detail } => Error::Connect {
                upstream: origin,
                detail,
            },
            loom_http::Error::Failed { origin, detail } => Error::Failed {
                upstream: origin,
                detail,
            },
            loom_http::Error::BadRequest(detail) => Error::BadRequest(detail),
        }
    }
}

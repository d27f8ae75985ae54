//! The Proxy-Wasm plugin host: standard Proxy-Wasm filters (ABI 0.2.1, and
//! 0.2.0 where it differs), run on wasmtime, on AI routes and proxy routes
//! alike.
//!
//! - [`Plugin::load`] compiles a `.wasm` file once (the compiled code is
//!   cached on disk between restarts) and checks that the filter starts and
//!   accepts its configuration.
//! - Each worker thread runs its own instance of each plugin, created on
//!   first use, with one root context; every request gets a stream context
//!   in it ([`Chain::start`] → [`Stream`]).
//! - An instance has a memory ceiling and every callback a time budget
//!   (epoch interruption). A trap or a limit fails only the request that hit
//!   it (500, or the request passes untouched when the plugin is
//!   `fail_open`), and the instance is replaced before the next request.
//! - A reload builds new [`Plugin`]s; requests in flight keep the instances
//!   they started with.

mod abi;
mod callouts;
mod engine;
mod filter;
mod host;
mod shared;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};

pub use callouts::to_upstreams;
pub use engine::Plugin;
pub use filter::{Chain, Stream, Verdict};
pub use shared::render_metrics;

/// The crate's error type.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A plugin could not be loaded: unreadable, not a valid filter, an
    /// import the host does not provide, or a refused configuration.
    #[error("plugin {plugin}: {detail}")]
    Plugin { plugin: String, detail: String },
}

/// Where a plugin's request-headers callback runs in the middleware chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    BeforeAuth,
    AfterAuth,
}

/// What a plugin is loaded from.
#[derive(Clone)]
pub struct PluginConfig {
    pub name: String,
    pub path: std::path::PathBuf,
    /// Handed to `on_configure`.
    pub config: Bytes,
    /// Handed to `on_vm_start`.
    pub vm_config: Bytes,
    pub vm_id: String,
    pub fail_open: bool,
    pub phase: Phase,
    pub max_memory: usize,
    pub max_cpu_time: Duration,
    /// Sends the plugin's `dispatch_http_call`s.
    pub callouts: Arc<dyn Callouts>,
}

/// The immutable part of a plugin that its instances share.
pub(crate) struct Spec {
    pub name: String,
    pub vm_id: String,
    pub config: Bytes,
    pub vm_config: Bytes,
    pub callouts: Arc<dyn Callouts>,
}

/// A boxed future, for [`Callouts`].
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// How a plugin's HTTP callouts (`dispatch_http_call`) reach a named
/// upstream; the gateway provides it.
pub trait Callouts: Send + Sync {
    /// Whether `upstream` names something the plugin may call.
    fn knows(&self, upstream: &str) -> bool;
    /// Sends `request` to `upstream` and reads the whole answer, giving up
    /// (with an error) once `timeout` has passed.
    fn call(
        &self,
        upstream: &str,
        request: http::Request<Bytes>,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<CallResponse, String>>;
}

/// The answer to a callout, as the plugin reads it.
#[derive(Debug, Clone)]
pub struct CallResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: HeaderMap,
}

/// An answer a plugin gave in place of the upstream
/// (`send_local_response`).
#[derive(Debug, Clone)]
pub struct LocalResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// What plugins may ask about the request through properties. Built once
/// per request from cheap clones (shared strings and buffers).
#[derive(Debug, Clone, Default)]
pub struct StreamInfo {
    pub request_id: String,
    pub route: Arc<str>,
    pub method: http::Method,
    pub uri: http::Uri,
    pub host: Option<http::HeaderValue>,
    pub scheme: &'static str,
    pub protocol: &'static str,
    pub source: Option<SocketAddr>,
    pub destination: Option<SocketAddr>,
    pub upstream: Option<Arc<loom_proxy::Upstream>>,
    pub consumer: Option<String>,
}

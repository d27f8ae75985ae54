//! LLM providers behind one interface.
//!
//! A [`Registry`] is built from the `ai_gateway` configuration; for a requested
//! model it returns the [`Target`]s that can serve it (provider plus the model
//! name to send). Each [`Provider`] speaks Loom's canonical OpenAI-shaped types
//! and translates to its own wire format inside its adapter, so the gateway's
//! data path never sees a provider-specific shape. Errors carry the status the
//! client should see and whether another provider could succeed.

mod error;
mod mock;
mod openai;
mod registry;
mod sse;
mod stats;

use std::pin::Pin;

use futures_util::Stream;
use loom_models::chat::ChatChunk;
use loom_models::completions::CompletionResponse;

pub use error::Error;
pub use mock::rough_tokens;
pub use registry::{Provider, Registry, Target};
pub use sse::{StreamItem, sse_json};
pub use stats::{ProviderSnapshot, ProviderStats, StatsBook};

/// The HTTP client type providers share.
pub use reqwest::Client as HttpClient;

/// A streamed chat completion, one chunk per upstream event.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<ChatChunk, Error>> + Send>>;

/// A streamed legacy completion.
pub type CompletionStream = Pin<Box<dyn Stream<Item = Result<CompletionResponse, Error>> + Send>>;

/// The HTTP client every provider shares: rustls, HTTP/2 where the server
/// offers it, pooled keep-alive connections.
pub fn http_client() -> Result<reqwest::Client, Error> {
    reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        .pool_idle_timeout(std::time::Duration::from_secs(90))
        .tcp_nodelay(true)
        .build()
        .map_err(|e| Error::Unsupported(format!("cannot build the HTTP client: {e}")))
}

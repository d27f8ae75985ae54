//! LLM providers behind one interface.
//!
//! A [`Registry`] is built from the `ai_gateway` configuration; for a requested
//! model it returns the [`Target`]s that can serve it (provider plus the model
//! name to send). Each [`Provider`] speaks Loom's canonical OpenAI-shaped types
//! and translates to its own wire format inside its adapter, so the gateway's
//! data path never sees a provider-specific shape. Errors carry the status the
//! client should see and whether another provider could succeed.

mod adapter;
pub mod anthropic;
mod convert;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod gemini;
mod http;
mod mock;
mod openai;
mod passthrough;
mod registry;
pub mod responses;
mod router;
mod sse;
mod stats;
mod usage;

use std::pin::Pin;

use bytes::Bytes;
use futures_util::Stream;
use loom_models::chat::{ChatChunk, Usage};
use loom_models::completions::CompletionResponse;

pub use adapter::{Adapter, AnyAdapter, CountApi, Wire};
pub use anthropic::{Native, NativeEvent, NativeStream};
pub use error::Error;
pub use http::{HttpClient, with_plugin_headers};
pub use loom_config::settings::FailoverPolicy;
pub use mock::rough_tokens;

/// Where canonical usage keeps the prompt tokens written to a provider's
/// prompt cache (`prompt_tokens_details.cache_write_tokens`; Anthropic's
/// `cache_creation_input_tokens`).
pub const CACHE_WRITE_TOKENS: &str = "cache_write_tokens";

/// The prompt tokens `u` says were written to the provider's prompt cache.
pub fn cache_write_tokens(u: &Usage) -> u64 {
    u.prompt_tokens_details
        .as_ref()
        .and_then(|d| d.extra.get(CACHE_WRITE_TOKENS))
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0)
}
pub use passthrough::{RawEvents, RawStream, event_data, generated_text};
pub use registry::{Provider, Registry, Target};
pub use router::Router;
pub use sse::{StreamItem, sse_json};
pub use stats::{Circuit, Outcome, ProviderSnapshot, ProviderStats, StatsBook};

/// A streamed chat completion, one chunk per upstream event.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<ChatChunk, Error>> + Send>>;

/// A streamed legacy completion.
pub type CompletionStream = Pin<Box<dyn Stream<Item = Result<CompletionResponse, Error>> + Send>>;

/// A complete, non-streamed answer: the JSON body exactly as the client will
/// receive it, and the token usage it reports. Providers that speak OpenAI's
/// format pass the upstream body through untouched; translating providers
/// serialise their canonical response here.
#[derive(Debug, Clone)]
pub struct Reply {
    pub body: Bytes,
    pub usage: Option<Usage>,
}

impl Reply {
    /// A reply serialised from a canonical value.
    pub fn json(value: &impl serde::Serialize, usage: Option<Usage>) -> Reply {
        Reply {
            body: Bytes::from(serde_json::to_vec(value).unwrap_or_default()),
            usage,
        }
    }
}

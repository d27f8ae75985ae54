//! What a provider adapter implements: one method per kind of call, each
//! defaulting to "not served by this provider", so that an adapter states
//! what it serves by the methods it writes, and the gateway asks the
//! provider rather than checking its type. [`Provider`](crate::Provider)
//! wraps an adapter with its name, statistics and breaker.
//!
//! Calls return boxed futures so that adapters sit behind one `dyn` type:
//! one allocation per provider call, against the dozens a call makes anyway.

use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use loom_models::chat::ChatRequest;
use loom_models::completions::CompletionRequest;
use loom_models::embeddings::EmbeddingRequest;

use crate::anthropic::Native;
use crate::{ChunkStream, CompletionStream, Error, RawStream, Reply};

/// The wire format a provider speaks natively: a client speaking the same
/// one can have its request and answer relayed as they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    /// OpenAI's chat completions, completions and embeddings.
    OpenAi,
    /// Anthropic's Messages API.
    Anthropic,
    /// Another format, reached through translation only.
    Other,
}

/// A provider call in progress.
pub type Call<'a, T> = BoxFuture<'a, Result<T, Error>>;

/// One kind of provider.
pub trait Adapter: Send + Sync + std::fmt::Debug {
    /// The provider's configured name (for errors).
    fn name(&self) -> &str;

    /// The format it speaks natively.
    fn wire(&self) -> Wire {
        Wire::Other
    }

    /// The active health check: a cheap authenticated call.
    fn health(&self, _timeout: Duration) -> Call<'_, ()> {
        Box::pin(std::future::ready(Ok(())))
    }

    /// A chat completion, canonical request to canonical answer.
    fn chat<'a>(&'a self, req: &'a ChatRequest) -> Call<'a, Reply>;

    /// A streamed chat completion; the stream ends with a usage chunk when
    /// the provider reports usage, whether or not the client asked.
    fn chat_stream<'a>(&'a self, req: &'a mut ChatRequest) -> Call<'a, ChunkStream>;

    /// A chat completion from the client's own OpenAI-format bytes, sent as
    /// they are (naming `model`).
    fn chat_relayed<'a>(&'a self, _model: &'a str, _body: Bytes) -> Call<'a, Reply> {
        not_served(self.name(), "OpenAI chat requests as they are")
    }

    /// A streamed chat completion relayed as the upstream's OpenAI-format bytes.
    fn chat_stream_raw<'a>(&'a self, _req: &'a mut ChatRequest) -> Call<'a, RawStream> {
        not_served(self.name(), "OpenAI-format streams")
    }

    /// A legacy text completion; `original`: the client's bytes, to send
    /// as they are.
    fn completions<'a>(
        &'a self,
        _req: &'a CompletionRequest,
        _original: Option<Bytes>,
    ) -> Call<'a, Reply> {
        not_served(self.name(), "/v1/completions")
    }

    /// A streamed legacy text completion.
    fn completions_stream<'a>(
        &'a self,
        _req: &'a mut CompletionRequest,
    ) -> Call<'a, CompletionStream> {
        not_served(self.name(), "/v1/completions")
    }

    /// A streamed legacy completion relayed as the upstream's bytes.
    fn completions_stream_raw<'a>(
        &'a self,
        _req: &'a mut CompletionRequest,
    ) -> Call<'a, RawStream> {
        not_served(self.name(), "/v1/completions")
    }

    /// Embeddings; `original`: the client's bytes, to send as they are.
    fn embeddings<'a>(
        &'a self,
        _req: &'a EmbeddingRequest,
        _original: Option<Bytes>,
    ) -> Call<'a, Reply> {
        not_served(self.name(), "/v1/embeddings")
    }

    /// A Messages call in Anthropic's own format, untranslated both ways.
    fn messages(&self, _body: Bytes, _stream: bool) -> Call<'_, Native> {
        not_served(self.name(), "the native Anthropic Messages API")
    }
}

/// The answer of a call the provider does not serve.
fn not_served<'a, T: Send + 'a>(provider: &str, what: &str) -> Call<'a, T> {
    let e = Error::Unsupported(format!("provider {provider} does not serve {what}"));
    Box::pin(std::future::ready(Err(e)))
}

//! Ingress codecs: one per wire format a client speaks.
//!
//! The [flow](super::flow) runs every AI request through the same stages;
//! an [`Ingress`] says only what its format needs at each: how to parse
//! the request, which texts the guardrails read, how to call a provider for
//! it, and how to write an answer, a stream's events and an error back.
//! Adding a wire format is writing one of these and a line of the endpoint
//! table in `ai/mod.rs`; `completions.rs` is the smallest example.

pub mod chat;
pub mod completions;
pub mod embeddings;
pub mod messages;
pub mod responses;

use std::sync::Arc;

use bytes::Bytes;
use http::Response;
use loom_guardrails::Guardrails;
use loom_models::chat::{ChatRequest, ChatResponse};
use loom_providers::{Reply, Target};

use super::guard::Applied;
use super::relay::{Encoder, Source, Started};
use super::{ApiError, JsonText};
use crate::runtime::body::Body;
use crate::runtime::exchange::Exchange;

/// What one provider attempt returned.
pub(crate) enum Answer {
    /// A whole answer, in the format the ingress's [`Ingress::whole`] reads.
    Whole(Box<Reply>),
    /// A stream (the flow waits for its first event).
    Stream(Source),
}

/// How an attempt may be made.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Attempt {
    /// The client asked for a stream.
    pub stream: bool,
    /// No stage reads the answer (no answer checks, no cache record): a
    /// provider speaking the client's format may be relayed as it is.
    pub plain: bool,
}

/// One wire format of AI requests. Defaults describe a format with no
/// stream, no output budget, no guardrail texts and no cache.
pub(crate) trait Ingress: Sized + Send {
    /// Whether the semantic cache can answer this format.
    const CACHED: bool = false;

    /// Parses the client's body and checks what the format requires.
    fn parse(body: JsonText) -> Result<Self, ApiError>;

    /// The body as the client sent it (counted for limits and estimates).
    fn body(&self) -> &Bytes;

    /// The model the client asked for.
    fn model(&self) -> &str;

    /// The same, shared (what the exchange and the relay keep).
    fn client_model(&self) -> Arc<str> {
        Arc::from(self.model())
    }

    /// Whether the client asked for a stream.
    fn stream(&self) -> bool {
        false
    }

    /// Whether the client asked for the final usage event of a stream.
    fn wants_usage(&self) -> bool {
        false
    }

    /// The output budget the client set.
    fn max_output(&self) -> Option<u64> {
        None
    }

    /// Writes the gateway's token cap in as the budget the client did not
    /// set. False when the format has no such budget.
    fn cap(&mut self, _cap: u64) -> Result<bool, ApiError> {
        Ok(false)
    }

    /// The request checks of the guardrails over the texts this format
    /// carries. `cache`: the semantic cache will read the request.
    async fn guard(
        &mut self,
        policy: Arc<Guardrails>,
        _ex: &Exchange,
        _cache: bool,
    ) -> Result<Applied, ApiError> {
        Ok(Applied::unchecked(policy))
    }

    /// The chat request the semantic cache keys on.
    fn cacheable(&self) -> Option<&ChatRequest> {
        None
    }

    /// A whole answer as the semantic cache keeps it (the chat shape),
    /// from the body the client got.
    fn cache_answer(&self, body: &Bytes) -> Option<ChatResponse> {
        serde_json::from_slice(body).ok()
    }

    /// A cached answer written for this client: whole, or as the stream
    /// the client asked for.
    fn cached_body(&self, answer: &ChatResponse, stream: bool, wants_usage: bool) -> Bytes {
        if stream {
            crate::ai::cache::replay(answer, wants_usage)
        } else {
            Bytes::from(serde_json::to_vec(answer).unwrap_or_default())
        }
    }

    /// Characters of prompt, for routing by size.
    fn prompt_chars(&self) -> usize {
        0
    }

    /// Makes the request ready for the planned targets (parses what one of
    /// them will need), so that attempts fail only for the provider's sake.
    fn prepare(&mut self, _plan: &[Target], _applied: &Applied) -> Result<(), ApiError> {
        Ok(())
    }

    /// One attempt at `target`.
    async fn call(
        &mut self,
        target: &Target,
        how: Attempt,
    ) -> Result<Answer, loom_providers::Error>;

    /// A whole answer's body for the client, after the answer checks.
    fn whole(&self, body: Bytes, applied: &Applied) -> Result<Bytes, ApiError>;

    /// How this client's stream events are written.
    fn encoder(&self, _target: &Target, _started: &Started) -> Encoder {
        Encoder::OpenAi
    }

    /// An error in the client's format.
    fn render(err: ApiError) -> Response<Body> {
        err.into_response()
    }

    /// The answer when every attempt failed.
    fn failed(err: ApiError, _target: &Target) -> Response<Body> {
        Self::render(err)
    }
}

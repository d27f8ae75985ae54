//! What a provider adapter implements: one method per kind of call, each
//! defaulting to "not served by this provider", so that an adapter states
//! what it serves by the methods it writes, and the gateway asks the
//! provider rather than checking its type. [`Provider`](crate::Provider)
//! wraps an adapter with its name, statistics and breaker.
//!
//! Calls are futures returned in place (no `dyn`, no box): a provider
//! call's future is kilobytes, and boxing it cost 4% of a relayed chat
//! request's instructions (callgrind). The configured adapters are held in
//! [`AnyAdapter`], which implements the trait by handing each call to the
//! adapter it holds, in one macro.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
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

/// One kind of provider.
pub trait Adapter: Send + Sync + std::fmt::Debug {
    /// The provider's configured name (for errors).
    fn name(&self) -> &str;

    /// The format it speaks natively.
    fn wire(&self) -> Wire {
        Wire::Other
    }

    /// The active health check: a cheap authenticated call.
    fn health(&self, _timeout: Duration) -> impl Future<Output = Result<(), Error>> + Send {
        std::future::ready(Ok(()))
    }

    /// A chat completion, canonical request to canonical answer.
    fn chat(&self, req: &ChatRequest) -> impl Future<Output = Result<Reply, Error>> + Send;

    /// A streamed chat completion; the stream ends with a usage chunk when
    /// the provider reports usage, whether or not the client asked.
    fn chat_stream(
        &self,
        req: &mut ChatRequest,
    ) -> impl Future<Output = Result<ChunkStream, Error>> + Send;

    /// A chat completion from the client's own OpenAI-format bytes, sent as
    /// they are (naming `model`).
    fn chat_relayed(
        &self,
        _model: &str,
        _body: Bytes,
    ) -> impl Future<Output = Result<Reply, Error>> + Send {
        not_served(self.name(), "OpenAI chat requests as they are")
    }

    /// A streamed chat completion relayed as the upstream's OpenAI-format bytes.
    fn chat_stream_raw(
        &self,
        _req: &mut ChatRequest,
    ) -> impl Future<Output = Result<RawStream, Error>> + Send {
        not_served(self.name(), "OpenAI-format streams")
    }

    /// A legacy text completion; `original`: the client's bytes, to send
    /// as they are.
    fn completions(
        &self,
        _req: &CompletionRequest,
        _original: Option<Bytes>,
    ) -> impl Future<Output = Result<Reply, Error>> + Send {
        not_served(self.name(), "/v1/completions")
    }

    /// A streamed legacy text completion.
    fn completions_stream(
        &self,
        _req: &mut CompletionRequest,
    ) -> impl Future<Output = Result<CompletionStream, Error>> + Send {
        not_served(self.name(), "/v1/completions")
    }

    /// A streamed legacy completion relayed as the upstream's bytes.
    fn completions_stream_raw(
        &self,
        _req: &mut CompletionRequest,
    ) -> impl Future<Output = Result<RawStream, Error>> + Send {
        not_served(self.name(), "/v1/completions")
    }

    /// Embeddings; `original`: the client's bytes, to send as they are.
    fn embeddings(
        &self,
        _req: &EmbeddingRequest,
        _original: Option<Bytes>,
    ) -> impl Future<Output = Result<Reply, Error>> + Send {
        not_served(self.name(), "/v1/embeddings")
    }

    /// A Messages call in Anthropic's own format, untranslated both ways.
    fn messages(
        &self,
        _body: Bytes,
        _stream: bool,
    ) -> impl Future<Output = Result<Native, Error>> + Send {
        not_served(self.name(), "the native Anthropic Messages API")
    }

    /// Counts the input tokens of a request in the provider's own format
    /// (`api`), as the provider's count endpoint answers: the answer's body.
    fn count_tokens(
        &self,
        api: CountApi,
        _body: Bytes,
    ) -> impl Future<Output = Result<Bytes, Error>> + Send {
        not_served(self.name(), api.endpoint())
    }

    /// Whether the provider serves OpenAI's Responses API itself (OpenAI
    /// and Azure OpenAI do; OpenAI-compatible servers are not assumed to).
    fn serves_responses(&self) -> bool {
        false
    }

    /// A Responses API call in OpenAI's own format, untranslated both ways:
    /// `body` is sent as it is (with `model` the provider's name for it).
    fn responses(
        &self,
        _model: &str,
        _body: Bytes,
        _stream: bool,
    ) -> impl Future<Output = Result<Native, Error>> + Send {
        not_served(self.name(), "the native Responses API")
    }

    /// A response the provider keeps itself, in OpenAI's format: `GET` or
    /// `DELETE` of `/v1/responses/{rest}` (`rest` is the id, maybe followed
    /// by `/input_items` and a query). The answer's body.
    fn kept_response(
        &self,
        _method: http::Method,
        _rest: &str,
    ) -> impl Future<Output = Result<Bytes, Error>> + Send {
        not_served(self.name(), "the native Responses API")
    }
}

/// The token-count endpoints Loom serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CountApi {
    /// Anthropic's `POST /v1/messages/count_tokens`.
    Messages,
    /// OpenAI's `POST /v1/responses/input_tokens`.
    Responses,
}

impl CountApi {
    /// The endpoint, for messages.
    pub fn endpoint(self) -> &'static str {
        match self {
            CountApi::Messages => "/v1/messages/count_tokens",
            CountApi::Responses => "/v1/responses/input_tokens",
        }
    }
}

/// The answer of a call the provider does not serve.
fn not_served<T: Send>(
    provider: &str,
    what: &str,
) -> impl Future<Output = Result<T, Error>> + Send {
    let e = Error::Unsupported(format!("provider {provider} does not serve {what}"));
    std::future::ready(Err(e))
}

/// The configured adapter of a provider, one of the kinds Loom has.
#[derive(Debug)]
pub struct AnyAdapter(pub(crate) Kind);

/// The kinds of adapter. Adding one is a variant here and an arm in `each!`.
#[derive(Debug)]
pub(crate) enum Kind {
    OpenAi(Box<crate::openai::OpenAi>),
    Anthropic(Box<crate::anthropic::Anthropic>),
    Gemini(Box<crate::gemini::Gemini>),
    Mock(Box<crate::mock::Mock>),
}

/// Runs `$call` on the adapter `$this` holds.
macro_rules! each {
    ($this:expr, $a:ident => $call:expr) => {
        match &$this.0 {
            Kind::OpenAi($a) => $call,
            Kind::Anthropic($a) => $call,
            Kind::Gemini($a) => $call,
            Kind::Mock($a) => $call,
        }
    };
}

impl Adapter for AnyAdapter {
    fn name(&self) -> &str {
        each!(self, a => a.name())
    }

    fn wire(&self) -> Wire {
        each!(self, a => a.wire())
    }

    async fn health(&self, timeout: Duration) -> Result<(), Error> {
        each!(self, a => Adapter::health(&**a, timeout).await)
    }

    async fn chat(&self, req: &ChatRequest) -> Result<Reply, Error> {
        each!(self, a => Adapter::chat(&**a, req).await)
    }

    async fn chat_stream(&self, req: &mut ChatRequest) -> Result<ChunkStream, Error> {
        each!(self, a => Adapter::chat_stream(&**a, req).await)
    }

    async fn chat_relayed(&self, model: &str, body: Bytes) -> Result<Reply, Error> {
        each!(self, a => Adapter::chat_relayed(&**a, model, body).await)
    }

    async fn chat_stream_raw(&self, req: &mut ChatRequest) -> Result<RawStream, Error> {
        each!(self, a => Adapter::chat_stream_raw(&**a, req).await)
    }

    async fn completions(
        &self,
        req: &CompletionRequest,
        original: Option<Bytes>,
    ) -> Result<Reply, Error> {
        each!(self, a => Adapter::completions(&**a, req, original).await)
    }

    async fn completions_stream(
        &self,
        req: &mut CompletionRequest,
    ) -> Result<CompletionStream, Error> {
        each!(self, a => Adapter::completions_stream(&**a, req).await)
    }

    async fn completions_stream_raw(
        &self,
        req: &mut CompletionRequest,
    ) -> Result<RawStream, Error> {
        each!(self, a => Adapter::completions_stream_raw(&**a, req).await)
    }

    async fn embeddings(
        &self,
        req: &EmbeddingRequest,
        original: Option<Bytes>,
    ) -> Result<Reply, Error> {
        each!(self, a => Adapter::embeddings(&**a, req, original).await)
    }

    async fn messages(&self, body: Bytes, stream: bool) -> Result<Native, Error> {
        each!(self, a => Adapter::messages(&**a, body, stream).await)
    }

    fn serves_responses(&self) -> bool {
        each!(self, a => a.serves_responses())
    }

    async fn count_tokens(&self, api: CountApi, body: Bytes) -> Result<Bytes, Error> {
        each!(self, a => Adapter::count_tokens(&**a, api, body).await)
    }

    async fn responses(&self, model: &str, body: Bytes, stream: bool) -> Result<Native, Error> {
        each!(self, a => Adapter::responses(&**a, model, body, stream).await)
    }

    async fn kept_response(&self, method: http::Method, rest: &str) -> Result<Bytes, Error> {
        each!(self, a => Adapter::kept_response(&**a, method, rest).await)
    }
}

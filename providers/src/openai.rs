//! OpenAI, Azure OpenAI and OpenAI-compatible servers (vLLM, Ollama,
//! llama.cpp, Groq, …).
//!
//! The canonical types are already their wire format, so this adapter sets
//! the model, asks for stream usage, and maps errors. A non-streamed answer is
//! passed to the client byte for byte; only its `usage` is read.

use std::future::Future;
use std::time::Duration;

use crate::http::Incoming;
use bytes::Bytes;
use http::header::{AUTHORIZATION, HeaderMap};
use http::{Response, Uri};
use http_body_util::BodyExt;
use std::collections::BTreeMap;

use http::header::HeaderName;
use loom_config::settings::{Provider as ProviderConfig, ProviderKind};
use loom_models::chat::{ChatRequest, StreamOptions};
use loom_models::completions::CompletionRequest;
use loom_models::embeddings::EmbeddingRequest;
use serde::Serialize;
use tokio::time::Instant;

use crate::adapter::{Adapter, Wire};
use crate::anthropic::Native;
use crate::http::HttpClient;
use crate::passthrough::{RawStream, raw_events};
use crate::sse::{StreamItem, sse_json};
use crate::usage::usage_of;
use crate::{ChunkStream, CompletionStream, Error, Reply};

const OPENAI_BASE: &str = "https://api.openai.com/v1";

/// Azure API version used when the configuration names none.
const AZURE_API_VERSION: &str = "2024-10-21";

/// First Azure API version that accepts `stream_options`.
const AZURE_STREAM_USAGE_SINCE: &str = "2024-09-01";

/// An OpenAI-style endpoint.
#[derive(Debug)]
pub struct OpenAi {
    name: String,
    routes: Routes,
    /// Whether streams may ask for the final usage chunk.
    stream_usage: bool,
    /// OpenAI and Azure OpenAI serve the Responses API themselves.
    native_responses: bool,
    headers: HeaderMap,
    timeout: Duration,
    client: HttpClient,
}

/// Where each endpoint of each model lives.
// One per provider, built once: the variants' size difference costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Routes {
    /// One base URL for every model, parsed once.
    Fixed {
        chat: Uri,
        completions: Uri,
        embeddings: Uri,
        models: Uri,
        responses: Uri,
        input_tokens: Uri,
    },
    /// Azure OpenAI: one deployment per model, the API version in the query.
    Azure {
        endpoint: String,
        api_version: String,
        deployments: BTreeMap<String, String>,
    },
}

#[derive(Debug, Clone, Copy)]
enum Endpoint {
    Chat,
    Completions,
    Embeddings,
    Responses,
    InputTokens,
}

impl Routes {
    /// The URI of a kept response: `rest` (an id, maybe `/input_items`, and
    /// a query) under the Responses endpoint. Only the characters an id,
    /// its sub-path and a list query use are let through.
    fn kept_uri(&self, rest: &str) -> Result<Uri, Error> {
        if rest.is_empty()
            || !rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-/?=&.%".contains(&b))
            || rest.contains("..")
        {
            return Err(Error::Unsupported(format!("invalid response id {rest:?}")));
        }
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let uri = match self {
            Routes::Fixed { responses, .. } => {
                let sep = if query.is_empty() { "" } else { "?" };
                format!("{responses}/{path}{sep}{query}")
            }
            Routes::Azure { endpoint: base, .. } => {
                let and = if query.is_empty() { "" } else { "&" };
                format!("{base}/openai/v1/responses/{path}?api-version=preview{and}{query}")
            }
        };
        uri.parse()
            .map_err(|_| Error::Unsupported(format!("invalid response id {rest:?}")))
    }

    fn uri(&self, endpoint: Endpoint, model: &str) -> Result<Uri, Error> {
        match self {
            Routes::Fixed {
                chat,
                completions,
                embeddings,
                responses,
                input_tokens,
                ..
            } => Ok(match endpoint {
                Endpoint::Chat => chat.clone(),
                Endpoint::Completions => completions.clone(),
                Endpoint::Embeddings => embeddings.clone(),
                Endpoint::Responses => responses.clone(),
                Endpoint::InputTokens => input_tokens.clone(),
            }),
            Routes::Azure {
                endpoint: base,
                api_version,
                deployments,
            } => {
                let deployment = deployments.get(model).map_or(model, String::as_str);
                let path = match endpoint {
                    Endpoint::Chat => "chat/completions",
                    Endpoint::Completions => "completions",
                    Endpoint::Embeddings => "embeddings",
                    // Azure serves the Responses API on its OpenAI-style v1
                    // surface only: no deployment in the path (the body's
                    // `model` names it).
                    Endpoint::Responses | Endpoint::InputTokens => {
                        let tail = match endpoint {
                            Endpoint::InputTokens => "/input_tokens",
                            _ => "",
                        };
                        return format!("{base}/openai/v1/responses{tail}?api-version=preview")
                            .parse()
                            .map_err(|_| Error::Unsupported("invalid Azure endpoint".to_owned()));
                    }
                };
                format!("{base}/openai/deployments/{deployment}/{path}?api-version={api_version}")
                    .parse()
                    .map_err(|_| {
                        Error::Unsupported(format!(
                            "`{model}` cannot be used in an Azure deployment URL"
                        ))
                    })
            }
        }
    }
}

fn invalid(provider: &str, what: impl std::fmt::Display) -> Error {
    Error::Unsupported(format!("provider {provider}: {what}"))
}

impl OpenAi {
    /// Builds the adapter; fails on a base URL or header that is not valid HTTP.
    pub fn new(cfg: &ProviderConfig, client: HttpClient) -> Result<OpenAi, Error> {
        let azure = cfg.kind == ProviderKind::AzureOpenai;
        let mut fixed = Vec::new();
        let (routes, stream_usage) = if azure {
            let endpoint = cfg
                .base_url
                .as_deref()
                .ok_or_else(|| invalid(&cfg.name, "an azure_openai provider needs endpoint"))?
                .trim_end_matches('/')
                .to_owned();
            let api_version = cfg
                .api_version
                .clone()
                .unwrap_or_else(|| AZURE_API_VERSION.to_owned());
            if !cfg.api_key.is_empty() {
                fixed.push((
                    HeaderName::from_static("api-key"),
                    cfg.api_key.expose().to_owned(),
                ));
            }
            let stream_usage = api_version.as_str() >= AZURE_STREAM_USAGE_SINCE;
            let routes = Routes::Azure {
                endpoint,
                api_version,
                deployments: cfg.deployments.clone(),
            };
            // Fail at load, not per request, on an endpoint that cannot form a URL.
            routes
                .uri(Endpoint::Chat, "check")
                .map_err(|_| invalid(&cfg.name, "invalid endpoint"))?;
            (routes, stream_usage)
        } else {
            let base = cfg
                .base_url
                .as_deref()
                .unwrap_or(OPENAI_BASE)
                .trim_end_matches('/');
            let uri = |path: &str| -> Result<Uri, Error> {
                format!("{base}{path}")
                    .parse()
                    .map_err(|_| invalid(&cfg.name, format_args!("invalid base_url {base:?}")))
            };
            if !cfg.api_key.is_empty() {
                fixed.push((AUTHORIZATION, format!("Bearer {}", cfg.api_key.expose())));
            }
            let routes = Routes::Fixed {
                chat: uri("/chat/completions")?,
                completions: uri("/completions")?,
                embeddings: uri("/embeddings")?,
                models: uri("/models")?,
                responses: uri("/responses")?,
                input_tokens: uri("/responses/input_tokens")?,
            };
            (routes, true)
        };
        Ok(OpenAi {
            name: cfg.name.clone(),
            routes,
            stream_usage,
            native_responses: cfg.kind != ProviderKind::OpenaiCompatible,
            headers: crate::http::headers(cfg, fixed)?,
            timeout: cfg.timeout,
            client,
        })
    }

    pub(crate) async fn chat(&self, req: &ChatRequest) -> Result<Reply, Error> {
        self.whole(Endpoint::Chat, &req.model, None, req).await
    }

    /// A chat completion from the client's own bytes (see `Provider::chat_relayed`).
    pub(crate) async fn chat_relayed(&self, model: &str, body: Bytes) -> Result<Reply, Error> {
        self.whole(Endpoint::Chat, model, Some(body), &()).await
    }

    pub(crate) async fn chat_stream(&self, req: &mut ChatRequest) -> Result<ChunkStream, Error> {
        self.ask_stream_usage(&mut req.stream_options);
        self.stream(Endpoint::Chat, &req.model, to_json(req)?).await
    }

    /// A Responses API call as OpenAI serves it: `body` goes as it is (on
    /// Azure, with `model` the deployment's name) and the answer comes back
    /// untranslated; usage is read from the answer, or from a stream's
    /// `response.completed` (or `.incomplete`, `.failed`) event.
    pub(crate) async fn responses(
        &self,
        model: &str,
        body: Bytes,
        stream: bool,
    ) -> Result<Native, Error> {
        let deadline = Instant::now() + self.timeout;
        let uri = self.routes.uri(Endpoint::Responses, model)?;
        let body = match &self.routes {
            Routes::Azure { deployments, .. } => match deployments.get(model) {
                Some(d) if d != model => {
                    crate::responses::with_fields(&body, &[("model", d.as_str().into())])
                        .map_err(Error::Unsupported)?
                }
                _ => body,
            },
            Routes::Fixed { .. } => body,
        };
        let resp = self.send(&uri, body, deadline).await?;
        if !stream {
            let body = crate::http::collect(&self.name, resp, deadline).await?;
            let usage =
                crate::responses::usage_of(&body).map_err(|detail| Error::InvalidResponse {
                    provider: self.name.clone(),
                    detail,
                })?;
            return Ok(Native::Whole(Box::new(Reply { body, usage })));
        }
        Ok(Native::Stream(crate::responses::native_events(
            self.name.clone(),
            resp.into_body().into_data_stream(),
            deadline,
        )))
    }

    /// A streamed chat completion relayed as the upstream's bytes.
    pub(crate) async fn chat_stream_raw(&self, req: &mut ChatRequest) -> Result<RawStream, Error> {
        self.ask_stream_usage(&mut req.stream_options);
        self.raw(Endpoint::Chat, &req.model, to_json(req)?).await
    }

    /// A streamed legacy completion relayed as the upstream's bytes.
    pub(crate) async fn completions_stream_raw(
        &self,
        req: &mut CompletionRequest,
    ) -> Result<RawStream, Error> {
        self.ask_stream_usage(&mut req.stream_options);
        self.raw(Endpoint::Completions, &req.model, to_json(req)?)
            .await
    }

    pub(crate) async fn completions(
        &self,
        req: &CompletionRequest,
        original: Option<Bytes>,
    ) -> Result<Reply, Error> {
        self.whole(Endpoint::Completions, &req.model, original, req)
            .await
    }

    pub(crate) async fn completions_stream(
        &self,
        req: &mut CompletionRequest,
    ) -> Result<CompletionStream, Error> {
        self.ask_stream_usage(&mut req.stream_options);
        self.stream(Endpoint::Completions, &req.model, to_json(req)?)
            .await
    }

    pub(crate) async fn embeddings(
        &self,
        req: &EmbeddingRequest,
        original: Option<Bytes>,
    ) -> Result<Reply, Error> {
        self.whole(Endpoint::Embeddings, &req.model, original, req)
            .await
    }

    /// Always asks for the final usage chunk: it is the source of truth for
    /// accounting, and the gateway removes it again if the client did not ask.
    /// (Azure API versions before 2024-09-01 reject `stream_options`.)
    fn ask_stream_usage(&self, options: &mut Option<StreamOptions>) {
        if self.stream_usage {
            options
                .get_or_insert_with(StreamOptions::default)
                .include_usage = Some(true);
        }
    }

    /// The active health check: the model list, the cheapest authenticated call.
    pub async fn health(&self, timeout: Duration) -> Result<(), Error> {
        let uri = match &self.routes {
            Routes::Fixed { models, .. } => models.clone(),
            Routes::Azure {
                endpoint,
                api_version,
                ..
            } => format!("{endpoint}/openai/models?api-version={api_version}")
                .parse()
                .map_err(|_| invalid(&self.name, "invalid endpoint"))?,
        };
        crate::http::probe(&self.client, &self.name, &uri, &self.headers, timeout).await
    }

    /// A whole answer: the client's bytes when given, else `req` serialised.
    async fn whole(
        &self,
        endpoint: Endpoint,
        model: &str,
        original: Option<Bytes>,
        req: &impl Serialize,
    ) -> Result<Reply, Error> {
        let deadline = Instant::now() + self.timeout;
        let body = match original {
            Some(bytes) => bytes,
            None => to_json(req)?,
        };
        let uri = self.routes.uri(endpoint, model)?;
        let body = crate::http::fetch(
            &self.client,
            &self.name,
            &uri,
            &self.headers,
            body,
            deadline,
        )
        .await?;
        let usage = usage_of(&body).map_err(|detail| Error::InvalidResponse {
            provider: self.name.clone(),
            detail,
        })?;
        Ok(Reply { body, usage })
    }

    /// A streamed answer, decoded event by event.
    async fn stream<T: StreamItem + Send + 'static>(
        &self,
        endpoint: Endpoint,
        model: &str,
        body: Bytes,
    ) -> Result<std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<T, Error>> + Send>>, Error>
    {
        let deadline = Instant::now() + self.timeout;
        let uri = self.routes.uri(endpoint, model)?;
        let resp = self.send(&uri, body, deadline).await?;
        Ok(Box::pin(sse_json(
            self.name.clone(),
            resp.into_body().into_data_stream(),
            deadline,
        )))
    }

    /// A streamed answer, relayed as the upstream's bytes.
    async fn raw(&self, endpoint: Endpoint, model: &str, body: Bytes) -> Result<RawStream, Error> {
        let deadline = Instant::now() + self.timeout;
        let uri = self.routes.uri(endpoint, model)?;
        let resp = self.send(&uri, body, deadline).await?;
        Ok(raw_events(
            &self.name,
            resp.into_body().into_data_stream(),
            deadline,
        ))
    }

    async fn send(
        &self,
        uri: &Uri,
        body: Bytes,
        deadline: Instant,
    ) -> Result<Response<Incoming>, Error> {
        crate::http::post(&self.client, &self.name, uri, &self.headers, body, deadline).await
    }
}

impl Adapter for OpenAi {
    fn name(&self) -> &str {
        &self.name
    }

    fn wire(&self) -> Wire {
        Wire::OpenAi
    }

    fn health(&self, timeout: Duration) -> impl Future<Output = Result<(), Error>> + Send {
        self.health(timeout)
    }

    fn chat(&self, req: &ChatRequest) -> impl Future<Output = Result<Reply, Error>> + Send {
        self.chat(req)
    }

    fn chat_stream(
        &self,
        req: &mut ChatRequest,
    ) -> impl Future<Output = Result<ChunkStream, Error>> + Send {
        self.chat_stream(req)
    }

    fn chat_relayed(
        &self,
        model: &str,
        body: Bytes,
    ) -> impl Future<Output = Result<Reply, Error>> + Send {
        self.chat_relayed(model, body)
    }

    fn chat_stream_raw(
        &self,
        req: &mut ChatRequest,
    ) -> impl Future<Output = Result<RawStream, Error>> + Send {
        self.chat_stream_raw(req)
    }

    fn completions(
        &self,
        req: &CompletionRequest,
        original: Option<Bytes>,
    ) -> impl Future<Output = Result<Reply, Error>> + Send {
        self.completions(req, original)
    }

    fn completions_stream(
        &self,
        req: &mut CompletionRequest,
    ) -> impl Future<Output = Result<CompletionStream, Error>> + Send {
        self.completions_stream(req)
    }

    fn completions_stream_raw(
        &self,
        req: &mut CompletionRequest,
    ) -> impl Future<Output = Result<RawStream, Error>> + Send {
        self.completions_stream_raw(req)
    }

    fn embeddings(
        &self,
        req: &EmbeddingRequest,
        original: Option<Bytes>,
    ) -> impl Future<Output = Result<Reply, Error>> + Send {
        self.embeddings(req, original)
    }

    fn serves_responses(&self) -> bool {
        self.native_responses
    }

    async fn count_tokens(&self, api: crate::CountApi, body: Bytes) -> Result<Bytes, Error> {
        if api != crate::CountApi::Responses || !self.native_responses {
            return Err(Error::Unsupported(format!(
                "provider {} does not serve {}",
                self.name,
                api.endpoint()
            )));
        }
        let deadline = Instant::now() + self.timeout;
        let uri = self.routes.uri(Endpoint::InputTokens, "")?;
        crate::http::fetch(
            &self.client,
            &self.name,
            &uri,
            &self.headers,
            body,
            deadline,
        )
        .await
    }

    fn responses(
        &self,
        model: &str,
        body: Bytes,
        stream: bool,
    ) -> impl Future<Output = Result<Native, Error>> + Send {
        self.responses(model, body, stream)
    }

    async fn kept_response(&self, method: http::Method, rest: &str) -> Result<Bytes, Error> {
        if !self.native_responses {
            return Err(Error::Unsupported(format!(
                "provider {} does not serve the native Responses API",
                self.name
            )));
        }
        let uri = self.routes.kept_uri(rest)?;
        let deadline = Instant::now() + self.timeout;
        crate::http::fetch_as(
            &self.client,
            &self.name,
            method,
            &uri,
            &self.headers,
            deadline,
        )
        .await
    }
}

fn to_json(value: &impl Serialize) -> Result<Bytes, Error> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| Error::Unsupported(e.to_string()))
}

/// The message of an OpenAI-style error body, or the start of the body.
pub(crate) fn upstream_message(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Envelope {
        error: Inner,
    }
    #[derive(serde::Deserialize)]
    struct Inner {
        message: String,
    }
    match serde_json::from_slice::<Envelope>(body) {
        Ok(e) => e.error.message,
        Err(_) => {
            let text = String::from_utf8_lossy(body);
            text.chars().take(300).collect()
        }
    }
}

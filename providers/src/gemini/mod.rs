//! Google Gemini behind the OpenAI API: the Gemini API with an API key, or
//! Vertex AI with a bearer token. Requests become `generateContent` /
//! `streamGenerateContent?alt=sse` calls ([`translate`]); embeddings use
//! `batchEmbedContents` (Gemini API only).

pub(crate) mod translate;

use std::future::Future;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use http::header::{AUTHORIZATION, HeaderName};
use http::{StatusCode, Uri};
use http_body_util::BodyExt;
use loom_config::settings::{Provider as ProviderConfig, ProviderKind};
use loom_models::chat::{ChatRequest, Usage};
use loom_models::embeddings::{Embedding, EmbeddingRequest, EmbeddingResponse, EmbeddingUsage};
use loom_models::error::ErrorEnvelope as OpenAiError;
use loom_models::gemini::{
    self as g, BatchEmbedRequest, BatchEmbedResponse, EmbedRequest, ErrorEnvelope, GenerateResponse,
};
use serde_json::Value;
use tokio::time::Instant;

use crate::adapter::Adapter;
use crate::convert::unix_now;
use crate::http::HttpClient;
use crate::{ChunkStream, Error, Reply};

const GEMINI_BASE: &str = "https://generativelanguage.googleapis.com/v1beta";

/// A Gemini or Vertex AI endpoint.
#[derive(Debug)]
pub struct Gemini {
    name: String,
    /// Up to and including `/models` is appended per request.
    base: String,
    vertex: bool,
    headers: http::HeaderMap,
    timeout: Duration,
    client: HttpClient,
}

impl Gemini {
    /// Builds the adapter. Vertex needs `base_url`, or `project` and `location`.
    pub fn new(cfg: &ProviderConfig, client: HttpClient) -> Result<Gemini, Error> {
        let vertex = cfg.kind == ProviderKind::Vertex;
        let invalid = |what: &str| Error::Unsupported(format!("provider {}: {what}", cfg.name));
        let base = match (&cfg.base_url, vertex) {
            (Some(b), _) => b.trim_end_matches('/').to_owned(),
            (None, false) => GEMINI_BASE.to_owned(),
            (None, true) => match (&cfg.project, &cfg.location) {
                (Some(project), Some(location)) => format!(
                    "https://{location}-aiplatform.googleapis.com/v1/projects/{project}/locations/{location}/publishers/google"
                ),
                _ => {
                    return Err(invalid(
                        "a vertex provider needs base_url, or project and location",
                    ));
                }
            },
        };
        let mut fixed = Vec::new();
        if !cfg.api_key.is_empty() {
            if vertex {
                fixed.push((AUTHORIZATION, format!("Bearer {}", cfg.api_key.expose())));
            } else {
                fixed.push((
                    HeaderName::from_static("x-goog-api-key"),
                    cfg.api_key.expose().to_owned(),
                ));
            }
        }
        let adapter = Gemini {
            name: cfg.name.clone(),
            base,
            vertex,
            headers: crate::http::headers(cfg, fixed)?,
            timeout: cfg.timeout,
            client,
        };
        adapter
            .uri("check", "generateContent", false)
            .map_err(|_| invalid("invalid base_url"))?;
        Ok(adapter)
    }

    /// The active health check: the model list.
    pub async fn health(&self, timeout: std::time::Duration) -> Result<(), Error> {
        let uri: Uri = format!("{}/models", self.base)
            .parse()
            .map_err(|_| Error::Unsupported(format!("provider {}: invalid base_url", self.name)))?;
        crate::http::probe(&self.client, &self.name, &uri, &self.headers, timeout).await
    }

    fn uri(&self, model: &str, method: &str, sse: bool) -> Result<Uri, Error> {
        let query = if sse { "?alt=sse" } else { "" };
        format!("{}/models/{model}:{method}{query}", self.base)
            .parse()
            .map_err(|_| Error::Unsupported(format!("`{model}` cannot be used in a Gemini URL")))
    }

    async fn post(
        &self,
        uri: &Uri,
        body: &impl serde::Serialize,
        deadline: Instant,
    ) -> Result<http::Response<crate::http::Incoming>, Error> {
        let body = serde_json::to_vec(body).map_err(|e| Error::Unsupported(e.to_string()))?;
        crate::http::post(
            &self.client,
            &self.name,
            uri,
            &self.headers,
            Bytes::from(body),
            deadline,
        )
        .await
        .map_err(to_openai_error)
    }

    fn invalid_response(&self, e: impl std::fmt::Display) -> Error {
        Error::InvalidResponse {
            provider: self.name.clone(),
            detail: e.to_string(),
        }
    }

    pub(crate) async fn chat(&self, req: &ChatRequest) -> Result<Reply, Error> {
        let body = translate::request(req)?;
        let deadline = Instant::now() + self.timeout;
        let uri = self.uri(&req.model, "generateContent", false)?;
        let resp = self.post(&uri, &body, deadline).await?;
        let bytes = crate::http::collect(&self.name, resp, deadline).await?;
        let parsed: GenerateResponse =
            serde_json::from_slice(&bytes).map_err(|e| self.invalid_response(e))?;
        if parsed.candidates.is_empty() {
            let why = parsed
                .prompt_feedback
                .as_ref()
                .map_or_else(|| "no candidates".to_owned(), Value::to_string);
            return Err(Error::Status {
                provider: self.name.clone(),
                status: StatusCode::BAD_REQUEST,
                message: format!("the prompt was blocked: {why}"),
                body: Bytes::from(
                    serde_json::to_vec(&OpenAiError::new(
                        format!("The provider blocked the prompt: {why}"),
                        "invalid_request_error",
                        Some("content_filter"),
                    ))
                    .unwrap_or_default(),
                ),
                content_type: Some("application/json".to_owned()),
                retry_after: None,
            });
        }
        let out = translate::response(parsed, &req.model, unix_now());
        Ok(Reply::json(&out, out.usage.clone()))
    }

    pub(crate) async fn chat_stream(&self, req: &ChatRequest) -> Result<ChunkStream, Error> {
        if req.n.is_some_and(|n| n > 1) {
            return Err(Error::Unsupported(
                "The gemini provider streams one choice: `n` must be 1 when `stream` is true"
                    .to_owned(),
            ));
        }
        let body = translate::request(req)?;
        let deadline = Instant::now() + self.timeout;
        let uri = self.uri(&req.model, "streamGenerateContent", true)?;
        let resp = self.post(&uri, &body, deadline).await?;
        let events = Box::pin(resp.into_body().into_data_stream().eventsource());
        let tr = translate::StreamTranslator::new(&req.model, unix_now());
        let provider = self.name.clone();
        // States: 0 streaming, 1 usage chunk sent, 2 done.
        let chunks =
            futures_util::stream::unfold((events, tr, 0u8), move |(mut events, mut tr, state)| {
                let provider = provider.clone();
                async move {
                    if state == 2 {
                        return None;
                    }
                    loop {
                        let err = |detail: String| Error::Stream {
                            provider: provider.clone(),
                            detail,
                        };
                        match tokio::time::timeout_at(deadline, events.next()).await {
                            Err(_) => {
                                return Some((
                                    Err(Error::Timeout {
                                        provider: provider.clone(),
                                    }),
                                    (events, tr, 2),
                                ));
                            }
                            Ok(None) if tr.finished && state == 0 => {
                                let usage = tr.usage_chunk();
                                return Some((Ok(usage), (events, tr, 2)));
                            }
                            Ok(None) if tr.finished => return None,
                            Ok(None) => {
                                let e =
                                    err("the upstream closed the stream before a finish reason"
                                        .to_owned());
                                return Some((Err(e), (events, tr, 2)));
                            }
                            Ok(Some(Err(e))) => {
                                return Some((Err(err(e.to_string())), (events, tr, 2)));
                            }
                            Ok(Some(Ok(ev))) => {
                                if ev.data.trim().is_empty() {
                                    continue;
                                }
                                let parsed: GenerateResponse = match serde_json::from_str(&ev.data)
                                {
                                    Ok(p) => p,
                                    Err(_) => {
                                        let detail =
                                            match serde_json::from_str::<ErrorEnvelope>(&ev.data) {
                                                Ok(e) => format!(
                                                    "{}: {}",
                                                    e.error.status, e.error.message
                                                ),
                                                Err(e) => format!("undecodable event: {e}"),
                                            };
                                        return Some((Err(err(detail)), (events, tr, 2)));
                                    }
                                };
                                if let Some(chunk) = tr.on_event(parsed) {
                                    return Some((Ok(chunk), (events, tr, 0)));
                                }
                            }
                        }
                    }
                }
            });
        Ok(Box::pin(chunks))
    }

    pub(crate) async fn embeddings(&self, req: &EmbeddingRequest) -> Result<Reply, Error> {
        if self.vertex {
            return Err(Error::Unsupported(format!(
                "provider {}: embeddings are served through the Gemini API, not Vertex AI",
                self.name
            )));
        }
        let texts = req.texts();
        if texts.is_empty() {
            return Err(Error::Unsupported(
                "the gemini provider embeds text input only".to_owned(),
            ));
        }
        let body = BatchEmbedRequest {
            requests: texts
                .iter()
                .map(|t| EmbedRequest {
                    model: format!("models/{}", req.model),
                    content: g::Content {
                        role: None,
                        parts: vec![g::Part {
                            text: Some((*t).to_owned()),
                            ..g::Part::default()
                        }],
                    },
                    output_dimensionality: req.dimensions,
                })
                .collect(),
        };
        let deadline = Instant::now() + self.timeout;
        let uri = self.uri(&req.model, "batchEmbedContents", false)?;
        let resp = self.post(&uri, &body, deadline).await?;
        let bytes = crate::http::collect(&self.name, resp, deadline).await?;
        let parsed: BatchEmbedResponse =
            serde_json::from_slice(&bytes).map_err(|e| self.invalid_response(e))?;
        let base64 = req.encoding_format.as_deref() == Some("base64");
        let data = parsed
            .embeddings
            .into_iter()
            .enumerate()
            .map(|(i, e)| Embedding {
                object: "embedding".to_owned(),
                index: i as u32,
                embedding: if base64 {
                    let raw: Vec<u8> = e.values.iter().flat_map(|f| f.to_le_bytes()).collect();
                    Value::String(base64::engine::general_purpose::STANDARD.encode(raw))
                } else {
                    Value::Array(
                        e.values
                            .into_iter()
                            .map(|f| Value::from(f64::from(f)))
                            .collect(),
                    )
                },
                ..Embedding::default()
            })
            .collect();
        // The Gemini API does not count embedding tokens; estimate them.
        let tokens: u64 = texts.iter().map(|t| crate::rough_tokens(t)).sum();
        let out = EmbeddingResponse {
            object: "list".to_owned(),
            data,
            model: req.model.clone(),
            usage: Some(EmbeddingUsage {
                prompt_tokens: tokens,
                total_tokens: tokens,
            }),
            ..EmbeddingResponse::default()
        };
        Ok(Reply::json(&out, Some(Usage::new(tokens, 0))))
    }
}

/// A Google API error as an OpenAI one, keeping status and message.
fn to_openai_error(e: Error) -> Error {
    let Error::Status {
        provider,
        status,
        message,
        body,
        retry_after,
        ..
    } = e
    else {
        return e;
    };
    let (kind, message) = match serde_json::from_slice::<ErrorEnvelope>(&body) {
        Ok(env) => (env.error.status, env.error.message),
        Err(_) => (String::new(), message),
    };
    let openai_type = match kind.as_str() {
        "INVALID_ARGUMENT" | "FAILED_PRECONDITION" | "NOT_FOUND" | "OUT_OF_RANGE" => {
            "invalid_request_error"
        }
        "UNAUTHENTICATED" => "authentication_error",
        "PERMISSION_DENIED" => "permission_error",
        "RESOURCE_EXHAUSTED" => "rate_limit_error",
        _ => "server_error",
    };
    let code = (!kind.is_empty()).then_some(kind.as_str());
    let envelope = OpenAiError::new(message.clone(), openai_type, code);
    Error::Status {
        provider,
        status,
        message,
        body: Bytes::from(serde_json::to_vec(&envelope).unwrap_or_default()),
        content_type: Some("application/json".to_owned()),
        retry_after,
    }
}
impl Adapter for Gemini {
    fn name(&self) -> &str {
        &self.name
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

    fn embeddings(
        &self,
        req: &EmbeddingRequest,
        _original: Option<Bytes>,
    ) -> impl Future<Output = Result<Reply, Error>> + Send {
        self.embeddings(req)
    }
}

//! OpenAI and OpenAI-compatible servers (vLLM, Ollama, llama.cpp, Groq, …):
//! the canonical types are already their wire format, so this adapter only
//! sets the model, asks for stream usage, and maps errors.

use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use loom_config::Provider as ProviderConfig;
use loom_models::chat::{ChatRequest, ChatResponse, StreamOptions};
use loom_models::completions::{CompletionRequest, CompletionResponse};
use loom_models::embeddings::{EmbeddingRequest, EmbeddingResponse};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::sse::sse_json;
use crate::{ChunkStream, CompletionStream, Error};

const OPENAI_BASE: &str = "https://api.openai.com/v1";

/// An OpenAI-style endpoint.
#[derive(Debug)]
pub struct OpenAi {
    name: String,
    base: String,
    headers: HeaderMap,
    timeout: Duration,
    client: reqwest::Client,
}

impl OpenAi {
    /// Builds the adapter; fails on a header that is not valid HTTP.
    pub fn new(cfg: &ProviderConfig, client: reqwest::Client) -> Result<OpenAi, Error> {
        let base = cfg
            .base_url
            .as_deref()
            .unwrap_or(OPENAI_BASE)
            .trim_end_matches('/')
            .to_owned();
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if !cfg.api_key.is_empty() {
            let mut v = HeaderValue::try_from(format!("Bearer {}", cfg.api_key.expose())).map_err(
                |_| {
                    Error::Unsupported(format!(
                        "provider {}: api_key is not a valid header value",
                        cfg.name
                    ))
                },
            )?;
            v.set_sensitive(true);
            headers.insert(AUTHORIZATION, v);
        }
        for (k, v) in &cfg.headers {
            let name = HeaderName::try_from(k.as_str()).map_err(|_| {
                Error::Unsupported(format!("provider {}: invalid header name {k:?}", cfg.name))
            })?;
            let mut value = HeaderValue::try_from(v.expose()).map_err(|_| {
                Error::Unsupported(format!(
                    "provider {}: invalid value for header {k:?}",
                    cfg.name
                ))
            })?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        Ok(OpenAi {
            name: cfg.name.clone(),
            base,
            headers,
            timeout: cfg.timeout.get(),
            client,
        })
    }

    pub(crate) async fn chat(&self, req: &ChatRequest) -> Result<ChatResponse, Error> {
        let resp = self.send("/chat/completions", req).await?;
        self.json(resp).await
    }

    pub(crate) async fn chat_stream(&self, req: &mut ChatRequest) -> Result<ChunkStream, Error> {
        // Always ask for the final usage chunk: it is the source of truth for
        // accounting. The gateway removes it again if the client did not ask.
        let opts = req
            .stream_options
            .get_or_insert_with(StreamOptions::default);
        opts.include_usage = Some(true);
        let resp = self.send("/chat/completions", req).await?;
        Ok(Box::pin(sse_json(self.name.clone(), resp.bytes_stream())))
    }

    pub(crate) async fn completions(
        &self,
        req: &CompletionRequest,
    ) -> Result<CompletionResponse, Error> {
        let resp = self.send("/completions", req).await?;
        self.json(resp).await
    }

    pub(crate) async fn completions_stream(
        &self,
        req: &mut CompletionRequest,
    ) -> Result<CompletionStream, Error> {
        let opts = req
            .stream_options
            .get_or_insert_with(StreamOptions::default);
        opts.include_usage = Some(true);
        let resp = self.send("/completions", req).await?;
        Ok(Box::pin(sse_json(self.name.clone(), resp.bytes_stream())))
    }

    pub(crate) async fn embeddings(
        &self,
        req: &EmbeddingRequest,
    ) -> Result<EmbeddingResponse, Error> {
        let resp = self.send("/embeddings", req).await?;
        self.json(resp).await
    }

    /// Posts `body` and returns the response once its status is a success.
    async fn send(&self, path: &str, body: &impl Serialize) -> Result<reqwest::Response, Error> {
        let body = serde_json::to_vec(body).map_err(|e| Error::Unsupported(e.to_string()))?;
        let resp = self
            .client
            .post(format!("{}{path}", self.base))
            .headers(self.headers.clone())
            .timeout(self.timeout)
            .body(body)
            .send()
            .await
            .map_err(|e| Error::from_transport(&self.name, &e))?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let content_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = resp.bytes().await.unwrap_or_else(|_| Bytes::new());
        Err(Error::Status {
            provider: self.name.clone(),
            status,
            message: upstream_message(&body),
            body,
            content_type,
        })
    }

    async fn json<T: DeserializeOwned>(&self, resp: reqwest::Response) -> Result<T, Error> {
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| Error::from_transport(&self.name, &e))?;
        serde_json::from_slice(&bytes).map_err(|e| Error::InvalidResponse {
            provider: self.name.clone(),
            detail: e.to_string(),
        })
    }
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

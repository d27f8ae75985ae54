//! OpenAI and OpenAI-compatible servers (vLLM, Ollama, llama.cpp, Groq, …).
//!
//! The canonical types are already their wire format, so this adapter sets
//! the model, asks for stream usage, and maps errors. A non-streamed answer is
//! passed to the client byte for byte; only its `usage` is read.

use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, HeaderMap};
use http::{Response, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use loom_config::Provider as ProviderConfig;
use loom_models::chat::{ChatRequest, StreamOptions};
use loom_models::completions::CompletionRequest;
use loom_models::embeddings::EmbeddingRequest;
use serde::Serialize;
use tokio::time::Instant;

use crate::http::HttpClient;
use crate::sse::sse_json;
use crate::usage::usage_of;
use crate::{ChunkStream, CompletionStream, Error, Reply};

const OPENAI_BASE: &str = "https://api.openai.com/v1";

/// An OpenAI-style endpoint.
#[derive(Debug)]
pub struct OpenAi {
    name: String,
    chat_uri: Uri,
    completions_uri: Uri,
    embeddings_uri: Uri,
    headers: HeaderMap,
    timeout: Duration,
    client: HttpClient,
}

fn invalid(provider: &str, what: impl std::fmt::Display) -> Error {
    Error::Unsupported(format!("provider {provider}: {what}"))
}

impl OpenAi {
    /// Builds the adapter; fails on a base URL or header that is not valid HTTP.
    pub fn new(cfg: &ProviderConfig, client: HttpClient) -> Result<OpenAi, Error> {
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
        let mut fixed = Vec::new();
        if !cfg.api_key.is_empty() {
            fixed.push((AUTHORIZATION, format!("Bearer {}", cfg.api_key.expose())));
        }
        let headers = crate::http::headers(cfg, fixed)?;
        Ok(OpenAi {
            name: cfg.name.clone(),
            chat_uri: uri("/chat/completions")?,
            completions_uri: uri("/completions")?,
            embeddings_uri: uri("/embeddings")?,
            headers,
            timeout: cfg.timeout.get(),
            client,
        })
    }

    pub(crate) async fn chat(
        &self,
        req: &ChatRequest,
        original: Option<Bytes>,
    ) -> Result<Reply, Error> {
        let deadline = Instant::now() + self.timeout;
        let body = match original {
            Some(bytes) => bytes,
            None => to_json(req)?,
        };
        let resp = self.send(&self.chat_uri, body, deadline).await?;
        self.reply(resp, deadline).await
    }

    pub(crate) async fn chat_stream(&self, req: &mut ChatRequest) -> Result<ChunkStream, Error> {
        // Always ask for the final usage chunk: it is the source of truth for
        // accounting. The gateway removes it again if the client did not ask.
        let opts = req
            .stream_options
            .get_or_insert_with(StreamOptions::default);
        opts.include_usage = Some(true);
        let deadline = Instant::now() + self.timeout;
        let resp = self.send(&self.chat_uri, to_json(req)?, deadline).await?;
        Ok(Box::pin(sse_json(
            self.name.clone(),
            resp.into_body().into_data_stream(),
            deadline,
        )))
    }

    pub(crate) async fn completions(
        &self,
        req: &CompletionRequest,
        original: Option<Bytes>,
    ) -> Result<Reply, Error> {
        let deadline = Instant::now() + self.timeout;
        let body = match original {
            Some(bytes) => bytes,
            None => to_json(req)?,
        };
        let resp = self.send(&self.completions_uri, body, deadline).await?;
        self.reply(resp, deadline).await
    }

    pub(crate) async fn completions_stream(
        &self,
        req: &mut CompletionRequest,
    ) -> Result<CompletionStream, Error> {
        let opts = req
            .stream_options
            .get_or_insert_with(StreamOptions::default);
        opts.include_usage = Some(true);
        let deadline = Instant::now() + self.timeout;
        let resp = self
            .send(&self.completions_uri, to_json(req)?, deadline)
            .await?;
        Ok(Box::pin(sse_json(
            self.name.clone(),
            resp.into_body().into_data_stream(),
            deadline,
        )))
    }

    pub(crate) async fn embeddings(
        &self,
        req: &EmbeddingRequest,
        original: Option<Bytes>,
    ) -> Result<Reply, Error> {
        let deadline = Instant::now() + self.timeout;
        let body = match original {
            Some(bytes) => bytes,
            None => to_json(req)?,
        };
        let resp = self.send(&self.embeddings_uri, body, deadline).await?;
        self.reply(resp, deadline).await
    }

    async fn send(
        &self,
        uri: &Uri,
        body: Bytes,
        deadline: Instant,
    ) -> Result<Response<Incoming>, Error> {
        crate::http::post(&self.client, &self.name, uri, &self.headers, body, deadline).await
    }

    async fn reply(&self, resp: Response<Incoming>, deadline: Instant) -> Result<Reply, Error> {
        let body = crate::http::collect(&self.name, resp, deadline).await?;
        let usage = usage_of(&body).map_err(|detail| Error::InvalidResponse {
            provider: self.name.clone(),
            detail,
        })?;
        Ok(Reply { body, usage })
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

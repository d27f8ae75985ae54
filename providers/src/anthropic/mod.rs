//! The Anthropic Messages API behind the OpenAI chat API.
//!
//! Requests are translated to `POST /v1/messages` ([`translate`]), answers and
//! stream events back to OpenAI's shapes ([`translate`], [`stream`]). Anthropic
//! error bodies become OpenAI error envelopes with the provider's message, and
//! its `529 overloaded` becomes a 503.

pub mod ingress;
pub mod stream;
pub mod translate;

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use http::header::HeaderName;
use http::{StatusCode, Uri};
use http_body_util::BodyExt;
use loom_config::settings::Provider as ProviderConfig;
use loom_models::anthropic::{API_VERSION, ErrorEnvelope, MessagesResponse, StreamEvent};
use loom_models::chat::ChatRequest;
use loom_models::error::ErrorEnvelope as OpenAiError;
use tokio::time::Instant;

use crate::adapter::{Adapter, Wire};
use crate::convert::unix_now;
use crate::http::HttpClient;
use crate::{ChunkStream, Error, Reply};

const ANTHROPIC_BASE: &str = "https://api.anthropic.com";

/// An Anthropic endpoint.
#[derive(Debug)]
pub struct Anthropic {
    name: String,
    messages_uri: Uri,
    count_uri: Uri,
    headers: http::HeaderMap,
    timeout: Duration,
    client: HttpClient,
}

impl Anthropic {
    /// The active health check: `GET /v1/models`.
    pub async fn health(&self, timeout: std::time::Duration) -> Result<(), Error> {
        let messages = self.messages_uri.to_string();
        let models: Uri = format!("{}models", messages.trim_end_matches("messages"))
            .parse()
            .map_err(|_| Error::Unsupported(format!("provider {}: invalid base_url", self.name)))?;
        crate::http::probe(&self.client, &self.name, &models, &self.headers, timeout).await
    }

    /// Builds the adapter; `api_version` sets the `anthropic-version` header.
    pub fn new(cfg: &ProviderConfig, client: HttpClient) -> Result<Anthropic, Error> {
        let base = cfg
            .base_url
            .as_deref()
            .unwrap_or(ANTHROPIC_BASE)
            .trim_end_matches('/');
        let path = if base.ends_with("/v1") {
            "/messages"
        } else {
            "/v1/messages"
        };
        let invalid =
            || Error::Unsupported(format!("provider {}: invalid base_url {base:?}", cfg.name));
        let messages_uri = format!("{base}{path}").parse().map_err(|_| invalid())?;
        let count_uri = format!("{base}{path}/count_tokens")
            .parse()
            .map_err(|_| invalid())?;
        let fixed = vec![
            (
                HeaderName::from_static("x-api-key"),
                cfg.api_key.expose().to_owned(),
            ),
            (
                HeaderName::from_static("anthropic-version"),
                cfg.api_version
                    .clone()
                    .unwrap_or_else(|| API_VERSION.to_owned()),
            ),
        ];
        Ok(Anthropic {
            name: cfg.name.clone(),
            messages_uri,
            count_uri,
            headers: crate::http::headers(cfg, fixed)?,
            timeout: cfg.timeout,
            client,
        })
    }

    async fn post(
        &self,
        body: Bytes,
        deadline: Instant,
    ) -> Result<http::Response<crate::http::Incoming>, Error> {
        crate::http::post(
            &self.client,
            &self.name,
            &self.messages_uri,
            &self.headers,
            body,
            deadline,
        )
        .await
        .map_err(to_openai_error)
    }

    pub(crate) async fn chat(&self, req: &ChatRequest) -> Result<Reply, Error> {
        let body = translate::request(req, &req.model, false)?;
        let body = serde_json::to_vec(&body).map_err(|e| Error::Unsupported(e.to_string()))?;
        let deadline = Instant::now() + self.timeout;
        let resp = self.post(Bytes::from(body), deadline).await?;
        let bytes = crate::http::collect(&self.name, resp, deadline).await?;
        let parsed: MessagesResponse =
            serde_json::from_slice(&bytes).map_err(|e| Error::InvalidResponse {
                provider: self.name.clone(),
                detail: e.to_string(),
            })?;
        let out = translate::response(parsed, unix_now());
        Ok(Reply::json(&out, out.usage.clone()))
    }

    pub(crate) async fn chat_stream(&self, req: &ChatRequest) -> Result<ChunkStream, Error> {
        let body = translate::request(req, &req.model, true)?;
        let body = serde_json::to_vec(&body).map_err(|e| Error::Unsupported(e.to_string()))?;
        let deadline = Instant::now() + self.timeout;
        let resp = self.post(Bytes::from(body), deadline).await?;
        let events = Box::pin(resp.into_body().into_data_stream().eventsource());
        let state = (
            events,
            stream::Translator::new(&self.name, unix_now()),
            false,
        );
        let provider = self.name.clone();
        let chunks = futures_util::stream::unfold(state, move |(mut events, mut tr, mut done)| {
            let provider = provider.clone();
            async move {
                if done {
                    return None;
                }
                loop {
                    let next = match tokio::time::timeout_at(deadline, events.next()).await {
                        Err(_) => Some(Err(Error::Timeout {
                            provider: provider.clone(),
                        })),
                        Ok(None) if tr.finished => None,
                        Ok(None) => Some(Err(Error::Stream {
                            provider: provider.clone(),
                            detail: "the upstream closed the stream before message_stop".to_owned(),
                        })),
                        Ok(Some(Err(e))) => Some(Err(Error::Stream {
                            provider: provider.clone(),
                            detail: e.to_string(),
                        })),
                        Ok(Some(Ok(ev))) => {
                            match serde_json::from_str::<StreamEvent>(&ev.data) {
                                // Event types added after this version are skipped.
                                Err(_) if ev.event != "error" => continue,
                                Err(e) => Some(Err(Error::Stream {
                                    provider: provider.clone(),
                                    detail: e.to_string(),
                                })),
                                Ok(event) => match tr.on_event(event) {
                                    Ok(None) => continue,
                                    Ok(Some(chunk)) => Some(Ok(chunk)),
                                    Err(e) => Some(Err(e)),
                                },
                            }
                        }
                    };
                    return match next {
                        None => None,
                        Some(item) => {
                            done = item.is_err() || tr.finished;
                            Some((item, (events, tr, done)))
                        }
                    };
                }
            }
        });
        Ok(Box::pin(chunks))
    }
}

/// One event of a native Anthropic stream, framed for the client, with the
/// usage it reports (on `message_start` and `message_delta`).
#[derive(Debug)]
pub struct NativeEvent {
    pub frame: Bytes,
    pub usage: Option<loom_models::chat::Usage>,
    /// `usage` is the final count (`message_delta`); on `message_start` it
    /// counts the prompt only.
    pub final_usage: bool,
    /// The provider's own `error` event: the stream ends with it.
    pub error: bool,
}

/// A native Anthropic stream.
pub type NativeStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<NativeEvent, Error>> + Send>>;

/// What a native Messages call returns.
pub enum Native {
    /// A whole answer, byte for byte.
    Whole(Box<Reply>),
    /// A stream, event by event.
    Stream(NativeStream),
}

impl Anthropic {
    /// A Messages call in Anthropic's own format, for the Anthropic-compatible
    /// ingress: `body` is sent as is and the answer comes back untranslated.
    pub(crate) async fn messages(&self, body: Bytes, stream: bool) -> Result<Native, Error> {
        let deadline = Instant::now() + self.timeout;
        let resp = crate::http::post(
            &self.client,
            &self.name,
            &self.messages_uri,
            &self.headers,
            body,
            deadline,
        )
        .await?;
        if !stream {
            let body = crate::http::collect(&self.name, resp, deadline).await?;
            let parsed: MessagesResponse =
                serde_json::from_slice(&body).map_err(|e| Error::InvalidResponse {
                    provider: self.name.clone(),
                    detail: e.to_string(),
                })?;
            return Ok(Native::Whole(Box::new(Reply {
                body,
                usage: Some(translate::usage(&parsed.usage)),
            })));
        }
        let events = Box::pin(resp.into_body().into_data_stream().eventsource());
        let provider = self.name.clone();
        // (events, usage so far, finished)
        let state = (events, loom_models::anthropic::Usage::default(), false);
        let out = futures_util::stream::unfold(state, move |(mut events, mut usage, finished)| {
            let provider = provider.clone();
            async move {
                let next = match tokio::time::timeout_at(deadline, events.next()).await {
                    Err(_) => Err(Error::Timeout { provider }),
                    Ok(None) if finished => return None,
                    Ok(None) => Err(Error::Stream {
                        provider,
                        detail: "the upstream closed the stream before message_stop".to_owned(),
                    }),
                    Ok(Some(Err(e))) => Err(Error::Stream {
                        provider,
                        detail: e.to_string(),
                    }),
                    Ok(Some(Ok(ev))) => Ok(ev),
                };
                let ev = match next {
                    Ok(ev) => ev,
                    Err(e) => return Some((Err(e), (events, usage, true))),
                };
                let mut reported = None;
                let mut done = finished;
                let (mut final_usage, mut error) = (false, false);
                match serde_json::from_str::<StreamEvent>(&ev.data) {
                    Ok(StreamEvent::MessageStart { message }) => {
                        usage = message.usage;
                        reported = Some(translate::usage(&usage));
                    }
                    Ok(StreamEvent::MessageDelta { usage: Some(u), .. }) => {
                        usage.output_tokens = u.output_tokens;
                        reported = Some(translate::usage(&usage));
                        final_usage = true;
                    }
                    Ok(StreamEvent::MessageStop) => done = true,
                    // The provider's error ends the stream: nothing follows.
                    Ok(StreamEvent::Error { .. }) => (done, error) = (true, true),
                    _ => {}
                }
                let name = if ev.event.is_empty() {
                    "message"
                } else {
                    ev.event.as_str()
                };
                let frame = Bytes::from(format!("event: {name}\ndata: {}\n\n", ev.data));
                Some((
                    Ok(NativeEvent {
                        frame,
                        usage: reported,
                        final_usage,
                        error,
                    }),
                    (events, usage, done),
                ))
            }
        });
        Ok(Native::Stream(Box::pin(out)))
    }
}

/// An Anthropic error answer as an OpenAI one: the envelope is rewritten,
/// the provider's message and error type are kept, and 529 (overloaded)
/// becomes 503.
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
        Ok(env) => (env.error.kind, env.error.message),
        Err(_) => ("api_error".to_owned(), message),
    };
    let status = if status.as_u16() == 529 {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        status
    };
    let openai_type = match kind.as_str() {
        "invalid_request_error" | "not_found_error" | "request_too_large" => {
            "invalid_request_error"
        }
        "authentication_error" => "authentication_error",
        "permission_error" => "permission_error",
        "rate_limit_error" => "rate_limit_error",
        _ => "server_error",
    };
    let envelope = OpenAiError::new(message.clone(), openai_type, Some(kind.as_str()));
    Error::Status {
        provider,
        status,
        message,
        body: Bytes::from(serde_json::to_vec(&envelope).unwrap_or_default()),
        content_type: Some("application/json".to_owned()),
        retry_after,
    }
}

impl Adapter for Anthropic {
    fn name(&self) -> &str {
        &self.name
    }

    fn wire(&self) -> Wire {
        Wire::Anthropic
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

    fn messages(
        &self,
        body: Bytes,
        stream: bool,
    ) -> impl Future<Output = Result<Native, Error>> + Send {
        self.messages(body, stream)
    }

    async fn count_tokens(&self, api: crate::CountApi, body: Bytes) -> Result<Bytes, Error> {
        if api != crate::CountApi::Messages {
            return Err(Error::Unsupported(format!(
                "provider {} does not serve {}",
                self.name,
                api.endpoint()
            )));
        }
        let deadline = Instant::now() + self.timeout;
        crate::http::fetch(
            &self.client,
            &self.name,
            &self.count_uri,
            &self.headers,
            body,
            deadline,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_become_openai_envelopes() {
        let e = to_openai_error(Error::Status {
            provider: "a".into(),
            status: StatusCode::from_u16(529).unwrap(),
            message: String::new(),
            body: Bytes::from_static(
                br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
            ),
            content_type: None,
            retry_after: None,
        });
        assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
        let Error::Status { body, .. } = &e else {
            panic!()
        };
        let env: OpenAiError = serde_json::from_slice(body).unwrap();
        assert_eq!(env.error.message, "Overloaded");
        assert_eq!(env.error.kind, "server_error");

        let e = to_openai_error(Error::Status {
            provider: "a".into(),
            status: StatusCode::BAD_REQUEST,
            message: String::new(),
            body: Bytes::from_static(br#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}}"#),
            content_type: None,
            retry_after: None,
        });
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        let Error::Status { body, .. } = &e else {
            panic!()
        };
        let env: OpenAiError = serde_json::from_slice(body).unwrap();
        assert_eq!(env.error.kind, "invalid_request_error");
        assert!(env.error.message.starts_with("prompt is too long"));
    }
}

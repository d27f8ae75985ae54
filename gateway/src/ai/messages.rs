//! The Anthropic-compatible ingress: `POST /v1/messages`, so the Anthropic
//! SDK works unchanged. An Anthropic provider gets the client's request as it
//! is and its answer comes back untranslated; any other provider is reached
//! through the canonical OpenAI shape and translated back, stream events
//! included. Errors are rendered in Anthropic's format.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http::{Request, Response, StatusCode};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use loom_models::anthropic::MessagesRequest;
use loom_models::chat::{ChatResponse, Usage};
use loom_providers::anthropic::ingress::{self, EventEncoder};
use loom_providers::{ChunkStream, Native, NativeStream, Provider};

use super::{ApiError, choose, parse_body, settle, sse_headers};
use crate::body::{Body, BoxError, json_response};
use crate::exchange::Exchange;
use crate::state::Runtime;

/// An error in Anthropic's shape, with the same status as the OpenAI one.
fn render(err: &ApiError) -> Response<Body> {
    let status = err.status();
    let message = match err {
        ApiError::Provider(boxed) => match boxed.as_ref() {
            loom_providers::Error::Status { message, .. } => message.clone(),
            _ => err.envelope().error.message,
        },
        other => other.envelope().error.message,
    };
    let body = ingress::error_body(status.as_u16(), &message);
    json_response(status, serde_json::to_vec(&body).unwrap_or_default())
}

/// Serves `POST /v1/messages`.
pub async fn handle(
    rt: &Arc<Runtime>,
    req: Request<Incoming>,
    limit: u64,
    mut ex: Exchange,
) -> (Response<Body>, Option<Exchange>) {
    match serve(rt, req, limit, &mut ex).await {
        Ok(Served::Whole(resp)) => (resp, Some(ex)),
        Ok(Served::Stream(source, call)) => (stream_response(source, call, ex), None),
        Err(err) => {
            ex.error = Some(err.label());
            (render(&err), Some(ex))
        }
    }
}

enum Served {
    Whole(Response<Body>),
    Stream(Source, Call),
}

async fn serve(
    rt: &Arc<Runtime>,
    req: Request<Incoming>,
    limit: u64,
    ex: &mut Exchange,
) -> Result<Served, ApiError> {
    let (mut msg, original): (MessagesRequest, Bytes) = parse_body(req, limit).await?;
    if msg.messages.is_empty() {
        return Err(ApiError::invalid(
            "messages: at least one message is required",
            Some("messages"),
        ));
    }
    let stream = msg.stream.unwrap_or(false);
    if stream && !rt.streaming_enabled {
        return Err(ApiError::invalid(
            "Streaming is disabled on this gateway",
            Some("stream"),
        ));
    }
    let target = choose(rt, &msg.model)?;
    let client_model = std::mem::replace(&mut msg.model, target.model.clone());
    ex.provider = Some(target.provider.name().to_owned());
    ex.model = Some(client_model.clone());
    let called = Instant::now();
    let provider = target.provider;
    let call = |provider: Arc<Provider>| Call {
        provider,
        client_model: client_model.clone(),
        called,
    };

    if provider.is_anthropic() {
        let body = if target.model == client_model {
            original
        } else {
            Bytes::from(
                serde_json::to_vec(&msg).map_err(|e| ApiError::invalid(e.to_string(), None))?,
            )
        };
        return match provider.anthropic_messages(body, stream).await {
            Ok(Native::Whole(reply)) => {
                settle(
                    ex,
                    &provider,
                    &client_model,
                    called.elapsed(),
                    200,
                    reply.usage.as_ref(),
                    false,
                );
                Ok(Served::Whole(json_response(StatusCode::OK, reply.body)))
            }
            Ok(Native::Stream(events)) => {
                Ok(Served::Stream(Source::Native(events), call(provider)))
            }
            // Anthropic's own error answer goes back as it came, status included.
            Err(loom_providers::Error::Status {
                status,
                body,
                content_type,
                ..
            }) if !body.is_empty() => {
                settle(
                    ex,
                    &provider,
                    &client_model,
                    called.elapsed(),
                    status.as_u16(),
                    None,
                    stream,
                );
                ex.error = Some("upstream_status");
                let mut resp = json_response(status, body);
                if let Some(ct) = content_type.and_then(|c| http::HeaderValue::try_from(c).ok()) {
                    resp.headers_mut().insert(http::header::CONTENT_TYPE, ct);
                }
                Ok(Served::Whole(resp))
            }
            Err(e) => Err(failed(ex, &provider, &client_model, called, e, stream)),
        };
    }

    let mut chat = ingress::to_chat(&msg)?;
    if stream {
        return match provider.chat_stream(&mut chat).await {
            Ok(chunks) => Ok(Served::Stream(
                Source::Translated(chunks, Box::new(EventEncoder::new(&target.model))),
                call(provider),
            )),
            Err(e) => Err(failed(ex, &provider, &client_model, called, e, true)),
        };
    }
    match provider.chat(&chat, None).await {
        Ok(reply) => {
            settle(
                ex,
                &provider,
                &client_model,
                called.elapsed(),
                200,
                reply.usage.as_ref(),
                false,
            );
            let parsed: ChatResponse = serde_json::from_slice(&reply.body).map_err(|e| {
                ApiError::from(loom_providers::Error::InvalidResponse {
                    provider: provider.name().to_owned(),
                    detail: e.to_string(),
                })
            })?;
            let out = ingress::from_chat(&parsed);
            Ok(Served::Whole(json_response(
                StatusCode::OK,
                serde_json::to_vec(&out).unwrap_or_default(),
            )))
        }
        Err(e) => Err(failed(ex, &provider, &client_model, called, e, false)),
    }
}

fn failed(
    ex: &mut Exchange,
    provider: &Provider,
    client_model: &str,
    called: Instant,
    e: loom_providers::Error,
    stream: bool,
) -> ApiError {
    let err = ApiError::from(e);
    settle(
        ex,
        provider,
        client_model,
        called.elapsed(),
        err.status().as_u16(),
        None,
        stream,
    );
    err
}

/// Where stream events come from.
enum Source {
    /// An Anthropic provider's own events.
    Native(NativeStream),
    /// Canonical chunks from any other provider, encoded as Anthropic events.
    Translated(ChunkStream, Box<EventEncoder>),
}

struct Call {
    provider: Arc<Provider>,
    client_model: String,
    called: Instant,
}

fn stream_response(source: Source, call: Call, mut ex: Exchange) -> Response<Body> {
    ex.status = 200;
    let body = Relay {
        source,
        call,
        exchange: Some(ex),
        usage: None,
        done: false,
    };
    let mut resp = Response::new(body.boxed_unsync());
    sse_headers(&mut resp);
    resp
}

struct Relay {
    source: Source,
    call: Call,
    exchange: Option<Exchange>,
    usage: Option<Usage>,
    done: bool,
}

impl Relay {
    fn finish(&mut self, status: u16, error: Option<&'static str>) {
        let Some(mut ex) = self.exchange.take() else {
            return;
        };
        ex.status = status;
        ex.error = error;
        let c = &self.call;
        settle(
            &mut ex,
            &c.provider,
            &c.client_model,
            c.called.elapsed(),
            status,
            self.usage.as_ref(),
            true,
        );
    }

    fn fail(&mut self, e: loom_providers::Error) -> Bytes {
        self.done = true;
        let err = ApiError::from(e);
        let status = err.status().as_u16();
        self.finish(status, Some(err.label()));
        let message = err.envelope().error.message;
        tracing::warn!(error = %message, "stream failed after it started");
        let body = ingress::error_body(status, &message);
        Bytes::from(format!("event: error\ndata: {body}\n\n"))
    }
}

impl HttpBody for Relay {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            let frame = match &mut this.source {
                Source::Native(events) => match events.as_mut().poll_next(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Some(Ok(ev))) => {
                        if ev.usage.is_some() {
                            this.usage = ev.usage;
                        }
                        ev.frame
                    }
                    Poll::Ready(Some(Err(e))) => this.fail(e),
                    Poll::Ready(None) => {
                        this.done = true;
                        this.finish(200, None);
                        return Poll::Ready(None);
                    }
                },
                Source::Translated(chunks, encoder) => match chunks.as_mut().poll_next(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Some(Ok(chunk))) => {
                        if let Some(u) = &chunk.usage {
                            this.usage = Some(u.clone());
                        }
                        let mut out = BytesMut::new();
                        encoder.on_chunk(&chunk, &mut out);
                        if out.is_empty() {
                            continue;
                        }
                        out.freeze()
                    }
                    Poll::Ready(Some(Err(e))) => this.fail(e),
                    Poll::Ready(None) => {
                        let mut out = BytesMut::new();
                        encoder.finish(&mut out);
                        this.done = true;
                        this.finish(200, None);
                        out.freeze()
                    }
                },
            };
            return Poll::Ready(Some(Ok(Frame::data(frame))));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.finish(499, Some("client_closed"));
    }
}

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
use loom_models::anthropic::MessagesRequest;
use loom_models::chat::{ChatChunk, ChatRequest, ChatResponse, Usage};
use loom_providers::anthropic::ingress::{self, EventEncoder};
use loom_providers::{ChunkStream, Native, NativeStream, Provider};

use super::failover::{self, Failure, Tries};
use super::guard::{self, Step};
use super::{
    ApiError, Delivery, Quotas, Tokens, admit, parse_body, plan, router, routing_headers, settle,
    sse_headers,
};
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
    req: Request<Body>,
    limit: u64,
    mut ex: Exchange,
    q: &mut Quotas,
) -> (Response<Body>, Option<Exchange>) {
    match serve(rt, req, limit, &mut ex, q).await {
        Ok(Served::Whole(resp)) => (resp, Some(ex)),
        Ok(Served::Stream(source, call)) => (stream_response(source, *call, ex), None),
        Err(Stop::Invalid(err)) => {
            ex.error = Some(err.label());
            (render(&err), Some(ex))
        }
        Err(Stop::Failed(f)) => {
            ex.error = Some(f.error.label());
            let native = f.target.provider.is_anthropic();
            let mut resp = match f.error {
                // Anthropic's own error answer goes back as it came, status included.
                ApiError::Provider(boxed) if native => match *boxed {
                    loom_providers::Error::Status {
                        status,
                        body,
                        content_type,
                        ..
                    } if !body.is_empty() => {
                        let mut resp = json_response(status, body);
                        if let Some(ct) =
                            content_type.and_then(|c| http::HeaderValue::try_from(c).ok())
                        {
                            resp.headers_mut().insert(http::header::CONTENT_TYPE, ct);
                        }
                        resp
                    }
                    other => render(&ApiError::from(other)),
                },
                other => render(&other),
            };
            routing_headers(&mut resp, &f.target, f.attempts);
            (resp, Some(ex))
        }
    }
}

enum Served {
    Whole(Response<Body>),
    Stream(Source, Box<Call>),
}

/// Why no answer was served: the request itself, or every attempt failed.
enum Stop {
    Invalid(ApiError),
    Failed(Failure),
}

impl From<ApiError> for Stop {
    fn from(e: ApiError) -> Self {
        Stop::Invalid(e)
    }
}

async fn serve(
    rt: &Arc<Runtime>,
    req: Request<Body>,
    limit: u64,
    ex: &mut Exchange,
    q: &mut Quotas,
) -> Result<Served, Stop> {
    let (mut msg, original): (MessagesRequest, Bytes) = parse_body(req, limit).await?;
    if msg.messages.is_empty() {
        return Err(ApiError::invalid(
            "messages: at least one message is required",
            Some("messages"),
        )
        .into());
    }
    let stream = msg.stream.unwrap_or(false);
    if stream && !rt.streaming_enabled {
        return Err(
            ApiError::invalid("Streaming is disabled on this gateway", Some("stream")).into(),
        );
    }
    let policy = guard::policy(rt, ex);
    super::token_cap(&policy, &original, &msg.model, Some(msg.max_tokens))?;
    // Guardrails read the canonical request; an Anthropic provider still
    // gets the client's own bytes when nothing was rewritten and answers
    // need no check.
    let mut chat: Option<ChatRequest> = None;
    let applied = if policy.is_empty() {
        guard::Applied::unchecked(policy)
    } else {
        let c = ingress::to_chat(&msg).map_err(ApiError::from)?;
        let (c, a) = guard::check(policy, c, ex).await?;
        chat = Some(c);
        a
    };
    let native_ok = !applied.changed && !applied.policy.checks_answers();
    let router = router(rt, &ex.route);
    let plan = plan(rt, router, &msg.model, 0, Some(msg.max_tokens))?;
    admit(rt, ex, q, &original, &msg.model, Some(msg.max_tokens)).await?;
    let client_model: std::sync::Arc<str> = std::sync::Arc::from(msg.model.as_str());
    ex.model = Some(client_model.clone());
    let mut tries = Tries::new(router, &plan);
    loop {
        let target = tries.next(ex).await;
        let outcome = if target.provider.is_anthropic() && native_ok {
            let body = if *target.model == *client_model {
                original.clone()
            } else {
                msg.model.replace_range(.., &target.model);
                Bytes::from(
                    serde_json::to_vec(&msg).map_err(|e| ApiError::invalid(e.to_string(), None))?,
                )
            };
            let native = async {
                match target.provider.anthropic_messages(body, stream).await? {
                    Native::Stream(events) => {
                        let events = failover::first_event(std::future::ready(Ok(events))).await?;
                        Ok(Answer::Native(Native::Stream(events)))
                    }
                    whole => Ok(Answer::Native(whole)),
                }
            };
            failover::within(router, target.provider.name(), native).await
        } else {
            if chat.is_none() {
                chat = Some(ingress::to_chat(&msg).map_err(ApiError::from)?);
            }
            let Some(chat) = chat.as_mut() else {
                continue;
            };
            chat.model.replace_range(.., &target.model);
            if stream {
                failover::within(
                    router,
                    target.provider.name(),
                    failover::first_event(target.provider.chat_stream(chat)),
                )
                .await
                .map(Answer::Chunks)
            } else {
                failover::within(router, target.provider.name(), target.provider.chat(chat))
                    .await
                    .map(|r| Answer::Chat(Box::new(r)))
            }
        };
        let answer = match outcome {
            Ok(a) => a,
            Err(e) => match tries.failed(ex, target, e, &client_model, stream) {
                None => continue,
                Some(f) => return Err(Stop::Failed(f)),
            },
        };
        tries.succeeded(&target);
        let call = Box::new(Call {
            provider: target.provider.clone(),
            client_model: client_model.clone(),
            provider_model: target.model.clone(),
            called: tries.called,
            request: original.clone(),
            check: guard::StreamCheck::new(&applied),
        });
        let served = match answer {
            Answer::Native(Native::Stream(events)) => Served::Stream(Source::Native(events), call),
            Answer::Native(Native::Whole(reply)) => {
                settle(
                    ex,
                    &target.provider,
                    &client_model,
                    &target.model,
                    tries.called.elapsed(),
                    200,
                    Some(whole_tokens(&reply, &original, &target.model)),
                    Delivery::Whole,
                );
                Served::Whole(json_response(StatusCode::OK, reply.body))
            }
            Answer::Chunks(chunks) => Served::Stream(
                Source::Translated(chunks, Box::new(EventEncoder::new(&target.model))),
                call,
            ),
            Answer::Chat(reply) => {
                settle(
                    ex,
                    &target.provider,
                    &client_model,
                    &target.model,
                    tries.called.elapsed(),
                    200,
                    Some(whole_tokens(&reply, &original, &target.model)),
                    Delivery::Whole,
                );
                let body = guard::whole_chat(&applied, reply.body.clone());
                let parsed: ChatResponse = serde_json::from_slice(&body).map_err(|e| {
                    ApiError::from(loom_providers::Error::InvalidResponse {
                        provider: target.provider.name().to_owned(),
                        detail: e.to_string(),
                    })
                })?;
                let out = ingress::from_chat(&parsed);
                Served::Whole(json_response(
                    StatusCode::OK,
                    serde_json::to_vec(&out).unwrap_or_default(),
                ))
            }
        };
        return Ok(match served {
            Served::Whole(mut resp) => {
                routing_headers(&mut resp, &target, tries.attempts);
                Served::Whole(resp)
            }
            stream => stream,
        });
    }
}

/// What one attempt returned.
enum Answer {
    Native(Native),
    Chunks(ChunkStream),
    Chat(Box<loom_providers::Reply>),
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
    client_model: std::sync::Arc<str>,
    provider_model: std::sync::Arc<str>,
    called: Instant,
    /// The client's request, to count the prompt if usage never arrives.
    request: Bytes,
    /// Answer checks of a translated stream.
    check: Option<guard::StreamCheck<ChatChunk>>,
}

/// Tokens of a whole answer: reported, or counted when the provider reported none.
fn whole_tokens(reply: &loom_providers::Reply, request: &[u8], model: &str) -> Tokens {
    match &reply.usage {
        Some(u) => Tokens::reported(u),
        None => Tokens::estimated(request, model, &super::answer_text(&reply.body)),
    }
}

fn stream_response(source: Source, call: Call, mut ex: Exchange) -> Response<Body> {
    ex.status = 200;
    let body = Relay {
        source,
        call,
        exchange: Some(ex),
        usage: None,
        text: String::new(),
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
    /// Text generated so far by a translated stream, for an estimate.
    text: String,
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
        let tokens = match &self.usage {
            Some(u) => Tokens::reported(u),
            None => Tokens::estimated(&c.request, &c.provider_model, &self.text),
        };
        settle(
            &mut ex,
            &c.provider,
            &c.client_model,
            &c.provider_model,
            c.called.elapsed(),
            status,
            Some(tokens),
            if status >= 500 {
                Delivery::Cut
            } else {
                Delivery::Stream
            },
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
                        } else if this.text.len() < super::sse::MAX_KEPT_TEXT {
                            for c in &chunk.choices {
                                if let Some(t) = &c.delta.content {
                                    this.text.push_str(t);
                                }
                            }
                        }
                        let mut chunk = chunk;
                        if let Some(check) = this.call.check.as_mut() {
                            let has_choices = !chunk.choices.is_empty();
                            match check.event(&mut chunk, has_choices) {
                                Step::Send => {}
                                Step::Skip => continue,
                                Step::Filtered => {
                                    // The answer ends here: the encoder closes
                                    // it with stop_reason `refusal`.
                                    let mut out = BytesMut::new();
                                    encoder.on_chunk(&chunk, &mut out);
                                    encoder.finish(&mut out);
                                    this.done = true;
                                    this.finish(200, Some("content_filter"));
                                    return Poll::Ready(Some(Ok(Frame::data(out.freeze()))));
                                }
                            }
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
                        let held = this.call.check.as_mut().map(guard::StreamCheck::end);
                        for chunk in held.iter().flatten() {
                            encoder.on_chunk(chunk, &mut out);
                        }
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

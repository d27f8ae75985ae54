//! Relaying a provider's stream to the client as server-sent events.
//!
//! Each upstream event becomes one body frame as soon as it arrives; hyper
//! writes it at once, so no event waits for a timer (`streaming.flush_interval`
//! is therefore always met). The provider is always asked for usage; the
//! final usage chunk is removed again when the client did not ask for it. A
//! provider failure mid-stream becomes an SSE error event in OpenAI's shape
//! followed by a clean end of the body. A client that goes away drops this
//! body, which drops the provider's stream and so cancels the upstream request.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::Stream;
use http::Response;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use loom_models::chat::{ChatChunk, Usage};
use loom_models::completions::CompletionResponse;
use loom_providers::Provider;
use serde::Serialize;

use super::cache::Recorder;
use super::guard::{Guarded, Step, StreamCheck};
use super::{ApiError, Delivery, Tokens, settle, sse_headers};
use crate::body::{Body, BoxError};
use crate::exchange::Exchange;

/// An event type the relay understands.
pub trait Event: Serialize + Send + Clone + Unpin + Guarded + 'static {
    fn usage_mut(&mut self) -> &mut Option<Usage>;
    fn has_choices(&self) -> bool;
    /// Appends the generated text of this event (counted when a stream is
    /// cut before the provider reports usage).
    fn text(&self, out: &mut String);
    /// The event as a chat chunk, for the semantic cache's recorder.
    fn as_chat(&self) -> Option<&ChatChunk> {
        None
    }
}

impl Event for ChatChunk {
    fn as_chat(&self) -> Option<&ChatChunk> {
        Some(self)
    }
    fn usage_mut(&mut self) -> &mut Option<Usage> {
        &mut self.usage
    }
    fn has_choices(&self) -> bool {
        !self.choices.is_empty()
    }
    fn text(&self, out: &mut String) {
        for c in &self.choices {
            if let Some(t) = &c.delta.content {
                out.push_str(t);
            }
            for d in c.delta.tool_calls.iter().flatten() {
                if let Some(a) = d.function.as_ref().and_then(|f| f.arguments.as_ref()) {
                    out.push_str(a);
                }
            }
        }
    }
}

impl Event for CompletionResponse {
    fn usage_mut(&mut self) -> &mut Option<Usage> {
        &mut self.usage
    }
    fn has_choices(&self) -> bool {
        !self.choices.is_empty()
    }
    fn text(&self, out: &mut String) {
        for c in &self.choices {
            out.push_str(&c.text);
        }
    }
}

/// The provider call behind a stream.
pub struct Call {
    pub provider: Arc<Provider>,
    pub client_model: std::sync::Arc<str>,
    /// The model the provider was asked for (what it bills).
    pub provider_model: std::sync::Arc<str>,
    pub called: Instant,
    pub wants_usage: bool,
    /// The client's request body, to count the prompt if usage never arrives.
    pub request: Bytes,
    /// Puts the answer together for the semantic cache, when it may keep it.
    pub recorder: Option<Recorder>,
}

/// Generated text kept for an estimate is capped; past it, characters are
/// counted at four per token.
pub(crate) const MAX_KEPT_TEXT: usize = 1 << 20;

type EventStream<T> = Pin<Box<dyn Stream<Item = Result<T, loom_providers::Error>> + Send>>;

/// Builds the streamed response.
pub fn response<T: Event>(
    events: EventStream<T>,
    call: Call,
    mut ex: Exchange,
    check: Option<StreamCheck<T>>,
) -> Response<Body> {
    ex.status = 200;
    let body = Relay {
        events,
        call,
        exchange: Some(ex),
        usage: None,
        text: String::new(),
        text_overflow: 0,
        check,
        filtered: false,
        done: false,
    };
    let mut resp = Response::new(body.boxed_unsync());
    sse_headers(&mut resp);
    resp
}

struct Relay<T> {
    events: EventStream<T>,
    call: Call,
    exchange: Option<Exchange>,
    usage: Option<Usage>,
    text: String,
    /// Bytes of generated text beyond `MAX_KEPT_TEXT`.
    text_overflow: usize,
    /// The answer checks, when the policy has any.
    check: Option<StreamCheck<T>>,
    /// The content filter ended the answer: the next frame is the last.
    filtered: bool,
    done: bool,
}

fn encode(value: &impl Serialize) -> Bytes {
    let mut buf = BytesMut::with_capacity(256).writer();
    buf.get_mut().put_slice(b"data: ");
    if serde_json::to_writer(&mut buf, value).is_err() {
        return Bytes::new();
    }
    let mut buf = buf.into_inner();
    buf.put_slice(b"\n\n");
    buf.freeze()
}

impl<T> Relay<T> {
    /// Settles the call and ends the exchange. `status` is what the log
    /// records: 200, 502 for a provider failure, 499 for a client that left.
    fn finish(&mut self, status: u16, error: Option<&'static str>) {
        let Some(mut ex) = self.exchange.take() else {
            return;
        };
        let call = &self.call;
        let tokens = match self.usage.take() {
            Some(u) => Tokens::reported(&u),
            // Nothing reported (the stream was cut): count what was sent.
            None => {
                let mut t = Tokens::estimated(&call.request, &call.provider_model, &self.text);
                t.completion += (self.text_overflow as u64).div_ceil(4);
                t
            }
        };
        ex.status = status;
        ex.error = error;
        settle(
            &mut ex,
            &call.provider,
            &call.client_model,
            &call.provider_model,
            call.called.elapsed(),
            status,
            Some(tokens),
            if status >= 500 {
                Delivery::Cut
            } else {
                Delivery::Stream
            },
        );
    }
}

impl<T: Event> HttpBody for Relay<T> {
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
            if this.filtered {
                // The upstream stream is dropped with the relay; what it
                // generated so far is counted.
                this.done = true;
                this.finish(200, Some("content_filter"));
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
                    b"data: [DONE]\n\n",
                )))));
            }
            match this.events.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(mut event))) => {
                    if this.usage.is_none() {
                        if this.text.len() < MAX_KEPT_TEXT {
                            event.text(&mut this.text);
                        } else {
                            let mut extra = String::new();
                            event.text(&mut extra);
                            this.text_overflow += extra.len();
                        }
                    }
                    if let Some(check) = this.check.as_mut() {
                        let has_choices = event.has_choices();
                        match check.event(&mut event, has_choices) {
                            Step::Send => {}
                            Step::Skip => continue,
                            Step::Filtered => this.filtered = true,
                        }
                    }
                    if let Some(r) = this.call.recorder.as_mut() {
                        if this.filtered {
                            r.abandon();
                        } else if let Some(c) = event.as_chat() {
                            r.chunk(c);
                        }
                    }
                    if let Some(u) = event.usage_mut().take() {
                        this.usage = Some(u.clone());
                        if this.call.wants_usage {
                            *event.usage_mut() = Some(u);
                        } else if !event.has_choices() {
                            continue;
                        }
                    }
                    return Poll::Ready(Some(Ok(Frame::data(encode(&event)))));
                }
                Poll::Ready(Some(Err(e))) => {
                    this.done = true;
                    this.call.recorder = None;
                    let err = ApiError::from(e);
                    let status = err.status().as_u16();
                    this.finish(status, Some(err.label()));
                    tracing::warn!(error = %err.envelope().error.message, "stream failed after it started");
                    return Poll::Ready(Some(Ok(Frame::data(encode(&err.envelope())))));
                }
                Poll::Ready(None) => {
                    this.done = true;
                    this.finish(200, None);
                    let held = this
                        .check
                        .as_mut()
                        .map(StreamCheck::end)
                        .unwrap_or_default();
                    if let Some(mut r) = this.call.recorder.take() {
                        for e in &held {
                            if let Some(c) = e.as_chat() {
                                r.chunk(c);
                            }
                        }
                        r.finish(this.call.provider.name(), &this.call.provider_model);
                    }
                    if held.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(
                            b"data: [DONE]\n\n",
                        )))));
                    }
                    let mut out = BytesMut::new();
                    for event in &held {
                        out.put_slice(&encode(event));
                    }
                    out.put_slice(b"data: [DONE]\n\n");
                    return Poll::Ready(Some(Ok(Frame::data(out.freeze()))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

impl<T> Drop for Relay<T> {
    fn drop(&mut self) {
        // Still open: the client went away before the end.
        self.finish(499, Some("client_closed"));
    }
}

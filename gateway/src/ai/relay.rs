//! The one stream relay of AI routes: a provider's stream to the client,
//! event by event, in the client's own format.
//!
//! Every ingress relays through here; what differs by ingress is only its
//! [`Encoder`] (how an event, the end and a mid-stream error are written).
//! This one place:
//! - counts usage: the provider's report when it comes, otherwise the
//!   generated text (content, tool-call arguments, reasoning) counted when
//!   the stream ends, for every format alike;
//! - runs the answer checks (streamed PII masking holds text back, a
//!   blocked category ends the answer) and feeds the semantic cache;
//! - turns a provider failure after the first byte into an error event in
//!   the client's format followed by a clean end of the body;
//! - settles the call at the end, or with 499 when the client goes away
//!   (dropping the relay drops the provider's stream, which cancels the
//!   upstream request).
//!
//! Events that no stage needs to read (no answer checks, no cache, the
//! provider speaks the client's format) are passed through as the bytes
//! they arrived in: only the last events, carrying usage, are parsed.
//! Each upstream event becomes a body frame as soon as it arrives, so no
//! event waits for a timer.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use http::Response;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use loom_models::chat::{ChatChunk, Usage};
use loom_models::completions::CompletionResponse;
use loom_providers::anthropic::ingress::{self, EventEncoder};
use loom_providers::responses;
use loom_providers::{
    ChunkStream, CompletionStream, NativeEvent, NativeStream, Provider, RawEvents, RawStream,
};
use serde::Serialize;

use super::cache::Recorder;
use super::guard::{Applied, Step, StreamCheck};
use super::settle::{Delivery, Tokens, settle};
use super::{ApiError, sse_headers};
use crate::runtime::body::{Body, BoxError};
use crate::runtime::exchange::Exchange;

/// Where a stream's events come from.
pub(crate) enum Source {
    /// Canonical chat chunks (from any provider).
    Chunks(ChunkStream),
    /// Legacy completion chunks.
    Completions(CompletionStream),
    /// An Anthropic provider's own events, for an Anthropic client.
    Native(NativeStream),
    /// An OpenAI-format provider's bytes, for an OpenAI-format client.
    Raw(RawStream),
}

/// One event of a [`Source`].
enum Up {
    Chunk(ChatChunk),
    Completion(CompletionResponse),
    Native(NativeEvent),
    Raw(RawEvents),
}

impl Source {
    fn poll_event(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Up, loom_providers::Error>>> {
        fn map<T>(
            p: Poll<Option<Result<T, loom_providers::Error>>>,
            f: fn(T) -> Up,
        ) -> Poll<Option<Result<Up, loom_providers::Error>>> {
            match p {
                Poll::Ready(Some(Ok(v))) => Poll::Ready(Some(Ok(f(v)))),
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            }
        }
        match self {
            Source::Chunks(s) => map(s.as_mut().poll_next(cx), Up::Chunk),
            Source::Completions(s) => map(s.as_mut().poll_next(cx), Up::Completion),
            Source::Native(s) => map(s.as_mut().poll_next(cx), Up::Native),
            Source::Raw(s) => map(s.as_mut().poll_next(cx), Up::Raw),
        }
    }

    /// Waits for the first event, so that a stream failing before any byte
    /// reached the client can still fail over.
    pub async fn started(mut self) -> Result<Started, loom_providers::Error> {
        let first = std::future::poll_fn(|cx| self.poll_event(cx)).await;
        let first = first.transpose()?;
        Ok(Started {
            source: self,
            first,
        })
    }
}

/// A stream whose first event has arrived (or that ended at once).
pub(crate) struct Started {
    source: Source,
    first: Option<Up>,
}

impl Started {
    /// Whether the events are the provider's own Anthropic events.
    pub fn is_native(&self) -> bool {
        matches!(self.source, Source::Native(_))
    }
}

/// How the client's format writes events, the end and a mid-stream error.
pub(crate) enum Encoder {
    /// OpenAI's `data: {json}` events, ended by `data: [DONE]`.
    OpenAi,
    /// Anthropic's named events: translated from canonical chunks, or the
    /// provider's own (`None`) passed through.
    Anthropic(Option<Box<EventEncoder>>),
    /// OpenAI Responses API events: translated from canonical chunks, or
    /// the provider's own (`None`) passed through.
    Responses(Option<Box<responses::EventEncoder>>),
}

impl Encoder {
    /// Writes one canonical chunk.
    fn chunk(&mut self, c: &ChatChunk, out: &mut BytesMut) {
        match self {
            Encoder::OpenAi => data(c, out),
            Encoder::Anthropic(Some(e)) => e.on_chunk(c, out),
            Encoder::Anthropic(None) => {}
            Encoder::Responses(Some(e)) => e.on_chunk(c, out),
            Encoder::Responses(None) => {}
        }
    }

    /// Writes what ends a stream.
    fn end(&mut self, out: &mut BytesMut) {
        match self {
            Encoder::OpenAi => out.put_slice(b"data: [DONE]\n\n"),
            Encoder::Anthropic(Some(e)) => e.finish(out),
            Encoder::Anthropic(None) => {}
            Encoder::Responses(Some(e)) => e.finish(out),
            Encoder::Responses(None) => {}
        }
    }

    /// The error event that ends a failed stream.
    fn error(&mut self, err: &ApiError) -> Bytes {
        let mut out = BytesMut::with_capacity(256);
        match self {
            Encoder::OpenAi => data(&err.envelope(), &mut out),
            Encoder::Anthropic(_) => {
                let body = ingress::error_body(err.status().as_u16(), &err.message());
                out.put_slice(b"event: error\ndata: ");
                out.put_slice(body.to_string().as_bytes());
                out.put_slice(b"\n\n");
            }
            Encoder::Responses(e) => {
                let env = err.envelope();
                let code = env.error.code.as_ref().and_then(|c| c.as_str());
                let code = code.unwrap_or("server_error");
                match e {
                    Some(e) => e.fail(code, &env.error.message, &mut out),
                    // The provider's own events: their numbering is not
                    // followed, so the error event goes without one (the
                    // SDKs raise on an event carrying `error`).
                    None => responses::native_error(code, &env.error.message, &mut out),
                }
            }
        }
        out.freeze()
    }
}

/// Writes `value` as one `data:` event.
fn data(value: &impl Serialize, out: &mut BytesMut) {
    let start = out.len();
    out.put_slice(b"data: ");
    let mut w = out.writer();
    if serde_json::to_writer(&mut w, value).is_err() {
        w.into_inner().truncate(start);
        return;
    }
    w.into_inner().put_slice(b"\n\n");
}

/// The provider call behind a stream.
pub(crate) struct Call {
    pub provider: Arc<Provider>,
    pub client_model: Arc<str>,
    /// The model the provider was asked for (what it bills).
    pub provider_model: Arc<str>,
    pub called: Instant,
    /// The client asked for the final usage chunk (OpenAI's format).
    pub wants_usage: bool,
    /// The client's request body, to count the prompt if usage never arrives.
    pub request: Bytes,
    /// Puts the answer together for the semantic cache, when it may keep it.
    pub recorder: Option<Recorder>,
}

/// The answer checks of a stream, by event type.
enum Check {
    None,
    Chat(StreamCheck<ChatChunk>),
    Completion(StreamCheck<CompletionResponse>),
}

/// Generated text kept for an estimate is capped; past it, bytes are
/// counted at four per token.
const MAX_KEPT: usize = 1 << 20;

/// What a stream reported or generated, for its tokens.
#[derive(Default)]
struct Count {
    /// The provider's final report.
    usage: Option<Usage>,
    /// A report of the prompt only (Anthropic's `message_start`), until the
    /// final one.
    prompt: Option<Usage>,
    /// Text of parsed events (content, tool-call arguments, reasoning).
    text: String,
    /// Events relayed as bytes, read for their text only if usage never comes.
    kept: Vec<u8>,
    /// Bytes beyond `MAX_KEPT`.
    overflow: usize,
}

impl Count {
    fn chunk(&mut self, c: &ChatChunk) {
        if self.usage.is_some() {
            return;
        }
        for choice in &c.choices {
            let d = &choice.delta;
            self.text(d.content.as_deref());
            for call in d.tool_calls.iter().flatten() {
                self.text(call.function.as_ref().and_then(|f| f.arguments.as_deref()));
            }
            for key in ["reasoning_content", "reasoning"] {
                self.text(d.extra.get(key).and_then(|v| v.as_str()));
            }
        }
    }

    fn completion(&mut self, c: &CompletionResponse) {
        if self.usage.is_none() {
            for choice in &c.choices {
                self.text(Some(&choice.text));
            }
        }
    }

    fn text(&mut self, t: Option<&str>) {
        let Some(t) = t else { return };
        if self.text.len() + self.kept.len() < MAX_KEPT {
            self.text.push_str(t);
        } else {
            self.overflow += t.len();
        }
    }

    fn keep(&mut self, frame: &[u8]) {
        if self.usage.is_some() {
            return;
        }
        if self.text.len() + self.kept.len() < MAX_KEPT {
            self.kept.extend_from_slice(frame);
        } else {
            self.overflow += frame.len() / 3;
        }
    }

    fn tokens(&mut self, request: &[u8], model: &str) -> Tokens {
        if let Some(u) = self.usage.take() {
            return Tokens::reported(&u);
        }
        if !self.kept.is_empty() {
            loom_providers::generated_text(&self.kept, &mut self.text);
        }
        let mut t = Tokens::estimated(request, model, &self.text);
        t.completion += (self.overflow as u64).div_ceil(4);
        if let Some(p) = self.prompt.take() {
            let reported = Tokens::reported(&p);
            (t.prompt, t.cached) = (reported.prompt, reported.cached);
        }
        t
    }
}

/// A stream ready to relay once it has its exchange.
pub(crate) struct Relay {
    source: Source,
    first: Option<Up>,
    encoder: Encoder,
    call: Call,
    exchange: Option<Exchange>,
    count: Count,
    check: Check,
    done: bool,
}

impl Relay {
    /// A relay of `started` to a client whose format `encoder` writes.
    pub fn new(started: Started, encoder: Encoder, call: Call, applied: &Applied) -> Relay {
        let check = match &started.source {
            Source::Chunks(_) => StreamCheck::new(applied).map_or(Check::None, Check::Chat),
            Source::Completions(_) => {
                StreamCheck::new(applied).map_or(Check::None, Check::Completion)
            }
            // Relayed as they are only when no check reads them.
            Source::Native(_) | Source::Raw(_) => Check::None,
        };
        Relay {
            source: started.source,
            first: started.first,
            encoder,
            call,
            exchange: None,
            count: Count::default(),
            check,
            done: false,
        }
    }

    /// The streamed response; the exchange ends with the stream.
    pub fn response(mut self, mut ex: Exchange) -> Response<Body> {
        ex.status = 200;
        self.exchange = Some(ex);
        let mut resp = Response::new(self.boxed_unsync());
        sse_headers(&mut resp);
        resp
    }

    /// Settles the call and ends the exchange. `status` is what the log
    /// records: 200, 502 for a provider failure, 499 for a client that left.
    fn finish(&mut self, status: u16, error: Option<&'static str>) {
        let Some(mut ex) = self.exchange.take() else {
            return;
        };
        let call = &self.call;
        let tokens = self.count.tokens(&call.request, &call.provider_model);
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

    /// One event: the bytes to send (`None`: nothing for the client).
    fn on_event(&mut self, up: Up) -> Option<Bytes> {
        match up {
            Up::Raw(ev) => {
                if let Some(u) = ev.usage {
                    self.count.usage = Some(u);
                    if !self.call.wants_usage {
                        return if ev.usage_only {
                            None
                        } else {
                            Some(without_usage(&ev.frame))
                        };
                    }
                } else {
                    self.count.keep(&ev.frame);
                }
                Some(ev.frame)
            }
            Up::Native(ev) => {
                self.count.keep(&ev.frame);
                // A native Responses stream's last event holds the whole
                // response: the cache keeps it from there.
                if ev.final_usage
                    && !ev.error
                    && let Some(r) = self.call.recorder.as_mut()
                {
                    let response = loom_providers::event_data(&ev.frame)
                        .and_then(|d| serde_json::from_slice::<serde_json::Value>(&d).ok())
                        .and_then(|v| loom_providers::responses::chat_of_value(v.get("response")?));
                    match response {
                        Some(answer) => r.whole(
                            answer,
                            ev.frame.len(),
                            self.call.provider.name(),
                            &self.call.provider_model,
                        ),
                        None => r.abandon(),
                    }
                }
                match ev.usage {
                    Some(u) if ev.final_usage => self.count.usage = Some(u),
                    Some(u) => self.count.prompt = Some(u),
                    None => {}
                }
                if ev.error {
                    // The provider's own error event ends the answer.
                    self.done = true;
                    self.finish(502, Some("stream"));
                }
                Some(ev.frame)
            }
            Up::Chunk(mut c) => {
                self.count.chunk(&c);
                let step = match &mut self.check {
                    Check::Chat(check) => {
                        let has_choices = !c.choices.is_empty();
                        check.event(&mut c, has_choices)
                    }
                    _ => Step::Send,
                };
                if step == Step::Skip {
                    return None;
                }
                if let Some(r) = self.call.recorder.as_mut() {
                    if step == Step::Filtered {
                        r.abandon();
                    } else {
                        r.chunk(&c);
                    }
                }
                if !self.keep_usage(&mut c.usage, !c.choices.is_empty(), step) {
                    return None;
                }
                let mut out = BytesMut::new();
                self.encoder.chunk(&c, &mut out);
                if step == Step::Filtered {
                    self.filtered(&mut out);
                }
                (!out.is_empty()).then(|| out.freeze())
            }
            Up::Completion(mut c) => {
                self.count.completion(&c);
                let step = match &mut self.check {
                    Check::Completion(check) => {
                        let has_choices = !c.choices.is_empty();
                        check.event(&mut c, has_choices)
                    }
                    _ => Step::Send,
                };
                if step == Step::Skip {
                    return None;
                }
                if !self.keep_usage(&mut c.usage, !c.choices.is_empty(), step) {
                    return None;
                }
                let mut out = BytesMut::new();
                data(&c, &mut out);
                if step == Step::Filtered {
                    self.filtered(&mut out);
                }
                Some(out.freeze())
            }
        }
    }

    /// Records an event's usage and says whether the event still goes to
    /// the client: the usage stays in it when the client asked for it (or
    /// its format always carries it); an event carrying only usage the
    /// client did not ask for is dropped.
    fn keep_usage(&mut self, usage: &mut Option<Usage>, has_choices: bool, step: Step) -> bool {
        let Some(u) = usage.take() else {
            return true;
        };
        let shown = self.call.wants_usage || !matches!(self.encoder, Encoder::OpenAi);
        if shown {
            *usage = Some(u.clone());
        }
        self.count.usage = Some(u);
        shown || has_choices || step != Step::Send
    }

    /// The content filter ended the answer: it ends after `out`. The
    /// upstream stream is dropped with the relay; what it generated so far
    /// is counted.
    fn filtered(&mut self, out: &mut BytesMut) {
        self.encoder.end(out);
        self.done = true;
        self.finish(200, Some("content_filter"));
    }

    /// The provider's stream ended: text the checks still held, the cache's
    /// record, and the end in the client's format.
    fn ended(&mut self) -> Option<Bytes> {
        self.done = true;
        self.finish(200, None);
        let mut out = BytesMut::new();
        match &mut self.check {
            Check::Chat(check) => {
                for c in check.end() {
                    if let Some(r) = self.call.recorder.as_mut() {
                        r.chunk(&c);
                    }
                    self.encoder.chunk(&c, &mut out);
                }
            }
            Check::Completion(check) => {
                for c in check.end() {
                    data(&c, &mut out);
                }
            }
            Check::None => {}
        }
        if let Some(mut r) = self.call.recorder.take() {
            r.finish(self.call.provider.name(), &self.call.provider_model);
        }
        self.encoder.end(&mut out);
        (!out.is_empty()).then(|| out.freeze())
    }

    /// The provider failed after the stream started.
    fn failed(&mut self, e: loom_providers::Error) -> Bytes {
        self.done = true;
        self.call.recorder = None;
        let err = ApiError::from(e);
        self.finish(err.status().as_u16(), Some(err.label()));
        tracing::warn!(error = %err.message(), "stream failed after it started");
        self.encoder.error(&err)
    }
}

/// An OpenAI-format event with its `usage` removed (the client did not ask
/// for it, and the provider put it beside choices).
fn without_usage(frame: &[u8]) -> Bytes {
    let mut out = BytesMut::new();
    if let Some(d) = loom_providers::event_data(frame)
        && let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&d)
    {
        if let Some(o) = v.as_object_mut() {
            o.remove("usage");
        }
        data(&v, &mut out);
    }
    out.freeze()
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
            let next = match this.first.take() {
                Some(up) => Some(Ok(up)),
                None => match this.source.poll_event(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(next) => next,
                },
            };
            let out = match next {
                Some(Ok(up)) => match this.on_event(up) {
                    Some(out) => out,
                    None => continue,
                },
                Some(Err(e)) => this.failed(e),
                None => match this.ended() {
                    Some(out) => out,
                    None => return Poll::Ready(None),
                },
            };
            return Poll::Ready(Some(Ok(Frame::data(out))));
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
        // Still open: the client went away before the end.
        self.finish(499, Some("client_closed"));
    }
}

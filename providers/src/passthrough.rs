//! OpenAI-format streams relayed as the bytes they arrived in.
//!
//! A client that speaks OpenAI's format, talking to a provider that does,
//! needs no event parsed or written again: what the gateway must know of
//! such a stream is where each event ends, whether it carries usage (the
//! last chunk), an error, a finish reason (so that a cut stream is told from
//! a complete one) or `[DONE]`. This module finds those with byte searches
//! and parses only the events that carry them (one or two per stream),
//! handing on runs of ordinary events as slices of the upstream's own reads:
//! no allocation, copy or serialisation per event. Written here rather than
//! on `eventsource-stream`, which builds a `String` per event and per field,
//! the cost this replaces; fuzzed (`fuzz/fuzz_targets/passthrough.rs`).
//!
//! Each ordinary event is still checked to be a JSON object (by its first and
//! last bytes), so a provider that sends garbage ends the stream with an
//! error, as the parsing path does.

use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use loom_models::chat::Usage;
use memchr::memmem;
use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::Error;
use crate::openai::upstream_message;

/// Whole events of an OpenAI-format stream, as the upstream sent them.
#[derive(Debug, Clone)]
pub struct RawEvents {
    /// One or more whole events (`data: {...}` and the blank line after).
    pub frame: Bytes,
    /// The usage the event reports; such an event always comes alone.
    pub usage: Option<Usage>,
    /// The event carries usage and no choices (it can be dropped whole when
    /// the client did not ask for usage).
    pub usage_only: bool,
}

/// A stream relayed as it is.
pub type RawStream = Pin<Box<dyn Stream<Item = Result<RawEvents, Error>> + Send>>;

/// Relays an upstream's event-stream body. `deadline` bounds the whole
/// stream, as it does for parsed streams.
pub fn raw_events<S, E>(provider: &str, body: S, deadline: tokio::time::Instant) -> RawStream
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
    E: std::fmt::Display + Send + 'static,
{
    Box::pin(Raw {
        body,
        provider: provider.to_owned(),
        chunk: Bytes::new(),
        partial: BytesMut::new(),
        queued: None,
        finished: false,
        ended: false,
        drain: false,
        deadline: Box::pin(tokio::time::sleep_until(deadline)),
    })
}

struct Raw<S> {
    body: S,
    provider: String,
    /// What is left of the current read.
    chunk: Bytes,
    /// The start of an event split across reads.
    partial: BytesMut,
    /// An item found after a run of ordinary events, handed on next.
    queued: Option<Result<RawEvents, Error>>,
    /// A choice finished: the upstream may now close without `[DONE]`.
    finished: bool,
    ended: bool,
    /// `[DONE]` came: what the upstream sends right after it (the end of
    /// the chunked body) is read, so that the connection goes back to the
    /// pool rather than being closed with the body unread.
    drain: bool,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

/// What one event is.
#[derive(Debug, PartialEq)]
pub(crate) enum Kind {
    /// An event to relay as it is.
    Plain { finishes: bool },
    /// No data (a comment, a keep-alive): dropped.
    Empty,
    /// `data: [DONE]`: the end.
    Done,
    /// Carries usage.
    Usage { usage: Usage, usage_only: bool },
    /// An error object, or data that is not JSON.
    Failed(String),
}

impl<S, E> Raw<S>
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
    E: std::fmt::Display,
{
    fn fail(&mut self, detail: String) -> Error {
        self.ended = true;
        Error::Stream {
            provider: self.provider.clone(),
            detail,
        }
    }

    /// The next item from the bytes in hand, if they hold a whole event.
    fn scan(&mut self) -> Option<Result<RawEvents, Error>> {
        let mut chunk = std::mem::take(&mut self.chunk);
        let mut pos = 0;
        while let Some(len) = event_end(&chunk[pos..]) {
            let end = pos + len;
            let special = match classify(&chunk[pos..end]) {
                Kind::Plain { finishes } => {
                    self.finished |= finishes;
                    pos = end;
                    continue;
                }
                Kind::Empty => None,
                Kind::Done => {
                    self.ended = true;
                    self.drain = true;
                    None
                }
                Kind::Usage { usage, usage_only } => Some(Ok(RawEvents {
                    frame: chunk.slice(pos..end),
                    usage: Some(usage),
                    usage_only,
                })),
                Kind::Failed(detail) => Some(Err(self.fail(detail))),
            };
            // The run of ordinary events ends before this one.
            let run = chunk.slice(..pos);
            chunk = if self.ended {
                Bytes::new()
            } else {
                chunk.slice(end..)
            };
            pos = 0;
            if run.is_empty() {
                match special {
                    Some(item) => {
                        self.chunk = chunk;
                        return Some(item);
                    }
                    None if self.ended => return None,
                    None => continue,
                }
            }
            self.chunk = chunk;
            self.queued = special;
            return Some(Ok(plain(run)));
        }
        // The rest is the start of an event still arriving.
        if chunk.len() - pos > MAX_EVENT {
            return Some(Err(
                self.fail(format!("an event longer than {MAX_EVENT} bytes"))
            ));
        }
        self.partial.extend_from_slice(&chunk[pos..]);
        (pos > 0).then(|| Ok(plain(chunk.slice(..pos))))
    }
}

/// The longest event accepted: an upstream that never ends one is cut.
const MAX_EVENT: usize = 16 << 20;

fn plain(frame: Bytes) -> RawEvents {
    RawEvents {
        frame,
        usage: None,
        usage_only: false,
    }
}

impl<S, E> Stream for Raw<S>
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin,
    E: std::fmt::Display,
{
    type Item = Result<RawEvents, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(item) = this.queued.take() {
                return Poll::Ready(Some(item));
            }
            if this.ended {
                if std::mem::take(&mut this.drain) {
                    // Only what is already here: an upstream that keeps
                    // the body open after `[DONE]` is not waited for.
                    for _ in 0..8 {
                        match Pin::new(&mut this.body).poll_next(cx) {
                            Poll::Ready(Some(Ok(_))) => continue,
                            _ => break,
                        }
                    }
                }
                return Poll::Ready(None);
            }
            if !this.chunk.is_empty()
                && let Some(item) = this.scan()
            {
                return Poll::Ready(Some(item));
            }
            if this.ended {
                continue;
            }
            match Pin::new(&mut this.body).poll_next(cx) {
                Poll::Ready(Some(Ok(read))) => {
                    this.chunk = if this.partial.is_empty() {
                        read
                    } else {
                        this.partial.extend_from_slice(&read);
                        this.partial.split().freeze()
                    };
                }
                Poll::Ready(Some(Err(e))) => {
                    return Poll::Ready(Some(Err(this.fail(e.to_string()))));
                }
                Poll::Ready(None) => {
                    this.ended = true;
                    // A last event without its blank line still counts.
                    let rest = this.partial.split().freeze();
                    match classify(&rest) {
                        Kind::Plain { finishes } if !rest.is_empty() => {
                            this.finished |= finishes;
                            let mut frame = BytesMut::from(&rest[..]);
                            frame.extend_from_slice(b"\n\n");
                            if !this.finished {
                                this.queued = Some(Err(this.fail(closed_early())));
                            }
                            return Poll::Ready(Some(Ok(plain(frame.freeze()))));
                        }
                        Kind::Failed(detail) => {
                            return Poll::Ready(Some(Err(this.fail(detail))));
                        }
                        Kind::Usage { .. } | Kind::Done => return Poll::Ready(None),
                        _ if this.finished => return Poll::Ready(None),
                        _ => return Poll::Ready(Some(Err(this.fail(closed_early())))),
                    }
                }
                Poll::Pending => {
                    if this.deadline.as_mut().poll(cx).is_ready() {
                        this.ended = true;
                        return Poll::Ready(Some(Err(Error::Timeout {
                            provider: this.provider.clone(),
                        })));
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

fn closed_early() -> String {
    "the upstream closed the stream before it finished".to_owned()
}

/// The length of the first whole event in `buf` (its blank line included),
/// or `None` when the event is still arriving. Lines end with `\n`, `\r\n`
/// or `\r`; a `\r` at the very end waits for the byte after it.
pub(crate) fn event_end(buf: &[u8]) -> Option<usize> {
    let mut line = 0;
    let mut at = 0;
    while let Some(off) = memchr::memchr2(b'\n', b'\r', &buf[at..]) {
        let t = at + off;
        let next = if buf[t] == b'\r' {
            match buf.get(t + 1) {
                None => return None,
                Some(b'\n') => t + 2,
                Some(_) => t + 1,
            }
        } else {
            t + 1
        };
        if t == line {
            return Some(next);
        }
        line = next;
        at = next;
    }
    None
}

/// The data of an event: its `data:` lines joined by `\n`, borrowed when
/// there is one (as there always is in OpenAI's streams).
pub(crate) fn data(event: &[u8]) -> Option<std::borrow::Cow<'_, [u8]>> {
    // The usual event, one `data:` line then the blank line, without
    // walking the lines.
    if let Some(rest) = event.strip_prefix(b"data:")
        && let Some(end) = memchr::memchr2(b'\n', b'\r', rest)
        && rest[end..].iter().all(|&b| b == b'\n' || b == b'\r')
    {
        let value = &rest[..end];
        return Some(std::borrow::Cow::Borrowed(
            value.strip_prefix(b" ").unwrap_or(value),
        ));
    }
    let mut out: Option<std::borrow::Cow<'_, [u8]>> = None;
    for line in event.split(|&b| b == b'\n' || b == b'\r') {
        let Some(rest) = line.strip_prefix(b"data") else {
            continue;
        };
        let value = match rest {
            [] => &[][..],
            [b':', b' ', v @ ..] => v,
            [b':', v @ ..] => v,
            _ => continue, // a field named `data…`, not `data`
        };
        out = Some(match out {
            None => std::borrow::Cow::Borrowed(value),
            Some(prev) => {
                let mut joined = prev.into_owned();
                joined.push(b'\n');
                joined.extend_from_slice(value);
                std::borrow::Cow::Owned(joined)
            }
        });
    }
    out
}

/// Whether `key` appears in `data` as a key with a value other than `null`.
/// A match inside a string (an escaped quote) only costs a parse that then
/// finds nothing.
fn has_value(data: &[u8], finder: &memmem::Finder<'_>) -> bool {
    for at in finder.find_iter(data) {
        let rest = data[at + finder.needle().len()..].trim_ascii_start();
        let Some(rest) = rest.strip_prefix(b":") else {
            continue;
        };
        if !rest.trim_ascii_start().starts_with(b"null") {
            return true;
        }
    }
    false
}

/// What one whole event is; see [`Kind`].
pub(crate) fn classify(event: &[u8]) -> Kind {
    use std::sync::LazyLock;
    static USAGE: LazyLock<memmem::Finder<'static>> =
        LazyLock::new(|| memmem::Finder::new(b"\"usage\""));
    static FINISH: LazyLock<memmem::Finder<'static>> =
        LazyLock::new(|| memmem::Finder::new(b"\"finish_reason\""));
    static ERROR: LazyLock<memmem::Finder<'static>> =
        LazyLock::new(|| memmem::Finder::new(b"\"error\""));

    let Some(data) = data(event) else {
        return Kind::Empty;
    };
    let data = data.trim_ascii();
    if data.is_empty() {
        return Kind::Empty;
    }
    if data == b"[DONE]" {
        return Kind::Done;
    }
    if ERROR.find(data).is_some() {
        #[derive(Deserialize)]
        struct Probe {
            error: Option<IgnoredAny>,
        }
        if let Ok(Probe { error: Some(_) }) = serde_json::from_slice::<Probe>(data) {
            return Kind::Failed(upstream_message(data));
        }
    }
    if has_value(data, &USAGE) {
        #[derive(Deserialize)]
        struct Tail {
            usage: Option<Usage>,
            #[serde(default)]
            choices: Vec<IgnoredAny>,
        }
        match serde_json::from_slice::<Tail>(data) {
            Ok(Tail {
                usage: Some(usage),
                choices,
            }) => {
                return Kind::Usage {
                    usage,
                    usage_only: choices.is_empty(),
                };
            }
            Ok(_) => {}
            Err(e) => return Kind::Failed(format!("undecodable event: {e}")),
        }
    }
    // An event is checked to be a JSON object by its first and last bytes,
    // not parsed: a full check cost a third of a relayed event (callgrind),
    // and what it adds (a malformed object from a provider) the client's
    // own parser still reports.
    if data.first() != Some(&b'{') || data.last() != Some(&b'}') {
        let shown = String::from_utf8_lossy(&data[..data.len().min(80)]).into_owned();
        return Kind::Failed(format!("undecodable event: {shown}"));
    }
    let finishes = has_value(data, &FINISH) && finishes(data);
    Kind::Plain { finishes }
}

/// Whether a choice of this event has a finish reason (parsed: only the
/// events whose bytes suggest one get here).
fn finishes(data: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Event {
        #[serde(default)]
        choices: Vec<Choice>,
    }
    #[derive(Deserialize)]
    struct Choice {
        finish_reason: Option<IgnoredAny>,
    }
    serde_json::from_slice::<Event>(data)
        .is_ok_and(|e| e.choices.iter().any(|c| c.finish_reason.is_some()))
}

/// The data of an event relayed as bytes (its `data:` lines joined).
pub fn event_data(event: &[u8]) -> Option<std::borrow::Cow<'_, [u8]>> {
    data(event)
}

/// Appends the text that the events in `frames` generated: content,
/// tool-call arguments and reasoning, in OpenAI's chunks (`delta.content`,
/// `delta.tool_calls[].function.arguments`, `delta.reasoning_content`,
/// legacy `text`) and in Anthropic's events (`delta.text`,
/// `delta.partial_json`, `delta.thinking`). Read only when a stream ends
/// without reporting usage, to estimate it.
pub fn generated_text(mut frames: &[u8], out: &mut String) {
    use serde_json::Value;
    fn push(out: &mut String, v: Option<&Value>) {
        if let Some(t) = v.and_then(Value::as_str) {
            out.push_str(t);
        }
    }
    while !frames.is_empty() {
        let len = event_end(frames).unwrap_or(frames.len());
        let (event, rest) = frames.split_at(len);
        frames = rest;
        let Some(d) = data(event) else { continue };
        let Ok(v) = serde_json::from_slice::<Value>(&d) else {
            continue;
        };
        for c in v["choices"].as_array().into_iter().flatten() {
            let delta = &c["delta"];
            push(out, delta.get("content"));
            push(out, delta.get("reasoning_content"));
            push(out, delta.get("reasoning"));
            for call in delta["tool_calls"].as_array().into_iter().flatten() {
                push(out, call["function"].get("arguments"));
            }
            push(out, c.get("text"));
        }
        let delta = &v["delta"];
        // A Responses API event's delta is the text itself.
        push(out, Some(delta));
        push(out, delta.get("text"));
        push(out, delta.get("partial_json"));
        push(out, delta.get("thinking"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    const C1: &str = r#"{"id":"a","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}],"usage":null}"#;
    const C2: &str = r#"{"id":"a","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"lo \"usage\": 1, \"finish_reason\": \"x\""},"finish_reason":null}],"usage":null}"#;
    const C3: &str = r#"{"id":"a","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason": "stop"}],"usage":null}"#;
    const U: &str = r#"{"id":"a","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#;

    async fn run(reads: Vec<Vec<u8>>) -> Vec<Result<RawEvents, Error>> {
        let body = futures_util::stream::iter(
            reads
                .into_iter()
                .map(|r| Ok::<_, std::convert::Infallible>(Bytes::from(r))),
        );
        let far = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        raw_events("p", body, far).collect().await
    }

    fn whole() -> String {
        format!(
            ": keep-alive\n\ndata: {C1}\n\ndata: {C2}\r\n\r\ndata: {C3}\n\ndata: {U}\n\ndata: [DONE]\n\n"
        )
    }

    /// Every split of the stream into two reads relays the same bytes.
    #[tokio::test]
    async fn any_split_relays_the_same_events() {
        let all = whole().into_bytes();
        for cut in 0..=all.len() {
            let out = run(vec![all[..cut].to_vec(), all[cut..].to_vec()]).await;
            let mut relayed = Vec::new();
            let mut usage = None;
            for item in &out {
                let item = item.as_ref().unwrap_or_else(|e| panic!("cut {cut}: {e}"));
                if let Some(u) = &item.usage {
                    assert!(item.usage_only);
                    usage = Some(u.clone());
                } else {
                    relayed.extend_from_slice(&item.frame);
                }
            }
            let expected = format!("data: {C1}\n\ndata: {C2}\r\n\r\ndata: {C3}\n\n");
            assert_eq!(String::from_utf8_lossy(&relayed), expected, "cut {cut}");
            assert_eq!(usage.map(|u| u.total_tokens), Some(5), "cut {cut}");
        }
    }

    #[tokio::test]
    async fn one_read_is_one_frame_until_the_usage_event() {
        let out = run(vec![whole().into_bytes()]).await;
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(out[0].as_ref().unwrap().usage.is_none());
        assert!(out[1].as_ref().unwrap().usage.is_some());
    }

    #[tokio::test]
    async fn a_stream_cut_before_its_finish_is_an_error() {
        let out = run(vec![format!("data: {C1}\n\ndata: {C2}\n\n").into_bytes()]).await;
        assert!(
            matches!(out.last(), Some(Err(Error::Stream { .. }))),
            "{out:?}"
        );
        // A finished stream may close without [DONE].
        let out = run(vec![format!("data: {C1}\n\ndata: {C3}\n\n").into_bytes()]).await;
        assert!(out.iter().all(Result::is_ok), "{out:?}");
    }

    #[tokio::test]
    async fn error_objects_and_garbage_end_the_stream() {
        let out = run(vec![
            format!(
                "data: {C1}\n\ndata: {{\"error\":{{\"message\":\"overloaded\"}}}}\n\ndata: {C3}\n\n"
            )
            .into_bytes(),
        ])
        .await;
        assert_eq!(out.len(), 2, "{out:?}");
        match &out[1] {
            Err(Error::Stream { detail, .. }) => assert_eq!(detail, "overloaded"),
            other => panic!("{other:?}"),
        }
        let out = run(vec![
            format!("data: {C1}\n\ndata: {{not json\n\n").into_bytes(),
        ])
        .await;
        assert!(
            matches!(&out[1], Err(Error::Stream { detail, .. }) if detail.starts_with("undecodable")),
            "{out:?}"
        );
    }

    #[test]
    fn generated_text_reads_both_formats() {
        let mut out = String::new();
        let openai = format!(
            "data: {C1}\n\ndata: {{\"choices\":[{{\"index\":0,\"delta\":{{\"reasoning_content\":\"R\",\"tool_calls\":[{{\"index\":0,\"function\":{{\"arguments\":\"{{}}\"}}}}]}}}}]}}\n\n"
        );
        generated_text(openai.as_bytes(), &mut out);
        assert_eq!(out, "HelR{}");
        out.clear();
        let anthropic = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\nevent: content_block_delta\ndata: {\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"T\"}}\n\n";
        generated_text(anthropic.as_bytes(), &mut out);
        assert_eq!(out, "HiT");
    }

    #[test]
    fn multi_line_data_is_joined() {
        let ev = b"event: x\ndata: {\"a\":\ndata: 1}\n\n";
        assert_eq!(data(ev).as_deref(), Some(&b"{\"a\":\n1}"[..]));
        assert_eq!(classify(ev), Kind::Plain { finishes: false });
        assert_eq!(classify(b": comment\n\n"), Kind::Empty);
        assert_eq!(event_end(b"data: 1\r\n\r"), None);
        assert_eq!(event_end(b"data: 1\r\n\r\n"), Some(11));
        assert_eq!(event_end(b"data: 1\r\rdata"), Some(9));
    }
}

//! Server-sent events from an upstream, decoded into JSON items.
//!
//! `eventsource-stream` does the framing (multi-line `data:`, comments and
//! keep-alives, CR/LF/CRLF line ends, events split across reads). This module
//! adds the OpenAI conventions on top: `[DONE]` ends the stream, an `error`
//! object inside the stream is a provider error, and a connection that closes
//! before the answer finished is a broken stream rather than a short answer.

use bytes::Bytes;
use eventsource_stream::Eventsource;
use futures_util::{FutureExt, Stream, StreamExt};
use serde::de::DeserializeOwned;

use crate::Error;
use crate::openai::upstream_message;

/// An item of an SSE stream that can tell whether the answer is complete.
pub trait StreamItem: DeserializeOwned {
    /// True when this item carries a finish reason.
    fn is_final(&self) -> bool;
}

impl StreamItem for loom_models::chat::ChatChunk {
    fn is_final(&self) -> bool {
        self.choices.iter().any(|c| c.finish_reason.is_some())
    }
}

impl StreamItem for loom_models::completions::CompletionResponse {
    fn is_final(&self) -> bool {
        self.choices.iter().any(|c| c.finish_reason.is_some())
    }
}

/// Decodes an SSE byte stream into items of type `T`.
pub fn sse_json<T, S, E>(
    provider: String,
    bytes: S,
    deadline: tokio::time::Instant,
) -> impl Stream<Item = Result<T, Error>> + Send
where
    T: StreamItem + Send + 'static,
    S: Stream<Item = Result<Bytes, E>> + Send + 'static,
    E: std::fmt::Display + Send + 'static,
{
    struct State<Ev> {
        events: Ev,
        provider: String,
        finished: bool,
        done: bool,
        deadline: tokio::time::Instant,
    }
    let state = State {
        events: Box::pin(bytes.eventsource()),
        provider,
        finished: false,
        done: false,
        deadline,
    };
    futures_util::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        loop {
            let Ok(next) = tokio::time::timeout_at(st.deadline, st.events.next()).await else {
                st.done = true;
                let err = Error::Timeout {
                    provider: st.provider.clone(),
                };
                return Some((Err(err), st));
            };
            let Some(next) = next else {
                st.done = true;
                if st.finished {
                    return None;
                }
                let err = Error::Stream {
                    provider: st.provider.clone(),
                    detail: "the upstream closed the stream before it finished".to_owned(),
                };
                return Some((Err(err), st));
            };
            let event = match next {
                Ok(ev) => ev,
                Err(e) => {
                    st.done = true;
                    let err = Error::Stream {
                        provider: st.provider.clone(),
                        detail: e.to_string(),
                    };
                    return Some((Err(err), st));
                }
            };
            let data = event.data.trim();
            if data.is_empty() {
                continue;
            }
            if data == "[DONE]" {
                // Read what is already here (the end of the chunked body),
                // so the connection goes back to the pool; an upstream that
                // keeps the body open is not waited for.
                for _ in 0..8 {
                    match st.events.next().now_or_never() {
                        Some(Some(_)) => continue,
                        _ => break,
                    }
                }
                return None;
            }
            match serde_json::from_str::<T>(data) {
                Ok(item) => {
                    st.finished |= item.is_final();
                    return Some((Ok(item), st));
                }
                Err(e) => {
                    st.done = true;
                    let detail = if data.contains("\"error\"") {
                        upstream_message(data.as_bytes())
                    } else {
                        format!("undecodable event: {e}")
                    };
                    let err = Error::Stream {
                        provider: st.provider.clone(),
                        detail,
                    };
                    return Some((Err(err), st));
                }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use loom_models::chat::ChatChunk;

    async fn chunks(parts: &[&'static str]) -> Vec<Result<ChatChunk, Error>> {
        let bytes = futures_util::stream::iter(
            parts
                .iter()
                .map(|p| Ok::<_, std::convert::Infallible>(Bytes::from_static(p.as_bytes())))
                .collect::<Vec<_>>(),
        );
        let far = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        let s = sse_json::<ChatChunk, _, _>("p".into(), bytes, far);
        s.collect().await
    }

    const C1: &str = r#"{"id":"a","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}]}"#;
    const C2: &str = r#"{"id":"a","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"lo"},"finish_reason":"stop"}]}"#;

    #[tokio::test]
    async fn handles_split_reads_crlf_comments_and_done() {
        let whole = format!(": keep-alive\r\n\r\ndata: {C1}\r\n\r\ndata: {C2}\n\ndata: [DONE]\n\n");
        let leaked: &'static str = Box::leak(whole.into_boxed_str());
        // Split into 7-byte reads so events straddle reads.
        let parts: Vec<&'static str> = leaked
            .as_bytes()
            .chunks(7)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        let out = chunks(&parts).await;
        assert_eq!(out.len(), 2);
        let text: String = out
            .iter()
            .map(|c| {
                c.as_ref().unwrap().choices[0]
                    .delta
                    .content
                    .clone()
                    .unwrap()
            })
            .collect();
        assert_eq!(text, "Hello");
    }

    #[tokio::test]
    async fn multi_line_data_is_joined() {
        let out = chunks(&["data: {\"id\":\"a\",\"model\":\"m\",\ndata: \"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n"]).await;
        assert_eq!(out.len(), 1);
        assert!(out[0].is_ok());
    }

    #[tokio::test]
    async fn early_close_is_an_error() {
        let leaked: &'static str = Box::leak(format!("data: {C1}\n\n").into_boxed_str());
        let out = chunks(&[leaked]).await;
        assert_eq!(out.len(), 2);
        assert!(matches!(out[1], Err(Error::Stream { .. })));
    }

    #[tokio::test]
    async fn error_event_is_an_error() {
        let out = chunks(&[
            "data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}\n\n",
        ])
        .await;
        match &out[0] {
            Err(Error::Stream { detail, .. }) => assert_eq!(detail, "overloaded"),
            other => panic!("{other:?}"),
        }
    }
}

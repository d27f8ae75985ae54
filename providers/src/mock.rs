//! The built-in `mock` provider: a deterministic answer derived from the
//! prompt, realistic `usage`, and a stream whose chunk count and per-chunk
//! delay are configurable. It needs no network and no key, which makes it the
//! offline quickstart and the upstream of load tests.

use std::future::Future;
use std::time::Duration;

use base64::Engine;
use loom_config::settings::MockOptions;
use loom_models::chat::{
    ChatChunk, ChatRequest, ChatResponse, Choice, ChunkChoice, Content, Delta, Message, Role, Usage,
};
use loom_models::completions::{CompletionChoice, CompletionRequest, CompletionResponse};
use loom_models::embeddings::{Embedding, EmbeddingRequest, EmbeddingResponse, EmbeddingUsage};
use serde_json::Value;

use crate::adapter::Adapter;
use crate::convert::unix_now;
use crate::{ChunkStream, CompletionStream, Error, Reply};

/// A provider that answers by itself.
#[derive(Debug)]
pub struct Mock {
    name: String,
    opts: MockOptions,
}

/// A rough token count (about four characters a token), used only by the mock.
pub fn rough_tokens(text: &str) -> u64 {
    (text.chars().count() as u64).div_ceil(4)
}

/// FNV-1a: a stable digest so that ids and vectors depend only on the input.
fn digest(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl Mock {
    /// A mock named `name`.
    pub fn new(name: &str, opts: MockOptions) -> Mock {
        Mock {
            name: name.to_owned(),
            opts,
        }
    }

    fn prompt_tokens(req: &ChatRequest) -> u64 {
        3 + req
            .messages
            .iter()
            .map(|m| 4 + rough_tokens(&m.text()))
            .sum::<u64>()
    }

    /// The answer: the last user turn, quoted back.
    fn answer(req: &ChatRequest) -> String {
        let last = req
            .messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map(Message::text)
            .unwrap_or_default();
        let snippet: String = last.chars().take(200).collect();
        format!("This is a mock response to: \"{snippet}\"")
    }

    fn cap(text: String, max: Option<u64>) -> (String, &'static str) {
        match max {
            Some(max) if rough_tokens(&text) > max => {
                (text.chars().take((max * 4) as usize).collect(), "length")
            }
            _ => (text, "stop"),
        }
    }

    async fn pause(d: Duration) {
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
    }

    pub(crate) async fn chat(&self, req: &ChatRequest) -> Result<Reply, Error> {
        let resp = self.chat_response(req).await;
        Ok(Reply::json(&resp, resp.usage.clone()))
    }

    async fn chat_response(&self, req: &ChatRequest) -> ChatResponse {
        Self::pause(self.opts.latency.get()).await;
        let (text, finish) = Self::cap(Self::answer(req), req.max_output_tokens());
        let completion = rough_tokens(&text);
        let n = req.n.unwrap_or(1).max(1);
        let choices = (0..n)
            .map(|index| Choice {
                index,
                message: Message {
                    role: Role::Assistant,
                    content: Some(Content::Text(text.clone())),
                    ..Message::default()
                },
                finish_reason: Some(finish.to_owned()),
                ..Choice::default()
            })
            .collect();
        ChatResponse {
            id: format!("chatcmpl-mock-{:016x}", digest(&text)),
            object: "chat.completion".to_owned(),
            created: unix_now(),
            model: req.model.clone(),
            choices,
            usage: Some(Usage::new(
                Self::prompt_tokens(req),
                completion * u64::from(n),
            )),
            ..ChatResponse::default()
        }
    }

    pub(crate) async fn chat_stream(&self, req: &ChatRequest) -> Result<ChunkStream, Error> {
        Self::pause(self.opts.latency.get()).await;
        let (text, finish) = Self::cap(Self::answer(req), req.max_output_tokens());
        let usage = Usage::new(Self::prompt_tokens(req), rough_tokens(&text));
        let pieces = split(&text, self.opts.stream_chunks.max(1) as usize);
        let base = ChatChunk {
            id: format!("chatcmpl-mock-{:016x}", digest(&text)),
            object: "chat.completion.chunk".to_owned(),
            created: unix_now(),
            model: req.model.clone(),
            ..ChatChunk::default()
        };
        let mut chunks = Vec::with_capacity(pieces.len() + 2);
        for (i, piece) in pieces.into_iter().enumerate() {
            let mut c = base.clone();
            c.choices.push(ChunkChoice {
                delta: Delta {
                    role: (i == 0).then_some(Role::Assistant),
                    content: Some(piece),
                    ..Delta::default()
                },
                ..ChunkChoice::default()
            });
            chunks.push(c);
        }
        let mut last = base.clone();
        last.choices.push(ChunkChoice {
            finish_reason: Some(finish.to_owned()),
            ..ChunkChoice::default()
        });
        chunks.push(last);
        let mut usage_chunk = base;
        usage_chunk.usage = Some(usage);
        chunks.push(usage_chunk);

        let delay = self.opts.chunk_delay.get();
        let stream = futures_util::stream::unfold(chunks.into_iter(), move |mut it| async move {
            let next = it.next()?;
            Self::pause(delay).await;
            Some((Ok(next), it))
        });
        Ok(Box::pin(stream))
    }

    pub(crate) async fn completions(&self, req: &CompletionRequest) -> Result<Reply, Error> {
        let resp = self.completion_response(req).await;
        Ok(Reply::json(&resp, resp.usage.clone()))
    }

    async fn completion_response(&self, req: &CompletionRequest) -> CompletionResponse {
        Self::pause(self.opts.latency.get()).await;
        let prompt = prompt_text(&req.prompt);
        let (text, finish) = Self::cap(format!(" mock completion of: {prompt}"), req.max_tokens);
        let usage = Usage::new(rough_tokens(&prompt), rough_tokens(&text));
        CompletionResponse {
            id: format!("cmpl-mock-{:016x}", digest(&text)),
            object: "text_completion".to_owned(),
            created: unix_now(),
            model: req.model.clone(),
            choices: vec![CompletionChoice {
                index: 0,
                text,
                finish_reason: Some(finish.to_owned()),
                ..CompletionChoice::default()
            }],
            usage: Some(usage),
            ..CompletionResponse::default()
        }
    }

    pub(crate) async fn completions_stream(
        &self,
        req: &CompletionRequest,
    ) -> Result<CompletionStream, Error> {
        let whole = self.completion_response(req).await;
        let text = whole
            .choices
            .first()
            .map(|c| c.text.clone())
            .unwrap_or_default();
        let finish = whole.choices.first().and_then(|c| c.finish_reason.clone());
        let mut items: Vec<CompletionResponse> =
            split(&text, self.opts.stream_chunks.max(1) as usize)
                .into_iter()
                .map(|piece| CompletionResponse {
                    choices: vec![CompletionChoice {
                        index: 0,
                        text: piece,
                        ..CompletionChoice::default()
                    }],
                    usage: None,
                    ..whole.clone()
                })
                .collect();
        if let Some(last) = items.last_mut() {
            last.choices[0].finish_reason = finish;
        }
        items.push(CompletionResponse {
            choices: Vec::new(),
            ..whole
        });
        let delay = self.opts.chunk_delay.get();
        let stream = futures_util::stream::unfold(items.into_iter(), move |mut it| async move {
            let next = it.next()?;
            Self::pause(delay).await;
            Some((Ok(next), it))
        });
        Ok(Box::pin(stream))
    }

    pub(crate) async fn embeddings(&self, req: &EmbeddingRequest) -> Result<Reply, Error> {
        Self::pause(self.opts.latency.get()).await;
        let texts = req.texts();
        if texts.is_empty() {
            return Err(Error::Unsupported(format!(
                "provider {}: the mock embeds text input only",
                self.name
            )));
        }
        let dims = req.dimensions.unwrap_or(64).clamp(1, 4096) as usize;
        let base64 = req.encoding_format.as_deref() == Some("base64");
        let mut tokens = 0;
        let data = texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                tokens += rough_tokens(t);
                let v = vector(t, dims);
                let embedding = if base64 {
                    let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
                    Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
                } else {
                    Value::Array(v.into_iter().map(|f| Value::from(f64::from(f))).collect())
                };
                Embedding {
                    object: "embedding".to_owned(),
                    index: i as u32,
                    embedding,
                    ..Embedding::default()
                }
            })
            .collect();
        let resp = EmbeddingResponse {
            object: "list".to_owned(),
            data,
            model: req.model.clone(),
            usage: Some(EmbeddingUsage {
                prompt_tokens: tokens,
                total_tokens: tokens,
            }),
            ..EmbeddingResponse::default()
        };
        Ok(Reply::json(&resp, Some(Usage::new(tokens, 0))))
    }
}

fn prompt_text(prompt: &Value) -> String {
    match prompt {
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .collect::<Vec<_>>()
            .join("\n"),
        other => other.to_string(),
    }
}

/// A unit vector that depends only on the text.
fn vector(text: &str, dims: usize) -> Vec<f32> {
    let mut state = digest(text);
    let mut v: Vec<f32> = (0..dims)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect();
    let norm = v
        .iter()
        .map(|x| x * x)
        .sum::<f32>()
        .sqrt()
        .max(f32::EPSILON);
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

/// Splits text into at most `n` pieces of similar length on char boundaries.
fn split(text: &str, n: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let size = chars.len().div_ceil(n).max(1);
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

impl Adapter for Mock {
    fn name(&self) -> &str {
        &self.name
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

    fn completions(
        &self,
        req: &CompletionRequest,
        _original: Option<bytes::Bytes>,
    ) -> impl Future<Output = Result<Reply, Error>> + Send {
        self.completions(req)
    }

    fn completions_stream(
        &self,
        req: &mut CompletionRequest,
    ) -> impl Future<Output = Result<CompletionStream, Error>> + Send {
        self.completions_stream(req)
    }

    fn embeddings(
        &self,
        req: &EmbeddingRequest,
        _original: Option<bytes::Bytes>,
    ) -> impl Future<Output = Result<Reply, Error>> + Send {
        self.embeddings(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    fn req(text: &str) -> ChatRequest {
        serde_json::from_value(serde_json::json!({
            "model": "m", "messages": [{"role": "user", "content": text}]
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn answer_is_deterministic_with_usage() {
        let mock = Mock::new("mock", MockOptions::default());
        let a = mock.chat_response(&req("hello there")).await;
        let b = mock.chat_response(&req("hello there")).await;
        let reply = mock.chat(&req("hello there")).await.unwrap();
        assert_eq!(reply.usage, a.usage);
        let parsed: ChatResponse = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(parsed.choices, a.choices);
        assert_eq!(a.choices[0].message.text(), b.choices[0].message.text());
        assert!(a.choices[0].message.text().contains("hello there"));
        let u = a.usage.unwrap();
        assert_eq!(u.total_tokens, u.prompt_tokens + u.completion_tokens);
        assert!(u.completion_tokens > 0);
    }

    #[tokio::test]
    async fn stream_reassembles_to_the_same_answer() {
        let opts = MockOptions {
            stream_chunks: 5,
            ..MockOptions::default()
        };
        let mock = Mock::new("mock", opts);
        let whole = mock.chat_response(&req("stream me")).await;
        let chunks: Vec<ChatChunk> = mock
            .chat_stream(&req("stream me"))
            .await
            .unwrap()
            .map(Result::unwrap)
            .collect()
            .await;
        // 5 content chunks, a finish chunk, a usage chunk.
        assert_eq!(chunks.len(), 7);
        let text: String = chunks
            .iter()
            .flat_map(|c| c.choices.iter().filter_map(|ch| ch.delta.content.clone()))
            .collect();
        assert_eq!(text, whole.choices[0].message.text());
        assert_eq!(chunks.last().unwrap().usage, whole.usage);
    }

    #[test]
    fn vectors_are_unit_length_and_stable() {
        let a = vector("x", 64);
        assert_eq!(a, vector("x", 64));
        let norm: f32 = a.iter().map(|x| x * x).sum();
        assert!((norm - 1.0).abs() < 1e-4);
    }
}

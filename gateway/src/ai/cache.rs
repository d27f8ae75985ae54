//! The semantic cache stage of chat completions: after guardrails, before
//! a provider is chosen.
//!
//! [`begin`] reads the client's cache directives, looks the request up in
//! the scope of its consumer (or globally), and either answers it from the
//! cache ([`Begin::Hit`]) or lets it go on with a [`Saver`] that stores the
//! provider's answer once it is complete: whole answers at once, streams
//! when their last event has arrived ([`Recorder`]), never when cut,
//! filtered, or ending in a tool call (unless configured).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{CACHE_CONTROL, HeaderName, HeaderValue};
use http::{HeaderMap, Response, StatusCode};
use loom_accounting::Clock;
use loom_config::{CacheScope, Config};
use loom_models::chat::{
    ChatChunk, ChatRequest, ChatResponse, Choice, ChunkChoice, Content, Delta, FunctionCallDelta,
    Message, Role, ToolCall, ToolCallDelta, Usage,
};
use loom_semantic_cache::key::KeyBuilder;
use loom_semantic_cache::{Answer, DEFAULT_THRESHOLD, Lookup, Pending, SemanticCache, Settings};

use super::guard::Applied;
use crate::admin::metrics::CacheStatus;
use crate::runtime::body::{Body, json_response};
use crate::runtime::exchange::Exchange;
use crate::runtime::state::Runtime;

const CACHE: HeaderName = HeaderName::from_static("x-loom-cache");
const SIMILARITY: HeaderName = HeaderName::from_static("x-loom-cache-similarity");

/// Where and how a route caches.
#[derive(Debug, Clone, Copy)]
struct Policy {
    enabled: bool,
    settings: Settings,
    scope: CacheScope,
}

/// The cache as one configuration compiled it.
pub struct CacheStage {
    cache: SemanticCache,
    global: Policy,
    routes: HashMap<String, Policy>,
    cache_tool_calls: bool,
    clock: Clock,
}

impl CacheStage {
    /// The stage of `config`, over a cache whose index outlives reloads.
    pub fn new(config: &Config, cache: SemanticCache, clock: Clock) -> CacheStage {
        let c = &config.ai_gateway.semantic_cache;
        let keys = KeyBuilder {
            absent_temperature_is_zero: c.absent_temperature_is_zero,
            max_temperature: c.max_temperature.unwrap_or(0.0),
        };
        let global = Policy {
            enabled: c.enabled,
            settings: Settings {
                threshold: c.similarity_threshold.unwrap_or(DEFAULT_THRESHOLD) as f32,
                keys,
            },
            scope: c.scope,
        };
        let routes = config
            .routes
            .iter()
            .filter_map(|r| {
                let o = r.semantic_cache.as_ref()?;
                let mut p = global;
                p.enabled = o.enabled.unwrap_or(true) && c.enabled;
                if let Some(t) = o.similarity_threshold {
                    p.settings.threshold = t as f32;
                }
                if let Some(s) = o.scope {
                    p.scope = s;
                }
                Some((r.id.clone(), p))
            })
            .collect();
        CacheStage {
            cache,
            global,
            routes,
            cache_tool_calls: c.cache_tool_calls,
            clock,
        }
    }

    /// The cache, for its size.
    pub fn cache(&self) -> &SemanticCache {
        &self.cache
    }

    fn policy(&self, route: &str) -> &Policy {
        self.routes.get(route).unwrap_or(&self.global)
    }
}

/// What the client asked of the cache.
#[derive(Debug, Clone, Copy, Default)]
pub struct Directive {
    /// Do not answer from the cache (`Cache-Control: no-cache`).
    no_lookup: bool,
    /// Do not keep this answer (`Cache-Control: no-store`).
    no_store: bool,
}

impl Directive {
    /// `Cache-Control: no-cache` skips the lookup, `no-store` skips both
    /// lookup and storage, `x-loom-cache: bypass` skips both.
    pub fn of(headers: &HeaderMap) -> Directive {
        let mut d = Directive::default();
        for v in headers.get_all(CACHE_CONTROL) {
            for part in v.to_str().unwrap_or("").split(',') {
                match part.trim().to_ascii_lowercase().as_str() {
                    "no-cache" => d.no_lookup = true,
                    "no-store" => {
                        d.no_lookup = true;
                        d.no_store = true;
                    }
                    _ => {}
                }
            }
        }
        if headers
            .get(CACHE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"bypass"))
        {
            d.no_lookup = true;
            d.no_store = true;
        }
        d
    }
}

/// The outcome of the cache stage.
pub enum Begin {
    /// Answered from the cache.
    Hit(Hit),
    /// Go to the provider; store its answer through the saver, if any.
    Go {
        status: Option<CacheStatus>,
        saver: Option<Box<Saver>>,
    },
}

/// A cached answer for this request.
pub struct Hit {
    answer: Arc<Answer>,
    similarity: f32,
}

/// Stores the answer to a request that missed.
pub struct Saver {
    rt: Arc<Runtime>,
    pending: Pending,
    tool_calls: bool,
}

/// Looks `chat` up, unless the route, the client or the request rules it out.
pub async fn begin(
    rt: &Arc<Runtime>,
    ex: &Exchange,
    directive: Directive,
    chat: &ChatRequest,
    applied: &Applied,
) -> Begin {
    let Some(stage) = rt.cache.as_ref() else {
        return Begin::Go {
            status: None,
            saver: None,
        };
    };
    let policy = stage.policy(&ex.route);
    if !policy.enabled {
        return Begin::Go {
            status: None,
            saver: None,
        };
    }
    let metrics = &ex.shared().metrics.cache;
    // Values masked reversibly are put back per request: such an answer
    // carries this request's secrets and must not serve another.
    if applied.vault.is_some() {
        metrics.looked_up(CacheStatus::Skip, None);
        return Begin::Go {
            status: Some(CacheStatus::Skip),
            saver: None,
        };
    }
    if directive.no_store {
        metrics.looked_up(CacheStatus::Bypass, None);
        return Begin::Go {
            status: Some(CacheStatus::Bypass),
            saver: None,
        };
    }
    let consumer;
    let scope = match policy.scope {
        CacheScope::Global => "global",
        CacheScope::Consumer => {
            let name = ex.consumer.as_ref().map_or("", |c| c.name.as_str());
            consumer = format!("consumer:{name}");
            consumer.as_str()
        }
    };
    let started = Instant::now();
    let now = stage.clock.now_unix();
    // `no-cache` refreshes: nothing is looked up, the new answer is stored
    // over the old.
    let lookup = stage
        .cache
        .lookup(&policy.settings, scope, chat, now, !directive.no_lookup)
        .await;
    let similar = stage.cache.similarity() && !directive.no_lookup;
    match lookup {
        Lookup::Hit { answer, similarity } => {
            let timed = (similarity < 1.0 && similar, started.elapsed().as_secs_f64());
            metrics.looked_up(CacheStatus::Hit, Some(timed));
            Begin::Hit(Hit { answer, similarity })
        }
        Lookup::Miss(pending) => {
            let status = if directive.no_lookup {
                CacheStatus::Bypass
            } else {
                CacheStatus::Miss
            };
            metrics.looked_up(
                status,
                (!directive.no_lookup).then(|| (similar, started.elapsed().as_secs_f64())),
            );
            Begin::Go {
                status: Some(status),
                saver: Some(Box::new(Saver {
                    rt: rt.clone(),
                    pending,
                    tool_calls: stage.cache_tool_calls,
                })),
            }
        }
        Lookup::Skip(_) => {
            metrics.looked_up(CacheStatus::Skip, None);
            Begin::Go {
                status: Some(CacheStatus::Skip),
                saver: None,
            }
        }
    }
}

/// `x-loom-cache` on a response that went to the provider.
pub fn mark(resp: &mut Response<Body>, status: Option<CacheStatus>) {
    if let Some(s) = status {
        resp.headers_mut()
            .insert(CACHE, HeaderValue::from_static(s.label()));
    }
}

/// Whether every choice ended in a way worth serving again.
fn complete(choices: &[(Option<&str>, bool)], tool_calls: bool) -> bool {
    !choices.is_empty()
        && choices.iter().all(|(finish, has_tools)| match finish {
            Some("stop" | "length") => !has_tools || tool_calls,
            Some("tool_calls" | "function_call") => tool_calls,
            _ => false,
        })
}

impl Saver {
    /// Stores a whole answer as the client received it (in the chat
    /// shape), `size` bytes of it.
    pub fn whole(
        self,
        response: ChatResponse,
        size: usize,
        provider: &str,
        model: &str,
        usage: Option<&Usage>,
    ) {
        let finished: Vec<_> = response
            .choices
            .iter()
            .map(|c| {
                (
                    c.finish_reason.as_deref(),
                    c.message.tool_calls.as_ref().is_some_and(|t| !t.is_empty()),
                )
            })
            .collect();
        if !complete(&finished, self.tool_calls) {
            return;
        }
        self.keep(response, size, provider, model, usage);
    }

    fn keep(
        self,
        response: ChatResponse,
        size: usize,
        provider: &str,
        model: &str,
        usage: Option<&Usage>,
    ) {
        let Some(stage) = self.rt.cache.as_ref() else {
            return;
        };
        let (prompt_tokens, completion_tokens) =
            usage.map_or((0, 0), |u| (u.prompt_tokens, u.completion_tokens));
        let answer = Answer {
            response,
            provider: provider.to_owned(),
            model: model.to_owned(),
            prompt_tokens,
            completion_tokens,
        };
        let now = stage.clock.now_unix();
        stage.cache.store(self.pending, answer, size, now);
    }

    /// A recorder for a streamed answer.
    pub fn recorder(self: Box<Self>) -> Recorder {
        Recorder {
            saver: Some(self),
            response: None,
            choices: Vec::new(),
            size: 0,
        }
    }
}

/// One choice of a stream being put together.
#[derive(Default)]
struct Building {
    content: String,
    refusal: Option<String>,
    tools: Vec<ToolCall>,
    finish: Option<String>,
}

/// Puts a streamed answer together, chunk by chunk, to store it whole when
/// the stream ends well.
pub struct Recorder {
    saver: Option<Box<Saver>>,
    response: Option<ChatResponse>,
    choices: Vec<Building>,
    size: usize,
}

/// A stream answer over this bound is not kept.
const MAX_RECORDED: usize = 4 << 20;

impl Recorder {
    /// Adds one chunk as it was sent to the client.
    pub fn chunk(&mut self, c: &ChatChunk) {
        if self.saver.is_none() {
            return;
        }
        if self.response.is_none() {
            self.response = Some(ChatResponse {
                id: c.id.clone(),
                object: "chat.completion".into(),
                created: c.created,
                model: c.model.clone(),
                choices: Vec::new(),
                usage: None,
                system_fingerprint: c.system_fingerprint.clone(),
                service_tier: c.service_tier.clone(),
                extra: Default::default(),
            });
        }
        for ch in &c.choices {
            let i = ch.index as usize;
            if i >= 16 {
                // Far more choices than a cacheable request (n = 1) makes.
                self.saver = None;
                return;
            }
            if self.choices.len() <= i {
                self.choices.resize_with(i + 1, Building::default);
            }
            let b = &mut self.choices[i];
            if let Some(t) = &ch.delta.content {
                b.content.push_str(t);
                self.size += t.len();
            }
            if let Some(r) = &ch.delta.refusal {
                b.refusal.get_or_insert_with(String::new).push_str(r);
            }
            for d in ch.delta.tool_calls.iter().flatten() {
                let k = d.index as usize;
                if k >= 64 {
                    self.saver = None;
                    return;
                }
                if b.tools.len() <= k {
                    b.tools.resize_with(k + 1, ToolCall::default);
                }
                let t = &mut b.tools[k];
                if let Some(id) = &d.id {
                    t.id.clone_from(id);
                }
                if let Some(kind) = &d.kind {
                    t.kind.clone_from(kind);
                }
                if let Some(f) = &d.function {
                    if let Some(n) = &f.name {
                        t.function.name.push_str(n);
                    }
                    if let Some(a) = &f.arguments {
                        t.function.arguments.push_str(a);
                        self.size += a.len();
                    }
                }
            }
            if let Some(f) = &ch.finish_reason {
                b.finish = Some(f.clone());
            }
        }
        if let (Some(u), Some(r)) = (&c.usage, self.response.as_mut()) {
            r.usage = Some(u.clone());
        }
        if self.size > MAX_RECORDED {
            self.saver = None;
        }
    }

    /// A stream relayed as the provider sent it ended with this whole
    /// answer (a native Responses stream's `response.completed`): kept as
    /// a whole answer is.
    pub fn whole(&mut self, response: ChatResponse, size: usize, provider: &str, model: &str) {
        if let Some(saver) = self.saver.take() {
            let usage = response.usage.clone();
            saver.whole(response, size, provider, model, usage.as_ref());
        }
    }

    /// The stream was cut or filtered: nothing is kept.
    pub fn abandon(&mut self) {
        self.saver = None;
    }

    /// The stream ended with `[DONE]`: keeps the answer if every choice
    /// finished.
    pub fn finish(&mut self, provider: &str, model: &str) {
        let (Some(saver), Some(mut response)) = (self.saver.take(), self.response.take()) else {
            return;
        };
        let finished: Vec<_> = self
            .choices
            .iter()
            .map(|b| (b.finish.as_deref(), !b.tools.is_empty()))
            .collect();
        if !complete(&finished, saver.tool_calls) {
            return;
        }
        response.choices = std::mem::take(&mut self.choices)
            .into_iter()
            .enumerate()
            .map(|(i, b)| Choice {
                index: i as u32,
                message: Message {
                    role: Role::Assistant,
                    content: (!b.content.is_empty() || b.tools.is_empty())
                        .then_some(Content::Text(b.content)),
                    refusal: b.refusal,
                    tool_calls: (!b.tools.is_empty()).then_some(b.tools),
                    ..Message::default()
                },
                finish_reason: b.finish,
                ..Choice::default()
            })
            .collect();
        let usage = response.usage.clone();
        let size = self.size + 256;
        saver.keep(response, size, provider, model, usage.as_ref());
    }
}

/// Serves a hit: the stored answer as `render` writes it for the client
/// (whole, or as a stream when `stream`). Records the request as a cache
/// hit.
pub fn respond(
    hit: Hit,
    ex: &mut Exchange,
    stream: bool,
    render: impl FnOnce(&ChatResponse) -> Bytes,
) -> Response<Body> {
    let answer = &hit.answer;
    ex.provider = Some(std::sync::Arc::from("cache"));
    ex.model = Some(std::sync::Arc::from(answer.response.model.as_str()));
    ex.tokens = Some((0, 0));
    if let Some(acc) = &ex.account {
        let consumer = ex
            .consumer
            .as_deref()
            .unwrap_or_else(|| acc.consumers().anonymous());
        acc.record_hit(&loom_accounting::UsageRecord {
            consumer,
            provider: &answer.provider,
            model: &answer.model,
            prompt_tokens: answer.prompt_tokens,
            completion_tokens: answer.completion_tokens,
            cached_tokens: 0,
            cache_write_tokens: 0,
            estimated: false,
        });
    }
    let body = render(&answer.response);
    let mut resp = if stream {
        let mut r = Response::new(crate::runtime::body::full(body));
        super::sse_headers(&mut r);
        r
    } else {
        json_response(StatusCode::OK, body)
    };
    ex.status = 200;
    let h = resp.headers_mut();
    h.insert(CACHE, HeaderValue::from_static("hit"));
    if let Ok(v) = HeaderValue::from_str(&format!("{:.4}", hit.similarity)) {
        h.insert(SIMILARITY, v);
    }
    resp
}

/// A whole answer as chat stream events: the role and content of each
/// choice, its tool calls, its finish reason, then usage if asked, then
/// `[DONE]`.
pub fn replay(r: &ChatResponse, wants_usage: bool) -> Bytes {
    let mut out = BytesMut::with_capacity(512);
    for c in replay_chunks(r, wants_usage) {
        out.put_slice(b"data: ");
        if let Ok(j) = serde_json::to_vec(&c) {
            out.put_slice(&j);
        }
        out.put_slice(b"\n\n");
    }
    out.put_slice(b"data: [DONE]\n\n");
    out.freeze()
}

/// A whole answer as the chunks of a stream (see [`replay`]).
pub fn replay_chunks(r: &ChatResponse, wants_usage: bool) -> Vec<ChatChunk> {
    let mut out = Vec::with_capacity(2 * r.choices.len() + 1);
    let chunk = |choices: Vec<ChunkChoice>, usage: Option<Usage>| ChatChunk {
        id: r.id.clone(),
        object: "chat.completion.chunk".into(),
        created: r.created,
        model: r.model.clone(),
        choices,
        usage,
        system_fingerprint: r.system_fingerprint.clone(),
        service_tier: r.service_tier.clone(),
        extra: Default::default(),
    };
    let mut put = |c: ChatChunk| out.push(c);
    for choice in &r.choices {
        let text = match &choice.message.content {
            Some(Content::Text(t)) => Some(t.clone()),
            Some(Content::Parts(parts)) => Some(
                parts
                    .iter()
                    .filter_map(|p| p.text.as_deref())
                    .collect::<String>(),
            ),
            None => None,
        };
        let tools = choice.message.tool_calls.as_ref().map(|calls| {
            calls
                .iter()
                .enumerate()
                .map(|(k, t)| ToolCallDelta {
                    index: k as u32,
                    id: Some(t.id.clone()),
                    kind: Some(t.kind.clone()),
                    function: Some(FunctionCallDelta {
                        name: Some(t.function.name.clone()),
                        arguments: Some(t.function.arguments.clone()),
                    }),
                    extra: Default::default(),
                })
                .collect()
        });
        put(chunk(
            vec![ChunkChoice {
                index: choice.index,
                delta: Delta {
                    role: Some(Role::Assistant),
                    content: text,
                    refusal: choice.message.refusal.clone(),
                    tool_calls: tools,
                    // The reasoning kept with the answer, as it streamed.
                    extra: choice.message.extra.clone(),
                },
                ..ChunkChoice::default()
            }],
            None,
        ));
        put(chunk(
            vec![ChunkChoice {
                index: choice.index,
                finish_reason: choice.finish_reason.clone(),
                ..ChunkChoice::default()
            }],
            None,
        ));
    }
    if wants_usage && let Some(u) = &r.usage {
        put(chunk(Vec::new(), Some(u.clone())));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_are_read_from_the_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            CACHE_CONTROL,
            HeaderValue::from_static("max-age=0, No-Cache"),
        );
        let d = Directive::of(&h);
        assert!(d.no_lookup && !d.no_store);
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        let d = Directive::of(&h);
        assert!(d.no_lookup && d.no_store);
        let mut h = HeaderMap::new();
        h.insert(CACHE, HeaderValue::from_static("BYPASS"));
        let d = Directive::of(&h);
        assert!(d.no_lookup && d.no_store);
        assert!(!Directive::of(&HeaderMap::new()).no_lookup);
    }

    #[test]
    fn only_finished_answers_are_kept() {
        assert!(complete(&[(Some("stop"), false)], false));
        assert!(complete(&[(Some("length"), false)], false));
        assert!(!complete(&[(Some("content_filter"), false)], false));
        assert!(!complete(&[(None, false)], false));
        assert!(!complete(&[(Some("tool_calls"), true)], false));
        assert!(complete(&[(Some("tool_calls"), true)], true));
        assert!(!complete(&[], true));
    }

    #[test]
    fn a_replay_is_a_well_formed_stream() {
        let r: ChatResponse = serde_json::from_value(serde_json::json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
        }))
        .expect("response");
        let body = replay(&r, true);
        let text = std::str::from_utf8(&body).expect("utf-8");
        let events: Vec<&str> = text
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| e.strip_prefix("data: ").expect("data line"))
            .collect();
        assert_eq!(events.last(), Some(&"[DONE]"));
        let chunks: Vec<ChatChunk> = events[..events.len() - 1]
            .iter()
            .map(|e| serde_json::from_str(e).expect("chunk"))
            .collect();
        assert_eq!(chunks[0].choices[0].delta.content.as_deref(), Some("Hello"));
        assert_eq!(chunks[1].choices[0].finish_reason.as_deref(), Some("stop"));
        assert_eq!(chunks[2].usage.as_ref().map(|u| u.total_tokens), Some(4));
        assert_eq!(chunks.len(), 3);
        // Without usage asked for, no usage chunk.
        assert!(
            !std::str::from_utf8(&replay(&r, false))
                .expect("utf-8")
                .contains("\"usage\"")
        );
    }
}

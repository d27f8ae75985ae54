//! The OpenAI-compatible API of AI routes.
//!
//! Every endpoint follows the same steps, in this order:
//! read and parse the body → guardrails on the request → (cache lookup) →
//! choose the provider → call it → relay the answer (streamed event by event,
//! or whole) → settle: provider statistics, metrics, tokens, access log.
//! Authentication and limits run before this, in the pipeline.

pub mod cache;
mod error;
mod failover;
mod guard;
mod messages;
mod sse;

use std::sync::Arc;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use loom_accounting::{Admission, UsageRecord};
use loom_guardrails::Guardrails;
use loom_models::chat::{ChatHead, ChatRequest, Message, Usage};
use loom_models::completions::CompletionRequest;
use loom_models::embeddings::EmbeddingRequest;
use loom_models::models_list::ModelList;
use loom_providers::{Provider, Target};
use serde::de::DeserializeOwned;

pub use error::ApiError;

use crate::body::{Body, ReadError, json_response, read_limited};
use crate::exchange::Exchange;
use crate::metrics::AiOutcome;
use crate::routes::CompiledRoute;
use crate::state::Runtime;

/// Serves one request on an AI route. Returns the exchange back unless a
/// stream took it over (it then ends with the stream's last byte).
pub async fn handle(
    rt: &Arc<Runtime>,
    route: &CompiledRoute,
    req: Request<Body>,
    mut ex: Exchange,
) -> (Response<Body>, Option<Exchange>) {
    if rt.accountant.records() {
        ex.account = Some(rt.accountant.clone());
    }
    let mut quotas = Quotas::default();
    let (mut resp, ex) = match req
        .extensions()
        .get::<crate::pipeline::PluginHeaders>()
        .cloned()
    {
        Some(set) => {
            loom_providers::with_plugin_headers(set.0, serve(rt, route, req, ex, &mut quotas)).await
        }
        None => serve(rt, route, req, ex, &mut quotas).await,
    };
    quotas.apply(&mut resp);
    (resp, ex)
}

async fn serve(
    rt: &Arc<Runtime>,
    route: &CompiledRoute,
    req: Request<Body>,
    ex: Exchange,
    q: &mut Quotas,
) -> (Response<Body>, Option<Exchange>) {
    let path = req.uri().path();
    let endpoint = endpoint(path);
    let limit = route.max_body.unwrap_or(u64::MAX);
    let result = match (endpoint, req.method()) {
        ("/chat/completions", &Method::POST) => chat(rt, req, limit, ex, q).await,
        ("/messages", &Method::POST) => return messages::handle(rt, req, limit, ex, q).await,
        ("/completions", &Method::POST) => completions(rt, req, limit, ex, q).await,
        ("/embeddings", &Method::POST) => embeddings(rt, req, limit, ex, q).await,
        ("/models", &Method::GET) => Ok((models(rt), Some(ex))),
        (p, &Method::GET) if p.starts_with("/models/") => match model(rt, &p["/models/".len()..]) {
            Ok(r) => Ok((r, Some(ex))),
            Err(e) => Err((e, Some(ex))),
        },
        ("/chat/completions" | "/completions" | "/embeddings" | "/models" | "/messages", _) => {
            Err((ApiError::MethodNotAllowed, Some(ex)))
        }
        _ => Err((
            ApiError::NotFound {
                message: format!("Unknown endpoint {path} on an AI route"),
                code: "unknown_url",
            },
            Some(ex),
        )),
    };
    match result {
        Ok(ok) => ok,
        Err((err, mut ex)) => {
            if let Some(ex) = ex.as_mut() {
                ex.error = Some(err.label());
            }
            (err.into_response(), ex)
        }
    }
}

/// The API endpoint a path names, whatever prefix the route adds
/// (`/v1/chat/completions`, `/team-a/v1/chat/completions`, `/chat/completions`).
fn endpoint(path: &str) -> &str {
    const ENDPOINTS: [&str; 5] = [
        "/chat/completions",
        "/completions",
        "/embeddings",
        "/messages",
        "/models",
    ];
    if let Some(e) = ENDPOINTS.iter().find(|e| path.ends_with(*e)) {
        return e;
    }
    match path.rfind("/models/") {
        Some(i) => &path[i..],
        None => path,
    }
}

type Outcome = Result<(Response<Body>, Option<Exchange>), (ApiError, Option<Exchange>)>;

/// A request body read whole and known to be UTF-8 text.
pub(crate) struct JsonText(Bytes);

impl JsonText {
    /// The body as text.
    pub fn text(&self) -> &str {
        // SAFETY: `read_json` checked these bytes with `str::from_utf8`, and
        // `Bytes` never changes its contents.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }

    /// The body as bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }
}

/// Reads a JSON request body: content type (→ 415), size (→ 413), UTF-8
/// (→ 400), checked once for the whole body: parsing from `&str` then takes
/// every key and string as it is, where parsing from bytes validated each
/// one again (a third of `ChatRequest`'s parse under callgrind).
async fn read_json(req: Request<Body>, limit: u64) -> Result<JsonText, ApiError> {
    if let Some(ct) = req.headers().get(CONTENT_TYPE) {
        const JSON: &[u8] = b"application/json";
        let v = ct.as_bytes().trim_ascii_start();
        let ok = v.len() >= JSON.len() && v[..JSON.len()].eq_ignore_ascii_case(JSON);
        if !ok {
            return Err(ApiError::UnsupportedMediaType);
        }
    }
    let bytes: Bytes = match read_limited(req, limit).await {
        Ok(b) => b,
        Err(ReadError::TooLarge(limit)) => return Err(ApiError::TooLarge(limit)),
        Err(ReadError::Failed(e)) => {
            return Err(ApiError::invalid(
                format!("Could not read the request body: {e}"),
                None,
            ));
        }
    };
    if let Err(e) = std::str::from_utf8(&bytes) {
        return Err(ApiError::Invalid {
            message: format!(
                "Invalid request body: not UTF-8 (invalid byte at offset {})",
                e.valid_up_to()
            ),
            param: None,
        });
    }
    Ok(JsonText(bytes))
}

/// Parses a request body; a failure is a 400 naming the missing field.
fn decode<'a, T: serde::Deserialize<'a>>(text: &'a str) -> Result<T, ApiError> {
    serde_json::from_str(text).map_err(|e| {
        let msg = e.to_string();
        let param = msg
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next())
            .map(str::to_owned);
        ApiError::Invalid {
            message: format!("Invalid request body: {msg}"),
            param,
        }
    })
}

/// Reads and parses a JSON request body; returns the parsed value and the
/// bytes it came from.
async fn parse_body<T: DeserializeOwned>(
    req: Request<Body>,
    limit: u64,
) -> Result<(T, Bytes), ApiError> {
    let body = read_json(req, limit).await?;
    let value = decode(body.text())?;
    Ok((value, body.0))
}

/// The router of `route`: its own when it overrides the strategy.
fn router<'a>(rt: &'a Runtime, route: &str) -> &'a loom_providers::Router {
    rt.route_routers
        .get(route)
        .unwrap_or_else(|| rt.providers.router())
}

/// The providers to try for `model`, in the routing strategy's order.
fn plan(
    rt: &Runtime,
    router: &loom_providers::Router,
    model: &str,
    prompt_chars: usize,
    max_tokens: Option<u64>,
) -> Result<Vec<Target>, ApiError> {
    if model.is_empty() {
        return Err(ApiError::invalid(
            "`model` must not be empty",
            Some("model"),
        ));
    }
    let candidates = rt.providers.candidates(model)?;
    Ok(router.plan(model, candidates, prompt_chars, max_tokens)?)
}

/// Tokens of one call: as the provider reported them, or as Loom counted them.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Tokens {
    pub prompt: u64,
    pub completion: u64,
    pub cached: u64,
    pub estimated: bool,
}

impl Tokens {
    /// The provider's report.
    pub fn reported(u: &Usage) -> Tokens {
        Tokens {
            prompt: u.prompt_tokens,
            completion: u.completion_tokens,
            cached: u
                .prompt_tokens_details
                .as_ref()
                .and_then(|d| d.cached_tokens)
                .unwrap_or(0),
            estimated: false,
        }
    }

    /// Counted by Loom: the request's prompt and the text generated so far.
    pub fn estimated(request: &[u8], model: &str, generated: &str) -> Tokens {
        Tokens {
            prompt: estimate_prompt(request, model),
            completion: loom_accounting::tokens::count(model, generated),
            cached: 0,
            estimated: true,
        }
    }
}

/// Tokens of a request's prompt, counted from its JSON body: every string
/// under a key that carries text to the model (`content`, `text`, `system`,
/// `prompt`, `input`, `arguments`), with the chat format's per-message cost.
/// Used only where the provider reports nothing.
pub(crate) fn estimate_prompt(request: &[u8], model: &str) -> u64 {
    fn walk<'a>(v: &'a serde_json::Value, texty: bool, out: &mut Vec<&'a str>) {
        match v {
            serde_json::Value::String(s) if texty => out.push(s),
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, texty, out)),
            serde_json::Value::Object(o) => {
                for (k, x) in o {
                    let t = matches!(
                        k.as_str(),
                        "content"
                            | "text"
                            | "system"
                            | "prompt"
                            | "input"
                            | "arguments"
                            | "messages"
                    ) || (texty && k != "type" && k != "role");
                    walk(x, t, out);
                }
            }
            _ => {}
        }
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(request) else {
        return 0;
    };
    let mut texts = Vec::new();
    walk(&v, false, &mut texts);
    loom_accounting::tokens::count_prompt(model, texts)
}

/// Text of a whole answer's choices (chat `message.content`, completion `text`).
fn answer_text(body: &[u8]) -> String {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return String::new();
    };
    let mut out = String::new();
    for c in v["choices"].as_array().into_iter().flatten() {
        for t in [&c["message"]["content"], &c["text"]] {
            if let Some(t) = t.as_str() {
                out.push_str(t);
            }
        }
    }
    out
}

/// How an answer was delivered, for metrics and the provider's breakers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// A whole answer, or a call that failed before any of it arrived.
    Whole,
    /// A stream, started (or refused before its first byte).
    Stream,
    /// A stream the provider cut after its first byte.
    Cut,
}

/// Records the provider side of a finished call: provider statistics,
/// metrics, and the consumer's usage and cost.
#[allow(clippy::too_many_arguments)]
pub(crate) fn settle(
    ex: &mut Exchange,
    provider: &Provider,
    client_model: &str,
    provider_model: &str,
    provider_time: std::time::Duration,
    status: u16,
    tokens: Option<Tokens>,
    delivery: Delivery,
) {
    let stream = delivery != Delivery::Whole;
    let shared = ex.shared().clone();
    let total = ex.elapsed();
    let t = tokens.unwrap_or_default();
    let cost = match (&ex.account, tokens) {
        (Some(acc), Some(t)) => acc.record(&UsageRecord {
            consumer: ex
                .consumer
                .as_deref()
                .unwrap_or_else(|| acc.consumers().anonymous()),
            provider: provider.name(),
            model: provider_model,
            prompt_tokens: t.prompt,
            completion_tokens: t.completion,
            cached_tokens: t.cached,
            estimated: t.estimated,
        }),
        _ => 0,
    };
    shared.metrics.ai_request(
        provider.name(),
        client_model,
        AiOutcome {
            status,
            duration: total,
            tokens: (t.prompt, t.completion),
            overhead: total.saturating_sub(provider_time),
            stream,
            cost,
        },
    );
    if (200..300).contains(&status) {
        let stats = provider.stats();
        stats.record_success(provider_time, t.prompt, t.completion);
        stats.record_model(provider_model, loom_providers::Outcome::Ok);
    } else if status >= 500 || status == 429 {
        let stats = provider.stats();
        // A stream cut after it started is judged apart from a refusal.
        let outcome = match delivery {
            Delivery::Cut => loom_providers::Outcome::Cut,
            _ => loom_providers::Outcome::Failed,
        };
        stats.record_failure(provider_time, outcome);
        stats.record_model(provider_model, outcome);
    }
    ex.tokens = Some((t.prompt, t.completion));
}

/// `security.max_tokens_per_request`: a completion budget above the cap, or
/// a prompt of more tokens than the cap, is refused with 400. The prompt is
/// counted only when its body is longer than the cap (a token is at least a
/// byte, so a shorter body cannot exceed it).
fn token_cap(
    policy: &Guardrails,
    body: &Bytes,
    model: &str,
    max_tokens: Option<u64>,
) -> Result<Option<u64>, ApiError> {
    let Some(cap) = policy.max_tokens_per_request else {
        return Ok(None);
    };
    if let Some(m) = max_tokens
        && m > cap
    {
        return Err(ApiError::invalid(
            format!("max_tokens is {m}, above this gateway's limit of {cap} tokens per request"),
            Some("max_tokens"),
        ));
    }
    if body.len() as u64 > cap {
        let prompt = estimate_prompt(body, model);
        if prompt > cap {
            return Err(ApiError::invalid(
                format!(
                    "The prompt has about {prompt} tokens, above this gateway's limit of {cap} tokens per request"
                ),
                Some("messages"),
            ));
        }
    }
    Ok(Some(cap))
}

/// Whether `model` takes `max_completion_tokens` rather than `max_tokens`
/// (OpenAI's reasoning models refuse the older name).
fn uses_max_completion_tokens(model: &str) -> bool {
    ["o1", "o3", "o4", "gpt-5"]
        .iter()
        .any(|p| model.starts_with(p))
}

/// Rate-limit standings and a refusal's wait, for the response headers.
#[derive(Debug, Default)]
pub(crate) struct Quotas {
    requests: Option<loom_accounting::Quota>,
    tokens: Option<loom_accounting::Quota>,
    retry_after: Option<std::time::Duration>,
}

impl Quotas {
    /// `x-ratelimit-*` as OpenAI sends them, and `Retry-After` on a refusal.
    fn apply(&self, resp: &mut Response<Body>) {
        const NAMES: [[HeaderName; 3]; 2] = [
            [
                HeaderName::from_static("x-ratelimit-limit-requests"),
                HeaderName::from_static("x-ratelimit-remaining-requests"),
                HeaderName::from_static("x-ratelimit-reset-requests"),
            ],
            [
                HeaderName::from_static("x-ratelimit-limit-tokens"),
                HeaderName::from_static("x-ratelimit-remaining-tokens"),
                HeaderName::from_static("x-ratelimit-reset-tokens"),
            ],
        ];
        if self.requests.is_none() && self.tokens.is_none() && self.retry_after.is_none() {
            return;
        }
        let h = resp.headers_mut();
        h.reserve(8);
        for (q, [limit, remaining, reset]) in [self.requests, self.tokens].into_iter().zip(NAMES) {
            if let Some(q) = q {
                h.insert(limit, HeaderValue::from(q.limit));
                h.insert(remaining, HeaderValue::from(q.standing.remaining));
                let mut buf = [0u8; 32];
                let text = loom_accounting::human_into(q.standing.reset, &mut buf);
                if let Ok(v) = HeaderValue::from_bytes(text) {
                    h.insert(reset, v);
                }
            }
        }
        if let Some(wait) = self.retry_after {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            h.insert(http::header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
            h.insert(
                HeaderName::from_static("retry-after-ms"),
                HeaderValue::from(wait.as_millis() as u64),
            );
        }
    }
}

/// The consumer's rate limits and period limits, checked before the
/// provider is called: one store round trip. `body` bounds the prompt's
/// tokens (a JSON body is never shorter than the text it carries); the
/// prompt is counted exactly only near a limit.
pub(crate) async fn admit(
    rt: &Runtime,
    ex: &Exchange,
    q: &mut Quotas,
    body: &Bytes,
    model: &str,
    max_tokens: Option<u64>,
) -> Result<(), ApiError> {
    let acc = &rt.accountant;
    if !acc.admits() {
        return Ok(());
    }
    let consumer = ex
        .consumer
        .as_ref()
        .unwrap_or_else(|| acc.consumers().anonymous());
    let count = || estimate_prompt(body, model);
    let ask = loom_accounting::Ask {
        consumer,
        prompt_bytes: body.len(),
        messages: 0,
        max_tokens,
        count_prompt: &count,
    };
    match acc.admit(&ask).await {
        Admission::Admitted { requests, tokens } => {
            q.requests = requests;
            q.tokens = tokens;
            Ok(())
        }
        Admission::Refused {
            why,
            retry_after,
            message,
            requests,
            tokens,
        } => {
            q.requests = requests;
            q.tokens = tokens;
            q.retry_after = Some(retry_after);
            ex.shared().metrics.refused(&consumer.name, why);
            Err(ApiError::Limited { why, message })
        }
        Admission::Unavailable => Err(ApiError::LimiterUnavailable),
    }
}

async fn chat(
    rt: &Arc<Runtime>,
    req: Request<Body>,
    limit: u64,
    mut ex: Exchange,
    q: &mut Quotas,
) -> Outcome {
    let directive = match rt.cache {
        Some(_) => cache::Directive::of(req.headers()),
        None => cache::Directive::default(),
    };
    let body = match read_json(req, limit).await {
        Ok(b) => b,
        Err(e) => return Err((e, Some(ex))),
    };
    // What routing, limits and accounting decide with. The whole request is
    // parsed only when a stage reads or rewrites it: guardrails, the cache,
    // a token cap to write in, a stream, a mapped model, or a provider that
    // does not speak OpenAI's format. Otherwise the client's bytes go
    // upstream as they are, and the provider checks what Loom did not read.
    let head: ChatHead = match decode(body.text()) {
        Ok(h) => h,
        Err(e) => return Err((e, Some(ex))),
    };
    let original = body.bytes();
    if head.messages.count == 0 {
        return Err((
            ApiError::invalid(
                "`messages` must contain at least one message",
                Some("messages"),
            ),
            Some(ex),
        ));
    }
    let stream = head.is_stream();
    if stream && !rt.streaming_enabled {
        return Err((
            ApiError::invalid("Streaming is disabled on this gateway", Some("stream")),
            Some(ex),
        ));
    }
    let policy = guard::policy(rt, &ex);
    // No budget asked for: the cap becomes the budget.
    let capped = match token_cap(&policy, original, &head.model, head.max_output_tokens()) {
        Err(e) => return Err((e, Some(ex))),
        Ok(cap) => cap.filter(|_| head.max_output_tokens().is_none()),
    };
    let max_output = head.max_output_tokens().or(capped);
    let mut full: Option<ChatRequest> = None;
    if capped.is_some() || !policy.is_empty() || rt.cache.is_some() || stream {
        let chat = match whole_request(&mut full, &body) {
            Ok(c) => c,
            Err(e) => return Err((e, Some(ex))),
        };
        if let Some(cap) = capped {
            if uses_max_completion_tokens(&chat.model) {
                chat.max_completion_tokens = Some(cap);
            } else {
                chat.max_tokens = Some(cap);
            }
        }
    }
    // Without guardrails the request is not moved through the check's
    // future (a copy of it each way).
    let applied = match full.take() {
        Some(chat) if !policy.is_empty() => match guard::check(policy, chat, &ex).await {
            Ok((chat, applied)) => {
                full = Some(chat);
                applied
            }
            Err(e) => return Err((e, Some(ex))),
        },
        other => {
            full = other;
            guard::Applied::unchecked(policy)
        }
    };
    // Boxed, and only with a cache: the lookup's future (embedding, vector
    // store) is tens of kilobytes that every request's future would carry
    // and move otherwise.
    let looked_up = match (&rt.cache, &full) {
        (Some(_), Some(chat)) => Box::pin(cache::begin(rt, &ex, directive, chat, &applied)).await,
        _ => cache::Begin::Go {
            status: None,
            saver: None,
        },
    };
    let (cache_status, mut saver) = match looked_up {
        cache::Begin::Hit(hit) => {
            // A hit calls no provider and costs no tokens: it is neither
            // routed nor admitted against the consumer's limits.
            let resp = cache::respond(hit, &mut ex, stream, head.wants_stream_usage());
            return Ok((resp, Some(ex)));
        }
        cache::Begin::Go { status, saver } => (status, saver),
    };
    // Guardrails may have rewritten the text: measured after them.
    let prompt_chars = full.as_ref().map_or(head.messages.text_len, |c| {
        c.messages.iter().map(Message::text_len).sum()
    });
    let router = router(rt, &ex.route);
    let plan = match plan(rt, router, &head.model, prompt_chars, max_output) {
        Ok(p) => p,
        Err(e) => return Err((e, Some(ex))),
    };
    if let Err(e) = admit(rt, &ex, q, original, &head.model, max_output).await {
        return Err((e, Some(ex)));
    }
    let wants_usage = head.wants_stream_usage();
    let client_model: Arc<str> = Arc::from(head.model.as_ref());
    ex.model = Some(client_model.clone());
    let passthrough = !applied.changed && capped.is_none();
    let mut tries = failover::Tries::new(router, &plan);
    loop {
        let target = tries.next(&mut ex).await;
        // The client's bytes go upstream as they are when nothing changed
        // them and the provider speaks their format.
        let relay = passthrough
            && !stream
            && *target.model == *client_model
            && target.provider.relays_chat();
        let chat = if relay {
            None
        } else {
            match whole_request(&mut full, &body) {
                Ok(chat) => {
                    chat.model.replace_range(.., &target.model);
                    Some(chat)
                }
                Err(e) => return Err((e, Some(ex))),
            }
        };
        let outcome = match chat {
            Some(chat) if stream => failover::within(
                router,
                target.provider.name(),
                failover::first_event(target.provider.chat_stream(chat)),
            )
            .await
            .map(Answer::Stream),
            // Pinned where they are made: a provider call's future is
            // several kilobytes, which passing it by value copied twice.
            Some(chat) => {
                let call = std::pin::pin!(target.provider.chat(chat));
                failover::within(router, target.provider.name(), call)
                    .await
                    .map(|r| Answer::Whole(Box::new(r)))
            }
            None => {
                let call = std::pin::pin!(
                    target
                        .provider
                        .chat_relayed(&target.model, original.clone())
                );
                failover::within(router, target.provider.name(), call)
                    .await
                    .map(|r| Answer::Whole(Box::new(r)))
            }
        };
        let answer = match outcome {
            Ok(answer) => answer,
            Err(e) => match tries.failed(&mut ex, target, e, &client_model, stream) {
                None => continue,
                Some(failed) => {
                    let (mut resp, ex) = failure(failed, ex);
                    cache::mark(&mut resp, cache_status);
                    return Ok((resp, ex));
                }
            },
        };
        let (mut resp, ex) = match answer {
            Answer::Stream(events) => {
                let call = Streamed {
                    client_model,
                    wants_usage,
                    request: original.clone(),
                    recorder: saver.take().map(cache::Saver::recorder),
                };
                (streamed(ex, &tries, &target, call, events, &applied), None)
            }
            Answer::Whole(mut reply) => {
                reply.body = guard::whole_chat(&applied, std::mem::take(&mut reply.body));
                if let Some(s) = saver.take() {
                    s.whole(
                        &reply.body,
                        target.provider.name(),
                        &target.model,
                        reply.usage.as_ref(),
                    );
                }
                (
                    whole(&mut ex, &tries, &target, &client_model, original, *reply),
                    Some(ex),
                )
            }
        };
        cache::mark(&mut resp, cache_status);
        return Ok((resp, ex));
    }
}

/// The whole chat request, parsed from `body` the first time a stage needs it.
fn whole_request<'c>(
    full: &'c mut Option<ChatRequest>,
    body: &JsonText,
) -> Result<&'c mut ChatRequest, ApiError> {
    match full {
        Some(chat) => Ok(chat),
        None => Ok(full.insert(decode(body.text())?)),
    }
}

/// The response of a successful whole answer, settled.
fn whole(
    ex: &mut Exchange,
    tries: &failover::Tries,
    target: &Target,
    client_model: &str,
    request: &Bytes,
    reply: loom_providers::Reply,
) -> Response<Body> {
    tries.succeeded(target);
    let tokens = match &reply.usage {
        Some(u) => Tokens::reported(u),
        None => Tokens::estimated(request, &target.model, &answer_text(&reply.body)),
    };
    settle(
        ex,
        &target.provider,
        client_model,
        &target.model,
        tries.called.elapsed(),
        200,
        Some(tokens),
        Delivery::Whole,
    );
    let mut resp = json_response(StatusCode::OK, reply.body);
    routing_headers(&mut resp, target, tries.attempts);
    resp
}

/// What a stream's relay needs besides its provider.
struct Streamed {
    client_model: Arc<str>,
    wants_usage: bool,
    /// The client's request body, to count the prompt if usage never arrives.
    request: Bytes,
    /// Puts the answer together for the semantic cache.
    recorder: Option<cache::Recorder>,
}

/// The response of a stream whose first event has arrived; it settles at its end.
fn streamed<T: sse::Event>(
    ex: Exchange,
    tries: &failover::Tries,
    target: &Target,
    s: Streamed,
    events: std::pin::Pin<
        Box<dyn futures_util::Stream<Item = Result<T, loom_providers::Error>> + Send>,
    >,
    applied: &guard::Applied,
) -> Response<Body> {
    tries.succeeded(target);
    let call = sse::Call {
        provider: target.provider.clone(),
        client_model: s.client_model,
        provider_model: target.model.clone(),
        called: tries.called,
        wants_usage: s.wants_usage,
        request: s.request,
        recorder: s.recorder,
    };
    let mut resp = sse::response(events, call, ex, guard::StreamCheck::new(applied));
    routing_headers(&mut resp, target, tries.attempts);
    resp
}

/// The response to a request whose every attempt failed.
fn failure(failed: failover::Failure, mut ex: Exchange) -> (Response<Body>, Option<Exchange>) {
    ex.error = Some(failed.error.label());
    let mut resp = failed.error.into_response();
    routing_headers(&mut resp, &failed.target, failed.attempts);
    (resp, Some(ex))
}

/// A provider's answer: whole, or a stream whose first event has arrived.
enum Answer {
    Whole(Box<loom_providers::Reply>),
    Stream(loom_providers::ChunkStream),
}

/// `x-loom-provider`, `x-loom-model` and `x-loom-attempts`.
fn routing_headers(resp: &mut Response<Body>, target: &Target, attempts: u32) {
    // Names built once: parsing a `&str` name costs more than the insert.
    const PROVIDER: HeaderName = HeaderName::from_static("x-loom-provider");
    const MODEL: HeaderName = HeaderName::from_static("x-loom-model");
    const ATTEMPTS: HeaderName = HeaderName::from_static("x-loom-attempts");
    let h = resp.headers_mut();
    h.reserve(3);
    if let Some(v) = target.provider.name_header() {
        h.insert(PROVIDER, v.clone());
    }
    if let Ok(v) = HeaderValue::from_str(&target.model) {
        h.insert(MODEL, v);
    }
    // Static values for the usual counts: `HeaderValue::from(u32)` allocates.
    const COUNTS: [HeaderValue; 4] = [
        HeaderValue::from_static("0"),
        HeaderValue::from_static("1"),
        HeaderValue::from_static("2"),
        HeaderValue::from_static("3"),
    ];
    let count = match COUNTS.get(attempts as usize) {
        Some(v) => v.clone(),
        None => HeaderValue::from(attempts),
    };
    h.insert(ATTEMPTS, count);
}

async fn completions(
    rt: &Arc<Runtime>,
    req: Request<Body>,
    limit: u64,
    mut ex: Exchange,
    q: &mut Quotas,
) -> Outcome {
    let (mut body, original): (CompletionRequest, Bytes) = match parse_body(req, limit).await {
        Ok(c) => c,
        Err(e) => return Err((e, Some(ex))),
    };
    let stream = body.is_stream();
    if stream && !rt.streaming_enabled {
        return Err((
            ApiError::invalid("Streaming is disabled on this gateway", Some("stream")),
            Some(ex),
        ));
    }
    let policy = guard::policy(rt, &ex);
    let mut rewritten = false;
    match token_cap(&policy, &original, &body.model, body.max_tokens) {
        Err(e) => return Err((e, Some(ex))),
        Ok(Some(cap)) if body.max_tokens.is_none() => {
            body.max_tokens = Some(cap);
            rewritten = true;
        }
        Ok(_) => {}
    }
    let prompt = std::mem::take(&mut body.prompt);
    let applied = match guard::check(policy, prompt, &ex).await {
        Ok((prompt, applied)) => {
            body.prompt = prompt;
            applied
        }
        Err(e) => return Err((e, Some(ex))),
    };
    rewritten |= applied.changed;
    let prompt_chars = body.prompt.to_string().len();
    let router = router(rt, &ex.route);
    let plan = match plan(rt, router, &body.model, prompt_chars, body.max_tokens) {
        Ok(p) => p,
        Err(e) => return Err((e, Some(ex))),
    };
    if let Err(e) = admit(rt, &ex, q, &original, &body.model, body.max_tokens).await {
        return Err((e, Some(ex)));
    }
    let client_model: Arc<str> = Arc::from(body.model.as_str());
    ex.model = Some(client_model.clone());
    let wants_usage = body
        .stream_options
        .as_ref()
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    let mut tries = failover::Tries::new(router, &plan);
    loop {
        let target = tries.next(&mut ex).await;
        body.model.replace_range(.., &target.model);
        if stream {
            let started = failover::first_event(target.provider.completions_stream(&mut body));
            match failover::within(router, target.provider.name(), started).await {
                Ok(events) => {
                    let call = Streamed {
                        client_model,
                        wants_usage,
                        request: original,
                        recorder: None,
                    };
                    let resp = streamed(ex, &tries, &target, call, events, &applied);
                    return Ok((resp, None));
                }
                Err(e) => match tries.failed(&mut ex, target, e, &client_model, true) {
                    None => continue,
                    Some(failed) => return Ok(failure(failed, ex)),
                },
            }
        }
        let unchanged = (*target.model == *client_model && !rewritten).then(|| original.clone());
        match failover::within(
            router,
            target.provider.name(),
            target.provider.completions(&body, unchanged),
        )
        .await
        {
            Ok(mut reply) => {
                reply.body = guard::whole_completion(&applied, std::mem::take(&mut reply.body));
                let resp = whole(&mut ex, &tries, &target, &client_model, &original, reply);
                return Ok((resp, Some(ex)));
            }
            Err(e) => match tries.failed(&mut ex, target, e, &client_model, false) {
                None => continue,
                Some(failed) => return Ok(failure(failed, ex)),
            },
        }
    }
}

async fn embeddings(
    rt: &Arc<Runtime>,
    req: Request<Body>,
    limit: u64,
    mut ex: Exchange,
    q: &mut Quotas,
) -> Outcome {
    let (mut body, original): (EmbeddingRequest, Bytes) = match parse_body(req, limit).await {
        Ok(c) => c,
        Err(e) => return Err((e, Some(ex))),
    };
    if let Err(e) = token_cap(&guard::policy(rt, &ex), &original, &body.model, None) {
        return Err((e, Some(ex)));
    }
    let router = router(rt, &ex.route);
    let plan = match plan(rt, router, &body.model, 0, None) {
        Ok(p) => p,
        Err(e) => return Err((e, Some(ex))),
    };
    if let Err(e) = admit(rt, &ex, q, &original, &body.model, None).await {
        return Err((e, Some(ex)));
    }
    let client_model: Arc<str> = Arc::from(body.model.as_str());
    ex.model = Some(client_model.clone());
    let mut tries = failover::Tries::new(router, &plan);
    loop {
        let target = tries.next(&mut ex).await;
        body.model.replace_range(.., &target.model);
        let unchanged = (*target.model == *client_model).then(|| original.clone());
        match failover::within(
            router,
            target.provider.name(),
            target.provider.embeddings(&body, unchanged),
        )
        .await
        {
            Ok(reply) => {
                let resp = whole(&mut ex, &tries, &target, &client_model, &original, reply);
                return Ok((resp, Some(ex)));
            }
            Err(e) => match tries.failed(&mut ex, target, e, &client_model, false) {
                None => continue,
                Some(failed) => return Ok(failure(failed, ex)),
            },
        }
    }
}

fn models(rt: &Runtime) -> Response<Body> {
    let list = ModelList::new(rt.providers.models().to_vec());
    json_response(
        StatusCode::OK,
        serde_json::to_vec(&list).unwrap_or_default(),
    )
}

fn model(rt: &Runtime, id: &str) -> Result<Response<Body>, ApiError> {
    match rt.providers.models().iter().find(|c| c.id == id) {
        Some(card) => Ok(json_response(
            StatusCode::OK,
            serde_json::to_vec(card).unwrap_or_default(),
        )),
        None => Err(ApiError::NotFound {
            message: format!("The model `{id}` does not exist"),
            code: "model_not_found",
        }),
    }
}

/// Headers of an event-stream response.
fn sse_headers(resp: &mut Response<Body>) {
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
}

#[cfg(test)]
mod tests {
    use super::endpoint;

    #[test]
    fn endpoints_are_found_under_any_prefix() {
        assert_eq!(endpoint("/v1/chat/completions"), "/chat/completions");
        assert_eq!(endpoint("/team-a/v1/chat/completions"), "/chat/completions");
        assert_eq!(endpoint("/completions"), "/completions");
        assert_eq!(endpoint("/v1/models/gpt-4o"), "/models/gpt-4o");
        assert_eq!(endpoint("/v1/messages"), "/messages");
        assert_eq!(endpoint("/v1/nothing"), "/v1/nothing");
    }
}

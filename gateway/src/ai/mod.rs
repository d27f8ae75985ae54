//! The OpenAI-compatible API of AI routes.
//!
//! Every endpoint follows the same steps, in this order:
//! read and parse the body → guardrails on the request → (cache lookup) →
//! choose the provider → call it → relay the answer (streamed event by event,
//! or whole) → settle: provider statistics, metrics, tokens, access log.
//! Authentication and limits run before this, in the pipeline.

mod error;
mod messages;
mod sse;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use loom_guardrails::Verdict;
use loom_models::chat::{ChatRequest, Usage};
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
    req: Request<Incoming>,
    mut ex: Exchange,
) -> (Response<Body>, Option<Exchange>) {
    let path = req.uri().path();
    let endpoint = path.strip_prefix("/v1").unwrap_or(path);
    let limit = route.max_body.unwrap_or(u64::MAX);
    let result = match (endpoint, req.method()) {
        ("/chat/completions", &Method::POST) => chat(rt, req, limit, ex).await,
        ("/messages", &Method::POST) => return messages::handle(rt, req, limit, ex).await,
        ("/completions", &Method::POST) => completions(rt, req, limit, ex).await,
        ("/embeddings", &Method::POST) => match embeddings(rt, req, limit, &mut ex).await {
            Ok(r) => Ok((r, Some(ex))),
            Err(e) => Err((e, Some(ex))),
        },
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

type Outcome = Result<(Response<Body>, Option<Exchange>), (ApiError, Option<Exchange>)>;

/// Reads and parses a JSON request body; returns the parsed value and the
/// bytes it came from.
async fn parse_body<T: DeserializeOwned>(
    req: Request<Incoming>,
    limit: u64,
) -> Result<(T, Bytes), ApiError> {
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
    let value = serde_json::from_slice(&bytes).map_err(|e| {
        let msg = e.to_string();
        let param = msg
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next())
            .map(str::to_owned);
        ApiError::Invalid {
            message: format!("Invalid request body: {msg}"),
            param,
        }
    })?;
    Ok((value, bytes))
}

/// The providers to try for `model`, in the routing strategy's order.
fn plan(
    rt: &Runtime,
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
    Ok(rt
        .providers
        .router()
        .plan(model, candidates, prompt_chars, max_tokens)?)
}

/// The provider a single-attempt endpoint uses: the first of the plan.
fn choose(rt: &Runtime, model: &str) -> Result<Target, ApiError> {
    let mut plan = plan(rt, model, 0, None)?;
    Ok(plan.swap_remove(0))
}

/// Records the provider side of a finished call.
pub(crate) fn settle(
    ex: &mut Exchange,
    provider: &Provider,
    client_model: &str,
    provider_time: std::time::Duration,
    status: u16,
    usage: Option<&Usage>,
    stream: bool,
) {
    let shared = ex.shared().clone();
    let total = ex.elapsed();
    let (prompt, completion) = usage.map_or((0, 0), |u| (u.prompt_tokens, u.completion_tokens));
    shared.metrics.ai_request(
        provider.name(),
        client_model,
        AiOutcome {
            status,
            duration: total,
            tokens: (prompt, completion),
            overhead: total.saturating_sub(provider_time),
            stream,
        },
    );
    if (200..300).contains(&status) {
        provider
            .stats()
            .record_success(provider_time, prompt, completion);
    } else if status >= 500 || status == 429 {
        provider.stats().record_failure(provider_time);
    }
    ex.tokens = Some((prompt, completion));
}

async fn chat(rt: &Arc<Runtime>, req: Request<Incoming>, limit: u64, mut ex: Exchange) -> Outcome {
    let (mut chat, original): (ChatRequest, Bytes) = match parse_body(req, limit).await {
        Ok(c) => c,
        Err(e) => return Err((e, Some(ex))),
    };
    if chat.messages.is_empty() {
        return Err((
            ApiError::invalid(
                "`messages` must contain at least one message",
                Some("messages"),
            ),
            Some(ex),
        ));
    }
    let stream = chat.is_stream();
    if stream && !rt.streaming_enabled {
        return Err((
            ApiError::invalid("Streaming is disabled on this gateway", Some("stream")),
            Some(ex),
        ));
    }
    if let Verdict::Block { message, .. } = rt.guardrails.check_request(&mut chat) {
        return Err((ApiError::invalid(message, None), Some(ex)));
    }
    let prompt_chars: usize = chat.messages.iter().map(|m| m.text().len()).sum();
    let plan = match plan(rt, &chat.model, prompt_chars, chat.max_output_tokens()) {
        Ok(p) => p,
        Err(e) => return Err((e, Some(ex))),
    };
    let client_model = chat.model.clone();
    ex.model = Some(client_model.clone());
    let wants_usage = chat.wants_stream_usage();
    let router = rt.providers.router();
    let max_attempts = router.attempts();
    let mut attempts = 0u32;
    loop {
        let target = plan[attempts as usize % plan.len()].clone();
        if attempts > 0 && plan.len() == 1 {
            backoff(attempts).await;
        }
        attempts += 1;
        ex.provider = Some(target.provider.name().to_owned());
        chat.model.clone_from(&target.model);
        let called = Instant::now();
        let outcome = if stream {
            let started = target.provider.chat_stream(&mut chat);
            within(router, started_stream(started))
                .await
                .map(Answer::Stream)
        } else {
            // Unchanged by mapping or guardrails: the client's bytes go upstream as they are.
            let original = (target.model == client_model && rt.guardrails.is_empty())
                .then(|| original.clone());
            within(router, target.provider.chat(&chat, original))
                .await
                .map(|r| Answer::Whole(Box::new(r)))
        };
        match outcome {
            Ok(answer) => {
                target.provider.stats().record_ttfb(called.elapsed());
                let provider = target.provider.clone();
                let mut resp = match answer {
                    Answer::Stream(events) => {
                        let call = sse::Call {
                            provider,
                            client_model,
                            called,
                            wants_usage,
                        };
                        let mut resp = sse::response(events, call, ex);
                        routing_headers(&mut resp, &target, attempts);
                        return Ok((resp, None));
                    }
                    Answer::Whole(reply) => {
                        settle(
                            &mut ex,
                            &provider,
                            &client_model,
                            called.elapsed(),
                            200,
                            reply.usage.as_ref(),
                            false,
                        );
                        json_response(StatusCode::OK, reply.body)
                    }
                };
                routing_headers(&mut resp, &target, attempts);
                return Ok((resp, Some(ex)));
            }
            Err(e) => {
                let retry = attempts < max_attempts && router.should_retry(&e);
                if let Some(d) = e.retry_after() {
                    target.provider.stats().back_off(d);
                }
                let err = ApiError::from(e);
                settle(
                    &mut ex,
                    &target.provider,
                    &client_model,
                    called.elapsed(),
                    err.status().as_u16(),
                    None,
                    stream,
                );
                if !retry {
                    ex.error = Some(err.label());
                    let mut resp = err.into_response();
                    routing_headers(&mut resp, &target, attempts);
                    return Ok((resp, Some(ex)));
                }
                let next = &plan[attempts as usize % plan.len()];
                ex.shared().metrics.failover(
                    target.provider.name(),
                    next.provider.name(),
                    err.label(),
                );
                tracing::info!(
                    request_id = %ex.request_id,
                    from = target.provider.name(),
                    to = next.provider.name(),
                    reason = err.label(),
                    "failing over"
                );
            }
        }
    }
}

/// A provider's answer: whole, or a stream whose first event has arrived.
enum Answer {
    Whole(Box<loom_providers::Reply>),
    Stream(loom_providers::ChunkStream),
}

/// Runs one attempt, within the failover policy's per-attempt timeout when
/// failover is on (the provider's own timeout applies otherwise).
async fn within<T>(
    router: &loom_providers::Router,
    attempt: impl std::future::Future<Output = Result<T, loom_providers::Error>>,
) -> Result<T, loom_providers::Error> {
    let policy = router.policy();
    if !policy.enabled {
        return attempt.await;
    }
    match tokio::time::timeout(policy.attempt_timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(loom_providers::Error::Timeout {
            provider: "attempt".to_owned(),
        }),
    }
}

/// Waits for a stream's first event, so that a stream failing before any
/// byte reached the client can still fail over.
async fn started_stream(
    started: impl std::future::Future<
        Output = Result<loom_providers::ChunkStream, loom_providers::Error>,
    >,
) -> Result<loom_providers::ChunkStream, loom_providers::Error> {
    use futures_util::StreamExt;
    let mut events = started.await?;
    match events.next().await {
        Some(Ok(first)) => Ok(Box::pin(
            futures_util::stream::once(std::future::ready(Ok(first))).chain(events),
        )),
        Some(Err(e)) => Err(e),
        None => Ok(events),
    }
}

/// Jittered exponential back-off before retrying the same provider.
async fn backoff(attempt: u32) {
    let base = 50u64 << attempt.min(6);
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()))
        % base.max(1);
    tokio::time::sleep(std::time::Duration::from_millis(base / 2 + jitter)).await;
}

/// `x-loom-provider`, `x-loom-model` and `x-loom-attempts`.
fn routing_headers(resp: &mut Response<Body>, target: &Target, attempts: u32) {
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(target.provider.name()) {
        h.insert("x-loom-provider", v);
    }
    if let Ok(v) = HeaderValue::from_str(&target.model) {
        h.insert("x-loom-model", v);
    }
    h.insert("x-loom-attempts", HeaderValue::from(attempts));
}

async fn completions(
    rt: &Arc<Runtime>,
    req: Request<Incoming>,
    limit: u64,
    mut ex: Exchange,
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
    let target = match choose(rt, &body.model) {
        Ok(t) => t,
        Err(e) => return Err((e, Some(ex))),
    };
    let client_model = std::mem::replace(&mut body.model, target.model.clone());
    ex.provider = Some(target.provider.name().to_owned());
    ex.model = Some(client_model.clone());
    let called = Instant::now();
    if stream {
        let wants_usage = body
            .stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false);
        return match target.provider.completions_stream(&mut body).await {
            Ok(events) => {
                let call = sse::Call {
                    provider: target.provider,
                    client_model,
                    called,
                    wants_usage,
                };
                Ok((sse::response(events, call, ex), None))
            }
            Err(e) => {
                let err = ApiError::from(e);
                settle(
                    &mut ex,
                    &target.provider,
                    &client_model,
                    called.elapsed(),
                    err.status().as_u16(),
                    None,
                    true,
                );
                Err((err, Some(ex)))
            }
        };
    }
    let original = (target.model == client_model).then_some(original);
    match target.provider.completions(&body, original).await {
        Ok(resp) => {
            settle(
                &mut ex,
                &target.provider,
                &client_model,
                called.elapsed(),
                200,
                resp.usage.as_ref(),
                false,
            );
            Ok((json_response(StatusCode::OK, resp.body), Some(ex)))
        }
        Err(e) => {
            let err = ApiError::from(e);
            settle(
                &mut ex,
                &target.provider,
                &client_model,
                called.elapsed(),
                err.status().as_u16(),
                None,
                false,
            );
            Err((err, Some(ex)))
        }
    }
}

async fn embeddings(
    rt: &Arc<Runtime>,
    req: Request<Incoming>,
    limit: u64,
    ex: &mut Exchange,
) -> Result<Response<Body>, ApiError> {
    let (mut body, original): (EmbeddingRequest, Bytes) = parse_body(req, limit).await?;
    let target = choose(rt, &body.model)?;
    let client_model = std::mem::replace(&mut body.model, target.model.clone());
    ex.provider = Some(target.provider.name().to_owned());
    ex.model = Some(client_model.clone());
    let called = Instant::now();
    let original = (target.model == client_model).then_some(original);
    match target.provider.embeddings(&body, original).await {
        Ok(resp) => {
            settle(
                ex,
                &target.provider,
                &client_model,
                called.elapsed(),
                200,
                resp.usage.as_ref(),
                false,
            );
            Ok(json_response(StatusCode::OK, resp.body))
        }
        Err(e) => {
            let err = ApiError::from(e);
            settle(
                ex,
                &target.provider,
                &client_model,
                called.elapsed(),
                err.status().as_u16(),
                None,
                false,
            );
            Err(err)
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

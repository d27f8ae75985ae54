//! The one order of an AI request, whatever wire format the client speaks:
//!
//! 1. parse the body ([`Ingress::parse`]; size, type and UTF-8 checked first)
//! 2. refuse a stream when streaming is off
//! 3. the guardrail policy of the route and consumer, and the gateway's
//!    token cap per request (`ai/admit.rs`)
//! 4. the request checks of the guardrails (`ai/guard.rs`)
//! 5. the semantic cache: a hit answers here (`ai/cache.rs`)
//! 6. the plan: which providers, in the routing strategy's order (`ai/plan.rs`)
//! 7. admission against the consumer's limits (`ai/admit.rs`)
//! 8. attempts, failing over as the policy allows (`ai/failover.rs`)
//! 9. the answer, whole or streamed through the one relay (`ai/relay.rs`)
//! 10. settle: statistics, breakers, metrics, tokens and cost (`ai/settle.rs`)
//!
//! What differs by format lives in its [`Ingress`] codec, never here.
//! Authentication, plugins and route limits run before this, in the pipeline.

use std::sync::Arc;

use crate::admin::metrics::CacheStatus;
use http::{Request, Response, StatusCode};
use loom_providers::{Reply, Target};

use super::admit::{Quotas, admit, token_cap};
use super::cache::{self, Begin, Directive};
use super::failover::{self, Failure, Tries};
use super::ingress::{Answer, Attempt, Ingress};
use super::relay::{self, Relay, Started};
use super::settle::{Delivery, Tokens, answer_text, settle};
use super::{ApiError, guard, plan, read_json, routing_headers};
use crate::runtime::body::{Body, json_response};
use crate::runtime::exchange::Exchange;
use crate::runtime::state::Runtime;

/// Serves one AI request in format `I`. Returns the exchange back unless a
/// stream took it over (it then ends with the stream's last byte).
pub(crate) async fn run<I: Ingress>(
    rt: &Arc<Runtime>,
    req: Request<Body>,
    limit: u64,
    mut ex: Exchange,
    q: &mut Quotas,
) -> (Response<Body>, Option<Exchange>) {
    let mut cache_status = None;
    let (mut resp, ex) = match serve::<I>(rt, req, limit, &mut ex, q, &mut cache_status).await {
        Ok(Served::Whole(resp)) => (resp, Some(ex)),
        Ok(Served::Stream(relay, target, attempts)) => {
            let mut resp = relay.response(ex);
            routing_headers(&mut resp, &target, attempts);
            (resp, None)
        }
        Err(Stop::Invalid(err)) => {
            ex.error = Some(err.label());
            return (I::render(err), Some(ex));
        }
        Err(Stop::Failed(f)) => {
            ex.error = Some(f.error.label());
            let mut resp = I::failed(f.error, &f.target);
            routing_headers(&mut resp, &f.target, f.attempts);
            (resp, Some(ex))
        }
    };
    cache::mark(&mut resp, cache_status);
    (resp, ex)
}

/// What a request was answered with.
enum Served {
    Whole(Response<Body>),
    Stream(Box<Relay>, Target, u32),
}

/// Why no provider answer was served: the request itself, or every attempt
/// failed.
enum Stop {
    Invalid(ApiError),
    Failed(Failure),
}

impl From<ApiError> for Stop {
    fn from(e: ApiError) -> Self {
        Stop::Invalid(e)
    }
}

/// An attempt's answer, a stream's first event in hand.
// Once per request, on the stack: boxing the stream would cost an allocation.
#[allow(clippy::large_enum_variant)]
enum Got {
    Whole(Box<Reply>),
    Stream(Started),
}

async fn serve<I: Ingress>(
    rt: &Arc<Runtime>,
    req: Request<Body>,
    limit: u64,
    ex: &mut Exchange,
    q: &mut Quotas,
    cache_status: &mut Option<CacheStatus>,
) -> Result<Served, Stop> {
    let cached = I::CACHED && rt.cache.is_some();
    let directive = if cached {
        Directive::of(req.headers())
    } else {
        Directive::default()
    };
    // 1. Parse.
    let mut r = I::parse(read_json(req, limit).await?)?;
    // 2. Streams.
    let stream = r.stream();
    if stream && !rt.streaming_enabled {
        return Err(
            ApiError::invalid("Streaming is disabled on this gateway", Some("stream")).into(),
        );
    }
    // 3. Policy and token cap; no budget asked for: the cap becomes the budget.
    let policy = guard::policy(rt, ex);
    let asked = r.max_output();
    let max_output = match token_cap(&policy, r.body(), r.model(), asked)? {
        Some(cap) if asked.is_none() && r.cap(cap)? => Some(cap),
        _ => asked,
    };
    // 4. Request checks.
    let applied = r.guard(policy, ex, cached).await?;
    // 5. Cache. Boxed: the lookup's future (embedding, vector store) is tens
    // of kilobytes that every request's future would carry otherwise.
    let mut saver = None;
    if cached && let Some(chat) = r.cacheable() {
        match Box::pin(cache::begin(rt, ex, directive, chat, &applied)).await {
            // A hit calls no provider and costs no tokens: it is neither
            // routed nor admitted against the consumer's limits.
            Begin::Hit(hit) => {
                let wants_usage = r.wants_usage();
                let resp = cache::respond(hit, ex, stream, |answer| {
                    r.cached_body(answer, stream, wants_usage)
                });
                return Ok(Served::Whole(resp));
            }
            Begin::Go { status, saver: s } => {
                *cache_status = status;
                saver = s;
            }
        }
    }
    // 6. Plan (a run-time key's model allow-list first).
    if let Some(key) = &ex.key
        && !key.allows(r.model())
    {
        return Err(ApiError::ModelNotAllowed(r.model().to_owned()).into());
    }
    let router = plan::router(rt, &ex.route);
    let plan = plan::plan(rt, router, r.model(), r.prompt_chars(), max_output)?;
    r.prepare(&plan, &applied)?;
    // 7. Admission.
    admit(rt, ex, q, r.body(), r.model(), max_output).await?;
    // 8. Attempts.
    let client_model = r.client_model();
    ex.model = Some(client_model.clone());
    // Read before the attempts: a provider call asks for usage in the request.
    let wants_usage = r.wants_usage();
    let how = Attempt {
        stream,
        plain: !applied.reads_answers() && saver.is_none(),
    };
    let mut tries = Tries::new(router, &plan);
    loop {
        let target = tries.next(ex).await;
        // Pinned where it is made: a provider call's future is several
        // kilobytes, which passing it by value copied twice.
        let outcome = {
            let attempt = std::pin::pin!(async {
                Ok(match r.call(&target, how).await? {
                    Answer::Whole(reply) => Got::Whole(reply),
                    Answer::Stream(source) => Got::Stream(source.started().await?),
                })
            });
            failover::within(router, target.provider.name(), attempt).await
        };
        let got = match outcome {
            Ok(got) => got,
            Err(e) => match tries.failed(ex, target, e, &client_model, stream) {
                None => continue,
                Some(failed) => return Err(Stop::Failed(failed)),
            },
        };
        tries.succeeded(&target);
        // 9 and 10. The answer, settled.
        return match got {
            Got::Whole(reply) => {
                let Reply { body, usage } = *reply;
                let tokens = match &usage {
                    Some(u) => Tokens::reported(u),
                    None => Tokens::estimated(r.body(), &target.model, &answer_text(&body)),
                };
                settle(
                    ex,
                    &target.provider,
                    &client_model,
                    &target.model,
                    tries.called.elapsed(),
                    200,
                    Some(tokens),
                    Delivery::Whole,
                );
                let body = r.whole(body, &applied)?;
                if let Some(s) = saver.take()
                    && let Some(answer) = r.cache_answer(&body)
                {
                    let name = target.provider.name();
                    s.whole(answer, body.len(), name, &target.model, usage.as_ref());
                }
                let mut resp = json_response(StatusCode::OK, body);
                routing_headers(&mut resp, &target, tries.attempts);
                Ok(Served::Whole(resp))
            }
            Got::Stream(started) => {
                let encoder = r.encoder(&target, &started);
                let call = relay::Call {
                    provider: target.provider.clone(),
                    client_model,
                    provider_model: target.model.clone(),
                    called: tries.called,
                    wants_usage,
                    request: r.body().clone(),
                    recorder: saver.take().map(cache::Saver::recorder),
                };
                let relay = Relay::new(started, encoder, call, &applied);
                Ok(Served::Stream(Box::new(relay), target, tries.attempts))
            }
        };
    }
}

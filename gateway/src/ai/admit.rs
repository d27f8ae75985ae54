//! Admission: the gateway's token cap per request and the consumer's rate
//! and period limits, checked before any provider is called.

use bytes::Bytes;
use http::Response;
use http::header::{HeaderName, HeaderValue};
use loom_accounting::Admission;
use loom_guardrails::Guardrails;

use super::ApiError;
use super::settle::estimate_prompt;
use crate::runtime::body::Body;
use crate::runtime::exchange::Exchange;
use crate::runtime::state::Runtime;

/// `security.max_tokens_per_request`: a completion budget above the cap, or
/// a prompt of more tokens than the cap, is refused with 400. The prompt is
/// counted only when its body is longer than the cap (a token is at least a
/// byte, so a shorter body cannot exceed it).
pub(crate) fn token_cap(
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
pub(crate) fn uses_max_completion_tokens(model: &str) -> bool {
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
    pub fn apply(&self, resp: &mut Response<Body>) {
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

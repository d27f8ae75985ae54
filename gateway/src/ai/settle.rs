//! Settling a provider call: provider statistics and breakers, metrics,
//! and the consumer's tokens and cost, as the provider reported them or as
//! Loom counted them.

use loom_accounting::UsageRecord;
use loom_models::chat::Usage;
use loom_providers::Provider;

use crate::admin::metrics::AiOutcome;
use crate::runtime::exchange::Exchange;

/// Tokens of one call: as the provider reported them, or as Loom counted them.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Tokens {
    pub prompt: u64,
    pub completion: u64,
    pub cached: u64,
    /// Prompt tokens written to the provider's prompt cache.
    pub cache_write: u64,
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
            cache_write: loom_providers::cache_write_tokens(u),
            estimated: false,
        }
    }

    /// Counted by Loom: the request's prompt and the text generated so far.
    pub fn estimated(request: &[u8], model: &str, generated: &str) -> Tokens {
        Tokens {
            prompt: estimate_prompt(request, model),
            completion: loom_accounting::tokens::count(model, generated),
            cached: 0,
            cache_write: 0,
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
pub(crate) fn answer_text(body: &[u8]) -> String {
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
            cache_write_tokens: t.cache_write,
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

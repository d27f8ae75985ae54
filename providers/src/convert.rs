//! Pieces of the OpenAI request that every translating adapter reads the same
//! way, with the same error messages.

use loom_models::chat::ToolCall;
use serde_json::Value;

use crate::Error;

/// Where a chat message carries a model's reasoning, as the widespread
/// OpenAI-compatible servers put it, and the signature Anthropic needs to
/// take that reasoning back in a later turn.
pub const REASONING: &str = "reasoning_content";
pub const REASONING_SIGNATURE: &str = "reasoning_signature";

/// The media type and base64 data of a `data:` URL; `None` for any other URL.
/// `at` names the content part in errors (`messages[1].content[2]`).
pub(crate) fn data_url<'a>(url: &'a str, at: &str) -> Result<Option<(&'a str, &'a str)>, Error> {
    let Some(rest) = url.strip_prefix("data:") else {
        return Ok(None);
    };
    let (meta, data) = rest
        .split_once(',')
        .ok_or_else(|| Error::Unsupported(format!("{at}: malformed data URL")))?;
    let media_type = meta
        .strip_suffix(";base64")
        .ok_or_else(|| Error::Unsupported(format!("{at}: only base64 data URLs are supported")))?;
    Ok(Some((media_type, data)))
}

/// A tool call's arguments as JSON (an empty object when empty). `at` names
/// the call in errors (`messages[2].tool_calls[0]`).
pub(crate) fn tool_arguments(call: &ToolCall, at: &str) -> Result<Value, Error> {
    if call.function.arguments.trim().is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    serde_json::from_str(&call.function.arguments)
        .map_err(|e| Error::Unsupported(format!("{at}.function.arguments is not valid JSON: {e}")))
}

/// Seconds since the Unix epoch, for the `created` field of answers.
pub(crate) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What a translating provider does with the chat fields that only some
/// providers take (`logprobs`, `service_tier`, `store`, `modalities`, …).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Takes {
    /// The provider's name in error messages (`anthropic`, `gemini`).
    pub provider: &'static str,
    /// It returns token log probabilities (translated by the adapter).
    pub logprobs: bool,
}

/// Refuses, with a 400 naming the field, a chat field the provider cannot
/// honour in a way that changes what the client gets back: log
/// probabilities, audio output, a stored completion, a service tier it
/// has no equivalent for. Fields that only tune how an answer is made
/// (`prediction`, `metadata` without `store`) are left out by the
/// translation, as the answer is the same without them.
pub(crate) fn check_fields(
    req: &loom_models::chat::ChatRequest,
    takes: Takes,
) -> Result<(), Error> {
    let provider = takes.provider;
    let refuse = |field: &str, why: &str| {
        Err(Error::Unsupported(format!(
            "`{field}` is not supported by the {provider} provider: {why}"
        )))
    };
    if !takes.logprobs {
        if req.logprobs == Some(true) {
            return refuse("logprobs", "it returns no token log probabilities");
        }
        if req.top_logprobs.is_some_and(|n| n > 0) {
            return refuse("top_logprobs", "it returns no token log probabilities");
        }
    }
    if req.store == Some(true) {
        return refuse(
            "store",
            "it keeps no chat completions to retrieve later; leave `store` unset or false",
        );
    }
    if let Some(tier) = req.service_tier.as_deref()
        && !matches!(tier, "auto" | "default")
    {
        return refuse(
            "service_tier",
            "only `auto` and `default` have an equivalent there",
        );
    }
    if let Some(m) = req.extra.get("modalities")
        && m.as_array()
            .is_some_and(|m| m.iter().any(|v| v.as_str() != Some("text")))
    {
        return refuse("modalities", "it answers with text only");
    }
    if req.extra.get("audio").is_some_and(|a| !a.is_null()) {
        return refuse("audio", "it answers with text only");
    }
    Ok(())
}

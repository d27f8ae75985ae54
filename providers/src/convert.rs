//! Pieces of the OpenAI request that every translating adapter reads the same
//! way, with the same error messages.

use loom_models::chat::ToolCall;
use serde_json::Value;

use crate::Error;

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

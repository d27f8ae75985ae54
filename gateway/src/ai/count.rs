//! Token counting: Anthropic's `POST /v1/messages/count_tokens` (what
//! Claude Code calls to manage its context) and OpenAI's
//! `POST /v1/responses/input_tokens`.
//!
//! The model picks the provider as for a completion. A provider with the
//! endpoint of its own (Anthropic for the first, OpenAI and Azure OpenAI for
//! the second) answers, and its answer comes back as it is; for every other
//! provider, or when that call fails, Loom estimates the count locally with
//! the model's tokenizer and says so in `x-loom-token-count: estimated`.
//! Counting costs no tokens: nothing is accounted or limited here.

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Request, Response, StatusCode};
use loom_providers::{Adapter as _, CountApi};
use serde_json::Value;

use super::ingress::Ingress;
use super::ingress::messages::Messages;
use super::{ApiError, decode, read_json};
use crate::runtime::body::{Body, json_response};
use crate::runtime::exchange::Exchange;
use crate::runtime::state::Runtime;

/// Tokens counted for an image whose size Loom does not read: Anthropic's
/// largest image (about 1.15 megapixels at 750 pixels per token); OpenAI's
/// high-detail tiles of a 1024×1024 image come to 765.
const IMAGE_TOKENS: u64 = 1_600;

/// How a count was made, in `x-loom-token-count`.
const HOW: http::HeaderName = http::HeaderName::from_static("x-loom-token-count");

/// Serves one count request in `api`'s format.
pub(crate) async fn serve(
    rt: &Runtime,
    req: Request<Body>,
    limit: u64,
    api: CountApi,
    mut ex: Exchange,
) -> (Response<Body>, Option<Exchange>) {
    let resp = match count(rt, req, limit, api, &mut ex).await {
        Ok(resp) => resp,
        Err(err) => {
            ex.error = Some(err.label());
            match api {
                CountApi::Messages => Messages::render(err),
                CountApi::Responses => err.into_response(),
            }
        }
    };
    (resp, Some(ex))
}

async fn count(
    rt: &Runtime,
    req: Request<Body>,
    limit: u64,
    api: CountApi,
    ex: &mut Exchange,
) -> Result<Response<Body>, ApiError> {
    let body = read_json(req, limit).await?;
    let request: Value = decode(body.text())?;
    let Some(model) = request.get("model").and_then(Value::as_str) else {
        return Err(ApiError::invalid("`model` is required", Some("model")));
    };
    let target = rt
        .providers
        .candidates(model)
        .map_err(ApiError::from)?
        .into_iter()
        .next()
        .ok_or_else(|| {
            ApiError::from(loom_providers::Error::UnknownModel {
                model: model.to_owned(),
                available: String::new(),
            })
        })?;
    ex.model = Some(target.model.clone());
    ex.provider = Some(target.provider.shared_name().clone());
    let adapter = target.provider.adapter();
    let native = match api {
        CountApi::Messages => adapter.wire() == loom_providers::Wire::Anthropic,
        CountApi::Responses => adapter.serves_responses(),
    };
    if native {
        let sent = if *target.model == *model {
            body.bytes().clone()
        } else {
            let mut v = request.clone();
            v["model"] = Value::from(&*target.model);
            Bytes::from(serde_json::to_vec(&v).unwrap_or_default())
        };
        match adapter.count_tokens(api, sent).await {
            Ok(answer) => {
                let mut resp = json_response(StatusCode::OK, answer);
                resp.headers_mut()
                    .insert(HOW, HeaderValue::from_static("provider"));
                return Ok(resp);
            }
            // The provider's own verdict on the request stands.
            Err(e @ loom_providers::Error::Status { status, .. }) if status.is_client_error() => {
                return Err(ApiError::from(e));
            }
            Err(e) => {
                tracing::warn!(error = %e, "token count: the provider did not answer; estimating")
            }
        }
    }
    let tokens = estimate(&request, &target.model);
    let answer = match api {
        CountApi::Messages => serde_json::json!({"input_tokens": tokens}),
        CountApi::Responses => {
            serde_json::json!({"object": "response.input_tokens", "input_tokens": tokens})
        }
    };
    let mut resp = json_response(
        StatusCode::OK,
        serde_json::to_vec(&answer).unwrap_or_default(),
    );
    resp.headers_mut()
        .insert(HOW, HeaderValue::from_static("estimated"));
    Ok(resp)
}

/// The input tokens of a Messages or Responses request, estimated with
/// `model`'s tokenizer: every text (system prompt, instructions, messages,
/// tool results), every tool definition and tool call as its JSON, a fixed
/// cost per image, and the per-message overhead of chat formats.
pub(crate) fn estimate(request: &Value, model: &str) -> u64 {
    let mut texts: Vec<String> = Vec::new();
    let mut images = 0;
    for key in ["system", "instructions"] {
        if let Some(v) = request.get(key) {
            let mut t = String::new();
            gather(v, &mut t, &mut images);
            texts.push(t);
        }
    }
    let turns: Vec<&Value> = match request.get("input") {
        Some(text @ Value::String(_)) => vec![text],
        Some(Value::Array(items)) => items.iter().collect(),
        _ => request
            .get("messages")
            .and_then(Value::as_array)
            .map(|m| m.iter().collect())
            .unwrap_or_default(),
    };
    for turn in turns {
        let mut t = String::new();
        gather(turn, &mut t, &mut images);
        texts.push(t);
    }
    if let Some(tools) = request.get("tools").and_then(Value::as_array) {
        let mut t = String::new();
        for tool in tools {
            t.push_str(&tool.to_string());
        }
        texts.push(t);
    }
    loom_accounting::tokens::count_prompt(model, texts.iter().map(String::as_str))
        + images * IMAGE_TOKENS
}

/// The text of one turn: strings under text-bearing keys, tool calls and
/// their inputs as JSON; images counted apart.
fn gather(v: &Value, out: &mut String, images: &mut u64) {
    match v {
        Value::String(s) => {
            out.push_str(s);
            out.push('\n');
        }
        Value::Array(a) => a.iter().for_each(|x| gather(x, out, images)),
        Value::Object(o) => {
            let kind = o.get("type").and_then(Value::as_str).unwrap_or("");
            if matches!(
                kind,
                "image" | "input_image" | "image_url" | "document" | "input_file"
            ) {
                *images += 1;
                return;
            }
            for (k, x) in o {
                match k.as_str() {
                    "text" | "content" | "thinking" | "output" | "name" | "arguments"
                    | "summary" | "refusal" => gather(x, out, images),
                    // A tool call's input is sent as its JSON.
                    "input" if x.is_object() => out.push_str(&x.to_string()),
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_part_of_a_request_counts() {
        let base =
            json!({"model": "claude-x", "messages": [{"role": "user", "content": "Hello there"}]});
        let plain = estimate(&base, "claude-x");
        assert!(plain > 0);
        let mut with_system = base.clone();
        with_system["system"] = json!("You are a careful assistant who answers briefly.");
        assert!(estimate(&with_system, "claude-x") > plain);
        let mut with_tools = base.clone();
        with_tools["tools"] = json!([{"name": "get_weather", "description": "Weather for a city",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]);
        assert!(estimate(&with_tools, "claude-x") > plain + 10);
        let image = json!({"model": "claude-x", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "Hello there"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo"}}]}]});
        assert_eq!(estimate(&image, "claude-x"), plain + IMAGE_TOKENS);
        // The Responses shape counts the same text alike.
        let responses = json!({"model": "claude-x", "input": "Hello there"});
        assert_eq!(estimate(&responses, "claude-x"), plain);
    }
}

//! OpenAI chat request → Anthropic Messages request, and Anthropic response →
//! OpenAI chat response.

use loom_models::anthropic::{
    self as an, Block, ImageSource, MessageContent, MessagesRequest, MessagesResponse, System,
    ToolChoice,
};
use loom_models::chat::{
    ChatRequest, ChatResponse, Choice, Content, ContentPart, FunctionCall, Message,
    PromptTokensDetails, Role, Stop, ToolCall, Usage,
};
use serde_json::Value;

use crate::Error;

/// `max_tokens` sent when the client sets none: Anthropic requires one.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;

pub use crate::convert::{REASONING, REASONING_SIGNATURE};

/// Anthropic's thinking budget for an OpenAI reasoning effort (`none` and
/// `minimal` turn thinking off).
fn thinking_budget(effort: &str) -> Option<u64> {
    match effort {
        "low" => Some(1_024),
        "medium" => Some(4_096),
        "high" => Some(16_384),
        "xhigh" | "max" => Some(32_768),
        _ => None,
    }
}

/// The text and signature of a `thinking` block.
pub(crate) fn thinking_of(block: &Value) -> Option<(&str, Option<&str>)> {
    if block.get("type").and_then(Value::as_str) != Some("thinking") {
        return None;
    }
    let text = block.get("thinking").and_then(Value::as_str).unwrap_or("");
    Some((text, block.get("signature").and_then(Value::as_str)))
}

fn unsupported(what: impl Into<String>) -> Error {
    Error::Unsupported(what.into())
}

/// Translates a canonical chat request for the Messages API.
pub fn request(req: &ChatRequest, model: &str, stream: bool) -> Result<MessagesRequest, Error> {
    crate::convert::check_fields(
        req,
        crate::convert::Takes {
            provider: "anthropic",
            logprobs: false,
        },
    )?;
    if req.n.is_some_and(|n| n > 1) {
        return Err(unsupported(
            "The anthropic provider cannot return several choices: `n` must be 1",
        ));
    }
    if let Some(f) = &req.response_format
        && f.kind != "text"
    {
        return Err(unsupported(format!(
            "The anthropic provider does not support response_format `{}`",
            f.kind
        )));
    }
    let mut system: Vec<Block> = Vec::new();
    let mut messages: Vec<an::Message> = Vec::new();
    for (i, m) in req.messages.iter().enumerate() {
        let (role, blocks) = match m.role {
            Role::System | Role::Developer => {
                // Kept as blocks, so a cache marker on a system part (or
                // message) stays where the client put it.
                match &m.content {
                    Some(Content::Parts(parts)) => {
                        for p in parts.iter().filter(|p| p.kind == "text") {
                            system.push(Block::Text {
                                text: p.text.clone().unwrap_or_default(),
                                extra: cache_marker(&p.extra),
                            });
                        }
                    }
                    _ => system.push(Block::Text {
                        text: m.text(),
                        extra: cache_marker(&m.extra),
                    }),
                }
                continue;
            }
            Role::User => ("user", user_blocks(m, i)?),
            Role::Assistant => ("assistant", assistant_blocks(m, i)?),
            Role::Tool => ("user", vec![tool_result(m, i)?]),
            Role::Function => {
                return Err(unsupported(format!(
                    "messages[{i}]: the deprecated `function` role is not supported by the anthropic provider; use `tool`"
                )));
            }
        };
        // Consecutive turns of one role become one message: parallel tool
        // results must reach Anthropic together, after the tool_use turn.
        match messages.last_mut() {
            Some(last) if last.role == role => {
                if let MessageContent::Blocks(existing) = &mut last.content {
                    existing.extend(blocks);
                }
            }
            _ => messages.push(an::Message {
                role: role.to_owned(),
                content: MessageContent::Blocks(blocks),
            }),
        }
    }
    let tools = req.tools.as_ref().map(|tools| {
        tools
            .iter()
            .filter_map(|t| Some((t, t.function.as_ref()?)))
            .map(|(t, f)| an::Tool {
                name: f.name.clone(),
                description: f.description.clone(),
                input_schema: f
                    .parameters
                    .clone()
                    .unwrap_or_else(|| serde_json::json!({"type": "object", "properties": {}})),
                // On the tool, or on its function.
                extra: if t.extra.contains_key(CACHE_CONTROL) {
                    cache_marker(&t.extra)
                } else {
                    cache_marker(&f.extra)
                },
            })
            .collect::<Vec<_>>()
    });
    let mut tool_choice = match &req.tool_choice {
        None => None,
        Some(Value::String(s)) => match s.as_str() {
            "auto" => Some(choice("auto", None)),
            "required" => Some(choice("any", None)),
            "none" => Some(choice("none", None)),
            other => return Err(unsupported(format!("unknown tool_choice `{other}`"))),
        },
        Some(v) => match v.pointer("/function/name").and_then(Value::as_str) {
            Some(name) => Some(choice("tool", Some(name.to_owned()))),
            None => return Err(unsupported("tool_choice must name a function")),
        },
    };
    if req.parallel_tool_calls == Some(false) && tools.is_some() {
        let c = tool_choice.get_or_insert_with(|| choice("auto", None));
        c.disable_parallel_tool_use = Some(true);
    }
    let stop_sequences = req.stop.as_ref().map(|s| match s {
        Stop::One(s) => vec![s.clone()],
        Stop::Many(v) => v.clone(),
    });
    let mut max_tokens = req.max_output_tokens().unwrap_or(DEFAULT_MAX_TOKENS);
    let (mut temperature, mut top_p) = (req.temperature, req.top_p);
    let mut extra = serde_json::Map::new();
    // OpenAI's `default` tier is Anthropic's standard capacity only;
    // `auto` may use priority capacity where the account has it.
    match req.service_tier.as_deref() {
        Some("auto") => {
            extra.insert("service_tier".to_owned(), "auto".into());
        }
        Some("default") => {
            extra.insert("service_tier".to_owned(), "standard_only".into());
        }
        _ => {}
    }
    // Thinking: the client's own `thinking` (Anthropic's shape, passed in
    // the body), else its reasoning effort. It is left off where Anthropic
    // would refuse it: with a forced tool, or after an assistant tool turn
    // whose signed thinking the client did not send back.
    let forced = tool_choice
        .as_ref()
        .is_some_and(|c| c.kind == "any" || c.kind == "tool");
    let unsigned_tool_turn = req.messages.iter().any(|m| {
        m.role == Role::Assistant
            && m.tool_calls.as_ref().is_some_and(|c| !c.is_empty())
            && !m.extra.contains_key(REASONING_SIGNATURE)
    });
    let thinking = req.extra.get("thinking").cloned().or_else(|| {
        let budget = thinking_budget(req.reasoning_effort.as_deref()?)?;
        (!forced && !unsigned_tool_turn)
            .then(|| serde_json::json!({"type": "enabled", "budget_tokens": budget}))
    });
    if let Some(t) = thinking {
        // The budget is part of `max_tokens`: the answer keeps what the
        // client asked for on top of it.
        if let Some(budget) = t.get("budget_tokens").and_then(Value::as_u64)
            && max_tokens <= budget
        {
            max_tokens += budget;
        }
        // Anthropic takes no sampling settings with thinking on.
        (temperature, top_p) = (None, None);
        extra.insert("thinking".to_owned(), t);
    }
    Ok(MessagesRequest {
        model: model.to_owned(),
        max_tokens,
        messages,
        system: system_of(system),
        stop_sequences,
        temperature,
        top_p,
        top_k: None,
        stream: stream.then_some(true),
        tools,
        tool_choice,
        metadata: req.user.as_ref().map(|u| serde_json::json!({"user_id": u})),
        extra,
    })
}

/// The system prompt: one string, as before, unless a block carries a
/// cache marker (then the blocks as they are).
fn system_of(blocks: Vec<Block>) -> Option<System> {
    if blocks.is_empty() {
        return None;
    }
    let marked = blocks
        .iter()
        .any(|b| matches!(b, Block::Text { extra, .. } if !extra.is_empty()));
    if marked {
        return Some(System::Blocks(blocks));
    }
    let texts: Vec<String> = blocks
        .into_iter()
        .filter_map(|b| match b {
            Block::Text { text, .. } => Some(text),
            _ => None,
        })
        .collect();
    Some(System::Text(texts.join("\n\n")))
}

fn choice(kind: &str, name: Option<String>) -> ToolChoice {
    ToolChoice {
        kind: kind.to_owned(),
        name,
        disable_parallel_tool_use: None,
    }
}

fn text_block(text: String) -> Block {
    Block::Text {
        text,
        extra: Default::default(),
    }
}

fn user_blocks(m: &Message, i: usize) -> Result<Vec<Block>, Error> {
    match &m.content {
        None => Ok(Vec::new()),
        // A marker on the message itself goes on its (only) block.
        Some(Content::Text(t)) => Ok(vec![Block::Text {
            text: t.clone(),
            extra: cache_marker(&m.extra),
        }]),
        Some(Content::Parts(parts)) => parts
            .iter()
            .enumerate()
            .map(|(j, p)| part_block(p, i, j))
            .collect(),
    }
}

/// Anthropic's prompt-caching marker, where a client put it on a content
/// part, a message or a tool (the shape OpenAI-format clients of Claude use).
pub(crate) const CACHE_CONTROL: &str = "cache_control";

/// `extra` holding only the cache marker of `from`, if it has one.
pub(crate) fn cache_marker(from: &loom_models::Extra) -> loom_models::Extra {
    let mut extra = loom_models::Extra::new();
    if let Some(c) = from.get(CACHE_CONTROL) {
        extra.insert(CACHE_CONTROL.to_owned(), c.clone());
    }
    extra
}

fn part_block(p: &ContentPart, i: usize, j: usize) -> Result<Block, Error> {
    match p.kind.as_str() {
        "text" => Ok(Block::Text {
            text: p.text.clone().unwrap_or_default(),
            extra: cache_marker(&p.extra),
        }),
        "image_url" => {
            let url = p
                .image_url
                .as_ref()
                .map(|u| u.url.as_str())
                .ok_or_else(|| {
                    unsupported(format!("messages[{i}].content[{j}]: image_url has no url"))
                })?;
            let source =
                match crate::convert::data_url(url, &format!("messages[{i}].content[{j}]"))? {
                    Some((media_type, data)) => ImageSource::Base64 {
                        media_type: media_type.to_owned(),
                        data: data.to_owned(),
                    },
                    None => ImageSource::Url {
                        url: url.to_owned(),
                    },
                };
            Ok(Block::Image {
                source,
                extra: cache_marker(&p.extra),
            })
        }
        other => Err(unsupported(format!(
            "messages[{i}].content[{j}]: content type `{other}` is not supported by the anthropic provider"
        ))),
    }
}

fn assistant_blocks(m: &Message, i: usize) -> Result<Vec<Block>, Error> {
    let mut blocks = Vec::new();
    // Reasoning goes back only with Anthropic's signature on it (unsigned
    // thinking is refused); without one it is left out.
    if let (Some(text), Some(signature)) = (
        m.extra.get(REASONING).and_then(Value::as_str),
        m.extra.get(REASONING_SIGNATURE).and_then(Value::as_str),
    ) {
        blocks.push(Block::Other(serde_json::json!({
            "type": "thinking", "thinking": text, "signature": signature
        })));
    }
    let text = m.text();
    if !text.is_empty() {
        blocks.push(text_block(text));
    }
    for (j, call) in m.tool_calls.iter().flatten().enumerate() {
        let input =
            crate::convert::tool_arguments(call, &format!("messages[{i}].tool_calls[{j}]"))?;
        blocks.push(Block::ToolUse {
            id: call.id.clone(),
            name: call.function.name.clone(),
            input,
            extra: Default::default(),
        });
    }
    Ok(blocks)
}

fn tool_result(m: &Message, i: usize) -> Result<Block, Error> {
    let id = m
        .tool_call_id
        .clone()
        .ok_or_else(|| unsupported(format!("messages[{i}]: a tool message needs tool_call_id")))?;
    Ok(Block::ToolResult {
        tool_use_id: id,
        content: Some(MessageContent::Text(m.text())),
        is_error: None,
        extra: Default::default(),
    })
}

/// OpenAI's finish reason for an Anthropic stop reason.
pub fn finish_reason(stop: Option<&str>) -> Option<String> {
    stop.map(|s| {
        match s {
            "max_tokens" | "model_context_window_exceeded" => "length",
            "tool_use" => "tool_calls",
            "refusal" => "content_filter",
            _ => "stop", // end_turn, stop_sequence, pause_turn
        }
        .to_owned()
    })
}

/// OpenAI usage from Anthropic's: cache reads and writes count as prompt
/// tokens; the reads are `cached_tokens`, the writes `cache_write_tokens`
/// (the Responses API's name), priced apart.
pub fn usage(u: &an::Usage) -> Usage {
    let cache_read = u.cache_read_input_tokens.unwrap_or(0);
    let cache_write = u.cache_creation_input_tokens.unwrap_or(0);
    let prompt = u.input_tokens + cache_read + cache_write;
    let mut out = Usage::new(prompt, u.output_tokens);
    if u.cache_read_input_tokens.is_some() || cache_write > 0 {
        let mut details = PromptTokensDetails {
            cached_tokens: Some(cache_read),
            ..PromptTokensDetails::default()
        };
        if cache_write > 0 {
            details.extra.insert(
                crate::CACHE_WRITE_TOKENS.to_owned(),
                Value::from(cache_write),
            );
        }
        out.prompt_tokens_details = Some(details);
    }
    out
}

/// Translates a complete Messages response.
pub fn response(resp: MessagesResponse, created: u64) -> ChatResponse {
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    let (mut reasoning, mut signature) = (String::new(), None);
    for block in resp.content {
        match block {
            Block::Text { text: t, .. } => text.push_str(&t),
            Block::Other(v) => {
                if let Some((t, sig)) = thinking_of(&v) {
                    reasoning.push_str(t);
                    signature = sig.map(str::to_owned).or(signature);
                }
            }
            Block::ToolUse {
                id, name, input, ..
            } => tool_calls.push(ToolCall {
                id,
                kind: "function".to_owned(),
                function: FunctionCall {
                    name,
                    arguments: input.to_string(),
                },
                extra: Default::default(),
            }),
            _ => {}
        }
    }
    let mut message = Message {
        role: Role::Assistant,
        content: (!text.is_empty() || tool_calls.is_empty()).then_some(Content::Text(text)),
        tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
        ..Message::default()
    };
    if !reasoning.is_empty() {
        message
            .extra
            .insert(REASONING.to_owned(), Value::from(reasoning));
        if let Some(sig) = signature {
            message
                .extra
                .insert(REASONING_SIGNATURE.to_owned(), Value::from(sig));
        }
    }
    ChatResponse {
        id: resp.id,
        object: "chat.completion".to_owned(),
        created,
        model: resp.model,
        choices: vec![Choice {
            index: 0,
            message,
            finish_reason: finish_reason(resp.stop_reason.as_deref()).or(Some("stop".to_owned())),
            ..Choice::default()
        }],
        usage: Some(usage(&resp.usage)),
        ..ChatResponse::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn chat(body: Value) -> ChatRequest {
        serde_json::from_value(body).unwrap()
    }

    #[test]
    fn system_tools_images_and_tool_results() {
        let req = chat(json!({
            "model": "gpt-4",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": "Use metric units."},
                {"role": "user", "content": [
                    {"type": "text", "text": "Weather here?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.jpg"}}
                ]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Rome\"}"}}
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
                {"role": "tool", "tool_call_id": "call_2", "content": "24C"}
            ],
            "tools": [{"type": "function", "function": {"name": "weather", "description": "Weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
            "tool_choice": "required",
            "parallel_tool_calls": false,
            "stop": "END",
            "max_completion_tokens": 300,
            "temperature": 0.5,
            "user": "u-1"
        }));
        let out = serde_json::to_value(request(&req, "claude-3-opus", true).unwrap()).unwrap();
        assert_eq!(out["model"], "claude-3-opus");
        assert_eq!(out["max_tokens"], 300);
        assert_eq!(out["system"], "Be brief.\n\nUse metric units.");
        assert_eq!(out["stream"], true);
        assert_eq!(out["stop_sequences"], json!(["END"]));
        assert_eq!(out["metadata"], json!({"user_id": "u-1"}));
        assert_eq!(
            out["tool_choice"],
            json!({"type": "any", "disable_parallel_tool_use": true})
        );
        assert_eq!(
            out["tools"][0]["input_schema"]["properties"]["city"]["type"],
            "string"
        );
        let msgs = out["messages"].as_array().unwrap();
        assert_eq!(msgs.len(), 3, "{msgs:?}");
        assert_eq!(
            msgs[0]["content"][1],
            json!({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}})
        );
        assert_eq!(
            msgs[0]["content"][2]["source"],
            json!({"type": "url", "url": "https://example.com/a.jpg"})
        );
        assert_eq!(
            msgs[1]["content"][1],
            json!({"type": "tool_use", "id": "call_2", "name": "weather", "input": {"city": "Rome"}})
        );
        // Both tool results in one user turn.
        assert_eq!(msgs[2]["role"], "user");
        assert_eq!(msgs[2]["content"].as_array().unwrap().len(), 2);
        assert_eq!(
            msgs[2]["content"][0],
            json!({"type": "tool_result", "tool_use_id": "call_1", "content": "18C"})
        );
    }

    #[test]
    fn refuses_what_anthropic_cannot_do() {
        let base = json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
        let mut n = base.clone();
        n["n"] = json!(2);
        assert!(matches!(
            request(&chat(n), "m", false),
            Err(Error::Unsupported(_))
        ));
        let mut rf = base.clone();
        rf["response_format"] = json!({"type": "json_object"});
        assert!(matches!(
            request(&chat(rf), "m", false),
            Err(Error::Unsupported(_))
        ));
        let bad_args = json!({"model": "m", "messages": [{"role": "assistant", "tool_calls": [{"id": "a", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]}]});
        assert!(matches!(
            request(&chat(bad_args), "m", false),
            Err(Error::Unsupported(_))
        ));
        let req = request(&chat(base), "m", false).unwrap();
        assert_eq!(req.max_tokens, DEFAULT_MAX_TOKENS);
        assert_eq!(req.stream, None);
    }

    #[test]
    fn optional_chat_fields_are_translated_dropped_or_refused_by_name() {
        let base = json!({"model": "m", "messages": [{"role": "user", "content": "x"}]});
        let with = |k: &str, v: Value| {
            let mut b = base.clone();
            b[k] = v;
            request(&chat(b), "m", false)
        };
        for (field, value) in [
            ("logprobs", json!(true)),
            ("top_logprobs", json!(3)),
            ("store", json!(true)),
            ("service_tier", json!("flex")),
            ("modalities", json!(["text", "audio"])),
            ("audio", json!({"voice": "alloy", "format": "wav"})),
        ] {
            match with(field, value) {
                Err(Error::Unsupported(m)) => {
                    assert!(m.contains(&format!("`{field}`")), "{field}: {m}")
                }
                other => panic!("{field}: {other:?}"),
            }
        }
        let tier = |t: &str| {
            serde_json::to_value(with("service_tier", json!(t)).unwrap()).unwrap()["service_tier"]
                .clone()
        };
        assert_eq!(tier("auto"), "auto");
        assert_eq!(tier("default"), "standard_only");
        // Hints that leave the answer the same are not sent.
        for (field, value) in [
            (
                "prediction",
                json!({"type": "content", "content": "fn main() {}"}),
            ),
            ("metadata", json!({"app": "x"})),
            ("store", json!(false)),
            ("logprobs", json!(false)),
            ("modalities", json!(["text"])),
        ] {
            let out = serde_json::to_value(with(field, value).unwrap()).unwrap();
            assert!(out.get(field).is_none(), "{field} sent: {out}");
        }
    }

    #[test]
    fn response_maps_text_tools_finish_and_usage() {
        let resp: MessagesResponse = serde_json::from_value(json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-3-opus-20240229",
            "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 100, "output_tokens": 20, "cache_read_input_tokens": 30, "cache_creation_input_tokens": 5}
        }))
        .unwrap();
        let out = response(resp, 7);
        let c = &out.choices[0];
        assert_eq!(c.finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(c.message.text(), "Checking.");
        let call = &c.message.tool_calls.as_ref().unwrap()[0];
        assert_eq!(call.id, "toolu_1");
        assert_eq!(
            serde_json::from_str::<Value>(&call.function.arguments).unwrap(),
            json!({"city": "Paris"})
        );
        let u = out.usage.unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (135, 20, 155)
        );
        assert_eq!(u.prompt_tokens_details.unwrap().cached_tokens, Some(30));
        assert_eq!(out.model, "claude-3-opus-20240229");
    }

    #[test]
    fn reasoning_effort_turns_thinking_on_where_anthropic_takes_it() {
        let req = chat(
            json!({"model": "m", "messages": [{"role": "user", "content": "Why?"}],
            "reasoning_effort": "medium", "temperature": 0.2, "max_tokens": 1000}),
        );
        let out = serde_json::to_value(request(&req, "claude", false).unwrap()).unwrap();
        assert_eq!(
            out["thinking"],
            json!({"type": "enabled", "budget_tokens": 4096})
        );
        assert_eq!(
            out["max_tokens"], 5096,
            "the answer keeps its 1,000 on top of the budget"
        );
        assert!(out.get("temperature").is_none());
        // A forced tool, or a tool turn sent back without its signed
        // thinking: thinking stays off rather than the request refused.
        let forced = chat(
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
            "reasoning_effort": "high", "tools": [{"type": "function", "function": {"name": "f"}}],
            "tool_choice": "required"}),
        );
        assert!(
            serde_json::to_value(request(&forced, "c", false).unwrap())
                .unwrap()
                .get("thinking")
                .is_none()
        );
        let unsigned = chat(
            json!({"model": "m", "reasoning_effort": "low", "messages": [
            {"role": "user", "content": "x"},
            {"role": "assistant", "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "t1", "content": "1"}]}),
        );
        assert!(
            serde_json::to_value(request(&unsigned, "c", false).unwrap())
                .unwrap()
                .get("thinking")
                .is_none()
        );
        // Signed reasoning goes back as the turn's first block.
        let signed = chat(
            json!({"model": "m", "reasoning_effort": "low", "messages": [
            {"role": "user", "content": "x"},
            {"role": "assistant", "reasoning_content": "Need f.", "reasoning_signature": "sig1",
             "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "t1", "content": "1"}]}),
        );
        let out = serde_json::to_value(request(&signed, "c", false).unwrap()).unwrap();
        assert_eq!(out["thinking"]["type"], "enabled");
        assert_eq!(
            out["messages"][1]["content"][0],
            json!({"type": "thinking", "thinking": "Need f.", "signature": "sig1"})
        );
    }

    #[test]
    fn thinking_blocks_become_reasoning_content_with_their_signature() {
        let resp: MessagesResponse = serde_json::from_value(json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
            "content": [{"type": "thinking", "thinking": "Let me think.", "signature": "EqQBCg"},
                        {"type": "redacted_thinking", "data": "xyz"},
                        {"type": "text", "text": "42"}],
            "stop_reason": "end_turn", "usage": {"input_tokens": 10, "output_tokens": 30}
        }))
        .unwrap();
        let chat = response(resp, 1);
        let m = &chat.choices[0].message;
        assert_eq!(m.text(), "42");
        assert_eq!(m.extra[REASONING], "Let me think.");
        assert_eq!(m.extra[REASONING_SIGNATURE], "EqQBCg");
    }

    #[test]
    fn openai_format_cache_markers_reach_anthropic() {
        let eph = json!({"type": "ephemeral", "ttl": "1h"});
        let req = chat(json!({"model": "m", "messages": [
            {"role": "system", "content": [{"type": "text", "text": "Rules.", "cache_control": eph}]},
            {"role": "user", "content": "Doc", "cache_control": eph},
            {"role": "user", "content": [{"type": "text", "text": "Q", "cache_control": eph}]}],
            "tools": [{"type": "function", "function": {"name": "f"}, "cache_control": eph}]}));
        let out = serde_json::to_value(request(&req, "claude", false).unwrap()).unwrap();
        assert_eq!(out["system"][0]["cache_control"], eph);
        assert_eq!(out["messages"][0]["content"][0]["cache_control"], eph);
        assert_eq!(out["messages"][0]["content"][1]["cache_control"], eph);
        assert_eq!(out["tools"][0]["cache_control"], eph);
        // Without markers the system prompt stays one string.
        let plain = chat(
            json!({"model": "m", "messages": [{"role": "system", "content": "A"}, {"role": "user", "content": "B"}]}),
        );
        assert_eq!(
            serde_json::to_value(request(&plain, "c", false).unwrap()).unwrap()["system"],
            "A"
        );
    }

    #[test]
    fn cache_reads_and_writes_are_reported_apart() {
        let u: an::Usage = serde_json::from_value(json!({"input_tokens": 10,
            "cache_creation_input_tokens": 1000, "cache_read_input_tokens": 2000, "output_tokens": 50})).unwrap();
        let out = usage(&u);
        assert_eq!(out.prompt_tokens, 3010);
        assert_eq!(
            out.prompt_tokens_details.as_ref().unwrap().cached_tokens,
            Some(2000)
        );
        assert_eq!(crate::cache_write_tokens(&out), 1000);
    }
}

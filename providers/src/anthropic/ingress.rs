//! The other direction: Anthropic Messages requests, as the Anthropic SDK
//! sends them to Loom's `/v1/messages`, become canonical chat requests, and
//! canonical answers and chunks become Anthropic messages and stream events.

use bytes::{BufMut, BytesMut};
use loom_models::anthropic::{
    Block, MessageContent, MessagesRequest, MessagesResponse, System, Usage as AnUsage,
};
use loom_models::chat::{
    ChatChunk, ChatRequest, ChatResponse, Content, ContentPart, FunctionCall, FunctionDef,
    ImageUrl, Message, Role, Stop, StreamOptions, Tool, ToolCall, Usage,
};
use serde_json::{Value, json};

use crate::Error;
use crate::anthropic::translate::{CACHE_CONTROL, cache_marker};

fn text_of(content: &Option<MessageContent>) -> String {
    match content {
        None => String::new(),
        Some(MessageContent::Text(t)) => t.clone(),
        Some(MessageContent::Blocks(blocks)) => blocks
            .iter()
            .filter_map(|b| match b {
                Block::Text { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("\n"),
    }
}

/// Translates an Anthropic request into a canonical one.
pub fn to_chat(req: &MessagesRequest) -> Result<ChatRequest, Error> {
    let mut messages = Vec::new();
    match &req.system {
        Some(System::Text(t)) => messages.push(plain(Role::System, t.clone())),
        // Cache markers on system blocks are kept (as parts), so that a
        // translated request to an Anthropic provider still caches there.
        Some(System::Blocks(blocks))
            if blocks.iter().any(
                |b| matches!(b, Block::Text { extra, .. } if extra.contains_key(CACHE_CONTROL)),
            ) =>
        {
            let parts = blocks
                .iter()
                .filter_map(|b| match b {
                    Block::Text { text, extra } => Some(ContentPart {
                        kind: "text".to_owned(),
                        text: Some(text.clone()),
                        extra: cache_marker(extra),
                        ..ContentPart::default()
                    }),
                    _ => None,
                })
                .collect();
            messages.push(Message {
                role: Role::System,
                content: Some(Content::Parts(parts)),
                ..Message::default()
            });
        }
        Some(System::Blocks(blocks)) => messages.push(plain(
            Role::System,
            text_of(&Some(MessageContent::Blocks(blocks.clone()))),
        )),
        None => {}
    }
    for (i, m) in req.messages.iter().enumerate() {
        let blocks = match &m.content {
            MessageContent::Text(t) => {
                let role = if m.role == "assistant" {
                    Role::Assistant
                } else {
                    Role::User
                };
                messages.push(plain(role, t.clone()));
                continue;
            }
            MessageContent::Blocks(b) => b,
        };
        if m.role == "assistant" {
            let mut text = String::new();
            let mut calls = Vec::new();
            for b in blocks {
                match b {
                    Block::Text { text: t, .. } => text.push_str(t),
                    Block::ToolUse {
                        id, name, input, ..
                    } => calls.push(ToolCall {
                        id: id.clone(),
                        kind: "function".to_owned(),
                        function: FunctionCall {
                            name: name.clone(),
                            arguments: input.to_string(),
                        },
                        extra: Default::default(),
                    }),
                    _ => {}
                }
            }
            messages.push(Message {
                role: Role::Assistant,
                content: (!text.is_empty()).then_some(Content::Text(text)),
                tool_calls: (!calls.is_empty()).then_some(calls),
                ..Message::default()
            });
            continue;
        }
        // A user turn: tool results become `tool` messages (first, as OpenAI
        // expects them right after the assistant turn), the rest one user message.
        let mut parts = Vec::new();
        for (j, b) in blocks.iter().enumerate() {
            match b {
                Block::ToolResult {
                    tool_use_id,
                    content,
                    ..
                } => messages.push(Message {
                    role: Role::Tool,
                    tool_call_id: Some(tool_use_id.clone()),
                    content: Some(Content::Text(text_of(content))),
                    ..Message::default()
                }),
                Block::Text { text, extra } => parts.push(ContentPart {
                    kind: "text".to_owned(),
                    text: Some(text.clone()),
                    extra: cache_marker(extra),
                    ..ContentPart::default()
                }),
                Block::Image { source, .. } => {
                    let url = match source {
                        loom_models::anthropic::ImageSource::Base64 { media_type, data } => {
                            format!("data:{media_type};base64,{data}")
                        }
                        loom_models::anthropic::ImageSource::Url { url } => url.clone(),
                    };
                    parts.push(ContentPart {
                        kind: "image_url".to_owned(),
                        image_url: Some(ImageUrl {
                            url,
                            ..ImageUrl::default()
                        }),
                        ..ContentPart::default()
                    });
                }
                Block::ToolUse { .. } | Block::Other(_) => {
                    return Err(Error::Unsupported(format!(
                        "messages[{i}].content[{j}]: this block type cannot be translated for a non-Anthropic provider"
                    )));
                }
            }
        }
        if !parts.is_empty() {
            messages.push(Message {
                role: Role::User,
                content: Some(Content::Parts(parts)),
                ..Message::default()
            });
        }
    }
    let tools = req.tools.as_ref().map(|tools| {
        tools
            .iter()
            .map(|t| Tool {
                kind: "function".to_owned(),
                function: Some(FunctionDef {
                    name: t.name.clone(),
                    description: t.description.clone(),
                    parameters: Some(t.input_schema.clone()),
                    ..FunctionDef::default()
                }),
                extra: cache_marker(&t.extra),
            })
            .collect()
    });
    let tool_choice = req.tool_choice.as_ref().map(|c| match c.kind.as_str() {
        "any" => json!("required"),
        "none" => json!("none"),
        "tool" => {
            json!({"type": "function", "function": {"name": c.name.clone().unwrap_or_default()}})
        }
        _ => json!("auto"),
    });
    let parallel = req
        .tool_choice
        .as_ref()
        .and_then(|c| c.disable_parallel_tool_use)
        .map(|disabled| !disabled);
    let stream = req.stream.unwrap_or(false);
    // Thinking asked for in Anthropic's terms, as an effort: thinking
    // blocks in the client's history were left out above (another
    // provider cannot take them; the text around them stays).
    let reasoning_effort = req
        .extra
        .get("thinking")
        .filter(|t| t.get("type").and_then(Value::as_str) == Some("enabled"))
        .map(|t| {
            match t.get("budget_tokens").and_then(Value::as_u64).unwrap_or(0) {
                0..=2_048 => "low",
                2_049..=8_192 => "medium",
                _ => "high",
            }
            .to_owned()
        });
    Ok(ChatRequest {
        model: req.model.clone(),
        messages,
        reasoning_effort,
        stream: stream.then_some(true),
        stream_options: stream.then(|| StreamOptions {
            include_usage: Some(true),
            ..StreamOptions::default()
        }),
        temperature: req.temperature,
        top_p: req.top_p,
        stop: req.stop_sequences.clone().map(Stop::Many),
        max_tokens: Some(req.max_tokens),
        tools,
        tool_choice,
        parallel_tool_calls: parallel,
        user: req
            .metadata
            .as_ref()
            .and_then(|m| m.get("user_id"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        ..ChatRequest::default()
    })
}

fn plain(role: Role, text: String) -> Message {
    Message {
        role,
        content: Some(Content::Text(text)),
        ..Message::default()
    }
}

/// Anthropic's stop reason for an OpenAI finish reason.
fn stop_reason(finish: Option<&str>) -> &'static str {
    match finish {
        Some("length") => "max_tokens",
        Some("tool_calls" | "function_call") => "tool_use",
        Some("content_filter") => "refusal",
        _ => "end_turn",
    }
}

fn an_usage(u: Option<&Usage>) -> AnUsage {
    let u = u.cloned().unwrap_or_default();
    let cached = u
        .prompt_tokens_details
        .as_ref()
        .and_then(|d| d.cached_tokens);
    let written = crate::cache_write_tokens(&u);
    AnUsage {
        input_tokens: u
            .prompt_tokens
            .saturating_sub(cached.unwrap_or(0))
            .saturating_sub(written),
        output_tokens: u.completion_tokens,
        cache_read_input_tokens: cached,
        cache_creation_input_tokens: (written > 0).then_some(written),
        ..AnUsage::default()
    }
}

fn message_id(id: &str) -> String {
    if id.starts_with("msg_") {
        id.to_owned()
    } else {
        format!("msg_{id}")
    }
}

/// Translates a canonical answer into an Anthropic message.
pub fn from_chat(resp: &ChatResponse) -> MessagesResponse {
    let choice = resp.choices.first();
    let mut content = Vec::new();
    if let Some(c) = choice {
        let text = c.message.text();
        if !text.is_empty() {
            content.push(Block::Text {
                text,
                extra: Default::default(),
            });
        }
        for call in c.message.tool_calls.iter().flatten() {
            content.push(Block::ToolUse {
                id: call.id.clone(),
                name: call.function.name.clone(),
                input: serde_json::from_str(&call.function.arguments).unwrap_or_else(|_| json!({})),
                extra: Default::default(),
            });
        }
    }
    MessagesResponse {
        id: message_id(&resp.id),
        kind: "message".to_owned(),
        role: "assistant".to_owned(),
        model: resp.model.clone(),
        content,
        stop_reason: Some(stop_reason(choice.and_then(|c| c.finish_reason.as_deref())).to_owned()),
        stop_sequence: None,
        usage: an_usage(resp.usage.as_ref()),
        extra: Default::default(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Open {
    None,
    Text,
    Tool,
}

/// Turns canonical chunks into Anthropic stream events, written as SSE.
#[derive(Debug)]
pub struct EventEncoder {
    started: bool,
    open: Open,
    /// Index of the next content block.
    next_block: u32,
    finish: Option<String>,
    usage: Option<Usage>,
    model: String,
}

impl EventEncoder {
    /// An encoder for a stream answering `model`.
    pub fn new(model: &str) -> EventEncoder {
        EventEncoder {
            started: false,
            open: Open::None,
            next_block: 0,
            finish: None,
            usage: None,
            model: model.to_owned(),
        }
    }

    fn event(out: &mut BytesMut, name: &str, data: &Value) {
        out.put_slice(b"event: ");
        out.put_slice(name.as_bytes());
        out.put_slice(b"\ndata: ");
        out.put_slice(data.to_string().as_bytes());
        out.put_slice(b"\n\n");
    }

    fn close_block(&mut self, out: &mut BytesMut) {
        if self.open != Open::None {
            Self::event(
                out,
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": self.next_block - 1}),
            );
            self.open = Open::None;
        }
    }

    /// Writes the events one chunk becomes.
    pub fn on_chunk(&mut self, chunk: &ChatChunk, out: &mut BytesMut) {
        if !self.started {
            self.started = true;
            if !chunk.model.is_empty() {
                self.model.clone_from(&chunk.model);
            }
            Self::event(
                out,
                "message_start",
                &json!({"type": "message_start", "message": {
                    "id": message_id(&chunk.id), "type": "message", "role": "assistant", "content": [],
                    "model": self.model, "stop_reason": null, "stop_sequence": null,
                    "usage": {"input_tokens": 0, "output_tokens": 0}
                }}),
            );
        }
        if let Some(u) = &chunk.usage {
            self.usage = Some(u.clone());
        }
        let Some(choice) = chunk.choices.first() else {
            return;
        };
        if let Some(text) = choice.delta.content.as_deref().filter(|t| !t.is_empty()) {
            if self.open != Open::Text {
                self.close_block(out);
                Self::event(
                    out,
                    "content_block_start",
                    &json!({"type": "content_block_start", "index": self.next_block, "content_block": {"type": "text", "text": ""}}),
                );
                self.next_block += 1;
                self.open = Open::Text;
            }
            Self::event(
                out,
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": self.next_block - 1, "delta": {"type": "text_delta", "text": text}}),
            );
        }
        for call in choice.delta.tool_calls.iter().flatten() {
            let function = call.function.as_ref();
            if let Some(id) = &call.id {
                self.close_block(out);
                let name = function.and_then(|f| f.name.clone()).unwrap_or_default();
                Self::event(
                    out,
                    "content_block_start",
                    &json!({"type": "content_block_start", "index": self.next_block, "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}),
                );
                self.next_block += 1;
                self.open = Open::Tool;
            }
            if let Some(args) = function
                .and_then(|f| f.arguments.as_deref())
                .filter(|a| !a.is_empty())
                && self.open == Open::Tool
            {
                Self::event(
                    out,
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": self.next_block - 1, "delta": {"type": "input_json_delta", "partial_json": args}}),
                );
            }
        }
        if let Some(f) = &choice.finish_reason {
            self.finish = Some(f.clone());
        }
    }

    /// Writes the closing events.
    pub fn finish(&mut self, out: &mut BytesMut) {
        self.close_block(out);
        let usage = an_usage(self.usage.as_ref());
        Self::event(
            out,
            "message_delta",
            &json!({"type": "message_delta",
            "delta": {"stop_reason": stop_reason(self.finish.as_deref()), "stop_sequence": null},
            "usage": {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens}}),
        );
        Self::event(out, "message_stop", &json!({"type": "message_stop"}));
    }
}

/// Anthropic's error type for an HTTP status.
pub fn error_type(status: u16) -> &'static str {
    match status {
        400 | 415 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

/// An Anthropic error body.
pub fn error_body(status: u16, message: &str) -> Value {
    json!({"type": "error", "error": {"type": error_type(status), "message": message}})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips_through_the_openai_shape() {
        let req: MessagesRequest = serde_json::from_value(json!({
            "model": "gpt-4o", "max_tokens": 256,
            "system": [{"type": "text", "text": "Be brief."}],
            "messages": [
                {"role": "user", "content": "Weather?"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "w", "input": {"c": "P"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"}, {"type": "text", "text": "thanks"}]}
            ],
            "tools": [{"name": "w", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "stop_sequences": ["END"], "stream": true, "metadata": {"user_id": "u1"}
        }))
        .unwrap();
        let chat = to_chat(&req).unwrap();
        let v = serde_json::to_value(&chat).unwrap();
        assert_eq!(
            v["messages"][0],
            json!({"role": "system", "content": "Be brief."})
        );
        assert_eq!(
            v["messages"][2]["tool_calls"][0]["function"],
            json!({"name": "w", "arguments": "{\"c\":\"P\"}"})
        );
        assert_eq!(
            v["messages"][3],
            json!({"role": "tool", "tool_call_id": "toolu_1", "content": "18C"})
        );
        assert_eq!(v["messages"][4]["content"][0]["text"], "thanks");
        assert_eq!(v["tool_choice"], "required");
        assert_eq!(v["parallel_tool_calls"], false);
        assert_eq!(v["stream_options"], json!({"include_usage": true}));
        assert_eq!(v["user"], "u1");
        assert_eq!(v["max_tokens"], 256);
    }

    #[test]
    fn chunks_become_events() {
        let chunks: Vec<ChatChunk> = [
            json!({"id": "c1", "model": "gpt-4o", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}),
            json!({"id": "c1", "model": "gpt-4o", "choices": [{"index": 0, "delta": {"content": "Hi"}}]}),
            json!({"id": "c1", "model": "gpt-4o", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "w", "arguments": ""}}]}}]}),
            json!({"id": "c1", "model": "gpt-4o", "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{\"c\":1}"}}]}}]}),
            json!({"id": "c1", "model": "gpt-4o", "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
            json!({"id": "c1", "model": "gpt-4o", "choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 4, "total_tokens": 14}}),
        ]
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect();
        let mut enc = EventEncoder::new("gpt-4o");
        let mut out = BytesMut::new();
        for c in &chunks {
            enc.on_chunk(c, &mut out);
        }
        enc.finish(&mut out);
        let text = String::from_utf8(out.to_vec()).unwrap();
        let names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("event: "))
            .collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert!(text.contains(r#""stop_reason":"tool_use""#));
        assert!(text.contains(r#""output_tokens":4"#));
        assert!(text.contains(r#""partial_json":"{\"c\":1}""#));
    }

    #[test]
    fn thinking_becomes_an_effort_and_its_blocks_are_left_out() {
        let req: MessagesRequest = serde_json::from_value(json!({
            "model": "gpt-4o", "max_tokens": 2000,
            "thinking": {"type": "enabled", "budget_tokens": 6000},
            "messages": [
                {"role": "user", "content": "Why?"},
                {"role": "assistant", "content": [{"type": "thinking", "thinking": "hmm", "signature": "s"},
                    {"type": "redacted_thinking", "data": "x"}, {"type": "text", "text": "Because."}]},
                {"role": "user", "content": "And?"}
            ]
        }))
        .unwrap();
        let chat = to_chat(&req).expect("no 400 for thinking blocks");
        assert_eq!(chat.reasoning_effort.as_deref(), Some("medium"));
        assert_eq!(chat.messages[1].text(), "Because.");
    }

    #[test]
    fn cache_markers_survive_the_canonical_shape_to_anthropic() {
        let eph = json!({"type": "ephemeral"});
        let req: MessagesRequest = serde_json::from_value(json!({
            "model": "claude", "max_tokens": 100,
            "system": [{"type": "text", "text": "Long instructions.", "cache_control": eph},
                       {"type": "text", "text": "Short."}],
            "tools": [{"name": "f", "input_schema": {"type": "object"}, "cache_control": eph}],
            "messages": [{"role": "user", "content": [
                {"type": "text", "text": "A long document.", "cache_control": eph},
                {"type": "text", "text": "Question?"}]}]
        }))
        .unwrap();
        let chat = to_chat(&req).unwrap();
        let back = serde_json::to_value(
            crate::anthropic::translate::request(&chat, "claude", false).unwrap(),
        )
        .unwrap();
        assert_eq!(
            back["system"][0],
            json!({"type": "text", "text": "Long instructions.", "cache_control": eph})
        );
        assert_eq!(back["system"][1], json!({"type": "text", "text": "Short."}));
        assert_eq!(back["tools"][0]["cache_control"], eph);
        assert_eq!(back["messages"][0]["content"][0]["cache_control"], eph);
        assert!(
            back["messages"][0]["content"][1]
                .get("cache_control")
                .is_none()
        );
    }
}

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

fn unsupported(what: impl Into<String>) -> Error {
    Error::Unsupported(what.into())
}

/// Translates a canonical chat request for the Messages API.
pub fn request(req: &ChatRequest, model: &str, stream: bool) -> Result<MessagesRequest, Error> {
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
    let mut system: Vec<String> = Vec::new();
    let mut messages: Vec<an::Message> = Vec::new();
    for (i, m) in req.messages.iter().enumerate() {
        let (role, blocks) = match m.role {
            Role::System | Role::Developer => {
                system.push(m.text());
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
            .filter_map(|t| t.function.as_ref())
            .map(|f| an::Tool {
                name: f.name.clone(),
                description: f.description.clone(),
                input_schema: f
                    .parameters
                    .clone()
                    .unwrap_or_else(|| serde_json::json!({"type": "object", "properties": {}})),
                ..an::Tool::default()
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
    Ok(MessagesRequest {
        model: model.to_owned(),
        max_tokens: req.max_output_tokens().unwrap_or(DEFAULT_MAX_TOKENS),
        messages,
        system: (!system.is_empty()).then(|| System::Text(system.join("\n\n"))),
        stop_sequences,
        temperature: req.temperature,
        top_p: req.top_p,
        top_k: None,
        stream: stream.then_some(true),
        tools,
        tool_choice,
        metadata: req.user.as_ref().map(|u| serde_json::json!({"user_id": u})),
        extra: Default::default(),
    })
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
        Some(Content::Text(t)) => Ok(vec![text_block(t.clone())]),
        Some(Content::Parts(parts)) => parts
            .iter()
            .enumerate()
            .map(|(j, p)| part_block(p, i, j))
            .collect(),
    }
}

fn part_block(p: &ContentPart, i: usize, j: usize) -> Result<Block, Error> {
    match p.kind.as_str() {
        "text" => Ok(text_block(p.text.clone().unwrap_or_default())),
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
                extra: Default::default(),
            })
        }
        other => Err(unsupported(format!(
            "messages[{i}].content[{j}]: content type `{other}` is not supported by the anthropic provider"
        ))),
    }
}

fn assistant_blocks(m: &Message, i: usize) -> Result<Vec<Block>, Error> {
    let mut blocks = Vec::new();
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

/// OpenAI usage from Anthropic's: cache reads and writes count as prompt tokens.
pub fn usage(u: &an::Usage) -> Usage {
    let cache_read = u.cache_read_input_tokens.unwrap_or(0);
    let prompt = u.input_tokens + cache_read + u.cache_creation_input_tokens.unwrap_or(0);
    let mut out = Usage::new(prompt, u.output_tokens);
    if u.cache_read_input_tokens.is_some() {
        out.prompt_tokens_details = Some(PromptTokensDetails {
            cached_tokens: Some(cache_read),
            ..PromptTokensDetails::default()
        });
    }
    out
}

/// Translates a complete Messages response.
pub fn response(resp: MessagesResponse, created: u64) -> ChatResponse {
    let mut text = String::new();
    let mut tool_calls = Vec::new();
    for block in resp.content {
        match block {
            Block::Text { text: t, .. } => text.push_str(&t),
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
    let message = Message {
        role: Role::Assistant,
        content: (!text.is_empty() || tool_calls.is_empty()).then_some(Content::Text(text)),
        tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
        ..Message::default()
    };
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
}

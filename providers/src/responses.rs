//! OpenAI's Responses API over any provider: requests to `/v1/responses`
//! become canonical chat requests, and canonical answers and chunks become
//! Responses objects and their typed stream events.
//!
//! The event order follows OpenAI's (checked against the `openai` SDK's
//! stream accumulator and the OpenAI Agents SDK with the fixtures in
//! `tests/e2e/fixtures/responses/`): `response.created`,
//! `response.in_progress`, then per output item `output_item.added`, its
//! parts and deltas, their `.done` events and `output_item.done`, and a
//! terminal `response.completed` (or `response.incomplete`, or
//! `response.failed` after an `error` event). Every event carries its
//! `sequence_number`; there is no `[DONE]`.

use bytes::{BufMut, Bytes, BytesMut};
use eventsource_stream::Eventsource;
use futures_util::{Stream, StreamExt};
use loom_models::chat::{
    ChatChunk, ChatRequest, ChatResponse, Choice, Content, ContentPart, FunctionCall, FunctionDef,
    ImageUrl, Message, ResponseFormat, Role, StreamOptions, Tool, ToolCall, Usage,
};
use loom_models::chat::{CompletionTokensDetails, PromptTokensDetails};
use loom_models::responses::{Input, Item, ItemContent, Part, ResponsesRequest};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::Error;
use crate::anthropic::{NativeEvent, NativeStream};
use crate::convert::{REASONING, REASONING_SIGNATURE};

/// What a Responses answer repeats of its request (OpenAI's answers carry
/// the request's settings beside the output), serialised once: the members
/// of a JSON object without its braces, written into every response object
/// of the answer (a stream has three).
#[derive(Debug, Clone, Default)]
pub struct Echo(String);

/// The settings of a request as its answers repeat them.
#[derive(Serialize)]
struct EchoOut<'a> {
    instructions: Option<&'a str>,
    tools: &'a [loom_models::responses::Tool],
    tool_choice: &'a Value,
    parallel_tool_calls: bool,
    temperature: Option<f64>,
    top_p: Option<f64>,
    max_output_tokens: Option<u64>,
    metadata: &'a Value,
    text: TextOut<'a>,
    reasoning: ReasoningOut<'a>,
    store: bool,
    previous_response_id: Option<&'a str>,
    truncation: &'static str,
    user: Option<&'a str>,
    background: bool,
}

#[derive(Serialize)]
struct TextOut<'a> {
    format: &'a Value,
    verbosity: &'a str,
}

#[derive(Serialize)]
struct ReasoningOut<'a> {
    effort: Option<&'a str>,
    summary: Option<&'a str>,
}

impl Echo {
    /// The settings `req` asked for, with OpenAI's defaults where it set none.
    pub fn of(req: &ResponsesRequest) -> Echo {
        let auto = Value::from("auto");
        let empty = Value::Object(Map::new());
        let text_format = json!({"type": "text"});
        let text = req.text.as_ref();
        let reasoning = req.reasoning.as_ref();
        let out = EchoOut {
            instructions: req.instructions.as_deref(),
            tools: req.tools.as_deref().unwrap_or_default(),
            tool_choice: req.tool_choice.as_ref().unwrap_or(&auto),
            parallel_tool_calls: req.parallel_tool_calls.unwrap_or(true),
            temperature: req.temperature,
            top_p: req.top_p,
            max_output_tokens: req.max_output_tokens,
            metadata: req.metadata.as_ref().unwrap_or(&empty),
            text: TextOut {
                format: text.and_then(|t| t.format.as_ref()).unwrap_or(&text_format),
                verbosity: text
                    .and_then(|t| t.verbosity.as_deref())
                    .unwrap_or("medium"),
            },
            reasoning: ReasoningOut {
                effort: reasoning.and_then(|r| r.effort.as_deref()),
                summary: reasoning.and_then(|r| r.summary.as_deref()),
            },
            store: req.store.unwrap_or(true),
            previous_response_id: None,
            truncation: "disabled",
            user: req.user.as_deref(),
            background: false,
        };
        let mut json = serde_json::to_string(&out).unwrap_or_default();
        // `{...}` → `...`: members to write after a response's own.
        json.pop();
        if !json.is_empty() {
            json.remove(0);
        }
        Echo(json)
    }
}

/// Input item kinds Loom translates.
fn unsupported_item(kind: &str) -> Error {
    Error::Unsupported(format!(
        "input items of type {kind:?} are not supported: Loom translates messages, function_call, function_call_output and reasoning items"
    ))
}

/// Translates a Responses request into a canonical one (its
/// `previous_response_id` already expanded by the caller). Settings that
/// need state Loom does not keep (`background`) and
/// input items it cannot translate are refused by name rather than ignored;
/// tools only OpenAI hosts are left out.
pub fn to_chat(req: &ResponsesRequest) -> Result<ChatRequest, Error> {
    if req.background == Some(true) {
        return Err(Error::Unsupported(
            "background responses are not supported".to_owned(),
        ));
    }
    let mut messages: Vec<Message> = Vec::new();
    if let Some(i) = req.instructions.as_deref().filter(|i| !i.is_empty()) {
        messages.push(text_message(Role::System, i.to_owned()));
    }
    match &req.input {
        Input::Text(t) => messages.push(text_message(Role::User, t.clone())),
        Input::Items(items) => {
            let mut reasoning = None;
            for item in items {
                // A model's reasoning goes back only to the model that
                // wrote it: Anthropic's signed thinking (a blob Loom
                // marked), nothing sealed by another provider.
                if item.kind() == "reasoning" {
                    reasoning = ours(item);
                    continue;
                }
                let before = messages.len();
                push_item(&mut messages, item)?;
                // Anthropic's signed thinking goes back on the assistant
                // turn that follows it.
                if let Some((text, sig)) = reasoning.take() {
                    // A function call joins the assistant turn before it.
                    let at = before.min(messages.len().saturating_sub(1));
                    match messages.get_mut(at) {
                        Some(m) if m.role == Role::Assistant => {
                            m.extra.insert(REASONING.to_owned(), Value::from(text));
                            m.extra
                                .insert(REASONING_SIGNATURE.to_owned(), Value::from(sig));
                        }
                        _ => {}
                    }
                }
            }
            check_call_ids(items)?;
        }
    }
    if messages.iter().all(|m| m.role == Role::System) {
        return Err(Error::Unsupported(
            "`input` must contain at least one message".to_owned(),
        ));
    }
    // Tools only OpenAI hosts (web search, file search, a computer, code
    // interpreter, …) cannot run elsewhere: they are left out rather than
    // the request refused, so an agent that offers them (Codex does) still
    // works with the tools it brought itself.
    let tools: Vec<Tool> = req
        .tools
        .iter()
        .flatten()
        .filter(|t| t.kind == "function")
        .map(|t| Tool {
            kind: "function".to_owned(),
            function: Some(FunctionDef {
                name: t.name.clone().unwrap_or_default(),
                description: t.description.clone(),
                parameters: t.parameters.clone(),
                strict: t.strict,
                extra: Default::default(),
            }),
            extra: Default::default(),
        })
        .collect();
    let tools = (!tools.is_empty()).then_some(tools);
    let tool_choice = req.tool_choice.as_ref().and_then(tool_choice);
    let mut extra = Map::new();
    for (key, v) in [
        ("prompt_cache_key", &req.prompt_cache_key),
        ("safety_identifier", &req.safety_identifier),
    ] {
        if let Some(v) = v {
            extra.insert(key.to_owned(), Value::from(v.as_str()));
        }
    }
    if let Some(v) = req.text.as_ref().and_then(|t| t.verbosity.clone()) {
        extra.insert("verbosity".to_owned(), Value::from(v));
    }
    let stream = req.stream == Some(true);
    Ok(ChatRequest {
        model: req.model.clone(),
        messages,
        stream: stream.then_some(true),
        stream_options: stream.then(|| StreamOptions {
            include_usage: Some(true),
            extra: Default::default(),
        }),
        temperature: req.temperature,
        top_p: req.top_p,
        max_tokens: req.max_output_tokens,
        parallel_tool_calls: tools.as_ref().and(req.parallel_tool_calls),
        tools,
        tool_choice,
        response_format: req
            .text
            .as_ref()
            .and_then(|t| t.format.as_ref())
            .and_then(response_format),
        reasoning_effort: req.reasoning.as_ref().and_then(|r| r.effort.clone()),
        metadata: req.metadata.clone(),
        user: req.user.clone(),
        service_tier: req.service_tier.clone(),
        extra,
        ..ChatRequest::default()
    })
}

fn text_message(role: Role, text: String) -> Message {
    Message {
        role,
        content: Some(Content::Text(text)),
        ..Message::default()
    }
}

/// How Loom marks a reasoning item's `encrypted_content` that carries an
/// Anthropic thinking signature: only such blobs are sent back (another
/// provider's sealed reasoning, OpenAI's included, is left out).
const SEALED: &str = "loom.anthropic.";

fn sealed(signature: &str) -> String {
    format!("{SEALED}{signature}")
}

/// The summary and Anthropic signature of a reasoning item Loom wrote.
fn ours(item: &Item) -> Option<(String, String)> {
    let sig = item.encrypted_content.as_deref()?.strip_prefix(SEALED)?;
    let text: String = item
        .summary
        .iter()
        .flatten()
        .filter_map(|p| p.get("text").and_then(Value::as_str))
        .collect();
    Some((text, sig.to_owned()))
}

/// Every function output answers a call made earlier in the input.
fn check_call_ids(items: &[Item]) -> Result<(), Error> {
    let mut calls: Vec<&str> = Vec::new();
    for item in items {
        match item.kind() {
            "function_call" => calls.extend(item.call_id.as_deref()),
            "function_call_output" => {
                let id = item.call_id.as_deref().unwrap_or("");
                if !calls.contains(&id) {
                    return Err(Error::Unsupported(format!(
                        "function_call_output with call_id {id:?} answers no function_call earlier in `input`"
                    )));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// Adds one input item to the conversation.
fn push_item(messages: &mut Vec<Message>, item: &Item) -> Result<(), Error> {
    match item.kind() {
        "message" => {
            let role = match item.role.as_deref().unwrap_or("user") {
                "system" | "developer" => Role::System,
                "assistant" => Role::Assistant,
                "user" => Role::User,
                other => {
                    return Err(Error::Unsupported(format!(
                        "message role {other:?} is not one of user, assistant, system, developer"
                    )));
                }
            };
            let content = match &item.content {
                None => Content::Text(String::new()),
                Some(ItemContent::Text(t)) => Content::Text(t.clone()),
                Some(ItemContent::Parts(parts)) if role == Role::Assistant => {
                    // An earlier answer: its text (and refusal) as a string.
                    let text: Vec<&str> = parts
                        .iter()
                        .filter_map(|p| p.text.as_deref().or(p.refusal.as_deref()))
                        .collect();
                    Content::Text(text.join(""))
                }
                Some(ItemContent::Parts(parts)) => {
                    Content::Parts(parts.iter().map(chat_part).collect::<Result<_, Error>>()?)
                }
            };
            messages.push(Message {
                role,
                content: Some(content),
                ..Message::default()
            });
        }
        "function_call" => {
            let call = ToolCall {
                id: item.call_id.clone().unwrap_or_default(),
                kind: "function".to_owned(),
                function: FunctionCall {
                    name: item.name.clone().unwrap_or_default(),
                    arguments: item.arguments.clone().unwrap_or_else(|| "{}".to_owned()),
                },
                extra: Default::default(),
            };
            // Calls of one turn (and the text before them) are one
            // assistant message in chat completions.
            match messages.last_mut() {
                Some(m) if m.role == Role::Assistant => {
                    m.tool_calls.get_or_insert_with(Vec::new).push(call)
                }
                _ => messages.push(Message {
                    role: Role::Assistant,
                    tool_calls: Some(vec![call]),
                    ..Message::default()
                }),
            }
        }
        "function_call_output" => {
            let output = match &item.output {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => parts
                    .iter()
                    .filter_map(|p| p.get("text").and_then(Value::as_str))
                    .collect::<Vec<_>>()
                    .join(""),
                Some(other) => other.to_string(),
                None => String::new(),
            };
            messages.push(Message {
                role: Role::Tool,
                content: Some(Content::Text(output)),
                tool_call_id: item.call_id.clone(),
                ..Message::default()
            });
        }
        other => return Err(unsupported_item(other)),
    }
    Ok(())
}

/// A chat content part for a Responses one.
fn chat_part(p: &Part) -> Result<ContentPart, Error> {
    Ok(match p.kind.as_str() {
        "input_text" | "output_text" | "text" => ContentPart {
            kind: "text".to_owned(),
            text: Some(p.text.clone().unwrap_or_default()),
            ..ContentPart::default()
        },
        "input_image" => ContentPart {
            kind: "image_url".to_owned(),
            image_url: Some(ImageUrl {
                url: p.image_url.clone().ok_or_else(|| {
                    Error::Unsupported(
                        "input_image needs image_url (file_id is not supported)".to_owned(),
                    )
                })?,
                detail: p.detail.clone(),
                ..ImageUrl::default()
            }),
            ..ContentPart::default()
        },
        "input_file" => {
            let mut file = Map::new();
            for (key, v) in [
                ("file_data", &p.file_data),
                ("file_id", &p.file_id),
                ("filename", &p.filename),
            ] {
                if let Some(v) = v {
                    file.insert(key.to_owned(), Value::from(v.as_str()));
                }
            }
            let mut extra = Map::new();
            extra.insert("file".to_owned(), Value::Object(file));
            ContentPart {
                kind: "file".to_owned(),
                extra,
                ..ContentPart::default()
            }
        }
        other => {
            return Err(Error::Unsupported(format!(
                "content parts of type {other:?} are not supported"
            )));
        }
    })
}

/// `tool_choice` in chat's shape; none for a hosted tool (left out).
fn tool_choice(v: &Value) -> Option<Value> {
    Some(match v.get("type").and_then(Value::as_str) {
        None => v.clone(),
        Some("function") => json!({"type": "function", "function": {"name": v.get("name")}}),
        Some("allowed_tools") => {
            let tools: Vec<Value> = v
                .get("tools")
                .and_then(Value::as_array)
                .map(|t| {
                    t.iter()
                        .map(|t| json!({"type": "function", "function": {"name": t.get("name")}}))
                        .collect()
                })
                .unwrap_or_default();
            json!({"type": "allowed_tools", "allowed_tools": {"mode": v.get("mode"), "tools": tools}})
        }
        Some(_) => return None,
    })
}

/// `text.format` as chat's `response_format`.
fn response_format(format: &Value) -> Option<ResponseFormat> {
    match format.get("type").and_then(Value::as_str)? {
        "json_schema" => {
            let mut schema = Map::new();
            for key in ["name", "schema", "strict", "description"] {
                if let Some(v) = format.get(key) {
                    schema.insert(key.to_owned(), v.clone());
                }
            }
            Some(ResponseFormat {
                kind: "json_schema".to_owned(),
                json_schema: Some(Value::Object(schema)),
                extra: Default::default(),
            })
        }
        "json_object" => Some(ResponseFormat {
            kind: "json_object".to_owned(),
            ..ResponseFormat::default()
        }),
        _ => None,
    }
}

/// A response id from the provider's: `resp_` and its letters and digits.
fn response_id(_provider_id: &str) -> String {
    // Loom's own, unique per response: it names what Loom keeps, and a
    // provider's id need not be unique (some OpenAI-compatible servers
    // answer every request with the same one).
    static MADE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("resp_{nanos:x}{:x}{n:x}", std::process::id())
}

/// Responses usage from chat usage (the details are always present).
fn usage(u: Option<&Usage>) -> Value {
    let u = u.cloned().unwrap_or_default();
    let cached = u
        .prompt_tokens_details
        .as_ref()
        .and_then(|d| d.cached_tokens)
        .unwrap_or(0);
    let reasoning = u
        .completion_tokens_details
        .as_ref()
        .and_then(|d| d.reasoning_tokens)
        .unwrap_or(0);
    json!({
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": crate::cache_write_tokens(&u)},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning},
        "total_tokens": u.prompt_tokens.saturating_add(u.completion_tokens),
    })
}

/// `status` and `incomplete_details` for a chat finish reason.
fn outcome(finish: Option<&str>) -> (&'static str, Value) {
    match finish {
        Some("length") => ("incomplete", json!({"reason": "max_output_tokens"})),
        Some("content_filter") => ("incomplete", json!({"reason": "content_filter"})),
        _ => ("completed", Value::Null),
    }
}

/// The reasoning text a provider put beside chat content
/// (`reasoning_content`, or `reasoning` as some servers name it).
fn reasoning_of(extra: &Map<String, Value>) -> Option<&str> {
    extra
        .get(REASONING)
        .or_else(|| extra.get("reasoning"))
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
}

/// Where a response stands: its status, items so far, usage and what
/// ended it.
struct State<'a> {
    status: &'a str,
    output: Vec<Value>,
    usage: Value,
    incomplete: Value,
    error: Value,
}

/// A response object's own members (the request's settings follow).
#[derive(Serialize)]
struct ResponseOut<'a> {
    id: &'a str,
    object: &'static str,
    created_at: u64,
    status: &'a str,
    model: &'a str,
    output: &'a [Value],
    usage: &'a Value,
    incomplete_details: &'a Value,
    error: &'a Value,
}

/// A whole Responses object, as JSON.
fn response(id: &str, created_at: u64, model: &str, state: State<'_>, echo: &Echo) -> Vec<u8> {
    let out = ResponseOut {
        id,
        object: "response",
        created_at,
        status: state.status,
        model,
        output: &state.output,
        usage: &state.usage,
        incomplete_details: &state.incomplete,
        error: &state.error,
    };
    let mut json = serde_json::to_vec(&out).unwrap_or_default();
    if !echo.0.is_empty() && json.last() == Some(&b'}') {
        json.pop();
        json.push(b',');
        json.extend_from_slice(echo.0.as_bytes());
        json.push(b'}');
    }
    json
}

/// Translates a canonical answer into a Responses object (its JSON).
pub fn from_chat(resp: &ChatResponse, echo: &Echo) -> Vec<u8> {
    let id = response_id(&resp.id);
    let choice = resp.choices.first();
    let mut output = Vec::new();
    if let Some(c) = choice {
        if let Some(r) = reasoning_of(&c.message.extra) {
            let mut item = json!({"type": "reasoning", "id": format!("rs_{}", &id[5..]),
                "summary": [{"type": "summary_text", "text": r}], "status": "completed"});
            if let Some(sig) = c
                .message
                .extra
                .get(REASONING_SIGNATURE)
                .and_then(Value::as_str)
            {
                item["encrypted_content"] = Value::from(sealed(sig));
            }
            output.push(item);
        }
        let text = c.message.text();
        if !text.is_empty() || c.message.refusal.is_some() {
            let part = match &c.message.refusal {
                Some(r) => json!({"type": "refusal", "refusal": r}),
                None => {
                    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
                }
            };
            output.push(json!({"type": "message", "id": format!("msg_{}", &id[5..]),
                "status": "completed", "role": "assistant", "content": [part]}));
        }
        for (i, call) in c.message.tool_calls.iter().flatten().enumerate() {
            output.push(
                json!({"type": "function_call", "id": format!("fc_{}_{i}", &id[5..]),
                "call_id": call.id, "name": call.function.name,
                "arguments": call.function.arguments, "status": "completed"}),
            );
        }
    }
    let (status, incomplete) = outcome(choice.and_then(|c| c.finish_reason.as_deref()));
    let state = State {
        status,
        output,
        usage: usage(resp.usage.as_ref()),
        incomplete,
        error: Value::Null,
    };
    response(&id, resp.created, &resp.model, state, echo)
}

/// The canonical answer of a finished Responses object (its JSON), for
/// what keeps answers in the chat shape (the semantic cache): text,
/// refusal, function calls, reasoning summary and usage. `None` for a
/// response that did not complete or that holds items chat has no place
/// for (hosted tool calls).
pub fn chat_of(body: &[u8]) -> Option<ChatResponse> {
    chat_of_value(&serde_json::from_slice(body).ok()?)
}

/// [`chat_of`] over a parsed Responses object.
pub fn chat_of_value(v: &Value) -> Option<ChatResponse> {
    let finish = match (
        v.get("status")?.as_str()?,
        v.pointer("/incomplete_details/reason")
            .and_then(Value::as_str),
    ) {
        ("completed", _) => None,
        ("incomplete", Some("max_output_tokens")) => Some("length"),
        ("incomplete", Some("content_filter")) => Some("content_filter"),
        _ => return None,
    };
    let mut message = Message {
        role: Role::Assistant,
        ..Message::default()
    };
    let (mut text, mut calls) = (String::new(), Vec::new());
    for item in v.get("output")?.as_array()? {
        match item.get("type")?.as_str()? {
            "message" => {
                for part in item.get("content")?.as_array()? {
                    match part.get("type").and_then(Value::as_str) {
                        Some("output_text") => {
                            text.push_str(part.get("text").and_then(Value::as_str).unwrap_or(""));
                        }
                        Some("refusal") => {
                            message.refusal = part
                                .get("refusal")
                                .and_then(Value::as_str)
                                .map(str::to_owned);
                        }
                        _ => return None,
                    }
                }
            }
            "function_call" => calls.push(ToolCall {
                id: item.get("call_id")?.as_str()?.to_owned(),
                kind: "function".to_owned(),
                function: FunctionCall {
                    name: item.get("name")?.as_str()?.to_owned(),
                    arguments: item.get("arguments")?.as_str()?.to_owned(),
                },
                extra: Default::default(),
            }),
            "reasoning" => {
                let summary: String = item
                    .get("summary")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|s| s.get("text").and_then(Value::as_str))
                    .collect();
                if !summary.is_empty() {
                    message.extra.insert(REASONING.to_owned(), summary.into());
                }
                if let Some(sig) = item
                    .get("encrypted_content")
                    .and_then(Value::as_str)
                    .and_then(|c| c.strip_prefix(SEALED))
                {
                    message
                        .extra
                        .insert(REASONING_SIGNATURE.to_owned(), sig.into());
                }
            }
            _ => return None,
        }
    }
    let called = !calls.is_empty();
    message.content =
        (!text.is_empty() || (!called && message.refusal.is_none())).then_some(Content::Text(text));
    message.tool_calls = called.then_some(calls);
    let u = v.get("usage");
    let count = |p: &str| u.and_then(|u| u.pointer(p)).and_then(Value::as_u64);
    let mut usage = Usage::new(count("/input_tokens")?, count("/output_tokens")?);
    if let Some(c) = count("/input_tokens_details/cached_tokens").filter(|&c| c > 0) {
        usage.prompt_tokens_details = Some(PromptTokensDetails {
            cached_tokens: Some(c),
            ..PromptTokensDetails::default()
        });
    }
    if let Some(r) = count("/output_tokens_details/reasoning_tokens").filter(|&r| r > 0) {
        usage.completion_tokens_details = Some(CompletionTokensDetails {
            reasoning_tokens: Some(r),
            ..CompletionTokensDetails::default()
        });
    }
    Some(ChatResponse {
        id: v.get("id")?.as_str()?.to_owned(),
        object: "chat.completion".to_owned(),
        created: v.get("created_at").and_then(Value::as_u64).unwrap_or(0),
        model: v.get("model")?.as_str()?.to_owned(),
        choices: vec![Choice {
            index: 0,
            message,
            finish_reason: Some(
                finish
                    .unwrap_or(if called { "tool_calls" } else { "stop" })
                    .to_owned(),
            ),
            ..Choice::default()
        }],
        usage: Some(usage),
        ..ChatResponse::default()
    })
}

/// The output item being streamed.
#[derive(Debug)]
enum Open {
    None,
    Reasoning {
        text: String,
        signature: Option<String>,
    },
    Text {
        text: String,
    },
    Refusal {
        text: String,
    },
    Call {
        call_id: String,
        name: String,
        arguments: String,
    },
}

/// Turns canonical chunks into Responses stream events, written as SSE.
#[derive(Debug)]
pub struct EventEncoder {
    echo: Echo,
    id: String,
    model: String,
    created_at: u64,
    seq: u64,
    started: bool,
    open: Open,
    /// The open item's id and index.
    item_id: String,
    index: usize,
    /// Items done, as `response.completed` lists them.
    done: Vec<Value>,
    finish: Option<String>,
    usage: Option<Usage>,
    /// Told the finished response: its id, output items and JSON.
    on_done: Option<OnDone>,
}

/// Called with a finished response's id, output items and JSON.
pub type DoneFn = Box<dyn FnOnce(&str, &[Value], &[u8]) + Send>;

/// What a finished stream's response is handed to (to keep it).
pub struct OnDone(pub DoneFn);

impl std::fmt::Debug for OnDone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnDone")
    }
}

impl EventEncoder {
    /// The same encoder, handing the response to `done` when the stream
    /// completes (not when it fails).
    pub fn on_done(mut self, done: OnDone) -> EventEncoder {
        self.on_done = Some(done);
        self
    }

    /// An encoder for a stream answering `model`, echoing the request's
    /// settings in its response objects.
    pub fn new(model: &str, echo: Echo) -> EventEncoder {
        EventEncoder {
            echo,
            id: String::new(),
            model: model.to_owned(),
            created_at: 0,
            seq: 0,
            started: false,
            open: Open::None,
            item_id: String::new(),
            index: 0,
            done: Vec::new(),
            finish: None,
            usage: None,
            on_done: None,
        }
    }

    /// Writes one event; its `sequence_number` is the next.
    fn event(&mut self, out: &mut BytesMut, kind: &str, mut data: Value) {
        if let Value::Object(m) = &mut data {
            m.insert("type".into(), Value::from(kind));
            m.insert("sequence_number".into(), Value::from(self.seq));
        }
        self.seq += 1;
        out.put_slice(b"event: ");
        out.put_slice(kind.as_bytes());
        out.put_slice(b"\ndata: ");
        out.put_slice(data.to_string().as_bytes());
        out.put_slice(b"\n\n");
    }

    /// Writes a lifecycle event carrying the response object `response`
    /// (JSON already written: it is not parsed again).
    fn lifecycle(&mut self, out: &mut BytesMut, kind: &str, response: &[u8]) {
        out.put_slice(b"event: ");
        out.put_slice(kind.as_bytes());
        out.put_slice(b"\ndata: {\"type\":\"");
        out.put_slice(kind.as_bytes());
        out.put_slice(b"\",\"sequence_number\":");
        out.put_slice(itoa::Buffer::new().format(self.seq).as_bytes());
        out.put_slice(b",\"response\":");
        out.put_slice(response);
        out.put_slice(b"}\n\n");
        self.seq += 1;
    }

    fn snapshot(&self, state: State<'_>) -> Vec<u8> {
        response(&self.id, self.created_at, &self.model, state, &self.echo)
    }

    fn start(&mut self, chunk: &ChatChunk, out: &mut BytesMut) {
        self.started = true;
        self.id = response_id(&chunk.id);
        self.created_at = chunk.created;
        if !chunk.model.is_empty() {
            self.model.clone_from(&chunk.model);
        }
        let r = self.snapshot(State {
            status: "in_progress",
            output: Vec::new(),
            usage: Value::Null,
            incomplete: Value::Null,
            error: Value::Null,
        });
        self.lifecycle(out, "response.created", &r);
        self.lifecycle(out, "response.in_progress", &r);
    }

    /// Opens a new output item, closing the one before.
    fn open(&mut self, out: &mut BytesMut, open: Open) {
        self.close(out);
        self.index = self.done.len();
        let tail = &self.id[5..];
        let (item_id, item) = match &open {
            Open::Reasoning { .. } => {
                let id = format!("rs_{tail}_{}", self.index);
                let item = json!({"type": "reasoning", "id": id, "summary": []});
                (id, item)
            }
            Open::Text { .. } | Open::Refusal { .. } => {
                let id = format!("msg_{tail}_{}", self.index);
                let item = json!({"type": "message", "id": id, "status": "in_progress", "role": "assistant", "content": []});
                (id, item)
            }
            Open::Call { call_id, name, .. } => {
                let id = format!("fc_{tail}_{}", self.index);
                let item = json!({"type": "function_call", "id": id, "call_id": call_id, "name": name, "arguments": "", "status": "in_progress"});
                (id, item)
            }
            Open::None => return,
        };
        self.item_id = item_id;
        let index = self.index;
        self.event(
            out,
            "response.output_item.added",
            json!({"output_index": index, "item": item}),
        );
        let id = self.item_id.clone();
        match &open {
            Open::Reasoning { .. } => self.event(
                out,
                "response.reasoning_summary_part.added",
                json!({"item_id": id, "output_index": index, "summary_index": 0, "part": {"type": "summary_text", "text": ""}}),
            ),
            Open::Text { .. } => self.event(
                out,
                "response.content_part.added",
                json!({"item_id": id, "output_index": index, "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}}),
            ),
            Open::Refusal { .. } => self.event(
                out,
                "response.content_part.added",
                json!({"item_id": id, "output_index": index, "content_index": 0, "part": {"type": "refusal", "refusal": ""}}),
            ),
            _ => {}
        }
        self.open = open;
    }

    /// Writes the `.done` events of the open item.
    fn close(&mut self, out: &mut BytesMut) {
        let open = std::mem::replace(&mut self.open, Open::None);
        let (id, index) = (self.item_id.clone(), self.index);
        // Cut by the output budget, or by a failure: the item is partial.
        let status = match self.finish.as_deref() {
            Some("length" | "error") => "incomplete",
            _ => "completed",
        };
        let item = match open {
            Open::None => return,
            Open::Reasoning { text, signature } => {
                self.event(
                    out,
                    "response.reasoning_summary_text.done",
                    json!({"item_id": id, "output_index": index, "summary_index": 0, "text": text}),
                );
                let part = json!({"type": "summary_text", "text": text});
                self.event(
                    out,
                    "response.reasoning_summary_part.done",
                    json!({"item_id": id, "output_index": index, "summary_index": 0, "part": part}),
                );
                let mut item = json!({"type": "reasoning", "id": id, "summary": [part], "status": "completed"});
                if let Some(sig) = signature {
                    item["encrypted_content"] = Value::from(sealed(&sig));
                }
                item
            }
            Open::Text { text } => {
                self.event(out, "response.output_text.done", json!({"item_id": id, "output_index": index, "content_index": 0, "text": text, "logprobs": []}));
                let part =
                    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []});
                self.event(
                    out,
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0, "part": part}),
                );
                json!({"type": "message", "id": id, "status": status, "role": "assistant", "content": [part]})
            }
            Open::Refusal { text } => {
                self.event(out, "response.refusal.done", json!({"item_id": id, "output_index": index, "content_index": 0, "refusal": text}));
                let part = json!({"type": "refusal", "refusal": text});
                self.event(
                    out,
                    "response.content_part.done",
                    json!({"item_id": id, "output_index": index, "content_index": 0, "part": part}),
                );
                json!({"type": "message", "id": id, "status": status, "role": "assistant", "content": [part]})
            }
            Open::Call {
                call_id,
                name,
                arguments,
            } => {
                self.event(out, "response.function_call_arguments.done", json!({"item_id": id, "output_index": index, "name": name, "arguments": arguments}));
                json!({"type": "function_call", "id": id, "call_id": call_id, "name": name, "arguments": arguments, "status": "completed"})
            }
        };
        self.event(
            out,
            "response.output_item.done",
            json!({"output_index": index, "item": item.clone()}),
        );
        self.done.push(item);
    }

    /// Writes the events one chunk becomes.
    pub fn on_chunk(&mut self, chunk: &ChatChunk, out: &mut BytesMut) {
        if !self.started {
            self.start(chunk, out);
        }
        if let Some(u) = &chunk.usage {
            self.usage = Some(u.clone());
        }
        let Some(choice) = chunk.choices.first() else {
            return;
        };
        let delta = &choice.delta;
        if let Some(r) = reasoning_of(&delta.extra) {
            if !matches!(self.open, Open::Reasoning { .. }) {
                self.open(
                    out,
                    Open::Reasoning {
                        text: String::new(),
                        signature: None,
                    },
                );
            }
            if let Open::Reasoning { text, .. } = &mut self.open {
                text.push_str(r);
            }
            let (id, index) = (self.item_id.clone(), self.index);
            self.event(
                out,
                "response.reasoning_summary_text.delta",
                json!({"item_id": id, "output_index": index, "summary_index": 0, "delta": r}),
            );
        }
        if let Some(sig) = delta.extra.get(REASONING_SIGNATURE).and_then(Value::as_str)
            && let Open::Reasoning { signature, .. } = &mut self.open
        {
            signature.get_or_insert_with(String::new).push_str(sig);
        }
        if let Some(t) = delta.content.as_deref().filter(|t| !t.is_empty()) {
            if !matches!(self.open, Open::Text { .. }) {
                self.open(
                    out,
                    Open::Text {
                        text: String::new(),
                    },
                );
            }
            if let Open::Text { text } = &mut self.open {
                text.push_str(t);
            }
            let (id, index) = (self.item_id.clone(), self.index);
            self.event(out, "response.output_text.delta", json!({"item_id": id, "output_index": index, "content_index": 0, "delta": t, "logprobs": []}));
        }
        if let Some(t) = delta.refusal.as_deref().filter(|t| !t.is_empty()) {
            if !matches!(self.open, Open::Refusal { .. }) {
                self.open(
                    out,
                    Open::Refusal {
                        text: String::new(),
                    },
                );
            }
            if let Open::Refusal { text } = &mut self.open {
                text.push_str(t);
            }
            let (id, index) = (self.item_id.clone(), self.index);
            self.event(
                out,
                "response.refusal.delta",
                json!({"item_id": id, "output_index": index, "content_index": 0, "delta": t}),
            );
        }
        for call in delta.tool_calls.iter().flatten() {
            let function = call.function.as_ref();
            if let Some(call_id) = &call.id {
                let name = function.and_then(|f| f.name.clone()).unwrap_or_default();
                self.open(
                    out,
                    Open::Call {
                        call_id: call_id.clone(),
                        name,
                        arguments: String::new(),
                    },
                );
            }
            let Some(args) = function
                .and_then(|f| f.arguments.as_deref())
                .filter(|a| !a.is_empty())
            else {
                continue;
            };
            if let Open::Call { arguments, .. } = &mut self.open {
                arguments.push_str(args);
                let (id, index) = (self.item_id.clone(), self.index);
                self.event(
                    out,
                    "response.function_call_arguments.delta",
                    json!({"item_id": id, "output_index": index, "delta": args}),
                );
            }
        }
        if let Some(f) = &choice.finish_reason {
            self.finish = Some(f.clone());
        }
    }

    /// Writes the closing events: the last item's, then
    /// `response.completed` (or `response.incomplete`) with every item and
    /// the usage.
    pub fn finish(&mut self, out: &mut BytesMut) {
        if !self.started {
            self.start(&ChatChunk::default(), out);
        }
        self.close(out);
        let (status, incomplete) = outcome(self.finish.as_deref());
        let r = self.snapshot(State {
            status,
            output: self.done.clone(),
            usage: usage(self.usage.as_ref()),
            incomplete,
            error: Value::Null,
        });
        let kind = if status == "completed" {
            "response.completed"
        } else {
            "response.incomplete"
        };
        self.lifecycle(out, kind, &r);
        if let Some(OnDone(done)) = self.on_done.take() {
            done(&self.id, &self.done, &r);
        }
    }

    /// Writes what ends a failed stream: an `error` event (its fields both
    /// flat, as OpenAI's schema has them, and under `error`, as its servers
    /// have been seen to send them), then `response.failed`.
    pub fn fail(&mut self, code: &str, message: &str, out: &mut BytesMut) {
        if !self.started {
            self.start(&ChatChunk::default(), out);
        }
        self.finish = Some("error".to_owned());
        self.close(out);
        self.event(
            out,
            "error",
            json!({"code": code, "message": message, "param": null,
                   "error": {"type": "server_error", "code": code, "message": message, "param": null}}),
        );
        let r = self.snapshot(State {
            status: "failed",
            output: self.done.clone(),
            usage: usage(self.usage.as_ref()),
            incomplete: Value::Null,
            error: json!({"code": code, "message": message}),
        });
        self.lifecycle(out, "response.failed", &r);
    }
}

/// A client's request body (a JSON object) with `fields` set: what a
/// natively relayed request is re-serialised for (a mapped model, an Azure
/// deployment, the gateway's token cap).
pub fn with_fields(body: &[u8], fields: &[(&str, Value)]) -> Result<Bytes, String> {
    let mut v: Map<String, Value> = serde_json::from_slice(body)
        .map_err(|e| format!("the request is not a JSON object: {e}"))?;
    for (key, value) in fields {
        v.insert((*key).to_owned(), value.clone());
    }
    serde_json::to_vec(&v)
        .map(Bytes::from)
        .map_err(|e| e.to_string())
}

/// The `error` event that ends a relayed provider stream which failed
/// after it started.
pub fn native_error(code: &str, message: &str, out: &mut BytesMut) {
    let data = json!({"type": "error", "code": code, "message": message, "param": null,
        "error": {"type": "server_error", "code": code, "message": message, "param": null}});
    out.put_slice(b"event: error\ndata: ");
    out.put_slice(data.to_string().as_bytes());
    out.put_slice(b"\n\n");
}

/// Usage as a Responses answer reports it.
#[derive(Debug, Default, Deserialize)]
struct WireUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
    #[serde(default)]
    input_tokens_details: Option<WireDetails>,
    #[serde(default)]
    output_tokens_details: Option<WireDetails>,
}

#[derive(Debug, Default, Deserialize)]
struct WireDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
    #[serde(default)]
    cache_write_tokens: Option<u64>,
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

impl WireUsage {
    /// The same counts in the canonical (chat) shape.
    fn canonical(self) -> Usage {
        let mut u = Usage::new(self.input_tokens, self.output_tokens);
        if let Some(d) = self.input_tokens_details {
            let mut details = PromptTokensDetails {
                cached_tokens: d.cached_tokens,
                ..PromptTokensDetails::default()
            };
            if let Some(w) = d.cache_write_tokens.filter(|w| *w > 0) {
                details
                    .extra
                    .insert(crate::CACHE_WRITE_TOKENS.to_owned(), Value::from(w));
            }
            u.prompt_tokens_details = Some(details);
        }
        if let Some(r) = self.output_tokens_details.and_then(|d| d.reasoning_tokens) {
            u.completion_tokens_details = Some(CompletionTokensDetails {
                reasoning_tokens: Some(r),
                ..CompletionTokensDetails::default()
            });
        }
        u
    }
}

/// A Responses object: only its usage is read.
#[derive(Debug, Default, Deserialize)]
struct WireResponse {
    #[serde(default)]
    usage: Option<WireUsage>,
}

/// One stream event: its type, and the response of lifecycle events.
#[derive(Debug, Deserialize)]
struct WireEvent {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    response: Option<WireResponse>,
}

/// The usage of a whole Responses answer (canonical shape), if it has one.
pub(crate) fn usage_of(body: &[u8]) -> Result<Option<Usage>, String> {
    let r: WireResponse = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    Ok(r.usage.map(WireUsage::canonical))
}

/// A provider's own Responses stream, relayed event by event: each event
/// goes on as the provider named it, and the usage of the terminal event
/// (`response.completed`, `.incomplete` or `.failed`) is read for
/// accounting. A stream that ends before a terminal event is an error.
pub(crate) fn native_events<S, E>(
    provider: String,
    body: S,
    deadline: tokio::time::Instant,
) -> NativeStream
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
    E: std::fmt::Display + Send + Sync + 'static,
{
    let events = Box::pin(body.eventsource());
    let out = futures_util::stream::unfold((events, false), move |(mut events, finished)| {
        let provider = provider.clone();
        async move {
            let next = match tokio::time::timeout_at(deadline, events.next()).await {
                Err(_) => Err(Error::Timeout { provider }),
                Ok(None) if finished => return None,
                Ok(None) => Err(Error::Stream {
                    provider,
                    detail: "the upstream closed the stream before response.completed".to_owned(),
                }),
                Ok(Some(Err(e))) => Err(Error::Stream {
                    provider,
                    detail: e.to_string(),
                }),
                Ok(Some(Ok(ev))) => Ok(ev),
            };
            let ev = match next {
                Ok(ev) => ev,
                Err(e) => return Some((Err(e), (events, true))),
            };
            let (kind, response) = match serde_json::from_str::<WireEvent>(&ev.data) {
                Ok(p) => (p.kind, p.response),
                Err(_) => (String::new(), None),
            };
            let kind = kind.as_str();
            let terminal = matches!(
                kind,
                "response.completed" | "response.incomplete" | "response.failed"
            );
            let error = matches!(kind, "response.failed" | "error");
            let usage = response
                .and_then(|r| r.usage)
                .filter(|_| terminal)
                .map(WireUsage::canonical);
            let name = if ev.event.is_empty() {
                kind
            } else {
                ev.event.as_str()
            };
            let frame = if name.is_empty() {
                Bytes::from(format!("data: {}\n\n", ev.data))
            } else {
                Bytes::from(format!("event: {name}\ndata: {}\n\n", ev.data))
            };
            let event = NativeEvent {
                frame,
                final_usage: usage.is_some(),
                usage,
                error,
            };
            Some((Ok(event), (events, finished || terminal || error)))
        }
    });
    Box::pin(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(v: Value) -> ResponsesRequest {
        serde_json::from_value(v).expect("request")
    }

    #[test]
    fn a_conversation_with_tools_becomes_one_chat_request() {
        let req = request(json!({
            "model": "gpt-4.1", "instructions": "Be brief.",
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "Weather in Paris?"}]},
                {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAA"},
                {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": "{\"city\":\"Paris\"}"},
                {"type": "function_call", "call_id": "call_2", "name": "time", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "18C"},
                {"type": "function_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": "noon"}]}
            ],
            "tools": [{"type": "function", "name": "weather", "parameters": {"type": "object"}, "strict": true}],
            "tool_choice": {"type": "function", "name": "weather"},
            "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}, "strict": true}},
            "reasoning": {"effort": "low"}, "max_output_tokens": 300, "stream": true,
            "prompt_cache_key": "thread-1", "store": false, "include": ["reasoning.encrypted_content"]
        }));
        let chat = serde_json::to_value(to_chat(&req).expect("translated")).expect("json");
        assert_eq!(
            chat["messages"][0],
            json!({"role": "system", "content": "Be brief."})
        );
        assert_eq!(
            chat["messages"][1]["content"][0],
            json!({"type": "text", "text": "Weather in Paris?"})
        );
        let calls = &chat["messages"][2]["tool_calls"];
        assert_eq!(calls.as_array().map(Vec::len), Some(2), "{chat}");
        assert_eq!(calls[0]["function"]["arguments"], "{\"city\":\"Paris\"}");
        assert_eq!(
            chat["messages"][3],
            json!({"role": "tool", "content": "18C", "tool_call_id": "call_1"})
        );
        assert_eq!(chat["messages"][4]["content"], "noon");
        assert_eq!(chat["tools"][0]["function"]["name"], "weather");
        assert_eq!(
            chat["tool_choice"],
            json!({"type": "function", "function": {"name": "weather"}})
        );
        assert_eq!(chat["response_format"]["json_schema"]["name"], "w");
        assert_eq!(chat["reasoning_effort"], "low");
        assert_eq!(chat["max_tokens"], 300);
        assert_eq!(chat["stream_options"], json!({"include_usage": true}));
        assert_eq!(chat["prompt_cache_key"], "thread-1");
        assert!(
            chat.get("store").is_none() && chat.get("include").is_none(),
            "{chat}"
        );
    }

    #[test]
    fn what_needs_state_or_cannot_be_translated_is_refused_by_name() {
        let refused = |v: Value| match to_chat(&request(v)) {
            Err(Error::Unsupported(m)) => m,
            other => panic!("{other:?}"),
        };
        let m =
            refused(json!({"model": "m", "input": [{"type": "local_shell_call", "call_id": "c"}]}));
        assert!(m.contains("local_shell_call"), "{m}");
        let m = refused(
            json!({"model": "m", "input": [{"role": "user", "content": "x"},
            {"type": "function_call_output", "call_id": "nope", "output": "1"}]}),
        );
        assert!(m.contains("nope"), "{m}");
        let m = refused(json!({"model": "m", "input": []}));
        assert!(m.contains("at least one message"), "{m}");
        // Hosted tools are left out, and a tool_choice naming one with them.
        let chat = to_chat(&request(json!({"model": "m", "input": "hi",
            "tools": [{"type": "web_search"}, {"type": "function", "name": "f"}],
            "tool_choice": {"type": "web_search_preview"}})))
        .expect("translated");
        assert_eq!(chat.tools.as_ref().map(Vec::len), Some(1));
        assert!(chat.tool_choice.is_none());
    }

    #[test]
    fn a_responses_object_reads_back_as_the_chat_answer_it_came_from() {
        let resp: ChatResponse = serde_json::from_value(json!({
            "id": "chatcmpl-AB12", "object": "chat.completion", "created": 1741290958, "model": "claude-x",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant",
                "content": "Checking.", "reasoning_content": "The user wants weather.", "reasoning_signature": "EqQB",
                "tool_calls": [{"id": "call_9", "type": "function", "function": {"name": "weather", "arguments": "{}"}}]}}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 8, "total_tokens": 28,
                "prompt_tokens_details": {"cached_tokens": 16}, "completion_tokens_details": {"reasoning_tokens": 5}}
        }))
        .expect("chat");
        let back = chat_of(&from_chat(&resp, &Echo::default())).expect("read back");
        let (c, m) = (&back.choices[0], &back.choices[0].message);
        assert_eq!(c.finish_reason.as_deref(), Some("tool_calls"));
        assert_eq!(m.text(), "Checking.");
        assert_eq!(m.tool_calls.as_ref().unwrap()[0].id, "call_9");
        assert_eq!(m.extra[REASONING], "The user wants weather.");
        assert_eq!(m.extra[REASONING_SIGNATURE], "EqQB");
        let u = back.usage.unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (20, 8));
        assert_eq!(u.prompt_tokens_details.unwrap().cached_tokens, Some(16));
        assert_eq!(back.model, "claude-x");
        // Cut short, failed, or holding what chat has no place for: none.
        let cut = br#"{"id":"r","model":"m","status":"incomplete","incomplete_details":{"reason":"max_output_tokens"},
            "output":[],"usage":{"input_tokens":1,"output_tokens":2}}"#;
        assert_eq!(
            chat_of(cut).unwrap().choices[0].finish_reason.as_deref(),
            Some("length")
        );
        assert!(chat_of(br#"{"id":"r","model":"m","status":"failed","output":[]}"#).is_none());
        let hosted = br#"{"id":"r","model":"m","status":"completed","output":[{"type":"web_search_call","id":"ws"}],
            "usage":{"input_tokens":1,"output_tokens":2}}"#;
        assert!(chat_of(hosted).is_none());
    }

    #[test]
    fn a_whole_answer_has_every_item_and_the_usage_details() {
        let resp: ChatResponse = serde_json::from_value(json!({
            "id": "chatcmpl-AB12", "object": "chat.completion", "created": 1741290958, "model": "gpt-4.1",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant",
                "content": "Checking.", "reasoning_content": "The user wants weather.",
                "tool_calls": [{"id": "call_9", "type": "function", "function": {"name": "weather", "arguments": "{}"}}]}}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 8, "total_tokens": 28,
                "prompt_tokens_details": {"cached_tokens": 16}, "completion_tokens_details": {"reasoning_tokens": 5}}
        }))
        .expect("chat");
        let req = request(json!({"model": "gpt-4.1", "input": "hi", "metadata": {"k": "v"}}));
        let r: Value = serde_json::from_slice(&from_chat(&resp, &Echo::of(&req))).expect("json");
        let id = r["id"].as_str().unwrap();
        assert!(id.starts_with("resp_") && id.len() > 16, "{id}");
        let again: Value = serde_json::from_slice(&from_chat(&resp, &Echo::default())).unwrap();
        assert_ne!(again["id"], r["id"], "each answer has an id of its own");
        assert_eq!(r["status"], "completed");
        let kinds: Vec<&str> = r["output"]
            .as_array()
            .expect("output")
            .iter()
            .filter_map(|i| i["type"].as_str())
            .collect();
        assert_eq!(kinds, ["reasoning", "message", "function_call"]);
        assert_eq!(r["output"][2]["call_id"], "call_9");
        assert_eq!(r["usage"]["input_tokens_details"]["cached_tokens"], 16);
        assert_eq!(r["usage"]["output_tokens_details"]["reasoning_tokens"], 5);
        assert_eq!(r["metadata"], json!({"k": "v"}));
        assert_eq!(
            (r["tool_choice"].clone(), r["parallel_tool_calls"].clone()),
            (json!("auto"), json!(true))
        );
    }

    /// The events of a stream, as (type, sequence_number).
    fn events(out: &BytesMut) -> Vec<Value> {
        std::str::from_utf8(out)
            .expect("utf-8")
            .split("\n\n")
            .filter(|e| !e.is_empty())
            .map(|e| {
                let (head, data) = e.split_once("\ndata: ").expect("framed");
                let v: Value = serde_json::from_str(data).expect("json");
                assert_eq!(head.strip_prefix("event: "), v["type"].as_str(), "{e}");
                v
            })
            .collect()
    }

    #[test]
    fn chunks_become_the_typed_event_sequence() {
        let chunk = |v: Value| -> ChatChunk { serde_json::from_value(v).expect("chunk") };
        let base = json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m"});
        let with = |choices: Value| {
            let mut c = base.clone();
            c["choices"] = choices;
            chunk(c)
        };
        let mut enc = EventEncoder::new("m", Echo::default());
        let mut out = BytesMut::new();
        enc.on_chunk(
            &with(json!([{"index": 0, "delta": {"role": "assistant", "content": "Hel"}}])),
            &mut out,
        );
        enc.on_chunk(
            &with(json!([{"index": 0, "delta": {"content": "lo"}}])),
            &mut out,
        );
        enc.on_chunk(&with(json!([{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\""}}]}}])), &mut out);
        enc.on_chunk(&with(json!([{"index": 0, "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}, "finish_reason": "tool_calls"}])), &mut out);
        let mut last = base.clone();
        last["choices"] = json!([]);
        last["usage"] = json!({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7});
        enc.on_chunk(&chunk(last), &mut out);
        enc.finish(&mut out);
        let evs = events(&out);
        let kinds: Vec<&str> = evs.iter().filter_map(|e| e["type"].as_str()).collect();
        assert_eq!(
            kinds,
            [
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.content_part.added",
                "response.output_text.delta",
                "response.output_text.delta",
                "response.output_text.done",
                "response.content_part.done",
                "response.output_item.done",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.done",
                "response.output_item.done",
                "response.completed"
            ]
        );
        for (i, e) in evs.iter().enumerate() {
            assert_eq!(e["sequence_number"], i as u64);
        }
        let done = &evs[evs.len() - 1]["response"];
        assert_eq!(done["output"][0]["content"][0]["text"], "Hello");
        assert_eq!(done["output"][1]["arguments"], "{\"a\":1}");
        assert_eq!(done["output"][1]["id"], evs[9]["item"]["id"]);
        assert_eq!(done["usage"]["total_tokens"], 7);
    }

    #[test]
    fn a_failed_stream_ends_with_error_then_response_failed() {
        let mut enc = EventEncoder::new("m", Echo::default());
        let mut out = BytesMut::new();
        let c: ChatChunk = serde_json::from_value(json!({"id": "x", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": {"content": "par"}}]}))
        .expect("chunk");
        enc.on_chunk(&c, &mut out);
        enc.fail("server_error", "provider p failed", &mut out);
        let evs = events(&out);
        let n = evs.len();
        assert_eq!(evs[n - 2]["type"], "error");
        assert_eq!(evs[n - 2]["error"]["message"], "provider p failed");
        assert_eq!(evs[n - 1]["type"], "response.failed");
        assert_eq!(evs[n - 1]["response"]["error"]["code"], "server_error");
        assert_eq!(
            evs[n - 1]["response"]["output"][0]["content"][0]["text"],
            "par"
        );
        assert_eq!(evs[n - 1]["response"]["output"][0]["status"], "incomplete");
    }

    #[test]
    fn anthropic_thinking_round_trips_through_encrypted_content() {
        let resp: ChatResponse = serde_json::from_value(json!({
            "id": "msg_1", "object": "chat.completion", "created": 1, "model": "claude",
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {"role": "assistant",
                "reasoning_content": "Need the tool.", "reasoning_signature": "EqQB",
                "tool_calls": [{"id": "toolu_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}}]
        }))
        .expect("chat");
        let r: Value = serde_json::from_slice(&from_chat(&resp, &Echo::default())).expect("json");
        let reasoning = r["output"][0].clone();
        assert_eq!(reasoning["encrypted_content"], "loom.anthropic.EqQB");
        // The client sends the items back: the signed thinking rejoins the
        // assistant turn; another provider's blob is left out.
        let next = request(json!({"model": "claude", "input": [
            {"role": "user", "content": "x"},
            reasoning,
            {"type": "function_call", "call_id": "toolu_1", "name": "f", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "toolu_1", "output": "1"},
            {"type": "reasoning", "id": "rs_2", "summary": [], "encrypted_content": "gAAAAforeign"},
            {"role": "assistant", "content": "done"}
        ]}));
        let chat = to_chat(&next).expect("translated");
        assert_eq!(
            chat.messages[1].extra["reasoning_content"],
            "Need the tool."
        );
        assert_eq!(chat.messages[1].extra["reasoning_signature"], "EqQB");
        assert!(chat.messages[3].extra.get("reasoning_signature").is_none());
    }
}

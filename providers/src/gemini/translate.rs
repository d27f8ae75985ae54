//! OpenAI chat ↔ Gemini `generateContent`, both directions, and Gemini stream
//! events → OpenAI chunks.

use std::sync::atomic::{AtomicU64, Ordering};

use loom_models::chat::{
    ChatChunk, ChatRequest, ChatResponse, Choice, ChunkChoice, CompletionTokensDetails, Content,
    Delta, FunctionCall, FunctionCallDelta, Message, PromptTokensDetails, Role, Stop, ToolCall,
    ToolCallDelta, Usage,
};
use loom_models::gemini::{
    self as g, Blob, FileData, FunctionCallingConfig, FunctionDeclaration, GenerateRequest,
    GenerateResponse, GenerationConfig, Part, ToolConfig, UsageMetadata,
};
use serde_json::Value;

use crate::Error;

fn unsupported(what: impl Into<String>) -> Error {
    Error::Unsupported(what.into())
}

fn text_part(text: String) -> Part {
    Part {
        text: Some(text),
        ..Part::default()
    }
}

/// Translates a canonical chat request for `generateContent`.
pub fn request(req: &ChatRequest) -> Result<GenerateRequest, Error> {
    crate::convert::check_fields(
        req,
        crate::convert::Takes {
            provider: "gemini",
            logprobs: true,
        },
    )?;
    let mut system = Vec::new();
    let mut contents: Vec<g::Content> = Vec::new();
    for (i, m) in req.messages.iter().enumerate() {
        let (role, parts) = match m.role {
            Role::System | Role::Developer => {
                system.push(text_part(m.text()));
                continue;
            }
            Role::User => ("user", user_parts(m, i)?),
            Role::Assistant => ("model", model_parts(m, i)?),
            Role::Tool => ("user", vec![function_response(req, m, i)?]),
            Role::Function => {
                return Err(unsupported(format!(
                    "messages[{i}]: the deprecated `function` role is not supported by the gemini provider; use `tool`"
                )));
            }
        };
        match contents.last_mut() {
            Some(last) if last.role.as_deref() == Some(role) => last.parts.extend(parts),
            _ => contents.push(g::Content {
                role: Some(role.to_owned()),
                parts,
            }),
        }
    }
    let tools = req.tools.as_ref().map(|tools| {
        vec![g::Tool {
            function_declarations: tools
                .iter()
                .filter_map(|t| t.function.as_ref())
                .map(|f| FunctionDeclaration {
                    name: f.name.clone(),
                    description: f.description.clone(),
                    parameters_json_schema: f.parameters.clone(),
                })
                .collect(),
        }]
    });
    let tool_config = match &req.tool_choice {
        None => None,
        Some(Value::String(s)) => Some(calling(
            match s.as_str() {
                "auto" => "AUTO",
                "required" => "ANY",
                "none" => "NONE",
                other => return Err(unsupported(format!("unknown tool_choice `{other}`"))),
            },
            None,
        )),
        Some(v) => match v.pointer("/function/name").and_then(Value::as_str) {
            Some(name) => Some(calling("ANY", Some(vec![name.to_owned()]))),
            None => return Err(unsupported("tool_choice must name a function")),
        },
    };
    let (response_mime_type, response_json_schema) = match &req.response_format {
        None => (None, None),
        Some(f) => match f.kind.as_str() {
            "text" => (None, None),
            "json_object" => (Some("application/json".to_owned()), None),
            "json_schema" => (
                Some("application/json".to_owned()),
                f.json_schema
                    .as_ref()
                    .and_then(|s| s.get("schema"))
                    .cloned(),
            ),
            other => return Err(unsupported(format!("unknown response_format `{other}`"))),
        },
    };
    let generation_config = GenerationConfig {
        temperature: req.temperature,
        top_p: req.top_p,
        max_output_tokens: req.max_output_tokens(),
        stop_sequences: req.stop.as_ref().map(|s| match s {
            Stop::One(s) => vec![s.clone()],
            Stop::Many(v) => v.clone(),
        }),
        candidate_count: req.n.filter(|&n| n > 1),
        seed: req.seed,
        presence_penalty: req.presence_penalty,
        frequency_penalty: req.frequency_penalty,
        response_mime_type,
        response_json_schema,
        response_logprobs: req.logprobs.filter(|&on| on),
        logprobs: req
            .top_logprobs
            .filter(|&n| n > 0 && req.logprobs == Some(true)),
        thinking_config: thinking_config(req),
    };
    Ok(GenerateRequest {
        contents,
        system_instruction: (!system.is_empty()).then_some(g::Content {
            role: None,
            parts: system,
        }),
        tools,
        tool_config,
        generation_config: (generation_config != GenerationConfig::default())
            .then_some(generation_config),
        extra: Default::default(),
    })
}

fn calling(mode: &str, names: Option<Vec<String>>) -> ToolConfig {
    ToolConfig {
        function_calling_config: FunctionCallingConfig {
            mode: mode.to_owned(),
            allowed_function_names: names,
        },
    }
}

/// Gemini's thinking budget for an OpenAI reasoning effort. `none` turns
/// thinking off (models that cannot turn it off answer 400 themselves).
fn thinking_budget(effort: &str) -> Option<i64> {
    match effort {
        "none" => Some(0),
        "minimal" => Some(512),
        "low" => Some(1_024),
        "medium" => Some(8_192),
        "high" => Some(24_576),
        "xhigh" | "max" => Some(32_768),
        _ => None,
    }
}

/// `thinkingConfig`: the client's own (Google's OpenAI-compatible shape,
/// `google.thinking_config` in the body), else its reasoning effort, with
/// the thoughts' summaries asked for so that they reach the client as
/// `reasoning_content`.
fn thinking_config(req: &ChatRequest) -> Option<Value> {
    if let Some(own) = req
        .extra
        .get("google")
        .and_then(|g| g.get("thinking_config"))
    {
        let mut config = serde_json::Map::new();
        for (k, v) in own.as_object()? {
            let camel = match k.as_str() {
                "thinking_budget" => "thinkingBudget",
                "include_thoughts" => "includeThoughts",
                "thinking_level" => "thinkingLevel",
                other => other,
            };
            config.insert(camel.to_owned(), v.clone());
        }
        return Some(Value::Object(config));
    }
    let budget = thinking_budget(req.reasoning_effort.as_deref()?)?;
    Some(serde_json::json!({"thinkingBudget": budget, "includeThoughts": budget > 0}))
}

/// Where a tool call carries Gemini's thought signature, as Google's own
/// OpenAI-compatible endpoint puts it.
fn signature_of(call: &ToolCall) -> Option<&str> {
    call.extra
        .get("extra_content")?
        .pointer("/google/thought_signature")?
        .as_str()
}

fn with_signature(signature: Option<String>) -> loom_models::Extra {
    let mut extra = loom_models::Extra::new();
    if let Some(sig) = signature {
        extra.insert(
            "extra_content".to_owned(),
            serde_json::json!({"google": {"thought_signature": sig}}),
        );
    }
    extra
}

/// What Gemini takes, in place of a signature, on a function call it did
/// not make (a conversation begun on another provider).
const NO_SIGNATURE: &str = "skip_thought_signature_validator";

fn user_parts(m: &Message, i: usize) -> Result<Vec<Part>, Error> {
    match &m.content {
        None => Ok(Vec::new()),
        Some(Content::Text(t)) => Ok(vec![text_part(t.clone())]),
        Some(Content::Parts(parts)) => parts
            .iter()
            .enumerate()
            .map(|(j, p)| match p.kind.as_str() {
                "text" => Ok(text_part(p.text.clone().unwrap_or_default())),
                "image_url" => {
                    let url = p.image_url.as_ref().map(|u| u.url.as_str()).unwrap_or_default();
                    match crate::convert::data_url(url, &format!("messages[{i}].content[{j}]"))? {
                        Some((mime, data)) => Ok(Part {
                            inline_data: Some(Blob {
                                mime_type: mime.to_owned(),
                                data: data.to_owned(),
                            }),
                            ..Part::default()
                        }),
                        None => Ok(Part {
                            file_data: Some(FileData {
                                mime_type: Some(mime_from_url(url).to_owned()),
                                file_uri: url.to_owned(),
                            }),
                            ..Part::default()
                        }),
                    }
                }
                other => Err(unsupported(format!(
                    "messages[{i}].content[{j}]: content type `{other}` is not supported by the gemini provider"
                ))),
            })
            .collect(),
    }
}

fn mime_from_url(url: &str) -> &'static str {
    let path = url
        .split(['?', '#'])
        .next()
        .unwrap_or(url)
        .to_ascii_lowercase();
    if path.ends_with(".png") {
        "image/png"
    } else if path.ends_with(".webp") {
        "image/webp"
    } else if path.ends_with(".gif") {
        "image/gif"
    } else {
        "image/jpeg"
    }
}

fn model_parts(m: &Message, i: usize) -> Result<Vec<Part>, Error> {
    let mut parts = Vec::new();
    let text = m.text();
    if !text.is_empty() {
        parts.push(text_part(text));
    }
    // Reasoning text is not sent back (Gemini keeps its state in the
    // signatures); each call's signature is, and the first call of a turn
    // always carries one, as Gemini 3 requires.
    for (j, call) in m.tool_calls.iter().flatten().enumerate() {
        let args = crate::convert::tool_arguments(call, &format!("messages[{i}].tool_calls[{j}]"))?;
        let signature = signature_of(call)
            .or((j == 0).then_some(NO_SIGNATURE))
            .map(str::to_owned);
        parts.push(Part {
            function_call: Some(g::FunctionCall {
                id: None,
                name: call.function.name.clone(),
                args,
            }),
            thought_signature: signature,
            ..Part::default()
        });
    }
    Ok(parts)
}

/// A tool result. Gemini identifies it by function name, which the OpenAI
/// message does not carry: it is found from the assistant turn that made the call.
fn function_response(req: &ChatRequest, m: &Message, i: usize) -> Result<Part, Error> {
    let id = m
        .tool_call_id
        .as_deref()
        .ok_or_else(|| unsupported(format!("messages[{i}]: a tool message needs tool_call_id")))?;
    let name = req.messages[..i]
        .iter()
        .rev()
        .flat_map(|p| p.tool_calls.iter().flatten())
        .find(|c| c.id == id)
        .map(|c| c.function.name.clone())
        .ok_or_else(|| unsupported(format!("messages[{i}]: no earlier tool call has id `{id}`")))?;
    let text = m.text();
    let response = match serde_json::from_str::<Value>(&text) {
        Ok(v @ Value::Object(_)) => v,
        _ => serde_json::json!({ "content": text }),
    };
    Ok(Part {
        function_response: Some(g::FunctionResponse {
            id: None,
            name,
            response,
        }),
        ..Part::default()
    })
}

/// OpenAI's finish reason for a Gemini one.
pub fn finish_reason(reason: &str, called_tools: bool) -> String {
    match reason {
        "MAX_TOKENS" => "length",
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            "content_filter"
        }
        _ if called_tools => "tool_calls",
        _ => "stop",
    }
    .to_owned()
}

/// OpenAI usage from Gemini's.
pub fn usage(u: &UsageMetadata) -> Usage {
    let thoughts = u.thoughts_token_count.unwrap_or(0);
    let mut out = Usage::new(u.prompt_token_count, u.candidates_token_count + thoughts);
    if u.total_token_count > 0 {
        out.total_tokens = u.total_token_count;
    }
    if let Some(cached) = u.cached_content_token_count {
        out.prompt_tokens_details = Some(PromptTokensDetails {
            cached_tokens: Some(cached),
            ..PromptTokensDetails::default()
        });
    }
    if let Some(t) = u.thoughts_token_count {
        out.completion_tokens_details = Some(CompletionTokensDetails {
            reasoning_tokens: Some(t),
            ..CompletionTokensDetails::default()
        });
    }
    out
}

static CALLS: AtomicU64 = AtomicU64::new(0);

/// A tool-call id for a call Gemini did not name.
fn call_id() -> String {
    let n = CALLS.fetch_add(1, Ordering::Relaxed);
    format!("call_{:08x}{n:06x}", std::process::id())
}

/// One function call of an answer.
struct Call {
    id: String,
    name: String,
    arguments: String,
    signature: Option<String>,
}

/// One candidate's parts, split.
#[derive(Default)]
struct Split {
    text: String,
    /// The thoughts' summaries.
    reasoning: String,
    calls: Vec<Call>,
}

fn split_parts(parts: Vec<Part>) -> Split {
    let mut out = Split::default();
    for p in parts {
        if p.thought == Some(true) {
            if let Some(t) = p.text {
                out.reasoning.push_str(&t);
            }
            continue;
        }
        if let Some(t) = p.text {
            out.text.push_str(&t);
        }
        if let Some(c) = p.function_call {
            out.calls.push(Call {
                id: c.id.unwrap_or_else(call_id),
                name: c.name,
                arguments: c.args.to_string(),
                signature: p.thought_signature,
            });
        }
    }
    out
}

/// OpenAI's `logprobs` of a choice, from Gemini's `logprobsResult`: the
/// chosen tokens, each with the alternatives listed at its position.
fn logprobs(candidate: &g::Candidate) -> Option<Value> {
    let result = candidate.extra.get("logprobsResult")?;
    let entry = |c: &Value| {
        let token = c.get("token").and_then(Value::as_str).unwrap_or_default();
        serde_json::json!({
            "token": token,
            "logprob": c.get("logProbability").and_then(Value::as_f64).unwrap_or(0.0),
            "bytes": token.as_bytes(),
        })
    };
    let top = result.get("topCandidates").and_then(Value::as_array);
    let content: Vec<Value> = result
        .get("chosenCandidates")?
        .as_array()?
        .iter()
        .enumerate()
        .map(|(i, chosen)| {
            let mut e = entry(chosen);
            let alternatives: Vec<Value> = top
                .and_then(|t| t.get(i))
                .and_then(|t| t.get("candidates"))
                .and_then(Value::as_array)
                .map(|c| c.iter().map(entry).collect())
                .unwrap_or_default();
            e["top_logprobs"] = Value::Array(alternatives);
            e
        })
        .collect();
    Some(serde_json::json!({"content": content, "refusal": null}))
}

/// Translates a complete response.
pub fn response(resp: GenerateResponse, model: &str, created: u64) -> ChatResponse {
    let choices = resp
        .candidates
        .into_iter()
        .map(|mut c| {
            let logprobs = logprobs(&c);
            let Split {
                text,
                reasoning,
                calls,
            } = split_parts(std::mem::take(&mut c.content.parts));
            let called = !calls.is_empty();
            let tool_calls: Vec<ToolCall> = calls
                .into_iter()
                .map(|c| ToolCall {
                    id: c.id,
                    kind: "function".to_owned(),
                    function: FunctionCall {
                        name: c.name,
                        arguments: c.arguments,
                    },
                    extra: with_signature(c.signature),
                })
                .collect();
            let mut extra = loom_models::Extra::new();
            if !reasoning.is_empty() {
                extra.insert(crate::convert::REASONING.to_owned(), reasoning.into());
            }
            Choice {
                index: c.index,
                message: Message {
                    role: Role::Assistant,
                    content: (!text.is_empty() || !called).then_some(Content::Text(text)),
                    tool_calls: called.then_some(tool_calls),
                    extra,
                    ..Message::default()
                },
                logprobs,
                finish_reason: Some(finish_reason(
                    c.finish_reason.as_deref().unwrap_or("STOP"),
                    called,
                )),
                ..Choice::default()
            }
        })
        .collect();
    ChatResponse {
        id: resp.response_id.map_or_else(
            || format!("chatcmpl-{}", call_id()),
            |id| format!("chatcmpl-{id}"),
        ),
        object: "chat.completion".to_owned(),
        created,
        model: resp.model_version.unwrap_or_else(|| model.to_owned()),
        choices,
        usage: Some(resp.usage_metadata.as_ref().map(usage).unwrap_or_default()),
        ..ChatResponse::default()
    }
}

/// The state of one translated stream.
#[derive(Debug)]
pub struct StreamTranslator {
    id: String,
    model: String,
    created: u64,
    started: bool,
    tools: u32,
    usage: Option<UsageMetadata>,
    /// A finish reason was seen: the answer is complete.
    pub finished: bool,
}

impl StreamTranslator {
    /// A translator for a stream answering `model`.
    pub fn new(model: &str, created: u64) -> StreamTranslator {
        StreamTranslator {
            id: format!("chatcmpl-{}", call_id()),
            model: model.to_owned(),
            created,
            started: false,
            tools: 0,
            usage: None,
            finished: false,
        }
    }

    /// The chunk one event becomes (Gemini sends text as deltas and each
    /// function call whole).
    pub fn on_event(&mut self, ev: GenerateResponse) -> Option<ChatChunk> {
        if let Some(v) = &ev.model_version {
            self.model.clone_from(v);
        }
        if let Some(u) = ev.usage_metadata {
            self.usage = Some(u);
        }
        let mut candidate = ev.candidates.into_iter().next()?;
        let logprobs = logprobs(&candidate);
        let Split {
            text,
            reasoning,
            calls,
        } = split_parts(std::mem::take(&mut candidate.content.parts));
        let called = !calls.is_empty();
        let tool_calls: Vec<ToolCallDelta> = calls
            .into_iter()
            .map(|c| {
                let index = self.tools;
                self.tools += 1;
                ToolCallDelta {
                    index,
                    id: Some(c.id),
                    kind: Some("function".to_owned()),
                    function: Some(FunctionCallDelta {
                        name: Some(c.name),
                        arguments: Some(c.arguments),
                    }),
                    extra: with_signature(c.signature),
                }
            })
            .collect();
        let mut extra = loom_models::Extra::new();
        if !reasoning.is_empty() {
            extra.insert(crate::convert::REASONING.to_owned(), reasoning.into());
        }
        let finish = candidate
            .finish_reason
            .as_deref()
            .map(|r| finish_reason(r, called || self.tools > 0));
        self.finished |= finish.is_some();
        let role = (!self.started).then_some(Role::Assistant);
        self.started = true;
        Some(ChatChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".to_owned(),
            created: self.created,
            model: self.model.clone(),
            choices: vec![ChunkChoice {
                index: 0,
                delta: Delta {
                    role,
                    content: (!text.is_empty() || role.is_some()).then_some(text),
                    tool_calls: called.then_some(tool_calls),
                    extra,
                    ..Delta::default()
                },
                finish_reason: finish,
                logprobs,
                ..ChunkChoice::default()
            }],
            ..ChatChunk::default()
        })
    }

    /// The closing usage chunk.
    pub fn usage_chunk(&self) -> ChatChunk {
        ChatChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".to_owned(),
            created: self.created,
            model: self.model.clone(),
            choices: Vec::new(),
            usage: Some(self.usage.as_ref().map(usage).unwrap_or_default()),
            ..ChatChunk::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn request_translation() {
        let req: ChatRequest = serde_json::from_value(json!({
            "model": "gemini-1.5-pro",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": [
                    {"type": "text", "text": "Weather?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
                ]},
                {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "18C"}
            ],
            "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
            "tool_choice": {"type": "function", "function": {"name": "weather"}},
            "response_format": {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}}},
            "max_tokens": 50, "seed": 7, "stop": ["x"]
        }))
        .unwrap();
        let out = serde_json::to_value(request(&req).unwrap()).unwrap();
        assert_eq!(
            out["systemInstruction"],
            json!({"parts": [{"text": "Be brief."}]})
        );
        assert_eq!(
            out["contents"][0]["parts"][1],
            json!({"inlineData": {"mimeType": "image/png", "data": "AAAA"}})
        );
        assert_eq!(
            out["contents"][1],
            json!({"role": "model", "parts": [{"functionCall": {"name": "weather", "args": {"city": "Paris"}},
                "thoughtSignature": NO_SIGNATURE}]})
        );
        assert_eq!(
            out["contents"][2]["parts"][0],
            json!({"functionResponse": {"name": "weather", "response": {"content": "18C"}}})
        );
        assert_eq!(
            out["toolConfig"],
            json!({"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["weather"]}})
        );
        assert_eq!(
            out["tools"][0]["functionDeclarations"][0]["parametersJsonSchema"],
            json!({"type": "object"})
        );
        let gc = &out["generationConfig"];
        assert_eq!(gc["maxOutputTokens"], 50);
        assert_eq!(gc["seed"], 7);
        assert_eq!(gc["stopSequences"], json!(["x"]));
        assert_eq!(gc["responseMimeType"], "application/json");
        assert_eq!(gc["responseJsonSchema"], json!({"type": "object"}));
    }

    #[test]
    fn response_translation() {
        let resp: GenerateResponse = serde_json::from_value(json!({
            "candidates": [{"content": {"role": "model", "parts": [
                {"text": "thinking...", "thought": true},
                {"text": "Calling."},
                {"functionCall": {"name": "weather", "args": {"city": "Paris"}}}
            ]}, "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5, "totalTokenCount": 18, "thoughtsTokenCount": 3},
            "modelVersion": "gemini-2.5-flash", "responseId": "abc"
        }))
        .unwrap();
        let out = response(resp, "gemini", 1);
        let c = &out.choices[0];
        assert_eq!(c.message.text(), "Calling.");
        assert_eq!(c.finish_reason.as_deref(), Some("tool_calls"));
        let call = &c.message.tool_calls.as_ref().unwrap()[0];
        assert_eq!(call.function.name, "weather");
        assert!(call.id.starts_with("call_"));
        let u = out.usage.unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (10, 8, 18)
        );
        assert_eq!(
            u.completion_tokens_details.unwrap().reasoning_tokens,
            Some(3)
        );
        assert_eq!(out.model, "gemini-2.5-flash");
        assert_eq!(out.id, "chatcmpl-abc");
    }

    mod property {
        use super::*;
        use proptest::prelude::*;

        fn text() -> impl Strategy<Value = String> {
            "[a-zA-Z0-9 .,!?\"\\\\{}éß€☀️]{1,40}"
        }

        proptest! {
            /// Every supported field reaches Gemini's wire format intact.
            #[test]
            fn supported_fields_reach_the_wire(
                system in proptest::option::of(text()),
                turns in proptest::collection::vec(text(), 1..6),
                temperature in proptest::option::of(0.0f64..2.0),
                max_tokens in proptest::option::of(1u64..8192),
                seed in proptest::option::of(any::<i64>()),
                stop in proptest::option::of(proptest::collection::vec("[a-z]{1,5}", 1..3)),
            ) {
                let mut messages = Vec::new();
                if let Some(s) = &system {
                    messages.push(json!({"role": "system", "content": s}));
                }
                for (i, t) in turns.iter().enumerate() {
                    messages.push(json!({"role": if i % 2 == 0 { "user" } else { "assistant" }, "content": t}));
                }
                let req: ChatRequest = serde_json::from_value(json!({
                    "model": "gemini", "messages": messages, "temperature": temperature,
                    "max_tokens": max_tokens, "seed": seed, "stop": stop,
                })).unwrap();
                let wire = serde_json::to_string(&request(&req).unwrap()).unwrap();
                let back: GenerateRequest = serde_json::from_str(&wire).unwrap();

                let sys = back.system_instruction.and_then(|c| c.parts.into_iter().next()).and_then(|p| p.text);
                prop_assert_eq!(sys, system);
                prop_assert_eq!(back.contents.len(), turns.len());
                for (i, (c, t)) in back.contents.iter().zip(&turns).enumerate() {
                    prop_assert_eq!(c.role.as_deref(), Some(if i % 2 == 0 { "user" } else { "model" }));
                    prop_assert_eq!(c.parts[0].text.as_ref(), Some(t));
                }
                let gc = back.generation_config.unwrap_or_default();
                prop_assert_eq!(gc.temperature, temperature);
                prop_assert_eq!(gc.max_output_tokens, max_tokens);
                prop_assert_eq!(gc.seed, seed);
                prop_assert_eq!(gc.stop_sequences, stop);
            }
        }
    }
}

#[cfg(test)]
mod reasoning_tests {
    use super::*;
    use serde_json::json;

    fn chat(body: Value) -> ChatRequest {
        serde_json::from_value(body).unwrap()
    }

    #[test]
    fn effort_becomes_a_thinking_budget_and_signatures_go_back() {
        let req = chat(json!({
            "model": "gemini-2.5-pro",
            "reasoning_effort": "high",
            "messages": [
                {"role": "user", "content": "Weather in Paris and Rome?"},
                {"role": "assistant", "content": null, "reasoning_content": "I should call the tool.",
                 "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"},
                     "extra_content": {"google": {"thought_signature": "c2lnLTE="}}},
                    {"id": "c2", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Rome\"}"}}
                 ]},
                {"role": "tool", "tool_call_id": "c1", "content": "18C"},
                {"role": "tool", "tool_call_id": "c2", "content": "24C"},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "c3", "type": "function", "function": {"name": "weather", "arguments": "{}"}}
                 ]},
                {"role": "tool", "tool_call_id": "c3", "content": "?"}
            ]
        }));
        let out = serde_json::to_value(request(&req).unwrap()).unwrap();
        assert_eq!(
            out["generationConfig"]["thinkingConfig"],
            json!({"thinkingBudget": 24576, "includeThoughts": true})
        );
        let model = &out["contents"][1];
        assert_eq!(model["role"], "model");
        let parts = model["parts"].as_array().unwrap();
        assert_eq!(parts.len(), 2, "reasoning text is not sent back: {parts:?}");
        assert_eq!(parts[0]["thoughtSignature"], "c2lnLTE=");
        assert!(parts[1].get("thoughtSignature").is_none());
        // A call Gemini did not sign (made elsewhere) is let through.
        assert_eq!(
            out["contents"][3]["parts"][0]["thoughtSignature"],
            NO_SIGNATURE
        );

        let off = chat(json!({"model": "m", "reasoning_effort": "none",
            "messages": [{"role": "user", "content": "x"}]}));
        assert_eq!(
            serde_json::to_value(request(&off).unwrap()).unwrap()["generationConfig"]["thinkingConfig"],
            json!({"thinkingBudget": 0, "includeThoughts": false})
        );
        let own = chat(
            json!({"model": "m", "google": {"thinking_config": {"thinking_level": "low", "include_thoughts": true}},
            "messages": [{"role": "user", "content": "x"}]}),
        );
        assert_eq!(
            serde_json::to_value(request(&own).unwrap()).unwrap()["generationConfig"]["thinkingConfig"],
            json!({"thinkingLevel": "low", "includeThoughts": true})
        );
    }

    #[test]
    fn thoughts_signatures_and_logprobs_come_back_in_openai_shape() {
        let resp: GenerateResponse = serde_json::from_value(json!({
            "candidates": [{
                "content": {"role": "model", "parts": [
                    {"text": "The user wants weather.", "thought": true},
                    {"functionCall": {"name": "weather", "args": {"city": "Paris"}}, "thoughtSignature": "c2lnLTI="}
                ]},
                "finishReason": "STOP",
                "index": 0,
                "logprobsResult": {
                    "topCandidates": [{"candidates": [
                        {"token": "Hi", "logProbability": -0.1},
                        {"token": "Hello", "logProbability": -2.5}
                    ]}],
                    "chosenCandidates": [{"token": "Hi", "logProbability": -0.1}]
                }
            }],
            "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5, "thoughtsTokenCount": 7, "totalTokenCount": 22}
        }))
        .unwrap();
        let out = serde_json::to_value(response(resp, "gemini-2.5-pro", 1)).unwrap();
        let msg = &out["choices"][0]["message"];
        assert_eq!(msg["reasoning_content"], "The user wants weather.");
        assert_eq!(
            msg["tool_calls"][0]["extra_content"]["google"]["thought_signature"],
            "c2lnLTI="
        );
        assert_eq!(out["choices"][0]["finish_reason"], "tool_calls");
        let lp = &out["choices"][0]["logprobs"]["content"][0];
        assert_eq!(lp["token"], "Hi");
        assert_eq!(lp["logprob"], -0.1);
        assert_eq!(lp["bytes"], json!([72, 105]));
        assert_eq!(lp["top_logprobs"][1]["token"], "Hello");
        assert_eq!(out["usage"]["completion_tokens"], 12);
        assert_eq!(
            out["usage"]["completion_tokens_details"]["reasoning_tokens"],
            7
        );

        let mut t = StreamTranslator::new("gemini-2.5-pro", 1);
        let thought: GenerateResponse = serde_json::from_value(
            json!({"candidates": [{"content": {"role": "model", "parts": [
            {"text": "Thinking about it.", "thought": true}]}, "index": 0}]}),
        )
        .unwrap();
        let chunk = serde_json::to_value(t.on_event(thought).unwrap()).unwrap();
        assert_eq!(
            chunk["choices"][0]["delta"]["reasoning_content"],
            "Thinking about it."
        );
        let call: GenerateResponse = serde_json::from_value(json!({"candidates": [{"content": {"role": "model", "parts": [
            {"functionCall": {"name": "f", "args": {}}, "thoughtSignature": "c2ln"}]}, "finishReason": "STOP", "index": 0}]})).unwrap();
        let chunk = serde_json::to_value(t.on_event(call).unwrap()).unwrap();
        assert_eq!(
            chunk["choices"][0]["delta"]["tool_calls"][0]["extra_content"]["google"]["thought_signature"],
            "c2ln"
        );
    }

    #[test]
    fn logprobs_are_asked_for_and_audio_refused() {
        let req = chat(json!({"model": "m", "logprobs": true, "top_logprobs": 2,
            "messages": [{"role": "user", "content": "x"}]}));
        let out = serde_json::to_value(request(&req).unwrap()).unwrap();
        assert_eq!(out["generationConfig"]["responseLogprobs"], true);
        assert_eq!(out["generationConfig"]["logprobs"], 2);
        let audio = chat(json!({"model": "m", "modalities": ["text", "audio"],
            "messages": [{"role": "user", "content": "x"}]}));
        assert!(
            matches!(request(&audio), Err(Error::Unsupported(m)) if m.contains("`modalities`"))
        );
    }
}

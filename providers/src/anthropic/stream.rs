//! Anthropic stream events → OpenAI `chat.completion.chunk`s, one event at a
//! time: nothing is buffered beyond the event being translated.

use std::collections::HashMap;

use loom_models::anthropic::{self as an, Block, BlockDelta, StreamEvent};
use loom_models::chat::{
    ChatChunk, ChunkChoice, Delta, FunctionCallDelta, Role, ToolCallDelta, Usage,
};

use super::translate::{REASONING, REASONING_SIGNATURE, finish_reason, thinking_of, usage};
use crate::Error;

/// The state of one translated stream.
#[derive(Debug, Default)]
pub struct Translator {
    provider: String,
    id: String,
    model: String,
    created: u64,
    /// Anthropic content-block index → OpenAI tool-call index.
    tools: HashMap<u32, u32>,
    usage: an::Usage,
    /// Set at `message_stop`: the stream ended properly.
    pub finished: bool,
}

impl Translator {
    /// A translator for a stream of `provider`, timestamped `created`.
    pub fn new(provider: &str, created: u64) -> Translator {
        Translator {
            provider: provider.to_owned(),
            created,
            ..Translator::default()
        }
    }

    fn chunk(&self, delta: Delta, finish: Option<String>) -> ChatChunk {
        ChatChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".to_owned(),
            created: self.created,
            model: self.model.clone(),
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                finish_reason: finish,
                ..ChunkChoice::default()
            }],
            ..ChatChunk::default()
        }
    }

    /// A chunk carrying reasoning (or its signature) beside the content,
    /// under the name OpenAI-compatible servers use.
    fn reasoning(&self, key: &str, text: &str) -> Option<ChatChunk> {
        if text.is_empty() {
            return None;
        }
        let mut delta = Delta::default();
        delta
            .extra
            .insert(key.to_owned(), serde_json::Value::from(text));
        Some(self.chunk(delta, None))
    }

    fn tool_delta(&self, call: ToolCallDelta) -> ChatChunk {
        self.chunk(
            Delta {
                tool_calls: Some(vec![call]),
                ..Delta::default()
            },
            None,
        )
    }

    /// The chunk (if any) that one event becomes.
    pub fn on_event(&mut self, event: StreamEvent) -> Result<Option<ChatChunk>, Error> {
        Ok(match event {
            StreamEvent::MessageStart { message } => {
                self.id = message.id;
                self.model = message.model;
                self.usage = message.usage;
                Some(self.chunk(
                    Delta {
                        role: Some(Role::Assistant),
                        content: Some(String::new()),
                        ..Delta::default()
                    },
                    None,
                ))
            }
            StreamEvent::ContentBlockStart {
                index,
                content_block,
            } => match content_block {
                Block::ToolUse { id, name, .. } => {
                    let tool_index = self.tools.len() as u32;
                    self.tools.insert(index, tool_index);
                    Some(self.tool_delta(ToolCallDelta {
                        index: tool_index,
                        id: Some(id),
                        kind: Some("function".to_owned()),
                        function: Some(FunctionCallDelta {
                            name: Some(name),
                            arguments: Some(String::new()),
                        }),
                        ..ToolCallDelta::default()
                    }))
                }
                Block::Text { text, .. } if !text.is_empty() => Some(self.chunk(
                    Delta {
                        content: Some(text),
                        ..Delta::default()
                    },
                    None,
                )),
                Block::Other(v) => thinking_of(&v).and_then(|(t, _)| self.reasoning(REASONING, t)),
                _ => None,
            },
            StreamEvent::ContentBlockDelta { index, delta } => match delta {
                BlockDelta::TextDelta { text } => Some(self.chunk(
                    Delta {
                        content: Some(text),
                        ..Delta::default()
                    },
                    None,
                )),
                BlockDelta::InputJsonDelta { partial_json } => {
                    let tool_index = *self.tools.get(&index).ok_or_else(|| Error::Stream {
                        provider: self.provider.clone(),
                        detail: format!(
                            "input_json_delta for block {index}, which is not a tool_use block"
                        ),
                    })?;
                    Some(self.tool_delta(ToolCallDelta {
                        index: tool_index,
                        function: Some(FunctionCallDelta {
                            name: None,
                            arguments: Some(partial_json),
                        }),
                        ..ToolCallDelta::default()
                    }))
                }
                BlockDelta::Other(v) => {
                    let text =
                        |key: &str| v.get(key).and_then(serde_json::Value::as_str).unwrap_or("");
                    match v.get("type").and_then(serde_json::Value::as_str) {
                        Some("thinking_delta") => self.reasoning(REASONING, text("thinking")),
                        Some("signature_delta") => {
                            self.reasoning(REASONING_SIGNATURE, text("signature"))
                        }
                        _ => None,
                    }
                }
            },
            StreamEvent::ContentBlockStop { .. } | StreamEvent::Ping => None,
            StreamEvent::MessageDelta { delta, usage: u } => {
                if let Some(u) = u {
                    self.usage.output_tokens = u.output_tokens;
                    if u.input_tokens > 0 {
                        self.usage.input_tokens = u.input_tokens;
                    }
                }
                Some(self.chunk(
                    Delta::default(),
                    finish_reason(delta.stop_reason.as_deref()),
                ))
            }
            StreamEvent::MessageStop => {
                self.finished = true;
                let mut last = self.chunk(Delta::default(), None);
                last.choices.clear();
                last.usage = Some(self.final_usage());
                Some(last)
            }
            StreamEvent::Error { error } => {
                return Err(Error::Stream {
                    provider: self.provider.clone(),
                    detail: format!("{}: {}", error.kind, error.message),
                });
            }
        })
    }

    /// Usage as reported so far.
    pub fn final_usage(&self) -> Usage {
        usage(&self.usage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(lines: &[&str]) -> Vec<ChatChunk> {
        let mut t = Translator::new("anthropic", 1);
        let mut out = Vec::new();
        for l in lines {
            if let Some(c) = t.on_event(serde_json::from_str(l).unwrap()).unwrap() {
                out.push(c);
            }
        }
        assert!(t.finished);
        out
    }

    #[test]
    fn text_and_tool_call_stream() {
        let out = events(&[
            r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude-3-5-sonnet","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":25,"output_tokens":1}}}"#,
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            r#"{"type":"ping"}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Let me "}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"check."}}"#,
            r#"{"type":"content_block_stop","index":0}"#,
            r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_9","name":"weather","input":{}}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"city\": "}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"\"Paris\"}"}}"#,
            r#"{"type":"content_block_stop","index":1}"#,
            r#"{"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":42}}"#,
            r#"{"type":"message_stop"}"#,
        ]);
        assert_eq!(out[0].choices[0].delta.role, Some(Role::Assistant));
        let text: String = out
            .iter()
            .filter_map(|c| c.choices.first()?.delta.content.clone())
            .collect();
        assert_eq!(text, "Let me check.");
        let calls: Vec<&ToolCallDelta> = out
            .iter()
            .filter_map(|c| c.choices.first()?.delta.tool_calls.as_ref())
            .flatten()
            .collect();
        assert_eq!(calls[0].id.as_deref(), Some("toolu_9"));
        assert!(calls.iter().all(|c| c.index == 0));
        let args: String = calls
            .iter()
            .filter_map(|c| c.function.as_ref()?.arguments.clone())
            .collect();
        assert_eq!(args, "{\"city\": \"Paris\"}");
        let finish = out
            .iter()
            .find_map(|c| c.choices.first()?.finish_reason.clone());
        assert_eq!(finish.as_deref(), Some("tool_calls"));
        let last = out.last().unwrap();
        assert!(last.choices.is_empty());
        let u = last.usage.as_ref().unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (25, 42, 67)
        );
        assert!(
            out.iter()
                .all(|c| c.id == "msg_1" && c.model == "claude-3-5-sonnet")
        );
    }

    #[test]
    fn error_event_is_a_stream_error() {
        let mut t = Translator::new("anthropic", 1);
        let e = t
            .on_event(serde_json::from_str(r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#).unwrap())
            .unwrap_err();
        assert!(e.to_string().contains("Overloaded"));
    }

    #[test]
    fn thinking_streams_as_reasoning_content() {
        let out = events(&[
            r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":5,"output_tokens":1}}}"#,
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"First, "}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"add."}}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQBCgIYAhIM"}}"#,
            r#"{"type":"content_block_stop","index":0}"#,
            r#"{"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}"#,
            r#"{"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"4"}}"#,
            r#"{"type":"content_block_stop","index":1}"#,
            r#"{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":20}}"#,
            r#"{"type":"message_stop"}"#,
        ]);
        let field = |key: &str| -> String {
            out.iter()
                .filter_map(|c| {
                    c.choices
                        .first()?
                        .delta
                        .extra
                        .get(key)?
                        .as_str()
                        .map(str::to_owned)
                })
                .collect()
        };
        assert_eq!(field("reasoning_content"), "First, add.");
        assert_eq!(field("reasoning_signature"), "EqQBCgIYAhIM");
        let text: String = out
            .iter()
            .filter_map(|c| c.choices.first()?.delta.content.clone())
            .collect();
        assert_eq!(text, "4");
    }
}

//! Property: a canonical request translated to Anthropic's Messages format and
//! back keeps every field Anthropic supports.

use loom_models::chat::{ChatRequest, Content, FunctionCall, Message, Role, Stop, ToolCall};
use loom_providers::anthropic::{ingress, translate};
use proptest::prelude::*;
use serde_json::Value;

fn text() -> impl Strategy<Value = String> {
    // Printable text including multi-byte characters and JSON-special ones.
    "[a-zA-Z0-9 .,!?\"\\\\{}éß€☀️]{1,40}"
}

fn turn(i: usize) -> impl Strategy<Value = Message> {
    let role = if i.is_multiple_of(2) {
        Role::User
    } else {
        Role::Assistant
    };
    (text(), proptest::option::of((text(), 0u32..5))).prop_map(move |(t, call)| {
        let tool_calls = match (role, call) {
            (Role::Assistant, Some((name, n))) => Some(vec![ToolCall {
                id: format!("toolu_{n}"),
                kind: "function".to_owned(),
                function: FunctionCall {
                    name: name
                        .chars()
                        .filter(char::is_ascii_alphanumeric)
                        .collect::<String>()
                        + "f",
                    arguments: serde_json::json!({"n": n, "s": "x"}).to_string(),
                },
                extra: Default::default(),
            }]),
            _ => None,
        };
        Message {
            role,
            content: Some(Content::Text(t)),
            tool_calls,
            ..Message::default()
        }
    })
}

fn request() -> impl Strategy<Value = ChatRequest> {
    (
        proptest::option::of(text()),
        (1usize..6).prop_flat_map(|n| (0..n).map(turn).collect::<Vec<_>>()),
        proptest::option::of(0.0f64..1.0),
        proptest::option::of(0.0f64..1.0),
        proptest::option::of(1u64..8192),
        proptest::option::of(proptest::collection::vec("[a-z]{1,5}", 1..3)),
    )
        .prop_map(|(system, turns, temperature, top_p, max_tokens, stop)| {
            let mut messages = Vec::new();
            if let Some(s) = system {
                messages.push(Message {
                    role: Role::System,
                    content: Some(Content::Text(s)),
                    ..Message::default()
                });
            }
            messages.extend(turns);
            ChatRequest {
                model: "claude".to_owned(),
                messages,
                temperature,
                top_p,
                max_tokens,
                stop: stop.map(Stop::Many),
                ..ChatRequest::default()
            }
        })
}

fn args(m: &Message) -> Vec<(String, String, Value)> {
    m.tool_calls
        .iter()
        .flatten()
        .map(|c| {
            (
                c.id.clone(),
                c.function.name.clone(),
                serde_json::from_str(&c.function.arguments).unwrap_or(Value::Null),
            )
        })
        .collect()
}

proptest! {
    #[test]
    fn survives_translate_then_parse(req in request()) {
        let wire = translate::request(&req, "claude", false).expect("translatable");
        // Through the wire format as text, as it really travels.
        let json = serde_json::to_string(&wire).expect("serialisable");
        let parsed = serde_json::from_str(&json).expect("parseable");
        let back = ingress::to_chat(&parsed).expect("translatable back");

        prop_assert_eq!(back.temperature, req.temperature);
        prop_assert_eq!(back.top_p, req.top_p);
        prop_assert_eq!(back.max_tokens, Some(req.max_tokens.unwrap_or(translate::DEFAULT_MAX_TOKENS)));
        prop_assert_eq!(&back.stop, &req.stop);
        prop_assert_eq!(back.messages.len(), req.messages.len());
        for (a, b) in req.messages.iter().zip(&back.messages) {
            prop_assert_eq!(a.role, b.role);
            prop_assert_eq!(a.text(), b.text());
            prop_assert_eq!(args(a), args(b));
        }
    }
}

//! Translation cost: OpenAI ↔ Anthropic requests of about 2 KB, whole
//! responses, and stream chunks in both directions (including the JSON
//! parse and serialisation each step needs on the wire).
//!
//!     cargo bench -p loom-providers --bench translation

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{Criterion, criterion_group, criterion_main};
use loom_models::anthropic::{MessagesRequest, MessagesResponse, StreamEvent};
use loom_models::chat::{ChatChunk, ChatRequest};
use loom_models::responses::ResponsesRequest;
use loom_providers::anthropic::ingress::{self, EventEncoder};
use loom_providers::anthropic::stream::Translator;
use loom_providers::anthropic::translate;
use loom_providers::responses;
use serde_json::json;

/// A chat request of about 2 KB: system prompt, a few turns, a tool round trip.
fn openai_request() -> Vec<u8> {
    let filler = "Lisbon in May is mild and mostly dry, with long sunny afternoons. ";
    serde_json::to_vec(&json!({
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": format!("You are a concise travel assistant. {}", filler.repeat(5))},
            {"role": "user", "content": format!("I am planning a trip. {}", filler.repeat(7))},
            {"role": "assistant", "content": "Let me check the forecast.", "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Lisbon\",\"month\":5}"}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "{\"avg_high_c\":22,\"rain_days\":6}"},
            {"role": "user", "content": format!("Thanks. {}", filler.repeat(7))}
        ],
        "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Monthly weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "month": {"type": "integer"}}}}}],
        "temperature": 0.2,
        "max_tokens": 400
    }))
    .unwrap_or_default()
}

fn anthropic_request() -> Vec<u8> {
    let filler = "Lisbon in May is mild and mostly dry, with long sunny afternoons. ";
    serde_json::to_vec(&json!({
        "model": "gpt-4o", "max_tokens": 400,
        "system": format!("You are a concise travel assistant. {}", filler.repeat(5)),
        "messages": [
            {"role": "user", "content": format!("I am planning a trip. {}", filler.repeat(7))},
            {"role": "assistant", "content": [{"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Lisbon", "month": 5}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "{\"avg_high_c\":22}"},
                {"type": "text", "text": format!("Thanks. {}", filler.repeat(7))}]}
        ],
        "tools": [{"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    }))
    .unwrap_or_default()
}

const ANTHROPIC_RESPONSE: &[u8] =
    include_bytes!("../../tests/e2e/fixtures/anthropic_tool_use.json");
const ANTHROPIC_EVENT: &str = r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" in Paris — sunny and warm, about"}}"#;
const OPENAI_CHUNK: &str = r#"{"id":"chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG","object":"chat.completion.chunk","created":1741570283,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_eb9dce56a8","choices":[{"index":0,"delta":{"content":" in Paris — sunny and warm, about"},"logprobs":null,"finish_reason":null}]}"#;

fn benches(c: &mut Criterion) {
    let openai = openai_request();
    let anthropic = anthropic_request();
    eprintln!(
        "request sizes: openai {} B, anthropic {} B",
        openai.len(),
        anthropic.len()
    );

    c.bench_function(
        "openai→anthropic request (2 KB, parse+translate+serialise)",
        |b| {
            b.iter(|| {
                let req: ChatRequest =
                    serde_json::from_slice(black_box(&openai)).unwrap_or_default();
                let out = translate::request(&req, "claude-3-5-sonnet", false).ok();
                black_box(serde_json::to_vec(&out).unwrap_or_default())
            })
        },
    );
    c.bench_function(
        "anthropic→openai request (2 KB, parse+translate+serialise)",
        |b| {
            b.iter(|| {
                let req: MessagesRequest =
                    serde_json::from_slice(black_box(&anthropic)).unwrap_or_default();
                let out = ingress::to_chat(&req).ok();
                black_box(serde_json::to_vec(&out).unwrap_or_default())
            })
        },
    );
    c.bench_function(
        "anthropic→openai response (parse+translate+serialise)",
        |b| {
            b.iter(|| {
                let resp: MessagesResponse =
                    serde_json::from_slice(black_box(ANTHROPIC_RESPONSE)).unwrap_or_default();
                black_box(serde_json::to_vec(&translate::response(resp, 1)).unwrap_or_default())
            })
        },
    );
    let mut tr = Translator::new("anthropic", 1);
    let start = r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude","usage":{"input_tokens":1,"output_tokens":1}}}"#;
    let _ = tr.on_event(serde_json::from_str(start).unwrap_or(StreamEvent::Ping));
    c.bench_function(
        "anthropic event → openai chunk (parse+translate+serialise)",
        |b| {
            b.iter(|| {
                let ev: StreamEvent =
                    serde_json::from_str(black_box(ANTHROPIC_EVENT)).unwrap_or(StreamEvent::Ping);
                let chunk = tr.on_event(ev).ok().flatten();
                black_box(serde_json::to_vec(&chunk).unwrap_or_default())
            })
        },
    );
    let mut enc = EventEncoder::new("gpt-4o");
    let mut first = BytesMut::new();
    enc.on_chunk(
        &serde_json::from_str(OPENAI_CHUNK).unwrap_or_default(),
        &mut first,
    );
    c.bench_function(
        "openai chunk → anthropic events (parse+translate+serialise)",
        |b| {
            b.iter(|| {
                let chunk: ChatChunk =
                    serde_json::from_str(black_box(OPENAI_CHUNK)).unwrap_or_default();
                let mut out = BytesMut::new();
                enc.on_chunk(&chunk, &mut out);
                black_box(out)
            })
        },
    );
}

/// A Responses request of about 2 KB, the same conversation as
/// [`openai_request`] in items.
fn responses_request() -> Vec<u8> {
    let filler = "Lisbon in May is mild and mostly dry, with long sunny afternoons. ";
    serde_json::to_vec(&json!({
        "model": "claude-3-5-sonnet",
        "instructions": format!("You are a concise travel assistant. {}", filler.repeat(5)),
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": format!("I am planning a trip. {}", filler.repeat(7))}]},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{\"city\":\"Lisbon\",\"month\":5}"},
            {"type": "function_call_output", "call_id": "call_1", "output": "{\"avg_high_c\":22,\"rain_days\":6}"},
            {"role": "user", "content": format!("Thanks. {}", filler.repeat(7))}
        ],
        "tools": [{"type": "function", "name": "get_weather", "description": "Monthly weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "month": {"type": "integer"}}}}],
        "temperature": 0.2, "max_output_tokens": 400, "store": false
    }))
    .unwrap_or_default()
}

/// The Responses API to an Anthropic provider and back: the client's
/// request to Anthropic's body, Anthropic's answer to the client's
/// response object; and one stream event each way.
fn responses(c: &mut Criterion) {
    let body = responses_request();
    eprintln!("responses request: {} B", body.len());
    c.bench_function(
        "responses→anthropic request and anthropic→responses answer (2 KB)",
        |b| {
            b.iter(|| {
                let req: ResponsesRequest =
                    serde_json::from_slice(black_box(&body)).unwrap_or_default();
                let echo = responses::Echo::of(&req);
                let chat = responses::to_chat(&req).unwrap_or_default();
                let out = translate::request(&chat, "claude-3-5-sonnet", false).ok();
                let sent = serde_json::to_vec(&out).unwrap_or_default();
                let resp: MessagesResponse =
                    serde_json::from_slice(black_box(ANTHROPIC_RESPONSE)).unwrap_or_default();
                let answer = responses::from_chat(&translate::response(resp, 1), &echo);
                black_box((sent, answer))
            })
        },
    );
    let mut tr = Translator::new("anthropic", 1);
    let start = r#"{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude","usage":{"input_tokens":1,"output_tokens":1}}}"#;
    let _ = tr.on_event(serde_json::from_str(start).unwrap_or(StreamEvent::Ping));
    let mut enc = responses::EventEncoder::new("claude-3-5-sonnet", responses::Echo::default());
    let mut first = BytesMut::new();
    enc.on_chunk(
        &serde_json::from_str(OPENAI_CHUNK).unwrap_or_default(),
        &mut first,
    );
    c.bench_function(
        "anthropic event → responses event (parse+translate+serialise)",
        |b| {
            b.iter(|| {
                let ev: StreamEvent =
                    serde_json::from_str(black_box(ANTHROPIC_EVENT)).unwrap_or(StreamEvent::Ping);
                let mut out = BytesMut::new();
                if let Some(chunk) = tr.on_event(ev).ok().flatten() {
                    enc.on_chunk(&chunk, &mut out);
                }
                black_box(out)
            })
        },
    );
    c.bench_function(
        "openai chunk → responses event (parse+translate+serialise)",
        |b| {
            b.iter(|| {
                let chunk: ChatChunk =
                    serde_json::from_str(black_box(OPENAI_CHUNK)).unwrap_or_default();
                let mut out = BytesMut::new();
                enc.on_chunk(&chunk, &mut out);
                black_box(out)
            })
        },
    );
}

criterion_group!(translation, benches, responses);
criterion_main!(translation);

//! Entry points of the fuzz targets in `fuzz/` (and of the tests that replay
//! their corpora). Any bytes in: never a panic; a translation either fails
//! with a typed error or produces JSON that serialises and parses again.

use bytes::Bytes;
use futures_util::StreamExt;
use loom_models::anthropic::{MessagesRequest, MessagesResponse, StreamEvent};
use loom_models::chat::{ChatChunk, ChatRequest, ChatResponse};
use loom_models::gemini::GenerateResponse;
use serde::Serialize;

/// Serialises `value` and checks that the text is JSON again.
fn round_trips<T: Serialize>(value: &T) {
    let text = serde_json::to_vec(value).expect("a translated value serialises");
    serde_json::from_slice::<serde_json::Value>(&text).expect("and parses again");
}

/// The usage scanner over an answer body, held to serde's reading: where
/// serde reads the object's `usage` (other members ignored), the scanner
/// reads the same counts.
pub fn usage(data: &[u8]) {
    #[derive(serde::Deserialize)]
    struct Answer {
        usage: Option<loom_models::chat::Usage>,
    }
    let scanned = crate::usage::usage_of(data);
    if let Ok(answer) = serde_json::from_slice::<Answer>(data)
        && data.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
    {
        let scanned = scanned.expect("what serde reads, the scanner reads");
        // The counts the scanner reads (it leaves the details' other
        // members), with its one rule: a total left out or 0 is the sum.
        let counts = |u: &Option<loom_models::chat::Usage>| {
            u.as_ref().map(|u| {
                (
                    u.prompt_tokens,
                    u.completion_tokens,
                    if u.total_tokens > 0 {
                        u.total_tokens
                    } else {
                        u.prompt_tokens.saturating_add(u.completion_tokens)
                    },
                    u.prompt_tokens_details.as_ref().map(|d| d.cached_tokens),
                    u.completion_tokens_details
                        .as_ref()
                        .map(|d| d.reasoning_tokens),
                )
            })
        };
        assert_eq!(
            counts(&answer.usage),
            counts(&scanned),
            "serde and the scanner disagree"
        );
    }
}

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a current-thread runtime");
}

/// An OpenAI SSE stream arriving in reads whose size the first byte picks.
pub fn sse(data: &[u8]) {
    let (size, rest) = match data.split_first() {
        Some((s, rest)) => (usize::from(*s % 32) + 1, rest),
        None => (1, data),
    };
    let reads: Vec<Result<Bytes, std::convert::Infallible>> = rest
        .chunks(size)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    RUNTIME.with(|rt| {
        rt.block_on(async {
            let far = tokio::time::Instant::now() + std::time::Duration::from_secs(3600);
            let items = crate::sse::sse_json::<ChatChunk, _, _>(
                "fuzz".into(),
                futures_util::stream::iter(reads),
                far,
            );
            let mut items = std::pin::pin!(items);
            let mut n = 0usize;
            while let Some(item) = items.next().await {
                n += 1;
                assert!(n <= rest.len() + 1, "more items than bytes");
                if let Ok(chunk) = item {
                    round_trips(&chunk);
                }
            }
        });
    });
}

/// The pass-through relay of OpenAI-format streams: any bytes, read in
/// pieces of any size, relay the same frames, usage and outcome as the same
/// bytes read at once; every frame is whole events.
pub fn passthrough(data: &[u8]) {
    let (size, rest) = match data.split_first() {
        Some((s, rest)) => (usize::from(*s % 32) + 1, rest),
        None => (1, data),
    };
    let relay = |size: usize| {
        let reads: Vec<Result<Bytes, std::convert::Infallible>> = rest
            .chunks(size.max(1))
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        RUNTIME.with(|rt| {
            rt.block_on(async {
                let far = tokio::time::Instant::now() + std::time::Duration::from_secs(3600);
                let mut items =
                    crate::passthrough::raw_events("fuzz", futures_util::stream::iter(reads), far);
                let (mut frames, mut usage, mut failed, mut n) = (Vec::new(), Vec::new(), false, 0);
                while let Some(item) = items.next().await {
                    n += 1;
                    assert!(n <= rest.len() + 2, "more items than bytes");
                    match item {
                        Ok(ev) => {
                            assert!(!ev.frame.is_empty(), "an empty frame");
                            assert!(
                                matches!(ev.frame.last(), Some(b'\n' | b'\r')),
                                "a frame that is not whole events"
                            );
                            frames.extend_from_slice(&ev.frame);
                            usage.push(ev.usage.map(|u| u.total_tokens));
                        }
                        Err(_) => failed = true,
                    }
                }
                let usage: Vec<u64> = usage.into_iter().flatten().collect();
                (frames, usage, failed)
            })
        })
    };
    assert_eq!(
        relay(size),
        relay(rest.len()),
        "the split changed what was relayed"
    );
}

/// The Anthropic translators, both ways; the first byte picks which.
pub fn anthropic(data: &[u8]) {
    let Some((which, json)) = data.split_first() else {
        return;
    };
    match which % 5 {
        0 => {
            if let Ok(req) = serde_json::from_slice::<ChatRequest>(json)
                && let Ok(out) = crate::anthropic::translate::request(&req, "m", which & 8 != 0)
            {
                round_trips(&out);
            }
        }
        1 => {
            if let Ok(resp) = serde_json::from_slice::<MessagesResponse>(json) {
                round_trips(&crate::anthropic::translate::response(resp, 0));
            }
        }
        2 => {
            if let Ok(req) = serde_json::from_slice::<MessagesRequest>(json)
                && let Ok(chat) = crate::anthropic::ingress::to_chat(&req)
            {
                round_trips(&chat);
            }
        }
        3 => {
            if let Ok(resp) = serde_json::from_slice::<ChatResponse>(json) {
                round_trips(&crate::anthropic::ingress::from_chat(&resp));
            }
        }
        _ => {
            // A stream: one event per line, each translated to chat chunks,
            // then those chunks encoded back as Anthropic events.
            let mut translator = crate::anthropic::stream::Translator::new("fuzz", 0);
            let mut encoder = crate::anthropic::ingress::EventEncoder::new("m");
            let mut out = bytes::BytesMut::new();
            for line in json.split(|b| *b == b'\n') {
                let Ok(event) = serde_json::from_slice::<StreamEvent>(line) else {
                    continue;
                };
                match translator.on_event(event) {
                    Ok(Some(chunk)) => {
                        round_trips(&chunk);
                        encoder.on_chunk(&chunk, &mut out);
                    }
                    Ok(None) => {}
                    Err(_) => break,
                }
            }
            encoder.finish(&mut out);
            round_trips(&translator.final_usage());
        }
    }
}

/// The Gemini translators; the first byte picks which.
pub fn gemini(data: &[u8]) {
    let Some((which, json)) = data.split_first() else {
        return;
    };
    match which % 3 {
        0 => {
            if let Ok(req) = serde_json::from_slice::<ChatRequest>(json)
                && let Ok(out) = crate::gemini::translate::request(&req)
            {
                round_trips(&out);
            }
        }
        1 => {
            if let Ok(resp) = serde_json::from_slice::<GenerateResponse>(json) {
                round_trips(&crate::gemini::translate::response(resp, "m", 0));
            }
        }
        _ => {
            let mut t = crate::gemini::translate::StreamTranslator::new("m", 0);
            for line in json.split(|b| *b == b'\n') {
                if let Ok(ev) = serde_json::from_slice::<GenerateResponse>(line)
                    && let Some(chunk) = t.on_event(ev)
                {
                    round_trips(&chunk);
                }
            }
            round_trips(&t.usage_chunk());
        }
    }
}

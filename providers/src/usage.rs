//! Reading `usage` out of a provider's JSON answer without building the rest.
//!
//! A provider's answer is passed to the client byte for byte; the gateway
//! only needs its `usage`. Deserialising the whole body to find it (even
//! skipping unknown fields) cost about 13,000 instructions per request on a
//! typical pretty-printed OpenAI answer under callgrind (`bench/instructions.sh`),
//! 16% of a chat request. [`usage_of`] instead walks the body once, jumping
//! through strings with `memchr`, checks that objects and arrays balance, and
//! deserialises only the top-level `usage` value.

use loom_models::chat::{CompletionTokensDetails, PromptTokensDetails, Usage};
use serde::Deserialize;

#[derive(Deserialize)]
struct Counts {
    #[serde(default)]
    prompt_tokens: u64,
    #[serde(default)]
    completion_tokens: u64,
    #[serde(default)]
    total_tokens: u64,
    #[serde(default)]
    prompt_tokens_details: Option<Cached>,
    #[serde(default)]
    completion_tokens_details: Option<Reasoning>,
}

#[derive(Deserialize)]
struct Cached {
    #[serde(default)]
    cached_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct Reasoning {
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

/// The `usage` of a JSON object. Fails when the body is not a complete JSON
/// object (unbalanced brackets, an unterminated string, a truncated body).
pub(crate) fn usage_of(body: &[u8]) -> Result<Option<Usage>, String> {
    let value = match top_level_value(body, b"usage")? {
        None => return Ok(None),
        Some(at) => &body[at..],
    };
    let mut de = serde_json::Deserializer::from_slice(value);
    let counts: Option<Counts> = Deserialize::deserialize(&mut de).map_err(|e| e.to_string())?;
    Ok(counts.map(into_usage))
}

/// Where the value of top-level `key` starts, after checking the body's shape.
fn top_level_value(body: &[u8], key: &[u8]) -> Result<Option<usize>, String> {
    let start = body
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .ok_or("empty body")?;
    if body[start] != b'{' {
        return Err("the answer is not a JSON object".to_owned());
    }
    let mut depth = 0usize;
    let mut found = None;
    let mut i = start;
    while i < body.len() {
        let b = body[i];
        if !STRUCTURAL[usize::from(b)] {
            i += 1;
            continue;
        }
        match b {
            b'"' => {
                let end = string_end(body, i + 1).ok_or("unterminated string")?;
                // A key of the top-level object: a string at depth 1 followed by ':'.
                if depth == 1 && found.is_none() && &body[i + 1..end] == key {
                    let mut j = end + 1;
                    while j < body.len() && body[j].is_ascii_whitespace() {
                        j += 1;
                    }
                    if body.get(j) == Some(&b':') {
                        found = Some(j + 1);
                    }
                }
                i = end + 1;
                continue;
            }
            b'{' | b'[' => depth += 1,
            _ => {
                depth = depth.checked_sub(1).ok_or("unbalanced brackets")?;
                if depth == 0 {
                    let rest = &body[i + 1..];
                    if !rest.iter().all(u8::is_ascii_whitespace) {
                        return Err("trailing characters after the JSON object".to_owned());
                    }
                    return Ok(found);
                }
            }
        }
        i += 1;
    }
    Err("truncated JSON object".to_owned())
}

/// Bytes the scan stops at outside strings: quotes and brackets.
const STRUCTURAL: [bool; 256] = {
    let mut t = [false; 256];
    t[b'"' as usize] = true;
    t[b'{' as usize] = true;
    t[b'}' as usize] = true;
    t[b'[' as usize] = true;
    t[b']' as usize] = true;
    t
};

/// Index of the quote that closes the string whose content starts at `from`.
/// Keys and short values end within a few bytes, where a plain loop beats
/// setting up a vectorised search; longer strings use `memchr`.
fn string_end(body: &[u8], mut from: usize) -> Option<usize> {
    let short_end = body.len().min(from + 16);
    while from < short_end {
        match body[from] {
            b'"' => return Some(from),
            b'\\' => from += 2,
            _ => from += 1,
        }
    }
    loop {
        let at = from + memchr::memchr2(b'"', b'\\', body.get(from..)?)?;
        if body[at] == b'"' {
            return Some(at);
        }
        from = at + 2; // skip the escaped character
    }
}

fn into_usage(c: Counts) -> Usage {
    let mut u = Usage::new(c.prompt_tokens, c.completion_tokens);
    if c.total_tokens > 0 {
        u.total_tokens = c.total_tokens;
    }
    u.prompt_tokens_details = c.prompt_tokens_details.map(|d| PromptTokensDetails {
        cached_tokens: d.cached_tokens,
        ..PromptTokensDetails::default()
    });
    u.completion_tokens_details = c
        .completion_tokens_details
        .map(|d| CompletionTokensDetails {
            reasoning_tokens: d.reasoning_tokens,
            ..CompletionTokensDetails::default()
        });
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_usage_and_details_and_rejects_non_objects() {
        let u = usage_of(br#"{"id":"x","choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,"prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":{"reasoning_tokens":2}}}"#)
            .unwrap()
            .unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (19, 10, 29)
        );
        assert_eq!(u.prompt_tokens_details.unwrap().cached_tokens, Some(4));
        assert_eq!(
            u.completion_tokens_details.unwrap().reasoning_tokens,
            Some(2)
        );
        // Embeddings report prompt tokens only.
        let u = usage_of(br#"{"usage":{"prompt_tokens":5,"total_tokens":5}}"#)
            .unwrap()
            .unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (5, 0, 5)
        );
        assert_eq!(usage_of(br#"{"usage":null}"#).unwrap(), None);
        assert!(usage_of(b"[1,2]").is_err());
        assert!(usage_of(b"{\"id\":").is_err());
    }

    #[test]
    fn ignores_usage_inside_strings_and_nested_objects() {
        let body = br#"{"choices":[{"message":{"content":"say \"usage\": {\"prompt_tokens\": 1}","usage":{"prompt_tokens":7}}}],
            "usage" : {"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#;
        let u = usage_of(body).unwrap().unwrap();
        assert_eq!((u.prompt_tokens, u.completion_tokens), (3, 4));
        assert_eq!(usage_of(br#"{"a":"\\","b":{"usage":1}}"#).unwrap(), None);
    }

    #[test]
    fn rejects_truncated_and_unbalanced_bodies() {
        let whole =
            br#"{"id":"x","usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#;
        assert!(usage_of(whole).is_ok());
        for cut in 1..whole.len() {
            assert!(
                usage_of(&whole[..cut]).is_err(),
                "accepted a body cut at {cut}"
            );
        }
        assert!(usage_of(br#"{"a":1}}"#).is_err());
        assert!(usage_of(br#"{"a":"unterminated}"#).is_err());
        assert!(usage_of(br#"{"a":1} x"#).is_err());
    }

    #[test]
    fn agrees_with_a_full_parse_on_the_recorded_answer() {
        let body = include_bytes!("../../tests/e2e/fixtures/openai_chat.json");
        let full: loom_models::chat::ChatResponse = serde_json::from_slice(body).unwrap();
        let fast = usage_of(body).unwrap().unwrap();
        let expected = full.usage.unwrap();
        assert_eq!(
            (
                fast.prompt_tokens,
                fast.completion_tokens,
                fast.total_tokens
            ),
            (
                expected.prompt_tokens,
                expected.completion_tokens,
                expected.total_tokens
            )
        );
    }
}

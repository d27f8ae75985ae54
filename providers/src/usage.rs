//! Reading `usage` out of a provider's JSON answer without building the rest.
//!
//! A provider's answer is passed to the client byte for byte; the gateway
//! only needs its `usage`. Deserialising the whole body to find it (even
//! skipping unknown fields) cost about 13,000 instructions per request on a
//! typical pretty-printed OpenAI answer under callgrind (`bench/instructions.sh`),
//! 16% of a chat request. [`usage_of`] instead walks the body's structural
//! bytes once ([`blocks`]: the quotes that open strings and the brackets
//! outside them, found 64 bytes at a time), checks that objects and arrays
//! balance, and reads the few counts of the top-level `usage` as it passes
//! them. Earlier versions, on the recorded answer: serde for `usage` after a
//! byte-at-a-time walk, 14,600 instructions; a walk eight bytes at a time
//! with a separate reader for `usage`, 10,500 (docs/benchmarks.md, sessions
//! 7 and 9).

mod blocks;

use blocks::{Event, Structure};
use loom_models::chat::{CompletionTokensDetails, PromptTokensDetails, Usage};

/// The `usage` of a JSON object. Fails when the body is not a complete JSON
/// object (unbalanced brackets, an unterminated string, a truncated body),
/// or when a count of `usage` is not a whole number.
///
/// One walk over the body's structural bytes ([`Structure`]) checks its
/// shape and reads the counts as it passes them: the keys of the top-level
/// object (depth 1), those of `usage` (depth 2) and those of its details
/// objects (depth 3).
pub(crate) fn usage_of(body: &[u8]) -> Result<Option<Usage>, String> {
    let start = body
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .ok_or("empty body")?;
    if body[start] != b'{' {
        return Err("the answer is not a JSON object".to_owned());
    }
    let mut depth = 0usize;
    let mut state = State::Seek;
    let mut detail = Detail::None;
    let mut u = Usage::default();
    let mut total = None;
    let mut structure = Structure::new(body, start);
    for event in structure.by_ref() {
        match event {
            Event::String(at) => match (depth, state) {
                // Most keys are not `usage`: a prefix test passes them by.
                (1, State::Seek) if names(body, at, b"usage") => {
                    if let Some((b"usage", v)) = member(body, at) {
                        state = if literal(body, v, b"null") {
                            State::Null
                        } else if body.get(v) == Some(&b'{') {
                            State::Inside
                        } else {
                            return Err("`usage` is not an object".to_owned());
                        };
                    }
                }
                (2, State::Inside) => {
                    detail = Detail::None;
                    let Some((key, v)) = member(body, at) else {
                        continue;
                    };
                    match key {
                        b"prompt_tokens" => u.prompt_tokens = count(body, v, key)?.unwrap_or(0),
                        b"completion_tokens" => {
                            u.completion_tokens = count(body, v, key)?.unwrap_or(0);
                        }
                        b"total_tokens" => total = count(body, v, key)?,
                        b"prompt_tokens_details" if details(body, v)? => {
                            u.prompt_tokens_details = Some(PromptTokensDetails::default());
                            detail = Detail::Prompt;
                        }
                        b"prompt_tokens_details" => u.prompt_tokens_details = None,
                        b"completion_tokens_details" if details(body, v)? => {
                            u.completion_tokens_details = Some(CompletionTokensDetails::default());
                            detail = Detail::Completion;
                        }
                        b"completion_tokens_details" => u.completion_tokens_details = None,
                        _ => {}
                    }
                }
                (3, State::Inside) => {
                    let wanted: &[u8] = match detail {
                        Detail::None => continue,
                        Detail::Prompt => b"cached_tokens",
                        Detail::Completion => b"reasoning_tokens",
                    };
                    if !names(body, at, wanted) {
                        continue;
                    }
                    let Some((key, v)) = member(body, at) else {
                        continue;
                    };
                    let n = count(body, v, key)?;
                    if let Some(d) = u.prompt_tokens_details.as_mut()
                        && detail == Detail::Prompt
                    {
                        d.cached_tokens = n;
                    }
                    if let Some(d) = u.completion_tokens_details.as_mut()
                        && detail == Detail::Completion
                    {
                        d.reasoning_tokens = n;
                    }
                }
                _ => {}
            },
            Event::Open(_) => depth += 1,
            Event::Close(at) => {
                depth = depth.checked_sub(1).ok_or("unbalanced brackets")?;
                if depth == 1 && state == State::Inside {
                    state = State::Read;
                }
                if depth == 0 {
                    let rest = &body[at + 1..];
                    if !rest.iter().all(u8::is_ascii_whitespace) {
                        return Err("trailing characters after the JSON object".to_owned());
                    }
                    if state != State::Read {
                        return Ok(None);
                    }
                    // A total left out or reported as 0 is the sum (saturating:
                    // a provider's counts are not trusted not to overflow).
                    u.total_tokens = match total {
                        Some(t) if t > 0 => t,
                        _ => u.prompt_tokens.saturating_add(u.completion_tokens),
                    };
                    return Ok(Some(u));
                }
            }
        }
    }
    Err(if structure.in_string() {
        "unterminated string".to_owned()
    } else {
        "truncated JSON object".to_owned()
    })
}

/// How far the walk has got with `usage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Not met yet.
    Seek,
    /// `"usage": null`.
    Null,
    /// In the `usage` object (depth 2 and below).
    Inside,
    /// Past the end of the `usage` object.
    Read,
}

/// Which details object of `usage` the walk is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Detail {
    None,
    Prompt,
    Completion,
}

/// The key of an object member whose key string opens at `at`, and where
/// its value starts; `None` for a string that is not a key (a value: no `:`
/// follows it). Keys are taken raw: no key Loom reads has escapes.
fn member(body: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let end = string_end(body, at + 1)?;
    let colon = skip_ws(body, end + 1);
    (body.get(colon) == Some(&b':')).then(|| (&body[at + 1..end], skip_ws(body, colon + 1)))
}

/// Whether the string that opens at `at` is exactly `name`.
fn names(body: &[u8], at: usize, name: &[u8]) -> bool {
    body.get(at + 1..)
        .is_some_and(|s| s.starts_with(name) && s.get(name.len()) == Some(&b'"'))
}

/// The first index at or after `i` that is not JSON whitespace.
fn skip_ws(body: &[u8], mut i: usize) -> usize {
    while body.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    i
}

/// Whether `word` (`null`, say) starts at `i`.
fn literal(body: &[u8], i: usize, word: &[u8]) -> bool {
    body.get(i..).is_some_and(|r| r.starts_with(word))
}

/// Whether the details value at `i` is an object (`false`: `null`).
fn details(body: &[u8], i: usize) -> Result<bool, String> {
    match body.get(i) {
        Some(b'{') => Ok(true),
        _ if literal(body, i, b"null") => Ok(false),
        _ => Err("a details member of `usage` is not an object".to_owned()),
    }
}

/// The whole number of tokens at `i` (or `null`), for member `key`.
fn count(body: &[u8], i: usize, key: &[u8]) -> Result<Option<u64>, String> {
    if literal(body, i, b"null") {
        return Ok(None);
    }
    let rest = body.get(i..).unwrap_or_default();
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let text = &rest[..digits];
    let whole =
        !text.is_empty() && !matches!(rest.get(digits), Some(b'.' | b'e' | b'E' | b'-' | b'+'));
    let n = text.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    });
    match n {
        Some(n) if whole => Ok(Some(n)),
        _ => Err(format!(
            "usage.{} is not a whole number of tokens",
            String::from_utf8_lossy(key)
        )),
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// High bit set in each byte of `v` that is zero; exact for the lowest one,
/// which is the only one read.
fn zeros(v: u64) -> u64 {
    v.wrapping_sub(ONES) & !v & HIGHS
}

/// `byte` in every byte of a word.
const fn splat(byte: u8) -> u64 {
    byte as u64 * ONES
}

/// Index of the quote that closes the string whose content starts at `from`.
fn string_end(body: &[u8], mut from: usize) -> Option<usize> {
    loop {
        let at = from + quote_or_backslash(body.get(from..)?)?;
        if body[at] == b'"' {
            return Some(at);
        }
        from = at + 2; // skip the escaped character
    }
}

/// Index of the first `"` or `\\` in `s`. Keys and short values end within
/// a few words, checked eight bytes at a time (a byte loop cost about 100
/// instructions per key); past 32 bytes a string is long text, where
/// `memchr`'s vectorised search pays for its set-up.
fn quote_or_backslash(s: &[u8]) -> Option<usize> {
    let (words, _) = s.as_chunks::<8>();
    for (n, w) in words.iter().take(4).enumerate() {
        let w = u64::from_le_bytes(*w);
        let hits = zeros(w ^ splat(b'"')) | zeros(w ^ splat(b'\\'));
        if hits != 0 {
            return Some(n * 8 + (hits.trailing_zeros() / 8) as usize);
        }
    }
    let done = words.len().min(4) * 8;
    memchr::memchr2(b'"', b'\\', &s[done..]).map(|p| done + p)
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
    fn finds_the_first_quote_or_backslash() {
        // Each at every offset of four words and a tail, among bytes one bit
        // away from them.
        for background in [b' ', b'a', b';', b'=', b'Z', b'\\', 0xDB, 0xFD, 0x7F, 0x00] {
            for c in [b'"', b'\\'].into_iter().filter(|_| background != b'\\') {
                for len in [1, 7, 8, 9, 31, 32, 33, 40, 70] {
                    for at in 0..len {
                        let mut s = vec![background; len];
                        s[at] = c;
                        assert_eq!(quote_or_backslash(&s), Some(at), "{s:?}");
                    }
                    assert_eq!(quote_or_backslash(&vec![background; len]), None);
                }
            }
        }
    }

    #[test]
    fn reads_counts_and_refuses_what_is_not_a_count() {
        let pretty = b"{\n  \"usage\" : {\n    \"prompt_tokens\" : 12 ,\n    \"extra\": {\"a\": [1, {\"b\": \"}\"}]},\n    \"note\": \"x\\\"y\",\n    \"completion_tokens_details\": null,\n    \"completion_tokens\": 5\n  }\n}\n";
        let u = usage_of(pretty).unwrap().unwrap();
        assert_eq!(
            (u.prompt_tokens, u.completion_tokens, u.total_tokens),
            (12, 5, 17)
        );
        assert_eq!(u.completion_tokens_details, None);
        let u = usage_of(br#"{"usage":{}}"#).unwrap().unwrap();
        assert_eq!((u.prompt_tokens, u.total_tokens), (0, 0));
        for bad in [
            br#"{"usage":{"prompt_tokens":1.5}}"#.as_slice(),
            br#"{"usage":{"prompt_tokens":-1}}"#,
            br#"{"usage":{"prompt_tokens":"3"}}"#,
            br#"{"usage":{"prompt_tokens":1e3}}"#,
            br#"{"usage":{"prompt_tokens":99999999999999999999999}}"#,
            br#"{"usage":{"prompt_tokens_details":{"cached_tokens":true}}}"#,
            br#"{"usage":3}"#,
            br#"{"usage":[1]}"#,
            br#"{"usage":{"prompt_tokens_details":5}}"#,
            br#"{"usage":{"completion_tokens_details":[]}}"#,
        ] {
            assert!(usage_of(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
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

    proptest::proptest! {
        #[test]
        fn agrees_with_serde_on_any_usage(
            prompt in 0u64..u64::from(u32::MAX),
            completion in 0u64..1_000_000,
            cached in proptest::option::of(0u64..1000),
            reasoning in proptest::option::of(0u64..1000),
            text in ".{0,40}",
            pretty: bool,
        ) {
            let mut usage = serde_json::json!({
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
                "note": text,
            });
            if let Some(c) = cached {
                usage["prompt_tokens_details"] = serde_json::json!({"audio_tokens": 0, "cached_tokens": c});
            }
            if let Some(r) = reasoning {
                usage["completion_tokens_details"] = serde_json::json!({"reasoning_tokens": r, "x": [text]});
            }
            let answer = serde_json::json!({"id": text, "choices": [{"message": {"content": text}}], "usage": usage});
            let body = if pretty {
                serde_json::to_vec_pretty(&answer).unwrap()
            } else {
                serde_json::to_vec(&answer).unwrap()
            };
            let u = usage_of(&body).unwrap().unwrap();
            proptest::prop_assert_eq!((u.prompt_tokens, u.completion_tokens, u.total_tokens), (prompt, completion, prompt + completion));
            proptest::prop_assert_eq!(u.prompt_tokens_details.and_then(|d| d.cached_tokens), cached);
            proptest::prop_assert_eq!(u.completion_tokens_details.and_then(|d| d.reasoning_tokens), reasoning);
        }
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

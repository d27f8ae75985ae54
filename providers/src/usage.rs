//! Reading `usage` out of a provider's JSON answer without building the rest.
//!
//! A provider's answer is passed to the client byte for byte; the gateway
//! only needs its `usage`. Deserialising the whole body to find it (even
//! skipping unknown fields) cost about 13,000 instructions per request on a
//! typical pretty-printed OpenAI answer under callgrind (`bench/instructions.sh`),
//! 16% of a chat request. [`usage_of`] instead walks the body once, eight
//! bytes at a time (through long strings with `memchr`), checks that
//! objects and arrays balance, and reads only the
//! top-level `usage` value with a reader that knows its few counts. With
//! serde reading the `usage` object and a byte-at-a-time walk, the recorded
//! answer cost 14,600 instructions (18% of a chat request); with this module
//! about 10,500, most of it skipping the answer's strings
//! (docs/benchmarks.md, session 7).

use loom_models::chat::{CompletionTokensDetails, PromptTokensDetails, Usage};

/// The `usage` of a JSON object. Fails when the body is not a complete JSON
/// object (unbalanced brackets, an unterminated string, a truncated body),
/// or when a count of `usage` is not a whole number.
pub(crate) fn usage_of(body: &[u8]) -> Result<Option<Usage>, String> {
    let Some(at) = top_level_value(body, b"usage")? else {
        return Ok(None);
    };
    let mut r = Reader { b: body, i: at };
    r.ws();
    if r.literal(b"null") {
        return Ok(None);
    }
    let mut u = Usage::default();
    let mut total = None;
    r.object(|r, key| {
        match key {
            b"prompt_tokens" => u.prompt_tokens = r.count(key)?.unwrap_or(0),
            b"completion_tokens" => u.completion_tokens = r.count(key)?.unwrap_or(0),
            b"total_tokens" => total = r.count(key)?,
            b"prompt_tokens_details" => {
                if let Some(cached) = r.detail(b"cached_tokens")? {
                    u.prompt_tokens_details = Some(PromptTokensDetails {
                        cached_tokens: cached,
                        ..PromptTokensDetails::default()
                    });
                }
            }
            b"completion_tokens_details" => {
                if let Some(reasoning) = r.detail(b"reasoning_tokens")? {
                    u.completion_tokens_details = Some(CompletionTokensDetails {
                        reasoning_tokens: reasoning,
                        ..CompletionTokensDetails::default()
                    });
                }
            }
            _ => r.skip()?,
        }
        Ok(())
    })?;
    u.total_tokens = match total {
        Some(t) if t > 0 => t,
        _ => u.prompt_tokens + u.completion_tokens,
    };
    Ok(Some(u))
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
    while let Some(at) = next_structural(body, i) {
        match body[at] {
            b'"' => {
                let end = string_end(body, at + 1).ok_or("unterminated string")?;
                // A key of the top-level object: a string at depth 1 followed by ':'.
                if depth == 1 && found.is_none() && &body[at + 1..end] == key {
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
                    let rest = &body[at + 1..];
                    if !rest.iter().all(u8::is_ascii_whitespace) {
                        return Err("trailing characters after the JSON object".to_owned());
                    }
                    return Ok(found);
                }
            }
        }
        i = at + 1;
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

/// Index of the first quote or bracket at or after `from`. Eight bytes at a
/// time: most of a pretty-printed answer between those characters is
/// indentation and short values, which a byte-at-a-time loop paid about
/// five instructions a byte for.
fn next_structural(body: &[u8], from: usize) -> Option<usize> {
    let tail = body.get(from..)?;
    let (words, rest) = tail.as_chunks::<8>();
    for (n, w) in words.iter().enumerate() {
        let w = u64::from_le_bytes(*w);
        // `[` and `]` differ from `{` and `}` only in bit 5.
        let folded = w | splat(0x20);
        let hits =
            zeros(w ^ splat(b'"')) | zeros(folded ^ splat(b'{')) | zeros(folded ^ splat(b'}'));
        if hits != 0 {
            return Some(from + n * 8 + (hits.trailing_zeros() / 8) as usize);
        }
    }
    let done = from + words.len() * 8;
    rest.iter()
        .position(|&b| STRUCTURAL[usize::from(b)])
        .map(|p| done + p)
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

/// Reads the `usage` value of a body whose shape [`top_level_value`] has
/// checked: objects of counts, nested one level for the details.
struct Reader<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Reader<'a> {
    fn ws(&mut self) {
        while self.b.get(self.i).is_some_and(u8::is_ascii_whitespace) {
            self.i += 1;
        }
    }

    /// Takes `byte` after any whitespace.
    fn eat(&mut self, byte: u8) -> bool {
        self.ws();
        let ok = self.b.get(self.i) == Some(&byte);
        self.i += usize::from(ok);
        ok
    }

    /// Takes `word` (`null`, say) when it comes next.
    fn literal(&mut self, word: &[u8]) -> bool {
        let ok = self.b.get(self.i..).is_some_and(|r| r.starts_with(word));
        if ok {
            self.i += word.len();
        }
        ok
    }

    /// Each member of an object: `field` gets the raw key (escapes
    /// unresolved: no key Loom reads has any) and must consume the value.
    fn object(
        &mut self,
        mut field: impl FnMut(&mut Self, &'a [u8]) -> Result<(), String>,
    ) -> Result<(), String> {
        if !self.eat(b'{') {
            return Err("`usage` is not an object".to_owned());
        }
        if self.eat(b'}') {
            return Ok(());
        }
        loop {
            if !self.eat(b'"') {
                return Err("malformed `usage` object".to_owned());
            }
            let end = string_end(self.b, self.i).ok_or("unterminated string")?;
            let key = &self.b[self.i..end];
            self.i = end + 1;
            if !self.eat(b':') {
                return Err("malformed `usage` object".to_owned());
            }
            self.ws();
            field(self, key)?;
            if self.eat(b',') {
                continue;
            }
            if self.eat(b'}') {
                return Ok(());
            }
            return Err("malformed `usage` object".to_owned());
        }
    }

    /// The one count Loom keeps of a details object (`cached_tokens`,
    /// `reasoning_tokens`); `None` when the object is `null`.
    fn detail(&mut self, name: &[u8]) -> Result<Option<Option<u64>>, String> {
        if self.literal(b"null") {
            return Ok(None);
        }
        let mut n = None;
        self.object(|r, key| {
            if key == name {
                n = r.count(key)?;
            } else {
                r.skip()?;
            }
            Ok(())
        })?;
        Ok(Some(n))
    }

    /// A whole number of tokens, or `null`.
    fn count(&mut self, key: &[u8]) -> Result<Option<u64>, String> {
        if self.literal(b"null") {
            return Ok(None);
        }
        let digits = self.b[self.i..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        let text = &self.b[self.i..self.i + digits];
        self.i += digits;
        let whole = !text.is_empty()
            && !matches!(self.b.get(self.i), Some(b'.' | b'e' | b'E' | b'-' | b'+'));
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

    /// Passes over one value of any kind (its shape was checked by the scan).
    fn skip(&mut self) -> Result<(), String> {
        match self.b.get(self.i) {
            Some(b'"') => {
                self.i = string_end(self.b, self.i + 1).ok_or("unterminated string")? + 1;
            }
            Some(b'{' | b'[') => {
                let mut depth = 0usize;
                let mut i = self.i;
                loop {
                    let at = next_structural(self.b, i).ok_or("truncated JSON object")?;
                    match self.b[at] {
                        b'"' => {
                            i = string_end(self.b, at + 1).ok_or("unterminated string")? + 1;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        _ => depth = depth.checked_sub(1).ok_or("unbalanced brackets")?,
                    }
                    i = at + 1;
                    if depth == 0 {
                        break;
                    }
                }
                self.i = i;
            }
            _ => {
                // A number or a literal: up to the next delimiter.
                while self
                    .b
                    .get(self.i)
                    .is_some_and(|b| !matches!(b, b',' | b'}' | b']') && !b.is_ascii_whitespace())
                {
                    self.i += 1;
                }
            }
        }
        Ok(())
    }
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
    fn finds_the_same_structural_bytes_as_a_plain_scan() {
        let naive = |b: &[u8], from: usize| {
            b[from..]
                .iter()
                .position(|&c| STRUCTURAL[usize::from(c)])
                .map(|p| from + p)
        };
        // Every structural byte at every offset of two words and a tail,
        // among bytes one bit away from them (`;`, `=`, `Z`, `\\`, 0xDB, 0xFD).
        for background in [b' ', b'a', b';', b'=', b'Z', b'\\', 0xDB, 0xFD, 0x7F, 0x00] {
            for c in [b'"', b'{', b'}', b'[', b']'] {
                for len in [0, 1, 7, 8, 9, 16, 19] {
                    for at in 0..len {
                        let mut body = vec![background; len];
                        body[at] = c;
                        for from in 0..=len {
                            assert_eq!(
                                next_structural(&body, from),
                                naive(&body, from),
                                "{body:?} from {from}"
                            );
                        }
                    }
                    assert_eq!(next_structural(&vec![background; len], 0), None);
                }
            }
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

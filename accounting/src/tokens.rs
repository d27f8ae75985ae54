//! Counting tokens where a provider does not report them: before a request
//! (to hold it to a limit) and after a stream that was cut short.
//!
//! OpenAI models use their own encoding (o200k for the 4o/4.1/o-series/5
//! families, cl100k for older ones). Other providers' tokenizers are not
//! public in a form we can ship, so their text is counted with cl100k: a
//! documented approximation, typically within 10–20% for English.

use tiktoken_rs::CoreBPE;

/// Tokens the chat format adds per message (role and separators) and to
/// prime the reply, as OpenAI documents for its chat models.
const PER_MESSAGE: u64 = 3;
const REPLY_PRIMER: u64 = 3;

fn encoding(model: &str) -> &'static CoreBPE {
    let bare = model.rsplit('/').next().unwrap_or(model);
    let o200k = [
        "gpt-4o",
        "gpt-4.1",
        "gpt-4.5",
        "gpt-5",
        "o1",
        "o3",
        "o4",
        "chatgpt-4o",
    ]
    .iter()
    .any(|p| bare.starts_with(p));
    if o200k {
        tiktoken_rs::o200k_base_singleton()
    } else {
        tiktoken_rs::cl100k_base_singleton()
    }
}

/// Builds the encoders once (a few hundred milliseconds); call from a
/// blocking thread at start-up so no request pays for it.
pub fn warm_up() {
    let _ = tiktoken_rs::o200k_base_singleton();
    let _ = tiktoken_rs::cl100k_base_singleton();
}

/// Tokens of `text` for `model`.
pub fn count(model: &str, text: &str) -> u64 {
    if text.is_empty() {
        return 0;
    }
    encoding(model).count_ordinary(text) as u64
}

/// Tokens of a chat prompt made of `messages` (their text parts).
pub fn count_prompt<'a>(model: &str, messages: impl IntoIterator<Item = &'a str>) -> u64 {
    let bpe = encoding(model);
    messages
        .into_iter()
        .map(|m| PER_MESSAGE + bpe.count_ordinary(m) as u64)
        .sum::<u64>()
        + REPLY_PRIMER
}

/// A bound no encoding exceeds: byte-level BPE never makes a token of less
/// than one byte. Lets a limit check skip counting when far from the limit.
pub fn upper_bound(text_bytes: usize, messages: usize) -> u64 {
    text_bytes as u64 + PER_MESSAGE * messages as u64 + REPLY_PRIMER
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_follow_the_model_family() {
        // "Hello, world!" is 4 tokens in both encodings.
        assert_eq!(count("gpt-4o-mini", "Hello, world!"), 4);
        assert_eq!(count("gpt-3.5-turbo", "Hello, world!"), 4);
        assert_eq!(count("claude-3-haiku", ""), 0);
        let prompt = count_prompt("gpt-4o", ["You are terse.", "Say hi"]);
        assert_eq!(
            prompt,
            2 * PER_MESSAGE
                + REPLY_PRIMER
                + count("gpt-4o", "You are terse.")
                + count("gpt-4o", "Say hi")
        );
    }

    #[test]
    fn the_upper_bound_bounds() {
        let text = "naïve café — 東京 🚀 ".repeat(20);
        for model in ["gpt-4o", "gpt-4", "claude-3-opus"] {
            assert!(count_prompt(model, [text.as_str()]) <= upper_bound(text.len(), 1));
        }
    }
}

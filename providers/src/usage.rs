//! Reading `usage` out of a provider's JSON answer without building the rest.

use loom_models::chat::{CompletionTokensDetails, PromptTokensDetails, Usage};
use serde::Deserialize;

#[derive(Deserialize)]
struct WithUsage {
    #[serde(default)]
    usage: Option<Counts>,
}

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

/// The `usage` of a JSON object. Fails when the body is not a JSON object;
/// every other field is skipped without being built.
pub(crate) fn usage_of(body: &[u8]) -> Result<Option<Usage>, String> {
    let parsed: WithUsage = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    Ok(parsed.usage.map(|c| {
        let mut u = Usage::new(c.prompt_tokens, c.completion_tokens);
        if c.total_tokens > 0 {
            u.total_tokens = c.total_tokens;
        }
        u.prompt_tokens_details = c.prompt_tokens_details.map(|d| PromptTokensDetails {
            cached_tokens: d.cached_tokens,
            ..PromptTokensDetails::default()
        });
        u.completion_tokens_details =
            c.completion_tokens_details
                .map(|d| CompletionTokensDetails {
                    reasoning_tokens: d.reasoning_tokens,
                    ..CompletionTokensDetails::default()
                });
        u
    }))
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
}

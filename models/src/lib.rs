//! Wire types spoken by Loom.
//!
//! Loom's canonical request, response and stream-chunk types are OpenAI's chat
//! completion shapes ([`chat`]): every provider adapter translates to and from
//! them, so the rest of the gateway only ever sees one shape. Each type keeps the
//! JSON fields it does not know in a flattened `extra` map, so a parameter that a
//! newer SDK sends passes through Loom untouched.
//!
//! The other OpenAI endpoints (legacy completions, embeddings, model listing) and
//! the error envelope live beside them; provider-native wire types (Anthropic,
//! Gemini) get their own modules as adapters need them.

pub mod anthropic;
pub mod chat;
pub mod completions;
pub mod embeddings;
pub mod error;
pub mod gemini;
pub mod models_list;
pub mod responses;

/// Fields a type does not model explicitly, kept verbatim for the round trip.
pub type Extra = serde_json::Map<String, serde_json::Value>;

/// Entry points of the fuzz targets in `fuzz/` (and of the tests that
/// replay their corpora).
#[doc(hidden)]
pub mod fuzzing {
    use crate::chat::{ChatHead, ChatRequest, Message};

    /// The chat head reader: never a panic, and wherever the whole request
    /// parses, the head parses too and reads the same values.
    pub fn chat_head(data: &[u8]) {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        let head = serde_json::from_str::<ChatHead>(text);
        let Ok(full) = serde_json::from_str::<ChatRequest>(text) else {
            return;
        };
        let head = head.expect("the head reads what the whole request reads");
        assert_eq!(&*head.model, &*full.model);
        assert_eq!(head.messages.count, full.messages.len());
        let len: usize = full.messages.iter().map(Message::text_len).sum();
        assert_eq!(head.messages.text_len, len);
        assert_eq!(head.stream, full.stream);
        assert_eq!(head.max_output_tokens(), full.max_output_tokens());
    }
}

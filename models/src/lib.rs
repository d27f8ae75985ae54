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

/// Fields a type does not model explicitly, kept verbatim for the round trip.
pub type Extra = serde_json::Map<String, serde_json::Value>;

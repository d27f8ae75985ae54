//! The semantic cache.

use serde::{Deserialize, Serialize};

use super::*;
use crate::units::{ByteSize, Duration, Secret};

/// `semantic_cache:`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SemanticCache {
    #[serde(default)]
    pub enabled: bool,
    /// Cosine similarity at or above which a similar prompt's answer
    /// serves (structural guards permitting); see docs/semantic-cache.md.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub similarity_threshold: Option<f64>,
    /// How long an answer is served; one hour when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<Duration>,
    /// Bound of the memory backend, answers and embeddings together; 256MB
    /// when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<ByteSize>,
    /// How prompts are embedded; the local model when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding: Option<EmbeddingModel>,
    /// Where answers are kept.
    #[serde(default)]
    pub backend: CacheBackend,
    /// The Redis of `backend: redis`; the usage store's Redis when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisStore>,
    /// The Qdrant of `backend: qdrant`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qdrant: Option<QdrantSettings>,
    /// Whose answers a request may be served: the same consumer's (the
    /// default), or anyone's (`global`).
    #[serde(default)]
    pub scope: CacheScope,
    /// Requests without `temperature` are cacheable (the default, as the
    /// seed's client example sends none); `false` leaves them uncached,
    /// since providers then sample at their default of 1.
    #[serde(default = "yes")]
    pub absent_temperature_is_zero: bool,
    /// Requests with an explicit `temperature` above this are not cached:
    /// the client asked for variety. 0 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_temperature: Option<f64>,
    /// Answers that call tools are cached too.
    #[serde(default)]
    pub cache_tool_calls: bool,
    /// A file the memory backend is written to at shutdown and read from
    /// at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
}

impl Default for SemanticCache {
    fn default() -> Self {
        SemanticCache {
            enabled: false,
            similarity_threshold: None,
            ttl: None,
            max_size: None,
            embedding: None,
            backend: CacheBackend::default(),
            redis: None,
            qdrant: None,
            scope: CacheScope::default(),
            absent_temperature_is_zero: true,
            max_temperature: None,
            cache_tool_calls: false,
            snapshot: None,
        }
    }
}

/// Where cached answers are kept.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum CacheBackend {
    /// In process: exact map, embeddings, HNSW graphs.
    #[default]
    Memory,
    /// Qdrant, through its gRPC API.
    Qdrant,
    /// Memory, plus exact matches kept in Redis and shared by every replica.
    Redis,
}

/// Where `backend: qdrant` keeps the cache.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct QdrantSettings {
    /// The gRPC URL, e.g. `http://qdrant:6334`.
    pub url: String,
    #[serde(default)]
    pub api_key: Secret,
    #[serde(default = "default_collection")]
    pub collection: String,
    /// Longest a call to Qdrant may take on the request path.
    #[serde(default = "default_qdrant_timeout")]
    pub timeout: Duration,
}

fn default_collection() -> String {
    "loom_cache".to_owned()
}
fn default_qdrant_timeout() -> Duration {
    Duration::from_millis(500)
}

/// Whose answers serve a request.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum CacheScope {
    /// Only answers to the same consumer.
    #[default]
    Consumer,
    /// Answers to anyone.
    Global,
}

/// The embedding model of the semantic cache.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingModel {
    /// `local` (the in-process model) or the name of a configured provider.
    pub provider: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// The folder of the local model (`scripts/fetch-models` fills it);
    /// `$LOOM_MODELS` or `~/.cache/loom/models` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<String>,
}

/// A route's own cache settings (`routes[].semantic_cache`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteCache {
    /// Off for this route, or on (when the gateway's cache is enabled).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub similarity_threshold: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<CacheScope>,
}

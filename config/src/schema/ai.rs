//! The AI gateway: providers, routing, streaming.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::*;
use crate::units::{ByteSize, Duration, Secret};

/// `ai_gateway:`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AiGateway {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub providers: Vec<Provider>,
    #[serde(default)]
    pub routing: Routing,
    /// Failover as the announcement page writes it; `routing.failover` is the same.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<Failover>,
    /// Requested model → provider name → that provider's model.
    #[serde(default)]
    pub model_mapping: BTreeMap<String, BTreeMap<String, String>>,
    #[serde(default)]
    pub streaming: Streaming,
    #[serde(default)]
    pub semantic_cache: SemanticCache,
    #[serde(default)]
    pub token_accounting: TokenAccounting,
    #[serde(default)]
    pub security: Security,
    #[serde(default)]
    pub rate_limit: AiRateLimit,
    /// Price overrides, ahead of the built-in price table.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pricing: Vec<Price>,
    /// Largest request body an AI route accepts.
    #[serde(default = "default_ai_body")]
    pub max_body_size: ByteSize,
    /// Where responses of the Responses API are kept for translated
    /// providers (`previous_response_id`, `GET /v1/responses/{id}`).
    #[serde(default)]
    pub responses: KeptResponses,
}

/// `ai_gateway.responses:`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct KeptResponses {
    /// `memory` (the default: this process only) or `redis` (shared by
    /// every replica; each replica keeps its own copy in memory too, so an
    /// unreachable Redis loses nothing this replica created).
    #[serde(default)]
    pub store: KeptStore,
    /// The Redis of `store: redis`; the usage store's Redis when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisStore>,
    /// How long a response is kept; 24h when absent.
    #[serde(default = "default_kept_ttl")]
    pub ttl: Duration,
    /// Bound of the memory copy (input items, output items and the
    /// response); 256MB when absent. The oldest go first.
    #[serde(default = "default_kept_size")]
    pub max_size: ByteSize,
}

impl Default for KeptResponses {
    fn default() -> Self {
        KeptResponses {
            store: KeptStore::default(),
            redis: None,
            ttl: default_kept_ttl(),
            max_size: default_kept_size(),
        }
    }
}

fn default_kept_ttl() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_kept_size() -> ByteSize {
    ByteSize(256 << 20)
}

/// Where kept responses live.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum KeptStore {
    #[default]
    Memory,
    Redis,
}

fn default_ai_body() -> ByteSize {
    ByteSize(32 << 20)
}

impl Default for AiGateway {
    fn default() -> Self {
        AiGateway {
            enabled: false,
            providers: Vec::new(),
            routing: Routing::default(),
            failover: None,
            model_mapping: BTreeMap::new(),
            streaming: Streaming::default(),
            semantic_cache: SemanticCache::default(),
            token_accounting: TokenAccounting::default(),
            security: Security::default(),
            rate_limit: AiRateLimit::default(),
            pricing: Vec::new(),
            max_body_size: default_ai_body(),
            responses: KeptResponses::default(),
        }
    }
}

/// One LLM provider.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ProviderKind,
    #[serde(default)]
    pub api_key: Secret,
    /// Overrides the provider's default API base URL (for OpenAI, up to and including `/v1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_url: Option<String>,
    /// Azure OpenAI resource endpoint (alias of `base_url`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Vertex AI: Google Cloud project (with `location`, instead of `base_url`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// Vertex AI: region such as `us-central1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Azure: model → deployment name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub deployments: BTreeMap<String, String>,
    /// Models this provider serves; empty means any model no other provider lists.
    #[serde(default)]
    pub models: Vec<String>,
    /// Lower is preferred.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// Whole-request timeout, streams included.
    #[serde(default = "default_provider_timeout")]
    pub timeout: Duration,
    /// Extra headers sent with every request (values are treated as secrets).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, Secret>,
    /// Behaviour of a `mock` provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mock: Option<MockOptions>,
}

fn default_provider_timeout() -> Duration {
    Duration::from_secs(600)
}

/// `routing:`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Routing {
    #[serde(default)]
    pub strategy: Strategy,
    /// Short form of `failover.enabled`.
    #[serde(default)]
    pub fallback: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover: Option<Failover>,
    /// Per-provider routing attributes.
    #[serde(default)]
    pub providers: Vec<RoutingProvider>,
    /// When a failing provider is taken out of rotation.
    #[serde(default)]
    pub circuit_breaker: CircuitBreaker,
    /// Active health checks of every provider (off by default).
    #[serde(default)]
    pub health_check: HealthCheck,
}

/// `routing.health_check`: a cheap authenticated call (the provider's model
/// list) to every provider on an interval; failures count toward the
/// breaker, a success closes an open circuit.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthCheck {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default = "default_health_interval")]
    pub interval: Duration,
    #[serde(default = "default_health_timeout")]
    pub timeout: Duration,
}

fn default_health_interval() -> Duration {
    Duration::from_secs(30)
}
fn default_health_timeout() -> Duration {
    Duration::from_secs(5)
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            enabled: false,
            interval: default_health_interval(),
            timeout: default_health_timeout(),
        }
    }
}

/// `routing.providers[]`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RoutingProvider {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_per_1k_input: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_per_1k_output: Option<f64>,
}

/// `streaming:`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Streaming {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// The longest an event may wait before it is written to the client.
    #[serde(default = "default_flush")]
    pub flush_interval: Duration,
}

fn default_flush() -> Duration {
    Duration::from_millis(50)
}

impl Default for Streaming {
    fn default() -> Self {
        Streaming {
            enabled: true,
            flush_interval: default_flush(),
        }
    }
}

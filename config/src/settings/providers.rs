//! What the provider registry and the router read: every provider with its
//! priority and weight decided, the strategy, the failover policy, the
//! model mapping and the providers' circuit breaker.

use std::collections::BTreeMap;
use std::time::Duration as StdDuration;

use serde::{Deserialize, Serialize};

use crate::resilience::CircuitBreaker;
use crate::units::{Duration, Secret};

/// The providers of the AI gateway and how requests are routed over them
/// (built by [`crate::AiGateway::providers`]).
#[derive(Debug, Clone)]
pub struct Providers {
    /// In configuration order.
    pub list: Vec<Provider>,
    pub strategy: Strategy,
    pub failover: FailoverPolicy,
    /// Requested model → provider name → the model that provider is sent.
    pub model_mapping: BTreeMap<String, BTreeMap<String, String>>,
    /// Applies to each provider on its own.
    pub breaker: CircuitBreaker,
    /// What routing's `cost` strategy and cost accounting charge.
    pub prices: super::Prices,
}

/// One provider, resolved: `routing.providers[]` decided its priority and
/// weight over the provider's own; an Azure `endpoint` is its base URL.
#[derive(Debug, Clone)]
pub struct Provider {
    pub name: String,
    pub kind: ProviderKind,
    pub api_key: Secret,
    /// The API base URL, when not the kind's default (for OpenAI, up to and
    /// including `/v1`; for Azure OpenAI, the resource endpoint).
    pub base_url: Option<String>,
    pub api_version: Option<String>,
    /// Vertex AI: Google Cloud project and region.
    pub project: Option<String>,
    pub location: Option<String>,
    /// Azure: model → deployment name.
    pub deployments: BTreeMap<String, String>,
    /// Models this provider serves; empty means any model no other provider lists.
    pub models: Vec<String>,
    /// Lower first; providers with none come last (`u32::MAX`).
    pub priority: u32,
    /// Share under the `weighted` strategy (1 when not given).
    pub weight: u32,
    /// Whole-request timeout, streams included.
    pub timeout: StdDuration,
    /// Extra headers sent with every request.
    pub headers: BTreeMap<String, Secret>,
    /// How a `mock` provider answers.
    pub mock: MockOptions,
}

/// The failover policy of the AI gateway, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct FailoverPolicy {
    pub enabled: bool,
    /// Provider answers that move on to the next provider.
    pub retry_codes: Vec<u16>,
    /// Time allowed for one attempt (to the first byte of a stream).
    pub attempt_timeout: StdDuration,
    /// Attempts after the first.
    pub max_retries: u32,
    /// No attempt starts after this much time since the first.
    pub deadline: StdDuration,
}

/// Provider type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    Openai,
    OpenaiCompatible,
    Anthropic,
    #[serde(alias = "azure")]
    AzureOpenai,
    Vertex,
    Gemini,
    /// Built in: answers from the prompt itself, for offline use and load tests.
    Mock,
}

/// How a `mock` provider answers.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MockOptions {
    /// Content chunks in a streamed answer.
    #[serde(default = "default_mock_chunks")]
    pub stream_chunks: u32,
    /// Pause before each streamed chunk.
    #[serde(default)]
    pub chunk_delay: Duration,
    /// Pause before the response starts.
    #[serde(default)]
    pub latency: Duration,
}

impl Default for MockOptions {
    fn default() -> Self {
        MockOptions {
            stream_chunks: default_mock_chunks(),
            chunk_delay: Duration::default(),
            latency: Duration::default(),
        }
    }
}

/// Provider selection strategy.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    #[default]
    Priority,
    RoundRobin,
    Weighted,
    Cost,
    #[serde(alias = "least_latency")]
    Latency,
}

fn default_mock_chunks() -> u32 {
    8
}

//! Token accounting, prices and AI rate limits.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::settings::{FailureMode, RedisStore};
use crate::units::Duration;

/// `token_accounting:`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenAccounting {
    #[serde(default)]
    pub enabled: bool,
    /// Where usage is kept; `memory` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<AccountingStore>,
    /// Per-consumer token and cost limits.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub limits: Vec<ConsumerLimit>,
    /// Days a day's usage is kept after the day ends.
    #[serde(default = "default_retention_days")]
    pub retention_days: u32,
    /// Months a month's usage is kept after the month ends.
    #[serde(default = "default_retention_months")]
    pub retention_months: u32,
    /// Records kept in memory while Redis is unreachable; beyond this the
    /// oldest are dropped and counted.
    #[serde(default = "default_buffer_limit")]
    pub buffer_limit: usize,
}

fn default_retention_days() -> u32 {
    35
}
fn default_retention_months() -> u32 {
    13
}
fn default_buffer_limit() -> usize {
    1_000_000
}

impl Default for TokenAccounting {
    fn default() -> Self {
        TokenAccounting {
            enabled: false,
            store: None,
            limits: Vec::new(),
            retention_days: default_retention_days(),
            retention_months: default_retention_months(),
            buffer_limit: default_buffer_limit(),
        }
    }
}

/// Where usage and rate-limit state are kept.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AccountingStore {
    /// `memory` (this process only) or `redis` (shared by every replica).
    #[serde(rename = "type")]
    pub kind: StoreKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisStore>,
}

/// Kind of store.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    #[default]
    Memory,
    Redis,
}

/// Token and cost limits of one consumer. Token limits count prompt plus
/// completion tokens; cost limits are in US dollars.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsumerLimit {
    pub consumer: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_limit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly_limit: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_cost_limit: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub monthly_cost_limit: Option<f64>,
}

/// A price override: dollars per 1,000 tokens of one model, optionally of one provider.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Model name as the provider knows it; a dated version
    /// (`gpt-4o-2024-08-06`) uses the price of its longest listed prefix.
    pub model: String,
    /// Only for this provider; every provider when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    pub cost_per_1k_input: f64,
    pub cost_per_1k_output: f64,
    /// Prompt tokens served from the provider's cache; the input price when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_per_1k_cached_input: Option<f64>,
    /// Prompt tokens written to the provider's cache (Anthropic charges
    /// extra for them); the input price when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_per_1k_cache_write: Option<f64>,
}

/// `rate_limit:` of the AI gateway: per consumer, by requests and by tokens.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AiRateLimit {
    #[serde(default)]
    pub enabled: bool,
    /// Tokens per window for a consumer without a tier entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_rate: Option<RateWindow>,
    /// Requests per window for a consumer without a tier entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_rate: Option<RateWindow>,
    /// Tier name → rates over the same windows.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub consumers: BTreeMap<String, TierRates>,
    /// What happens while the shared store is unreachable: `open` lets
    /// requests through, `closed` refuses them with 503.
    #[serde(default)]
    pub failure_mode: FailureMode,
}

/// A limit over a window.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateWindow {
    pub limit: u64,
    /// One minute when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Duration>,
}

/// Per-tier rates.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TierRates {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_rate: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_rate: Option<u64>,
}

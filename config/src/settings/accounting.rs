//! What the accountant reads: the ledger, rate limits with their windows
//! and tier fallbacks decided, period limits, prices, and the store's Redis.

use std::collections::BTreeMap;
use std::time::Duration as StdDuration;

use serde::{Deserialize, Serialize};

use crate::units::{Duration, Secret};

/// Token accounting, limits and AI rate limits of one configuration (built
/// by [`crate::AiGateway::accounting`]).
#[derive(Debug, Clone, Default)]
pub struct Accounting {
    /// Usage is recorded per consumer and period (`token_accounting.enabled`).
    pub ledger: bool,
    /// AI rate limits, when `rate_limit.enabled`.
    pub rates: Option<RateLimits>,
    /// Token and cost limits per consumer and period.
    pub limits: Vec<PeriodLimit>,
    /// Days and months of usage kept.
    pub retention_days: u32,
    pub retention_months: u32,
    /// What happens while the store is unreachable.
    pub failure_mode: FailureMode,
    pub prices: Prices,
}

/// Rate limits: the default and each tier's, a tier's missing rate taken
/// from the default.
#[derive(Debug, Clone, Default)]
pub struct RateLimits {
    pub default: Rates,
    pub tiers: BTreeMap<String, Rates>,
}

/// A tier's request and token rates.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rates {
    pub requests: Option<Rate>,
    pub tokens: Option<Rate>,
}

/// A limit over a window (one minute when the configuration gives none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub limit: u64,
    pub window: StdDuration,
}

/// One consumer's period limits; costs in US dollars.
#[derive(Debug, Clone, PartialEq)]
pub struct PeriodLimit {
    pub consumer: String,
    pub day_tokens: Option<u64>,
    pub month_tokens: Option<u64>,
    pub day_cost: Option<f64>,
    pub month_cost: Option<f64>,
}

/// Prices the configuration sets, in US dollars per 1,000 tokens; the
/// built-in table covers the rest.
#[derive(Debug, Clone, Default)]
pub struct Prices {
    /// `ai_gateway.pricing`: a provider (or any) and a model prefix.
    pub models: Vec<ModelPrice>,
    /// `routing.providers[].cost_per_1k_*`: every model of a provider.
    pub providers: Vec<ProviderPrice>,
}

/// A configured price of a model (prefix).
#[derive(Debug, Clone, PartialEq)]
pub struct ModelPrice {
    pub provider: Option<String>,
    pub model: String,
    pub input: f64,
    pub output: f64,
    pub cached_input: Option<f64>,
    /// Prompt tokens written to the provider's prompt cache.
    pub cache_write: Option<f64>,
}

/// A configured price of every model of a provider.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderPrice {
    pub provider: String,
    pub input: f64,
    pub output: f64,
}

/// Redis connection of a store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RedisStore {
    /// `host:port`, or a `redis://` / `rediss://` URL.
    pub address: String,
    /// Prefix of every key Loom writes.
    #[serde(default = "default_key_prefix")]
    pub key_prefix: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Secret,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db: Option<u32>,
    /// Connect with TLS (same as a `rediss://` address).
    #[serde(default)]
    pub tls: bool,
    /// Longest a round trip to Redis on the request path may take before the
    /// failure mode applies (a request can wait for the round trip ahead of
    /// its own, so at most twice this).
    #[serde(default = "default_redis_timeout")]
    pub timeout: Duration,
}

/// Behaviour while the rate-limit store is unreachable.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    #[default]
    Open,
    Closed,
}

fn default_key_prefix() -> String {
    "loom:".to_owned()
}

fn default_redis_timeout() -> Duration {
    Duration::from_millis(100)
}

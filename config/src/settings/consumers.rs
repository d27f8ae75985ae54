//! Consumers: who may call routes with `auth`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::units::Secret;

/// One consumer: an application or team with its API keys.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsumerEntry {
    /// The name usage and limits are kept under.
    pub name: String,
    /// Rate-limit tier, a key of `ai_gateway.rate_limit.consumers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// API keys: the key itself (best read from the environment, `${APP_KEY}`)
    /// or `sha256:` and the hex SHA-256 of the key (`loom hash-key`).
    pub keys: Vec<Secret>,
    /// Free-form labels, reported by the admin API.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

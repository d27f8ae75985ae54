//! The YAML schema. Every struct rejects unknown keys, so a typo is an error
//! rather than a silently ignored setting. Field docs are the reference that
//! `docs/configuration.md` follows.

use serde::{Deserialize, Serialize};

pub use crate::resilience::{CircuitBreaker, Failover, Retry, UpstreamBreaker};
// Sections whose YAML shape is already what the libraries read are defined
// in `crate::settings` and embedded here as they are.
pub use crate::settings::{
    CategoryDetail, CategoryRule, Classifier, ConsumerEntry, ContentAction, ContentFiltering,
    CustomPii, EndpointConfig, FailureMode, HashOn, InjectionAction, LoadBalancer, MockOptions,
    OutlierDetection, PiiAction, PiiDetection, PromptInjection, ProviderKind, RedisStore,
    RetryMethods, Security, Sensitivity, Strategy, Upstream, UpstreamHealthCheck, UpstreamProtocol,
    UpstreamTls, WeightedEndpoint,
};

mod accounting;
mod ai;
mod cache;
mod plugins;
mod process;
mod routes;

pub use accounting::*;
pub use ai::*;
pub use cache::*;
pub use plugins::*;
pub use process::*;
pub use routes::*;

/// The whole configuration file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where Loom accepts traffic. Defaults to one plain HTTP listener on `:8080`.
    #[serde(default)]
    pub listeners: Vec<Listener>,
    /// The admin listener (health, readiness, metrics, admin API).
    #[serde(default)]
    pub admin: Admin,
    /// Process-wide limits and timeouts.
    #[serde(default)]
    pub server: Server,
    /// Log format and level.
    #[serde(default)]
    pub logging: Logging,
    /// The route table, matched in order.
    #[serde(default)]
    pub routes: Vec<Route>,
    /// Named upstreams that proxy routes forward to.
    #[serde(default)]
    pub upstreams: Vec<Upstream>,
    /// The AI gateway: providers, routing and the AI-specific stages.
    #[serde(default)]
    pub ai_gateway: AiGateway,
    /// Who may call routes with `auth`, and who their usage is accounted to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consumers: Vec<ConsumerEntry>,
    /// Run-time keys kept in PostgreSQL and managed over the admin API
    /// (docs/control-plane.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_plane: Option<crate::settings::ControlPlane>,
    /// Proxy-Wasm plugins, attached to routes by name
    /// (`routes[].middleware.plugins`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<Plugin>,
}

fn redacted<S: serde::Serializer>(_: &Option<serde_json::Value>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str("[REDACTED]")
}

pub(crate) fn hundred() -> u32 {
    100
}

pub(crate) fn yes() -> bool {
    true
}

//! The route table: matching, middleware, traffic policies.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::*;
use crate::units::{ByteSize, Duration, Pattern};

/// One entry of the route table: an AI route or a proxy route.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Unique name, used in logs and metrics.
    pub id: String,
    /// `/exact`, `/prefix/*` (wildcard at the end) or `/*`.
    pub path: String,
    /// Matches the `Host` header (without port); `*.example.com` matches subdomains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Methods this route accepts; every method when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<String>>,
    /// Serve the OpenAI-compatible API on this route.
    #[serde(default)]
    pub ai_gateway: bool,
    /// Routing strategy of this AI route, overriding `ai_gateway.routing.strategy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    /// Name of the upstream a proxy route forwards to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// Largest request body accepted; AI routes default to `ai_gateway.max_body_size`,
    /// proxy routes to no limit (bodies stream through).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_size: Option<ByteSize>,
    /// Per-route stages.
    #[serde(default)]
    pub middleware: Middleware,
    /// Guardrails of this AI route, replacing `ai_gateway.security` section by section.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<Security>,
    /// This route's cache settings, over `ai_gateway.semantic_cache`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub semantic_cache: Option<RouteCache>,
    /// Retries of failed tries (proxy routes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    /// Conditions on headers, query and path beyond `path`, `host` and `methods`.
    #[serde(default, rename = "match", skip_serializing_if = "Option::is_none")]
    pub matches: Option<RouteMatch>,
    /// Path and header rewrites of a proxy route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<Rewrite>,
    /// Answer with a redirect instead of forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect: Option<Redirect>,
    /// Send part of the route's traffic to another upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<Canary>,
    /// Copy part of the route's traffic to another upstream, answers discarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<Shadow>,
}

/// Per-route middleware. Each slot is a stage of the one request path.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Middleware {
    /// Consumer authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Auth>,
    /// Request rate limiting of a route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RouteRateLimit>,
    /// Proxy-Wasm plugins by name, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<String>,
}

/// `auth: {type: api_key, header: X-API-Key}`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Auth {
    /// `api_key`, the only kind so far.
    #[serde(rename = "type")]
    pub kind: String,
    /// Header that carries the key; `Authorization: Bearer` is accepted too.
    /// Defaults to `X-API-Key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// Keep the key header when a proxy route forwards the request
    /// (removed by default, so upstreams never see gateway keys).
    #[serde(default)]
    pub forward_key: bool,
}

/// `routes[].match`: every condition must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    /// Header name → exact value, or `"*"` for present with any value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Query parameter → exact value, or `"*"` for present.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query: BTreeMap<String, String>,
    /// A regular expression the whole path must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_regex: Option<Pattern>,
}

/// `routes[].rewrite`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rewrite {
    /// Replaces this leading part of the path with `prefix_to`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_to: Option<String>,
    #[serde(default, skip_serializing_if = "HeaderEdits::is_empty")]
    pub request_headers: HeaderEdits,
    #[serde(default, skip_serializing_if = "HeaderEdits::is_empty")]
    pub response_headers: HeaderEdits,
}

/// Headers to set (replacing) and to remove.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HeaderEdits {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
}

impl HeaderEdits {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }
}

/// `routes[].redirect`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Redirect {
    /// Where to: a URL; the request's path and query are appended when
    /// `keep_path` is set.
    pub to: String,
    /// 301, 302, 303, 307 or 308.
    #[serde(default = "default_redirect_status")]
    pub status: u16,
    #[serde(default)]
    pub keep_path: bool,
}

fn default_redirect_status() -> u16 {
    302
}

/// `routes[].canary`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Canary {
    /// The upstream that gets the canary's share.
    pub upstream: String,
    /// Percent of requests (0–100), drawn at random per request.
    #[serde(default)]
    pub weight: u32,
    /// Requests with all these headers (name → value, or `"*"`) always go
    /// to the canary.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// Requests with this cookie (name → value) always go to the canary.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cookies: BTreeMap<String, String>,
}

/// `routes[].middleware.rate_limit`: a request rate per key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteRateLimit {
    /// Requests allowed per window (bursts up to this many).
    pub limit: u64,
    #[serde(default = "default_rate_window")]
    pub window: Duration,
    /// What is limited: `client_ip` (default), `consumer`, or `header:<name>`.
    #[serde(default = "default_rate_key")]
    pub key: String,
    /// `memory` (this process) or `redis` (every replica together).
    #[serde(default)]
    pub store: StoreKind,
    /// The Redis of `store: redis`; the usage store's Redis when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisStore>,
    /// While Redis is unreachable: `open` (allow) or `closed` (refuse).
    #[serde(default)]
    pub failure_mode: FailureMode,
}

fn default_rate_window() -> Duration {
    Duration::from_secs(60)
}
fn default_rate_key() -> String {
    "client_ip".to_owned()
}

/// `routes[].shadow`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Shadow {
    /// Where copies go.
    pub upstream: String,
    /// Percent of requests copied (0–100).
    #[serde(default = "hundred")]
    pub percent: u32,
}

//! Upstreams of proxy routes: endpoints, balancing, health, TLS.

use serde::{Deserialize, Serialize};

use crate::schema::*;
use crate::units::Duration;

/// A named group of upstream endpoints.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    pub name: String,
    /// Base URLs such as `http://10.0.0.5:8000`, or `{url, weight}`.
    pub endpoints: Vec<EndpointConfig>,
    /// How the next endpoint is chosen.
    #[serde(default)]
    pub load_balancer: LoadBalancer,
    /// The key of `consistent_hash`: a header or a cookie; the client's IP
    /// when absent (or when the request lacks that header or cookie).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_on: Option<HashOn>,
    /// Time allowed to open a connection; a refusal or this timeout answers 502.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout: Duration,
    /// Time allowed for the upstream's response headers; exceeded answers 504.
    #[serde(default = "default_upstream_timeout")]
    pub timeout: Duration,
    /// Idle keep-alive connections kept per endpoint.
    #[serde(default = "default_pool_idle")]
    pub max_idle_per_endpoint: usize,
    /// An upgraded connection (WebSocket) that moves nothing for this long
    /// is closed.
    #[serde(default = "default_tunnel_idle")]
    pub tunnel_idle_timeout: Duration,
    /// `http1` (default) or `h2`: HTTP/2 with prior knowledge, as gRPC needs
    /// (over TLS, offered by ALPN).
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// TLS to `https://` endpoints: a CA of its own, a client certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<UpstreamTls>,
    /// Bounds pending requests and stops sending to a failing upstream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<UpstreamBreaker>,
    /// Active health checks of every endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<UpstreamHealthCheck>,
    /// Ejection of endpoints that fail real requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetection>,
}

/// `upstreams[].health_check`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamHealthCheck {
    /// Path probed with GET; a 2xx answer is healthy.
    #[serde(default = "default_upstream_check_path")]
    pub path: String,
    #[serde(default = "default_upstream_check_interval")]
    pub interval: Duration,
    #[serde(default = "default_upstream_check_timeout")]
    pub timeout: Duration,
    /// Successes in a row that mark a down endpoint up.
    #[serde(default = "default_healthy_threshold")]
    pub healthy_threshold: u32,
    /// Failures in a row that mark an endpoint down.
    #[serde(default = "default_unhealthy_threshold")]
    pub unhealthy_threshold: u32,
}

fn default_upstream_check_path() -> String {
    "/health".to_owned()
}
fn default_upstream_check_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_upstream_check_timeout() -> Duration {
    Duration::from_secs(1)
}
fn default_healthy_threshold() -> u32 {
    2
}
fn default_unhealthy_threshold() -> u32 {
    3
}

/// `upstreams[].outlier_detection`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutlierDetection {
    /// Connect failures or 5xx answers in a row that eject an endpoint.
    #[serde(default = "default_consecutive_failures")]
    pub consecutive_failures: u32,
    /// First ejection; each later one lasts this times the ejection count
    /// (at most ten times).
    #[serde(default = "default_base_ejection")]
    pub base_ejection_time: Duration,
    /// Most of the upstream's endpoints ejected at once, in percent.
    #[serde(default = "default_max_ejection_percent")]
    pub max_ejection_percent: u32,
}

fn default_consecutive_failures() -> u32 {
    5
}
fn default_base_ejection() -> Duration {
    Duration::from_secs(30)
}
fn default_max_ejection_percent() -> u32 {
    50
}

/// Which methods are retried.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum RetryMethods {
    #[default]
    Idempotent,
    All,
}

/// One endpoint of an upstream: a URL, or a URL with a weight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum EndpointConfig {
    Url(String),
    Weighted(WeightedEndpoint),
}

/// An endpoint with its share of the traffic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WeightedEndpoint {
    pub url: String,
    /// Relative share (1 to 1000); 1 when absent.
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

impl EndpointConfig {
    pub fn url(&self) -> &str {
        match self {
            EndpointConfig::Url(u) => u,
            EndpointConfig::Weighted(w) => &w.url,
        }
    }
    pub fn weight(&self) -> u32 {
        match self {
            EndpointConfig::Url(_) => 1,
            EndpointConfig::Weighted(w) => w.weight,
        }
    }
}

/// `upstreams[].tls`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    /// PEM certificates trusted for the endpoints, in place of the
    /// system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// A client certificate chain and key (mutual TLS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert_file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key_file: Option<String>,
}

/// The protocol spoken to an upstream.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    #[default]
    Http1,
    H2,
}

/// Load-balancing policy of an upstream.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum LoadBalancer {
    #[default]
    RoundRobin,
    /// Smooth weighted round robin.
    Weighted,
    /// The less busy of two endpoints drawn at random (by weight).
    LeastRequest,
    /// The same key to the same endpoint (see `hash_on`).
    ConsistentHash,
    /// Drawn at random, by weight.
    Random,
}

/// What `consistent_hash` hashes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HashOn {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<String>,
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_upstream_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_tunnel_idle() -> Duration {
    Duration::from_secs(300)
}
fn default_pool_idle() -> usize {
    256
}

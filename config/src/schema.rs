//! The YAML schema. Every struct rejects unknown keys, so a typo is an error
//! rather than a silently ignored setting. Field docs are the reference that
//! `docs/configuration.md` follows.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::resilience::{CircuitBreaker, Failover, Retry, UpstreamBreaker};
use crate::units::{ByteSize, Duration, Secret};

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
    /// Proxy-Wasm plugins, attached to routes by name
    /// (`routes[].middleware.plugins`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<Plugin>,
}

/// One Proxy-Wasm plugin: a `.wasm` filter and its configuration.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Plugin {
    /// The name routes attach it by; also its metrics' `plugin` label.
    pub name: String,
    /// The `.wasm` file (relative paths are taken from the working directory).
    pub path: String,
    /// Handed to the plugin's `on_configure`: a string as it is, anything
    /// else as JSON. Redacted by the admin API: it may carry credentials.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "redacted"
    )]
    pub config: Option<serde_json::Value>,
    /// Handed to the plugin's `on_vm_start`, like `config`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        serialize_with = "redacted"
    )]
    pub vm_config: Option<serde_json::Value>,
    /// The namespace of shared data and shared queues; plugins with the same
    /// `vm_id` see each other's. Defaults to the plugin's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_id: Option<String>,
    /// When the plugin fails (trap, CPU or memory limit), let the request
    /// through untouched instead of answering 500.
    #[serde(default)]
    pub fail_open: bool,
    /// Where its request-headers callback runs: `after_auth` (default: after
    /// authentication and the route's rate limit) or `before_auth`.
    #[serde(default)]
    pub phase: PluginPhase,
    /// Memory one instance may grow to.
    #[serde(default = "default_plugin_memory")]
    pub max_memory: ByteSize,
    /// CPU time one callback may take before it is stopped.
    #[serde(default = "default_plugin_cpu")]
    pub max_cpu_time: Duration,
}

fn redacted<S: serde::Serializer>(_: &Option<serde_json::Value>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str("[REDACTED]")
}

fn default_plugin_memory() -> ByteSize {
    ByteSize(64 * 1024 * 1024)
}

fn default_plugin_cpu() -> Duration {
    Duration::from_millis(100)
}

/// `plugins[].phase`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum PluginPhase {
    BeforeAuth,
    #[default]
    AfterAuth,
}

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

/// One listening socket.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    /// Name used in logs and metrics.
    #[serde(default = "default_listener_name")]
    pub name: String,
    /// `host:port`, or `:port` for every interface.
    pub address: String,
    /// `http` serves HTTP/1.1 and cleartext HTTP/2 (h2c) on one port.
    #[serde(default)]
    pub protocol: Protocol,
    /// Certificates for `https` and `http3` listeners.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
}

fn default_listener_name() -> String {
    "http".to_owned()
}

impl Default for Listener {
    fn default() -> Self {
        Listener {
            name: default_listener_name(),
            address: ":8080".to_owned(),
            protocol: Protocol::Http,
            tls: None,
        }
    }
}

/// Listener protocol.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    #[default]
    Http,
    Https,
    Http3,
}

/// Certificate and key files of a TLS listener: the default pair, and more
/// pairs chosen by the name the client asks for (SNI).
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// PEM certificate chain, leaf first.
    pub cert_file: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
    /// Further certificates, each served to clients that ask for a name it
    /// covers (wildcards included).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sni: Vec<CertPair>,
}

/// One certificate chain and its key.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CertPair {
    pub cert_file: String,
    pub key_file: String,
}

/// The admin listener.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Admin {
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Keep it on loopback unless a firewall protects it.
    #[serde(default = "default_admin_address")]
    pub address: String,
}

fn default_admin_address() -> String {
    "127.0.0.1:9091".to_owned()
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            enabled: true,
            address: default_admin_address(),
        }
    }
}

/// Process-wide limits and timeouts.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Server {
    /// How long SIGTERM waits for in-flight requests and streams before exiting.
    #[serde(default = "default_grace")]
    pub shutdown_grace: Duration,
    /// How long a client may take to send its request headers.
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout: Duration,
    /// Threads serving the listeners, each with its own event loop; one per
    /// CPU when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
    /// Largest request head (request line and headers) accepted.
    #[serde(default = "default_max_header_size")]
    pub max_header_size: ByteSize,
    /// Client connections served at once, over every listener; further
    /// clients wait in the kernel's accept queue.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Requests one worker serves at once (streams until their last byte);
    /// beyond, new requests get 503 with `Retry-After` at once. 0: no bound.
    #[serde(default = "default_max_requests_per_worker")]
    pub max_requests_per_worker: usize,
    /// Shed new requests (503, `Retry-After`) while a worker's event loop
    /// runs this much later than asked (the CPU is overloaded); off when
    /// absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shed_at_loop_delay: Option<Duration>,
}

fn default_max_requests_per_worker() -> usize {
    10_000
}

fn default_max_header_size() -> ByteSize {
    ByteSize(64 * 1024)
}
fn default_max_connections() -> usize {
    10_000
}

fn default_grace() -> Duration {
    Duration::from_secs(30)
}
fn default_header_read_timeout() -> Duration {
    Duration::from_secs(30)
}

impl Default for Server {
    fn default() -> Self {
        Server {
            shutdown_grace: default_grace(),
            header_read_timeout: default_header_read_timeout(),
            workers: None,
            max_header_size: default_max_header_size(),
            max_requests_per_worker: default_max_requests_per_worker(),
            shed_at_loop_delay: None,
            max_connections: default_max_connections(),
        }
    }
}

/// Logging. `RUST_LOG`, when set, overrides `level`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Logging {
    #[serde(default)]
    pub format: LogFormat,
    #[serde(default = "default_level")]
    pub level: String,
    /// One line per request with id, route, provider, model, status, duration and tokens.
    #[serde(default = "yes")]
    pub access_log: bool,
}

fn default_level() -> String {
    "info".to_owned()
}

impl Default for Logging {
    fn default() -> Self {
        Logging {
            format: LogFormat::Text,
            level: default_level(),
            access_log: true,
        }
    }
}

/// Log line format.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

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
    pub path_regex: Option<String>,
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

fn hundred() -> u32 {
    100
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

fn default_mock_chunks() -> u32 {
    8
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

fn default_key_prefix() -> String {
    "loom:".to_owned()
}
fn default_redis_timeout() -> Duration {
    Duration::from_millis(100)
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
}

/// `security:`: guardrails. Globally under `ai_gateway`, per route
/// (`routes[].security`) and per consumer tier (`security.tiers`); a
/// section given at a narrower level replaces the wider one as a whole.
#[derive(Debug, Clone, Default, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Security {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_injection: Option<PromptInjection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_filtering: Option<ContentFiltering>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pii_detection: Option<PiiDetection>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens_per_request: Option<u64>,
    /// Overrides for consumers of a tier (only in the global block).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tiers: BTreeMap<String, Security>,
}

/// `security.prompt_injection`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PromptInjection {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub action: InjectionAction,
    #[serde(default)]
    pub sensitivity: Sensitivity,
    /// The ML classifier over the local sentence embedder, combined with the rules.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classifier: Option<Classifier>,
}

/// `prompt_injection.classifier` and `content_filtering.classifier`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Classifier {
    #[serde(default)]
    pub enabled: bool,
    /// The folder `scripts/fetch-models` fills (the embedder and ONNX
    /// Runtime); `$LOOM_MODELS`, else `~/.cache/loom/models`, when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<String>,
    /// A classifier of your own instead of the built-in head (prompt
    /// injection only): a folder with `model.onnx` (sequence
    /// classification, logits out) and `tokenizer.json`, and optionally
    /// `config.json` with `id2label`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Labels of that model that mean injection (any case). Default
    /// `INJECTION`, `JAILBREAK`; label index 1 when the model names none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
}

/// What a detected prompt injection does to the request.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum InjectionAction {
    /// 400 `prompt_injection_detected`; the provider is not called.
    #[default]
    Block,
    /// Pass; log and count.
    Log,
    /// Replace the matched words with `[FILTERED]` and pass.
    Sanitize,
}

/// How readily text is called an injection.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Sensitivity {
    Low,
    #[default]
    Medium,
    High,
}

/// `security.content_filtering`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ContentFiltering {
    #[serde(default)]
    pub enabled: bool,
    /// Category names (`hate`, `violence`, `self_harm`, `sexual`,
    /// `harassment`), or `{name, action, threshold}` for one that differs
    /// from the defaults below.
    #[serde(default)]
    pub categories: Vec<CategoryRule>,
    /// Default action of the categories.
    #[serde(default)]
    pub action: ContentAction,
    /// Default score (0–1) at which a category applies; 0.6 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f32>,
    /// Check the provider's answers too (default true; answers are read by
    /// the rules only).
    #[serde(default = "yes")]
    pub responses: bool,
    /// Classifier heads over the local sentence embedder, combined with the
    /// rules on requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classifier: Option<Classifier>,
}

/// One content category, by name or with its own action and threshold.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum CategoryRule {
    Name(String),
    Detailed(CategoryDetail),
}

/// `{name, action, threshold}` of one content category.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CategoryDetail {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<ContentAction>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f32>,
}

impl CategoryRule {
    /// The category's name.
    pub fn name(&self) -> &str {
        match self {
            CategoryRule::Name(n) => n,
            CategoryRule::Detailed(d) => &d.name,
        }
    }
}

/// What filtered content does.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ContentAction {
    /// A request gets 400 `content_filtered`; an answer is cut with
    /// `finish_reason: content_filter`.
    #[default]
    Block,
    /// Pass; log and count.
    Log,
}

/// `security.pii_detection`.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PiiDetection {
    #[serde(default)]
    pub enabled: bool,
    #[serde(default)]
    pub action: PiiAction,
    /// Kinds to detect: `email`, `phone`, `ssn`, `credit_card`, `ipv4`,
    /// `ipv6`, `iban`, or a `custom` name. The seed's four when absent.
    #[serde(default)]
    pub types: Vec<String>,
    /// Extra kinds found by a regular expression.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub custom: Vec<CustomPii>,
    /// What a masked value becomes; `{TYPE}` is the kind in capitals.
    /// Default `[{TYPE}]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placeholder: Option<String>,
    /// Check and mask the provider's answers too (default true).
    #[serde(default = "yes")]
    pub responses: bool,
    /// Reversible masking: each value becomes a numbered placeholder
    /// (`[EMAIL_1]`) and the answer gets the client's own values back.
    #[serde(default)]
    pub restore: bool,
}

/// A PII kind defined by a regular expression.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomPii {
    pub name: String,
    pub pattern: String,
}

/// What found PII does.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum PiiAction {
    /// Replace each value with its placeholder before the provider sees it.
    #[default]
    Mask,
    /// 400 `pii_detected`, naming the kinds (never the values).
    Block,
    /// Pass; count only.
    Log,
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

fn yes() -> bool {
    true
}

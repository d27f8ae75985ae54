//! Where Loom listens and how the process runs: listeners, TLS, the
//! admin listener, server limits and logging.

use serde::{Deserialize, Serialize};

use super::*;
use crate::units::{ByteSize, Duration, Secret};

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
    /// Keep it on loopback unless a firewall protects it; any other
    /// address needs `tokens`.
    #[serde(default = "default_admin_address")]
    pub address: String,
    /// Bearer tokens the admin API takes. None: the API is open, which is
    /// allowed on a loopback address only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<AdminToken>,
    /// Endpoints served without a token even when tokens are set, for
    /// scrapers and probes: any of `metrics`, `health`, `ready`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub open: Vec<OpenEndpoint>,
}

/// One admin token.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminToken {
    /// Who holds it: named in the audit log, never the token.
    pub name: String,
    /// The token (best from the environment, `${LOOM_ADMIN_TOKEN}`) or
    /// `sha256:` and its hex SHA-256 (`loom hash-key`).
    pub token: Secret,
    /// What it may do.
    pub scopes: Vec<AdminScope>,
}

/// What an admin token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AdminScope {
    /// Read usage, providers, metrics, health and the configuration.
    Read,
    /// Manage consumers, keys, teams and budgets (and read them).
    Keys,
    /// Everything.
    Admin,
}

/// An admin endpoint that may be left open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OpenEndpoint {
    Metrics,
    Health,
    Ready,
}

fn default_admin_address() -> String {
    "127.0.0.1:9091".to_owned()
}

impl Default for Admin {
    fn default() -> Self {
        Admin {
            enabled: true,
            address: default_admin_address(),
            tokens: Vec::new(),
            open: Vec::new(),
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

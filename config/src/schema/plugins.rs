//! Proxy-Wasm plugins.

use serde::{Deserialize, Serialize};

use super::*;
use crate::units::{ByteSize, Duration};

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

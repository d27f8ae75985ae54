//! Guardrails: prompt injection, content filtering, PII.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::schema::*;
use crate::units::Pattern;

/// The guardrail policies of a configuration with their sections merged
/// (built by [`crate::Config::guardrails`]).
#[derive(Debug, Clone, Default)]
pub struct Guardrails {
    /// For routes without their own `security`.
    pub global: PolicyLayer,
    /// AI routes with their own `security`, by route id.
    pub routes: Vec<(String, PolicyLayer)>,
}

/// A policy and its per-tier variants, each complete.
#[derive(Debug, Clone, Default)]
pub struct PolicyLayer {
    pub base: Security,
    pub tiers: BTreeMap<String, Security>,
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
    /// Compiled as the file is read (at most 1 MiB compiled, so a pattern
    /// cannot make every request slow).
    pub pattern: Pattern,
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

//! Guardrails: checks on what goes to a provider and what comes back.
//!
//! A [`Guardrails`] is one compiled `security` policy: prompt-injection
//! rules, content rules and PII detectors with their actions. [`Policies`]
//! holds the global policy and the per-route and per-tier ones, all built
//! at configuration load. The gateway runs [`Guardrails::check_request`]
//! after limits and before the cache and the provider, [`Guardrails::check_answer`]
//! on whole answers and a [`StreamGuard`] on streamed ones.
//!
//! Every check reads text through [`normalize`], so obfuscated text is
//! judged as plainly as clear text. The built-in rule sets compile once per
//! process and are shared by every policy.

pub mod classifier;
pub mod content;
pub mod injection;
pub mod normalize;
pub mod pii;
pub mod rules;
mod stream;

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Instant;

use loom_config::settings as cfg;
use loom_models::chat::{ChatRequest, Content, Role};

use content::{Category, ContentRules};
use injection::{InjectionRules, Sensitivity};
use pii::{PiiDetector, PiiKind};
use rules::Prepared;

pub use stream::{Release, StreamGuard};

static INJECTION_RULES: LazyLock<InjectionRules> = LazyLock::new(InjectionRules::new);
static CONTENT_RULES: LazyLock<ContentRules> = LazyLock::new(ContentRules::new);

/// Where guardrail events are counted (the gateway's metrics).
pub trait Observer: Send + Sync {
    /// `count` values of PII `kind` were found.
    fn pii(&self, kind: &str, count: u64);
    /// A request was refused, or an answer cut, for `reason`
    /// (`prompt_injection`, `pii`, `content_filter`).
    fn blocked(&self, reason: &'static str);
    /// A check ran for `seconds`.
    fn timed(&self, check: &'static str, seconds: f64);
}

/// An observer that counts nothing (tests, benchmarks).
#[derive(Debug, Default)]
pub struct Unobserved;

impl Observer for Unobserved {
    fn pii(&self, _: &str, _: u64) {}
    fn blocked(&self, _: &'static str) {}
    fn timed(&self, _: &'static str, _: f64) {}
}

/// What the checks decided about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Let it through (possibly rewritten: masked or sanitised).
    Allow,
    /// Refuse it with 400.
    Block {
        /// `prompt_injection`, `pii` or `content_filter`: the metrics label.
        reason: &'static str,
        /// The error code clients see: `prompt_injection_detected`,
        /// `pii_detected`, `content_filtered`.
        code: &'static str,
        message: String,
    },
}

/// One rule or detector that fired, for the decision log. Never holds the
/// matched text.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// `prompt_injection`, `pii`, `content`.
    pub check: &'static str,
    /// The rule id (`override.ignore_previous`) or PII kind (`email`).
    pub rule: String,
    /// The family or category (`instruction_override`, `hate`, …).
    pub category: &'static str,
    /// `block`, `log`, `sanitize` or `mask`.
    pub action: &'static str,
    /// The score that was compared with the threshold (1 for PII).
    pub score: f32,
}

/// The outcome of a request check.
#[derive(Debug, Clone)]
pub struct Report {
    pub verdict: Verdict,
    /// Whether any text was rewritten.
    pub changed: bool,
    pub findings: Vec<Finding>,
    /// Under reversible masking: the values masked, to restore in the answer.
    pub vault: Option<pii::Vault>,
}

/// An answer after its check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerVerdict {
    Allow,
    /// Content of a blocked category: the answer is withheld and ends with
    /// `finish_reason: content_filter`.
    Filtered {
        category: &'static str,
    },
}

struct InjectionCheck {
    action: cfg::InjectionAction,
    threshold: f32,
    /// The classifier, when it is on.
    classifier: Option<classifier::Scorer>,
}

impl std::fmt::Debug for InjectionCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InjectionCheck")
            .field("action", &self.action)
            .field("threshold", &self.threshold)
            .field("classifier", &self.classifier.is_some())
            .finish()
    }
}

struct ContentCheck {
    /// Category, action, threshold.
    categories: Vec<(Category, cfg::ContentAction, f32)>,
    responses: bool,
    /// The embedder and a head per configured category, for requests.
    classifier: Option<(Arc<dyn classifier::Embedder>, ContentHeads)>,
}

/// One classifier head per content category.
type ContentHeads = Vec<(Category, classifier::LinearHead)>;

impl std::fmt::Debug for ContentCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContentCheck")
            .field("categories", &self.categories)
            .field("responses", &self.responses)
            .field("classifier", &self.classifier.is_some())
            .finish()
    }
}

#[derive(Debug)]
struct PiiCheck {
    detector: PiiDetector,
    action: cfg::PiiAction,
    responses: bool,
    restore: bool,
}

impl PiiCheck {
    /// Answers are masked under `mask` and `block` (the tokens are spent:
    /// refusing would waste them), only counted under `log`.
    fn masks_answers(&self) -> bool {
        self.action != cfg::PiiAction::Log
    }
}

/// One compiled `security` policy.
pub struct Guardrails {
    injection: Option<InjectionCheck>,
    content: Option<ContentCheck>,
    pii: Option<PiiCheck>,
    /// `max_tokens_per_request` of this policy.
    pub max_tokens_per_request: Option<u64>,
    observer: Arc<dyn Observer>,
}

impl std::fmt::Debug for Guardrails {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guardrails")
            .field("injection", &self.injection)
            .field("content", &self.content)
            .field("pii", &self.pii)
            .field("max_tokens_per_request", &self.max_tokens_per_request)
            .finish()
    }
}

impl Default for Guardrails {
    fn default() -> Self {
        Guardrails {
            injection: None,
            content: None,
            pii: None,
            max_tokens_per_request: None,
            observer: Arc::new(Unobserved),
        }
    }
}

/// Default score at which a content category applies.
const CONTENT_THRESHOLD: f32 = 0.6;

/// The seed's PII kinds, used when `types` is empty.
const DEFAULT_PII: [PiiKind; 4] = [
    PiiKind::Email,
    PiiKind::Phone,
    PiiKind::Ssn,
    PiiKind::CreditCard,
];

impl Guardrails {
    /// Compiles one `security` block (validated beforehand). `models` are
    /// the loaded models the classifiers use.
    pub fn from_config(
        s: &cfg::Security,
        observer: Arc<dyn Observer>,
        models: &Models,
    ) -> Guardrails {
        let embedder = models.embedder.as_ref();
        let injection = s.prompt_injection.as_ref().filter(|p| p.enabled).map(|p| {
            LazyLock::force(&INJECTION_RULES);
            let wants = p.classifier.as_ref().filter(|c| c.enabled);
            let scorer = wants.and_then(|c| match &c.model {
                Some(dir) => models
                    .injection
                    .iter()
                    .find(|(d, _)| d == dir)
                    .map(|(_, m)| classifier::Scorer::Model(m.clone())),
                None => embedder.map(|e| {
                    classifier::Scorer::Head(e.clone(), classifier::LinearHead::injection())
                }),
            });
            InjectionCheck {
                classifier: scorer,
                action: p.action,
                threshold: match p.sensitivity {
                    cfg::Sensitivity::Low => Sensitivity::Low,
                    cfg::Sensitivity::Medium => Sensitivity::Medium,
                    cfg::Sensitivity::High => Sensitivity::High,
                }
                .threshold(),
            }
        });
        let content = s.content_filtering.as_ref().filter(|c| c.enabled).map(|c| {
            LazyLock::force(&CONTENT_RULES);
            let default = c.threshold.unwrap_or(CONTENT_THRESHOLD);
            let wants = c.classifier.as_ref().is_some_and(|k| k.enabled);
            let heads: Vec<(Category, classifier::LinearHead)> = classifier::content_heads()
                .into_iter()
                .filter_map(|(name, h)| Category::from_name(&name).map(|cat| (cat, h)))
                .filter(|(cat, _)| c.categories.iter().any(|r| r.name() == cat.name()))
                .collect();
            ContentCheck {
                classifier: embedder.filter(|_| wants).map(|e| (e.clone(), heads)),
                categories: c
                    .categories
                    .iter()
                    .filter_map(|r| {
                        let cat = Category::from_name(r.name())?;
                        Some(match r {
                            cfg::CategoryRule::Name(_) => (cat, c.action, default),
                            cfg::CategoryRule::Detailed(d) => (
                                cat,
                                d.action.unwrap_or(c.action),
                                d.threshold.unwrap_or(default),
                            ),
                        })
                    })
                    .collect(),
                responses: c.responses,
            }
        });
        let pii = s.pii_detection.as_ref().filter(|p| p.enabled).map(|p| {
            let mut kinds: Vec<PiiKind> = p
                .types
                .iter()
                .filter_map(|t| PiiKind::from_name(t))
                .collect();
            let custom: Vec<(String, regex::Regex)> = p
                .custom
                .iter()
                .filter(|c| p.types.is_empty() || p.types.contains(&c.name))
                .map(|c| (c.name.clone(), c.pattern.regex().clone()))
                .collect();
            if p.types.is_empty() {
                kinds = DEFAULT_PII.to_vec();
            }
            PiiCheck {
                detector: PiiDetector::with(
                    &kinds,
                    &custom,
                    p.placeholder.as_deref().unwrap_or(pii::DEFAULT_PLACEHOLDER),
                ),
                action: p.action,
                responses: p.responses,
                restore: p.restore && p.action == cfg::PiiAction::Mask,
            }
        });
        Guardrails {
            injection,
            content,
            pii,
            max_tokens_per_request: s.max_tokens_per_request,
            observer,
        }
    }

    /// Whether the request check runs a model (milliseconds of CPU): the
    /// gateway then runs it off the async runtime.
    pub fn is_heavy(&self) -> bool {
        self.injection
            .as_ref()
            .is_some_and(|i| i.classifier.is_some())
    }

    /// Whether no check is configured (requests and answers pass untouched).
    pub fn is_empty(&self) -> bool {
        self.injection.is_none() && self.content.is_none() && self.pii.is_none()
    }

    /// Whether answers are checked (and streams need a [`StreamGuard`]).
    pub fn checks_answers(&self) -> bool {
        self.answer_pii().is_some() || self.answer_content().is_some()
    }

    /// Checks, and may rewrite, the texts of a request. Injection and
    /// content rules read what the user and tools wrote; PII is looked for
    /// in every message, the system prompt included.
    pub fn check_request(&self, texts: &mut dyn Texts) -> Report {
        let mut report = Report {
            verdict: Verdict::Allow,
            changed: false,
            findings: Vec::new(),
            vault: None,
        };
        if self.is_empty() {
            return report;
        }
        if self.injection.is_some() || self.content.is_some() {
            let mut injected = false;
            let mut worst: Option<(&'static str, f32)> = None;
            texts.each(&mut |role, text| {
                if !matches!(role, Role::User | Role::Tool | Role::Function) {
                    return;
                }
                // One normalised view of the text for both rule sets.
                let started = Instant::now();
                let prepared = Prepared::new(text);
                if let Some(check) = &self.injection {
                    injected |= self.injection(check, &prepared, text, &mut report);
                    self.observer
                        .timed("prompt_injection", started.elapsed().as_secs_f64());
                }
                if let Some(check) = &self.content {
                    let started = Instant::now();
                    let (mut scores, _) = CONTENT_RULES.assess_prepared(&prepared);
                    if let Some((embedder, heads)) = &check.classifier {
                        classify_content(embedder.as_ref(), heads, text, &mut scores);
                    }
                    for (cat, action, score) in content_hits(check, scores) {
                        report.findings.push(Finding {
                            check: "content",
                            rule: cat.name().to_owned(),
                            category: cat.name(),
                            action: action_name(action),
                            score,
                        });
                        if action == cfg::ContentAction::Block
                            && worst.is_none_or(|(_, s)| score > s)
                        {
                            worst = Some((cat.name(), score));
                        }
                    }
                    self.observer
                        .timed("content", started.elapsed().as_secs_f64());
                }
            });
            if injected {
                self.observer.blocked("prompt_injection");
                report.verdict = Verdict::Block {
                    reason: "prompt_injection",
                    code: "prompt_injection_detected",
                    message: "The request was refused: it looks like a prompt injection".into(),
                };
                return report;
            }
            if let Some((category, _)) = worst {
                self.observer.blocked("content_filter");
                report.verdict = Verdict::Block {
                    reason: "content_filter",
                    code: "content_filtered",
                    message: format!(
                        "The request was refused by the content filter (category: {category})"
                    ),
                };
                return report;
            }
        }
        if let Some(check) = &self.pii {
            let started = Instant::now();
            let mut kinds: Vec<PiiKind> = Vec::new();
            let mut vault = pii::Vault::default();
            texts.each(&mut |_, text| {
                let found = check.detector.find(text);
                if found.is_empty() {
                    return;
                }
                for f in &found {
                    if !kinds.contains(&f.kind) {
                        kinds.push(f.kind);
                    }
                }
                self.count_pii(&check.detector, &found);
                if check.action == cfg::PiiAction::Mask {
                    *text = if check.restore {
                        check.detector.masked_reversibly(text, &found, &mut vault)
                    } else {
                        check.detector.masked(text, &found)
                    };
                    report.changed = true;
                }
            });
            if !vault.is_empty() {
                report.vault = Some(vault);
            }
            self.observer.timed("pii", started.elapsed().as_secs_f64());
            kinds.sort();
            for k in &kinds {
                report.findings.push(Finding {
                    check: "pii",
                    rule: check.detector.name(*k).to_owned(),
                    category: "pii",
                    action: match check.action {
                        cfg::PiiAction::Mask => "mask",
                        cfg::PiiAction::Block => "block",
                        cfg::PiiAction::Log => "log",
                    },
                    score: 1.0,
                });
            }
            if check.action == cfg::PiiAction::Block && !kinds.is_empty() {
                self.observer.blocked("pii");
                let names: Vec<&str> = kinds.iter().map(|k| check.detector.name(*k)).collect();
                report.verdict = Verdict::Block {
                    reason: "pii",
                    code: "pii_detected",
                    message: format!(
                        "The request contains personal data ({}); remove it and try again",
                        names.join(", ")
                    ),
                };
            }
        }
        report
    }

    /// Reads one text for injection; rewrites it under `sanitize`. True
    /// when it should be blocked.
    fn injection(
        &self,
        check: &InjectionCheck,
        prepared: &Prepared,
        text: &mut String,
        report: &mut Report,
    ) -> bool {
        let mut a = INJECTION_RULES.assess_prepared(prepared, text);
        if let Some(scorer) = &check.classifier {
            match scorer.probability(text) {
                Ok(p) => {
                    let e = classifier::evidence(p);
                    if e > 0.0 {
                        a.score = 1.0 - (1.0 - a.score) * (1.0 - e);
                        a.hits.push(injection::Hit {
                            rule: "classifier.embedding",
                            label: injection::Family::Classifier,
                            span: 0..text.len(),
                        });
                    }
                }
                // Rules alone decide; the reason is logged, never the text.
                Err(e) => tracing::warn!(error = %e, "injection classifier failed; rules only"),
            }
        }
        if a.hits.is_empty() {
            return false;
        }
        let over = a.score >= check.threshold;
        let action = if over {
            match check.action {
                cfg::InjectionAction::Block => "block",
                cfg::InjectionAction::Log => "log",
                cfg::InjectionAction::Sanitize => "sanitize",
            }
        } else {
            "allow"
        };
        let mut seen: Vec<&'static str> = Vec::new();
        for h in &a.hits {
            if !seen.contains(&h.rule) {
                seen.push(h.rule);
                report.findings.push(Finding {
                    check: "prompt_injection",
                    rule: h.rule.to_owned(),
                    category: h.label.name(),
                    action,
                    score: a.score,
                });
            }
        }
        if !over {
            return false;
        }
        match check.action {
            cfg::InjectionAction::Block => true,
            cfg::InjectionAction::Log => false,
            cfg::InjectionAction::Sanitize => {
                *text = injection::sanitize(text, &a.hits);
                report.changed = true;
                false
            }
        }
    }

    /// Checks, and may mask, one whole answer's text; with the request's
    /// vault (reversible masking), its placeholders get their values back.
    pub fn check_answer(&self, text: &mut String, vault: Option<&pii::Vault>) -> AnswerVerdict {
        if let Some(check) = self.content.as_ref().filter(|c| c.responses) {
            let started = Instant::now();
            let hits = answer_content_hits(check, text);
            self.observer
                .timed("content", started.elapsed().as_secs_f64());
            if let Some((cat, _, _)) = hits
                .iter()
                .find(|(_, action, _)| *action == cfg::ContentAction::Block)
            {
                self.observer.blocked("content_filter");
                return AnswerVerdict::Filtered {
                    category: cat.name(),
                };
            }
        }
        if let Some(check) = self.pii.as_ref().filter(|p| p.responses) {
            let started = Instant::now();
            let found = check.detector.find(text);
            if !found.is_empty() {
                self.count_pii(&check.detector, &found);
                if check.masks_answers() {
                    *text = check.detector.masked(text, &found);
                }
            }
            self.observer.timed("pii", started.elapsed().as_secs_f64());
        }
        if let Some(v) = vault {
            *text = v.restore(text);
        }
        AnswerVerdict::Allow
    }

    /// A guard for one streamed answer, or `None` when answers are not
    /// checked and there is nothing to restore.
    pub fn stream_guard(self: &Arc<Self>, vault: Option<pii::Vault>) -> Option<StreamGuard> {
        if self.checks_answers() || vault.is_some() {
            Some(StreamGuard::new(self.clone(), vault))
        } else {
            None
        }
    }

    fn count_pii(&self, detector: &PiiDetector, found: &[pii::Finding]) {
        let mut counted: Vec<(PiiKind, u64)> = Vec::new();
        for f in found {
            match counted.iter_mut().find(|(k, _)| *k == f.kind) {
                Some((_, n)) => *n += 1,
                None => counted.push((f.kind, 1)),
            }
        }
        for (k, n) in counted {
            self.observer.pii(detector.name(k), n);
        }
    }

    /// PII masking of answers, for the stream guard.
    fn answer_pii(&self) -> Option<&PiiCheck> {
        self.pii.as_ref().filter(|p| p.responses)
    }

    /// Content checks of answers, for the stream guard.
    fn answer_content(&self) -> Option<&ContentCheck> {
        self.content.as_ref().filter(|c| c.responses)
    }
}

/// Adds the classifier's evidence to the rule scores of a request's text,
/// for every category with a head. Answers are read by the rules only (an
/// embedding per streamed chunk would cost too much).
fn classify_content(
    embedder: &dyn classifier::Embedder,
    heads: &[(Category, classifier::LinearHead)],
    text: &str,
    scores: &mut Vec<content::Score>,
) {
    let v = match embedder.embed(text) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(error = %e, "content classifier failed; rules only");
            return;
        }
    };
    for (cat, head) in heads {
        let e = classifier::evidence(head.probability(&v));
        if e == 0.0 {
            continue;
        }
        match scores.iter_mut().find(|s| s.category == *cat) {
            Some(s) => s.score = 1.0 - (1.0 - s.score) * (1.0 - e),
            None => scores.push(content::Score {
                category: *cat,
                score: e,
            }),
        }
    }
}

/// Categories over their threshold: (category, action, score).
fn content_hits(
    check: &ContentCheck,
    scores: Vec<content::Score>,
) -> Vec<(Category, cfg::ContentAction, f32)> {
    scores
        .into_iter()
        .filter_map(|s| {
            let (_, action, threshold) =
                check.categories.iter().find(|(c, _, _)| *c == s.category)?;
            (s.score >= *threshold).then_some((s.category, *action, s.score))
        })
        .collect()
}

/// The rule scores of an answer's text (answers are read by the rules only).
fn answer_content_hits(
    check: &ContentCheck,
    text: &str,
) -> Vec<(Category, cfg::ContentAction, f32)> {
    content_hits(check, CONTENT_RULES.assess(text).0)
}

fn action_name(a: cfg::ContentAction) -> &'static str {
    match a {
        cfg::ContentAction::Block => "block",
        cfg::ContentAction::Log => "log",
    }
}

/// The texts of a request, each with the role of the message it is in.
pub trait Texts {
    /// Calls `f` on every text, which it may rewrite.
    fn each(&mut self, f: &mut dyn FnMut(Role, &mut String));
}

impl Texts for ChatRequest {
    fn each(&mut self, f: &mut dyn FnMut(Role, &mut String)) {
        for m in &mut self.messages {
            let role = m.role;
            match &mut m.content {
                Some(Content::Text(t)) => f(role, t),
                Some(Content::Parts(parts)) => {
                    for t in parts.iter_mut().filter_map(|p| p.text.as_mut()) {
                        f(role, t);
                    }
                }
                None => {}
            }
        }
    }
}

impl Texts for serde_json::Value {
    /// A legacy completions `prompt`: a string or an array of strings.
    fn each(&mut self, f: &mut dyn FnMut(Role, &mut String)) {
        match self {
            serde_json::Value::String(s) => f(Role::User, s),
            serde_json::Value::Array(items) => {
                for item in items {
                    if let serde_json::Value::String(s) = item {
                        f(Role::User, s);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Models loaded for the classifiers, by the gateway.
#[derive(Default, Clone)]
pub struct Models {
    /// The sentence embedder (built-in heads).
    pub embedder: Option<Arc<dyn classifier::Embedder>>,
    /// Injection classifiers of the operator's own, by folder.
    pub injection: Vec<(String, Arc<dyn classifier::TextClassifier>)>,
}

/// The global policy and its per-route and per-tier variants.
#[derive(Debug, Default)]
pub struct Policies {
    /// For routes without their own `security` and consumers without a
    /// tier override.
    global: Layer,
    /// Routes with their own `security`, by route id.
    routes: HashMap<String, Layer>,
}

/// A policy and its per-tier variants.
#[derive(Debug, Default)]
struct Layer {
    base: Arc<Guardrails>,
    tiers: HashMap<String, Arc<Guardrails>>,
}

impl Layer {
    /// Compiles a layer whose sections are already merged (a tier's
    /// replace the route's, which replaced the global ones).
    fn build(layer: &cfg::PolicyLayer, observer: &Arc<dyn Observer>, models: &Models) -> Layer {
        Layer {
            base: Arc::new(Guardrails::from_config(
                &layer.base,
                observer.clone(),
                models,
            )),
            tiers: layer
                .tiers
                .iter()
                .map(|(tier, t)| {
                    let compiled = Guardrails::from_config(t, observer.clone(), models);
                    (tier.clone(), Arc::new(compiled))
                })
                .collect(),
        }
    }

    fn get(&self, tier: Option<&str>) -> &Arc<Guardrails> {
        tier.and_then(|t| self.tiers.get(t)).unwrap_or(&self.base)
    }

    fn is_empty(&self) -> bool {
        self.base.is_empty() && self.tiers.values().all(|g| g.is_empty())
    }
}

impl Policies {
    /// Compiles every policy of a configuration; `models` serve the
    /// policies whose classifiers are on.
    pub fn new(
        policies: &cfg::Guardrails,
        observer: Arc<dyn Observer>,
        models: &Models,
    ) -> Policies {
        Policies {
            global: Layer::build(&policies.global, &observer, models),
            routes: policies
                .routes
                .iter()
                .map(|(id, layer)| (id.clone(), Layer::build(layer, &observer, models)))
                .collect(),
        }
    }

    /// The policy of a request on `route` by a consumer of `tier`: two
    /// map lookups by borrowed keys, no allocation.
    pub fn get(&self, route: &str, tier: Option<&str>) -> &Arc<Guardrails> {
        self.routes.get(route).unwrap_or(&self.global).get(tier)
    }

    /// Whether any policy has a check.
    pub fn is_empty(&self) -> bool {
        self.global.is_empty() && self.routes.values().all(Layer::is_empty)
    }
}

#[cfg(test)]
mod tests;

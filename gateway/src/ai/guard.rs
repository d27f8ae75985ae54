//! The guardrail stage of AI routes: the policy of a request (route and
//! consumer tier), its request check with the decision log, and the checks
//! of whole and streamed answers in OpenAI's shapes.

use std::sync::Arc;

use bytes::Bytes;
use loom_guardrails::pii::Vault;
use loom_guardrails::{AnswerVerdict, Guardrails, Release, StreamGuard, Texts, Verdict};
use loom_models::chat::{ChatChunk, ChatResponse, ChunkChoice, Content};
use loom_models::completions::{CompletionChoice, CompletionResponse};

use super::ApiError;
use crate::runtime::exchange::Exchange;
use crate::runtime::state::Runtime;

/// The policy that applies to this request.
pub fn policy(rt: &Runtime, ex: &Exchange) -> Arc<Guardrails> {
    let tier = ex.consumer.as_ref().and_then(|c| c.tier.as_deref());
    rt.guardrails.get(&ex.route, tier).clone()
}

/// A request's policy and what its checks did, for the answer's checks.
pub struct Applied {
    pub policy: Arc<Guardrails>,
    /// The request was rewritten (masked or sanitised).
    pub changed: bool,
    /// Values masked reversibly, to put back into the answer.
    pub vault: Option<Vault>,
}

impl Applied {
    /// A policy whose request checks did not run (nothing to check).
    pub fn unchecked(policy: Arc<Guardrails>) -> Applied {
        Applied {
            policy,
            changed: false,
            vault: None,
        }
    }

    /// Whether answers need reading: checks, or values to restore.
    pub fn reads_answers(&self) -> bool {
        self.policy.checks_answers() || self.vault.is_some()
    }
}

/// Runs the request checks on `value` and gives it back, checked; every
/// finding is logged with the request id (rule and category, never the
/// matched text). A policy with the classifier runs on a blocking thread:
/// an embedding takes milliseconds of CPU that the async workers must not
/// spend.
pub async fn check<T: Texts + Send + 'static>(
    policy: Arc<Guardrails>,
    mut value: T,
    ex: &Exchange,
) -> Result<(T, Applied), ApiError> {
    if policy.is_empty() {
        return Ok((value, Applied::unchecked(policy)));
    }
    let report = if policy.is_heavy() {
        let p = policy.clone();
        let (v, report) = tokio::task::spawn_blocking(move || {
            let report = p.check_request(&mut value);
            (value, report)
        })
        .await
        .map_err(|_| ApiError::Internal("the guardrail check failed"))?;
        value = v;
        report
    } else {
        policy.check_request(&mut value)
    };
    let consumer = ex
        .consumer
        .as_ref()
        .map_or("anonymous", |c| c.name.as_str());
    let metrics = &ex.shared().metrics.guardrails;
    for f in &report.findings {
        if f.action != "allow" {
            metrics.detected(f.check, f.category, f.action);
        }
        tracing::info!(
            request_id = %ex.request_id,
            consumer,
            check = f.check,
            rule = %f.rule,
            category = f.category,
            action = f.action,
            score = f.score,
            "guardrail finding"
        );
    }
    match report.verdict {
        Verdict::Allow => Ok((
            value,
            Applied {
                policy,
                changed: report.changed,
                vault: report.vault,
            },
        )),
        Verdict::Block { code, message, .. } => Err(ApiError::Blocked { code, message }),
    }
}

/// A whole chat answer after the answer checks: masked, or withheld with
/// `finish_reason: content_filter`. Unchanged bytes when nothing applies.
pub fn whole_chat(a: &Applied, body: Bytes) -> Bytes {
    if !a.reads_answers() {
        return body;
    }
    let Ok(mut answer) = serde_json::from_slice::<ChatResponse>(&body) else {
        return body;
    };
    let mut changed = false;
    for choice in &mut answer.choices {
        let Some(Content::Text(text)) = &mut choice.message.content else {
            continue;
        };
        let mut checked = text.clone();
        match a.policy.check_answer(&mut checked, a.vault.as_ref()) {
            AnswerVerdict::Allow => {
                changed |= checked != *text;
                *text = checked;
            }
            AnswerVerdict::Filtered { .. } => {
                choice.message.content = None;
                choice.finish_reason = Some("content_filter".into());
                changed = true;
            }
        }
    }
    if !changed {
        return body;
    }
    serde_json::to_vec(&answer).map_or(body, Bytes::from)
}

/// A whole legacy completion after the answer checks.
pub fn whole_completion(a: &Applied, body: Bytes) -> Bytes {
    if !a.reads_answers() {
        return body;
    }
    let Ok(mut answer) = serde_json::from_slice::<CompletionResponse>(&body) else {
        return body;
    };
    let mut changed = false;
    for choice in &mut answer.choices {
        let mut checked = choice.text.clone();
        match a.policy.check_answer(&mut checked, a.vault.as_ref()) {
            AnswerVerdict::Allow => {
                changed |= checked != choice.text;
                choice.text = checked;
            }
            AnswerVerdict::Filtered { .. } => {
                choice.text.clear();
                choice.finish_reason = Some("content_filter".into());
                changed = true;
            }
        }
    }
    if !changed {
        return body;
    }
    serde_json::to_vec(&answer).map_or(body, Bytes::from)
}

/// What to do with a stream event after its guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Send,
    /// Everything it carried is held back for now.
    Skip,
    /// Content of a blocked category: this event now ends the answer with
    /// `finish_reason: content_filter`; the stream stops after it.
    Filtered,
}

/// A stream event whose text a [`StreamGuard`] can hold back and mask.
pub trait Guarded: Sized {
    /// Passes the event's text through the guard.
    fn guard(&mut self, g: &mut StreamGuard) -> Step;
    /// An event like `self` carrying only `text` for choice `index` (what a
    /// guard still held when the provider's stream ended).
    fn carrying(&self, index: u32, text: String) -> Self;
}

/// The text to put back into an event for one choice: what the guard
/// releases of `delta`, plus everything it held when the choice finishes.
fn released(
    g: &mut StreamGuard,
    index: u32,
    delta: Option<&str>,
    finished: bool,
) -> Option<String> {
    let mut out = match delta {
        Some(d) => match g.push(index, d) {
            Release::Text(t) => t,
            Release::Filtered { .. } => return None,
        },
        None => String::new(),
    };
    if finished {
        match g.finish(index) {
            Release::Text(t) => out.push_str(&t),
            Release::Filtered { .. } => return None,
        }
    }
    Some(out)
}

/// A choice of a stream event, as the guard sees it.
trait StreamChoice: Default {
    fn index(&self) -> u32;
    fn set_index(&mut self, index: u32);
    fn take_text(&mut self) -> Option<String>;
    /// Puts back released text (nothing when it is empty).
    fn put_text(&mut self, text: String);
    fn finish_reason(&mut self) -> &mut Option<String>;
}

impl StreamChoice for ChunkChoice {
    fn index(&self) -> u32 {
        self.index
    }
    fn set_index(&mut self, index: u32) {
        self.index = index;
    }
    fn take_text(&mut self) -> Option<String> {
        self.delta.content.take()
    }
    fn put_text(&mut self, text: String) {
        if !text.is_empty() {
            self.delta.content = Some(text);
        }
    }
    fn finish_reason(&mut self) -> &mut Option<String> {
        &mut self.finish_reason
    }
}

impl StreamChoice for CompletionChoice {
    fn index(&self) -> u32 {
        self.index
    }
    fn set_index(&mut self, index: u32) {
        self.index = index;
    }
    fn take_text(&mut self) -> Option<String> {
        Some(std::mem::take(&mut self.text))
    }
    fn put_text(&mut self, text: String) {
        self.text = text;
    }
    fn finish_reason(&mut self) -> &mut Option<String> {
        &mut self.finish_reason
    }
}

/// Passes every choice's text through the guard. On blocked content the
/// choices become one that ends the answer with `finish_reason:
/// content_filter`, and this returns true.
fn guard_choices<C: StreamChoice>(choices: &mut Vec<C>, g: &mut StreamGuard) -> bool {
    for c in choices.iter_mut() {
        let had = c.take_text();
        let finished = c.finish_reason().is_some();
        match released(g, c.index(), had.as_deref(), finished) {
            Some(t) => c.put_text(t),
            None => {
                let mut stop = C::default();
                stop.set_index(choices.first().map_or(0, StreamChoice::index));
                *stop.finish_reason() = Some("content_filter".into());
                *choices = vec![stop];
                return true;
            }
        }
    }
    false
}

impl Guarded for ChatChunk {
    fn guard(&mut self, g: &mut StreamGuard) -> Step {
        if guard_choices(&mut self.choices, g) {
            return Step::Filtered;
        }
        let empty = self.usage.is_none()
            && self.choices.iter().all(|c| {
                c.finish_reason.is_none()
                    && c.delta.content.is_none()
                    && c.delta.role.is_none()
                    && c.delta.refusal.is_none()
                    && c.delta.tool_calls.is_none()
                    && c.delta.extra.is_empty()
            });
        if empty && !self.choices.is_empty() {
            Step::Skip
        } else {
            Step::Send
        }
    }

    fn carrying(&self, index: u32, text: String) -> Self {
        let mut c = ChatChunk {
            choices: Vec::new(),
            usage: None,
            ..self.clone()
        };
        let mut choice = ChunkChoice {
            index,
            ..ChunkChoice::default()
        };
        choice.delta.content = Some(text);
        c.choices.push(choice);
        c
    }
}

impl Guarded for CompletionResponse {
    fn guard(&mut self, g: &mut StreamGuard) -> Step {
        if guard_choices(&mut self.choices, g) {
            return Step::Filtered;
        }
        let empty = self.usage.is_none()
            && self
                .choices
                .iter()
                .all(|c| c.text.is_empty() && c.finish_reason.is_none());
        if empty && !self.choices.is_empty() {
            Step::Skip
        } else {
            Step::Send
        }
    }

    fn carrying(&self, index: u32, text: String) -> Self {
        CompletionResponse {
            choices: vec![CompletionChoice {
                index,
                text,
                ..CompletionChoice::default()
            }],
            usage: None,
            ..self.clone()
        }
    }
}

/// The guard state of one stream: the guard, and a copy of its first event
/// with choices, the template for text still held at the end.
pub struct StreamCheck<T> {
    guard: StreamGuard,
    template: Option<T>,
}

impl<T: Guarded + Clone> StreamCheck<T> {
    /// A check for a stream, when answers are read.
    pub fn new(a: &Applied) -> Option<StreamCheck<T>> {
        a.policy
            .stream_guard(a.vault.clone())
            .map(|guard| StreamCheck {
                guard,
                template: None,
            })
    }

    /// Guards one event; `has_choices` tells whether it can be a template.
    pub fn event(&mut self, event: &mut T, has_choices: bool) -> Step {
        if self.template.is_none() && has_choices {
            self.template = Some(event.clone());
        }
        event.guard(&mut self.guard)
    }

    /// Events carrying text still held when the provider's stream ended
    /// without finishing its choices.
    pub fn end(&mut self) -> Vec<T> {
        let Some(template) = &self.template else {
            return Vec::new();
        };
        self.guard
            .finish_all()
            .into_iter()
            .filter_map(|(index, r)| match r {
                Release::Text(t) if !t.is_empty() => Some(template.carrying(index, t)),
                _ => None,
            })
            .collect()
    }
}

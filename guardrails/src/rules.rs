//! The rule engine shared by prompt-injection and content checks: weighted
//! regular expressions over a normalised view, compiled once into one
//! [`RegexSet`] so that a text no rule matches is read once, in one pass.
//! Only the rules the set reports are run again to find where they matched.

use std::ops::Range;

use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};

use crate::normalize::{Normalized, for_rules, leet};

/// One rule that matched: its id, label (family or category) and where, in
/// the original text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit<L> {
    pub rule: &'static str,
    pub label: L,
    pub span: Range<usize>,
}

struct Rule<L> {
    id: &'static str,
    label: L,
    weight: f32,
    /// Counts for half in a sentence that matches the context expression.
    dampened: bool,
    regex: Regex,
}

/// Compiled rules with labels of type `L`.
pub struct RuleSet<L> {
    rules: Vec<Rule<L>>,
    set: RegexSet,
    context: Option<Regex>,
}

impl<L> std::fmt::Debug for RuleSet<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleSet")
            .field("rules", &self.rules.len())
            .finish()
    }
}

/// Patterns with bounded gaps over Unicode classes grow large compiled;
/// this is enough for the built-in rules with room for custom ones.
const SIZE_LIMIT: usize = 64 << 20;

impl<L: Copy> RuleSet<L> {
    /// Compiles `(id, label, weight, dampened, pattern)` rules; a rule that
    /// does not compile is logged and left out (built-in rules are tested to
    /// compile).
    pub fn compile<P: AsRef<str>>(
        rules: &[(&'static str, L, f32, bool, P)],
        context: Option<&str>,
    ) -> RuleSet<L> {
        let rules: Vec<Rule<L>> = rules
            .iter()
            .filter_map(|(id, label, weight, dampened, pattern)| {
                match RegexBuilder::new(pattern.as_ref())
                    .size_limit(SIZE_LIMIT)
                    .build()
                {
                    Ok(regex) => Some(Rule {
                        id,
                        label: *label,
                        weight: *weight,
                        dampened: *dampened,
                        regex,
                    }),
                    Err(e) => {
                        tracing::error!(rule = id, error = %e, "guardrail rule does not compile");
                        None
                    }
                }
            })
            .collect();
        let set = RegexSetBuilder::new(rules.iter().map(|r| r.regex.as_str()))
            .size_limit(SIZE_LIMIT)
            .build()
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "guardrail rule set does not compile");
                RegexSet::empty()
            });
        let context =
            context.and_then(|c| RegexBuilder::new(c).size_limit(SIZE_LIMIT).build().ok());
        RuleSet {
            rules,
            set,
            context,
        }
    }

    /// How many rules compiled.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether no rule compiled.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Reads `text` in its plain rules view and, when it has leetspeak, its
    /// folded view too (see [`RuleSet::read`]).
    pub fn read_text(
        &self,
        text: &str,
        weights: &mut Vec<(L, f32)>,
        hits: &mut Vec<Hit<L>>,
        within: Option<Range<usize>>,
    ) {
        let plain = for_rules(text);
        match leet(&plain) {
            Some(folded) => self.read(&[&plain, &folded], weights, hits, within),
            None => self.read(&[&plain], weights, hits, within),
        }
    }

    /// Adds the weight of each matching rule (once per rule, its strongest
    /// match in any of the views) with its label, and a hit per match. The
    /// views are readings of one text (plain and leetspeak-folded). With
    /// `within`, every hit's span is that original range (the encoded run
    /// the views were decoded from).
    pub fn read(
        &self,
        views: &[&Normalized<'_>],
        weights: &mut Vec<(L, f32)>,
        hits: &mut Vec<Hit<L>>,
        within: Option<Range<usize>>,
    ) {
        let mut strongest: Vec<(usize, f32)> = Vec::new();
        for view in views {
            let text: &str = &view.text;
            let matched = self.set.matches(text);
            for i in matched.iter() {
                let rule = &self.rules[i];
                for m in rule.regex.find_iter(text) {
                    let r = m.range();
                    let mut w = rule.weight;
                    if rule.dampened
                        && self
                            .context
                            .as_ref()
                            .is_some_and(|c| c.is_match(&text[sentence(text, &r)]))
                    {
                        w *= 0.5;
                    }
                    match strongest.iter_mut().find(|(j, _)| *j == i) {
                        Some((_, s)) => *s = s.max(w),
                        None => strongest.push((i, w)),
                    }
                    hits.push(Hit {
                        rule: rule.id,
                        label: rule.label,
                        span: within.clone().unwrap_or_else(|| view.original_range(r)),
                    });
                }
            }
        }
        weights.extend(strongest.into_iter().map(|(i, w)| (self.rules[i].label, w)));
    }
}

/// Independent pieces of evidence combined: `1 - Π(1 - w)`.
pub fn combine<'a>(weights: impl IntoIterator<Item = &'a f32>) -> f32 {
    1.0 - weights
        .into_iter()
        .fold(1.0f32, |keep, w| keep * (1.0 - w.clamp(0.0, 1.0)))
}

/// The sentence around a span, for the context check.
fn sentence(text: &str, span: &Range<usize>) -> Range<usize> {
    let b = text.as_bytes();
    let stop = |c: &u8| matches!(c, b'.' | b'!' | b'?' | b'\n');
    let start = b[..span.start].iter().rposition(stop).map_or(0, |i| i + 1);
    let end = b[span.end..]
        .iter()
        .position(stop)
        .map_or(b.len(), |i| span.end + i);
    start..end
}

/// The text with each span replaced by `with`; overlapping spans merge.
pub fn replace_spans(
    text: &str,
    spans: impl IntoIterator<Item = Range<usize>>,
    with: &str,
) -> String {
    let mut spans: Vec<Range<usize>> = spans.into_iter().collect();
    spans.sort_by_key(|r| (r.start, std::cmp::Reverse(r.end)));
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for r in spans {
        if r.start < at {
            at = at.max(r.end);
            continue;
        }
        out.push_str(&text[at..r.start.min(text.len())]);
        out.push_str(with);
        at = r.end;
    }
    out.push_str(&text[at.min(text.len())..]);
    out
}

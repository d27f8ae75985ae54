//! Guardrail policies.

use super::*;

/// Names of the built-in PII kinds and content categories.
pub(super) const PII_KINDS: [&str; 7] = [
    "email",
    "phone",
    "ssn",
    "credit_card",
    "ipv4",
    "ipv6",
    "iban",
];
pub(super) const CATEGORIES: [&str; 5] = ["hate", "violence", "self_harm", "sexual", "harassment"];

/// One `security` block (global, a tier's or a route's).
pub(crate) fn security(s: &crate::schema::Security, at: &str, found: &mut Found) {
    if let Some(c) = &s.content_filtering {
        if c.classifier.as_ref().is_some_and(|k| k.model.is_some()) {
            found.push((
                format!("{at}.content_filtering.classifier.model"),
                "a classifier of your own is supported for prompt_injection only".into(),
            ));
        }
        if c.enabled && c.categories.is_empty() {
            found.push((
                format!("{at}.content_filtering.categories"),
                format!("name at least one category: {}", CATEGORIES.join(", ")),
            ));
        }
        let mut thresholds = vec![(format!("{at}.content_filtering.threshold"), c.threshold)];
        for (i, cat) in c.categories.iter().enumerate() {
            let name = cat.name();
            if !CATEGORIES.contains(&name) {
                found.push((
                    format!("{at}.content_filtering.categories[{i}]"),
                    format!(
                        "unknown category {name:?}{}; known: {}",
                        suggest(name, CATEGORIES.iter().copied()),
                        CATEGORIES.join(", ")
                    ),
                ));
            }
            if let crate::schema::CategoryRule::Detailed(d) = cat {
                thresholds.push((
                    format!("{at}.content_filtering.categories[{i}].threshold"),
                    d.threshold,
                ));
            }
        }
        for (field, t) in thresholds {
            if let Some(t) = t
                && !(t > 0.0 && t <= 1.0)
            {
                found.push((field, "must be above 0 and at most 1".into()));
            }
        }
    }
    if let Some(p) = &s.pii_detection {
        let custom: Vec<&str> = p.custom.iter().map(|c| c.name.as_str()).collect();
        for (i, t) in p.types.iter().enumerate() {
            if !PII_KINDS.contains(&t.as_str()) && !custom.contains(&t.as_str()) {
                found.push((
                    format!("{at}.pii_detection.types[{i}]"),
                    format!(
                        "unknown PII type {t:?}{}; known: {} (or a name under custom)",
                        suggest(t, PII_KINDS.iter().copied()),
                        PII_KINDS.join(", ")
                    ),
                ));
            }
        }
        for (i, c) in p.custom.iter().enumerate() {
            let valid_name = !c.name.is_empty()
                && c.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid_name || PII_KINDS.contains(&c.name.as_str()) {
                found.push((
                    format!("{at}.pii_detection.custom[{i}].name"),
                    "a custom type needs its own name of letters, digits and _".into(),
                ));
            }
            // (It compiled as the file was read.)
            if c.pattern.as_str().is_empty() {
                found.push((
                    format!("{at}.pii_detection.custom[{i}].pattern"),
                    "the pattern is empty".into(),
                ));
            }
        }
        if p.restore && p.action != crate::schema::PiiAction::Mask {
            found.push((
                format!("{at}.pii_detection.restore"),
                "restore needs action: mask".into(),
            ));
        }
        if p.placeholder.as_deref() == Some("") {
            found.push((
                format!("{at}.pii_detection.placeholder"),
                "must not be empty; use {TYPE} for the kind, as in [{TYPE}]".into(),
            ));
        }
    }
    if s.max_tokens_per_request == Some(0) {
        found.push((
            format!("{at}.max_tokens_per_request"),
            "must be at least 1".into(),
        ));
    }
}

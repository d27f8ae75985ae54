//! Consumers: names, keys, tiers.

use std::collections::HashSet;

use super::*;

/// Consumers: unique names usable in store keys, well-formed unique keys,
/// tiers that the rate limits know.
pub(super) fn consumer_entries(config: &Config, found: &mut Found) {
    let mut names = HashSet::new();
    let mut keys = HashSet::new();
    let tiers = &config.ai_gateway.rate_limit.consumers;
    for (i, c) in config.consumers.iter().enumerate() {
        let at = format!("consumers[{i}]");
        if c.name.is_empty() || c.name.contains(['{', '}', ':']) || c.name.len() > 128 {
            found.push((
                format!("{at}.name"),
                "a consumer name must be 1 to 128 characters without `{`, `}` or `:`".into(),
            ));
        } else if !names.insert(c.name.as_str()) {
            found.push((
                format!("{at}.name"),
                format!("duplicate consumer name {:?}", c.name),
            ));
        }
        if c.keys.is_empty() {
            found.push((
                format!("{at}.keys"),
                "a consumer needs at least one key".into(),
            ));
        }
        for (j, k) in c.keys.iter().enumerate() {
            let k = k.expose();
            let problem = match k.strip_prefix("sha256:") {
                Some(hex) if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
                    Some("a `sha256:` key needs 64 hexadecimal digits")
                }
                Some(_) => None,
                None if k.len() < 8 => Some("a key must be at least 8 characters long"),
                None => None,
            };
            if let Some(p) = problem {
                found.push((format!("{at}.keys[{j}]"), p.into()));
            } else if !keys.insert(match k.strip_prefix("sha256:") {
                // Hex digests compare without case; keys themselves are case-sensitive.
                Some(hex) => format!("sha256:{}", hex.to_ascii_lowercase()),
                None => k.to_owned(),
            }) {
                // The message must not repeat the key.
                found.push((
                    format!("{at}.keys[{j}]"),
                    "this key is already given to a consumer".into(),
                ));
            }
        }
        if let Some(tier) = &c.tier
            && config.ai_gateway.rate_limit.enabled
            && !tiers.contains_key(tier)
        {
            found.push((
                format!("{at}.tier"),
                format!("unknown tier {tier:?}; define it under ai_gateway.rate_limit.consumers"),
            ));
        }
    }
}

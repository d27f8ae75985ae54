//! What a configuration may say but probably should not: deprecated
//! spellings of keys, consumers named only by a limit. Warnings never stop
//! a configuration from loading; `loom validate` prints them and the
//! gateway logs them at start and on reload.

use crate::resilience::Spellings;
use crate::schema::Config;

type Found = Vec<(String, String)>;

fn spellings(at: &str, s: &Spellings, found: &mut Found) {
    for sp in &s.0 {
        found.push((
            format!("{at}.{}", sp.old),
            format!(
                "`{}` is deprecated; write `{}` (see docs/configuration.md, resilience settings)",
                sp.old, sp.new
            ),
        ));
    }
}

/// Every warning of `config`, as (field, message).
pub(crate) fn warnings(config: &Config) -> Found {
    let mut found = Found::new();
    for (i, r) in config.routes.iter().enumerate() {
        if let Some(retry) = &r.retry {
            spellings(&format!("routes[{i}].retry"), &retry.spellings, &mut found);
        }
    }
    for (i, u) in config.upstreams.iter().enumerate() {
        if let Some(b) = &u.circuit_breaker {
            spellings(
                &format!("upstreams[{i}].circuit_breaker"),
                &b.spellings,
                &mut found,
            );
        }
    }
    let ai = &config.ai_gateway;
    spellings(
        "ai_gateway.routing.circuit_breaker",
        &ai.routing.circuit_breaker.spellings,
        &mut found,
    );
    for (at, f) in [
        ("ai_gateway.failover", &ai.failover),
        ("ai_gateway.routing.failover", &ai.routing.failover),
    ] {
        if let Some(f) = f {
            spellings(at, &f.spellings, &mut found);
        }
    }
    for (i, l) in ai.token_accounting.limits.iter().enumerate() {
        if l.consumer != "anonymous" && !config.consumers.iter().any(|c| c.name == l.consumer) {
            found.push((
                format!("ai_gateway.token_accounting.limits[{i}].consumer"),
                format!(
                    "consumer {:?} is not defined under consumers:, so no key maps to it yet; it is created for this limit, and requests count against it once a consumer entry gives it a key",
                    l.consumer
                ),
            ));
        }
    }
    found
}

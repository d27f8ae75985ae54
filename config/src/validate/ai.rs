//! The AI gateway: providers, routing, the cache and accounting.

use std::collections::HashSet;

use super::*;

pub(super) fn ai_gateway(ai: &AiGateway, consumers: &[ConsumerEntry], found: &mut Found) {
    let mut names = HashSet::new();
    for (i, p) in ai.providers.iter().enumerate() {
        let at = format!("ai_gateway.providers[{i}]");
        if p.name.is_empty() {
            found.push((format!("{at}.name"), "a provider needs a name".into()));
        } else if !names.insert(p.name.as_str()) {
            found.push((
                format!("{at}.name"),
                format!("duplicate provider name {:?}", p.name),
            ));
        }
        match p.kind {
            ProviderKind::Openai | ProviderKind::Mock | ProviderKind::Anthropic | ProviderKind::Gemini => {}
            ProviderKind::Vertex if p.base_url.is_none() && (p.project.is_none() || p.location.is_none()) => {
                found.push((
                    format!("{at}.base_url"),
                    "a vertex provider needs base_url, or project and location".into(),
                ))
            }
            ProviderKind::Vertex => {}
            ProviderKind::OpenaiCompatible if p.base_url.is_none() => found.push((
                format!("{at}.base_url"),
                "an openai_compatible provider needs base_url (for example http://127.0.0.1:11434/v1)".into(),
            )),
            ProviderKind::OpenaiCompatible => {}
            ProviderKind::AzureOpenai if p.endpoint.is_none() && p.base_url.is_none() => found.push((
                format!("{at}.endpoint"),
                "an azure_openai provider needs endpoint (for example https://myorg.openai.azure.com)".into(),
            )),
            ProviderKind::AzureOpenai => {}
        }
        for (key, url) in [("base_url", &p.base_url), ("endpoint", &p.endpoint)] {
            if let Some(url) = url
                && !(url.starts_with("http://") || url.starts_with("https://"))
            {
                found.push((
                    format!("{at}.{key}"),
                    format!("invalid {key} {url:?}: expected an http:// or https:// URL"),
                ));
            }
        }
        if p.mock.is_some() && p.kind != ProviderKind::Mock {
            found.push((
                format!("{at}.mock"),
                "mock options only apply to type: mock".into(),
            ));
        }
    }
    if ai.enabled && ai.providers.is_empty() {
        found.push((
            "ai_gateway.providers".into(),
            "the AI gateway needs at least one provider".into(),
        ));
    }
    let r = &ai.routing;
    for (field, f) in [
        ("ai_gateway.failover", &ai.failover),
        ("ai_gateway.routing.failover", &r.failover),
    ] {
        if let Some(f) = f {
            if let Some(code) = f.retry_codes.iter().find(|c| !(100..=599).contains(*c)) {
                found.push((
                    format!("{field}.retry_codes"),
                    format!("{code} is not an HTTP status"),
                ));
            }
            if f.attempt_timeout.get().is_zero() {
                found.push((
                    format!("{field}.attempt_timeout"),
                    "the time for one try must be above zero".into(),
                ));
            }
            if !(1..=10).contains(&f.attempts) {
                found.push((
                    format!("{field}.attempts"),
                    format!(
                        "tries in all, the first included: 1 to 10, not {}",
                        f.attempts
                    ),
                ));
            }
        }
    }
    breaker_percent(
        r.circuit_breaker.failure_percent,
        "ai_gateway.routing.circuit_breaker",
        found,
    );
    if r.circuit_breaker.consecutive_failures == 0 {
        found.push((
            "ai_gateway.routing.circuit_breaker.consecutive_failures".into(),
            "must be at least 1".into(),
        ));
    }
    if ai.failover.is_some() && r.failover.is_some() {
        found.push((
            "ai_gateway.routing.failover".into(),
            "failover is set both at ai_gateway.failover and ai_gateway.routing.failover; keep one"
                .into(),
        ));
    }
    for (i, rp) in r.providers.iter().enumerate() {
        if !names.contains(rp.name.as_str()) {
            found.push((
                format!("ai_gateway.routing.providers[{i}].name"),
                format!("unknown provider {:?}", rp.name),
            ));
        }
    }
    for (model, per_provider) in &ai.model_mapping {
        for provider in per_provider.keys() {
            if !names.contains(provider.as_str()) {
                found.push((
                    format!("ai_gateway.model_mapping.{model}.{provider}"),
                    format!("unknown provider {provider:?}"),
                ));
            }
        }
    }
    semantic_cache(ai, found);
    kept_responses(ai, found);
    accounting(ai, found);
    let hc = &ai.routing.health_check;
    if hc.enabled && hc.interval.get().is_zero() {
        found.push((
            "ai_gateway.routing.health_check.interval".into(),
            "must be longer than zero".into(),
        ));
    }
    let s = &ai.security;
    security(s, "ai_gateway.security", found);
    let known: HashSet<&str> = ai
        .rate_limit
        .consumers
        .keys()
        .map(String::as_str)
        .chain(consumers.iter().filter_map(|c| c.tier.as_deref()))
        .collect();
    for (tier, t) in &s.tiers {
        let at = format!("ai_gateway.security.tiers.{tier}");
        if !known.contains(tier.as_str()) {
            found.push((
                at.clone(),
                format!("unknown tier {tier:?}; no consumer has it and ai_gateway.rate_limit.consumers does not define it"),
            ));
        }
        if !t.tiers.is_empty() {
            found.push((format!("{at}.tiers"), "tiers cannot be nested".into()));
        }
        security(t, &at, found);
    }
}

fn kept_responses(ai: &AiGateway, found: &mut Found) {
    let r = &ai.responses;
    if r.store == crate::schema::KeptStore::Redis && ai.kept_redis().is_none() {
        found.push((
            "ai_gateway.responses.store".into(),
            "store: redis needs ai_gateway.responses.redis (or a Redis usage store to share)"
                .into(),
        ));
    }
    if r.ttl.get().is_zero() {
        found.push((
            "ai_gateway.responses.ttl".into(),
            "must be above zero".into(),
        ));
    }
    if r.max_size.0 == 0 {
        found.push((
            "ai_gateway.responses.max_size".into(),
            "must be above zero".into(),
        ));
    }
}

pub(super) fn semantic_cache(ai: &crate::schema::AiGateway, found: &mut Found) {
    let c = &ai.semantic_cache;
    let at = "ai_gateway.semantic_cache";
    threshold(c.similarity_threshold, at, found);
    if c.ttl.is_some_and(|t| t.get().is_zero()) {
        found.push((format!("{at}.ttl"), "must be longer than zero".into()));
    }
    if c.max_temperature
        .is_some_and(|t| !(t.is_finite() && (0.0..=2.0).contains(&t)))
    {
        found.push((
            format!("{at}.max_temperature"),
            "a sampling temperature from 0 to 2".into(),
        ));
    }
    if c.max_size.is_some_and(|m| m.0 == 0) {
        found.push((format!("{at}.max_size"), "must be above zero".into()));
    }
    if !c.enabled {
        return;
    }
    match c.backend {
        crate::schema::CacheBackend::Memory => {}
        crate::schema::CacheBackend::Qdrant => {
            if c.qdrant.is_none() {
                found.push((
                    format!("{at}.backend"),
                    "backend: qdrant needs semantic_cache.qdrant: {url: ...}".into(),
                ));
            }
        }
        crate::schema::CacheBackend::Redis => {
            if ai.cache_redis().is_none() {
                found.push((
                    format!("{at}.backend"),
                    "backend: redis needs semantic_cache.redis (or a Redis usage store to share)"
                        .into(),
                ));
            }
        }
    }
    if let Some(e) = &c.embedding
        && e.provider != "local"
        && !ai.providers.iter().any(|p| p.name == e.provider)
    {
        let names: Vec<&str> = std::iter::once("local")
            .chain(ai.providers.iter().map(|p| p.name.as_str()))
            .collect();
        let hint = crate::error::closest(&e.provider, names.iter().copied())
            .map(|n| format!("; did you mean {n:?}?"))
            .unwrap_or_default();
        found.push((
            format!("{at}.embedding.provider"),
            format!(
                "unknown embedding provider {:?}: `local` or a provider under ai_gateway.providers{hint}",
                e.provider
            ),
        ));
    }
}

/// `token_accounting`, `rate_limit` and `pricing`.
pub(super) fn accounting(ai: &AiGateway, found: &mut Found) {
    let ta = &ai.token_accounting;
    if let Some(store) = &ta.store {
        match (&store.kind, &store.redis) {
            (StoreKind::Redis, None) => found.push((
                "ai_gateway.token_accounting.store.redis".into(),
                "a redis store needs redis: {address: host:port}".into(),
            )),
            (StoreKind::Redis, Some(r)) if r.address.is_empty() => found.push((
                "ai_gateway.token_accounting.store.redis.address".into(),
                "the Redis address must not be empty".into(),
            )),
            _ => {}
        }
    }
    for (i, l) in ta.limits.iter().enumerate() {
        let at = format!("ai_gateway.token_accounting.limits[{i}]");
        // A consumer named only here is created without keys (a warning
        // says so, see `warnings`); its name must still be usable.
        if l.consumer.is_empty() || l.consumer.contains(['{', '}', ':']) || l.consumer.len() > 128 {
            found.push((
                format!("{at}.consumer"),
                "a consumer name must be 1 to 128 characters without `{`, `}` or `:`".into(),
            ));
        }
        for (field, v) in [
            ("daily_cost_limit", l.daily_cost_limit),
            ("monthly_cost_limit", l.monthly_cost_limit),
        ] {
            if v.is_some_and(|v| !(v.is_finite() && v >= 0.0)) {
                found.push((
                    format!("{at}.{field}"),
                    "a cost limit must be a non-negative number of dollars".into(),
                ));
            }
        }
    }
    if ta.buffer_limit == 0 {
        found.push((
            "ai_gateway.token_accounting.buffer_limit".into(),
            "must be at least 1".into(),
        ));
    }
    let rl = &ai.rate_limit;
    for (field, rate) in [
        ("token_rate", &rl.token_rate),
        ("request_rate", &rl.request_rate),
    ] {
        if let Some(r) = rate {
            if r.limit == 0 {
                found.push((
                    format!("ai_gateway.rate_limit.{field}.limit"),
                    "must be at least 1".into(),
                ));
            }
            if r.window.is_some_and(|w| w.0.is_zero()) {
                found.push((
                    format!("ai_gateway.rate_limit.{field}.window"),
                    "must be longer than zero".into(),
                ));
            }
        }
    }
    for (tier, rates) in &rl.consumers {
        for (field, v) in [
            ("token_rate", rates.token_rate),
            ("request_rate", rates.request_rate),
        ] {
            if v == Some(0) {
                found.push((
                    format!("ai_gateway.rate_limit.consumers.{tier}.{field}"),
                    "must be at least 1".into(),
                ));
            }
        }
    }
    for (i, p) in ai.pricing.iter().enumerate() {
        let at = format!("ai_gateway.pricing[{i}]");
        for (field, v) in [
            ("cost_per_1k_input", Some(p.cost_per_1k_input)),
            ("cost_per_1k_output", Some(p.cost_per_1k_output)),
            ("cost_per_1k_cached_input", p.cost_per_1k_cached_input),
        ] {
            if v.is_some_and(|v| !(v.is_finite() && v >= 0.0)) {
                found.push((
                    format!("{at}.{field}"),
                    "a price must be a non-negative number".into(),
                ));
            }
        }
        if let Some(provider) = &p.provider
            && !ai.providers.iter().any(|q| &q.name == provider)
        {
            found.push((
                format!("{at}.provider"),
                format!("unknown provider {provider:?}"),
            ));
        }
    }
}

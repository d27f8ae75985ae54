//! Semantic checks that the schema alone cannot express, including the rule
//! that a section Loom does not implement yet is rejected when it is enabled.

use std::collections::HashSet;
use std::net::SocketAddr;

use crate::schema::*;

type Found = Vec<(String, String)>;

/// Parses `host:port` or `:port` (every interface) into a socket address.
pub fn listen_address(address: &str) -> Result<SocketAddr, String> {
    let full = if address.starts_with(':') {
        format!("0.0.0.0{address}")
    } else {
        address.replace("localhost:", "127.0.0.1:")
    };
    full.parse()
        .map_err(|_| format!("invalid address {address:?}: expected host:port or :port"))
}

/// A breaker's failure share is a percent in 1..=100.
fn breaker_percent(percent: u32, at: &str, found: &mut Found) {
    if !(1..=100).contains(&percent) {
        found.push((
            format!("{at}.failure_percent"),
            format!("a percent from 1 to 100, not {percent}"),
        ));
    }
}

/// A similarity threshold is a cosine in (0, 1].
fn threshold(t: Option<f64>, at: &str, found: &mut Found) {
    if let Some(t) = t
        && !(t > 0.0 && t <= 1.0)
    {
        found.push((
            format!("{at}.similarity_threshold"),
            format!("must be above 0 and at most 1 (a cosine similarity), not {t}"),
        ));
    }
}

fn semantic_cache(ai: &crate::schema::AiGateway, found: &mut Found) {
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
            let accounting_redis = ai
                .token_accounting
                .store
                .as_ref()
                .is_some_and(|s| s.redis.is_some());
            if c.redis.is_none() && !accounting_redis {
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

/// Every problem found, as (field path, message).
pub(crate) fn validate(config: &Config) -> Found {
    let mut found = Found::new();
    if config.routes.is_empty() {
        // An empty or truncated file (an editor saving, a config manager
        // half-way through a write) parses as a configuration without
        // routes; applying it would answer every request 404.
        found.push((
            "routes".into(),
            "no routes: a configuration must define at least one route (an empty or truncated file is never applied)".into(),
        ));
    }
    listeners(config, &mut found);
    if config
        .server
        .shed_at_loop_delay
        .is_some_and(|d| d.get() < std::time::Duration::from_millis(1))
    {
        found.push((
            "server.shed_at_loop_delay".into(),
            "at least 1ms (a loop is always a little late); leave it out to turn shedding by delay off".into(),
        ));
    }
    if let Err(e) = listen_address(&config.admin.address) {
        found.push(("admin.address".into(), e));
    }
    upstreams(config, &mut found);
    plugins(config, &mut found);
    routes(config, &mut found);
    ai_gateway(&config.ai_gateway, &config.consumers, &mut found);
    consumer_entries(config, &mut found);
    found
}

/// Consumers: unique names usable in store keys, well-formed unique keys,
/// tiers that the rate limits know.
fn consumer_entries(config: &Config, found: &mut Found) {
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

/// `token_accounting`, `rate_limit` and `pricing`.
fn accounting(ai: &AiGateway, found: &mut Found) {
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

fn listeners(config: &Config, found: &mut Found) {
    let mut names = HashSet::new();
    for (i, l) in config.listeners.iter().enumerate() {
        let at = format!("listeners[{i}]");
        if !names.insert(&l.name) {
            found.push((
                format!("{at}.name"),
                format!("duplicate listener name {:?}", l.name),
            ));
        }
        if let Err(e) = listen_address(&l.address) {
            found.push((format!("{at}.address"), e));
        }
        match l.protocol {
            Protocol::Http => {}
            Protocol::Https if l.tls.is_none() => found.push((
                format!("{at}.tls"),
                "an https listener needs tls: {cert_file, key_file}".into(),
            )),
            Protocol::Https => {}
            Protocol::Http3 => {
                if l.tls.is_none() {
                    found.push((
                        format!("{at}.tls"),
                        "an http3 listener needs tls: {cert_file, key_file}".into(),
                    ));
                }
            }
        }
    }
}

fn plugins(config: &Config, found: &mut Found) {
    let mut names = HashSet::new();
    for (i, p) in config.plugins.iter().enumerate() {
        let at = format!("plugins[{i}]");
        if p.name.is_empty() {
            found.push((format!("{at}.name"), "a plugin needs a name".into()));
        } else if !names.insert(&p.name) {
            found.push((
                format!("{at}.name"),
                format!("duplicate plugin name {:?}", p.name),
            ));
        }
        if p.path.is_empty() {
            found.push((
                format!("{at}.path"),
                "a plugin needs the path of its .wasm file".into(),
            ));
        }
        if p.max_memory.0 < 64 * 1024 {
            found.push((
                format!("{at}.max_memory"),
                "at least one WebAssembly page (64KB)".into(),
            ));
        }
        if p.max_cpu_time.get().is_zero() {
            found.push((
                format!("{at}.max_cpu_time"),
                "must be longer than zero".into(),
            ));
        }
    }
}

fn upstreams(config: &Config, found: &mut Found) {
    let mut names = HashSet::new();
    for (i, u) in config.upstreams.iter().enumerate() {
        let at = format!("upstreams[{i}]");
        if let Some(b) = &u.circuit_breaker {
            breaker_percent(b.failure_percent, &format!("{at}.circuit_breaker"), found);
        }
        if !names.insert(&u.name) {
            found.push((
                format!("{at}.name"),
                format!("duplicate upstream name {:?}", u.name),
            ));
        }
        if u.endpoints.is_empty() {
            found.push((
                format!("{at}.endpoints"),
                "an upstream needs at least one endpoint".into(),
            ));
        }
        if let Some(t) = &u.tls
            && t.client_cert_file.is_some() != t.client_key_file.is_some()
        {
            found.push((
                format!("{at}.tls"),
                "client_cert_file and client_key_file go together".into(),
            ));
        }
        if let Some(h) = &u.hash_on {
            if u.load_balancer != crate::schema::LoadBalancer::ConsistentHash {
                found.push((
                    format!("{at}.hash_on"),
                    "hash_on applies to load_balancer: consistent_hash".into(),
                ));
            }
            if h.header.is_some() && h.cookie.is_some() {
                found.push((
                    format!("{at}.hash_on"),
                    "name a header or a cookie, not both".into(),
                ));
            }
        }
        for (j, ep) in u.endpoints.iter().enumerate() {
            if !(1..=1000).contains(&ep.weight()) {
                found.push((
                    format!("{at}.endpoints[{j}].weight"),
                    "must be between 1 and 1000".into(),
                ));
            }
            let e = ep.url();
            // https:// endpoints are verified against the system's roots, or tls.ca_file.
            let url_ok = ["http://", "https://"]
                .iter()
                .any(|scheme| e.starts_with(scheme) && e.len() > scheme.len());
            if !url_ok {
                found.push((
                    format!("{at}.endpoints[{j}]"),
                    format!("invalid endpoint {e:?}: expected a URL such as http://10.0.0.5:8000 or https://api.internal"),
                ));
            }
        }
    }
}

fn routes(config: &Config, found: &mut Found) {
    let upstream_names: HashSet<&str> = config.upstreams.iter().map(|u| u.name.as_str()).collect();
    let mut ids = HashSet::new();
    for (i, r) in config.routes.iter().enumerate() {
        let at = format!("routes[{i}]");
        if r.id.is_empty() {
            found.push((format!("{at}.id"), "a route needs an id".into()));
        } else if !ids.insert(&r.id) {
            found.push((format!("{at}.id"), format!("duplicate route id {:?}", r.id)));
        }
        if !r.path.starts_with('/') {
            found.push((
                format!("{at}.path"),
                format!("path {:?} must start with /", r.path),
            ));
        } else if r.path.trim_end_matches('*').contains('*') {
            found.push((
                format!("{at}.path"),
                format!(
                    "path {:?}: a wildcard is only allowed at the end, as /prefix/*",
                    r.path
                ),
            ));
        }
        if let Some(methods) = &r.methods {
            for (j, m) in methods.iter().enumerate() {
                if http_method_invalid(m) {
                    found.push((
                        format!("{at}.methods[{j}]"),
                        format!("invalid HTTP method {m:?}"),
                    ));
                }
            }
        }
        match (r.ai_gateway, &r.upstream) {
            (true, Some(_)) => found.push((
                format!("{at}.upstream"),
                "a route is either an AI route (ai_gateway: true) or a proxy route (upstream), not both".into(),
            )),
            (false, None) if r.redirect.is_none() => found.push((
                at.clone(),
                "a route needs ai_gateway: true, an upstream to forward to, or a redirect".into(),
            )),
            (false, Some(u)) if !upstream_names.contains(u.as_str()) => found.push((
                format!("{at}.upstream"),
                format!("unknown upstream {u:?}; define it under upstreams:"),
            )),
            (true, None) if !config.ai_gateway.enabled => found.push((
                format!("{at}.ai_gateway"),
                "this AI route needs ai_gateway.enabled: true".into(),
            )),
            _ => {}
        }
        if let Some(m) = &r.matches {
            if let Some(re) = &m.path_regex
                && let Err(e) = regex::Regex::new(re)
            {
                found.push((
                    format!("{at}.match.path_regex"),
                    format!("invalid regular expression: {e}"),
                ));
            }
            for name in m.headers.keys() {
                if http::HeaderName::try_from(name.as_str()).is_err() {
                    found.push((
                        format!("{at}.match.headers"),
                        format!("invalid header name {name:?}"),
                    ));
                }
            }
        }
        if let Some(rw) = &r.rewrite {
            if rw.prefix_from.is_some() != rw.prefix_to.is_some() {
                found.push((
                    format!("{at}.rewrite"),
                    "prefix_from and prefix_to go together".into(),
                ));
            }
            for (edits, which) in [
                (&rw.request_headers, "request_headers"),
                (&rw.response_headers, "response_headers"),
            ] {
                for name in edits.set.keys().chain(edits.remove.iter()) {
                    if http::HeaderName::try_from(name.as_str()).is_err() {
                        found.push((
                            format!("{at}.rewrite.{which}"),
                            format!("invalid header name {name:?}"),
                        ));
                    }
                }
                for (name, value) in &edits.set {
                    if http::HeaderValue::try_from(value.as_str()).is_err() {
                        found.push((
                            format!("{at}.rewrite.{which}.set.{name}"),
                            "invalid header value".into(),
                        ));
                    }
                }
            }
        }
        if let Some(rd) = &r.redirect {
            if ![301, 302, 303, 307, 308].contains(&rd.status) {
                found.push((
                    format!("{at}.redirect.status"),
                    "must be 301, 302, 303, 307 or 308".into(),
                ));
            }
            if http::Uri::try_from(rd.to.as_str()).is_err() {
                found.push((
                    format!("{at}.redirect.to"),
                    format!("invalid URL {:?}", rd.to),
                ));
            }
        }
        if let Some(c) = &r.canary {
            if !upstream_names.contains(c.upstream.as_str()) {
                found.push((
                    format!("{at}.canary.upstream"),
                    format!(
                        "unknown upstream {:?}; define it under upstreams:",
                        c.upstream
                    ),
                ));
            }
            if c.weight > 100 {
                found.push((
                    format!("{at}.canary.weight"),
                    "must be a percentage, 0 to 100".into(),
                ));
            }
            if r.upstream.is_none() {
                found.push((
                    format!("{at}.canary"),
                    "a canary splits a proxy route's traffic: set upstream too".into(),
                ));
            }
        }
        if let Some(sh) = &r.shadow {
            if !upstream_names.contains(sh.upstream.as_str()) {
                found.push((
                    format!("{at}.shadow.upstream"),
                    format!(
                        "unknown upstream {:?}; define it under upstreams:",
                        sh.upstream
                    ),
                ));
            }
            if sh.percent > 100 {
                found.push((
                    format!("{at}.shadow.percent"),
                    "must be a percentage, 0 to 100".into(),
                ));
            }
            if r.upstream.is_none() {
                found.push((
                    format!("{at}.shadow"),
                    "shadowing copies a proxy route's traffic: set upstream too".into(),
                ));
            }
        }
        if let Some(retry) = &r.retry {
            if r.ai_gateway {
                found.push((
                    format!("{at}.retry"),
                    "retries apply to proxy routes; AI routes fail over between providers (ai_gateway.routing)".into(),
                ));
            }
            if !(1..=10).contains(&retry.attempts) {
                found.push((
                    format!("{at}.retry.attempts"),
                    "must be between 1 and 10".into(),
                ));
            }
            for (k, on) in retry.on.iter().enumerate() {
                let known = matches!(on.as_str(), "connect_failure" | "reset" | "timeout" | "5xx")
                    || on.parse::<u16>().is_ok_and(|c| (100..600).contains(&c));
                if !known {
                    found.push((
                        format!("{at}.retry.on[{k}]"),
                        format!("unknown retry condition {on:?}: connect_failure, reset, timeout, 5xx, or a status code"),
                    ));
                }
            }
            if retry.budget_percent > 100 {
                found.push((
                    format!("{at}.retry.budget_percent"),
                    "must be at most 100".into(),
                ));
            }
        }
        if let Some(c) = &r.semantic_cache {
            if !r.ai_gateway {
                found.push((
                    format!("{at}.semantic_cache"),
                    "the semantic cache applies to AI routes only (ai_gateway: true)".into(),
                ));
            }
            threshold(
                c.similarity_threshold,
                &format!("{at}.semantic_cache"),
                found,
            );
        }
        if let Some(sec) = &r.security {
            if !r.ai_gateway {
                found.push((
                    format!("{at}.security"),
                    "guardrails apply to AI routes only (ai_gateway: true)".into(),
                ));
            }
            if !sec.tiers.is_empty() {
                found.push((
                    format!("{at}.security.tiers"),
                    "tiers belong in ai_gateway.security".into(),
                ));
            }
            security(sec, &format!("{at}.security"), found);
        }
        if r.strategy.is_some() && !r.ai_gateway {
            found.push((
                format!("{at}.strategy"),
                "a routing strategy applies to AI routes only (ai_gateway: true)".into(),
            ));
        }
        if let Some(auth) = &r.middleware.auth {
            if auth.kind != "api_key" {
                found.push((
                    format!("{at}.middleware.auth.type"),
                    format!(
                        "unknown auth type {:?}; the supported type is api_key",
                        auth.kind
                    ),
                ));
            }
            if let Some(h) = &auth.header
                && http::HeaderName::from_bytes(h.as_bytes()).is_err()
            {
                found.push((
                    format!("{at}.middleware.auth.header"),
                    format!("{h:?} is not a valid header name"),
                ));
            }
        }
        if let Some(rl) = &r.middleware.rate_limit {
            let at = format!("{at}.middleware.rate_limit");
            if rl.limit == 0 {
                found.push((format!("{at}.limit"), "must be at least 1".into()));
            }
            if rl.window.get().is_zero() {
                found.push((format!("{at}.window"), "must be longer than zero".into()));
            }
            let key_ok = match rl.key.as_str() {
                "client_ip" => true,
                "consumer" => r.middleware.auth.is_some(),
                k => k
                    .strip_prefix("header:")
                    .is_some_and(|h| http::HeaderName::from_bytes(h.as_bytes()).is_ok()),
            };
            if !key_ok {
                found.push((
                    format!("{at}.key"),
                    format!(
                        "{:?}: client_ip, consumer (with middleware.auth), or header:<name>",
                        rl.key
                    ),
                ));
            }
            let shared_redis = config
                .ai_gateway
                .token_accounting
                .store
                .as_ref()
                .is_some_and(|s| s.redis.is_some());
            if rl.store == crate::schema::StoreKind::Redis && rl.redis.is_none() && !shared_redis {
                found.push((
                    format!("{at}.store"),
                    "store: redis needs rate_limit.redis (or a Redis usage store to share)".into(),
                ));
            }
        }
        let plugin_names: HashSet<&str> = config.plugins.iter().map(|p| p.name.as_str()).collect();
        for (j, name) in r.middleware.plugins.iter().enumerate() {
            if !plugin_names.contains(name.as_str()) {
                found.push((
                    format!("{at}.middleware.plugins[{j}]"),
                    format!("no plugin named {name:?} in plugins:"),
                ));
            }
        }
    }
}

fn http_method_invalid(m: &str) -> bool {
    m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase())
}

fn ai_gateway(ai: &AiGateway, consumers: &[ConsumerEntry], found: &mut Found) {
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

/// Names of the built-in PII kinds and content categories.
const PII_KINDS: [&str; 7] = [
    "email",
    "phone",
    "ssn",
    "credit_card",
    "ipv4",
    "ipv6",
    "iban",
];
const CATEGORIES: [&str; 5] = ["hate", "violence", "self_harm", "sexual", "harassment"];

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
            if let Err(e) = regex_lite_check(&c.pattern) {
                found.push((format!("{at}.pii_detection.custom[{i}].pattern"), e));
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

/// ", did you mean X?" when a close name exists.
fn suggest<'a>(name: &str, known: impl Iterator<Item = &'a str>) -> String {
    crate::error::closest(name, known)
        .map(|k| format!(" (did you mean {k:?}?)"))
        .unwrap_or_default()
}

/// Whether a custom pattern compiles, with a size bound so a pattern cannot
/// make every request slow.
fn regex_lite_check(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Err("the pattern is empty".into());
    }
    regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()
        .map(|_| ())
        .map_err(|e| format!("not a valid regular expression: {e}"))
}

#[cfg(test)]
mod tests {
    use crate::{Error, load_with_env};

    fn env(name: &str) -> Option<String> {
        (name == "OPENAI_API_KEY").then(|| "sk-test".to_owned())
    }

    fn problems(text: &str) -> Vec<String> {
        match load_with_env(text, "loom.yaml", env) {
            Ok(_) => vec![],
            Err(Error::Invalid(p)) => p.iter().map(ToString::to_string).collect(),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn seed_getting_started_config_loads() {
        let text = r#"
listeners:
  - name: http
    address: ":8080"

routes:
  - id: ai
    path: /v1/*
    ai_gateway: true

ai_gateway:
  enabled: true
  providers:
    - name: openai
      type: openai
      api_key: ${OPENAI_API_KEY}
      models: [gpt-4, gpt-3.5-turbo]
"#;
        let cfg = load_with_env(text, "loom.yaml", env).unwrap();
        assert_eq!(cfg.ai_gateway.providers[0].api_key.expose(), "sk-test");
        assert_eq!(cfg.routes[0].path, "/v1/*");
    }

    #[test]
    fn unknown_key_names_line_column_field_and_suggestion() {
        let p = problems("listeners:\n  - name: http\n    adress: \":8080\"\n");
        assert_eq!(p.len(), 1);
        assert!(p[0].starts_with("loom.yaml:3:5: listeners[0]"), "{}", p[0]);
        assert!(p[0].contains("did you mean `address`?"), "{}", p[0]);
    }

    #[test]
    fn wrong_type_is_located() {
        let p = problems(
            "ai_gateway:\n  enabled: true\n  providers:\n    - name: x\n      type: mock\n      models: 5\n",
        );
        assert_eq!(p.len(), 1);
        assert!(p[0].starts_with("loom.yaml:6:"), "{}", p[0]);
        assert!(p[0].contains("ai_gateway.providers[0].models"), "{}", p[0]);
    }

    #[test]
    fn semantic_errors_are_located_and_all_reported() {
        let text = "routes:\n  - id: a\n    path: api\n    upstream: nowhere\n  - id: a\n    path: /x/*\n    ai_gateway: true\n";
        let p = problems(text);
        assert!(
            p.iter()
                .any(|m| m.starts_with("loom.yaml:3:5: routes[0].path")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|m| m.starts_with("loom.yaml:4:5: routes[0].upstream: unknown upstream")),
            "{p:?}"
        );
        assert!(
            p.iter()
                .any(|m| m.starts_with("loom.yaml:5:5: routes[1].id: duplicate")),
            "{p:?}"
        );
        assert!(
            p.iter().any(|m| m.contains("needs ai_gateway.enabled")),
            "{p:?}"
        );
    }

    #[test]
    fn an_http3_listener_needs_tls() {
        let text = "listeners: [{address: \":8443\", protocol: http3}]\nroutes: [{id: a, path: /a, upstream: u}]\nupstreams: [{name: u, endpoints: [\"http://127.0.0.1:1\"]}]\n";
        let p = problems(text);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("listeners[0].tls"), "{}", p[0]);
    }

    #[test]
    fn cache_settings_are_checked() {
        let text = "routes: [{id: ai, path: /v1/*, ai_gateway: true}]\nai_gateway:\n  enabled: true\n  providers: [{name: main, type: mock}]\n  semantic_cache:\n    enabled: true\n    similarity_threshold: 1.5\n    ttl: 0s\n    embedding: {provider: mian}\n";
        let p = problems(text);
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(
            p.iter()
                .any(|m| m.contains("similarity_threshold") && m.contains("at most 1")),
            "{p:?}"
        );
        assert!(p.iter().any(|m| m.contains("ttl")), "{p:?}");
        assert!(
            p.iter()
                .any(|m| m.contains("embedding.provider") && m.contains("did you mean \"main\"")),
            "{p:?}"
        );
    }

    #[test]
    fn missing_env_is_reported_with_position() {
        let p = problems(
            "ai_gateway:\n  providers:\n    - {name: a, type: openai, api_key: ${NOT_SET_ANYWHERE}}\n",
        );
        assert_eq!(p.len(), 1);
        assert!(p[0].starts_with("loom.yaml:3:"), "{}", p[0]);
        assert!(p[0].contains("NOT_SET_ANYWHERE"));
    }
}

//! The route table.

use std::collections::HashSet;

use super::*;

pub(super) fn routes(config: &Config, found: &mut Found) {
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
            // `path_regex` was compiled as it was read.
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

pub(super) fn http_method_invalid(m: &str) -> bool {
    m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase())
}

//! Upstreams of proxy routes.

use std::collections::HashSet;

use super::*;

pub(super) fn upstreams(config: &Config, found: &mut Found) {
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

//! Every credential a configuration holds, so the gateway can scrub them
//! from whatever it sends to a client or writes to a log, wherever the text
//! came from (a provider that echoes the key it was sent, say).

use crate::schema::{Config, RedisStore};

impl Config {
    /// The credentials of this configuration: provider keys and header
    /// values, consumer keys (those written in clear, not `sha256:` digests),
    /// Redis passwords (fields and `redis://user:password@` addresses), the
    /// Qdrant key, admin tokens in clear and the control plane's PostgreSQL
    /// password. Empty values are left out.
    pub fn secrets(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        let ai = &self.ai_gateway;
        for p in &ai.providers {
            out.push(p.api_key.expose());
            out.extend(p.headers.values().map(|v| v.expose()));
        }
        for c in &self.consumers {
            out.extend(
                c.keys
                    .iter()
                    .map(|k| k.expose())
                    .filter(|k| !k.starts_with("sha256:")),
            );
        }
        let mut stores: Vec<&RedisStore> = Vec::new();
        stores.extend(
            ai.token_accounting
                .store
                .as_ref()
                .and_then(|s| s.redis.as_ref()),
        );
        stores.extend(ai.semantic_cache.redis.as_ref());
        stores.extend(ai.responses.redis.as_ref());
        for r in &self.routes {
            stores.extend(
                r.middleware
                    .rate_limit
                    .as_ref()
                    .and_then(|rl| rl.redis.as_ref()),
            );
        }
        for r in stores {
            out.push(r.password.expose());
            out.extend(url_password(&r.address));
        }
        if let Some(q) = &ai.semantic_cache.qdrant {
            out.push(q.api_key.expose());
        }
        out.extend(
            self.admin
                .tokens
                .iter()
                .map(|t| t.token.expose())
                .filter(|t| !t.starts_with("sha256:")),
        );
        if let Some(cp) = &self.control_plane {
            let pg = cp.postgres.expose();
            out.extend(url_password(pg));
            out.extend(kv_password(pg));
        }
        out.retain(|s| !s.is_empty());
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// The password of libpq key=value settings (`host=db password=x`).
fn kv_password(settings: &str) -> Option<&str> {
    settings
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("password="))
        .map(|p| p.trim_matches('\''))
        .filter(|p| !p.is_empty())
}

/// The password of a `redis://user:password@host` address.
fn url_password(address: &str) -> Option<&str> {
    let rest = address.split_once("://")?.1;
    let userinfo = rest.split_once('@')?.0;
    let password = userinfo.split_once(':')?.1;
    (!password.is_empty()).then_some(password)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_kind_of_credential_is_listed() {
        let cfg = crate::load_str(
            r#"
routes: [{id: ai, path: /v1/*, ai_gateway: true}]
consumers:
  - {name: a, keys: [consumer-key-in-clear, "sha256:0000000000000000000000000000000000000000000000000000000000000000"]}
ai_gateway:
  enabled: true
  providers:
    - {name: o, type: openai, api_key: sk-provider-key, headers: {OpenAI-Organization: org-secret}}
  token_accounting:
    enabled: true
    store: {type: redis, redis: {address: "redis://u:url-pass@127.0.0.1:6379", password: field-pass}}
"#,
            "t.yaml",
        )
        .expect("config");
        let s = cfg.secrets();
        for want in [
            "consumer-key-in-clear",
            "sk-provider-key",
            "org-secret",
            "url-pass",
            "field-pass",
        ] {
            assert!(s.contains(&want), "{want} missing from {s:?}");
        }
        assert!(!s.iter().any(|k| k.starts_with("sha256:")), "{s:?}");
    }
}

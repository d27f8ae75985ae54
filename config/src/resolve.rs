//! What the configuration means once its aliases, precedence rules,
//! fallbacks and defaults are applied, decided here once rather than by
//! each library that reads a setting.

use std::time::Duration;

use crate::schema::{AiGateway, RedisStore, StoreKind};

/// The failover policy of the AI gateway, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct FailoverPolicy {
    pub enabled: bool,
    /// Provider answers that move on to the next provider.
    pub retry_codes: Vec<u16>,
    /// Time allowed for one attempt (to the first byte of a stream).
    pub attempt_timeout: Duration,
    /// Attempts after the first.
    pub max_retries: u32,
    /// No attempt starts after this much time since the first.
    pub deadline: Duration,
}

/// How routing treats one provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProviderRouting {
    /// Lower first; providers with none come last.
    pub priority: u32,
    /// Share under the `weighted` strategy.
    pub weight: u32,
}

impl AiGateway {
    /// The failover policy: `routing.failover`, else the top-level
    /// `failover`; an explicit `enabled` wins over `routing.fallback`, its
    /// short form; the deadline defaults to `attempt_timeout` × `attempts`.
    pub fn failover_policy(&self) -> FailoverPolicy {
        let section = self.routing.failover.as_ref().or(self.failover.as_ref());
        let enabled = section
            .and_then(|f| f.enabled)
            .unwrap_or(self.routing.fallback);
        let f = section.cloned().unwrap_or_default();
        let attempts = f.attempts.max(1);
        FailoverPolicy {
            enabled,
            retry_codes: f.retry_codes,
            attempt_timeout: f.attempt_timeout.get(),
            max_retries: attempts - 1,
            deadline: f
                .deadline
                .map_or(f.attempt_timeout.get() * attempts, |d| d.get()),
        }
    }

    /// How routing treats provider `name`: `routing.providers[]` wins over
    /// the provider's own `priority` and `weight`.
    pub fn provider_routing(&self, name: &str) -> ProviderRouting {
        let routed = self.routing.providers.iter().find(|r| r.name == name);
        let own = self.providers.iter().find(|p| p.name == name);
        ProviderRouting {
            priority: routed
                .and_then(|r| r.priority)
                .or(own.and_then(|p| p.priority))
                .unwrap_or(u32::MAX),
            weight: routed
                .and_then(|r| r.weight)
                .or(own.and_then(|p| p.weight))
                .unwrap_or(1),
        }
    }

    /// The Redis of the usage store, when usage is kept in Redis (also the
    /// store of route rate limits).
    pub fn ledger_redis(&self) -> Option<&RedisStore> {
        let store = self.token_accounting.store.as_ref()?;
        (store.kind == StoreKind::Redis)
            .then_some(store.redis.as_ref())
            .flatten()
    }

    /// The Redis the semantic cache shares exact entries in: its own, else
    /// the usage store's.
    pub fn cache_redis(&self) -> Option<&RedisStore> {
        self.semantic_cache.redis.as_ref().or(self
            .token_accounting
            .store
            .as_ref()
            .and_then(|s| s.redis.as_ref()))
    }
}

#[cfg(test)]
mod tests {
    use crate::schema::AiGateway;

    fn ai(yaml: &str) -> AiGateway {
        serde_norway::from_str(yaml).expect("yaml")
    }

    #[test]
    fn failover_precedence_is_decided_once() {
        // `routing.failover` wins over the top level; explicit `enabled`
        // wins over `fallback`.
        let a = ai(
            "routing: {fallback: true, failover: {enabled: false, attempts: 2}}\nfailover: {attempts: 5}",
        );
        let p = a.failover_policy();
        assert!(!p.enabled);
        assert_eq!(p.max_retries, 1);
        assert_eq!(p.deadline, p.attempt_timeout * 2);
        let b = ai("routing: {fallback: true}\nfailover: {attempts: 4, deadline: 5s}");
        let p = b.failover_policy();
        assert!(p.enabled);
        assert_eq!(p.max_retries, 3);
        assert_eq!(p.deadline, std::time::Duration::from_secs(5));
    }

    #[test]
    fn routing_attributes_prefer_the_routing_section() {
        let a = ai(
            "providers: [{name: a, type: mock, priority: 3, weight: 7}, {name: b, type: mock}]\nrouting: {providers: [{name: a, priority: 1}]}",
        );
        let r = a.provider_routing("a");
        assert_eq!((r.priority, r.weight), (1, 7));
        let r = a.provider_routing("b");
        assert_eq!((r.priority, r.weight), (u32::MAX, 1));
    }
}

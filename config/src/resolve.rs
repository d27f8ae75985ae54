//! What the configuration means once its aliases, precedence rules,
//! fallbacks and defaults are applied, decided here once rather than by
//! each library that reads a setting.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::schema::{AiGateway, Config, StoreKind};
use crate::settings::{
    Accounting, Classifier, FailoverPolicy, Guardrails, ModelPrice, PeriodLimit, PolicyLayer,
    Prices, Provider, ProviderPrice, Providers, Rate, RateLimits, Rates, RedisStore, Security,
};

/// How routing treats one provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProviderRouting {
    /// Lower first; providers with none come last.
    priority: u32,
    /// Share under the `weighted` strategy.
    weight: u32,
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
    fn provider_routing(&self, name: &str) -> ProviderRouting {
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
    /// The Redis that kept responses are shared in: their own, else the
    /// usage store's.
    pub fn kept_redis(&self) -> Option<&RedisStore> {
        self.responses.redis.as_ref().or(self
            .token_accounting
            .store
            .as_ref()
            .and_then(|s| s.redis.as_ref()))
    }

    /// The providers and their routing, resolved: what the provider
    /// registry and the router read.
    pub fn providers(&self) -> Providers {
        let list = self
            .providers
            .iter()
            .map(|p| {
                let routing = self.provider_routing(&p.name);
                Provider {
                    name: p.name.clone(),
                    kind: p.kind,
                    api_key: p.api_key.clone(),
                    // `endpoint` is Azure's name for the base URL.
                    base_url: p.endpoint.clone().or_else(|| p.base_url.clone()),
                    api_version: p.api_version.clone(),
                    project: p.project.clone(),
                    location: p.location.clone(),
                    deployments: p.deployments.clone(),
                    models: p.models.clone(),
                    priority: routing.priority,
                    weight: routing.weight,
                    timeout: p.timeout.get(),
                    headers: p.headers.clone(),
                    mock: p.mock.clone().unwrap_or_default(),
                }
            })
            .collect();
        Providers {
            list,
            strategy: self.routing.strategy,
            failover: self.failover_policy(),
            model_mapping: self.model_mapping.clone(),
            breaker: self.routing.circuit_breaker.clone(),
            prices: self.prices(),
        }
    }

    /// Prices the configuration sets: `pricing` rows and whole-provider
    /// prices from `routing.providers[]` (both input and output given).
    pub fn prices(&self) -> Prices {
        Prices {
            models: self
                .pricing
                .iter()
                .map(|p| ModelPrice {
                    provider: p.provider.clone(),
                    model: p.model.clone(),
                    input: p.cost_per_1k_input,
                    output: p.cost_per_1k_output,
                    cached_input: p.cost_per_1k_cached_input,
                    cache_write: p.cost_per_1k_cache_write,
                })
                .collect(),
            providers: self
                .routing
                .providers
                .iter()
                .filter_map(|r| {
                    Some(ProviderPrice {
                        provider: r.name.clone(),
                        input: r.cost_per_1k_input?,
                        output: r.cost_per_1k_output?,
                    })
                })
                .collect(),
        }
    }

    /// Accounting, limits and rate limits, resolved: a rate's window is one
    /// minute when not given, and a tier's missing rate is the default's.
    pub fn accounting(&self) -> Accounting {
        let rl = &self.rate_limit;
        let rates = rl.enabled.then(|| {
            let window = |w: &Option<crate::schema::RateWindow>| {
                w.as_ref()
                    .and_then(|w| w.window)
                    .map_or(Duration::from_secs(60), |d| d.get())
            };
            let (req_window, tok_window) = (window(&rl.request_rate), window(&rl.token_rate));
            let default = Rates {
                requests: rl.request_rate.as_ref().map(|r| Rate {
                    limit: r.limit,
                    window: req_window,
                }),
                tokens: rl.token_rate.as_ref().map(|r| Rate {
                    limit: r.limit,
                    window: tok_window,
                }),
            };
            let tiers = rl
                .consumers
                .iter()
                .map(|(name, t)| {
                    let tier = Rates {
                        requests: t
                            .request_rate
                            .map(|limit| Rate {
                                limit,
                                window: req_window,
                            })
                            .or(default.requests),
                        tokens: t
                            .token_rate
                            .map(|limit| Rate {
                                limit,
                                window: tok_window,
                            })
                            .or(default.tokens),
                    };
                    (name.clone(), tier)
                })
                .collect();
            RateLimits { default, tiers }
        });
        let ta = &self.token_accounting;
        Accounting {
            ledger: ta.enabled,
            rates,
            limits: ta
                .limits
                .iter()
                .map(|l| PeriodLimit {
                    consumer: l.consumer.clone(),
                    day_tokens: l.daily_limit,
                    month_tokens: l.monthly_limit,
                    day_cost: l.daily_cost_limit,
                    month_cost: l.monthly_cost_limit,
                })
                .collect(),
            retention_days: ta.retention_days,
            retention_months: ta.retention_months,
            failure_mode: rl.failure_mode,
            prices: self.prices(),
        }
    }
}

impl Config {
    /// The guardrail policies, resolved: a route's own `security` sections
    /// replace the global ones, and a tier's (`security.tiers`) replace
    /// those, each section as a whole.
    pub fn guardrails(&self) -> Guardrails {
        let global = &self.ai_gateway.security;
        let layer = |base: Security| PolicyLayer {
            tiers: global
                .tiers
                .iter()
                .map(|(tier, t)| (tier.clone(), merge(&base, t)))
                .collect::<BTreeMap<_, _>>(),
            base,
        };
        Guardrails {
            global: layer(merge(global, &Security::default())),
            routes: self
                .routes
                .iter()
                .filter(|r| r.ai_gateway)
                .filter_map(|r| Some((r.id.clone(), layer(merge(global, r.security.as_ref()?)))))
                .collect(),
        }
    }
}

/// `narrow`'s sections replace `wide`'s (tiers are not inherited: they
/// apply to the global block only).
fn merge(wide: &Security, narrow: &Security) -> Security {
    Security {
        prompt_injection: narrow
            .prompt_injection
            .clone()
            .or_else(|| wide.prompt_injection.clone()),
        content_filtering: narrow
            .content_filtering
            .clone()
            .or_else(|| wide.content_filtering.clone()),
        pii_detection: narrow
            .pii_detection
            .clone()
            .or_else(|| wide.pii_detection.clone()),
        max_tokens_per_request: narrow
            .max_tokens_per_request
            .or(wide.max_tokens_per_request),
        tiers: BTreeMap::new(),
    }
}

impl Guardrails {
    /// Every classifier setting that is on, in any policy: the gateway
    /// loads what they name.
    pub fn classifiers(&self) -> Vec<Classifier> {
        let layers = std::iter::once(&self.global).chain(self.routes.iter().map(|(_, l)| l));
        let mut out = Vec::new();
        for l in layers {
            for s in std::iter::once(&l.base).chain(l.tiers.values()) {
                let injection = s
                    .prompt_injection
                    .as_ref()
                    .filter(|p| p.enabled)
                    .and_then(|p| p.classifier.as_ref());
                let content = s
                    .content_filtering
                    .as_ref()
                    .filter(|c| c.enabled)
                    .and_then(|c| c.classifier.as_ref());
                out.extend(
                    [injection, content]
                        .into_iter()
                        .flatten()
                        .filter(|c| c.enabled)
                        .cloned(),
                );
            }
        }
        out
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
        let p = a.providers();
        assert_eq!((p.list[0].priority, p.list[0].weight), (1, 7));
        assert_eq!((p.list[1].priority, p.list[1].weight), (u32::MAX, 1));
    }
}

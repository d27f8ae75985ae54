//! The providers of one configuration and which of them serve which model.
//!
//! Today candidates come back in priority order and the gateway uses the
//! first; the routing strategies and failover of a later stage reorder and walk
//! this same list.

use std::collections::HashMap;
use std::sync::Arc;

use loom_config::settings::{ProviderKind, Providers};
use loom_models::models_list::ModelCard;

use crate::Error;
use crate::adapter::{Adapter, AnyAdapter, Kind, Wire};
use crate::anthropic::Anthropic;
use crate::gemini::Gemini;
use crate::http::HttpClient;
use crate::mock::Mock;
use crate::openai::OpenAi;
use crate::router::Router;
use crate::stats::{ProviderSnapshot, ProviderStats, StatsBook};

/// One configured provider.
#[derive(Debug)]
pub struct Provider {
    name: Arc<str>,
    /// The name as a header value (`x-loom-provider`), made once.
    name_header: Option<http::HeaderValue>,
    kind: ProviderKind,
    adapter: AnyAdapter,
    stats: Arc<ProviderStats>,
}

impl Provider {
    /// Its configured name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its configured name, shared (for what outlives a borrow of the
    /// provider, such as a request's access-log fields).
    pub fn shared_name(&self) -> &Arc<str> {
        &self.name
    }

    /// Its name as a header value, when the name can be one.
    pub fn name_header(&self) -> Option<&http::HeaderValue> {
        self.name_header.as_ref()
    }

    /// Its type.
    pub fn kind(&self) -> ProviderKind {
        self.kind
    }

    /// The wire format it speaks natively.
    pub fn wire(&self) -> Wire {
        self.adapter.wire()
    }

    /// Its calls: what it serves, in its own format or translated.
    pub fn adapter(&self) -> &AnyAdapter {
        &self.adapter
    }

    /// Its live statistics.
    pub fn stats(&self) -> &ProviderStats {
        &self.stats
    }

    /// The active health check: a cheap authenticated call. Its outcome
    /// feeds the provider's breaker (see [`ProviderStats::record_health`]).
    pub async fn health_check(&self, timeout: std::time::Duration) -> Result<(), Error> {
        let result = self.adapter.health(timeout).await;
        self.stats.record_health(result.is_ok());
        result
    }
}

/// A provider chosen for a request, with the model name to send it.
/// Cloned per attempt: the name is shared, not copied.
#[derive(Debug, Clone)]
pub struct Target {
    pub provider: Arc<Provider>,
    pub model: Arc<str>,
}

/// The providers of one configuration.
#[derive(Debug)]
pub struct Registry {
    providers: Vec<Arc<Provider>>,
    /// Model → (provider index, upstream model), in priority order.
    by_model: HashMap<String, Vec<(usize, Arc<str>)>>,
    /// Providers with no `models:` list, in priority order: they serve any other model.
    catch_all: Vec<usize>,
    cards: Vec<ModelCard>,
    router: Router,
}

impl Registry {
    /// Builds every provider of `cfg`. The HTTP client is shared so that its
    /// connection pools outlive a configuration reload.
    pub fn build(
        cfg: &Providers,
        client: &HttpClient,
        stats: &StatsBook,
    ) -> Result<Registry, Error> {
        let mut providers = Vec::with_capacity(cfg.list.len());
        let mut priority = Vec::with_capacity(cfg.list.len());
        for (i, p) in cfg.list.iter().enumerate() {
            let kind = match p.kind {
                ProviderKind::Openai
                | ProviderKind::OpenaiCompatible
                | ProviderKind::AzureOpenai => {
                    Kind::OpenAi(Box::new(OpenAi::new(p, client.clone())?))
                }
                ProviderKind::Gemini | ProviderKind::Vertex => {
                    Kind::Gemini(Box::new(Gemini::new(p, client.clone())?))
                }
                ProviderKind::Anthropic => {
                    Kind::Anthropic(Box::new(Anthropic::new(p, client.clone())?))
                }
                ProviderKind::Mock => Kind::Mock(Box::new(Mock::new(&p.name, p.mock.clone()))),
            };
            let adapter = AnyAdapter(kind);
            priority.push((p.priority, i));
            let provider_stats = stats.get(&p.name);
            let breaker = &cfg.breaker;
            provider_stats.configure_breaker(
                breaker.consecutive_failures,
                breaker.open_for.get(),
                breaker.failure_percent,
                breaker.min_requests,
            );
            providers.push(Arc::new(Provider {
                name: Arc::from(p.name.as_str()),
                name_header: http::HeaderValue::from_str(&p.name).ok(),
                kind: p.kind,
                adapter,
                stats: provider_stats,
            }));
        }
        priority.sort();
        let order: Vec<usize> = priority.into_iter().map(|(_, i)| i).collect();

        let mut by_model: HashMap<String, Vec<(usize, Arc<str>)>> = HashMap::new();
        let mut cards = Vec::new();
        for &i in &order {
            let p = &cfg.list[i];
            for m in &p.models {
                by_model
                    .entry(m.clone())
                    .or_default()
                    .push((i, Arc::from(m.as_str())));
                cards.push(ModelCard::new(m.clone(), p.name.clone()));
            }
        }
        for (model, per_provider) in &cfg.model_mapping {
            let list = by_model.entry(model.clone()).or_default();
            for &i in &order {
                let Some(upstream) = per_provider.get(&cfg.list[i].name) else {
                    continue;
                };
                // The mapping decides what a provider receives, also when its
                // `models:` list names the requested model itself.
                match list.iter_mut().find(|(j, _)| *j == i) {
                    Some(entry) => entry.1 = Arc::from(upstream.as_str()),
                    None => list.push((i, Arc::from(upstream.as_str()))),
                }
            }
            list.sort_by_key(|(i, _)| order.iter().position(|o| o == i));
            if !cards.iter().any(|c| &c.id == model) {
                cards.push(ModelCard::new(model.clone(), "loom"));
            }
        }
        let catch_all = order
            .iter()
            .copied()
            .filter(|&i| cfg.list[i].models.is_empty())
            .collect();
        Ok(Registry {
            providers,
            by_model,
            catch_all,
            cards,
            router: Router::new(cfg),
        })
    }

    /// The providers that serve `model`, most preferred first.
    pub fn candidates(&self, model: &str) -> Result<Vec<Target>, Error> {
        let list: Vec<Target> = match self.by_model.get(model) {
            Some(list) => list
                .iter()
                .map(|(i, m)| Target {
                    provider: self.providers[*i].clone(),
                    model: m.clone(),
                })
                .collect(),
            None => self
                .catch_all
                .iter()
                .map(|&i| Target {
                    provider: self.providers[i].clone(),
                    model: Arc::from(model),
                })
                .collect(),
        };
        if list.is_empty() {
            const SHOWN: usize = 50;
            let mut available: Vec<&str> = self.cards.iter().map(|c| c.id.as_str()).collect();
            available.sort_unstable();
            available.dedup();
            let more = available.len().saturating_sub(SHOWN);
            let mut list = available
                .into_iter()
                .take(SHOWN)
                .collect::<Vec<_>>()
                .join(", ");
            if more > 0 {
                list.push_str(&format!(" and {more} more (GET /v1/models)"));
            }
            Err(Error::UnknownModel {
                model: model.to_owned(),
                available: list,
            })
        } else {
            Ok(list)
        }
    }

    /// The routing strategy and failover policy.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// The models to list on `GET /v1/models`.
    pub fn models(&self) -> &[ModelCard] {
        &self.cards
    }

    /// Every provider, in configuration order.
    pub fn providers(&self) -> &[Arc<Provider>] {
        &self.providers
    }

    /// Statistics of every provider, for the admin API.
    pub fn snapshots(&self) -> Vec<ProviderSnapshot> {
        self.providers
            .iter()
            .map(|p| p.stats.snapshot(&p.name))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(yaml: &str) -> Registry {
        let cfg: loom_config::AiGateway = serde_norway::from_str(yaml).unwrap();
        Registry::build(
            &cfg.providers(),
            &HttpClient::new().unwrap(),
            &StatsBook::default(),
        )
        .unwrap()
    }

    #[test]
    fn candidates_follow_models_mapping_and_priority() {
        let r = registry(
            r#"
providers:
  - {name: b, type: mock, models: [gpt-4], priority: 2}
  - {name: a, type: mock, models: [gpt-4, small], priority: 1}
  - {name: any, type: mock}
model_mapping:
  gpt-4: {any: big-local, b: gpt-4-turbo}
"#,
        );
        let c = r.candidates("gpt-4").unwrap();
        let names: Vec<(&str, &str)> = c.iter().map(|t| (t.provider.name(), &*t.model)).collect();
        assert_eq!(
            names,
            [("a", "gpt-4"), ("b", "gpt-4-turbo"), ("any", "big-local")]
        );
        let c = r.candidates("unlisted").unwrap();
        assert_eq!(c[0].provider.name(), "any");
        assert_eq!(r.models().len(), 3);
    }

    #[test]
    fn unknown_model_without_catch_all() {
        let r = registry("providers: [{name: a, type: mock, models: [x]}]");
        match r.candidates("y") {
            Err(e @ Error::UnknownModel { .. }) => {
                assert!(e.to_string().ends_with("available models: x"), "{e}")
            }
            other => panic!("{other:?}"),
        }
    }
}

//! Provider selection and failover policy.
//!
//! The registry finds which providers serve a model; the [`Router`] orders
//! them for one request by the configured strategy, leaves out providers
//! whose circuit is open or that asked to be left alone (`Retry-After`), and
//! says which failures another candidate may retry.
//!
//! - `priority`: configured priority order.
//! - `round_robin`: the order rotates by one per request.
//! - `weighted`: smooth weighted round robin (the first choice follows the
//!   weights exactly and evenly interleaved, never in runs), the others follow
//!   in priority order.
//! - `cost`: cheapest estimated cost first, from the prompt size and the
//!   requested completion length at the configured prices, else the built-in
//!   price table (the same one accounting uses); unpriced models come last.
//! - `latency`: lowest moving average of time to first byte first; providers
//!   with no sample yet first, so they get measured, and one request in twenty
//!   goes to another healthy provider first so a recovered one is noticed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use loom_config::settings::{FailoverPolicy, Providers, Strategy};

use crate::{Error, Target};

#[derive(Debug, Clone, Copy, Default)]
struct Prices {
    weight: u32,
}

/// The routing decision maker of one configuration.
#[derive(Debug)]
pub struct Router {
    strategy: Strategy,
    policy: FailoverPolicy,
    by_provider: HashMap<String, Prices>,
    /// Configured prices first, then the built-in table (shared with accounting).
    prices: loom_accounting::PriceTable,
    counter: AtomicU64,
    /// Smooth weighted round robin state, per requested model.
    wrr: Mutex<HashMap<String, Vec<i64>>>,
}

/// Completion tokens assumed for cost estimates when the client sets no cap.
const ASSUMED_COMPLETION: u64 = 256;
/// One request in this many is a latency probe.
const PROBE_EVERY: u64 = 20;

impl Router {
    /// The router `cfg` describes.
    pub fn new(cfg: &Providers) -> Router {
        let mut by_provider = HashMap::new();
        for p in &cfg.list {
            by_provider.insert(p.name.clone(), Prices { weight: p.weight });
        }
        Router {
            strategy: cfg.strategy,
            policy: cfg.failover.clone(),
            by_provider,
            prices: loom_accounting::PriceTable::new(&cfg.prices),
            counter: AtomicU64::new(0),
            wrr: Mutex::new(HashMap::new()),
        }
    }

    /// The same router with another strategy, for a route that overrides it.
    pub fn with_strategy(cfg: &Providers, strategy: Strategy) -> Router {
        Router {
            strategy,
            ..Router::new(cfg)
        }
    }

    /// The failover policy.
    pub fn policy(&self) -> &FailoverPolicy {
        &self.policy
    }

    /// Attempts a request may make in all.
    pub fn attempts(&self) -> u32 {
        if self.policy.enabled {
            1 + self.policy.max_retries
        } else {
            1
        }
    }

    /// Whether a failed attempt may be retried on the next candidate.
    pub fn should_retry(&self, e: &Error) -> bool {
        if !self.policy.enabled {
            return false;
        }
        match e {
            Error::Connect { .. } | Error::Timeout { .. } => true,
            Error::Status { status, .. } => self.policy.retry_codes.contains(&status.as_u16()),
            // A stream that broke before its first byte reached the client.
            Error::Stream { .. } => true,
            _ => false,
        }
    }

    /// Orders `candidates` for one request. `prompt_chars` and
    /// `max_completion` feed the cost estimate. Fails when every candidate's
    /// circuit is open or backing off.
    pub fn plan(
        &self,
        model: &str,
        candidates: Vec<Target>,
        prompt_chars: usize,
        max_completion: Option<u64>,
    ) -> Result<Vec<Target>, Error> {
        let n = self.counter.fetch_add(1, Relaxed);
        let mut order = match self.strategy {
            Strategy::Priority => candidates,
            Strategy::RoundRobin => {
                let mut c = candidates;
                if !c.is_empty() {
                    let k = (n % c.len() as u64) as usize;
                    c.rotate_left(k);
                }
                c
            }
            Strategy::Weighted => self.weighted(model, candidates),
            Strategy::Cost => {
                let prompt = (prompt_chars as u64).div_ceil(4);
                let completion = max_completion.unwrap_or(ASSUMED_COMPLETION);
                // Each provider's price is looked up once, not per comparison.
                let mut priced: Vec<(f64, Target)> = candidates
                    .into_iter()
                    .map(|t| {
                        (
                            self.cost(t.provider.name(), &t.model, prompt, completion),
                            t,
                        )
                    })
                    .collect();
                priced.sort_by(|a, b| a.0.total_cmp(&b.0));
                priced.into_iter().map(|(_, t)| t).collect()
            }
            Strategy::Latency => {
                let mut c = candidates;
                let key = |t: &Target| {
                    t.provider
                        .stats()
                        .ttfb()
                        .map_or(0, |d| d.as_micros().max(1))
                };
                c.sort_by_key(key);
                if n % PROBE_EVERY == PROBE_EVERY - 1 && c.len() > 1 {
                    let k = 1 + (n / PROBE_EVERY) as usize % (c.len() - 1);
                    c.swap(0, k);
                }
                c
            }
        };
        let total = order.len();
        order.retain(|t| t.provider.stats().admit_model(&t.model));
        if order.is_empty() && total > 0 {
            return Err(Error::Unavailable(format!(
                "every provider of `{model}` is unavailable (circuit open or backing off after Retry-After); try again later"
            )));
        }
        Ok(order)
    }

    /// Estimated cost in picodollars; unpriced models sort last.
    fn cost(&self, provider: &str, model: &str, prompt: u64, completion: u64) -> f64 {
        self.prices
            .lookup(provider, model)
            .map_or(f64::INFINITY, |p| p.cost(prompt, completion, 0, 0) as f64)
    }

    /// Smooth weighted round robin for the first choice; the rest keep
    /// priority order.
    fn weighted(&self, model: &str, mut candidates: Vec<Target>) -> Vec<Target> {
        if candidates.len() < 2 {
            return candidates;
        }
        let weights: Vec<i64> = candidates
            .iter()
            .map(|t| {
                i64::from(
                    self.by_provider
                        .get(t.provider.name())
                        .map_or(1, |p| p.weight),
                )
            })
            .collect();
        let total: i64 = weights.iter().sum();
        let chosen = {
            let mut wrr = self
                .wrr
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let current = wrr
                .entry(model.to_owned())
                .or_insert_with(|| vec![0; weights.len()]);
            if current.len() != weights.len() {
                *current = vec![0; weights.len()];
            }
            let mut best = 0;
            for (i, w) in weights.iter().enumerate() {
                current[i] += w;
                if current[i] > current[best] {
                    best = i;
                }
            }
            current[best] -= total;
            best
        };
        let first = candidates.remove(chosen);
        candidates.insert(0, first);
        candidates
    }
}

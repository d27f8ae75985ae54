//! Where usage and rate-limit state live: this process's memory, or Redis
//! shared by every replica. Both answer the same two questions with the same
//! arithmetic: may this request go ahead ([`Store::admit`]), and what did a
//! finished request use ([`Store::commit`]).

mod memory;
mod redis;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use serde::Serialize;

pub use self::memory::MemoryStore;
pub use self::redis::{RedisStore, connection as redis_connection};
use crate::Error;
use crate::gcra::{Rate, Standing};

/// Token and cost totals of one consumer over one period (or one model of it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub prompt: u64,
    pub completion: u64,
    /// Prompt tokens served from the provider's prompt cache.
    pub cached: u64,
    pub requests: u64,
    /// Picodollars.
    pub cost: u64,
    /// Requests whose counts were estimated rather than reported.
    pub estimated: u64,
    /// Requests answered from the semantic cache (counted in `requests`
    /// too, with no tokens and no cost).
    pub cache_hits: u64,
    /// Tokens the cached answers cost when they were first generated: what
    /// the hits saved.
    pub saved_tokens: u64,
    /// Picodollars the hits saved, at the original provider's prices.
    pub saved_cost: u64,
}

impl Totals {
    /// Prompt plus completion tokens.
    pub fn tokens(&self) -> u64 {
        self.prompt + self.completion
    }

    pub(crate) fn add(&mut self, o: &Totals) {
        self.prompt += o.prompt;
        self.completion += o.completion;
        self.cached += o.cached;
        self.requests += o.requests;
        self.cost += o.cost;
        self.estimated += o.estimated;
        self.cache_hits += o.cache_hits;
        self.saved_tokens += o.saved_tokens;
        self.saved_cost += o.saved_cost;
    }

    /// Field names and amounts, as the Redis hash keeps them.
    pub(crate) fn fields(&self) -> [(&'static str, u64); 9] {
        [
            ("p", self.prompt),
            ("c", self.completion),
            ("k", self.cached),
            ("r", self.requests),
            ("$", self.cost),
            ("e", self.estimated),
            ("h", self.cache_hits),
            ("s", self.saved_tokens),
            ("S", self.saved_cost),
        ]
    }

    pub(crate) fn set(&mut self, field: &str, v: u64) {
        match field {
            "p" => self.prompt = v,
            "c" => self.completion = v,
            "k" => self.cached = v,
            "r" => self.requests = v,
            "$" => self.cost = v,
            "e" => self.estimated = v,
            "h" => self.cache_hits = v,
            "s" => self.saved_tokens = v,
            "S" => self.saved_cost = v,
            _ => {}
        }
    }
}

/// Usage of one consumer over one period, with its split by provider and model.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Usage {
    pub totals: Totals,
    /// (provider, model, totals); a consumer uses a handful, so a list
    /// searched without allocating beats a map keyed by owned strings.
    pub by_model: Vec<(String, String, Totals)>,
}

impl Usage {
    pub(crate) fn add(&mut self, provider: &str, model: &str, t: &Totals) {
        self.totals.add(t);
        self.model_mut(provider, model).add(t);
    }

    /// The totals of (provider, model), added if absent.
    pub(crate) fn model_mut(&mut self, provider: &str, model: &str) -> &mut Totals {
        let i = match self
            .by_model
            .iter()
            .position(|(p, m, _)| p == provider && m == model)
        {
            Some(i) => i,
            None => {
                self.by_model
                    .push((provider.to_owned(), model.to_owned(), Totals::default()));
                self.by_model.len() - 1
            }
        };
        &mut self.by_model[i].2
    }
}

/// One finished request, ready to be added to the ledger.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    pub consumer: &'a str,
    pub provider: &'a str,
    pub model: &'a str,
    pub totals: Totals,
    /// Whether to add to the ledger (token accounting on).
    pub ledger: bool,
    pub day: &'a Arc<str>,
    pub month: &'a Arc<str>,
    /// Seconds the day's and month's records are kept from now.
    pub day_ttl: u64,
    pub month_ttl: u64,
    /// The consumer's token rate, charged with the entry's tokens.
    pub token_rate: Option<Rate>,
}

/// What an admission check needs to know.
#[derive(Debug, Clone, Default)]
pub struct Check<'a> {
    pub consumer: &'a str,
    pub requests: Option<Rate>,
    pub tokens: Option<Rate>,
    pub day: &'a str,
    pub month: &'a str,
    pub limits: PeriodLimits,
    /// Tokens the request is expected to use.
    pub need: u64,
}

/// Token and cost (picodollar) limits of a consumer; `None` means unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PeriodLimits {
    pub day_tokens: Option<u64>,
    pub month_tokens: Option<u64>,
    pub day_cost: Option<u64>,
    pub month_cost: Option<u64>,
}

impl PeriodLimits {
    fn any(&self) -> bool {
        *self != PeriodLimits::default()
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Requests,
    Tokens,
    DayTokens,
    MonthTokens,
    DayCost,
    MonthCost,
}

/// The store's answer to an admission check.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Gate {
    /// `None` when admitted.
    pub refused: Option<Refusal>,
    pub requests: Option<Standing>,
    pub tokens: Option<Standing>,
    /// Tokens already used today and this month (0 when no limit asked).
    pub day_used: u64,
    pub month_used: u64,
}

/// How a store is doing, for `/ready` and metrics.
#[derive(Debug, Default)]
pub struct Health {
    pub up: AtomicBool,
    /// Records waiting for the store.
    pub buffered: AtomicUsize,
    /// Records dropped because the buffer was full.
    pub dropped: AtomicU64,
    /// Unix milliseconds before which the request path does not try a store known to be down.
    pub(crate) retry_at_ms: AtomicU64,
}

impl Health {
    /// True while the store answers.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }
}

/// A usage and rate-limit store.
pub enum Store {
    Memory(MemoryStore),
    Redis(RedisStore),
}

impl Store {
    /// Checks limits and takes one request from the request rate, in one step.
    pub async fn admit(&self, check: &Check<'_>) -> Result<Gate, Error> {
        match self {
            Store::Memory(m) => Ok(m.admit(check)),
            Store::Redis(r) => r.admit(check).await,
        }
    }

    /// Adds a finished request. Never blocks: Redis writes happen in the background.
    pub fn commit(&self, entry: &Entry<'_>) {
        match self {
            Store::Memory(m) => m.commit(entry),
            Store::Redis(r) => r.commit(entry),
        }
    }

    /// Usage of `consumer` in the period labelled `period`; `None` when nothing was recorded.
    pub async fn usage(&self, consumer: &str, period: &str) -> Result<Option<Usage>, Error> {
        match self {
            Store::Memory(m) => Ok(m.usage(consumer, period)),
            Store::Redis(r) => r.usage(consumer, period).await,
        }
    }

    /// Waits until what was committed is written, or `within` has passed.
    pub async fn flush(&self, within: Duration) {
        if let Store::Redis(r) = self {
            r.flush(within).await;
        }
    }

    /// How the store is doing.
    pub fn health(&self) -> Arc<Health> {
        match self {
            Store::Memory(m) => m.health(),
            Store::Redis(r) => r.health(),
        }
    }

    /// `memory` or `redis`.
    pub fn kind(&self) -> &'static str {
        match self {
            Store::Memory(_) => "memory",
            Store::Redis(_) => "redis",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The shared Redis of the machine, or `None` (said clearly) outside CI.
    fn redis_store(prefix: &str) -> Option<Store> {
        if std::net::TcpStream::connect("127.0.0.1:6379").is_err() {
            assert!(std::env::var_os("CI").is_none(), "Redis must run in CI");
            eprintln!("SKIPPED: Redis is not reachable on 127.0.0.1:6379");
            return None;
        }
        let cfg = loom_config::settings::RedisStore {
            address: "127.0.0.1:6379".into(),
            key_prefix: prefix.into(),
            username: None,
            password: Default::default(),
            db: None,
            tls: false,
            timeout: loom_config::settings::Duration(Duration::from_secs(2)),
        };
        Some(Store::Redis(
            RedisStore::connect(&cfg, 1000).expect("client"),
        ))
    }

    fn unique(name: &str) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        format!("loomtest:{name}:{nanos}:")
    }

    fn stores(name: &str) -> Vec<Store> {
        let mut v = vec![Store::Memory(MemoryStore::new((35, 13)))];
        v.extend(redis_store(&unique(name)));
        v
    }

    fn entry(prompt: u64, completion: u64) -> Entry<'static> {
        static DAY: std::sync::LazyLock<Arc<str>> =
            std::sync::LazyLock::new(|| Arc::from("2026-11-27"));
        static MONTH: std::sync::LazyLock<Arc<str>> =
            std::sync::LazyLock::new(|| Arc::from("2026-11"));
        Entry {
            consumer: "app",
            provider: "openai",
            model: "gpt-4o",
            totals: Totals {
                prompt,
                completion,
                cached: 0,
                requests: 1,
                cost: prompt * 2_500_000 + completion * 10_000_000,
                ..Totals::default()
            },
            ledger: true,
            day: &DAY,
            month: &MONTH,
            day_ttl: 3600,
            month_ttl: 3600,
            token_rate: None,
        }
    }

    fn check(need: u64) -> Check<'static> {
        Check {
            consumer: "app",
            day: "2026-11-27",
            month: "2026-11",
            need,
            ..Check::default()
        }
    }

    #[tokio::test]
    async fn a_request_rate_admits_exactly_its_burst() {
        for store in stores("burst") {
            let c = Check {
                requests: Some(Rate {
                    limit: 5,
                    window: Duration::from_secs(60),
                }),
                ..check(0)
            };
            let mut admitted = 0;
            let mut remaining = Vec::new();
            for _ in 0..12 {
                let g = store.admit(&c).await.expect("admit");
                if g.refused.is_none() {
                    admitted += 1;
                    remaining.push(g.requests.map(|s| s.remaining));
                } else {
                    assert_eq!(g.refused, Some(Refusal::Requests), "{}", store.kind());
                    let wait = g.requests.map(|s| s.retry_after).unwrap_or_default();
                    assert!(
                        wait > Duration::from_secs(11) && wait <= Duration::from_secs(12),
                        "{wait:?}"
                    );
                }
            }
            assert_eq!(admitted, 5, "{}", store.kind());
            assert_eq!(remaining, [4, 3, 2, 1, 0].map(Some), "{}", store.kind());
        }
    }

    #[tokio::test]
    async fn concurrent_admissions_are_decided_one_by_one() {
        for store in stores("concurrent") {
            let store = std::sync::Arc::new(store);
            let c = Check {
                requests: Some(Rate {
                    limit: 7,
                    window: Duration::from_secs(3600),
                }),
                ..check(0)
            };
            let tasks: Vec<_> = (0..40)
                .map(|_| {
                    let (store, c) = (store.clone(), c.clone());
                    tokio::spawn(async move { store.admit(&c).await.expect("admit") })
                })
                .collect();
            let mut remaining = Vec::new();
            for t in tasks {
                let g = t.await.expect("task");
                if g.refused.is_none() {
                    remaining.push(g.requests.map_or(99, |s| s.remaining));
                }
            }
            remaining.sort_unstable();
            assert_eq!(remaining, vec![0, 1, 2, 3, 4, 5, 6], "{}", store.kind());
        }
    }

    #[tokio::test]
    async fn usage_adds_up() {
        for store in stores("ledger") {
            store.commit(&entry(100, 20));
            store.commit(&entry(7, 3));
            store.flush(Duration::from_secs(5)).await;
            for period in ["2026-11-27", "2026-11"] {
                let u = store
                    .usage("app", period)
                    .await
                    .expect("usage")
                    .expect("some");
                assert_eq!(u.totals.prompt, 107, "{}", store.kind());
                assert_eq!(u.totals.completion, 23);
                assert_eq!(u.totals.requests, 2);
                let m = &u.by_model[0].2;
                assert_eq!(
                    (u.by_model[0].0.as_str(), u.by_model[0].1.as_str()),
                    ("openai", "gpt-4o")
                );
                assert_eq!(m.prompt, 107);
            }
            assert!(
                store
                    .usage("nobody", "2026-11")
                    .await
                    .expect("usage")
                    .is_none()
            );
        }
    }

    #[tokio::test]
    async fn period_limits_refuse_what_would_not_fit() {
        for store in stores("limits") {
            store.commit(&entry(900, 50));
            store.flush(Duration::from_secs(5)).await;
            let limited = |need| Check {
                limits: PeriodLimits {
                    day_tokens: Some(1000),
                    ..PeriodLimits::default()
                },
                ..check(need)
            };
            let g = store.admit(&limited(50)).await.expect("admit");
            assert_eq!((g.refused, g.day_used), (None, 950), "{}", store.kind());
            let g = store.admit(&limited(51)).await.expect("admit");
            assert_eq!(g.refused, Some(Refusal::DayTokens), "{}", store.kind());
            let cost = Check {
                limits: PeriodLimits {
                    month_cost: Some(1),
                    ..PeriodLimits::default()
                },
                ..check(0)
            };
            let g = store.admit(&cost).await.expect("admit");
            assert_eq!(g.refused, Some(Refusal::MonthCost), "{}", store.kind());
        }
    }

    #[tokio::test]
    async fn spent_tokens_hold_back_the_next_request() {
        for store in stores("tokens") {
            let rate = Rate {
                limit: 100,
                window: Duration::from_secs(60),
            };
            let c = Check {
                tokens: Some(rate),
                ..check(0)
            };
            let g = store.admit(&c).await.expect("admit");
            assert_eq!(g.tokens.map(|s| s.remaining), Some(100));
            store.commit(&Entry {
                token_rate: Some(rate),
                ..entry(80, 40)
            });
            store.flush(Duration::from_secs(5)).await;
            let g = store.admit(&c).await.expect("admit");
            assert_eq!(g.refused, Some(Refusal::Tokens), "{}", store.kind());
            let wait = g.tokens.map(|s| s.retry_after).unwrap_or_default();
            // 20 tokens over at 0.6 s each, plus one token's interval.
            assert!(
                wait > Duration::from_secs(12) && wait < Duration::from_secs(13),
                "{wait:?}"
            );
        }
    }
}

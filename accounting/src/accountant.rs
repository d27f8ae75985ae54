//! The accountant: one configuration's consumers, limits, rates and prices
//! over a store that outlives configuration reloads.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use loom_config::settings::{self, Accounting, ConsumerEntry, FailureMode};
use serde::Serialize;

use crate::consumers::{Consumer, Consumers};
use crate::gcra::{Rate, Standing};
use crate::period::{Clock, Period, Today};
use crate::prices::{PriceTable, format_dollars};
use crate::store::{Check, Entry, Gate, PeriodLimits, Refusal, Store, Totals, Usage};
use crate::{Error, UsageRecord, tokens};

/// What the gateway knows about a request before sending it.
pub struct Ask<'a> {
    pub consumer: &'a Consumer,
    /// Bytes of prompt text, and how many messages carry it.
    pub prompt_bytes: usize,
    pub messages: usize,
    /// The completion budget the client asked for.
    pub max_tokens: Option<u64>,
    /// Counts the prompt's tokens exactly; called only near a limit.
    pub count_prompt: &'a (dyn Fn() -> u64 + Sync),
}

/// A limiter's standing with its configured limit, for response headers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quota {
    pub limit: u64,
    pub standing: Standing,
}

/// The answer to [`Accountant::admit`].
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    /// Go ahead; the standings fill the `x-ratelimit-*` headers.
    Admitted {
        requests: Option<Quota>,
        tokens: Option<Quota>,
    },
    /// Refused by a rate limit or a period limit.
    Refused {
        why: Refusal,
        retry_after: Duration,
        message: String,
        requests: Option<Quota>,
        tokens: Option<Quota>,
    },
    /// The store is unreachable and the failure mode is `closed`.
    Unavailable,
}

/// Rates of one tier: requests and tokens.
#[derive(Debug, Clone, Copy, Default)]
struct TierRates {
    requests: Option<Rate>,
    tokens: Option<Rate>,
}

/// A consumer's period limits, with the usage last seen by this process
/// (to decide whether the prompt must be counted exactly).
#[derive(Debug, Default)]
struct Limits {
    limits: PeriodLimits,
    day_seen: AtomicU64,
    month_seen: AtomicU64,
}

/// Accounting and limits of one configuration.
pub struct Accountant {
    store: Arc<Store>,
    consumers: Consumers,
    ledger: bool,
    rates: Option<(TierRates, HashMap<String, TierRates>)>,
    limits: HashMap<String, Limits>,
    prices: PriceTable,
    clock: Clock,
    failure_mode: FailureMode,
    retention: (u32, u32),
    today: arc_swap::ArcSwap<Today>,
    /// Worked out once: rate or period limits are configured.
    admits: bool,
    /// Worked out once: a ledger or a token rate needs finished requests.
    records: bool,
}

/// One consumer's usage over one period, in the shape the admin API returns.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub consumer: String,
    pub period: String,
    pub tokens: TokenCounts,
    pub requests: u64,
    pub cost_estimate: String,
    /// What the semantic cache answered and saved.
    pub cache: CacheSavings,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breakdown: Option<Vec<Line>>,
}

/// Requests the semantic cache answered, and the tokens and dollars their
/// original answers cost.
#[derive(Debug, Clone, Serialize)]
pub struct CacheSavings {
    pub hits: u64,
    pub saved_tokens: u64,
    pub saved_cost: String,
}

/// Prompt, completion and total tokens.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct TokenCounts {
    pub prompt: u64,
    pub completion: u64,
    pub total: u64,
}

/// One provider's (or provider and model's) share of a [`Report`].
#[derive(Debug, Clone, Serialize)]
pub struct Line {
    pub provider: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub tokens: TokenCounts,
    pub cached_tokens: u64,
    pub requests: u64,
    /// Requests whose tokens were counted by Loom because the provider reported none.
    pub estimated_requests: u64,
    pub cost_estimate: String,
    pub cache: CacheSavings,
}

/// How a report splits usage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Breakdown {
    None,
    Provider,
    Model,
}

impl Accountant {
    /// Compiles a configuration's accounting over `store`.
    pub fn new(
        ai: &Accounting,
        consumers: &[ConsumerEntry],
        store: Arc<Store>,
        clock: Clock,
    ) -> Accountant {
        let rate = |r: Option<settings::Rate>| {
            r.map(|r| Rate {
                limit: r.limit,
                window: r.window,
            })
        };
        let tier = |r: &settings::Rates| TierRates {
            requests: rate(r.requests),
            tokens: rate(r.tokens),
        };
        let rates = ai.rates.as_ref().map(|rl| {
            (
                tier(&rl.default),
                rl.tiers
                    .iter()
                    .map(|(name, r)| (name.clone(), tier(r)))
                    .collect::<HashMap<_, _>>(),
            )
        });
        let dollars = |d: Option<f64>| d.map(|d| (d * 1e12).round() as u64);
        let limits: HashMap<String, Limits> = ai
            .limits
            .iter()
            .map(|l| {
                (
                    l.consumer.clone(),
                    Limits {
                        limits: PeriodLimits {
                            day_tokens: l.day_tokens,
                            month_tokens: l.month_tokens,
                            day_cost: dollars(l.day_cost),
                            month_cost: dollars(l.month_cost),
                        },
                        ..Limits::default()
                    },
                )
            })
            .collect();
        let admits = rates.is_some() || !limits.is_empty();
        let records = ai.ledger
            || rates
                .as_ref()
                .is_some_and(|(d, t): &(TierRates, HashMap<String, TierRates>)| {
                    d.tokens.is_some() || t.values().any(|r| r.tokens.is_some())
                });
        let mut consumers = Consumers::from_config(consumers);
        for l in &ai.limits {
            consumers.add_keyless(&l.consumer);
        }
        Accountant {
            admits,
            records,
            store,
            consumers,
            ledger: ai.ledger,
            rates,
            limits,
            prices: PriceTable::new(&ai.prices),
            clock,
            failure_mode: ai.failure_mode,
            retention: (ai.retention_days, ai.retention_months),
            today: arc_swap::ArcSwap::from_pointee(Today::of(clock.now_unix())),
        }
    }

    /// Whether requests are checked before they go out (rate limits or
    /// period limits are configured).
    pub fn admits(&self) -> bool {
        self.admits
    }

    /// Whether finished requests are recorded (a ledger or token rates).
    pub fn records(&self) -> bool {
        self.records
    }

    /// The configured consumers.
    pub fn consumers(&self) -> &Consumers {
        &self.consumers
    }

    /// The store behind this accountant.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The price table (for cost estimates elsewhere).
    pub fn prices(&self) -> &PriceTable {
        &self.prices
    }

    /// Today's periods, recomputed only when the day changes.
    fn today(&self, now: u64) -> Arc<Today> {
        let current = self.today.load_full();
        if current.day_number == now / 86_400 {
            return current;
        }
        let fresh = Arc::new(Today::of(now));
        self.today.store(fresh.clone());
        fresh
    }

    fn tier(&self, consumer: &Consumer) -> TierRates {
        match &self.rates {
            None => TierRates::default(),
            Some((default, tiers)) => consumer
                .tier
                .as_ref()
                .and_then(|t| tiers.get(t))
                .copied()
                .unwrap_or(*default),
        }
    }

    /// Checks the consumer's limits and takes one request from its request
    /// rate: one store round trip.
    pub async fn admit(&self, ask: &Ask<'_>) -> Admission {
        let rates = self.tier(ask.consumer);
        let limits = self.limits.get(&ask.consumer.name);
        let now = self.clock.now_unix();
        let today = self.today(now);
        let (day, month) = (&today.day, &today.month);
        let token_limited = limits
            .is_some_and(|l| l.limits.day_tokens.is_some() || l.limits.month_tokens.is_some());
        let mut exact = false;
        let mut need = 0;
        if let Some(l) = limits.filter(|_| token_limited) {
            let bound =
                tokens::upper_bound(ask.prompt_bytes, ask.messages) + ask.max_tokens.unwrap_or(0);
            let fits = |limit: Option<u64>, seen: &AtomicU64| {
                limit.is_none_or(|limit| seen.load(Ordering::Relaxed) + bound <= limit)
            };
            need = bound;
            if !(fits(l.limits.day_tokens, &l.day_seen)
                && fits(l.limits.month_tokens, &l.month_seen))
            {
                // Near a limit: count exactly rather than refuse on a bound.
                need = (ask.count_prompt)() + ask.max_tokens.unwrap_or(0);
                exact = true;
            }
        }
        let mut check = Check {
            consumer: &ask.consumer.name,
            requests: rates.requests,
            tokens: rates.tokens,
            day: &day.label,
            month: &month.label,
            limits: limits.map(|l| l.limits).unwrap_or_default(),
            need,
        };
        let mut answer = self.store.admit(&check).await;
        if let Ok(g) = &answer
            && matches!(g.refused, Some(Refusal::DayTokens | Refusal::MonthTokens))
            && !exact
        {
            // Refused on the bound (usage seen here was stale): a second
            // look with the exact count. Nothing was taken by the first.
            check.need = (ask.count_prompt)() + ask.max_tokens.unwrap_or(0);
            answer = self.store.admit(&check).await;
        }
        let gate = match answer {
            Ok(g) => g,
            Err(e) => {
                tracing::debug!(error = %e, "admission without the store");
                return match self.failure_mode {
                    FailureMode::Open => Admission::Admitted {
                        requests: None,
                        tokens: None,
                    },
                    FailureMode::Closed => Admission::Unavailable,
                };
            }
        };
        if let Some(l) = limits {
            l.day_seen.store(gate.day_used, Ordering::Relaxed);
            l.month_seen.store(gate.month_used, Ordering::Relaxed);
        }
        let quota = |rate: Option<Rate>, s: Option<Standing>| {
            Some(Quota {
                limit: rate?.limit,
                standing: s?,
            })
        };
        let (requests, tokens) = (
            quota(rates.requests, gate.requests),
            quota(rates.tokens, gate.tokens),
        );
        match gate.refused {
            None => Admission::Admitted { requests, tokens },
            Some(why) => {
                let (retry_after, message) = refusal(why, &gate, &check, day, month, now, rates);
                Admission::Refused {
                    why,
                    retry_after,
                    message,
                    requests,
                    tokens,
                }
            }
        }
    }

    /// Adds a finished request to the ledger and the token rate; returns its
    /// cost in picodollars. Never blocks.
    pub fn record(&self, r: &UsageRecord) -> u64 {
        let cost = self.cost(r);
        let token_rate = self.tier(r.consumer).tokens;
        if self.ledger || token_rate.is_some() {
            let totals = Totals {
                prompt: r.prompt_tokens,
                completion: r.completion_tokens,
                cached: r.cached_tokens,
                requests: 1,
                cost,
                estimated: u64::from(r.estimated),
                ..Totals::default()
            };
            self.commit(r, totals, token_rate);
        }
        cost
    }

    /// Records a request answered from the semantic cache: a request with
    /// no tokens and no cost (nothing is charged to the token rate), and the
    /// tokens and cost the original answer took, as saved. Returns the
    /// saved cost in picodollars.
    pub fn record_hit(&self, r: &UsageRecord) -> u64 {
        let saved = self.cost(r);
        if self.ledger {
            let totals = Totals {
                requests: 1,
                cache_hits: 1,
                saved_tokens: r.prompt_tokens + r.completion_tokens,
                saved_cost: saved,
                ..Totals::default()
            };
            self.commit(r, totals, None);
        }
        saved
    }

    /// What `r`'s tokens cost at its provider's prices, in picodollars.
    fn cost(&self, r: &UsageRecord) -> u64 {
        self.prices.lookup(r.provider, r.model).map_or(0, |p| {
            p.cost(
                r.prompt_tokens,
                r.completion_tokens,
                r.cached_tokens,
                r.cache_write_tokens,
            )
        })
    }

    /// Commits `totals` for `r`'s consumer, provider and model today.
    fn commit(&self, r: &UsageRecord, totals: Totals, token_rate: Option<Rate>) {
        let now = self.clock.now_unix();
        let today = self.today(now);
        let (day, month) = (&today.day, &today.month);
        self.store.commit(&Entry {
            consumer: &r.consumer.name,
            provider: r.provider,
            model: r.model,
            totals,
            ledger: self.ledger,
            day_ttl: day.ends - now + 86_400 * u64::from(self.retention.0),
            month_ttl: month.ends - now + 31 * 86_400 * u64::from(self.retention.1),
            day: &day.label,
            month: &month.label,
            token_rate,
        });
    }

    /// Usage of `consumer` over `period` (`None`: this month). `Ok(None)` for
    /// a consumer that is neither configured nor has recorded usage.
    pub async fn report(
        &self,
        consumer: &str,
        period: Option<&str>,
        by: Breakdown,
    ) -> Result<Option<Report>, Error> {
        let now = self.clock.now_unix();
        let period = match period {
            None => Period::month_of(now),
            Some(p) => Period::parse(p, now).ok_or_else(|| Error::Period(p.to_owned()))?,
        };
        let usage = self.store.usage(consumer, &period.label).await?;
        if usage.is_none() && self.consumers.get(consumer).is_none() {
            return Ok(None);
        }
        Ok(Some(report(
            consumer,
            &period.label,
            &usage.unwrap_or_default(),
            by,
        )))
    }

    /// Builds the encoders that estimates need, off the request path.
    pub fn warm_up() {
        tokens::warm_up();
    }
}

fn counts(t: &Totals) -> TokenCounts {
    TokenCounts {
        prompt: t.prompt,
        completion: t.completion,
        total: t.tokens(),
    }
}

fn report(consumer: &str, period: &str, u: &Usage, by: Breakdown) -> Report {
    let line = |provider: &str, model: Option<&str>, t: &Totals| Line {
        provider: provider.to_owned(),
        model: model.map(str::to_owned),
        tokens: counts(t),
        cached_tokens: t.cached,
        requests: t.requests,
        estimated_requests: t.estimated,
        cost_estimate: format_dollars(t.cost),
        cache: savings(t),
    };
    let breakdown = match by {
        Breakdown::None => None,
        Breakdown::Model => {
            let mut lines: Vec<Line> = u
                .by_model
                .iter()
                .map(|(p, m, t)| line(p, Some(m), t))
                .collect();
            lines.sort_by(|a, b| (&a.provider, &a.model).cmp(&(&b.provider, &b.model)));
            Some(lines)
        }
        Breakdown::Provider => {
            let mut per: std::collections::BTreeMap<&str, Totals> = Default::default();
            for (p, _, t) in &u.by_model {
                per.entry(p.as_str()).or_default().add(t);
            }
            Some(per.iter().map(|(p, t)| line(p, None, t)).collect())
        }
    };
    Report {
        consumer: consumer.to_owned(),
        period: period.to_owned(),
        tokens: counts(&u.totals),
        requests: u.totals.requests,
        cost_estimate: format_dollars(u.totals.cost),
        cache: savings(&u.totals),
        breakdown,
    }
}

fn savings(t: &Totals) -> CacheSavings {
    CacheSavings {
        hits: t.cache_hits,
        saved_tokens: t.saved_tokens,
        saved_cost: format_dollars(t.saved_cost),
    }
}

/// `Retry-After` and the message of a refusal.
fn refusal(
    why: Refusal,
    gate: &Gate,
    check: &Check<'_>,
    day: &Period,
    month: &Period,
    now: u64,
    rates: TierRates,
) -> (Duration, String) {
    let who = check.consumer;
    match why {
        Refusal::Requests | Refusal::Tokens => {
            let (standing, rate, what) = if why == Refusal::Requests {
                (gate.requests, rates.requests, "requests")
            } else {
                (gate.tokens, rates.tokens, "tokens")
            };
            let wait = standing.map_or(Duration::from_secs(1), |s| s.retry_after);
            let limit = rate.map_or(0, |r| r.limit);
            (
                wait,
                format!(
                    "Rate limit reached for {who} on {what}: limit {limit} per {}. Please try again in {}.",
                    window(rate),
                    human(wait)
                ),
            )
        }
        Refusal::DayTokens => (
            day.remaining(now),
            format!(
                "Daily token limit of {} reached for {who} ({} used, this request needs up to {}). The limit resets at 00:00 UTC.",
                check.limits.day_tokens.unwrap_or(0),
                gate.day_used,
                check.need
            ),
        ),
        Refusal::MonthTokens => (
            month.remaining(now),
            format!(
                "Monthly token limit of {} reached for {who} ({} used, this request needs up to {}). The limit resets on the 1st at 00:00 UTC.",
                check.limits.month_tokens.unwrap_or(0),
                gate.month_used,
                check.need
            ),
        ),
        Refusal::DayCost => (
            day.remaining(now),
            format!(
                "Daily cost limit of {} reached for {who}. The limit resets at 00:00 UTC.",
                format_dollars(check.limits.day_cost.unwrap_or(0))
            ),
        ),
        Refusal::MonthCost => (
            month.remaining(now),
            format!(
                "Monthly cost limit of {} reached for {who}. The limit resets on the 1st at 00:00 UTC.",
                format_dollars(check.limits.month_cost.unwrap_or(0))
            ),
        ),
    }
}

fn window(rate: Option<Rate>) -> String {
    rate.map_or_else(String::new, |r| human(r.window))
}

/// [`human`] into `buf`, without allocating or the formatting machinery
/// (it runs for every rate-limited response).
pub fn human_into(d: Duration, buf: &mut [u8; 32]) -> &[u8] {
    fn push(buf: &mut [u8; 32], at: &mut usize, n: u64, unit: &[u8]) {
        let mut digits = itoa::Buffer::new();
        for &b in digits.format(n).as_bytes().iter().chain(unit) {
            if let Some(slot) = buf.get_mut(*at) {
                *slot = b;
                *at += 1;
            }
        }
    }
    let mut at = 0;
    let ms = d.as_millis() as u64;
    if ms < 1000 {
        push(buf, &mut at, ms, b"ms");
        return &buf[..at];
    }
    let secs = d.as_secs() + u64::from(d.subsec_millis() > 0);
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    if h > 0 {
        push(buf, &mut at, h, b"h");
    }
    if h > 0 || m > 0 {
        push(buf, &mut at, m, b"m");
    }
    push(buf, &mut at, s, b"s");
    &buf[..at]
}

/// A duration as OpenAI's rate-limit headers write it: `1s`, `6m0s`, `20ms`.
pub fn human(d: Duration) -> String {
    String::from_utf8_lossy(human_into(d, &mut [0; 32])).into_owned()
}

impl Refusal {
    /// The error `type` the client sees, and the limit's label in metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Refusal::Requests => "requests",
            Refusal::Tokens => "tokens",
            Refusal::DayTokens => "daily_token_limit",
            Refusal::MonthTokens => "monthly_token_limit",
            Refusal::DayCost => "daily_cost_limit",
            Refusal::MonthCost => "monthly_cost_limit",
        }
    }

    /// Whether this is a rate limit (as opposed to a period limit).
    pub fn is_rate(&self) -> bool {
        matches!(self, Refusal::Requests | Refusal::Tokens)
    }

    /// `day` or `month` for a period limit.
    pub fn period(&self) -> &'static str {
        match self {
            Refusal::DayTokens | Refusal::DayCost => "day",
            _ => "month",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::human;
    use std::time::Duration;

    #[test]
    fn durations_read_like_openai_headers() {
        assert_eq!(human(Duration::from_millis(20)), "20ms");
        assert_eq!(human(Duration::from_secs(1)), "1s");
        assert_eq!(human(Duration::from_millis(1500)), "2s");
        assert_eq!(human(Duration::from_secs(360)), "6m0s");
        assert_eq!(human(Duration::from_secs(3661)), "1h1m1s");
        for d in [20, 1000, 1500, 360_000, 3_661_000] {
            let d = Duration::from_millis(d);
            assert_eq!(super::human_into(d, &mut [0; 32]), human(d).as_bytes());
        }
    }
}

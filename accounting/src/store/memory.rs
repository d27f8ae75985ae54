//! The embedded store: this process only, no Redis needed. Locks are held
//! for a few map operations and never across an await.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::{Check, Entry, Gate, Health, PeriodLimits, Refusal, Usage};
use crate::gcra;

/// Usage and limiter state in memory.
pub struct MemoryStore {
    /// (consumer, period label) → usage. Day and month labels differ in length.
    ledger: Mutex<HashMap<(String, String), Usage>>,
    /// (consumer, is-token-limit) → theoretical arrival time, in microseconds since `epoch`.
    limiter: Mutex<HashMap<(String, bool), f64>>,
    epoch: Instant,
    health: Arc<Health>,
    retention: (u32, u32),
}

impl MemoryStore {
    /// An empty store that keeps days and months for `retention` (days, months) after they end.
    pub fn new(retention: (u32, u32)) -> MemoryStore {
        let health = Health::default();
        health.up.store(true, std::sync::atomic::Ordering::Relaxed);
        MemoryStore {
            ledger: Mutex::new(HashMap::new()),
            limiter: Mutex::new(HashMap::new()),
            epoch: Instant::now(),
            health: Arc::new(health),
            retention,
        }
    }

    fn now_us(&self) -> f64 {
        self.epoch.elapsed().as_micros() as f64
    }

    pub(super) fn admit(&self, check: &Check<'_>) -> Gate {
        let mut gate = Gate::default();
        if check.limits.any() {
            let (day, month) = {
                let ledger = self.ledger.lock().unwrap_or_else(|e| e.into_inner());
                let get = |label: &str| {
                    ledger
                        .get(&(check.consumer.to_owned(), label.to_owned()))
                        .map(|u| u.totals)
                        .unwrap_or_default()
                };
                (get(check.day), get(check.month))
            };
            gate.day_used = day.tokens();
            gate.month_used = month.tokens();
            gate.refused = over_limit(&check.limits, &day, &month, check.need);
            if gate.refused.is_some() {
                return gate;
            }
        }
        if check.requests.is_none() && check.tokens.is_none() {
            return gate;
        }
        let now = self.now_us();
        let mut limiter = self.limiter.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(rate) = check.tokens {
            let tat = limiter
                .get(&(check.consumer.to_owned(), true))
                .copied()
                .unwrap_or(0.0);
            let s = gcra::check_tokens(tat, now, rate);
            gate.tokens = Some(s);
            if !s.allowed {
                gate.refused = Some(Refusal::Tokens);
                return gate;
            }
        }
        if let Some(rate) = check.requests {
            let tat = limiter
                .entry((check.consumer.to_owned(), false))
                .or_insert(0.0);
            let s = gcra::take_request(tat, now, rate);
            gate.requests = Some(s);
            if !s.allowed {
                gate.refused = Some(Refusal::Requests);
            }
        }
        gate
    }

    pub(super) fn commit(&self, e: &Entry) {
        if let Some(rate) = e.token_rate {
            let now = self.now_us();
            let mut limiter = self.limiter.lock().unwrap_or_else(|e| e.into_inner());
            let tat = limiter.entry((e.consumer.clone(), true)).or_insert(0.0);
            gcra::charge_tokens(tat, now, rate, e.totals.tokens());
        }
        if !e.ledger {
            return;
        }
        let mut ledger = self.ledger.lock().unwrap_or_else(|e| e.into_inner());
        let new_day = !ledger.contains_key(&(e.consumer.clone(), e.day.clone()));
        for label in [&e.day, &e.month] {
            ledger
                .entry((e.consumer.clone(), label.clone()))
                .or_default()
                .add(&e.provider, &e.model, &e.totals);
        }
        if new_day {
            self.expire(&mut ledger, &e.day);
        }
    }

    /// Drops periods older than the retention, once per new day.
    fn expire(&self, ledger: &mut HashMap<(String, String), Usage>, today: &str) {
        let Some(now) = crate::Period::parse(today, 0) else {
            return;
        };
        let day_cut = now
            .ends
            .saturating_sub(86_400 * (u64::from(self.retention.0) + 1));
        let month_cut = now
            .ends
            .saturating_sub(86_400 * 31 * (u64::from(self.retention.1) + 1));
        ledger.retain(|(_, label), _| {
            crate::Period::parse(label, 0).is_none_or(|p| match p.span {
                crate::Span::Day => p.ends > day_cut,
                crate::Span::Month => p.ends > month_cut,
            })
        });
    }

    pub(super) fn usage(&self, consumer: &str, period: &str) -> Option<Usage> {
        let ledger = self.ledger.lock().unwrap_or_else(|e| e.into_inner());
        ledger
            .get(&(consumer.to_owned(), period.to_owned()))
            .cloned()
    }

    pub(super) fn health(&self) -> Arc<Health> {
        self.health.clone()
    }
}

/// The first period limit that `need` more tokens would break.
pub(super) fn over_limit(
    limits: &PeriodLimits,
    day: &super::Totals,
    month: &super::Totals,
    need: u64,
) -> Option<Refusal> {
    if limits.day_tokens.is_some_and(|l| day.tokens() + need > l) {
        return Some(Refusal::DayTokens);
    }
    if limits
        .month_tokens
        .is_some_and(|l| month.tokens() + need > l)
    {
        return Some(Refusal::MonthTokens);
    }
    if limits.day_cost.is_some_and(|l| day.cost >= l) {
        return Some(Refusal::DayCost);
    }
    if limits.month_cost.is_some_and(|l| month.cost >= l) {
        return Some(Refusal::MonthCost);
    }
    None
}

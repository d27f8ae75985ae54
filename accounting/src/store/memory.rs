//! The embedded store: this process only, no Redis needed. Locks are held
//! for a few map operations and never across an await, and the request path
//! looks consumers and periods up by `&str` without allocating.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::{Check, Entry, Gate, Health, PeriodLimits, Refusal, Totals, Usage};
use crate::gcra;

/// One consumer's state: its periods (newest last) and limiter cells.
#[derive(Default)]
struct Account {
    periods: Vec<(Arc<str>, Usage)>,
    /// Theoretical arrival times in microseconds since `epoch`: requests, tokens.
    requests_tat: f64,
    tokens_tat: f64,
}

impl Account {
    fn period(&self, label: &str) -> Option<&Usage> {
        self.periods
            .iter()
            .rev()
            .find(|(l, _)| &**l == label)
            .map(|(_, u)| u)
    }

    fn period_mut(&mut self, label: &Arc<str>) -> (&mut Usage, bool) {
        match self.periods.iter().rposition(|(l, _)| l == label) {
            Some(i) => (&mut self.periods[i].1, false),
            None => {
                self.periods.push((label.clone(), Usage::default()));
                let last = self.periods.len() - 1;
                (&mut self.periods[last].1, true)
            }
        }
    }
}

/// Usage and limiter state in memory.
pub struct MemoryStore {
    accounts: Mutex<HashMap<String, Account>>,
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
            accounts: Mutex::new(HashMap::new()),
            epoch: Instant::now(),
            health: Arc::new(health),
            retention,
        }
    }

    fn now_us(&self) -> f64 {
        self.epoch.elapsed().as_micros() as f64
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Account>> {
        self.accounts.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn admit(&self, check: &Check<'_>) -> Gate {
        let mut gate = Gate::default();
        let limited = check.limits.any();
        if !limited && check.requests.is_none() && check.tokens.is_none() {
            return gate;
        }
        let now = self.now_us();
        let mut accounts = self.lock();
        let Some(account) = account_mut(&mut accounts, check.consumer) else {
            return gate;
        };
        if limited {
            let day = account
                .period(check.day)
                .map(|u| u.totals)
                .unwrap_or_default();
            let month = account
                .period(check.month)
                .map(|u| u.totals)
                .unwrap_or_default();
            gate.day_used = day.tokens();
            gate.month_used = month.tokens();
            gate.refused = over_limit(&check.limits, &day, &month, check.need);
            if gate.refused.is_some() {
                return gate;
            }
        }
        if let Some(rate) = check.tokens {
            let s = gcra::check_tokens(account.tokens_tat, now, rate);
            gate.tokens = Some(s);
            if !s.allowed {
                gate.refused = Some(Refusal::Tokens);
                return gate;
            }
        }
        if let Some(rate) = check.requests {
            let s = gcra::take_request(&mut account.requests_tat, now, rate);
            gate.requests = Some(s);
            if !s.allowed {
                gate.refused = Some(Refusal::Requests);
            }
        }
        gate
    }

    pub(super) fn commit(&self, e: &Entry<'_>) {
        let now = self.now_us();
        let mut accounts = self.lock();
        let Some(account) = account_mut(&mut accounts, e.consumer) else {
            return;
        };
        if let Some(rate) = e.token_rate {
            gcra::charge_tokens(&mut account.tokens_tat, now, rate, e.totals.tokens());
        }
        if !e.ledger {
            return;
        }
        let (day, new_day) = account.period_mut(e.day);
        day.add(e.provider, e.model, &e.totals);
        account
            .period_mut(e.month)
            .0
            .add(e.provider, e.model, &e.totals);
        if new_day {
            self.expire(account, e.day);
        }
    }

    /// Drops a consumer's periods older than the retention, once per new day.
    fn expire(&self, account: &mut Account, today: &str) {
        let Some(now) = crate::Period::parse(today, 0) else {
            return;
        };
        let day_cut = now
            .ends
            .saturating_sub(86_400 * (u64::from(self.retention.0) + 1));
        let month_cut = now
            .ends
            .saturating_sub(86_400 * 31 * (u64::from(self.retention.1) + 1));
        account.periods.retain(|(label, _)| {
            crate::Period::parse(label, 0).is_none_or(|p| match p.span {
                crate::Span::Day => p.ends > day_cut,
                crate::Span::Month => p.ends > month_cut,
            })
        });
    }

    pub(super) fn usage(&self, consumer: &str, period: &str) -> Option<Usage> {
        self.lock().get(consumer)?.period(period).cloned()
    }

    pub(super) fn health(&self) -> Arc<Health> {
        self.health.clone()
    }
}

/// The account of `consumer`, created on first use; looked up by `&str` so
/// that only a new consumer allocates.
fn account_mut<'a>(
    accounts: &'a mut HashMap<String, Account>,
    consumer: &str,
) -> Option<&'a mut Account> {
    if !accounts.contains_key(consumer) {
        accounts.insert(consumer.to_owned(), Account::default());
    }
    accounts.get_mut(consumer)
}

/// The first period limit that `need` more tokens would break.
pub(super) fn over_limit(
    limits: &PeriodLimits,
    day: &Totals,
    month: &Totals,
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

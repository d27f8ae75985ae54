//! Live per-provider statistics, kept across hot reloads, read by the admin
//! API (`/ai/providers`) and, later, by latency-aware routing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Consecutive failures that open a provider's circuit, by default.
pub const BREAKER_THRESHOLD: u64 = 5;
/// How long an open circuit stays open before one trial request, by default.
pub const BREAKER_COOLDOWN: Duration = Duration::from_secs(30);

/// How a request to a provider ended, for its breakers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered.
    Ok,
    /// Refused or unanswered: transport error, 5xx, 429.
    Failed,
    /// A stream that started and was cut after its first byte.
    Cut,
}

/// Milliseconds since the first call, on a monotonic clock.
fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// Counters, circuit breaker and back-off of one provider. Updated lock-free
/// on the hot path; kept across reloads.
#[derive(Debug, Default)]
pub struct ProviderStats {
    requests: AtomicU64,
    failures: AtomicU64,
    consecutive_failures: AtomicU64,
    tokens_in: AtomicU64,
    tokens_out: AtomicU64,
    latency_micros_total: AtomicU64,
    /// Open circuit: no traffic until this time (ms, see `now_ms`); 0 when closed.
    open_until: AtomicU64,
    /// Set while the one half-open trial request is in flight.
    trial: AtomicBool,
    /// `Retry-After`: skipped until this time (ms).
    skip_until: AtomicU64,
    /// Exponentially weighted time to first byte, in microseconds (0: no sample yet).
    ewma_ttfb_micros: AtomicU64,
    /// Breaker settings of the configuration in force (0: the defaults).
    threshold: AtomicU64,
    cooldown_ms: AtomicU64,
    /// Time-to-first-byte histogram, for percentiles.
    ttfb_buckets: Buckets,
    /// Requests and failures per second over the last `WINDOW` seconds.
    window: Window,
    /// Failure share (in thousandths) and minimum requests that open the circuit.
    rate_trip_permille: AtomicU64,
    rate_min_requests: AtomicU64,
    /// Breakers of single models of this provider, created at a model's first
    /// failure, so one overloaded model does not take its siblings out.
    models: std::sync::RwLock<HashMap<String, Arc<ModelBreaker>>>,
    /// Whether any model breaker exists: the request path skips the map otherwise.
    any_model_breaker: AtomicBool,
}

/// The circuit of one model at one provider.
#[derive(Debug, Default)]
struct ModelBreaker {
    consecutive_failures: AtomicU64,
    open_until: AtomicU64,
    trial: AtomicBool,
    window: Window,
}

impl ModelBreaker {
    fn circuit(&self) -> Circuit {
        match self.open_until.load(Relaxed) {
            0 => Circuit::Closed,
            until if now_ms() < until => Circuit::Open,
            _ => Circuit::HalfOpen,
        }
    }
}

/// Most models with a breaker of their own per provider; later ones share
/// the provider's breaker only.
const MAX_MODEL_BREAKERS: usize = 256;

/// Seconds of the failure-rate window.
const WINDOW: usize = 10;

/// One slot per second: (second it counts, requests, failures).
#[derive(Debug)]
struct Window([(AtomicU64, AtomicU64, AtomicU64); WINDOW]);

impl Default for Window {
    fn default() -> Self {
        Window(std::array::from_fn(|_| {
            (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0))
        }))
    }
}

impl Window {
    /// Counts one request. A slot last used in another second is reset first
    /// (two racing resets may lose a count: the share stays approximate).
    fn record(&self, failed: bool) {
        let sec = now_ms() / 1000;
        let (at, requests, failures) = &self.0[sec as usize % WINDOW];
        if at.swap(sec, Relaxed) != sec {
            requests.store(0, Relaxed);
            failures.store(0, Relaxed);
        }
        requests.fetch_add(1, Relaxed);
        if failed {
            failures.fetch_add(1, Relaxed);
        }
    }

    /// Requests and failures of the last `WINDOW` seconds.
    fn totals(&self) -> (u64, u64) {
        let sec = now_ms() / 1000;
        self.0
            .iter()
            .filter(|(at, _, _)| sec.saturating_sub(at.load(Relaxed)) < WINDOW as u64)
            .fold((0, 0), |(r, f), (_, req, fail)| {
                (r + req.load(Relaxed), f + fail.load(Relaxed))
            })
    }
}

/// Counters of the time-to-first-byte histogram.
#[derive(Debug)]
struct Buckets([AtomicU64; TTFB_BUCKETS]);

impl Default for Buckets {
    fn default() -> Self {
        Buckets(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

/// Histogram buckets: upper bounds 100 µs × 2^(i/2), up to about 100 s.
const TTFB_BUCKETS: usize = 42;

fn bucket_of(micros: u64) -> usize {
    // Half-powers of two above 100 µs; a float log is exact enough here.
    let ratio = micros.max(1) as f64 / 100.0;
    if ratio <= 1.0 {
        return 0;
    }
    ((2.0 * ratio.log2()).ceil() as usize).min(TTFB_BUCKETS - 1)
}

fn bucket_bound_ms(i: usize) -> f64 {
    0.1 * 2f64.powf(i as f64 / 2.0)
}

/// Circuit state of a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Circuit {
    Closed,
    Open,
    HalfOpen,
}

impl Circuit {
    /// The state's name in the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            Circuit::Closed => "closed",
            Circuit::Open => "open",
            Circuit::HalfOpen => "half_open",
        }
    }
}

impl ProviderStats {
    /// Applies the configuration's breaker settings.
    pub fn configure_breaker(
        &self,
        threshold: u32,
        cooldown: Duration,
        failure_percent: u32,
        min_requests: u32,
    ) {
        self.threshold.store(u64::from(threshold.max(1)), Relaxed);
        self.cooldown_ms
            .store(cooldown.as_millis().max(1) as u64, Relaxed);
        self.rate_trip_permille
            .store(u64::from(failure_percent.clamp(1, 100)) * 10, Relaxed);
        self.rate_min_requests
            .store(u64::from(min_requests.max(1)), Relaxed);
    }

    /// Whether the failures of `window` reach the configured share, and
    /// whether the window holds the minimum volume to judge by share alone.
    fn share_in(&self, window: &Window) -> (bool, bool) {
        let permille = match self.rate_trip_permille.load(Relaxed) {
            0 => 500,
            p => p,
        };
        let min = match self.rate_min_requests.load(Relaxed) {
            0 => 20,
            m => m,
        };
        let (requests, failures) = window.totals();
        (failures * 1000 >= permille * requests, requests >= min)
    }

    /// Whether a failure just recorded opens a circuit: a failed half-open
    /// trial always does; otherwise the failure share over the window must
    /// reach the configured rate, judged on its own once the window holds
    /// `min_requests`, or sooner after `consecutive_failures` refusals in
    /// a row. A circuit is therefore never opened at a share below the
    /// rate: a provider whose streams are cut now and then, or that fails
    /// one request in five, keeps its traffic (it may be the only one).
    fn trips(&self, window: &Window, consecutive: Option<u64>, was_trial: bool) -> bool {
        if was_trial {
            return true;
        }
        let (reached, volume) = self.share_in(window);
        let (threshold, _) = self.breaker();
        reached && (volume || consecutive.is_some_and(|c| c >= threshold))
    }

    fn model_breaker(&self, model: &str) -> Option<Arc<ModelBreaker>> {
        if !self.any_model_breaker.load(Relaxed) {
            return None;
        }
        self.models.read().ok()?.get(model).cloned()
    }

    /// Whether a request for `model` may go to this provider now: the
    /// provider's circuit and the model's own both allow it.
    pub fn admit_model(&self, model: &str) -> bool {
        if let Some(b) = self.model_breaker(model) {
            match b.circuit() {
                Circuit::Closed => {}
                Circuit::Open => return false,
                Circuit::HalfOpen => {
                    if b.trial
                        .compare_exchange(false, true, Relaxed, Relaxed)
                        .is_err()
                    {
                        return false;
                    }
                }
            }
        }
        self.admit()
    }

    /// Records the outcome of a request for `model`, for the model's breaker
    /// (the provider's own is fed by [`record_success`](Self::record_success)
    /// and [`record_failure`](Self::record_failure)).
    pub fn record_model(&self, model: &str, outcome: Outcome) {
        let ok = outcome == Outcome::Ok;
        let breaker = match (self.model_breaker(model), ok) {
            (Some(b), _) => b,
            // A model that never failed needs no breaker yet.
            (None, true) => return,
            (None, false) => {
                let Ok(mut models) = self.models.write() else {
                    return;
                };
                if models.len() >= MAX_MODEL_BREAKERS && !models.contains_key(model) {
                    return;
                }
                self.any_model_breaker.store(true, Relaxed);
                models.entry(model.to_owned()).or_default().clone()
            }
        };
        breaker.window.record(!ok);
        if ok {
            breaker.consecutive_failures.store(0, Relaxed);
            breaker.open_until.store(0, Relaxed);
            breaker.trial.store(false, Relaxed);
            return;
        }
        let consecutive = (outcome == Outcome::Failed)
            .then(|| breaker.consecutive_failures.fetch_add(1, Relaxed) + 1);
        let was_trial = breaker.trial.swap(false, Relaxed);
        if self.trips(&breaker.window, consecutive, was_trial) {
            let (_, cooldown) = self.breaker();
            breaker.open_until.store(now_ms() + cooldown, Relaxed);
        }
    }

    /// Models of this provider whose own circuit is not closed.
    fn open_models(&self) -> std::collections::BTreeMap<String, &'static str> {
        if !self.any_model_breaker.load(Relaxed) {
            return Default::default();
        }
        self.models.read().map_or_else(
            |_| Default::default(),
            |m| {
                m.iter()
                    .filter(|(_, b)| b.circuit() != Circuit::Closed)
                    .map(|(name, b)| (name.clone(), b.circuit().as_str()))
                    .collect()
            },
        )
    }

    fn breaker(&self) -> (u64, u64) {
        let t = self.threshold.load(Relaxed);
        let c = self.cooldown_ms.load(Relaxed);
        (
            if t == 0 { BREAKER_THRESHOLD } else { t },
            if c == 0 {
                BREAKER_COOLDOWN.as_millis() as u64
            } else {
                c
            },
        )
    }

    /// The circuit's state now.
    pub fn circuit(&self) -> Circuit {
        match self.open_until.load(Relaxed) {
            0 => Circuit::Closed,
            until if now_ms() < until => Circuit::Open,
            _ => Circuit::HalfOpen,
        }
    }

    /// Whether a request may go to this provider now. In the half-open state
    /// only one trial request is let through at a time.
    pub fn admit(&self) -> bool {
        // The common case, nothing recorded against the provider, reads no clock.
        let skip = self.skip_until.load(Relaxed);
        if skip == 0 && self.open_until.load(Relaxed) == 0 {
            return true;
        }
        if skip > now_ms() {
            return false;
        }
        match self.circuit() {
            Circuit::Closed => true,
            Circuit::Open => false,
            Circuit::HalfOpen => self
                .trial
                .compare_exchange(false, true, Relaxed, Relaxed)
                .is_ok(),
        }
    }

    /// Honours a provider's `Retry-After`: no traffic for `d`.
    pub fn back_off(&self, d: Duration) {
        self.skip_until
            .fetch_max(now_ms() + d.as_millis() as u64, Relaxed);
    }

    /// Folds a time-to-first-byte sample into the moving average.
    pub fn record_ttfb(&self, d: Duration) {
        let sample = d.as_micros().max(1) as u64;
        self.ttfb_buckets.0[bucket_of(sample)].fetch_add(1, Relaxed);
        let _ = self.ewma_ttfb_micros.fetch_update(Relaxed, Relaxed, |old| {
            Some(if old == 0 {
                sample
            } else {
                (old * 4 + sample) / 5
            })
        });
    }

    /// The `q` quantile (0–1) of time to first byte in milliseconds, as the
    /// upper bound of its histogram bucket (within a factor of √2); 0 before any sample.
    pub fn ttfb_quantile_ms(&self, q: f64) -> f64 {
        let counts: Vec<u64> = self
            .ttfb_buckets
            .0
            .iter()
            .map(|b| b.load(Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return 0.0;
        }
        let rank = ((q * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return bucket_bound_ms(i);
            }
        }
        bucket_bound_ms(TTFB_BUCKETS - 1)
    }

    /// The moving average of time to first byte (`None` before any sample).
    pub fn ttfb(&self) -> Option<Duration> {
        match self.ewma_ttfb_micros.load(Relaxed) {
            0 => None,
            us => Some(Duration::from_micros(us)),
        }
    }

    /// Records a finished request: its latency and token counts.
    pub fn record_success(&self, latency: Duration, tokens_in: u64, tokens_out: u64) {
        self.requests.fetch_add(1, Relaxed);
        self.window.record(false);
        self.consecutive_failures.store(0, Relaxed);
        self.open_until.store(0, Relaxed);
        self.trial.store(false, Relaxed);
        self.tokens_in.fetch_add(tokens_in, Relaxed);
        self.tokens_out.fetch_add(tokens_out, Relaxed);
        self.latency_micros_total
            .fetch_add(latency.as_micros() as u64, Relaxed);
    }

    /// Records an active health check. A failed check counts toward the
    /// consecutive failures that open the circuit (it is not a request); a
    /// passing check closes an open circuit at once, so a recovered provider
    /// gets traffic again without a client request as the trial.
    pub fn record_health(&self, ok: bool) {
        if ok {
            if self.open_until.load(Relaxed) != 0 {
                self.open_until.store(0, Relaxed);
                self.consecutive_failures.store(0, Relaxed);
                self.trial.store(false, Relaxed);
            }
            return;
        }
        let consecutive = self.consecutive_failures.fetch_add(1, Relaxed) + 1;
        let (threshold, cooldown) = self.breaker();
        if consecutive >= threshold {
            self.open_until.store(now_ms() + cooldown, Relaxed);
        }
    }

    /// Records a request the provider failed: refused or unanswered
    /// (transport error, 5xx, 429; `Outcome::Failed`) or a stream cut after
    /// its first byte (`Outcome::Cut`), which counts toward the failure
    /// share but not toward the refusals in a row.
    pub fn record_failure(&self, latency: Duration, outcome: Outcome) {
        self.requests.fetch_add(1, Relaxed);
        self.failures.fetch_add(1, Relaxed);
        let consecutive =
            (outcome != Outcome::Cut).then(|| self.consecutive_failures.fetch_add(1, Relaxed) + 1);
        let was_trial = self.trial.swap(false, Relaxed);
        self.window.record(true);
        if self.trips(&self.window, consecutive, was_trial) {
            let (_, cooldown) = self.breaker();
            self.open_until.store(now_ms() + cooldown, Relaxed);
        }
        self.latency_micros_total
            .fetch_add(latency.as_micros() as u64, Relaxed);
    }

    /// A point-in-time view in the admin API's shape.
    pub fn snapshot(&self, name: &str) -> ProviderSnapshot {
        let requests = self.requests.load(Relaxed);
        let consecutive = self.consecutive_failures.load(Relaxed);
        let avg = self
            .latency_micros_total
            .load(Relaxed)
            .checked_div(requests)
            .unwrap_or(0)
            / 1000;
        let circuit = self.circuit();
        ProviderSnapshot {
            name: name.to_owned(),
            status: match (circuit, consecutive) {
                (Circuit::Open, _) => "open",
                (Circuit::HalfOpen, _) => "half_open",
                (_, 0) => "healthy",
                _ => "degraded",
            },
            circuit: circuit.as_str(),
            ttfb_ms: self.ttfb().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
            ttfb_p50_ms: self.ttfb_quantile_ms(0.5),
            ttfb_p99_ms: self.ttfb_quantile_ms(0.99),
            requests,
            failures: self.failures.load(Relaxed),
            tokens_in: self.tokens_in.load(Relaxed),
            tokens_out: self.tokens_out.load(Relaxed),
            avg_latency_ms: avg,
            models: self.open_models(),
        }
    }
}

/// One entry of `GET /ai/providers`.
#[derive(Debug, Clone, Serialize)]
pub struct ProviderSnapshot {
    pub name: String,
    /// `healthy`, `degraded` (recent failures), `open` or `half_open`.
    pub status: &'static str,
    pub circuit: &'static str,
    /// Moving average of time to first byte.
    pub ttfb_ms: f64,
    /// Median and 99th percentile of time to first byte (bucket upper bounds).
    pub ttfb_p50_ms: f64,
    pub ttfb_p99_ms: f64,
    pub requests: u64,
    #[serde(rename = "errors")]
    pub failures: u64,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub avg_latency_ms: u64,
    /// Models whose own circuit is open or half-open (`{"o1": "open"}`).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub models: std::collections::BTreeMap<String, &'static str>,
}

/// Statistics of every provider ever configured in this process, by name, so
/// that a reload keeps a provider's history.
#[derive(Debug, Default)]
pub struct StatsBook {
    by_name: Mutex<HashMap<String, Arc<ProviderStats>>>,
}

impl StatsBook {
    /// The statistics of `name`, created on first use. Called when a
    /// configuration is built, never per request.
    pub fn get(&self, name: &str) -> Arc<ProviderStats> {
        let mut map = self.by_name.lock().unwrap_or_else(PoisonError::into_inner);
        map.entry(name.to_owned()).or_default().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_opens_after_consecutive_failures_and_closes_on_success() {
        let s = ProviderStats::default();
        for _ in 0..BREAKER_THRESHOLD - 1 {
            s.record_failure(Duration::from_millis(1), Outcome::Failed);
        }
        assert_eq!(s.circuit(), Circuit::Closed);
        assert!(s.admit());
        s.record_failure(Duration::from_millis(1), Outcome::Failed);
        assert_eq!(s.circuit(), Circuit::Open);
        assert!(!s.admit());
        // Cool-down over: one trial at a time.
        s.open_until.store(1, Relaxed);
        assert_eq!(s.circuit(), Circuit::HalfOpen);
        assert!(s.admit());
        assert!(!s.admit());
        // The trial fails: open again.
        s.record_failure(Duration::from_millis(1), Outcome::Failed);
        assert_eq!(s.circuit(), Circuit::Open);
        s.open_until.store(1, Relaxed);
        assert!(s.admit());
        s.record_success(Duration::from_millis(1), 1, 1);
        assert_eq!(s.circuit(), Circuit::Closed);
        assert!(s.admit());
    }

    #[test]
    fn ttfb_percentiles_come_from_the_histogram() {
        let s = ProviderStats::default();
        assert_eq!(s.ttfb_quantile_ms(0.5), 0.0);
        for _ in 0..98 {
            s.record_ttfb(Duration::from_millis(10));
        }
        s.record_ttfb(Duration::from_millis(900));
        s.record_ttfb(Duration::from_millis(900));
        let p50 = s.ttfb_quantile_ms(0.5);
        assert!((10.0..=14.2).contains(&p50), "{p50}");
        let p99 = s.ttfb_quantile_ms(0.99);
        assert!((900.0..=1273.0).contains(&p99), "{p99}");
    }

    #[test]
    fn a_high_failure_share_opens_the_circuit() {
        let s = ProviderStats::default();
        s.configure_breaker(100, Duration::from_secs(30), 50, 10);
        for _ in 0..4 {
            s.record_success(Duration::from_millis(1), 1, 1);
            s.record_failure(Duration::from_millis(1), Outcome::Failed);
        }
        // 8 requests: below the minimum, however many fail.
        assert_eq!(s.circuit(), Circuit::Closed);
        s.record_success(Duration::from_millis(1), 1, 1);
        s.record_failure(Duration::from_millis(1), Outcome::Failed);
        // 10 requests, half failed.
        assert_eq!(s.circuit(), Circuit::Open);
    }

    #[test]
    fn one_failing_model_opens_its_own_circuit_only() {
        let s = ProviderStats::default();
        s.configure_breaker(3, Duration::from_secs(30), 50, 1000);
        for _ in 0..3 {
            assert!(s.admit_model("o1"));
            s.record_failure(Duration::from_millis(1), Outcome::Failed);
            s.record_model("o1", Outcome::Failed);
            // Another model keeps succeeding, so the provider's run of failures resets.
            s.record_success(Duration::from_millis(1), 1, 1);
            s.record_model("gpt-4o", Outcome::Ok);
        }
        assert!(!s.admit_model("o1"), "o1's circuit is open");
        assert!(
            s.admit_model("gpt-4o"),
            "the provider and its other models still serve"
        );
        assert_eq!(s.circuit(), Circuit::Closed);
        assert_eq!(s.snapshot("p").models.get("o1"), Some(&"open"));
        // A success of o1 (a half-open trial, say) closes it again.
        s.record_model("o1", Outcome::Ok);
        assert!(s.admit_model("o1"));
        assert!(s.snapshot("p").models.is_empty());
    }

    #[test]
    fn a_failure_share_below_the_rate_never_opens_the_circuit() {
        // One provider whose streams are cut one time in five, in bursts:
        // the cuts bunch into runs longer than the threshold, and the
        // circuit must stay closed because the share stays at 20%.
        let s = ProviderStats::default();
        s.configure_breaker(5, Duration::from_secs(30), 50, 20);
        for round in 0..50 {
            for _ in 0..8 {
                s.record_success(Duration::from_millis(1), 1, 1);
            }
            let outcome = if round % 2 == 0 {
                Outcome::Cut
            } else {
                Outcome::Failed
            };
            // Two failures per ten requests, six in a row every other round.
            for _ in 0..2 {
                s.record_failure(Duration::from_millis(1), outcome);
            }
            assert_eq!(s.circuit(), Circuit::Closed, "round {round}");
        }
    }

    #[test]
    fn cut_streams_do_not_count_as_refusals_in_a_row() {
        let s = ProviderStats::default();
        s.configure_breaker(3, Duration::from_secs(30), 50, 1000);
        for _ in 0..10 {
            s.record_failure(Duration::from_millis(1), Outcome::Cut);
        }
        // 100% failed, but by cuts only and below the volume: still closed.
        assert_eq!(s.circuit(), Circuit::Closed);
        for _ in 0..3 {
            s.record_failure(Duration::from_millis(1), Outcome::Failed);
        }
        assert_eq!(s.circuit(), Circuit::Open);
    }

    #[test]
    fn retry_after_skips_the_provider() {
        let s = ProviderStats::default();
        s.back_off(Duration::from_secs(60));
        assert!(!s.admit());
        assert_eq!(s.circuit(), Circuit::Closed);
    }
}

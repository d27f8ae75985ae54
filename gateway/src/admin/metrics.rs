//! Prometheus metrics, served on the admin listener's `/metrics`.
//!
//! Names follow the product documentation. Token counts are exported under
//! both spellings the documentation uses (`type="prompt"|"completion"` and
//! `type="input"|"output"`), so filter on one pair when summing.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

/// Most distinct model label values kept; later ones are reported as `other`,
/// so a client cannot grow the metric set without bound through a catch-all provider.
const MAX_MODEL_LABELS: usize = 256;

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];
const OVERHEAD_BUCKETS: &[f64] = &[
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
];

/// Every metric family of the process.
pub struct Metrics {
    registry: Registry,
    ai_requests: IntCounterVec,
    ai_duration: HistogramVec,
    ai_duration_by_provider: HistogramVec,
    ai_tokens: IntCounterVec,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    reloads: IntCounterVec,
    failovers: IntCounterVec,
    circuit: prometheus::IntGaugeVec,
    cost: prometheus::CounterVec,
    rate_limited: IntCounterVec,
    limit_exceeded: IntCounterVec,
    store_up: prometheus::IntGaugeVec,
    store_buffered: IntGauge,
    store_dropped: IntCounter,
    /// Guardrail counters, shared with every compiled policy.
    pub guardrails: Arc<GuardrailMetrics>,
    /// Semantic cache counters.
    pub cache: CacheMetrics,
    upstream_health: prometheus::IntGaugeVec,
    retries: IntCounterVec,
    shadowed: IntCounterVec,
    /// Client connections open now, over every listener.
    pub connections: IntGauge,
    worker_connections: prometheus::IntGaugeVec,
    route_limited: IntCounterVec,
    pub in_flight: IntGauge,
    /// Requests refused because their worker was at its bound.
    pub shed: prometheus::IntCounter,
    /// Admin requests refused, by reason (`missing`, `invalid`, `scope`).
    pub admin_refused: IntCounterVec,
    overhead: [Histogram; 2],
    /// Resolved series per provider and model label, so that settling a
    /// request costs one map lookup instead of nine label hashes.
    ai_series: RwLock<HashMap<String, SeriesByModel, Fnv>>,
    model_labels: RwLock<usize>,
}

/// The series one (provider, model) pair writes to.
struct AiSeries {
    ok: IntCounter,
    duration: Histogram,
    duration_by_provider: Histogram,
    /// prompt, input, completion, output.
    tokens: [IntCounter; 4],
    /// Dollars.
    cost: prometheus::Counter,
}

/// FNV-1a for the small string keys of the series cache: the standard
/// SipHash costs more than the lookup it guards on this path.
#[derive(Default)]
struct FnvHasher(u64);

impl Hasher for FnvHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

type Fnv = BuildHasherDefault<FnvHasher>;
type SeriesByModel = HashMap<String, Arc<AiSeries>, Fnv>;

/// The HTTP series of one route. The (method, status) counters it has used
/// are kept in a short list: a scan of a few entries is cheaper than hashing
/// three label values per request.
pub struct RouteSeries {
    route: String,
    /// The route's upstream (`-` for AI routes and redirects).
    upstream: String,
    duration: Histogram,
    requests: IntCounterVec,
    seen: RwLock<Vec<(http::Method, u16, IntCounter)>>,
}

/// Most (method, status) pairs a route keeps resolved.
const MAX_ROUTE_SERIES: usize = 64;

impl RouteSeries {
    /// Records one request on the route.
    pub fn record(&self, method: &http::Method, status: u16, elapsed: Duration) {
        self.duration.observe(elapsed.as_secs_f64());
        if let Ok(seen) = self.seen.read()
            && let Some((_, _, c)) = seen.iter().find(|(m, s, _)| *s == status && m == method)
        {
            c.inc();
            return;
        }
        let mut buf = [0u8; 3];
        let counter = self.requests.with_label_values(&[
            self.route.as_str(),
            method.as_str(),
            status_str(status, &mut buf),
            self.upstream.as_str(),
        ]);
        counter.inc();
        if let Ok(mut seen) = self.seen.write()
            && seen.len() < MAX_ROUTE_SERIES
        {
            seen.push((method.clone(), status, counter));
        }
    }
}

impl std::fmt::Debug for RouteSeries {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteSeries")
            .field("route", &self.route)
            .finish()
    }
}

/// What one finished AI request reports.
pub struct AiOutcome {
    pub status: u16,
    /// To the last byte.
    pub duration: Duration,
    /// Prompt and completion tokens.
    pub tokens: (u64, u64),
    /// Total minus time waiting on the provider.
    pub overhead: Duration,
    pub stream: bool,
    /// Picodollars.
    pub cost: u64,
}

fn counter(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<IntCounterVec> {
    let c = IntCounterVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

fn histogram(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: &[f64],
) -> prometheus::Result<HistogramVec> {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(buckets.to_vec()),
        labels,
    )?;
    r.register(Box::new(h.clone()))?;
    Ok(h)
}

fn gauges(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<prometheus::IntGaugeVec> {
    let g = prometheus::IntGaugeVec::new(Opts::new(name, help), labels)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

fn gauge(r: &Registry, name: &str, help: &str) -> prometheus::Result<IntGauge> {
    let g = IntGauge::new(name, help)?;
    r.register(Box::new(g.clone()))?;
    Ok(g)
}

fn count(r: &Registry, name: &str, help: &str) -> prometheus::Result<IntCounter> {
    let c = IntCounter::new(name, help)?;
    r.register(Box::new(c.clone()))?;
    Ok(c)
}

impl Metrics {
    /// Registers every family.
    pub fn new() -> prometheus::Result<Metrics> {
        let r = Registry::new();
        let in_flight = gauge(&r, "loom_requests_in_flight", "Requests being served")?;
        let shed = count(
            &r,
            "loom_requests_shed_total",
            "Requests answered 503 at once because their worker served server.max_requests_per_worker already",
        )?;
        let ai_overhead = histogram(
            &r,
            "loom_ai_overhead_seconds",
            "Time Loom adds to an AI request: total minus time waiting on the provider",
            &["stream"],
            OVERHEAD_BUCKETS,
        )?;
        let overhead = [
            ai_overhead.with_label_values(&["false"]),
            ai_overhead.with_label_values(&["true"]),
        ];
        Ok(Metrics {
            ai_requests: counter(
                &r,
                "loom_ai_requests_total",
                "AI requests by provider, model and HTTP status",
                &["provider", "model", "status"],
            )?,
            ai_duration: histogram(
                &r,
                "loom_ai_request_duration_seconds",
                "AI request duration, to the last byte",
                &["provider", "model"],
                LATENCY_BUCKETS,
            )?,
            ai_duration_by_provider: histogram(
                &r,
                "loom_ai_duration_seconds",
                "AI request duration by provider",
                &["provider"],
                LATENCY_BUCKETS,
            )?,
            ai_tokens: counter(
                &r,
                "loom_ai_tokens_total",
                "Tokens by provider and type (prompt/completion, also as input/output)",
                &["provider", "type"],
            )?,
            overhead,
            http_requests: counter(
                &r,
                "loom_http_requests_total",
                "Requests by route, method, status and the route's upstream",
                &["route", "method", "status", "upstream"],
            )?,
            http_duration: histogram(
                &r,
                "loom_http_request_duration_seconds",
                "Time to response headers by route",
                &["route"],
                LATENCY_BUCKETS,
            )?,
            reloads: counter(
                &r,
                "loom_config_reloads_total",
                "Configuration reloads by result",
                &["result"],
            )?,
            failovers: counter(
                &r,
                "loom_ai_failovers_total",
                "Retries on another provider, by the provider that failed, the next one and why",
                &["from", "to", "reason"],
            )?,
            circuit: gauges(
                &r,
                "loom_ai_circuit_state",
                "Circuit breaker per provider: 0 closed, 1 half-open, 2 open",
                &["provider"],
            )?,
            cost: {
                let c = prometheus::CounterVec::new(
                    Opts::new(
                        "loom_ai_cost_total",
                        "Estimated spend in US dollars by provider and model, from the price table",
                    ),
                    &["provider", "model"],
                )?;
                r.register(Box::new(c.clone()))?;
                c
            },
            rate_limited: counter(
                &r,
                "loom_ai_rate_limited_total",
                "Requests refused by a rate limit, by consumer and kind (requests, tokens)",
                &["consumer", "kind"],
            )?,
            guardrails: Arc::new(GuardrailMetrics::new(&r)?),
            limit_exceeded: counter(
                &r,
                "loom_ai_limit_exceeded_total",
                "Requests refused by a daily or monthly limit, by consumer and period",
                &["consumer", "period"],
            )?,
            store_up: gauges(
                &r,
                "loom_accounting_store_up",
                "1 while the usage store answers, 0 while usage is buffered in memory",
                &["store"],
            )?,
            store_buffered: gauge(
                &r,
                "loom_accounting_buffered_records",
                "Finished requests whose usage waits to be written to the store",
            )?,
            store_dropped: count(
                &r,
                "loom_accounting_dropped_records_total",
                "Usage records dropped because the buffer was full or the store rejected them",
            )?,
            cache: CacheMetrics::new(&r)?,
            connections: gauge(
                &r,
                "loom_http_active_connections",
                "Client connections open now, over every listener",
            )?,
            worker_connections: gauges(
                &r,
                "loom_worker_connections",
                "Client connections each worker thread serves now",
                &["worker"],
            )?,
            route_limited: counter(
                &r,
                "loom_http_rate_limited_total",
                "Requests refused by a route's rate limit (429), by route",
                &["route"],
            )?,
            shadowed: counter(
                &r,
                "loom_proxy_shadowed_total",
                "Copies of proxy requests sent to a shadow upstream, by route and outcome (answered, failed)",
                &["route", "outcome"],
            )?,
            retries: counter(
                &r,
                "loom_proxy_retries_total",
                "Retries of proxy requests by route: made, or refused by the retry budget",
                &["route", "outcome"],
            )?,
            upstream_health: gauges(
                &r,
                "loom_upstream_health",
                "1 while an upstream endpoint takes traffic (up by its health checks, not ejected), else 0",
                &["upstream", "endpoint"],
            )?,
            in_flight,
            shed,
            admin_refused: counter(
                &r,
                "loom_admin_auth_failures_total",
                "Admin API requests refused: no token (missing), an unknown token (invalid), or a token without the scope (scope)",
                &["reason"],
            )?,
            registry: r,
            ai_series: RwLock::new(HashMap::default()),
            model_labels: RwLock::new(0),
        })
    }

    /// The series of (provider, model), created on first use. Past
    /// `MAX_MODEL_LABELS` distinct models, new ones share the label `other`.
    fn series(&self, provider: &str, model: &str) -> Arc<AiSeries> {
        if let Ok(map) = self.ai_series.read()
            && let Some(s) = map.get(provider).and_then(|m| m.get(model))
        {
            return s.clone();
        }
        let mut labels = self
            .model_labels
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let model = if *labels < MAX_MODEL_LABELS {
            model
        } else {
            "other"
        };
        let mut map = self
            .ai_series
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let per_provider = map.entry(provider.to_owned()).or_default();
        if let Some(s) = per_provider.get(model) {
            return s.clone();
        }
        *labels += 1;
        let tokens = ["prompt", "input", "completion", "output"]
            .map(|kind| self.ai_tokens.with_label_values(&[provider, kind]));
        let series = Arc::new(AiSeries {
            ok: self
                .ai_requests
                .with_label_values(&[provider, model, "200"]),
            duration: self.ai_duration.with_label_values(&[provider, model]),
            duration_by_provider: self.ai_duration_by_provider.with_label_values(&[provider]),
            tokens,
            cost: self.cost.with_label_values(&[provider, model]),
        });
        per_provider.insert(model.to_owned(), series.clone());
        series
    }

    /// Records a finished AI request: status, duration, tokens and the time
    /// Loom itself added.
    pub fn ai_request(&self, provider: &str, model: &str, outcome: AiOutcome) {
        let AiOutcome {
            status,
            duration,
            tokens,
            overhead,
            stream,
            cost,
        } = outcome;
        let s = self.series(provider, model);
        if status == 200 {
            s.ok.inc();
        } else {
            let mut buf = [0u8; 3];
            let model = if *self
                .model_labels
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                <= MAX_MODEL_LABELS
            {
                model
            } else {
                "other"
            };
            self.ai_requests
                .with_label_values(&[provider, model, status_str(status, &mut buf)])
                .inc();
        }
        s.duration.observe(duration.as_secs_f64());
        s.duration_by_provider.observe(duration.as_secs_f64());
        let (prompt, completion) = tokens;
        if prompt > 0 {
            s.tokens[0].inc_by(prompt);
            s.tokens[1].inc_by(prompt);
        }
        if completion > 0 {
            s.tokens[2].inc_by(completion);
            s.tokens[3].inc_by(completion);
        }
        if cost > 0 {
            s.cost.inc_by(cost as f64 / 1e12);
        }
        self.overhead[usize::from(stream)].observe(overhead.as_secs_f64());
    }

    /// Counts a request refused by a consumer's limit.
    pub fn refused(&self, consumer: &str, why: loom_accounting::Refusal) {
        if why.is_rate() {
            self.rate_limited
                .with_label_values(&[consumer, why.kind()])
                .inc();
        } else {
            self.limit_exceeded
                .with_label_values(&[consumer, why.period()])
                .inc();
        }
    }

    /// Counts a request refused by a route's rate limit.
    pub fn route_limited(&self, route: &str) {
        self.route_limited.with_label_values(&[route]).inc();
    }

    /// Counts one copy sent to a shadow upstream.
    pub fn shadowed(&self, route: &str, answered: bool) {
        let outcome = if answered { "answered" } else { "failed" };
        self.shadowed.with_label_values(&[route, outcome]).inc();
    }

    /// Counts the retries of one proxy request.
    pub fn retries(&self, route: &str, made: u32, exhausted: bool) {
        if made > 0 {
            self.retries
                .with_label_values(&[route, "retried"])
                .inc_by(u64::from(made));
        }
        if exhausted {
            self.retries
                .with_label_values(&[route, "budget_exhausted"])
                .inc();
        }
    }

    /// Reports an upstream endpoint's health (read at scrape time).
    pub fn upstream_health(&self, upstream: &str, endpoint: &str, healthy: bool) {
        self.upstream_health
            .with_label_values(&[upstream, endpoint])
            .set(i64::from(healthy));
    }

    /// Sets each worker's connection count (read at scrape time).
    pub fn worker_connections(&self, loads: &[usize]) {
        for (i, n) in loads.iter().enumerate() {
            self.worker_connections
                .with_label_values(&[i.to_string().as_str()])
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
    }

    /// Reports the usage store's state (read at scrape time).
    pub fn store_health(&self, kind: &str, health: &loom_accounting::Health) {
        use std::sync::atomic::Ordering;
        self.store_up
            .with_label_values(&[kind])
            .set(i64::from(health.is_up()));
        self.store_buffered
            .set(health.buffered.load(Ordering::Relaxed) as i64);
        let dropped = health.dropped.load(Ordering::Relaxed);
        let seen = self.store_dropped.get();
        if dropped > seen {
            self.store_dropped.inc_by(dropped - seen);
        }
    }

    /// The series of a route, resolved once when routes are built.
    pub fn route_series(&self, route: &str, upstream: &str) -> RouteSeries {
        RouteSeries {
            route: route.to_owned(),
            upstream: upstream.to_owned(),
            duration: self.http_duration.with_label_values(&[route]),
            requests: self.http_requests.clone(),
            seen: RwLock::new(Vec::new()),
        }
    }

    /// Records a request that matched no route.
    pub fn unrouted_request(&self, method: &str, status: u16, elapsed: Duration) {
        let mut buf = [0u8; 3];
        self.http_requests
            .with_label_values(&["-", method, status_str(status, &mut buf), "-"])
            .inc();
        self.http_duration
            .with_label_values(&["-"])
            .observe(elapsed.as_secs_f64());
    }

    /// Counts a failover from one provider to the next.
    pub fn failover(&self, from: &str, to: &str, reason: &str) {
        self.failovers.with_label_values(&[from, to, reason]).inc();
    }

    /// Sets a provider's circuit gauge (0 closed, 1 half-open, 2 open).
    pub fn circuit_state(&self, provider: &str, circuit: &str) {
        let v = match circuit {
            "open" => 2,
            "half_open" => 1,
            _ => 0,
        };
        self.circuit.with_label_values(&[provider]).set(v);
    }

    /// Counts a reload attempt.
    pub fn reload(&self, ok: bool) {
        self.reloads
            .with_label_values(&[if ok { "success" } else { "failure" }])
            .inc();
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = Vec::with_capacity(16 * 1024);
        if TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .is_err()
        {
            return String::new();
        }
        let mut text = String::from_utf8(out).unwrap_or_default();
        // Metrics that Proxy-Wasm plugins defined.
        loom_plugins::render_metrics(&mut text);
        text
    }
}

/// Formats a three-digit status without allocating.
fn status_str(status: u16, buf: &mut [u8; 3]) -> &str {
    let s = status.clamp(100, 999);
    buf[0] = b'0' + (s / 100) as u8;
    buf[1] = b'0' + (s / 10 % 10) as u8;
    buf[2] = b'0' + (s % 10) as u8;
    std::str::from_utf8(buf).unwrap_or("000")
}

/// Guardrail check times: microseconds to tens of milliseconds.
const GUARDRAIL_BUCKETS: &[f64] = &[
    0.000_005, 0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.005, 0.025,
];

/// The semantic cache's series.
pub struct CacheMetrics {
    hits: IntCounter,
    misses: IntCounter,
    /// hit, miss, bypass, skip.
    requests: [IntCounter; 4],
    entries: IntGauge,
    bytes: IntGauge,
    lookup: [Histogram; 2],
}

/// What a cache lookup decided, for `loom_ai_cache_requests_total{status}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    Hit,
    Miss,
    /// The client asked to skip the cache (`Cache-Control`, `x-loom-cache`).
    Bypass,
    /// The request is not cacheable (sampled, several choices, no user turn).
    Skip,
}

impl CacheStatus {
    /// The `x-loom-cache` header value and metric label.
    pub fn label(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Bypass => "bypass",
            CacheStatus::Skip => "skip",
        }
    }
}

/// Lookups take from a microsecond (exact) to milliseconds (embedding).
const CACHE_BUCKETS: &[f64] = &[
    0.000_005, 0.000_02, 0.000_1, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5,
];

impl CacheMetrics {
    fn new(r: &Registry) -> prometheus::Result<CacheMetrics> {
        let plain = |name: &str, help: &str| -> prometheus::Result<IntCounter> {
            let c = IntCounter::new(name, help)?;
            r.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let gauge = |name: &str, help: &str| -> prometheus::Result<IntGauge> {
            let g = IntGauge::new(name, help)?;
            r.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let requests = counter(
            r,
            "loom_ai_cache_requests_total",
            "Chat requests by what the semantic cache did: hit, miss, bypass (asked by the client) or skip (not cacheable)",
            &["status"],
        )?;
        let lookup = histogram(
            r,
            "loom_ai_cache_lookup_seconds",
            "Time to look a request up in the semantic cache, by match kind (exact: digest only; similar: embedding and search)",
            &["kind"],
            CACHE_BUCKETS,
        )?;
        Ok(CacheMetrics {
            hits: plain(
                "loom_ai_cache_hits_total",
                "Requests answered from the semantic cache",
            )?,
            misses: plain(
                "loom_ai_cache_misses_total",
                "Cacheable requests the semantic cache could not answer",
            )?,
            requests: ["hit", "miss", "bypass", "skip"].map(|s| requests.with_label_values(&[s])),
            entries: gauge(
                "loom_ai_cache_entries",
                "Answers held by the semantic cache",
            )?,
            bytes: gauge(
                "loom_ai_cache_bytes",
                "Bytes held by the semantic cache, answers and embeddings",
            )?,
            lookup: ["exact", "similar"].map(|k| lookup.with_label_values(&[k])),
        })
    }

    /// Counts one request's outcome and, for lookups, its time.
    pub fn looked_up(&self, status: CacheStatus, seconds: Option<(bool, f64)>) {
        let i = match status {
            CacheStatus::Hit => {
                self.hits.inc();
                0
            }
            CacheStatus::Miss => {
                self.misses.inc();
                1
            }
            CacheStatus::Bypass => 2,
            CacheStatus::Skip => 3,
        };
        self.requests[i].inc();
        if let Some((similar, s)) = seconds {
            self.lookup[usize::from(similar)].observe(s);
        }
    }

    /// The cache's size (read at scrape time and after stores).
    pub fn size(&self, entries: usize, bytes: usize) {
        self.entries.set(entries as i64);
        self.bytes.set(bytes as i64);
    }
}

/// The series guardrails write to.
pub struct GuardrailMetrics {
    blocked: IntCounterVec,
    detected: IntCounterVec,
    pii: IntCounterVec,
    seconds: HistogramVec,
}

impl GuardrailMetrics {
    fn new(r: &Registry) -> prometheus::Result<GuardrailMetrics> {
        Ok(GuardrailMetrics {
            blocked: counter(
                r,
                "loom_ai_security_blocked_total",
                "Requests refused, and answers cut, by a guardrail, by reason",
                &["reason"],
            )?,
            detected: counter(
                r,
                "loom_ai_security_detections_total",
                "Guardrail findings over their threshold, by check, category and action taken",
                &["check", "category", "action"],
            )?,
            pii: counter(
                r,
                "loom_ai_pii_detected_total",
                "PII values found in requests and answers, by type",
                &["type"],
            )?,
            seconds: histogram(
                r,
                "loom_ai_guardrail_seconds",
                "Time spent in each guardrail check",
                &["check"],
                GUARDRAIL_BUCKETS,
            )?,
        })
    }

    /// Counts a finding that acted (blocked, logged, sanitised or masked).
    pub fn detected(&self, check: &str, category: &str, action: &str) {
        self.detected
            .with_label_values(&[check, category, action])
            .inc();
    }
}

impl loom_guardrails::Observer for GuardrailMetrics {
    fn pii(&self, kind: &str, count: u64) {
        self.pii.with_label_values(&[kind]).inc_by(count);
    }
    fn blocked(&self, reason: &'static str) {
        self.blocked.with_label_values(&[reason]).inc();
    }
    fn timed(&self, check: &'static str, seconds: f64) {
        self.seconds.with_label_values(&[check]).observe(seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_documented_names() {
        let m = Metrics::new().unwrap();
        m.ai_request(
            "openai",
            "gpt-4",
            AiOutcome {
                status: 200,
                duration: Duration::from_millis(20),
                tokens: (10, 5),
                overhead: Duration::from_micros(30),
                stream: false,
                cost: 1_730_000_000_000,
            },
        );
        m.ai_request(
            "openai",
            "gpt-4",
            AiOutcome {
                status: 502,
                duration: Duration::from_millis(20),
                tokens: (0, 0),
                overhead: Duration::from_micros(30),
                stream: true,
                cost: 0,
            },
        );
        let route = m.route_series("api", "backend");
        route.record(&http::Method::GET, 404, Duration::from_millis(1));
        route.record(&http::Method::GET, 404, Duration::from_millis(1));
        route.record(&http::Method::POST, 200, Duration::from_millis(1));
        m.unrouted_request("GET", 404, Duration::from_millis(1));
        let text = m.render();
        assert!(
            text.contains(
                r#"loom_ai_requests_total{model="gpt-4",provider="openai",status="200"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"loom_ai_tokens_total{provider="openai",type="prompt"} 10"#));
        assert!(text.contains(r#"loom_ai_tokens_total{provider="openai",type="output"} 5"#));
        assert!(text.contains("loom_ai_request_duration_seconds_bucket"));
        assert!(text.contains(r#"loom_ai_cost_total{model="gpt-4",provider="openai"} 1.73"#));
        assert!(text.contains("loom_ai_duration_seconds_count{provider=\"openai\"} 2"));
        assert!(
            text.contains(r#"loom_http_requests_total{method="GET",route="api",status="404",upstream="backend"} 2"#)
        );
        assert!(
            text.contains(r#"loom_http_requests_total{method="POST",route="api",status="200",upstream="backend"} 1"#)
        );
        assert!(text.contains(
            r#"loom_http_requests_total{method="GET",route="-",status="404",upstream="-"} 1"#
        ));
        assert!(text.contains(r#"loom_http_request_duration_seconds_count{route="api"} 3"#));
    }

    fn outcome(d: Duration) -> AiOutcome {
        AiOutcome {
            status: 200,
            duration: d,
            tokens: (1, 1),
            overhead: d,
            stream: false,
            cost: 0,
        }
    }

    #[test]
    fn model_labels_are_bounded() {
        let m = Metrics::new().unwrap();
        let d = Duration::from_millis(1);
        for i in 0..MAX_MODEL_LABELS + 5 {
            m.ai_request("p", &format!("m{i}"), outcome(d));
        }
        let text = m.render();
        assert!(text.contains(r#"loom_ai_requests_total{model="m0",provider="p",status="200"} 1"#));
        assert!(
            text.contains(r#"loom_ai_requests_total{model="other",provider="p",status="200"} 5"#),
            "{text}"
        );
        assert!(!text.contains(&format!("model=\"m{}\"", MAX_MODEL_LABELS)));
        // Known series keep their own label after the cap.
        m.ai_request("p", "m0", outcome(d));
        assert!(
            m.render()
                .contains(r#"loom_ai_requests_total{model="m0",provider="p",status="200"} 2"#)
        );
    }
}

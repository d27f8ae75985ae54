//! Prometheus metrics, served on the admin listener's `/metrics`.
//!
//! Names follow the product documentation. Token counts are exported under
//! both spellings the documentation uses (`type="prompt"|"completion"` and
//! `type="input"|"output"`), so filter on one pair when summing.

use std::collections::HashSet;
use std::sync::RwLock;
use std::time::Duration;

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
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
    ai_overhead: HistogramVec,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    reloads: IntCounterVec,
    pub in_flight: IntGauge,
    models_seen: RwLock<HashSet<String>>,
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

impl Metrics {
    /// Registers every family.
    pub fn new() -> prometheus::Result<Metrics> {
        let r = Registry::new();
        let in_flight = IntGauge::new("loom_requests_in_flight", "Requests being served")?;
        r.register(Box::new(in_flight.clone()))?;
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
            ai_overhead: histogram(
                &r,
                "loom_ai_overhead_seconds",
                "Time Loom adds to an AI request: total minus time waiting on the provider",
                &["stream"],
                OVERHEAD_BUCKETS,
            )?,
            http_requests: counter(
                &r,
                "loom_http_requests_total",
                "Requests by route, method and status",
                &["route", "method", "status"],
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
            in_flight,
            registry: r,
            models_seen: RwLock::new(HashSet::new()),
        })
    }

    /// The model label for `model`, bounded in cardinality.
    fn model_label<'a>(&self, model: &'a str) -> &'a str {
        if let Ok(seen) = self.models_seen.read()
            && seen.contains(model)
        {
            return model;
        }
        match self.models_seen.write() {
            Ok(mut seen) if seen.len() < MAX_MODEL_LABELS => {
                seen.insert(model.to_owned());
                model
            }
            _ => "other",
        }
    }

    /// Records a finished AI request.
    pub fn ai_request(&self, provider: &str, model: &str, status: u16, duration: Duration) {
        let model = self.model_label(model);
        let mut buf = [0u8; 3];
        self.ai_requests
            .with_label_values(&[provider, model, status_str(status, &mut buf)])
            .inc();
        self.ai_duration
            .with_label_values(&[provider, model])
            .observe(duration.as_secs_f64());
        self.ai_duration_by_provider
            .with_label_values(&[provider])
            .observe(duration.as_secs_f64());
    }

    /// Adds token counts.
    pub fn ai_tokens(&self, provider: &str, prompt: u64, completion: u64) {
        for (kind, n) in [
            ("prompt", prompt),
            ("input", prompt),
            ("completion", completion),
            ("output", completion),
        ] {
            if n > 0 {
                self.ai_tokens
                    .with_label_values(&[provider, kind])
                    .inc_by(n);
            }
        }
    }

    /// Records the time Loom itself spent on an AI request.
    pub fn ai_overhead(&self, stream: bool, overhead: Duration) {
        self.ai_overhead
            .with_label_values(&[if stream { "true" } else { "false" }])
            .observe(overhead.as_secs_f64());
    }

    /// Records a request on any route.
    pub fn http_request(&self, route: &str, method: &str, status: u16, duration: Duration) {
        let mut buf = [0u8; 3];
        self.http_requests
            .with_label_values(&[route, method, status_str(status, &mut buf)])
            .inc();
        self.http_duration
            .with_label_values(&[route])
            .observe(duration.as_secs_f64());
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
        String::from_utf8(out).unwrap_or_default()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_documented_names() {
        let m = Metrics::new().unwrap();
        m.ai_request("openai", "gpt-4", 200, Duration::from_millis(20));
        m.ai_tokens("openai", 10, 5);
        m.http_request("api", "GET", 404, Duration::from_millis(1));
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
        assert!(text.contains("loom_ai_duration_seconds_count{provider=\"openai\"} 1"));
        assert!(
            text.contains(r#"loom_http_requests_total{method="GET",route="api",status="404"} 1"#)
        );
    }

    #[test]
    fn model_labels_are_bounded() {
        let m = Metrics::new().unwrap();
        for i in 0..MAX_MODEL_LABELS {
            assert_eq!(m.model_label(&format!("m{i}")), format!("m{i}"));
        }
        assert_eq!(m.model_label("one-too-many"), "other");
        assert_eq!(m.model_label("m0"), "m0");
    }
}

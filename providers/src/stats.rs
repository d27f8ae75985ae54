//! Live per-provider statistics, kept across hot reloads, read by the admin
//! API (`/ai/providers`) and, later, by latency-aware routing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;

/// Counters of one provider. Updated lock-free on the hot path.
#[derive(Debug, Default)]
pub struct ProviderStats {
    requests: AtomicU64,
    failures: AtomicU64,
    consecutive_failures: AtomicU64,
    tokens_in: AtomicU64,
    tokens_out: AtomicU64,
    latency_micros_total: AtomicU64,
}

impl ProviderStats {
    /// Records a finished request: its latency and token counts.
    pub fn record_success(&self, latency: Duration, tokens_in: u64, tokens_out: u64) {
        self.requests.fetch_add(1, Relaxed);
        self.consecutive_failures.store(0, Relaxed);
        self.tokens_in.fetch_add(tokens_in, Relaxed);
        self.tokens_out.fetch_add(tokens_out, Relaxed);
        self.latency_micros_total
            .fetch_add(latency.as_micros() as u64, Relaxed);
    }

    /// Records a request the provider failed (transport error or 5xx/429).
    pub fn record_failure(&self, latency: Duration) {
        self.requests.fetch_add(1, Relaxed);
        self.failures.fetch_add(1, Relaxed);
        self.consecutive_failures.fetch_add(1, Relaxed);
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
        ProviderSnapshot {
            name: name.to_owned(),
            status: match consecutive {
                0 => "healthy",
                1..=4 => "degraded",
                _ => "unhealthy",
            },
            requests,
            failures: self.failures.load(Relaxed),
            tokens_in: self.tokens_in.load(Relaxed),
            tokens_out: self.tokens_out.load(Relaxed),
            avg_latency_ms: avg,
        }
    }
}

/// One entry of `GET /ai/providers`.
#[derive(Debug, Clone, Serialize)]
pub struct ProviderSnapshot {
    pub name: String,
    pub status: &'static str,
    pub requests: u64,
    pub failures: u64,
    pub tokens_in: u64,
    pub tokens_out: u64,
    pub avg_latency_ms: u64,
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

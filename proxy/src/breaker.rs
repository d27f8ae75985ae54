//! The circuit breaker of an upstream: a bound on requests waiting for an
//! answer, and a trip when too many of them fail.
//!
//! **Closed**: requests pass while fewer than `max_pending` wait for their
//! response headers (beyond it: 503 at once, so a slow upstream cannot
//! pile up every connection of the gateway). Outcomes are counted over a
//! window; when at least `min_requests` came and `failure_percent` percent of
//! them failed (connect failures, timeouts, 5xx), the breaker **opens**:
//! every request gets 503 at once for `open_for`. Then it is **half-open**:
//! one request goes through as a probe; its success closes the breaker,
//! its failure opens it again.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed,
    Open { until: Instant },
    HalfOpen { probing: bool },
}

#[derive(Debug)]
struct Window {
    started: Instant,
    requests: u64,
    failures: u64,
    state: State,
}

/// An upstream's circuit breaker.
#[derive(Debug)]
pub struct Breaker {
    max_pending: usize,
    failure_rate: u64,
    min_requests: u64,
    window: Duration,
    open_for: Duration,
    pending: AtomicUsize,
    inner: Mutex<Window>,
}

/// Why a request was not let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Too many requests already wait for the upstream.
    Pending,
    /// The breaker is open.
    Open,
}

/// A request let through: counts as pending until dropped, and reports its
/// outcome with [`Admitted::done`].
#[derive(Debug)]
pub struct Admitted<'a> {
    breaker: &'a Breaker,
    probe: bool,
}

impl Breaker {
    pub fn new(cfg: &loom_config::settings::UpstreamBreaker) -> Breaker {
        Breaker {
            max_pending: cfg.max_pending.max(1),
            failure_rate: u64::from(cfg.failure_percent.min(100)),
            min_requests: u64::from(cfg.min_requests.max(1)),
            window: cfg.window.get(),
            open_for: cfg.open_for.get(),
            pending: AtomicUsize::new(0),
            inner: Mutex::new(Window {
                started: Instant::now(),
                requests: 0,
                failures: 0,
                state: State::Closed,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Window> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lets a request through, or says why not.
    pub fn admit(&self) -> Result<Admitted<'_>, Refusal> {
        let probe = {
            let mut w = self.lock();
            match w.state {
                State::Closed => false,
                State::Open { until } if Instant::now() < until => return Err(Refusal::Open),
                State::Open { .. } | State::HalfOpen { probing: false } => {
                    w.state = State::HalfOpen { probing: true };
                    true
                }
                State::HalfOpen { probing: true } => return Err(Refusal::Open),
            }
        };
        if self.pending.fetch_add(1, Ordering::Relaxed) >= self.max_pending {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            if probe {
                self.lock().state = State::HalfOpen { probing: false };
            }
            return Err(Refusal::Pending);
        }
        Ok(Admitted {
            breaker: self,
            probe,
        })
    }

    /// Whether the breaker is open now (for reports).
    pub fn is_open(&self) -> bool {
        !matches!(self.lock().state, State::Closed)
    }
}

impl Admitted<'_> {
    /// Reports the request's outcome.
    pub fn done(self, failed: bool) {
        let b = self.breaker;
        let mut w = b.lock();
        if self.probe {
            w.state = if failed {
                State::Open {
                    until: Instant::now() + b.open_for,
                }
            } else {
                State::Closed
            };
            w.started = Instant::now();
            w.requests = 0;
            w.failures = 0;
            return;
        }
        if w.started.elapsed() >= b.window {
            w.started = Instant::now();
            w.requests = 0;
            w.failures = 0;
        }
        w.requests += 1;
        w.failures += u64::from(failed);
        if w.state == State::Closed
            && w.requests >= b.min_requests
            && w.failures * 100 >= w.requests * b.failure_rate
        {
            w.state = State::Open {
                until: Instant::now() + b.open_for,
            };
            tracing::warn!(
                requests = w.requests,
                failures = w.failures,
                "circuit breaker opened"
            );
        }
    }
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.breaker.pending.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker(yaml: &str) -> Breaker {
        Breaker::new(&serde_norway::from_str(yaml).expect("breaker"))
    }

    #[test]
    fn trips_on_the_failure_rate_then_probes() {
        let b = breaker("failure_percent: 50\nmin_requests: 4\nopen_for: 0s");
        for failed in [false, true, false] {
            b.admit().expect("closed").done(failed);
        }
        assert!(!b.is_open());
        b.admit().expect("closed").done(true);
        assert!(b.is_open(), "2 of 4 failed");
        // open_for 0: the next request is the probe; a second waits for it.
        let probe = b.admit().expect("probe");
        assert_eq!(b.admit().unwrap_err(), Refusal::Open);
        probe.done(false);
        assert!(!b.is_open());
    }

    #[test]
    fn bounds_pending_requests() {
        let b = breaker("max_pending: 2");
        let (x, y) = (b.admit().expect("1"), b.admit().expect("2"));
        assert_eq!(b.admit().unwrap_err(), Refusal::Pending);
        drop(x);
        assert!(b.admit().is_ok());
        drop(y);
    }
}

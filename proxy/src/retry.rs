//! Retries of proxy requests: which failures are retried, for which
//! methods, within which time, and within which budget.
//!
//! A retry goes through the balancer again (outlier detection and health
//! apply, so it usually lands on another endpoint). Only requests whose
//! body is known to be small (declared at most [`MAX_REPLAY`] bytes, or
//! absent) can be replayed; others are sent once. The **budget** keeps
//! retries from multiplying an outage: over each ten-second window, retries
//! may add at most `budget_percent` of the requests (and always
//! `min_retries`, so a quiet route can still retry).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::{Method, StatusCode};

/// Largest body replayed for a retry.
pub const MAX_REPLAY: u64 = 64 * 1024;
/// Budget window.
const WINDOW: Duration = Duration::from_secs(10);

/// What a failed try was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No connection could be made.
    Connect,
    /// The connection broke before a response arrived.
    Reset,
    /// No response headers within the per-try timeout.
    Timeout,
    /// The upstream answered with this status.
    Status(StatusCode),
}

/// A route's retry policy.
#[derive(Debug)]
pub struct RetryPolicy {
    /// Tries in all, the first included.
    pub attempts: u32,
    on_connect: bool,
    on_reset: bool,
    on_timeout: bool,
    statuses: HashSet<u16>,
    /// Retry non-idempotent methods too.
    all_methods: bool,
    /// Time for each try's response headers.
    pub per_try_timeout: Option<Duration>,
    /// Time for all tries together.
    pub timeout: Option<Duration>,
    budget_percent: u64,
    min_retries: u64,
    budget: Budget,
}

#[derive(Debug)]
struct Budget {
    epoch: Instant,
    /// Window number (seconds since epoch / window) the counts belong to.
    window: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
}

impl RetryPolicy {
    /// The policy of `cfg`.
    pub fn new(cfg: &loom_config::settings::Retry) -> RetryPolicy {
        let mut p = RetryPolicy {
            attempts: cfg.attempts.max(1),
            on_connect: false,
            on_reset: false,
            on_timeout: false,
            statuses: HashSet::new(),
            all_methods: cfg.methods == loom_config::settings::RetryMethods::All,
            per_try_timeout: cfg.attempt_timeout.map(|d| d.get()),
            timeout: cfg.deadline.map(|d| d.get()),
            budget_percent: u64::from(cfg.budget_percent),
            min_retries: u64::from(cfg.min_retries),
            budget: Budget {
                epoch: Instant::now(),
                window: AtomicU64::new(0),
                requests: AtomicU64::new(0),
                retries: AtomicU64::new(0),
            },
        };
        for on in &cfg.on {
            match on.as_str() {
                "connect_failure" => p.on_connect = true,
                "reset" => p.on_reset = true,
                "timeout" => p.on_timeout = true,
                "5xx" => p.statuses.extend(500..600),
                code => {
                    if let Ok(c) = code.parse::<u16>() {
                        p.statuses.insert(c);
                    }
                }
            }
        }
        p
    }

    /// Whether a request with this method may be retried at all.
    pub fn allows(&self, method: &Method) -> bool {
        self.attempts > 1
            && (self.all_methods
                || matches!(
                    *method,
                    Method::GET
                        | Method::HEAD
                        | Method::OPTIONS
                        | Method::PUT
                        | Method::DELETE
                        | Method::TRACE
                ))
    }

    /// Whether `failure` is one this policy retries.
    pub fn retries(&self, failure: Failure) -> bool {
        match failure {
            Failure::Connect => self.on_connect,
            Failure::Reset => self.on_reset,
            Failure::Timeout => self.on_timeout,
            Failure::Status(s) => self.statuses.contains(&s.as_u16()),
        }
    }

    fn roll(&self) {
        let now = self.budget.epoch.elapsed().as_secs() / WINDOW.as_secs();
        let seen = self.budget.window.load(Ordering::Relaxed);
        if now != seen
            && self
                .budget
                .window
                .compare_exchange(seen, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.budget.requests.store(0, Ordering::Relaxed);
            self.budget.retries.store(0, Ordering::Relaxed);
        }
    }

    /// Counts a request against the budget.
    pub fn request(&self) {
        self.roll();
        self.budget.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one retry from the budget, if any is left.
    pub fn take_retry(&self) -> bool {
        self.roll();
        let requests = self.budget.requests.load(Ordering::Relaxed);
        let allowed = (requests * self.budget_percent / 100).max(self.min_retries);
        let taken = self.budget.retries.fetch_add(1, Ordering::Relaxed);
        if taken >= allowed {
            self.budget.retries.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(yaml: &str) -> RetryPolicy {
        let cfg: loom_config::settings::Retry = serde_norway::from_str(yaml).expect("retry");
        RetryPolicy::new(&cfg)
    }

    #[test]
    fn what_is_retried() {
        let p = policy("attempts: 3");
        assert!(p.retries(Failure::Connect) && p.retries(Failure::Reset));
        assert!(p.retries(Failure::Status(StatusCode::SERVICE_UNAVAILABLE)));
        assert!(!p.retries(Failure::Status(StatusCode::INTERNAL_SERVER_ERROR)));
        assert!(!p.retries(Failure::Timeout));
        assert!(p.allows(&Method::GET) && !p.allows(&Method::POST));
        let p = policy("attempts: 2\non: [timeout, 5xx]\nmethods: all");
        assert!(p.retries(Failure::Timeout) && !p.retries(Failure::Connect));
        assert!(p.retries(Failure::Status(StatusCode::INTERNAL_SERVER_ERROR)));
        assert!(p.allows(&Method::POST));
        assert!(!policy("attempts: 1").allows(&Method::GET));
    }

    #[test]
    fn the_budget_bounds_retries_to_a_share_of_requests() {
        let p = policy("attempts: 3\nbudget_percent: 20\nmin_retries: 3");
        for _ in 0..100 {
            p.request();
        }
        let granted = (0..100).filter(|_| p.take_retry()).count();
        assert_eq!(granted, 20);
        // A quiet route still gets its minimum.
        let q = policy("attempts: 3\nbudget_percent: 20\nmin_retries: 3");
        q.request();
        assert_eq!((0..10).filter(|_| q.take_retry()).count(), 3);
    }
}

//! Endpoint health: active checks and passive outlier detection.
//!
//! Each endpoint has one [`EndpointHealth`]. **Active checks** (when the
//! upstream configures `health_check`) probe a path on every endpoint each
//! interval; `unhealthy_threshold` failures in a row mark it down,
//! `healthy_threshold` successes in a row mark it up again. **Outlier
//! detection** (when `outlier_detection` is configured) watches real
//! traffic: `consecutive_failures` connect failures or 5xx answers in a row
//! eject the endpoint for `base_ejection_time` times the number of times it
//! was ejected (capped at ten), never more than `max_ejection_percent` of
//! the upstream at once. Balancers skip endpoints that are down or ejected;
//! when none is left, they use them all (a degraded upstream still answers
//! better than none).
//!
//! Everything is atomics: the request path reads two words per candidate.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Milliseconds since the process's first health reading.
fn now_ms() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// The health of one endpoint.
#[derive(Debug)]
pub struct EndpointHealth {
    /// False after the active check's failures, true after its successes.
    up: AtomicBool,
    /// Active check streaks.
    successes: AtomicU32,
    failures: AtomicU32,
    /// Passive: failures in a row on real traffic.
    consecutive: AtomicU32,
    /// Passive: ejected until this time (ms), 0 when not ejected.
    ejected_until: AtomicU64,
    /// Times ejected, for the back-off.
    ejections: AtomicU32,
}

impl Default for EndpointHealth {
    fn default() -> Self {
        EndpointHealth {
            up: AtomicBool::new(true),
            successes: AtomicU32::new(0),
            failures: AtomicU32::new(0),
            consecutive: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
        }
    }
}

/// Passive outlier detection settings.
#[derive(Debug, Clone, Copy)]
pub struct Outliers {
    pub consecutive_failures: u32,
    pub base_ejection: Duration,
    pub max_ejection_percent: u32,
}

impl EndpointHealth {
    /// Whether the endpoint takes traffic now.
    pub fn available(&self) -> bool {
        self.up.load(Ordering::Relaxed) && !self.ejected()
    }

    /// Whether outlier detection has it ejected now.
    pub fn ejected(&self) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        until != 0 && now_ms() < until
    }

    /// Whether the active check has it up.
    pub fn up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Records an active check's result; returns true when the state flipped.
    pub fn checked(&self, ok: bool, healthy_threshold: u32, unhealthy_threshold: u32) -> bool {
        if ok {
            self.failures.store(0, Ordering::Relaxed);
            let n = self.successes.fetch_add(1, Ordering::Relaxed) + 1;
            n >= healthy_threshold && !self.up.swap(true, Ordering::Relaxed)
        } else {
            self.successes.store(0, Ordering::Relaxed);
            let n = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
            n >= unhealthy_threshold && self.up.swap(false, Ordering::Relaxed)
        }
    }

    /// Records a real request's outcome; `ejected_now` counts the
    /// upstream's endpoints ejected at this moment, out of `total`.
    /// Returns true when this call ejected the endpoint.
    pub fn observed(&self, failed: bool, o: &Outliers, ejected_now: usize, total: usize) -> bool {
        if !failed {
            self.consecutive.store(0, Ordering::Relaxed);
            return false;
        }
        let n = self.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
        if n < o.consecutive_failures || self.ejected() {
            return false;
        }
        if (ejected_now + 1) * 100 > total * o.max_ejection_percent as usize {
            return false;
        }
        let times = (self.ejections.fetch_add(1, Ordering::Relaxed) + 1).min(10);
        let until = now_ms() + o.base_ejection.as_millis() as u64 * u64::from(times);
        self.ejected_until.store(until, Ordering::Relaxed);
        self.consecutive.store(0, Ordering::Relaxed);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_checks_flip_after_their_thresholds() {
        let h = EndpointHealth::default();
        assert!(!h.checked(false, 2, 3));
        assert!(!h.checked(false, 2, 3));
        assert!(h.checked(false, 2, 3), "third failure marks it down");
        assert!(!h.available());
        assert!(!h.checked(true, 2, 3));
        assert!(h.checked(true, 2, 3), "second success marks it up");
        assert!(h.available());
    }

    #[test]
    fn outliers_are_ejected_within_the_percentage() {
        let o = Outliers {
            consecutive_failures: 3,
            base_ejection: Duration::from_secs(30),
            max_ejection_percent: 50,
        };
        let h = EndpointHealth::default();
        assert!(!h.observed(true, &o, 0, 4));
        assert!(!h.observed(false, &o, 0, 4), "a success resets the streak");
        assert!(!h.observed(true, &o, 0, 4));
        assert!(!h.observed(true, &o, 0, 4));
        assert!(h.observed(true, &o, 0, 4));
        assert!(h.ejected() && !h.available());
        // Two of four already out: a third would pass 50 %.
        let g = EndpointHealth::default();
        for _ in 0..3 {
            g.observed(true, &o, 2, 4);
        }
        assert!(!g.ejected());
    }
}

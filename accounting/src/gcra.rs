//! Rate limits as a generic cell rate algorithm (GCRA): one number per
//! limit, the theoretical arrival time (TAT), instead of a log of requests.
//! A limit of `n` per `window` admits a burst of `n` and then one every
//! `window / n`, so it never allows more than `n` in any window.
//!
//! Token limits are charged after the answer, when the real count is known:
//! a request is admitted while the consumer's token budget is not spent,
//! and its tokens are then added, possibly into debt that later requests
//! wait out. The same arithmetic runs in the Redis script (`store/redis.rs`)
//! so a memory store and a shared store behave alike.

use std::time::Duration;

/// `limit` per `window`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub limit: u64,
    pub window: Duration,
}

impl Rate {
    /// Microseconds between two units at a steady rate.
    pub fn interval_us(&self) -> f64 {
        self.window.as_micros() as f64 / self.limit.max(1) as f64
    }
}

/// A limiter's answer, for the response headers and `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Standing {
    pub allowed: bool,
    /// Units left right now.
    pub remaining: u64,
    /// Until the limiter is back to its full allowance.
    pub reset: Duration,
    /// Until the next unit is allowed, when refused.
    pub retry_after: Duration,
}

fn us(v: f64) -> Duration {
    Duration::from_micros(v.max(0.0).ceil() as u64)
}

/// Takes one request from `tat` (microseconds), unless it would exceed `rate`.
pub fn take_request(tat: &mut f64, now: f64, rate: Rate) -> Standing {
    let t = rate.interval_us();
    let tau = t * rate.limit as f64;
    let next = tat.max(now) + t;
    if next - now > tau {
        return Standing {
            allowed: false,
            remaining: 0,
            reset: us(*tat - now),
            retry_after: us(next - now - tau),
        };
    }
    *tat = next;
    Standing {
        allowed: true,
        remaining: ((tau - (next - now)) / t).floor() as u64,
        reset: us(next - now),
        retry_after: Duration::ZERO,
    }
}

/// Whether the token budget behind `tat` has anything left.
pub fn check_tokens(tat: f64, now: f64, rate: Rate) -> Standing {
    let t = rate.interval_us();
    let tau = t * rate.limit as f64;
    let used = (tat - now).max(0.0);
    if used >= tau {
        return Standing {
            allowed: false,
            remaining: 0,
            reset: us(used),
            retry_after: us(used - tau + t),
        };
    }
    Standing {
        allowed: true,
        remaining: ((tau - used) / t).floor() as u64,
        reset: us(used),
        retry_after: Duration::ZERO,
    }
}

/// Charges `tokens` to the budget behind `tat`.
pub fn charge_tokens(tat: &mut f64, now: f64, rate: Rate, tokens: u64) {
    *tat = tat.max(now) + rate.interval_us() * tokens as f64;
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn a_burst_of_the_limit_then_one_per_interval() {
        let rate = Rate {
            limit: 10,
            window: MINUTE,
        };
        let mut tat = 0.0;
        let now = 1e12;
        let allowed = (0..25)
            .filter(|_| take_request(&mut tat, now, rate).allowed)
            .count();
        assert_eq!(allowed, 10);
        let refused = take_request(&mut tat, now, rate);
        assert_eq!(refused.retry_after, Duration::from_secs(6));
        // Six seconds later exactly one more fits.
        let later = now + 6e6;
        assert!(take_request(&mut tat, later, rate).allowed);
        assert!(!take_request(&mut tat, later, rate).allowed);
    }

    #[test]
    fn remaining_counts_down() {
        let rate = Rate {
            limit: 3,
            window: MINUTE,
        };
        let mut tat = 0.0;
        let r: Vec<u64> = (0..3)
            .map(|_| take_request(&mut tat, 5e9, rate).remaining)
            .collect();
        assert_eq!(r, vec![2, 1, 0]);
    }

    #[test]
    fn tokens_go_into_debt_and_are_waited_out() {
        let rate = Rate {
            limit: 1000,
            window: MINUTE,
        };
        let mut tat = 0.0;
        let now = 1e12;
        assert_eq!(check_tokens(tat, now, rate).remaining, 1000);
        charge_tokens(&mut tat, now, rate, 400);
        assert_eq!(check_tokens(tat, now, rate).remaining, 600);
        charge_tokens(&mut tat, now, rate, 1100); // 1500 of 1000: in debt
        let s = check_tokens(tat, now, rate);
        assert!(!s.allowed);
        // 500 tokens over, plus one token's interval: 30.06 s at 1000/min.
        assert_eq!(s.retry_after, Duration::from_micros(30_060_000));
        assert!(check_tokens(tat, now + 30.1e6, rate).allowed);
    }
}

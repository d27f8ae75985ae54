//! Load balancers: which endpoint of an upstream serves the next request.
//!
//! Every balancer is lock-free on the request path:
//! - `round_robin`: one atomic counter.
//! - `weighted`: a smooth weighted round-robin *schedule* computed once
//!   (weights 5, 1, 1 give `a a b a c a a` rather than `a a a a a b c`),
//!   walked by an atomic counter.
//! - `random`: a per-thread xorshift generator.
//! - `least_request`: the power of two choices: two endpoints drawn at
//!   random (by weight), the one with fewer requests in flight wins.
//!   In-flight counts are held by an [`InFlight`] guard that the response
//!   body carries to its end.
//! - `consistent_hash`: a ring of virtual nodes (160 per unit of weight,
//!   placed by a 64-bit hash of the endpoint and replica number); a key
//!   goes to the first node at or after its hash. Adding or removing one
//!   endpoint moves only the keys of that endpoint's arcs.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The balancing policy of an upstream.
#[derive(Debug)]
pub(crate) enum Balancer {
    RoundRobin(AtomicUsize),
    Weighted {
        schedule: Vec<u32>,
        next: AtomicUsize,
    },
    Random {
        /// Cumulative weights, for a draw by weight.
        cumulative: Vec<u64>,
    },
    LeastRequest {
        cumulative: Vec<u64>,
        in_flight: Arc<[AtomicUsize]>,
    },
    ConsistentHash {
        /// (hash, endpoint index), sorted by hash.
        ring: Vec<(u64, u32)>,
    },
}

/// Counts a request in flight on an endpoint until dropped.
#[derive(Debug)]
pub struct InFlight {
    counts: Arc<[AtomicUsize]>,
    index: usize,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.counts[self.index].fetch_sub(1, Ordering::Relaxed);
    }
}

/// Virtual nodes per unit of weight on the hash ring.
const REPLICAS: u64 = 160;
/// Largest schedule a weighted balancer precomputes.
const MAX_SCHEDULE: u64 = 10_000;

thread_local! {
    static RNG: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    // Distinct per thread: the address of a local and the time.
    let local = 0u8;
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    (std::ptr::addr_of!(local) as u64 ^ t) | 1
}

/// A fast per-thread pseudo-random number (xorshift): for spreading
/// traffic, never for anything secret.
pub fn random() -> u64 {
    RNG.with(|r| {
        let mut x = r.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        r.set(x);
        x
    })
}

/// FNV-1a then a final mix: fast, stable across runs and builds, and
/// spread well enough for a ring.
pub(crate) fn hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

fn cumulative(weights: &[u32]) -> Vec<u64> {
    weights
        .iter()
        .scan(0u64, |acc, w| {
            *acc += u64::from((*w).max(1));
            Some(*acc)
        })
        .collect()
}

fn draw(cumulative: &[u64]) -> usize {
    let total = cumulative.last().copied().unwrap_or(1).max(1);
    let r = random() % total;
    cumulative.partition_point(|c| *c <= r)
}

/// Smooth weighted round robin, unrolled into one full cycle.
fn schedule(weights: &[u32]) -> Vec<u32> {
    let mut w: Vec<i64> = weights.iter().map(|x| i64::from((*x).max(1))).collect();
    let total: i64 = w.iter().sum();
    // Scale very large weights down so the cycle stays small.
    if total as u64 > MAX_SCHEDULE {
        let scale = total as f64 / MAX_SCHEDULE as f64;
        w.iter_mut()
            .for_each(|x| *x = ((*x as f64 / scale).round() as i64).max(1));
    }
    let total: i64 = w.iter().sum();
    let mut current = vec![0i64; w.len()];
    (0..total)
        .map(|_| {
            for (c, x) in current.iter_mut().zip(&w) {
                *c += x;
            }
            let (best, _) = current
                .iter()
                .enumerate()
                .max_by_key(|(i, c)| (**c, std::cmp::Reverse(*i)))
                .unwrap_or((0, &0));
            current[best] -= total;
            best as u32
        })
        .collect()
}

/// The ring of `names` (one per endpoint) with their weights.
fn ring(names: &[String], weights: &[u32]) -> Vec<(u64, u32)> {
    let mut ring: Vec<(u64, u32)> = names
        .iter()
        .zip(weights)
        .enumerate()
        .flat_map(|(i, (name, w))| {
            (0..REPLICAS * u64::from((*w).max(1))).map(move |r| {
                let mut key = name.as_bytes().to_vec();
                key.extend_from_slice(&r.to_le_bytes());
                (hash(&key), i as u32)
            })
        })
        .collect();
    ring.sort_unstable();
    ring
}

/// Which policy, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    RoundRobin,
    Weighted,
    Random,
    LeastRequest,
    ConsistentHash,
}

impl Balancer {
    /// A balancer over endpoints with these names (their URLs, stable
    /// across reloads) and weights.
    pub(crate) fn new(kind: Kind, names: &[String], weights: &[u32]) -> Balancer {
        match kind {
            Kind::RoundRobin => Balancer::RoundRobin(AtomicUsize::new(0)),
            Kind::Weighted => Balancer::Weighted {
                schedule: schedule(weights),
                next: AtomicUsize::new(0),
            },
            Kind::Random => Balancer::Random {
                cumulative: cumulative(weights),
            },
            Kind::LeastRequest => Balancer::LeastRequest {
                cumulative: cumulative(weights),
                in_flight: (0..weights.len()).map(|_| AtomicUsize::new(0)).collect(),
            },
            Kind::ConsistentHash => Balancer::ConsistentHash {
                ring: ring(names, weights),
            },
        }
    }

    /// The endpoint for the next request among `n`; `key` is the request's
    /// hash key (consistent hashing only; absent keys spread at random).
    /// Endpoints for which `available` is false are skipped; when none is
    /// available, every endpoint is (a degraded upstream still answers).
    pub(crate) fn pick(
        &self,
        n: usize,
        key: Option<&[u8]>,
        available: &dyn Fn(usize) -> bool,
    ) -> (usize, Option<InFlight>) {
        let first = self.pick_once(n, key, 0);
        let i = if available(first) {
            first
        } else {
            (1..2 * n.max(1))
                .map(|attempt| self.pick_once(n, key, attempt))
                .find(|i| available(*i))
                .or_else(|| (0..n).find(|i| available(*i)))
                .unwrap_or(first)
        };
        match self {
            Balancer::LeastRequest { in_flight, .. } => {
                in_flight[i].fetch_add(1, Ordering::Relaxed);
                (
                    i,
                    Some(InFlight {
                        counts: in_flight.clone(),
                        index: i,
                    }),
                )
            }
            _ => (i, None),
        }
    }

    /// One draw; `attempt` > 0 after a draw that was unavailable (the hash
    /// ring then walks on to the next node).
    fn pick_once(&self, n: usize, key: Option<&[u8]>, attempt: usize) -> usize {
        let i = match self {
            Balancer::RoundRobin(next) => next.fetch_add(1, Ordering::Relaxed) % n.max(1),
            Balancer::Weighted { schedule, next } => {
                let k = next.fetch_add(1, Ordering::Relaxed) % schedule.len().max(1);
                schedule.get(k).map_or(0, |i| *i as usize)
            }
            Balancer::Random { cumulative } => draw(cumulative),
            Balancer::LeastRequest {
                cumulative,
                in_flight,
            } => {
                let (a, b) = (draw(cumulative), draw(cumulative));
                let load = |i: usize| in_flight[i].load(Ordering::Relaxed);
                if load(b) < load(a) { b } else { a }
            }
            Balancer::ConsistentHash { ring } => {
                let h = key.map_or_else(random, hash);
                let at = ring.partition_point(|(x, _)| *x < h);
                // Walk on past nodes of endpoints already found unavailable:
                // the next distinct endpoint clockwise.
                let mut seen = 0;
                let mut last = u32::MAX;
                let mut found = ring.first().map_or(0, |(_, i)| *i);
                for k in 0..ring.len() {
                    let (_, e) = ring[(at + k) % ring.len()];
                    if e != last {
                        last = e;
                        if seen == attempt {
                            found = e;
                            break;
                        }
                        seen += 1;
                    }
                }
                found as usize
            }
        };
        i.min(n.saturating_sub(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("http://10.0.0.{i}:8000")).collect()
    }

    fn counts(b: &Balancer, n: usize, picks: usize) -> Vec<usize> {
        let mut c = vec![0; n];
        for _ in 0..picks {
            c[b.pick(n, None, &|_| true).0] += 1;
        }
        c
    }

    #[test]
    fn weighted_schedules_are_smooth_and_exact() {
        assert_eq!(schedule(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
        let b = Balancer::new(Kind::Weighted, &names(3), &[3, 2, 1]);
        assert_eq!(counts(&b, 3, 600), vec![300, 200, 100]);
    }

    #[test]
    fn random_draws_follow_the_weights() {
        let b = Balancer::new(Kind::Random, &names(2), &[3, 1]);
        let c = counts(&b, 2, 40_000);
        let share = c[0] as f64 / 40_000.0;
        assert!((share - 0.75).abs() < 0.02, "{c:?}");
    }

    #[test]
    fn least_request_avoids_the_busy_endpoint() {
        let b = Balancer::new(Kind::LeastRequest, &names(2), &[1, 1]);
        // Hold ten requests on whichever endpoints get them first, then
        // keep endpoint 0 busy: new picks go to 1 whenever it is drawn.
        let mut held = Vec::new();
        while held.len() < 10 {
            let (i, g) = b.pick(2, None, &|_| true);
            if i == 0 {
                held.push(g);
            }
        }
        let c = counts(&b, 2, 1000);
        assert!(c[1] > c[0] * 2, "{c:?}");
        drop(held);
        let c = counts(&b, 2, 10_000);
        assert!((c[0] as f64 / 10_000.0 - 0.5).abs() < 0.05, "{c:?}");
    }

    #[test]
    fn consistent_hashing_is_stable_and_moves_few_keys() {
        let four = Balancer::new(Kind::ConsistentHash, &names(4), &[1; 4]);
        let keys: Vec<String> = (0..10_000).map(|i| format!("user-{i}")).collect();
        let before: Vec<usize> = keys
            .iter()
            .map(|k| four.pick(4, Some(k.as_bytes()), &|_| true).0)
            .collect();
        // Same key, same endpoint.
        assert_eq!(four.pick(4, Some(b"user-7"), &|_| true).0, before[7]);
        // Balanced within 15 %.
        let mut c = [0usize; 4];
        before.iter().for_each(|i| c[*i] += 1);
        assert!(
            c.iter().all(|x| (*x as f64 - 2500.0).abs() < 375.0),
            "{c:?}"
        );
        // A fifth endpoint takes about a fifth of the keys, from the others.
        let five = Balancer::new(Kind::ConsistentHash, &names(5), &[1; 5]);
        let moved = keys
            .iter()
            .zip(&before)
            .filter(|(k, b)| five.pick(5, Some(k.as_bytes()), &|_| true).0 != **b)
            .count();
        let after_to_new = keys
            .iter()
            .filter(|k| five.pick(5, Some(k.as_bytes()), &|_| true).0 == 4)
            .count();
        assert_eq!(
            moved, after_to_new,
            "only keys that moved to the new endpoint"
        );
        assert!((moved as f64 / 10_000.0 - 0.2).abs() < 0.05, "{moved}");
    }

    #[test]
    fn unavailable_endpoints_are_skipped_until_none_is_left() {
        for kind in [
            Kind::RoundRobin,
            Kind::Weighted,
            Kind::Random,
            Kind::LeastRequest,
            Kind::ConsistentHash,
        ] {
            let b = Balancer::new(kind, &names(3), &[1, 2, 3]);
            for k in 0..300 {
                let key = format!("k{k}");
                let (i, _) = b.pick(3, Some(key.as_bytes()), &|i| i != 1);
                assert_ne!(i, 1, "{kind:?}");
            }
            // Nothing available: traffic still goes somewhere.
            assert!(b.pick(3, None, &|_| false).0 < 3);
        }
        // Consistent hashing moves only the keys of the unavailable endpoint.
        let b = Balancer::new(Kind::ConsistentHash, &names(3), &[1; 3]);
        for k in 0..1000 {
            let key = format!("k{k}");
            let all = b.pick(3, Some(key.as_bytes()), &|_| true).0;
            let without = b.pick(3, Some(key.as_bytes()), &|i| i != 2).0;
            if all != 2 {
                assert_eq!(all, without);
            }
        }
    }
}

//! Load shedding: a bound on the requests each worker serves at once, and
//! optionally on how late its event loop runs.
//!
//! Beyond what the machine can serve, queueing only adds latency and
//! memory: every admitted request waits longer and holds its buffers
//! longer, until the process runs out of one or the other. Past
//! `server.max_requests_per_worker` requests in flight on a worker (a
//! request is in flight from its head to the last byte of its answer,
//! streams included), a new request is answered at once with 503 and
//! `Retry-After`: in OpenAI's error envelope on AI routes, Loom's plain
//! JSON error on proxy routes. The check runs after the route is found and
//! before anything else (plugins, authentication, the body): refusing costs
//! a route lookup and one small answer. The admin listener (health,
//! readiness, metrics) is not counted and keeps answering.
//!
//! The count bounds memory (a slow provider piles requests up); it does not
//! bound latency when the CPU is what runs out, since requests then wait
//! for the event loop before anything counts them. For that,
//! `server.shed_at_loop_delay` sheds while the worker's event loop runs
//! later than the setting: a probe timer measures how late it fires, and
//! while it is late, new requests get the cheap 503 instead of the work
//! they would queue behind, so the loop catches up and the admitted
//! requests' latency stays near the setting.
//!
//! Each worker thread counts its own requests, with no shared cache line;
//! a request's count is held by its [`Exchange`](crate::runtime::exchange::Exchange)
//! and given back when it ends, on whichever thread that is.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use http::header::{HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};

use crate::runtime::body::{Body, json_response};

thread_local! {
    /// This thread's requests in flight. Leaked once per thread so that a
    /// request holds a plain reference: worker threads live as long as the
    /// process.
    static LOAD: &'static AtomicUsize = Box::leak(Box::new(AtomicUsize::new(0)));
}

thread_local! {
    /// How late this thread's probe timer last fired, in microseconds.
    static LATE: &'static AtomicU64 = Box::leak(Box::new(AtomicU64::new(0)));
}

/// How often a worker's event-loop delay is measured.
const PROBE: Duration = Duration::from_millis(10);

/// Measures, for ever, how late this worker's event loop runs a timer.
/// Spawned on each worker only when `server.shed_at_loop_delay` is set.
pub async fn probe_loop_delay() {
    let late = LATE.with(|l| *l);
    loop {
        let asked = Instant::now();
        tokio::time::sleep(PROBE).await;
        let over = asked.elapsed().saturating_sub(PROBE);
        late.store(over.as_micros() as u64, Relaxed);
    }
}

/// The bounds of one process, fixed at start.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bounds {
    /// Requests in flight per worker (0: no bound).
    pub max_requests: usize,
    /// Event-loop delay in microseconds at which a worker sheds (0: off).
    pub max_delay_us: u64,
}

impl Bounds {
    /// Whether a new request on this thread is to be shed.
    pub fn exceeded(&self) -> bool {
        over(self.max_requests)
            || (self.max_delay_us != 0 && LATE.with(|l| l.load(Relaxed)) >= self.max_delay_us)
    }
}

/// One request counted against its worker until dropped.
pub struct InFlight(&'static AtomicUsize);

impl InFlight {
    /// Counts a request on this thread.
    pub fn enter() -> InFlight {
        let load = LOAD.with(|l| *l);
        load.fetch_add(1, Relaxed);
        InFlight(load)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// Requests in flight on this thread now.
pub fn load() -> usize {
    LOAD.with(|l| l.load(Relaxed))
}

/// Whether a new request on this thread is over `limit` (0: no limit).
pub fn over(limit: usize) -> bool {
    limit != 0 && load() >= limit
}

/// The answer to a shed request: 503 and `Retry-After: 1`, in OpenAI's
/// envelope on AI routes.
pub fn shed(ai_route: bool) -> Response<Body> {
    // Written once: refusing must cost as little as possible.
    const AI: &[u8] = br#"{"error":{"message":"The gateway is at capacity; retry shortly","type":"server_error","param":null,"code":"overloaded"}}"#;
    const PLAIN: &[u8] = br#"{"error":{"message":"The gateway is at capacity; retry shortly","type":"gateway_error","param":null,"code":"overloaded"}}"#;
    let body = bytes::Bytes::from_static(if ai_route { AI } else { PLAIN });
    let mut resp = json_response(StatusCode::SERVICE_UNAVAILABLE, body);
    resp.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_counts_until_it_ends() {
        let before = load();
        let a = InFlight::enter();
        let b = InFlight::enter();
        assert_eq!(load(), before + 2);
        assert!(over(before + 2));
        assert!(!over(before + 3));
        assert!(!over(0), "0 is no limit");
        drop(a);
        // Given back on another thread too.
        std::thread::spawn(move || drop(b)).join().expect("thread");
        assert_eq!(load(), before);
    }

    #[test]
    fn a_late_event_loop_sheds_until_it_catches_up() {
        let bounds = Bounds {
            max_requests: 0,
            max_delay_us: 50_000,
        };
        let late = LATE.with(|l| *l);
        late.store(80_000, Relaxed);
        assert!(bounds.exceeded());
        late.store(1_000, Relaxed);
        assert!(!bounds.exceeded());
        assert!(!Bounds::default().exceeded(), "no bound set: never shed");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn the_probe_measures_a_blocked_loop() {
        let probe = tokio::spawn(probe_loop_delay());
        // Let the probe arm its timer, then hold the loop for 60 ms.
        tokio::task::yield_now().await;
        std::thread::sleep(Duration::from_millis(60));
        let late = LATE.with(|l| *l);
        // The timer fires on the loop's next turn: at least 40 ms late.
        for _ in 0..100 {
            tokio::task::yield_now().await;
            if late.load(Relaxed) >= 40_000 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(late.load(Relaxed) >= 40_000, "{}", late.load(Relaxed));
        probe.abort();
    }

    #[test]
    fn shed_answers_are_503_with_retry_after() {
        for ai in [true, false] {
            let r = shed(ai);
            assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(r.headers()[RETRY_AFTER], "1");
        }
    }
}

//! Load shedding: a bound on the requests each worker serves at once.
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
//! Each worker thread counts its own requests, with no shared cache line;
//! a request's count is held by its [`Exchange`](crate::exchange::Exchange)
//! and given back when it ends, on whichever thread that is.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use http::header::{HeaderValue, RETRY_AFTER};
use http::{Response, StatusCode};

use crate::body::{Body, json_response};

thread_local! {
    /// This thread's requests in flight. Leaked once per thread so that a
    /// request holds a plain reference: worker threads live as long as the
    /// process.
    static LOAD: &'static AtomicUsize = Box::leak(Box::new(AtomicUsize::new(0)));
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
    let message = "The gateway is at capacity; retry shortly";
    let body = if ai_route {
        serde_json::json!({"error": {"message": message, "type": "server_error",
            "param": null, "code": "overloaded"}})
    } else {
        serde_json::json!({"error": {"message": message, "type": "gateway_error",
            "param": null, "code": "overloaded"}})
    };
    let mut resp = json_response(
        StatusCode::SERVICE_UNAVAILABLE,
        serde_json::to_vec(&body).unwrap_or_default(),
    );
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
    fn shed_answers_are_503_with_retry_after() {
        for ai in [true, false] {
            let r = shed(ai);
            assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(r.headers()[RETRY_AFTER], "1");
        }
    }
}

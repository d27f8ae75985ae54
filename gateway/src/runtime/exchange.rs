//! What the gateway knows about one request while serving it, and the access
//! log line and HTTP metrics written when it ends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;

use crate::admin::metrics::RouteSeries;
use crate::runtime::state::Shared;

thread_local! {
    /// The route name of a request no route matched, shared on each thread
    /// rather than allocated per request.
    static NO_ROUTE: Arc<str> = Arc::from("-");
}

/// One request in flight.
pub struct Exchange {
    pub request_id: crate::route::request_id::RequestId,
    pub route: Arc<str>,
    pub method: Method,
    pub path: String,
    pub started: Instant,
    pub status: u16,
    pub provider: Option<Arc<str>>,
    pub model: Option<Arc<str>>,
    pub tokens: Option<(u64, u64)>,
    /// Why the request failed, as a short label, when it did.
    pub error: Option<&'static str>,
    /// The matched route's metrics.
    pub route_metrics: Option<Arc<RouteSeries>>,
    /// Who the request is accounted to, once authenticated.
    pub consumer: Option<Arc<loom_accounting::Consumer>>,
    /// The run-time key the request came with (`control_plane`), for its
    /// model allow-list.
    pub key: Option<Arc<loom_control::KeyRecord>>,
    /// Where its usage is recorded, when accounting is on.
    pub account: Option<Arc<loom_accounting::Accountant>>,
    shared: Arc<Shared>,
    /// Counts the request against its worker's bound until it ends.
    _in_flight: crate::listen::overload::InFlight,
}

impl Exchange {
    /// The name of the consumer the request is accounted to.
    pub fn consumer_name(&self) -> &str {
        self.consumer
            .as_deref()
            .map_or(loom_accounting::ANONYMOUS, |c| c.name.as_str())
    }

    /// Starts tracking a request.
    pub fn new(
        shared: Arc<Shared>,
        request_id: crate::route::request_id::RequestId,
        method: Method,
        path: String,
        started: Instant,
    ) -> Exchange {
        shared.metrics.in_flight.inc();
        Exchange {
            request_id,
            route: NO_ROUTE.with(Arc::clone),
            method,
            path,
            started,
            status: 0,
            provider: None,
            model: None,
            tokens: None,
            error: None,
            route_metrics: None,
            consumer: None,
            key: None,
            account: None,
            shared,
            _in_flight: crate::listen::overload::InFlight::enter(),
        }
    }

    /// The process state.
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Time since the request arrived.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

impl Drop for Exchange {
    /// Ending an exchange (at the last byte of a stream, or when its response
    /// is handed to the connection) writes its metrics and access-log line.
    fn drop(&mut self) {
        let elapsed = self.started.elapsed();
        let m = &self.shared.metrics;
        m.in_flight.dec();
        match &self.route_metrics {
            Some(r) => r.record(&self.method, self.status, elapsed),
            None => m.unrouted_request(self.method.as_str(), self.status, elapsed),
        }
        if self.shared.access_log {
            let (tokens_in, tokens_out) = self.tokens.unwrap_or((0, 0));
            tracing::info!(
                target: "loom::access",
                request_id = %self.request_id,
                route = %self.route,
                consumer = self.consumer.as_ref().map_or("-", |c| c.name.as_str()),
                method = %self.method,
                path = %self.path,
                status = self.status,
                duration_ms = elapsed.as_secs_f64() * 1000.0,
                provider = self.provider.as_deref().unwrap_or("-"),
                model = self.model.as_deref().unwrap_or("-"),
                tokens_in,
                tokens_out,
                error = self.error.unwrap_or("-"),
            );
        }
    }
}

//! Counts requests across every worker thread in shared data (updated with
//! compare-and-swap), exports a counter metric (`/metrics`), and tells the
//! client the count and the path it asked for (read as a property).
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, MetricType, Status};

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { metric: 0 }) });
}}

const KEY: &str = "requests";

struct Root {
    metric: u32,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_vm_start(&mut self, _: usize) -> bool {
        match hostcalls::define_metric(MetricType::Counter, "requests_seen") {
            Ok(id) => {
                self.metric = id;
                true
            }
            Err(_) => false,
        }
    }
    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Counter { metric: self.metric, count: 0 }))
    }
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Counter {
    metric: u32,
    count: u64,
}

impl Counter {
    /// Adds one to the shared count, retrying when another thread won.
    fn bump(&self) -> u64 {
        loop {
            let (value, cas) = self.get_shared_data(KEY);
            let n = value
                .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
                .map_or(0, u64::from_le_bytes)
                + 1;
            match self.set_shared_data(KEY, Some(&n.to_le_bytes()), cas) {
                Ok(()) => return n,
                Err(Status::CasMismatch) => continue,
                Err(_) => return 0,
            }
        }
    }
}

impl Context for Counter {}

impl HttpContext for Counter {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        self.count = self.bump();
        hostcalls::increment_metric(self.metric, 1).ok();
        Action::Continue
    }
    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        self.set_http_response_header("x-request-count", Some(&self.count.to_string()));
        if let Some(path) = self.get_property(vec!["request", "path"]) {
            self.set_http_response_header("x-seen-path", Some(&String::from_utf8_lossy(&path)));
        }
        Action::Continue
    }
}

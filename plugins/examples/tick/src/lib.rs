//! Work on a timer: the root context asks for a tick every `period_ms`
//! (default 50) and counts the ticks in shared data; every response tells
//! the client how many ticks have happened so far.
use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, Status};

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
}}

const KEY: &str = "ticks";

fn read(ctx: &dyn Context) -> (u64, Option<u32>) {
    let (value, cas) = ctx.get_shared_data(KEY);
    let n = value
        .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
        .map_or(0, u64::from_le_bytes);
    (n, cas)
}

struct Root;

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        let period = self
            .get_plugin_configuration()
            .and_then(|raw| serde_json::from_slice::<serde_json::Value>(&raw).ok())
            .and_then(|v| v.get("period_ms").and_then(|p| p.as_u64()))
            .unwrap_or(50);
        self.set_tick_period(Duration::from_millis(period));
        true
    }
    fn on_tick(&mut self) {
        loop {
            let (n, cas) = read(self);
            match self.set_shared_data(KEY, Some(&(n + 1).to_le_bytes()), cas) {
                Err(Status::CasMismatch) => continue,
                _ => return,
            }
        }
    }
    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Ticks))
    }
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Ticks;

impl Context for Ticks {}

impl HttpContext for Ticks {
    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        let (n, _) = read(self);
        self.set_http_response_header("x-ticks", Some(&n.to_string()));
        Action::Continue
    }
}

//! A filter that misbehaves on request, for the host's isolation tests:
//! header `x-fault: trap` panics (a trap), `loop` never returns (stopped by
//! the CPU limit), `hog` allocates until it passes the memory limit. Any
//! other request passes untouched.
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root) });
}}

struct Root;

impl Context for Root {}

impl RootContext for Root {
    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Faulty))
    }
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Faulty;

impl Context for Faulty {}

impl HttpContext for Faulty {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        match self.get_http_request_header("x-fault").as_deref() {
            Some("trap") => panic!("faulty: asked to trap"),
            Some("loop") => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            Some("hog") => {
                let mut kept: Vec<Vec<u8>> = Vec::new();
                loop {
                    kept.push(vec![1u8; 16 << 20]);
                    std::hint::black_box(&kept);
                }
            }
            _ => {
                self.set_http_request_header("x-faulty", Some("passed"));
                Action::Continue
            }
        }
    }
}

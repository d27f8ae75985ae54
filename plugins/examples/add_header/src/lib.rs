//! Adds headers to the request (seen by the upstream or the provider) and to
//! the response (seen by the client).
//!
//! Configuration: `{"request": {"name": "value", ...}, "response": {...}}`.
use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root { headers: Rc::new(Headers::default()) })
    });
}}

#[derive(Default)]
struct Headers {
    request: Vec<(String, String)>,
    response: Vec<(String, String)>,
}

struct Root {
    headers: Rc<Headers>,
}

fn pairs(v: Option<&serde_json::Value>) -> Vec<(String, String)> {
    v.and_then(|v| v.as_object())
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
                .collect()
        })
        .unwrap_or_default()
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        let Some(raw) = self.get_plugin_configuration() else {
            return true;
        };
        let Ok(cfg) = serde_json::from_slice::<serde_json::Value>(&raw) else {
            proxy_wasm::hostcalls::log(LogLevel::Error, "add_header: configuration is not JSON").ok();
            return false;
        };
        self.headers = Rc::new(Headers {
            request: pairs(cfg.get("request")),
            response: pairs(cfg.get("response")),
        });
        true
    }
    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(AddHeader { headers: self.headers.clone() }))
    }
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct AddHeader {
    headers: Rc<Headers>,
}

impl Context for AddHeader {}

impl HttpContext for AddHeader {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        for (k, v) in &self.headers.request {
            self.set_http_request_header(k, Some(v));
        }
        Action::Continue
    }
    fn on_http_response_headers(&mut self, _: usize, _: bool) -> Action {
        for (k, v) in &self.headers.response {
            self.set_http_response_header(k, Some(v));
        }
        Action::Continue
    }
}

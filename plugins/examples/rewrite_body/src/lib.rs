//! Rewrites JSON bodies: sets top-level fields of the request (an OpenAI
//! chat request on an AI route: `temperature`, `max_tokens`, `user`, ...)
//! and of the response. Other content types pass untouched.
//!
//! Configuration: `{"request": {"set": {"field": value}}, "response":
//! {"set": {...}}}`.
//!
//! The body is buffered (the filter answers `Pause` until the last chunk),
//! then replaced whole; `content-length` is removed in the headers phase
//! because the new body's length is not known yet.
use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use serde_json::{Map, Value};

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root { rules: Rc::new(Rules::default()) })
    });
}}

#[derive(Default)]
struct Rules {
    request: Map<String, Value>,
    response: Map<String, Value>,
}

struct Root {
    rules: Rc<Rules>,
}

fn set_of(cfg: &Value, side: &str) -> Map<String, Value> {
    cfg.get(side)
        .and_then(|s| s.get("set"))
        .and_then(|s| s.as_object())
        .cloned()
        .unwrap_or_default()
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        let Some(raw) = self.get_plugin_configuration() else {
            return true;
        };
        let Ok(cfg) = serde_json::from_slice::<Value>(&raw) else {
            return false;
        };
        self.rules = Rc::new(Rules { request: set_of(&cfg, "request"), response: set_of(&cfg, "response") });
        true
    }
    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Rewrite { rules: self.rules.clone(), request_json: false, response_json: false }))
    }
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Rewrite {
    rules: Rc<Rules>,
    request_json: bool,
    response_json: bool,
}

fn is_json(content_type: Option<String>) -> bool {
    content_type.is_some_and(|v| v.starts_with("application/json"))
}

/// The body with `set` applied, or `None` when it is not a JSON object.
fn rewritten(body: &[u8], set: &Map<String, Value>) -> Option<Vec<u8>> {
    let mut doc: Value = serde_json::from_slice(body).ok()?;
    let obj = doc.as_object_mut()?;
    for (k, v) in set {
        obj.insert(k.clone(), v.clone());
    }
    serde_json::to_vec(&doc).ok()
}

impl Context for Rewrite {}

impl HttpContext for Rewrite {
    fn on_http_request_headers(&mut self, _: usize, end_of_stream: bool) -> Action {
        self.request_json = !end_of_stream
            && !self.rules.request.is_empty()
            && is_json(self.get_http_request_header("content-type"));
        if self.request_json {
            self.set_http_request_header("content-length", None);
        }
        Action::Continue
    }
    fn on_http_request_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        if !self.request_json {
            return Action::Continue;
        }
        if !end_of_stream {
            return Action::Pause;
        }
        let body = self.get_http_request_body(0, size).unwrap_or_default();
        match rewritten(&body, &self.rules.request) {
            Some(new) => self.set_http_request_body(0, size, &new),
            None => proxy_wasm::hostcalls::log(LogLevel::Warn, "rewrite_body: request is not a JSON object").unwrap_or(()),
        }
        Action::Continue
    }
    fn on_http_response_headers(&mut self, _: usize, end_of_stream: bool) -> Action {
        self.response_json = !end_of_stream
            && !self.rules.response.is_empty()
            && is_json(self.get_http_response_header("content-type"));
        if self.response_json {
            self.set_http_response_header("content-length", None);
        }
        Action::Continue
    }
    fn on_http_response_body(&mut self, size: usize, end_of_stream: bool) -> Action {
        if !self.response_json {
            return Action::Continue;
        }
        if !end_of_stream {
            return Action::Pause;
        }
        let body = self.get_http_response_body(0, size).unwrap_or_default();
        if let Some(new) = rewritten(&body, &self.rules.response) {
            self.set_http_response_body(0, size, &new);
        }
        Action::Continue
    }
}

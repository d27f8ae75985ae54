//! Refuses requests that carry a header (any value, or one of the listed
//! values) with a local response; the upstream never sees them.
//!
//! Configuration: `{"header": "x-block", "values": ["yes"], "status": 403,
//! "body": "blocked"}` (`values` absent: any value blocks).
use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root { rule: Rc::new(Rule::default()) })
    });
}}

struct Rule {
    header: String,
    values: Option<Vec<String>>,
    status: u32,
    body: String,
}

impl Default for Rule {
    fn default() -> Self {
        Rule { header: "x-block".into(), values: None, status: 403, body: "blocked by policy".into() }
    }
}

struct Root {
    rule: Rc<Rule>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        let Some(raw) = self.get_plugin_configuration() else {
            return true;
        };
        let Ok(cfg) = serde_json::from_slice::<serde_json::Value>(&raw) else {
            return false;
        };
        let mut rule = Rule::default();
        if let Some(h) = cfg.get("header").and_then(|v| v.as_str()) {
            rule.header = h.to_ascii_lowercase();
        }
        rule.values = cfg.get("values").and_then(|v| v.as_array()).map(|a| {
            a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect()
        });
        if let Some(s) = cfg.get("status").and_then(|v| v.as_u64()) {
            rule.status = s as u32;
        }
        if let Some(b) = cfg.get("body").and_then(|v| v.as_str()) {
            rule.body = b.to_owned();
        }
        self.rule = Rc::new(rule);
        true
    }
    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Block { rule: self.rule.clone() }))
    }
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Block {
    rule: Rc<Rule>,
}

impl Context for Block {}

impl HttpContext for Block {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let Some(value) = self.get_http_request_header(&self.rule.header) else {
            return Action::Continue;
        };
        let blocked = match &self.rule.values {
            None => true,
            Some(list) => list.iter().any(|v| *v == value),
        };
        if !blocked {
            return Action::Continue;
        }
        self.send_http_response(
            self.rule.status,
            vec![("content-type", "text/plain"), ("x-blocked-by", "block-plugin")],
            Some(self.rule.body.as_bytes()),
        );
        Action::Pause
    }
}

//! Asks an authorisation service about every request with
//! `dispatch_http_call`: the request waits (`Pause`) until the answer
//! arrives. A 200 lets it through with the service's `x-user` header copied
//! onto it; anything else (or no answer in time) is refused with 403.
//!
//! Configuration: `{"upstream": "auth", "path": "/check", "timeout_ms": 1000}`.
//! `upstream` names one of Loom's `upstreams:`. The request's
//! `authorization` header is sent along.
use std::rc::Rc;
use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root { cfg: Rc::new(Config::default()) })
    });
}}

struct Config {
    upstream: String,
    path: String,
    timeout: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config { upstream: "auth".into(), path: "/check".into(), timeout: Duration::from_secs(1) }
    }
}

struct Root {
    cfg: Rc<Config>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _: usize) -> bool {
        let Some(raw) = self.get_plugin_configuration() else {
            return true;
        };
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&raw) else {
            return false;
        };
        let mut cfg = Config::default();
        if let Some(u) = v.get("upstream").and_then(|v| v.as_str()) {
            cfg.upstream = u.into();
        }
        if let Some(p) = v.get("path").and_then(|v| v.as_str()) {
            cfg.path = p.into();
        }
        if let Some(t) = v.get("timeout_ms").and_then(|v| v.as_u64()) {
            cfg.timeout = Duration::from_millis(t);
        }
        self.cfg = Rc::new(cfg);
        true
    }
    fn create_http_context(&self, _: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Auth { cfg: self.cfg.clone() }))
    }
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Auth {
    cfg: Rc<Config>,
}

impl HttpContext for Auth {
    fn on_http_request_headers(&mut self, _: usize, _: bool) -> Action {
        let credentials = self.get_http_request_header("authorization").unwrap_or_default();
        let sent = self.dispatch_http_call(
            &self.cfg.upstream,
            vec![
                (":method", "GET"),
                (":path", &self.cfg.path),
                (":authority", &self.cfg.upstream),
                ("authorization", &credentials),
            ],
            None,
            vec![],
            self.cfg.timeout,
        );
        match sent {
            Ok(_) => Action::Pause,
            Err(status) => {
                proxy_wasm::hostcalls::log(LogLevel::Error, &format!("auth_callout: dispatch failed: {status:?}")).ok();
                self.send_http_response(503, vec![], Some(b"authorisation service unavailable"));
                Action::Pause
            }
        }
    }
}

impl Context for Auth {
    fn on_http_call_response(&mut self, _: u32, _: usize, _: usize, _: usize) {
        let status = self.get_http_call_response_header(":status");
        if status.as_deref() == Some("200") {
            if let Some(user) = self.get_http_call_response_header("x-user") {
                self.set_http_request_header("x-user", Some(&user));
            }
            self.resume_http_request();
        } else {
            let body = self.get_http_call_response_body(0, 4096).unwrap_or_default();
            self.send_http_response(403, vec![("x-auth-status", status.as_deref().unwrap_or("none"))], Some(&body));
        }
    }
}

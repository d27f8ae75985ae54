//! The host against the example filters of `plugins/examples` (their prebuilt
//! copies, or the folder `LOOM_PLUGINS` names).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

use super::*;

fn wasm(name: &str) -> std::path::PathBuf {
    let dir = std::env::var_os("LOOM_PLUGINS")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/dist"));
    dir.join(format!("{name}.wasm"))
}

fn settings(name: &str, file: &str, config: &str) -> PluginConfig {
    PluginConfig {
        name: name.into(),
        path: wasm(file),
        config: Bytes::from(config.to_owned()),
        vm_config: Bytes::new(),
        vm_id: name.into(),
        fail_open: false,
        phase: Phase::AfterAuth,
        max_memory: 32 << 20,
        max_cpu_time: Duration::from_millis(100),
        callouts: to_upstreams(HashMap::new()),
    }
}

fn chain(cfg: PluginConfig) -> Chain {
    Chain::new(vec![Plugin::load(cfg).expect("plugin loads")])
}

fn request(headers: &[(&str, &str)]) -> http::request::Parts {
    let mut b = http::Request::builder()
        .method("POST")
        .uri("/v1/chat/completions?x=1");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap().into_parts().0
}

fn info() -> StreamInfo {
    StreamInfo {
        request_id: "req-1".into(),
        route: "ai".into(),
        method: http::Method::POST,
        uri: http::Uri::from_static("/v1/chat/completions?x=1"),
        scheme: "http",
        protocol: "HTTP/1.1",
        ..StreamInfo::default()
    }
}

fn boxed(data: &'static [u8]) -> loom_http::Body {
    Full::new(Bytes::from_static(data))
        .map_err(|never| match never {})
        .boxed_unsync()
}

#[tokio::test]
async fn headers_are_added_both_ways() {
    let c = chain(settings(
        "hdr",
        "add_header",
        r#"{"request":{"x-team":"ml"},"response":{"x-plugin":"yes"}}"#,
    ));
    let s = c.start(info());
    let (parts, v) = s
        .request_headers(request(&[]), true, Phase::AfterAuth)
        .await;
    assert!(matches!(v, Verdict::Continue));
    assert_eq!(parts.headers["x-team"], "ml");
    let resp = http::Response::new(()).into_parts().0;
    let (resp, v) = s.response_headers(resp, true).await;
    assert!(matches!(v, Verdict::Continue));
    assert_eq!(resp.headers["x-plugin"], "yes");
}

#[tokio::test]
async fn a_plugin_of_the_other_phase_does_not_run() {
    let c = chain(settings(
        "hdr-phase",
        "add_header",
        r#"{"request":{"x-team":"ml"}}"#,
    ));
    let s = c.start(info());
    let (parts, _) = s
        .request_headers(request(&[]), true, Phase::BeforeAuth)
        .await;
    assert!(!parts.headers.contains_key("x-team"));
}

#[tokio::test]
async fn a_local_response_replaces_the_upstream() {
    let c = chain(settings(
        "block",
        "block",
        r#"{"header":"x-block","status":451,"body":"no"}"#,
    ));
    let (_, v) = c
        .start(info())
        .request_headers(request(&[("x-block", "1")]), true, Phase::AfterAuth)
        .await;
    match v {
        Verdict::Local(l) => {
            assert_eq!(l.status, 451);
            assert_eq!(l.body, "no");
            assert_eq!(l.headers["x-blocked-by"], "block-plugin");
        }
        other => panic!("expected a local response, got {other:?}"),
    }
    let (_, v) = c
        .start(info())
        .request_headers(request(&[]), true, Phase::AfterAuth)
        .await;
    assert!(matches!(v, Verdict::Continue));
}

#[tokio::test]
async fn a_trap_fails_the_request_and_the_instance_is_replaced() {
    let c = chain(settings("faulty-trap", "faulty", ""));
    let (_, v) = c
        .start(info())
        .request_headers(request(&[("x-fault", "trap")]), true, Phase::AfterAuth)
        .await;
    assert!(matches!(v, Verdict::Failed { ref plugin } if plugin == "faulty-trap"));
    let (parts, v) = c
        .start(info())
        .request_headers(request(&[]), true, Phase::AfterAuth)
        .await;
    assert!(matches!(v, Verdict::Continue));
    assert_eq!(parts.headers["x-faulty"], "passed");
}

#[tokio::test]
async fn an_endless_loop_is_stopped_by_the_cpu_budget() {
    let mut cfg = settings("faulty-loop", "faulty", "");
    cfg.max_cpu_time = Duration::from_millis(50);
    let c = chain(cfg);
    let started = Instant::now();
    let (_, v) = c
        .start(info())
        .request_headers(request(&[("x-fault", "loop")]), true, Phase::AfterAuth)
        .await;
    assert!(matches!(v, Verdict::Failed { .. }));
    // Stopped at the budget, give or take the epoch's granularity.
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn fail_open_skips_a_failing_plugin() {
    let mut cfg = settings("faulty-open", "faulty", "");
    cfg.fail_open = true;
    cfg.max_memory = 4 << 20;
    let c = chain(cfg);
    let (parts, v) = c
        .start(info())
        .request_headers(request(&[("x-fault", "hog")]), true, Phase::AfterAuth)
        .await;
    assert!(matches!(v, Verdict::Continue));
    assert!(!parts.headers.contains_key("x-faulty"));
}

#[tokio::test]
async fn a_json_body_is_rewritten_as_it_streams() {
    let c = chain(settings(
        "rewrite",
        "rewrite_body",
        r#"{"request":{"set":{"temperature":0}}}"#,
    ));
    let s = c.start(info());
    let req = request(&[
        ("content-type", "application/json"),
        ("content-length", "30"),
    ]);
    let (parts, _) = s.request_headers(req, false, Phase::AfterAuth).await;
    assert!(!parts.headers.contains_key("content-length"));
    let body = s.request_body(boxed(br#"{"model":"m","temperature":1.5}"#));
    let out = body.collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v, serde_json::json!({"model": "m", "temperature": 0}));
}

#[tokio::test]
async fn properties_describe_the_request() {
    let c = chain(settings("count-props", "counter", ""));
    let s = c.start(info());
    let (_, _) = s
        .request_headers(request(&[]), true, Phase::AfterAuth)
        .await;
    let resp = http::Response::new(()).into_parts().0;
    let (resp, _) = s.response_headers(resp, true).await;
    assert_eq!(resp.headers["x-seen-path"], "/v1/chat/completions?x=1");
    assert_eq!(resp.headers["x-request-count"], "1");
}

#[test]
fn a_filter_that_refuses_its_configuration_is_a_load_error() {
    let e = Plugin::load(settings("hdr-bad", "add_header", "not json")).unwrap_err();
    assert!(e.to_string().contains("refused its configuration"), "{e}");
}

#[test]
fn unknown_imports_are_named_at_load() {
    // A module importing env.proxy_mystery_call, with the ABI marker.
    let mut m = b"\0asm\x01\0\0\0".to_vec();
    let sections: [(u8, &[u8]); 6] = [
        (1, b"\x01\x60\x00\x00"),
        (2, b"\x01\x03env\x12proxy_mystery_call\x00\x00"),
        (3, b"\x01\x00"),
        (5, b"\x01\x00\x01"),
        (
            7,
            b"\x02\x17proxy_abi_version_0_2_1\x00\x01\x06memory\x02\x00",
        ),
        (10, b"\x01\x02\x00\x0b"),
    ];
    for (id, body) in sections {
        m.push(id);
        m.push(body.len() as u8);
        m.extend_from_slice(body);
    }
    let dir = std::env::temp_dir().join(format!("loom-wasm-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("mystery.wasm");
    std::fs::write(&path, &m).unwrap();
    let mut cfg = settings("mystery", "noop", "");
    cfg.path = path;
    let e = Plugin::load(cfg).unwrap_err();
    assert!(e.to_string().contains("env.proxy_mystery_call"), "{e}");
    std::fs::remove_dir_all(dir).ok();
}

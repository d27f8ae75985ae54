//! Per-request cost of the Proxy-Wasm host: a whole pass of one request
//! through a route's plugins (stream context created, request headers,
//! response headers, done/log/delete), for a filter that does nothing and
//! for one that adds a header each way.
//!
//! `cargo bench -p loom-proxy --bench plugins`

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use loom_plugins::{Chain, Phase, Plugin, PluginConfig, StreamInfo, to_upstreams};

fn chain(file: &str, config: &str) -> Chain {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("examples/dist/{file}.wasm"));
    let plugin = Plugin::load(PluginConfig {
        name: file.into(),
        path,
        config: Bytes::from(config.to_owned()),
        vm_config: Bytes::new(),
        vm_id: file.into(),
        fail_open: false,
        phase: Phase::AfterAuth,
        max_memory: 32 << 20,
        max_cpu_time: Duration::from_millis(100),
        callouts: to_upstreams(HashMap::new()),
    })
    .expect("plugin loads");
    Chain::new(vec![plugin])
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let info = StreamInfo {
        request_id: "0123456789abcdef0123".into(),
        route: "app".into(),
        method: http::Method::GET,
        uri: http::Uri::from_static("/echo"),
        scheme: "http",
        protocol: "HTTP/1.1",
        ..StreamInfo::default()
    };
    let head = || {
        http::Request::builder()
            .uri("/echo")
            .header("host", "example.com")
            .header("user-agent", "wrk")
            .header("accept", "*/*")
            .body(())
            .expect("request")
            .into_parts()
            .0
    };
    let response = || {
        http::Response::builder()
            .header("content-type", "text/plain")
            .header("content-length", "2")
            .body(())
            .expect("response")
            .into_parts()
            .0
    };
    for (name, chain) in [
        ("noop", chain("noop", "")),
        (
            "add_header",
            chain(
                "add_header",
                r#"{"request":{"x-team":"ml"},"response":{"x-plugin":"add-header"}}"#,
            ),
        ),
    ] {
        c.bench_function(&format!("plugin request/{name}"), |b| {
            b.iter(|| {
                rt.block_on(async {
                    let s = chain.start(info.clone());
                    let (req, _) = s.request_headers(head(), true, Phase::AfterAuth).await;
                    let (resp, _) = s.response_headers(response(), true).await;
                    (req, resp)
                })
            })
        });
    }
    c.bench_function("plugin request/baseline (heads only)", |b| {
        b.iter(|| (head(), response(), info.clone()))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

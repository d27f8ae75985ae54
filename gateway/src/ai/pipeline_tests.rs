//! The AI flow driven in process: requests go through `pipeline::handle`
//! (the function every listener calls) with a runtime built from YAML, to
//! fake providers on loopback that speak HTTP/1.1 and OpenAI's or
//! Anthropic's wire format. These pin the order of the flow's stages and
//! each ingress's shapes; the Python end-to-end tests drive the binary
//! with the official SDKs.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use loom_http::ClientInfo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::runtime::body::Body;
use crate::runtime::state::Shared;

/// What a fake provider answers.
#[derive(Clone)]
enum Script {
    /// A whole answer.
    Whole(u16, &'static str),
    /// An event stream: these events, then the end of the body, or a cut
    /// connection (`cut`) without the final chunk.
    Stream(Vec<String>, bool),
}

/// A provider on loopback: answers every request by `script(path, body)`
/// and records what it was asked.
struct Fake {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<(String, serde_json::Value)>>>,
    /// Connections accepted (requests on one connection are kept alive).
    connections: Arc<std::sync::atomic::AtomicUsize>,
}

impl Fake {
    async fn start(
        script: impl Fn(&str, &serde_json::Value) -> Script + Send + Sync + 'static,
    ) -> Fake {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (script, log, count) = (Arc::new(script), seen.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let (script, log) = (script.clone(), log.clone());
                tokio::spawn(async move {
                    while let Some((path, body)) = read_request(&mut conn).await {
                        let json: serde_json::Value =
                            serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
                        let answer = script(&path, &json);
                        log.lock().expect("log").push((path, json));
                        match write_answer(&mut conn, answer).await {
                            Ok(true) => continue,
                            _ => break,
                        }
                    }
                });
            }
        });
        Fake {
            addr,
            seen,
            connections,
        }
    }

    fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    fn requests(&self) -> usize {
        self.seen.lock().expect("log").len()
    }
}

/// Reads one request: its path and its body (by `content-length`).
async fn read_request(conn: &mut tokio::net::TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let path = head.split_whitespace().nth(1)?.to_owned();
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    while buf.len() < head_end + length {
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some((path, buf[head_end..head_end + length].to_vec()))
}

/// Writes one answer; true when the connection stays open for the next.
async fn write_answer(conn: &mut tokio::net::TcpStream, answer: Script) -> std::io::Result<bool> {
    match answer {
        Script::Whole(status, body) => {
            let head = format!(
                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                body.len()
            );
            conn.write_all(head.as_bytes()).await?;
            conn.write_all(body.as_bytes()).await?;
            Ok(true)
        }
        Script::Stream(events, cut) => {
            conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
                .await?;
            for e in events {
                conn.write_all(format!("{:x}\r\n{e}\r\n", e.len()).as_bytes())
                    .await?;
                conn.flush().await?;
            }
            if cut {
                conn.shutdown().await?;
                return Ok(false);
            }
            conn.write_all(b"0\r\n\r\n").await?;
            Ok(true)
        }
    }
}

/// A gateway built from `yaml` (listeners are not bound: requests are
/// handed to the pipeline directly).
fn gateway(yaml: &str) -> Arc<Shared> {
    let config = loom_config::check_str(yaml, "test.yaml")
        .expect("config")
        .config;
    let (shared, _inboxes) = Shared::build(config, 0, 1, None).expect("gateway");
    shared
}

async fn send(shared: &Arc<Shared>, path: &str, body: serde_json::Value) -> Response<Body> {
    let req = Request::post(path)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("request");
    let client = ClientInfo::new("127.0.0.1:50000".parse().expect("addr"), "http");
    match crate::route::pipeline::handle(shared.clone(), client, req).await {
        Ok(resp) => resp,
        Err(never) => match never {},
    }
}

async fn text(resp: Response<Body>) -> String {
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn header<'a>(resp: &'a Response<Body>, name: &str) -> &'a str {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

const CHAT: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":1,"total_tokens":10}}"#;

fn config(providers: &str, extra: &str) -> String {
    format!(
        r#"
listeners: [{{name: http, address: "127.0.0.1:0", protocol: http}}]
routes:
  - {{id: ai, path: /v1/*, ai_gateway: true}}
  - {{id: open, path: /open/v1/*, ai_gateway: true, security: {{pii_detection: {{enabled: false}}}}}}
ai_gateway:
  enabled: true
  providers:
{providers}
{extra}
"#
    )
}

fn chat(model: &str, text: &str, stream: bool) -> serde_json::Value {
    serde_json::json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": text}]})
}

#[tokio::test]
async fn failover_tries_the_plan_in_order_and_names_who_answered() {
    let down = Fake::start(|_, _| Script::Whole(503, r#"{"error":{"message":"busy"}}"#)).await;
    let up = Fake::start(|_, _| Script::Whole(200, CHAT)).await;
    let providers = format!(
        "    - {{name: first, type: openai_compatible, base_url: \"{}\", models: [m], priority: 1}}\n    - {{name: second, type: openai_compatible, base_url: \"{}\", models: [m], priority: 2}}",
        down.url(),
        up.url()
    );
    let g = gateway(&config(
        &providers,
        "  routing:\n    failover: {enabled: true, attempts: 3}",
    ));
    let resp = send(&g, "/v1/chat/completions", chat("m", "hi", false)).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "x-loom-provider"), "second");
    assert_eq!(header(&resp, "x-loom-attempts"), "2");
    assert!(text(resp).await.contains("hello"));
    assert_eq!((down.requests(), up.requests()), (1, 1));
}

#[tokio::test]
async fn guardrails_run_before_the_cache() {
    let up = Fake::start(|path, _| {
        if path.ends_with("/embeddings") {
            Script::Whole(
                200,
                r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1,0.2,0.3]}],"model":"e","usage":{"prompt_tokens":1,"total_tokens":1}}"#,
            )
        } else {
            Script::Whole(200, CHAT)
        }
    })
    .await;
    let providers = format!(
        "    - {{name: p, type: openai_compatible, base_url: \"{}\", models: [m, e]}}",
        up.url()
    );
    let g = gateway(&config(
        &providers,
        "  security:\n    pii_detection: {enabled: true, action: block, types: [email]}\n  semantic_cache:\n    enabled: true\n    scope: global\n    embedding: {provider: p, model: e}",
    ));
    let asked = chat("m", "write to ana@example.com", false);
    // The open route caches the answer; the same request on the guarded
    // route is refused, not answered from the cache.
    let first = send(&g, "/open/v1/chat/completions", asked.clone()).await;
    assert_eq!(first.status(), StatusCode::OK);
    let again = send(&g, "/open/v1/chat/completions", asked.clone()).await;
    assert_eq!(header(&again, "x-loom-cache"), "hit");
    let guarded = send(&g, "/v1/chat/completions", asked).await;
    assert_eq!(guarded.status(), StatusCode::BAD_REQUEST);
    assert!(text(guarded).await.contains("pii_detected"));
}

/// Events of an OpenAI stream: text, then a tool call's arguments, no
/// finish (the stream is cut).
fn cut_openai_events() -> Vec<String> {
    let head = r#""id":"c","object":"chat.completion.chunk","created":1,"model":"m""#;
    vec![
        format!(
            "data: {{{head},\"choices\":[{{\"index\":0,\"delta\":{{\"role\":\"assistant\",\"content\":\"The weather in Lisbon is mild\"}},\"finish_reason\":null}}]}}\n\n"
        ),
        format!(
            "data: {{{head},\"choices\":[{{\"index\":0,\"delta\":{{\"tool_calls\":[{{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{{\"name\":\"lookup\",\"arguments\":\"{{\\\"city\\\": \\\"Lisbon\\\", \\\"month\\\": \\\"May\\\", \\\"units\\\": \\\"metric\\\"}}\"}}}}]}},\"finish_reason\":null}}]}}\n\n"
        ),
    ]
}

/// The completion tokens recorded for provider `p`.
fn completion_tokens(g: &Arc<Shared>) -> u64 {
    let text = g.metrics.render();
    text.lines()
        .find(|l| l.starts_with(r#"loom_ai_tokens_total{provider="p",type="completion"}"#))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

/// A stream cut before its usage is settled with an estimate that counts
/// text and tool-call arguments, the same whatever format the client spoke.
#[tokio::test]
async fn cut_streams_are_estimated_alike_for_every_ingress() {
    let mut estimates = Vec::new();
    for (path, body) in [
        ("/v1/chat/completions", chat("m", "weather?", true)),
        (
            "/v1/messages",
            serde_json::json!({"model": "m", "max_tokens": 100, "stream": true,
                "messages": [{"role": "user", "content": "weather?"}]}),
        ),
    ] {
        let up = Fake::start(|_, _| Script::Stream(cut_openai_events(), true)).await;
        let providers = format!(
            "    - {{name: p, type: openai_compatible, base_url: \"{}\", models: [m]}}",
            up.url()
        );
        let g = gateway(&config(&providers, ""));
        let resp = send(&g, path, body).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let events = text(resp).await;
        assert!(
            events.contains("error"),
            "{path}: the cut is reported: {events}"
        );
        estimates.push(completion_tokens(&g));
    }
    assert_eq!(
        estimates[0], estimates[1],
        "chat and messages estimate alike"
    );
    let text_only = loom_accounting::tokens::count("m", "The weather in Lisbon is mild");
    assert!(
        estimates[0] > text_only,
        "tool-call arguments are counted: {estimates:?} vs {text_only}"
    );
}

/// Each ingress answers errors in its own format, from the first stage
/// (parsing) to the last (every attempt failed).
#[tokio::test]
async fn each_ingress_errors_in_its_own_shape() {
    let down = Fake::start(|_, _| Script::Whole(500, r#"{"error":{"message":"boom"}}"#)).await;
    let providers = format!(
        "    - {{name: p, type: openai_compatible, base_url: \"{}\", models: [m]}}",
        down.url()
    );
    let g = gateway(&config(&providers, ""));
    let messages = |model: &str| serde_json::json!({"model": model, "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]});
    let cases = [
        ("/v1/chat/completions", chat("nope", "x", false), 404),
        (
            "/v1/chat/completions",
            serde_json::json!({"model": "m"}),
            400,
        ),
        ("/v1/chat/completions", chat("m", "x", false), 502),
        ("/v1/messages", messages("nope"), 404),
        ("/v1/messages", serde_json::json!({"model": "m"}), 400),
        ("/v1/messages", messages("m"), 502),
        (
            "/v1/completions",
            serde_json::json!({"model": "nope", "prompt": "x"}),
            404,
        ),
        (
            "/v1/embeddings",
            serde_json::json!({"model": "nope", "input": "x"}),
            404,
        ),
    ];
    for (path, body, status) in cases {
        let resp = send(&g, path, body).await;
        assert_eq!(resp.status().as_u16(), status, "{path}");
        let v: serde_json::Value = serde_json::from_str(&text(resp).await).expect("JSON error");
        if path == "/v1/messages" {
            assert_eq!(v["type"], "error", "{path}: {v}");
            assert!(v["error"]["type"].is_string(), "{path}: {v}");
        } else {
            assert!(v["error"]["message"].is_string(), "{path}: {v}");
            assert!(v.get("type").is_none(), "{path}: {v}");
        }
    }
}

/// An OpenAI-format stream to an OpenAI-format client is relayed as the
/// provider's bytes; the usage chunk the client did not ask for is removed.
#[tokio::test]
async fn plain_streams_pass_through_as_sent() {
    let first = "data: {\"id\": \"c\", \"object\": \"chat.completion.chunk\", \"created\": 1, \"model\": \"m\", \"choices\": [{\"index\": 0, \"delta\": {\"content\": \"hi\"}, \"finish_reason\": \"stop\"}], \"x_vendor\": 1}\n\n";
    let usage = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1,\"total_tokens\":4}}\n\n";
    let events = vec![
        first.to_owned(),
        usage.to_owned(),
        "data: [DONE]\n\n".to_owned(),
    ];
    let up = Fake::start(move |_, _| Script::Stream(events.clone(), false)).await;
    let providers = format!(
        "    - {{name: p, type: openai_compatible, base_url: \"{}\", models: [m]}}",
        up.url()
    );
    let g = gateway(&config(&providers, ""));
    let resp = send(&g, "/v1/chat/completions", chat("m", "x", true)).await;
    assert_eq!(text(resp).await, format!("{first}data: [DONE]\n\n"));
    assert_eq!(
        completion_tokens(&g),
        1,
        "the provider's usage is what counts"
    );
}

/// A finished stream gives its upstream connection back: the next stream
/// reuses it (a new connection per stream is a TLS handshake per answer
/// with a real provider).
#[tokio::test]
async fn finished_streams_keep_their_upstream_connection() {
    let first = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"},\"finish_reason\":\"stop\"}]}\n\n";
    // `/v1` checks answers (its events are parsed); `/open/v1` passes them
    // through as bytes.
    for path in ["/v1/chat/completions", "/open/v1/chat/completions"] {
        let events = vec![first.to_owned(), "data: [DONE]\n\n".to_owned()];
        let up = Fake::start(move |_, _| Script::Stream(events.clone(), false)).await;
        let providers = format!(
            "    - {{name: p, type: openai_compatible, base_url: \"{}\", models: [m]}}",
            up.url()
        );
        let g = gateway(&config(
            &providers,
            "  security:\n    pii_detection: {enabled: true, action: mask}",
        ));
        for body in [
            chat("m", "x", true),
            chat("m", "y", true),
            chat("m", "z", true),
        ] {
            let resp = send(&g, path, body).await;
            assert!(text(resp).await.ends_with("data: [DONE]\n\n"), "{path}");
        }
        assert_eq!(up.requests(), 3, "{path}");
        let connections = up.connections.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(connections, 1, "{path}");
    }
}

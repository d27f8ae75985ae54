//! A fast fake upstream for benchmarks: answers `POST /v1/chat/completions`
//! with a recorded OpenAI response and every other request with a small body,
//! so that it costs far less CPU than the gateway in front of it.
//!
//! Usage: `loom-bench-upstream PORT [FAIL_EVERY [DELAY_MS]]`: with
//! `FAIL_EVERY` = N (0: never), every Nth chat completion answers 503 (a
//! flaky provider for failover benchmarks); with `DELAY_MS`, every chat
//! completion answers that much later (a provider's generation time, for
//! the cache benchmark).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const CHAT: &[u8] = include_bytes!("../../../tests/e2e/fixtures/openai_chat.json");
const PLAIN: &[u8] = b"{\"ok\":true,\"service\":\"bench-upstream\"}";
const OVERLOADED: &[u8] = include_bytes!("../../../tests/e2e/fixtures/openai_error_500.json");

static CALLS: AtomicU64 = AtomicU64::new(0);
static FAIL_EVERY: AtomicU64 = AtomicU64::new(0);
static DELAY_MS: AtomicU64 = AtomicU64::new(0);

async fn answer(req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let chat = req.uri().path().ends_with("/chat/completions");
    let every = FAIL_EVERY.load(Ordering::Relaxed);
    let fail = chat && every > 0 && CALLS.fetch_add(1, Ordering::Relaxed) % every == every - 1;
    let delay = DELAY_MS.load(Ordering::Relaxed);
    if chat && delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    let body = match (chat, fail) {
        (_, true) => OVERLOADED,
        (true, false) => CHAT,
        (false, _) => PLAIN,
    };
    let mut resp = Response::new(Full::new(Bytes::from_static(body)));
    if fail {
        *resp.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
    }
    resp.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(18000);
    let every = std::env::args()
        .nth(2)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    FAIL_EVERY.store(every, Ordering::Relaxed);
    let delay = std::env::args()
        .nth(3)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    DELAY_MS.store(delay, Ordering::Relaxed);
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service_fn(answer))
                .await;
        });
    }
}

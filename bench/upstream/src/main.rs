//! A fast fake upstream for benchmarks: answers `POST /v1/chat/completions`
//! with a recorded OpenAI response and every other request with a small body,
//! so that it costs far less CPU than the gateway in front of it.
//!
//! Usage: `loom-bench-upstream PORT [FAIL_EVERY [DELAY_MS [DRIP_MS [EVENTS]]]]`:
//! with `FAIL_EVERY` = N (0: never), every Nth chat completion answers 503
//! (a flaky provider for failover benchmarks); with `DELAY_MS`, every chat
//! completion answers that much later (a provider's generation time, for
//! the cache benchmark). A chat completion asking for `"stream":true` is
//! answered with `EVENTS` (default 24) content chunks, a usage chunk and
//! `[DONE]`, in OpenAI's SSE format: all at once, or one chunk every
//! `DRIP_MS` (a slow stream, for the open-streams benchmark).

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
static DRIP_MS: AtomicU64 = AtomicU64::new(0);
static EVENTS: AtomicU64 = AtomicU64::new(24);

const CHUNK: &[u8] = b"data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1715367049,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"word \"},\"finish_reason\":null}]}\n\n";
const LAST: &[u8] = b"data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1715367049,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1715367049,\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":24,\"total_tokens\":36}}\n\ndata: [DONE]\n\n";

/// A streamed answer: `left` content chunks, then the closing events; one
/// chunk per tick of `tick`, or everything in one frame without it.
struct Stream {
    left: u64,
    tick: Option<tokio::time::Interval>,
    done: bool,
}

impl hyper::body::Body for Stream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        use std::task::Poll;
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        let Some(tick) = this.tick.as_mut() else {
            let mut all = Vec::with_capacity(CHUNK.len() * this.left as usize + LAST.len());
            for _ in 0..this.left {
                all.extend_from_slice(CHUNK);
            }
            all.extend_from_slice(LAST);
            this.done = true;
            return Poll::Ready(Some(Ok(hyper::body::Frame::data(Bytes::from(all)))));
        };
        if tick.poll_tick(cx).is_pending() {
            return Poll::Pending;
        }
        if this.left == 0 {
            this.done = true;
            return Poll::Ready(Some(Ok(hyper::body::Frame::data(Bytes::from_static(LAST)))));
        }
        this.left -= 1;
        Poll::Ready(Some(Ok(hyper::body::Frame::data(Bytes::from_static(
            CHUNK,
        )))))
    }
}

type Answer = http_body_util::Either<Full<Bytes>, Stream>;

async fn answer(req: Request<hyper::body::Incoming>) -> Result<Response<Answer>, Infallible> {
    use http_body_util::BodyExt;
    let chat = req.uri().path().ends_with("/chat/completions");
    // Only a chat completion's body is read: it may ask for a stream.
    let body = if chat {
        req.into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default()
    } else {
        Bytes::new()
    };
    let streamed = chat && body.windows(13).any(|w| w == b"\"stream\":true");
    let every = FAIL_EVERY.load(Ordering::Relaxed);
    let fail = chat && every > 0 && CALLS.fetch_add(1, Ordering::Relaxed) % every == every - 1;
    let delay = DELAY_MS.load(Ordering::Relaxed);
    if chat && delay > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    }
    if streamed && !fail {
        let drip = DRIP_MS.load(Ordering::Relaxed);
        let tick = (drip > 0).then(|| {
            let mut i = tokio::time::interval(std::time::Duration::from_millis(drip));
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });
        let mut resp = Response::new(http_body_util::Either::Right(Stream {
            left: EVENTS.load(Ordering::Relaxed),
            tick,
            done: false,
        }));
        resp.headers_mut().insert(
            "content-type",
            hyper::header::HeaderValue::from_static("text/event-stream"),
        );
        return Ok(resp);
    }
    let body = match (chat, fail) {
        (_, true) => OVERLOADED,
        (true, false) => CHAT,
        (false, _) => PLAIN,
    };
    let mut resp = Response::new(http_body_util::Either::Left(Full::new(Bytes::from_static(
        body,
    ))));
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
    let arg = |i: usize| std::env::args().nth(i).and_then(|n| n.parse::<u64>().ok());
    DRIP_MS.store(arg(4).unwrap_or(0), Ordering::Relaxed);
    EVENTS.store(arg(5).unwrap_or(24), Ordering::Relaxed);
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

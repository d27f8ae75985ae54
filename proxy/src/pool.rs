//! Keep-alive connections to upstreams, kept per thread, shared by the
//! reverse proxy and the LLM providers.
//!
//! Written here rather than taken from hyper-util's pooled client (which
//! Loom used before, and which this replaces on the hot path): for every
//! HTTP/1.1 response with a body, that client spawns a task that waits
//! for the connection to be ready again before putting it back in its
//! pool, and every checkout locks the shared pool and hashes its key.
//! Here a connection goes back to its thread's list when the response
//! body ends: no task, no lock, no hash. Measured with `bench/proxy.sh`
//! (docs/benchmarks.md, "Own connection pool").
//!
//! A thread's lists hold connections its event loop opened, so a
//! connection's reads and writes are woken on the thread that uses it.
//! HTTP/2 connections (configured, or chosen by ALPN) are shared by every
//! request of their thread.

use std::any::Any;
use std::cell::RefCell;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{HOST, HeaderValue};
use http::uri::{Authority, PathAndQuery};
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower_service::Service;

use crate::Error;

/// How long a connection may sit unused before it is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The connector every pool dials with: TCP, then TLS for `https`.
pub type Connector = HttpsConnector<HttpConnector>;

/// Keep-alive connections to any number of origins. Cheap to clone; the
/// connections themselves live in per-thread lists.
pub struct Pool<B> {
    settings: Arc<Settings>,
    _body: PhantomData<fn(B)>,
}

impl<B> Clone for Pool<B> {
    fn clone(&self) -> Self {
        Pool {
            settings: self.settings.clone(),
            _body: PhantomData,
        }
    }
}

impl<B> std::fmt::Debug for Pool<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("id", &self.settings.id)
            .field("max_idle", &self.settings.max_idle)
            .finish_non_exhaustive()
    }
}

struct Settings {
    /// Tells this pool's lists from other pools' on a thread.
    id: usize,
    /// Idle HTTP/1.1 connections kept per origin and thread.
    max_idle: usize,
    /// Speak HTTP/2 without ALPN (cleartext h2c upstreams).
    h2_only: bool,
    connector: Connector,
}

static NEXT_ID: AtomicUsize = AtomicUsize::new(0);

/// `https` or not, and host and port.
type Origin = (bool, Authority);

/// A connection ready for a request.
enum Sender<B> {
    H1(http1::SendRequest<B>),
    H2(http2::SendRequest<B>),
}

impl<B> Sender<B> {
    fn is_closed(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }
}

struct Idle<B> {
    sender: Sender<B>,
    since: Instant,
}

impl<B> Idle<B> {
    /// Still open and not idle for too long.
    fn alive(&self, now: Instant) -> bool {
        !self.sender.is_closed() && now.duration_since(self.since) <= IDLE_TIMEOUT
    }
}

/// One pool's connections on one thread, by origin.
type Lists<B> = Vec<(Origin, Vec<Idle<B>>)>;

thread_local! {
    /// Every pool's lists on this thread, by pool id (each a `Lists<B>`).
    static LISTS: RefCell<Vec<(usize, Box<dyn Any>)>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on pool `id`'s lists on this thread, if it has any.
fn with_lists<B: 'static, R>(id: usize, f: impl FnOnce(&mut Lists<B>) -> R) -> Option<R> {
    LISTS.with(|lists| {
        let mut lists = lists.borrow_mut();
        let mine = lists
            .iter_mut()
            .find(|(i, _)| *i == id)?
            .1
            .downcast_mut::<Lists<B>>()?;
        Some(f(mine))
    })
}

impl<B> Pool<B>
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    /// A pool dialing with `connector`, keeping up to `max_idle` idle
    /// HTTP/1.1 connections per origin and thread; `h2_only` speaks
    /// HTTP/2 to every origin without waiting for ALPN to choose it.
    pub fn new(connector: Connector, max_idle: usize, h2_only: bool) -> Pool<B> {
        Pool {
            settings: Arc::new(Settings {
                id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
                max_idle,
                h2_only,
                connector,
            }),
            _body: PhantomData,
        }
    }

    /// Sends `req` (its URI absolute: scheme, authority, path) over a
    /// pooled connection, or a new one. A request that a reused connection
    /// could not take (closed under it) is sent again on a new one. The
    /// connection returns to the pool when the answer's body ends.
    pub async fn send(&self, mut req: Request<B>) -> Result<Response<PoolBody<B>>, Error> {
        let uri = req.uri().clone();
        let (https, authority) = match (uri.scheme(), uri.authority()) {
            (Some(s), Some(a)) => (*s == http::uri::Scheme::HTTPS, a.clone()),
            // (The URI itself is not repeated: it may carry a key.)
            _ => {
                return Err(Error::BadRequest(
                    "the request URI has no scheme or host".to_owned(),
                ));
            }
        };
        let origin: Origin = (https, authority);
        if !req.headers().contains_key(HOST)
            && let Ok(v) = HeaderValue::from_str(origin.1.as_str())
        {
            req.headers_mut().insert(HOST, v);
        }
        let mut fresh = false;
        loop {
            let sender = match self.checkout(&origin) {
                Some(s) => s,
                None => {
                    fresh = true;
                    // Boxed: dialing (TCP, TLS, an HTTP/2 handshake) is a
                    // future of several kilobytes that every request's
                    // future would otherwise carry, and move, for a step
                    // taken once per connection.
                    Box::pin(self.connect(&origin, &uri)).await?
                }
            };
            match sender {
                Sender::H1(mut s) => {
                    *req.version_mut() = Version::HTTP_11;
                    *req.uri_mut() = origin_form(&uri);
                    match s.try_send_request(req).await {
                        Ok(resp) => {
                            // A connection switched to another protocol
                            // (WebSocket) is the tunnel's now.
                            let back = (resp.status() != http::StatusCode::SWITCHING_PROTOCOLS)
                                .then(|| Back {
                                    sender: s,
                                    origin,
                                    settings: self.settings.clone(),
                                });
                            return Ok(resp.map(|body| PoolBody { body, back }));
                        }
                        Err(mut e) => match e.take_message() {
                            Some(r) if !fresh => req = r,
                            _ => return Err(failed(&origin, e.into_error())),
                        },
                    }
                }
                Sender::H2(mut s) => {
                    *req.version_mut() = Version::HTTP_2;
                    *req.uri_mut() = uri.clone();
                    match s.try_send_request(req).await {
                        Ok(resp) => {
                            return Ok(resp.map(|body| PoolBody { body, back: None }));
                        }
                        Err(mut e) => match e.take_message() {
                            Some(r) if !fresh => {
                                self.forget_closed(&origin);
                                req = r;
                            }
                            _ => return Err(failed(&origin, e.into_error())),
                        },
                    }
                }
            }
        }
    }

    /// A pooled connection to `origin` that can take a request now.
    fn checkout(&self, origin: &Origin) -> Option<Sender<B>> {
        with_lists::<B, _>(self.settings.id, |mine| {
            let list = &mut mine.iter_mut().find(|(o, _)| o == origin)?.1;
            let now = Instant::now();
            // Newest first: the connection most likely still open.
            let mut i = list.len();
            while i > 0 {
                i -= 1;
                let idle = &mut list[i];
                if !idle.alive(now) {
                    // The last entry (already seen) takes its place.
                    list.swap_remove(i);
                    continue;
                }
                match &idle.sender {
                    Sender::H2(s) => {
                        idle.since = now;
                        return Some(Sender::H2(s.clone()));
                    }
                    Sender::H1(s) if s.is_ready() => return Some(list.swap_remove(i).sender),
                    // Still finishing its previous exchange.
                    Sender::H1(_) => {}
                }
            }
            None
        })
        .flatten()
    }

    /// Opens a connection to `origin`; an HTTP/2 one is also shared
    /// through this thread's list right away.
    async fn connect(&self, origin: &Origin, uri: &Uri) -> Result<Sender<B>, Error> {
        let mut connector = self.settings.connector.clone();
        let target = Uri::builder()
            .scheme(uri.scheme_str().unwrap_or("http"))
            .authority(origin.1.clone())
            .path_and_query("/")
            .build()
            .map_err(|e| Error::BadRequest(e.to_string()))?;
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(|e| unreachable(origin, &*e))?;
        let io = connector
            .call(target)
            .await
            .map_err(|e| unreachable(origin, &*e))?;
        let h2 = self.settings.h2_only || io.connected().is_negotiated_h2();
        if h2 {
            let (mut sender, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await
                .map_err(|e| unreachable(origin, &e))?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "upstream connection ended");
                }
            });
            sender.ready().await.map_err(|e| unreachable(origin, &e))?;
            keep(&self.settings, origin, Sender::H2(sender.clone()));
            return Ok(Sender::H2(sender));
        }
        let (sender, conn) = http1::Builder::new()
            .handshake(io)
            .await
            .map_err(|e| unreachable(origin, &e))?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        Ok(Sender::H1(sender))
    }

    /// Drops this thread's connections to `origin` that turned out closed.
    fn forget_closed(&self, origin: &Origin) {
        with_lists::<B, _>(self.settings.id, |mine| {
            if let Some((_, list)) = mine.iter_mut().find(|(o, _)| o == origin) {
                list.retain(|idle| !idle.sender.is_closed());
            }
        });
    }
}

/// Puts a connection in the current thread's list, up to the pool's bound
/// for HTTP/1.1; the first use of a pool on a thread starts that thread's
/// sweeper, which closes connections idle for too long.
fn keep<B: 'static>(settings: &Arc<Settings>, origin: &Origin, sender: Sender<B>) {
    let id = settings.id;
    let start_sweeper = LISTS.with(|lists| {
        let mut lists = lists.borrow_mut();
        let (mine, new) = match lists.iter().position(|(i, _)| *i == id) {
            Some(at) => (&mut lists[at].1, false),
            None => {
                lists.push((id, Box::new(Lists::<B>::new())));
                let last = lists.len() - 1;
                (&mut lists[last].1, true)
            }
        };
        let Some(mine) = mine.downcast_mut::<Lists<B>>() else {
            return false;
        };
        let list = match mine.iter().position(|(o, _)| o == origin) {
            Some(at) => &mut mine[at].1,
            None => {
                mine.push((origin.clone(), Vec::new()));
                let last = mine.len() - 1;
                &mut mine[last].1
            }
        };
        let bounded = matches!(sender, Sender::H1(_));
        if !bounded || list.len() < settings.max_idle {
            list.push(Idle {
                sender,
                since: Instant::now(),
            });
        }
        new
    });
    if start_sweeper && let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn(sweep::<B>(id, Arc::downgrade(settings)));
    }
}

/// Closes this thread's connections of one pool that sat idle longer than
/// [`IDLE_TIMEOUT`], until the pool is gone. (Runs on the thread whose
/// lists it sweeps: each worker's event loop is single-threaded.)
async fn sweep<B: 'static>(id: usize, settings: Weak<Settings>) {
    let mut tick = tokio::time::interval(IDLE_TIMEOUT / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        if settings.strong_count() == 0 {
            // The pool is gone: drop its lists on this thread.
            LISTS.with(|l| l.borrow_mut().retain(|(i, _)| *i != id));
            return;
        }
        let now = Instant::now();
        with_lists::<B, _>(id, |mine| {
            for (_, list) in mine {
                list.retain(|idle| idle.alive(now));
            }
        });
    }
}

/// What puts an HTTP/1.1 connection back once its response has been read.
struct Back<B> {
    sender: http1::SendRequest<B>,
    origin: Origin,
    settings: Arc<Settings>,
}

/// A response body from a pooled connection. When it has been read to its
/// end, the connection goes back to the pool of the thread that read it;
/// dropped before its end, the connection is closed.
pub struct PoolBody<B: 'static> {
    body: Incoming,
    back: Option<Back<B>>,
}

impl<B: 'static> PoolBody<B> {
    fn release(&mut self) {
        if let Some(b) = self.back.take() {
            keep(&b.settings, &b.origin, Sender::H1(b.sender));
        }
    }
}

impl<B: 'static> Drop for PoolBody<B> {
    fn drop(&mut self) {
        if self.back.is_some() && http_body::Body::is_end_stream(&self.body) {
            self.release();
        }
    }
}

impl<B: 'static> http_body::Body for PoolBody<B> {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            self.release();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl<B: 'static> std::fmt::Debug for PoolBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolBody").finish_non_exhaustive()
    }
}

/// `/path?query` of an absolute URI: what an HTTP/1.1 request line carries.
fn origin_form(uri: &Uri) -> Uri {
    let pq = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    Uri::from(pq)
}

/// A connection that could not be made (refused, unreachable, TLS).
fn unreachable(origin: &Origin, e: &(dyn std::error::Error + 'static)) -> Error {
    Error::Connect {
        upstream: origin.1.to_string(),
        detail: root_cause(e),
    }
}

/// An exchange that failed once the connection was made.
fn failed(origin: &Origin, e: hyper::Error) -> Error {
    Error::Failed {
        upstream: origin.1.to_string(),
        detail: root_cause(&e),
    }
}

/// The innermost cause of an error chain: the useful part of a transport
/// error.
pub(crate) fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = err;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full};
    use std::sync::atomic::AtomicUsize;
    use tokio::net::TcpListener;

    /// A loopback HTTP/1.1 server that answers every request with its
    /// connection's number; `close_after` closes each connection after
    /// that many answers.
    async fn server(close_after: Option<usize>) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                let served = Arc::new(AtomicUsize::new(0));
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |_req| {
                        let count = served.fetch_add(1, Ordering::SeqCst) + 1;
                        async move {
                            let mut resp = Response::new(Full::new(Bytes::from(n.to_string())));
                            if close_after.is_some_and(|c| count >= c) {
                                resp.headers_mut()
                                    .insert(http::header::CONNECTION, "close".parse().unwrap());
                            }
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        (addr, accepted)
    }

    fn pool() -> Pool<Full<Bytes>> {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        Pool::new(connector, 4, false)
    }

    async fn get(pool: &Pool<Full<Bytes>>, addr: std::net::SocketAddr) -> String {
        let req = Request::get(format!("http://{addr}/x"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = pool.send(req).await.unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(body.to_vec()).unwrap()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn reuses_a_connection_once_its_answer_is_read() {
        let (addr, accepted) = server(None).await;
        let pool = pool();
        for _ in 0..5 {
            assert_eq!(get(&pool, addr).await, "1");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_answer_dropped_unread_does_not_return_its_connection() {
        let (addr, accepted) = server(None).await;
        let pool = pool();
        let req = Request::get(format!("http://{addr}/x"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let unread = pool.send(req).await.unwrap();
        // Its connection is busy: a second request needs another.
        assert_eq!(get(&pool, addr).await, "2");
        drop(unread);
        assert_eq!(get(&pool, addr).await, "2");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_connection_the_upstream_closed_is_replaced() {
        let (addr, accepted) = server(Some(1)).await;
        let pool = pool();
        assert_eq!(get(&pool, addr).await, "1");
        assert_eq!(get(&pool, addr).await, "2");
        assert_eq!(get(&pool, addr).await, "3");
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_refused_connection_is_a_connect_error_without_the_uri() {
        let unused = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = unused.local_addr().unwrap();
        drop(unused);
        let req = Request::get(format!("http://{addr}/x?key=secret"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        match pool().send(req).await {
            Err(Error::Connect { detail, .. }) => assert!(!detail.contains("secret"), "{detail}"),
            other => panic!("expected a connect error, got {other:?}"),
        }
    }
}

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
//! request of their thread. Plain-HTTP/1.1 requests with small bodies are
//! sent on connections driven by the request's own task (`h1`); the rest
//! on hyper's connections.

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
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::{Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tower_service::Service;

use crate::Error;
use crate::body::BoxError;
use crate::h1;

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
    /// Driven by the task of the request it carries.
    Inline(h1::Conn),
}

impl<B> Sender<B> {
    fn is_closed(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
            Sender::Inline(c) => c.is_closed(),
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
        if !https && !self.settings.h2_only && sent_whole(&req) {
            return self.send_inline(origin, uri, req).await;
        }
        let mut fresh = false;
        loop {
            let sender = match self.checkout(&origin, false) {
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
                            return Ok(resp.map(|body| PoolBody {
                                inner: Inner::Hyper { body, back },
                            }));
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
                            return Ok(resp.map(|body| PoolBody {
                                inner: Inner::Hyper { body, back: None },
                            }));
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
                // (Never checked out for a request that is not sent inline.)
                Sender::Inline(_) => {}
            }
        }
    }

    /// Sends a request whose body is small enough to hold on a connection
    /// this task drives itself (see `h1`). A reused connection found
    /// closed before any answer arrived takes an idempotent request to a
    /// new one.
    async fn send_inline(
        &self,
        origin: Origin,
        uri: Uri,
        req: Request<B>,
    ) -> Result<Response<PoolBody<B>>, Error> {
        let (parts, body) = req.into_parts();
        let body = whole(body).await?;
        let target = uri.path_and_query().map_or("/", |pq| pq.as_str());
        let wire = h1::encode(&parts.method, target, &parts.headers, &body);
        let head_request = parts.method == http::Method::HEAD;
        let mut fresh = false;
        loop {
            let mut conn = match self.checkout(&origin, true) {
                Some(Sender::Inline(c)) => c,
                _ => {
                    fresh = true;
                    Box::pin(self.connect_inline(&origin, &uri)).await?
                }
            };
            match conn.exchange(&wire, head_request).await {
                Ok(head) => {
                    let body = head.body(conn);
                    let mut resp = Response::new(PoolBody {
                        inner: Inner::Inline {
                            body,
                            origin,
                            settings: self.settings.clone(),
                        },
                    });
                    *resp.status_mut() = head.status;
                    *resp.version_mut() = head.version;
                    *resp.headers_mut() = head.headers;
                    return Ok(resp);
                }
                Err(h1::Failure::Closed(_)) if !fresh && h1::idempotent(&parts.method) => {}
                Err(h1::Failure::Closed(detail) | h1::Failure::Broken(detail)) => {
                    return Err(Error::Failed {
                        origin: origin.1.to_string(),
                        detail,
                    });
                }
            }
        }
    }

    /// A new plain-TCP connection for [`Pool::send_inline`].
    async fn connect_inline(&self, origin: &Origin, uri: &Uri) -> Result<h1::Conn, Error> {
        match self.dial(origin, uri).await? {
            MaybeHttpsStream::Http(io) => Ok(h1::Conn::new(io.into_inner())),
            MaybeHttpsStream::Https(_) => Err(Error::Connect {
                origin: origin.1.to_string(),
                detail: "TLS where plain HTTP was asked for".to_owned(),
            }),
        }
    }

    /// A pooled connection to `origin` that can take a request now: one
    /// driven inline if `inline`, else one of hyper's.
    fn checkout(&self, origin: &Origin, inline: bool) -> Option<Sender<B>> {
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
                    Sender::Inline(_) if inline => return Some(list.swap_remove(i).sender),
                    Sender::Inline(_) => {}
                    _ if inline => {}
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
        let io = self.dial(origin, uri).await?;
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

    /// Opens a transport (TCP, then TLS for `https`) to `origin`.
    async fn dial(
        &self,
        origin: &Origin,
        uri: &Uri,
    ) -> Result<MaybeHttpsStream<TokioIo<TcpStream>>, Error> {
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
        connector
            .call(target)
            .await
            .map_err(|e| unreachable(origin, &*e))
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
        let bounded = !matches!(sender, Sender::H2(_));
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
    inner: Inner<B>,
}

enum Inner<B: 'static> {
    /// From one of hyper's connections.
    Hyper {
        body: Incoming,
        back: Option<Back<B>>,
    },
    /// From a connection this task reads itself.
    Inline {
        body: h1::Body,
        origin: Origin,
        settings: Arc<Settings>,
    },
}

impl<B: 'static> PoolBody<B> {
    fn release(&mut self) {
        match &mut self.inner {
            Inner::Hyper { back, .. } => {
                if let Some(b) = back.take() {
                    keep(&b.settings, &b.origin, Sender::H1(b.sender));
                }
            }
            Inner::Inline {
                body,
                origin,
                settings,
            } => {
                if let Some(conn) = body.take_reusable() {
                    keep(settings, origin, Sender::<B>::Inline(conn));
                }
            }
        }
    }
}

impl<B: 'static> Drop for PoolBody<B> {
    fn drop(&mut self) {
        let ended = match &self.inner {
            Inner::Hyper { body, back } => back.is_some() && http_body::Body::is_end_stream(body),
            Inner::Inline { body, .. } => body.is_end_stream(),
        };
        if ended {
            self.release();
        }
    }
}

impl<B: 'static> http_body::Body for PoolBody<B> {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        let polled = match &mut self.inner {
            Inner::Hyper { body, .. } => Pin::new(body).poll_frame(cx).map_err(BoxError::from),
            Inner::Inline { body, .. } => body.poll_frame(cx).map_err(BoxError::from),
        };
        if let Poll::Ready(None) = polled {
            self.release();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Hyper { body, .. } => body.is_end_stream(),
            Inner::Inline { body, .. } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match &self.inner {
            Inner::Hyper { body, .. } => body.size_hint(),
            Inner::Inline { body, .. } => body.size_hint(),
        }
    }
}

impl<B: 'static> std::fmt::Debug for PoolBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolBody").finish_non_exhaustive()
    }
}

/// Whether `req` goes on a connection driven inline: its body is known to
/// be small enough to hold whole, and it asks for no protocol upgrade
/// (the tunnel of an upgrade needs hyper's connection).
fn sent_whole<B: http_body::Body>(req: &Request<B>) -> bool {
    let body = req.body();
    let small = body.is_end_stream()
        || body
            .size_hint()
            .exact()
            .is_some_and(|n| n <= h1::MAX_INLINE_BODY);
    small && !crate::headers::is_upgrade(req.headers())
}

/// Reads a (small) request body whole.
async fn whole<B>(body: B) -> Result<Bytes, Error>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    use http_body_util::BodyExt;
    if body.is_end_stream() {
        return Ok(Bytes::new());
    }
    match body.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => Err(Error::BadRequest(format!(
            "the request body could not be read: {}",
            e.into()
        ))),
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
        origin: origin.1.to_string(),
        detail: root_cause(e),
    }
}

/// An exchange that failed once the connection was made.
fn failed(origin: &Origin, e: hyper::Error) -> Error {
    Error::Failed {
        origin: origin.1.to_string(),
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

    /// What a raw upstream does with one request: answer these bytes (then
    /// close the connection if `close`), or close without answering.
    enum Act {
        Answer(Vec<u8>, bool),
        Hang,
    }

    /// A loopback upstream written on raw sockets, for answers hyper's
    /// server would not send: `act(connection, request, head)` decides
    /// each answer (both numbered from 1). Returns the address and the
    /// count of connections accepted.
    async fn raw_server(
        act: impl Fn(usize, usize, &str) -> Act + Send + Sync + 'static,
    ) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        let act = Arc::new(act);
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                let conn = counter.fetch_add(1, Ordering::SeqCst) + 1;
                let act = act.clone();
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut n = 0;
                    loop {
                        // One request: its head, then a body of its length.
                        let end = loop {
                            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break at + 4;
                            }
                            let mut chunk = [0u8; 4096];
                            match stream.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(k) => buf.extend_from_slice(&chunk[..k]),
                            }
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length: "))
                            .map_or(0, |v| v.trim().parse().unwrap());
                        while buf.len() < end + len {
                            let mut chunk = [0u8; 4096];
                            match stream.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(k) => buf.extend_from_slice(&chunk[..k]),
                            }
                        }
                        buf.drain(..end + len);
                        n += 1;
                        match act(conn, n, &head) {
                            Act::Hang => return,
                            Act::Answer(bytes, close) => {
                                if stream.write_all(&bytes).await.is_err() || close {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        (addr, accepted)
    }

    fn answer(s: &str) -> Act {
        Act::Answer(s.as_bytes().to_vec(), false)
    }

    async fn call(
        pool: &Pool<Full<Bytes>>,
        method: http::Method,
        addr: std::net::SocketAddr,
        body: &'static str,
    ) -> Result<(Response<()>, Vec<u8>, Option<http::HeaderMap>), String> {
        let req = Request::builder()
            .method(method)
            .uri(format!("http://{addr}/x"))
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap();
        let resp = pool.send(req).await.map_err(|e| e.to_string())?;
        let (parts, body) = resp.into_parts();
        let collected = body.collect().await.map_err(|e| e.to_string())?;
        let trailers = collected.trailers().cloned();
        Ok((
            Response::from_parts(parts, ()),
            collected.to_bytes().to_vec(),
            trailers,
        ))
    }

    #[tokio::test(flavor = "current_thread")]
    async fn chunked_and_sized_answers_keep_their_connection() {
        let (addr, accepted) = raw_server(|_, n, head| {
            assert!(head.starts_with("get /x http/1.1\r\n"), "{head}");
            assert!(head.contains("\r\nhost: 127.0.0.1:"), "{head}");
            if n % 2 == 1 {
                answer("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n2;x=y\r\nef\r\n0\r\nX-Sum: 6\r\n\r\n")
            } else {
                answer("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-N: 2\r\n\r\nxyz")
            }
        })
        .await;
        let pool = pool();
        for _ in 0..3 {
            let (resp, body, trailers) = call(&pool, http::Method::GET, addr, "").await.unwrap();
            assert_eq!(body, b"abcdef");
            assert_eq!(trailers.unwrap()["x-sum"], "6");
            assert_eq!(resp.headers()["transfer-encoding"], "chunked");
            let (resp, body, _) = call(&pool, http::Method::GET, addr, "").await.unwrap();
            assert_eq!(body, b"xyz");
            assert_eq!(resp.headers()["x-n"], "2");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn posts_carry_their_body_with_its_length() {
        let (addr, _) = raw_server(|_, _, head| {
            assert!(head.starts_with("post /x http/1.1\r\n"), "{head}");
            assert!(head.contains("\r\ncontent-length: 7\r\n"), "{head}");
            answer("HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")
        })
        .await;
        let (resp, body, _) = call(&pool(), http::Method::POST, addr, "{\"a\":1}")
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
        assert_eq!(body, b"ok");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_reused_connection_closed_unanswered_resends_only_idempotent_requests() {
        // Each connection answers its first request and closes on its
        // second without a word, as an upstream whose idle timeout fired.
        let act = |conn: usize, n: usize, _: &str| {
            if n == 1 {
                Act::Answer(
                    format!("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n{conn}").into_bytes(),
                    false,
                )
            } else {
                Act::Hang
            }
        };
        let (addr, accepted) = raw_server(act).await;
        let pool = pool();
        assert_eq!(
            call(&pool, http::Method::GET, addr, "").await.unwrap().1,
            b"1"
        );
        // Sent again on a new connection.
        assert_eq!(
            call(&pool, http::Method::GET, addr, "").await.unwrap().1,
            b"2"
        );
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        // A POST might have been acted on: not sent again.
        let err = call(&pool, http::Method::POST, addr, "{}")
            .await
            .unwrap_err();
        assert!(err.contains("closed before an answer"), "{err}");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_body_cut_short_is_an_error_and_its_connection_is_not_kept() {
        let (addr, accepted) = raw_server(|conn, _, _| {
            if conn == 1 {
                Act::Answer(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc".to_vec(),
                    true,
                )
            } else {
                answer("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            }
        })
        .await;
        let pool = pool();
        let err = call(&pool, http::Method::GET, addr, "").await.unwrap_err();
        assert!(err.contains("before the response body ended"), "{err}");
        assert_eq!(
            call(&pool, http::Method::GET, addr, "").await.unwrap().1,
            b"ok"
        );
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn answers_without_a_length_end_with_their_connection() {
        let (addr, accepted) = raw_server(|conn, _, _| {
            Act::Answer(
                format!("HTTP/1.1 200 OK\r\n\r\nbody of {conn}").into_bytes(),
                true,
            )
        })
        .await;
        let pool = pool();
        assert_eq!(
            call(&pool, http::Method::GET, addr, "").await.unwrap().1,
            b"body of 1"
        );
        assert_eq!(
            call(&pool, http::Method::GET, addr, "").await.unwrap().1,
            b"body of 2"
        );
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn head_and_interim_answers_are_framed_right() {
        let (addr, accepted) = raw_server(|_, _, head| {
            if head.starts_with("head ") {
                answer("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
            } else {
                answer("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n")
            }
        })
        .await;
        let pool = pool();
        let (resp, body, _) = call(&pool, http::Method::HEAD, addr, "").await.unwrap();
        assert_eq!(resp.headers()["content-length"], "5");
        assert!(body.is_empty());
        let (resp, body, _) = call(&pool, http::Method::DELETE, addr, "").await.unwrap();
        assert_eq!(resp.status(), 204);
        assert!(body.is_empty());
        assert_eq!(
            call(&pool, http::Method::HEAD, addr, "")
                .await
                .unwrap()
                .0
                .status(),
            200
        );
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_malformed_answer_is_an_error_naming_what_was_wrong() {
        let (addr, _) =
            raw_server(|_, _, _| answer("HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n")).await;
        let err = call(&pool(), http::Method::GET, addr, "")
            .await
            .unwrap_err();
        assert!(err.contains("invalid Content-Length"), "{err}");
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

//! Loom's own HTTP/1.1 server connection, for cleartext listeners.
//!
//! hyper's server connection cost about 9,600 instructions per proxied
//! request under callgrind, a third of the proxy route's
//! (`bench/instructions.sh`, session 9): a dispatcher state machine,
//! buffered IO, a timer per request. Nearly all gateway traffic is a head
//! and a body of known size (an SDK's JSON), so this connection reads the
//! head with httparse, the body whole (up to 64 KiB), calls the pipeline,
//! and writes the answer's head and the first frame of its body in one
//! write, flushing every later frame as it comes (a stream's events are not
//! held back). While the pipeline works, the socket is watched: a client
//! that goes away cancels its request, and with it the upstream call.
//!
//! Anything else hands the connection, with the bytes read so far, to hyper
//! for the rest of its life: an upgrade (WebSocket), `CONNECT`, a request
//! body sent chunked or larger than 64 KiB, an HTTP/2 prior-knowledge
//! preface, an `Expect` other than `100-continue`.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::request_head::{self, Parsed, Stop, Wants};
use crate::{Body, BoxError, header_tokens};

/// Answer bytes gathered before a write.
const WRITE_BATCH: usize = 64 * 1024;

/// Limits of a connection.
#[derive(Clone, Copy)]
pub struct Settings {
    /// Time for a request's head (and a small body) to arrive, and the
    /// longest a keep-alive connection may stay idle.
    pub header_timeout: Duration,
    /// Largest request head.
    pub max_header_size: usize,
}

/// What a connection needs to hand itself to hyper.
pub struct Handoff {
    pub builder: auto::Builder<TokioExecutor>,
    /// Keeps the listener's drain waiting for this connection.
    pub watcher: Watcher,
}

/// What a server connection calls: the request pipeline of one client.
///
/// A connection's handler is cloned only when the connection is handed to
/// hyper; each request borrows it.
pub trait Handler: Clone + Send + Sync + 'static {
    /// Answers one request (an error answer is still an answer).
    fn handle<B>(
        &self,
        req: Request<B>,
    ) -> impl Future<Output = Result<Response<Body>, Infallible>> + Send + use<Self, B>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>;

    /// Whether this worker is at its bound: a request's body is then left
    /// unread and [`Handler::handle`] is given its head only, to shed it.
    fn overloaded(&self) -> bool;
}

/// Serves one cleartext connection until the client closes it, it stays
/// idle past the header timeout, or `stop` turns true.
pub async fn serve<H: Handler>(
    io: TcpStream,
    handler: H,
    settings: Settings,
    handoff: Handoff,
    stop: watch::Receiver<bool>,
) {
    let mut conn = Conn {
        io,
        rbuf: BytesMut::with_capacity(8 * 1024),
        wbuf: Vec::with_capacity(4 * 1024),
        settings,
        stop,
        timer: Box::pin(tokio::time::sleep(settings.header_timeout)),
        first: true,
    };
    loop {
        let (req, wants) = match conn.next_request(&handler).await {
            Next::Request(req, wants) => (req, wants),
            // The worker is at its bound: the pipeline sheds the request in
            // its route's format, its body unread, and the connection
            // closes (the body is still on the wire).
            Next::Shed(parts, mut wants) => {
                wants.keep_alive = false;
                (Request::from_parts(parts, Full::new(Bytes::new())), wants)
            }
            Next::Close => return,
            Next::Refuse(status) => return conn.refuse(status).await,
            Next::Handoff => return conn.hand_off(handler, handoff).await,
        };
        let call = pin!(handler.handle(req));
        let Some(Ok(resp)) = conn.unless_gone(call).await else {
            return;
        };
        if !conn.respond(resp, wants).await || conn.stopping() {
            let _ = conn.io.shutdown().await;
            return;
        }
    }
}

/// What comes next on a connection.
// The request is moved once per request; boxing it would allocate.
#[allow(clippy::large_enum_variant)]
enum Next {
    Request(Request<Full<Bytes>>, Wants),
    /// A head whose body is not read: the worker is at its bound.
    Shed(http::request::Parts, Wants),
    /// Hand the connection to hyper (the head is still unread).
    Handoff,
    /// Answer with this status and close (a malformed or oversized head).
    Refuse(StatusCode),
    /// Close quietly: the client went away, stayed idle too long, or the
    /// listener is shutting down.
    Close,
}

struct Conn {
    io: TcpStream,
    /// Bytes read and not yet consumed.
    rbuf: BytesMut,
    /// The answer being written.
    wbuf: Vec<u8>,
    settings: Settings,
    stop: watch::Receiver<bool>,
    /// The header timeout's timer, armed once and moved only when it
    /// fires early: a busy connection does not touch the timer wheel per
    /// request.
    timer: Pin<Box<tokio::time::Sleep>>,
    /// No request served yet (an HTTP/2 preface can only come first).
    first: bool,
}

impl Conn {
    /// Whether the listener is shutting down.
    fn stopping(&self) -> bool {
        self.stop.has_changed().unwrap_or(true)
    }

    /// Reads the next request: a whole head and its whole body, or only
    /// the head when the worker is past its `bounds`.
    async fn next_request<H: Handler>(&mut self, handler: &H) -> Next {
        let deadline = Instant::now() + self.settings.header_timeout;
        let parsed = loop {
            if !self.rbuf.is_empty() {
                match self.parse() {
                    Ok(Some(p)) => break p,
                    Ok(None) => {}
                    Err(Stop::Handoff) => return Next::Handoff,
                    Err(Stop::Refuse(status)) => return Next::Refuse(status),
                }
            }
            if self.stopping() || !self.fill_before(deadline, true).await {
                return Next::Close;
            }
        };
        let Parsed {
            parts,
            wants,
            length,
            expect_continue,
        } = parsed;
        let length = length as usize;
        if self.rbuf.len() < length && handler.overloaded() {
            return Next::Shed(parts, wants);
        }
        if self.rbuf.len() < length {
            if expect_continue
                && self
                    .io
                    .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                    .await
                    .is_err()
            {
                return Next::Close;
            }
            self.rbuf.reserve(length - self.rbuf.len());
            while self.rbuf.len() < length {
                if !self.fill_before(deadline, false).await {
                    return Next::Close;
                }
            }
        }
        let body = self.rbuf.split_to(length).freeze();
        self.first = false;
        Next::Request(Request::from_parts(parts, Full::new(body)), wants)
    }

    /// Reads more bytes before `deadline`; false when the client closed,
    /// the time ran out, or (`idle`: between requests) the listener stops.
    async fn fill_before(&mut self, deadline: Instant, idle: bool) -> bool {
        loop {
            let Conn {
                io,
                rbuf,
                stop,
                timer,
                ..
            } = self;
            make_room(rbuf);
            tokio::select! {
                biased;
                read = io.read_buf(rbuf) => return matches!(read, Ok(n) if n > 0),
                _ = stop.changed(), if idle => return false,
                () = timer.as_mut() => {
                    if Instant::now() >= deadline {
                        return false;
                    }
                    // Armed for an earlier wait: move it to this one's end.
                    timer.as_mut().reset(deadline.into());
                }
            }
        }
    }

    /// Parses a head from the read buffer: `Ok(None)` until it is whole.
    fn parse(&mut self) -> Result<Option<Parsed>, Stop> {
        request_head::parse(&mut self.rbuf, self.first, self.settings.max_header_size)
    }

    /// Runs `work` while watching the socket: `None` when the client closed
    /// the connection first. Bytes that arrive meanwhile (a pipelined
    /// request) are kept, up to a head's size.
    async fn unless_gone<F: Future>(&mut self, mut work: Pin<&mut F>) -> Option<F::Output> {
        std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = work.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
            if self.poll_gone(cx) {
                return Poll::Ready(None);
            }
            Poll::Pending
        })
        .await
    }

    /// Whether the client has closed the connection; registers for the
    /// socket's readiness otherwise.
    fn poll_gone(&mut self, cx: &mut Context<'_>) -> bool {
        while self.rbuf.len() < self.settings.max_header_size {
            make_room(&mut self.rbuf);
            match pin!(self.io.read_buf(&mut self.rbuf)).poll(cx) {
                Poll::Pending => return false,
                Poll::Ready(Ok(0) | Err(_)) => return true,
                Poll::Ready(Ok(_)) => {}
            }
        }
        false
    }

    /// Writes `resp`; false when the connection cannot carry another request.
    async fn respond(&mut self, resp: Response<Body>, wants: Wants) -> bool {
        let (parts, body) = resp.into_parts();
        let status = parts.status;
        let mut keep_alive = wants.keep_alive;
        self.wbuf.clear();
        let w = &mut self.wbuf;
        status_line(w, status);
        let mut declared: Option<u64> = None;
        let mut dated = false;
        for (name, value) in &parts.headers {
            if *name == CONTENT_LENGTH {
                declared = value.to_str().ok().and_then(|v| v.trim().parse().ok());
                continue;
            }
            if *name == TRANSFER_ENCODING {
                continue;
            }
            if *name == CONNECTION {
                keep_alive &=
                    !header_tokens(value.as_bytes()).any(|t| t.eq_ignore_ascii_case(b"close"));
                continue;
            }
            dated |= *name == DATE;
            header_line(w, name, value);
        }
        if !dated {
            w.extend_from_slice(b"date: ");
            date(w);
            w.extend_from_slice(b"\r\n");
        }
        let bodiless = status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        let exact = body.size_hint().exact();
        let framing = if bodiless {
            if status == StatusCode::NOT_MODIFIED
                && let Some(n) = declared
            {
                length_header(w, n);
            }
            Framing::None
        } else if wants.head {
            if let Some(n) = declared.or(exact) {
                length_header(w, n);
            }
            Framing::None
        } else if let Some(n) = exact.or(declared) {
            length_header(w, n);
            Framing::Length(n)
        } else if !wants.http10 {
            w.extend_from_slice(b"transfer-encoding: chunked\r\n");
            Framing::Chunked
        } else {
            keep_alive = false;
            Framing::UntilClose
        };
        if !keep_alive && !wants.http10 {
            w.extend_from_slice(b"connection: close\r\n");
        } else if keep_alive && wants.http10 {
            w.extend_from_slice(b"connection: keep-alive\r\n");
        }
        w.extend_from_slice(b"\r\n");
        if matches!(framing, Framing::None) {
            drop(body);
            return self.io.write_all(&self.wbuf).await.is_ok() && keep_alive;
        }
        self.write_body(body, framing, wants.trailers).await && keep_alive
    }

    /// Writes a body after the head in the write buffer; false when it
    /// failed or ended short of its length (the connection must close).
    async fn write_body(&mut self, body: Body, framing: Framing, trailers: bool) -> bool {
        let mut body = pin!(body);
        let mut sent = 0u64;
        let mut fields: Option<HeaderMap> = None;
        loop {
            // A frame ready now joins what is gathered; otherwise what is
            // gathered goes out first, so nothing waits on a slow upstream.
            let frame =
                match std::future::poll_fn(|cx| Poll::Ready(body.as_mut().poll_frame(cx))).await {
                    Poll::Ready(f) => f,
                    Poll::Pending => {
                        if !self.wbuf.is_empty() {
                            if self.io.write_all(&self.wbuf).await.is_err() {
                                return false;
                            }
                            self.wbuf.clear();
                        }
                        let next = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx));
                        match self.unless_gone(pin!(next)).await {
                            Some(f) => f,
                            None => return false,
                        }
                    }
                };
            match frame {
                None => break,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "answer body failed; closing the connection");
                    let _ = self.io.write_all(&self.wbuf).await;
                    return false;
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        if data.is_empty() {
                            continue;
                        }
                        sent += data.len() as u64;
                        if let Framing::Length(n) = framing
                            && sent > n
                        {
                            tracing::debug!(
                                "answer body longer than its length; closing the connection"
                            );
                            return false;
                        }
                        if framing == Framing::Chunked {
                            let mut hex = [0u8; 16];
                            self.wbuf.extend_from_slice(hex_len(data.len(), &mut hex));
                            self.wbuf.extend_from_slice(b"\r\n");
                        }
                        if self.wbuf.len() + data.len() <= WRITE_BATCH {
                            self.wbuf.extend_from_slice(&data);
                        } else {
                            // Large data goes out as it is, not copied.
                            if self.io.write_all(&self.wbuf).await.is_err()
                                || self.io.write_all(&data).await.is_err()
                            {
                                return false;
                            }
                            self.wbuf.clear();
                        }
                        if framing == Framing::Chunked {
                            self.wbuf.extend_from_slice(b"\r\n");
                        }
                    }
                    Err(frame) => {
                        if framing == Framing::Chunked && trailers {
                            fields = frame.into_trailers().ok();
                        }
                    }
                },
            }
        }
        match framing {
            Framing::Chunked => {
                // The last chunk, any trailers, then the blank line.
                self.wbuf.extend_from_slice(b"0\r\n");
                for (name, value) in fields.iter().flatten() {
                    header_line(&mut self.wbuf, name, value);
                }
                self.wbuf.extend_from_slice(b"\r\n");
            }
            Framing::Length(n) if sent != n => {
                let _ = self.io.write_all(&self.wbuf).await;
                return false;
            }
            _ => {}
        }
        self.io.write_all(&self.wbuf).await.is_ok() && framing != Framing::UntilClose
    }

    /// Refuses a malformed or oversized head, then closes.
    async fn refuse(mut self, status: StatusCode) {
        self.wbuf.clear();
        let w = &mut self.wbuf;
        status_line(w, status);
        w.extend_from_slice(b"content-length: 0\r\nconnection: close\r\ndate: ");
        date(w);
        w.extend_from_slice(b"\r\n\r\n");
        if self.io.write_all(&self.wbuf).await.is_ok() {
            let _ = self.io.shutdown().await;
        }
    }

    /// Serves the rest of the connection with hyper, from the bytes read so far.
    async fn hand_off<H: Handler>(self, handler: H, handoff: Handoff) {
        let io = Rewind {
            prefix: self.rbuf.freeze(),
            io: self.io,
        };
        let svc = service_fn(move |req| handler.handle(req));
        let conn = handoff
            .builder
            .serve_connection_with_upgrades(TokioIo::new(io), svc)
            .into_owned();
        if let Err(e) = handoff.watcher.watch(conn).await {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    }
}

/// How an answer's body is delimited.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body (HEAD, 1xx, 204, 304).
    None,
    Length(u64),
    Chunked,
    /// By closing the connection (an HTTP/1.0 client, length unknown).
    UntilClose,
}

/// `HTTP/1.1 200 OK` and its line end.
fn status_line(w: &mut Vec<u8>, status: StatusCode) {
    w.extend_from_slice(b"HTTP/1.1 ");
    w.extend_from_slice(status.as_str().as_bytes());
    w.push(b' ');
    w.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    w.extend_from_slice(b"\r\n");
}

/// `name: value` and its line end.
fn header_line(w: &mut Vec<u8>, name: &HeaderName, value: &HeaderValue) {
    w.extend_from_slice(name.as_str().as_bytes());
    w.extend_from_slice(b": ");
    w.extend_from_slice(value.as_bytes());
    w.extend_from_slice(b"\r\n");
}

/// Room for the next read: a fresh 8 KiB when less than 1 KiB is left.
fn make_room(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(8 * 1024);
    }
}

fn length_header(w: &mut Vec<u8>, n: u64) {
    w.extend_from_slice(b"content-length: ");
    w.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
    w.extend_from_slice(b"\r\n");
}

/// `n` in hexadecimal, for a chunk's size line.
fn hex_len(mut n: usize, buf: &mut [u8; 16]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b"0123456789abcdef"[n & 15];
        n >>= 4;
        if n == 0 {
            return &buf[at..];
        }
    }
}

/// Appends the `Date` header's value, formatted once a second per thread.
fn date(w: &mut Vec<u8>) {
    thread_local! {
        static DATE: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((0, String::new())) };
    }
    let now = SystemTime::now();
    let secs = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(at, text)| {
        if *at != secs || text.is_empty() {
            *at = secs;
            *text = httpdate::fmt_http_date(now);
        }
        w.extend_from_slice(text.as_bytes());
    });
}

/// A connection whose first bytes were read already: hyper reads them again.
struct Rewind {
    prefix: Bytes,
    io: TcpStream,
}

impl AsyncRead for Rewind {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rewind {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_sizes_are_lowercase_hexadecimal() {
        let mut buf = [0u8; 16];
        for n in [
            0usize,
            1,
            9,
            10,
            15,
            16,
            255,
            4096,
            65_535,
            1 << 20,
            usize::MAX,
        ] {
            assert_eq!(hex_len(n, &mut buf), format!("{n:x}").as_bytes());
        }
    }

    #[test]
    fn the_date_is_an_http_date() {
        let mut w = Vec::new();
        date(&mut w);
        let text = String::from_utf8(w).unwrap();
        assert!(httpdate::parse_http_date(&text).is_ok(), "{text}");
    }
}

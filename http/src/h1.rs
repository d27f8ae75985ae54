//! An HTTP/1.1 client connection driven by the task of the request it
//! carries.
//!
//! Written here rather than taken from hyper (which Loom still uses for
//! HTTP/2, TLS, upgrades and large streamed request bodies): hyper runs
//! each HTTP/1.1 client connection as a task of its own. A request reaches
//! it through a channel, its answer's head comes back through a oneshot,
//! its body through another channel, and that task is woken for each
//! step. Under callgrind on `bench/proxy.sh`'s workload this was about a
//! third of Loom's instructions per proxied request. Here the request's
//! own task writes the request and reads the answer; the connection
//! travels inside the response body and goes back to its pool when the
//! body has been read to its end (see `docs/benchmarks.md`, "Inline
//! HTTP/1.1 client").
//!
//! The request is written whole before the answer is read, so this is used
//! only for request bodies small enough to hold ([`MAX_INLINE_BODY`]): a
//! large body streamed to an upstream that answers while it reads (an echo
//! service) needs both directions at once, which hyper's connection task
//! gives.

use std::future::Future;
use std::io;
use std::pin::pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode, Version};
use http_body::{Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The largest request body sent inline; larger (or unsized) bodies go
/// through hyper's connection task, which reads the answer while it writes.
pub(crate) const MAX_INLINE_BODY: u64 = 64 * 1024;

/// The largest response head (status line and headers) accepted.
const MAX_HEAD: usize = 64 * 1024;

/// The most headers a response head may carry (hyper's default too).
const MAX_HEADERS: usize = 100;

/// First read size of a connection; doubled while reads fill it, up to
/// [`READ_MAX`], so large bodies take few system calls.
const READ_MIN: usize = 8 * 1024;
const READ_MAX: usize = 256 * 1024;

/// The longest chunk-size line of a chunked body (size and extensions).
const MAX_CHUNK_LINE: usize = 4 * 1024;

/// Why an exchange failed.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The connection was closed (or reset) before a byte of the answer
    /// arrived: on a reused connection, the upstream most likely closed it
    /// while it sat idle, and an idempotent request may be sent again.
    Closed(String),
    /// Anything else: a malformed answer, an error mid-way.
    Broken(String),
}

/// One keep-alive connection to an upstream.
pub(crate) struct Conn {
    io: TcpStream,
    /// Bytes read and not yet consumed.
    buf: BytesMut,
    /// The size of the next read.
    read_size: usize,
}

impl Conn {
    pub(crate) fn new(io: TcpStream) -> Conn {
        Conn {
            io,
            buf: BytesMut::new(),
            read_size: READ_MIN,
        }
    }

    /// Whether this idle connection can no longer carry a request: the
    /// upstream closed it, or sent something nobody asked for. Costs no
    /// system call unless the event loop saw the socket become readable.
    pub(crate) fn is_closed(&self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.io.poll_read_ready(&mut cx) {
            Poll::Pending => false,
            Poll::Ready(Err(_)) => true,
            Poll::Ready(Ok(())) => {
                let mut byte = [0u8; 1];
                !matches!(self.io.try_read(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
            }
        }
    }

    /// Writes `wire` (a whole request, from [`encode`]) and reads the
    /// answer's head; interim (1xx) answers are skipped.
    pub(crate) async fn exchange(
        &mut self,
        wire: &[u8],
        head_request: bool,
    ) -> Result<Head, Failure> {
        if let Err(e) = self.io.write_all(wire).await {
            return Err(match e.kind() {
                io::ErrorKind::BrokenPipe
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted => Failure::Closed(e.to_string()),
                _ => Failure::Broken(e.to_string()),
            });
        }
        let mut received = false;
        loop {
            if !self.buf.is_empty() {
                received = true;
                if let Some(head) =
                    parse_head(&mut self.buf, head_request).map_err(Failure::Broken)?
                {
                    return Ok(head);
                }
            }
            match self.fill().await {
                Ok(0) if received => {
                    return Err(Failure::Broken(
                        "connection closed in the middle of the response head".to_owned(),
                    ));
                }
                Ok(0) => {
                    return Err(Failure::Closed(
                        "connection closed before an answer".to_owned(),
                    ));
                }
                Ok(_) => {}
                Err(e) if !received && e.kind() == io::ErrorKind::ConnectionReset => {
                    return Err(Failure::Closed(e.to_string()));
                }
                Err(e) => return Err(Failure::Broken(e.to_string())),
            }
        }
    }

    /// Reads more bytes into the buffer; `Ok(0)` at the end of the stream.
    async fn fill(&mut self) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_fill(cx)).await
    }

    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < self.read_size / 4 {
            self.buf.reserve(self.read_size);
        }
        let spare = self.buf.capacity() - self.buf.len();
        // A fresh `read_buf` future per poll: it holds nothing but its two
        // borrows, and leaves the buffer's unfilled part uninitialised.
        let n = ready!(pin!(self.io.read_buf(&mut self.buf)).poll(cx))?;
        if n == spare && self.read_size < READ_MAX {
            self.read_size *= 2;
        }
        Poll::Ready(Ok(n))
    }
}

/// Whether a request with this method may be sent again when its reused
/// connection turned out closed (RFC 9110 §9.2.2).
pub(crate) fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// A request as it goes on the wire: request line, headers (with a
/// `Content-Length` of the body's true size), blank line, body.
pub(crate) fn encode(method: &Method, target: &str, headers: &HeaderMap, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + target.len() + body.len() + 40 * headers.len());
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in headers {
        // The length written is the body's own, whatever a header said
        // before a plugin or a translation changed the body.
        if name == CONTENT_LENGTH {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let bodiless = matches!(
        *method,
        Method::GET
            | Method::HEAD
            | Method::DELETE
            | Method::OPTIONS
            | Method::TRACE
            | Method::CONNECT
    );
    if !body.is_empty() || !bodiless {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// A response head, and how its body is framed.
#[derive(Debug)]
pub(crate) struct Head {
    pub(crate) status: StatusCode,
    pub(crate) version: Version,
    pub(crate) headers: HeaderMap,
    framing: Framing,
    /// The connection may carry another request after this answer.
    keep_alive: bool,
}

impl Head {
    /// The body of this answer, read from `conn`.
    pub(crate) fn body(&self, conn: Conn) -> Body {
        Body {
            conn: Some(conn),
            framing: self.framing,
            keep_alive: self.keep_alive,
        }
    }
}

/// How a response body ends (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// This many bytes remain.
    Length(u64),
    /// Chunked transfer coding, at this point of it.
    Chunked(Chunk),
    /// Everything until the upstream closes the connection.
    UntilClose,
    /// Read to its end.
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// This many bytes of the current chunk remain.
    Data(u64),
    /// Expecting the CRLF that ends a chunk's data.
    DataEnd,
    /// After the last chunk: trailer fields, then a blank line.
    Trailers,
}

/// Parses a complete response head at the start of `buf`, removing it;
/// `None` while it is incomplete. Interim (1xx) answers are skipped.
fn parse_head(buf: &mut BytesMut, head_request: bool) -> Result<Option<Head>, String> {
    loop {
        // Where each header's name and value sit in the head.
        let mut spans = [(0u32, 0u32, 0u32, 0u32); MAX_HEADERS];
        let mut count = 0;
        let mut parsed = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut parsed);
        let len = match resp.parse(buf) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                return Err("response head larger than 64 KiB".to_owned());
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(format!("invalid response head: {e}")),
        };
        let code = resp.code.ok_or("response without a status")?;
        if (100..200).contains(&code) && code != 101 {
            buf.advance(len);
            continue;
        }
        if code == 101 {
            return Err("unexpected 101 Switching Protocols".to_owned());
        }
        let status =
            StatusCode::from_u16(code).map_err(|_| format!("invalid status code {code}"))?;
        let version = if resp.version == Some(0) {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        let base = buf.as_ptr() as usize;
        let mut length: Option<u64> = None;
        let mut chunked = false;
        let mut coded = false;
        let mut close = false;
        let mut keep_alive_asked = false;
        for h in resp.headers.iter() {
            let name_at = h.name.as_ptr() as usize - base;
            let value_at = h.value.as_ptr() as usize - base;
            spans[count] = (
                name_at as u32,
                (name_at + h.name.len()) as u32,
                value_at as u32,
                (value_at + h.value.len()) as u32,
            );
            count += 1;
            if h.name.eq_ignore_ascii_case("content-length") {
                let n = content_length(h.value).ok_or("invalid Content-Length")?;
                if length.is_some_and(|l| l != n) {
                    return Err("conflicting Content-Length headers".to_owned());
                }
                length = Some(n);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                coded = true;
                // Only the last coding decides: chunked must be last.
                chunked = tokens(h.value)
                    .last()
                    .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"));
            } else if h.name.eq_ignore_ascii_case("connection") {
                for t in tokens(h.value) {
                    close |= t.eq_ignore_ascii_case(b"close");
                    keep_alive_asked |= t.eq_ignore_ascii_case(b"keep-alive");
                }
            }
        }
        let mut keep_alive = !close && (version == Version::HTTP_11 || keep_alive_asked);
        let bodiless =
            head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
        let framing = if bodiless {
            Framing::Length(0)
        } else if coded {
            // With both, the coding wins and the connection must not be
            // reused (RFC 9112 §6.1).
            keep_alive &= length.is_none();
            if chunked {
                Framing::Chunked(Chunk::Size)
            } else {
                Framing::UntilClose
            }
        } else if let Some(n) = length {
            Framing::Length(n)
        } else {
            Framing::UntilClose
        };
        if framing == Framing::UntilClose {
            keep_alive = false;
        }
        let head = buf.split_to(len).freeze();
        // Room for what Loom adds (the request id, a routing header)
        // without growing the map, which rehashes every entry. Kept small
        // on purpose: past six entries the map's table is over a kilobyte,
        // which glibc's allocator serves from its slow path.
        let mut headers = HeaderMap::with_capacity(count + 2);
        for &(ns, ne, vs, ve) in &spans[..count] {
            let name = HeaderName::from_bytes(&head[ns as usize..ne as usize])
                .map_err(|_| "invalid header name".to_owned())?;
            // The value shares the head's buffer: no copy.
            let value = HeaderValue::from_maybe_shared(head.slice(vs as usize..ve as usize))
                .map_err(|_| format!("invalid value of header {name}"))?;
            headers.append(name, value);
        }
        return Ok(Some(Head {
            status,
            version,
            headers,
            framing,
            keep_alive,
        }));
    }
}

/// The value of a `Content-Length` header: digits only (no sign, no list),
/// surrounding whitespace allowed.
pub fn content_length(value: &[u8]) -> Option<u64> {
    let digits = value.trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The comma-separated tokens of a header value (`Connection`,
/// `Transfer-Encoding`, `TE`), trimmed, empty ones left out.
pub fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
}

/// One step of decoding a body from buffered bytes.
#[derive(Debug)]
enum Step {
    Data(Bytes),
    Trailers(HeaderMap),
    End,
    /// More bytes are needed.
    More,
}

/// Takes the next piece of the body framed by `framing` out of `buf`.
fn decode(framing: &mut Framing, buf: &mut BytesMut) -> Result<Step, String> {
    loop {
        match framing {
            Framing::Done | Framing::Length(0) => {
                *framing = Framing::Done;
                return Ok(Step::End);
            }
            Framing::Length(left) | Framing::Chunked(Chunk::Data(left)) => {
                if buf.is_empty() {
                    return Ok(Step::More);
                }
                let n = (*left).min(buf.len() as u64);
                *left -= n;
                if let Framing::Chunked(c @ Chunk::Data(0)) = framing {
                    *c = Chunk::DataEnd;
                }
                return Ok(Step::Data(buf.split_to(n as usize).freeze()));
            }
            Framing::UntilClose => {
                if buf.is_empty() {
                    return Ok(Step::More);
                }
                return Ok(Step::Data(buf.split().freeze()));
            }
            Framing::Chunked(Chunk::Size) => {
                let Some(eol) = memchr::memchr(b'\n', buf) else {
                    if buf.len() > MAX_CHUNK_LINE {
                        return Err("chunk size line too long".to_owned());
                    }
                    return Ok(Step::More);
                };
                let size = chunk_size(&buf[..eol])?;
                buf.advance(eol + 1);
                *framing = Framing::Chunked(if size == 0 {
                    Chunk::Trailers
                } else {
                    Chunk::Data(size)
                });
            }
            Framing::Chunked(Chunk::DataEnd) => {
                match buf.first() {
                    None => return Ok(Step::More),
                    Some(b'\n') => buf.advance(1),
                    Some(b'\r') if buf.len() < 2 => return Ok(Step::More),
                    Some(b'\r') if buf[1] == b'\n' => buf.advance(2),
                    Some(_) => return Err("chunk data longer than its size".to_owned()),
                }
                *framing = Framing::Chunked(Chunk::Size);
            }
            Framing::Chunked(Chunk::Trailers) => {
                if buf.starts_with(b"\r\n") || buf.starts_with(b"\n") {
                    buf.advance(if buf[0] == b'\r' { 2 } else { 1 });
                    *framing = Framing::Done;
                    return Ok(Step::End);
                }
                let mut parsed = [httparse::EMPTY_HEADER; MAX_HEADERS];
                match httparse::parse_headers(buf, &mut parsed) {
                    Ok(httparse::Status::Complete((len, fields))) => {
                        let mut trailers = HeaderMap::with_capacity(fields.len());
                        for f in fields.iter() {
                            let name = HeaderName::from_bytes(f.name.as_bytes())
                                .map_err(|_| "invalid trailer name".to_owned())?;
                            let value = HeaderValue::from_bytes(f.value)
                                .map_err(|_| "invalid trailer value".to_owned())?;
                            trailers.append(name, value);
                        }
                        buf.advance(len);
                        *framing = Framing::Done;
                        return Ok(Step::Trailers(trailers));
                    }
                    Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                        return Err("trailers larger than 64 KiB".to_owned());
                    }
                    Ok(httparse::Status::Partial) => return Ok(Step::More),
                    Err(e) => return Err(format!("invalid trailers: {e}")),
                }
            }
        }
    }
}

/// The size on a chunk-size line (hex digits, then optional extensions).
fn chunk_size(line: &[u8]) -> Result<u64, String> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let digits = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    if digits == 0 || digits > 16 {
        return Err("invalid chunk size".to_owned());
    }
    let rest = line[digits..].trim_ascii_start();
    if !rest.is_empty() && rest[0] != b';' {
        return Err("invalid chunk size".to_owned());
    }
    let mut size = 0u64;
    for &b in &line[..digits] {
        let d = (b as char).to_digit(16).unwrap_or(0) as u64;
        size = size << 4 | d;
    }
    Ok(size)
}

/// A response body read from its connection.
pub(crate) struct Body {
    conn: Option<Conn>,
    framing: Framing,
    keep_alive: bool,
}

impl Body {
    /// The next frame of the body.
    pub(crate) fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, String>>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(None);
        };
        loop {
            match decode(&mut self.framing, &mut conn.buf) {
                Err(e) => {
                    // A connection whose framing is lost cannot be reused.
                    self.keep_alive = false;
                    self.framing = Framing::Done;
                    return Poll::Ready(Some(Err(e)));
                }
                Ok(Step::Data(d)) => return Poll::Ready(Some(Ok(Frame::data(d)))),
                Ok(Step::Trailers(t)) => return Poll::Ready(Some(Ok(Frame::trailers(t)))),
                Ok(Step::End) => return Poll::Ready(None),
                Ok(Step::More) => {}
            }
            match ready!(conn.poll_fill(cx)) {
                Ok(0) if self.framing == Framing::UntilClose => {
                    self.framing = Framing::Done;
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    self.keep_alive = false;
                    self.framing = Framing::Done;
                    return Poll::Ready(Some(Err(
                        "connection closed before the response body ended".to_owned(),
                    )));
                }
                Ok(_) => {}
                Err(e) => {
                    self.keep_alive = false;
                    self.framing = Framing::Done;
                    return Poll::Ready(Some(Err(e.to_string())));
                }
            }
        }
    }

    /// Whether the body has been read to its end (or has none).
    pub(crate) fn is_end_stream(&self) -> bool {
        matches!(self.framing, Framing::Done | Framing::Length(0))
    }

    pub(crate) fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) => SizeHint::with_exact(n),
            Framing::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }

    /// The connection, when the body has been read to its end and the
    /// connection can carry another request.
    pub(crate) fn take_reusable(&mut self) -> Option<Conn> {
        let reusable = self.keep_alive
            && self.is_end_stream()
            && self.conn.as_ref().is_some_and(|c| c.buf.is_empty());
        if reusable { self.conn.take() } else { None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_tokens_are_trimmed_and_lengths_are_digits_only() {
        let t: Vec<&[u8]> = tokens(b" keep-alive ,Upgrade,, close").collect();
        assert_eq!(t, [&b"keep-alive"[..], b"Upgrade", b"close"]);
        assert_eq!(content_length(b" 42 "), Some(42));
        for bad in [
            &b""[..],
            b"-1",
            b"+1",
            b"1,1",
            b"1 2",
            b"0x10",
            b"99999999999999999999999",
        ] {
            assert_eq!(
                content_length(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    fn head(raw: &str, head_request: bool) -> Result<Option<Head>, String> {
        parse_head(&mut BytesMut::from(raw), head_request)
    }

    fn complete(raw: &str) -> Head {
        head(raw, false).unwrap().unwrap()
    }

    /// Decodes `raw` fed in pieces of `step` bytes: the data and trailers.
    fn decode_all(
        framing: Framing,
        raw: &[u8],
        step: usize,
    ) -> Result<(Vec<u8>, Option<HeaderMap>), String> {
        let mut framing = framing;
        let mut buf = BytesMut::new();
        let mut data = Vec::new();
        let mut trailers = None;
        let mut fed = 0;
        loop {
            match decode(&mut framing, &mut buf)? {
                Step::Data(d) => data.extend_from_slice(&d),
                Step::Trailers(t) => trailers = Some(t),
                Step::End => return Ok((data, trailers)),
                Step::More if fed == raw.len() => return Err("truncated".to_owned()),
                Step::More => {
                    let n = step.min(raw.len() - fed);
                    buf.extend_from_slice(&raw[fed..fed + n]);
                    fed += n;
                }
            }
        }
    }

    async fn pair() -> (Conn, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (Conn::new(client), server)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_idle_connection_knows_when_its_upstream_closed_it() {
        let (conn, server) = pair().await;
        assert!(!conn.is_closed());
        drop(server);
        conn.io.readable().await.unwrap();
        assert!(conn.is_closed());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn an_idle_connection_with_unasked_bytes_is_not_reused() {
        let (conn, mut server) = pair().await;
        server.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
        conn.io.readable().await.unwrap();
        assert!(conn.is_closed());
    }

    #[test]
    fn a_head_is_parsed_with_its_framing_and_keep_alive() {
        let h = complete("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-A: b\r\n\r\nhello");
        assert_eq!(h.status, 200);
        assert_eq!(h.version, Version::HTTP_11);
        assert_eq!(h.framing, Framing::Length(5));
        assert!(h.keep_alive);
        assert_eq!(h.headers["x-a"], "b");
        assert_eq!(h.headers["content-length"], "5");

        let h = complete("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n");
        assert_eq!(h.framing, Framing::Chunked(Chunk::Size));
        assert!(h.keep_alive);

        let h = complete("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\n");
        assert!(!h.keep_alive);

        let h = complete("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(h.framing, Framing::UntilClose);
        assert!(!h.keep_alive);

        let h = complete("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n");
        assert_eq!(h.version, Version::HTTP_10);
        assert!(!h.keep_alive);
        let h = complete("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 1\r\n\r\n");
        assert!(h.keep_alive);
    }

    #[test]
    fn bodiless_answers_have_no_body_whatever_their_headers_say() {
        let h = complete("HTTP/1.1 204 No Content\r\nContent-Length: 7\r\n\r\n");
        assert_eq!(h.framing, Framing::Length(0));
        let h = complete("HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(h.framing, Framing::Length(0));
        let h = head("HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n", true)
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::Length(0));
        assert_eq!(h.headers["content-length"], "7");
    }

    #[test]
    fn a_coding_with_a_length_is_chunked_and_closes_the_connection() {
        let h =
            complete("HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(h.framing, Framing::Chunked(Chunk::Size));
        assert!(!h.keep_alive);
        let h = complete("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n");
        assert_eq!(h.framing, Framing::UntilClose);
    }

    #[test]
    fn interim_answers_are_skipped() {
        let mut buf = BytesMut::from(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
        );
        let h = parse_head(&mut buf, false).unwrap().unwrap();
        assert_eq!(h.status, 201);
        assert!(h.headers.get("link").is_none());
        assert!(buf.is_empty());
    }

    #[test]
    fn bad_heads_are_errors_and_partial_ones_wait() {
        assert!(
            head("HTTP/1.1 200 OK\r\nContent-Le", false)
                .unwrap()
                .is_none()
        );
        assert!(
            head(
                "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                false
            )
            .is_err()
        );
        assert!(head("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", false).is_err());
        assert!(head("HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\n", false).is_err());
        assert!(head("HTTP/1.1 101 Switching Protocols\r\n\r\n", false).is_err());
        assert!(head("HTTQ/1.1 200 OK\r\n\r\n", false).is_err());
        let huge = format!("HTTP/1.1 200 OK\r\nX: {}", "a".repeat(MAX_HEAD + 1));
        assert!(head(&huge, false).is_err());
        let many: String = (0..=MAX_HEADERS).map(|i| format!("X-{i}: v\r\n")).collect();
        assert!(head(&format!("HTTP/1.1 200 OK\r\n{many}\r\n"), false).is_err());
        // The same count as Content-Length twice is allowed.
        assert!(
            head(
                "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n",
                false
            )
            .is_ok()
        );
    }

    #[test]
    fn chunked_bodies_decode_however_they_are_split() {
        let raw = b"5;ext=1\r\nhello\r\n1a\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Checksum: 9\r\nX-More: a\r\n\r\n";
        for step in 1..=raw.len() {
            let (data, trailers) = decode_all(Framing::Chunked(Chunk::Size), raw, step).unwrap();
            assert_eq!(data, b"helloabcdefghijklmnopqrstuvwxyz", "step {step}");
            let t = trailers.unwrap();
            assert_eq!(t["x-checksum"], "9");
            assert_eq!(t["x-more"], "a");
        }
        let (data, trailers) =
            decode_all(Framing::Chunked(Chunk::Size), b"3\r\nabc\r\n0\r\n\r\n", 1).unwrap();
        assert_eq!(data, b"abc");
        assert!(trailers.is_none());
    }

    #[test]
    fn broken_chunked_bodies_are_errors() {
        let chunked = Framing::Chunked(Chunk::Size);
        assert!(decode_all(chunked, b"zz\r\n", 4).is_err());
        assert!(decode_all(chunked, b"3\r\nabcd\r\n0\r\n\r\n", 64).is_err());
        assert!(decode_all(chunked, b"11111111111111111\r\n", 64).is_err());
        assert!(decode_all(chunked, &[b'1'; MAX_CHUNK_LINE + 2], 64).is_err());
        assert_eq!(
            decode_all(chunked, b"3\r\nab", 64),
            Err("truncated".to_owned())
        );
    }

    #[test]
    fn length_bodies_stop_at_their_length() {
        let mut framing = Framing::Length(3);
        let mut buf = BytesMut::from("abcdef");
        assert!(matches!(decode(&mut framing, &mut buf), Ok(Step::Data(d)) if d == "abc"));
        assert!(matches!(decode(&mut framing, &mut buf), Ok(Step::End)));
        assert_eq!(&buf[..], b"def");
    }

    #[test]
    fn requests_carry_their_true_length() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("up:80"));
        headers.insert("content-length", HeaderValue::from_static("999"));
        let wire = encode(&Method::POST, "/v1/x?y=1", &headers, b"{}");
        assert_eq!(
            wire,
            b"POST /v1/x?y=1 HTTP/1.1\r\nhost: up:80\r\ncontent-length: 2\r\n\r\n{}"
        );
        let wire = encode(&Method::GET, "/", &HeaderMap::new(), b"");
        assert_eq!(wire, b"GET / HTTP/1.1\r\n\r\n");
        let wire = encode(&Method::PUT, "/", &HeaderMap::new(), b"");
        assert_eq!(wire, b"PUT / HTTP/1.1\r\ncontent-length: 0\r\n\r\n");
    }
}

/// Entry points for the fuzz targets (`fuzz/`) and their corpus regression
/// tests: any bytes in, never a panic, never a loop that makes no progress.
#[doc(hidden)]
pub mod fuzzing {
    use bytes::BytesMut;

    use super::{Framing, Step, decode, parse_head};

    /// Splits `data` into the reads a connection would see: the first byte
    /// chooses the read size (1 to 64 bytes), the rest is the stream.
    fn reads(data: &[u8]) -> impl Iterator<Item = &[u8]> {
        let (size, rest) = match data.split_first() {
            Some((s, rest)) => (usize::from(*s % 64) + 1, rest),
            None => (1, data),
        };
        rest.chunks(size)
    }

    /// A response (head, then body) from an upstream, arriving in pieces.
    pub fn response(data: &[u8]) {
        let head_request = data.first().is_some_and(|b| b & 0x80 != 0);
        let mut buf = BytesMut::new();
        let mut framing: Option<Framing> = None;
        let mut body = 0usize;
        let total = data.len();
        for piece in reads(data) {
            buf.extend_from_slice(piece);
            // Each turn either consumes bytes, changes state or asks for
            // more; more turns than bytes (and states) would be a loop.
            for _ in 0..=2 * total + 8 {
                let f = match &mut framing {
                    Some(f) => f,
                    None => match parse_head(&mut buf, head_request) {
                        Ok(Some(head)) => framing.insert(head.framing),
                        Ok(None) => break,
                        Err(_) => return,
                    },
                };
                match decode(f, &mut buf) {
                    Ok(Step::Data(d)) => {
                        assert!(!d.is_empty(), "an empty data step makes no progress");
                        body += d.len();
                        assert!(body <= total, "more body than bytes received");
                    }
                    Ok(Step::Trailers(_)) | Ok(Step::End) => return,
                    Ok(Step::More) => break,
                    Err(_) => return,
                }
            }
        }
    }
}

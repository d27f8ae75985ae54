//! Running a route's plugins over one request: request headers, request
//! body, response headers, response body, then done/log/delete. Request
//! phases run the plugins in the order listed, response phases in reverse
//! (as Envoy does). Bodies are filtered chunk by chunk as they stream; a
//! plugin that answers `Pause` gets the chunks buffered and handed back
//! together until it continues (or the body ends).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::{Bytes, BytesMut};
use futures_util::future::join_all;
use http_body::{Body as _, Frame};
use http_body_util::BodyExt;
use wasmtime::Store;

use super::abi::{ACTION_CONTINUE, BufferType};
use super::engine::{self, Cell, Exports, Inner, Plugin, ROOT};
use super::host::{Dispatch, Host, Io};
use super::{BoxFuture, CallResponse, LocalResponse, Phase, StreamInfo};
use loom_http::{Body, BoxError};

/// The plugins of one route, in order.
#[derive(Clone, Debug, Default)]
pub struct Chain {
    plugins: Vec<Plugin>,
}

impl Chain {
    pub fn new(plugins: Vec<Plugin>) -> Chain {
        Chain { plugins }
    }

    pub fn is_empty(&self) -> bool {
        self.plugins.is_empty()
    }

    /// Whether any plugin runs in `phase`.
    pub fn has(&self, phase: Phase) -> bool {
        self.plugins.iter().any(|p| p.0.phase == phase)
    }

    /// Begins one request's pass through the plugins.
    pub fn start(&self, info: StreamInfo) -> Stream {
        let slots = self
            .plugins
            .iter()
            .map(|p| Slot {
                plugin: p.0.clone(),
                cell: None,
                ctx: 0,
                off: false,
                props: None,
                buffered: [BytesMut::new(), BytesMut::new()],
            })
            .collect();
        Stream(Arc::new(Mutex::new(State {
            slots,
            info: Arc::new(info),
            local: None,
        })))
    }
}

/// What a phase decided.
#[derive(Debug)]
pub enum Verdict {
    /// Go on with the request (or response).
    Continue,
    /// A plugin answered in the upstream's place.
    Local(LocalResponse),
    /// A fail-closed plugin failed (trap, CPU or memory limit): answer 500.
    Failed { plugin: String },
}

/// One request's pass through a route's plugins. Cloned into the body
/// filters; the last clone to go ends the plugins' stream contexts
/// (`on_done`, `on_log`, `on_delete`), whether the exchange completed or
/// the client left.
#[derive(Clone)]
pub struct Stream(Arc<Mutex<State>>);

struct State {
    slots: Vec<Slot>,
    info: Arc<StreamInfo>,
    /// A local response sent while the request body streamed.
    local: Option<LocalResponse>,
}

struct Slot {
    plugin: Arc<Inner>,
    /// This thread's instance, from the first callback on.
    cell: Option<Arc<Cell>>,
    ctx: i32,
    /// Failed while `fail_open`: skipped for the rest of the request.
    off: bool,
    props: Option<HashMap<String, Vec<u8>>>,
    /// Chunks held while the plugin answers `Pause`: request, response.
    buffered: [BytesMut; 2],
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    Request = 0,
    Response = 1,
}

/// The head handed to a callback, when the phase has one.
enum Head {
    None,
    Request(http::request::Parts),
    Response(http::response::Parts),
}

impl Head {
    fn install(&mut self, io: &mut Io) {
        match std::mem::replace(self, Head::None) {
            Head::Request(p) => io.request = Some(p),
            Head::Response(p) => io.response = Some(p),
            Head::None => {}
        }
    }

    fn restore(&mut self, io: &mut Io) {
        if let Some(p) = io.request.take() {
            *self = Head::Request(p);
        } else if let Some(p) = io.response.take() {
            *self = Head::Response(p);
        }
    }
}

/// The outcome of one callback.
struct Called {
    action: i32,
    dispatched: Vec<Dispatch>,
    resumed: bool,
    local: Option<Box<LocalResponse>>,
}

/// Why a callback gave no outcome.
enum Stop {
    /// The plugin failed and is fail-open: skip it from now on.
    Skip,
    Failed(String),
}

fn lock(m: &Mutex<State>) -> MutexGuard<'_, State> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Slot {
    /// The instance and stream context, made on first use.
    fn ready(&mut self) -> Result<Arc<Cell>, String> {
        if let Some(c) = &self.cell {
            return Ok(c.clone());
        }
        let cell = engine::instance(&self.plugin)?;
        let mut vm = cell.lock();
        let ctx = vm.next_context();
        let mut io = Io::default();
        let created = vm.call(&mut io, |s, f| match &f.context_create {
            Some(c) => c.call(s, (ctx, ROOT)),
            None => Ok(()),
        });
        drop(vm);
        if let Err(f) = created {
            cell.fault("on_context_create", &f);
            return Err(f.0);
        }
        self.ctx = ctx;
        self.cell = Some(cell.clone());
        Ok(cell)
    }

    /// Runs one callback of this slot's stream context with `io`.
    fn call(
        &mut self,
        info: &Arc<StreamInfo>,
        io: &mut Io,
        what: &'static str,
        run: impl FnOnce(&mut Store<Host>, &Exports, i32) -> wasmtime::Result<i32>,
    ) -> Result<Called, Stop> {
        if self.off {
            return Err(Stop::Skip);
        }
        let cell = match self.ready() {
            Ok(c) => c,
            Err(e) => return Err(self.stop(what, e)),
        };
        io.info = Some(info.clone());
        io.props = self.props.take();
        let ctx = self.ctx;
        let result = {
            let mut vm = cell.lock();
            vm.store.data_mut().effective = ctx as u32;
            let r = vm.call(io, |s, f| run(s, f, ctx));
            cell.after_call(&mut vm);
            let dispatched = std::mem::take(&mut vm.store.data_mut().dispatched);
            r.map(|action| (action, dispatched))
        };
        self.props = io.props.take();
        match result {
            Ok((action, dispatched)) => Ok(Called {
                action,
                dispatched,
                resumed: std::mem::take(&mut io.resumed),
                local: io.local.take(),
            }),
            Err(f) => {
                cell.fault(what, &f);
                self.cell = None;
                Err(self.stop(what, f.0))
            }
        }
    }

    fn stop(&mut self, what: &str, error: String) -> Stop {
        tracing::debug!(plugin = %self.plugin.spec.name, callback = what, %error, "plugin callback failed");
        if self.plugin.fail_open {
            self.off = true;
            Stop::Skip
        } else {
            Stop::Failed(self.plugin.spec.name.clone())
        }
    }
}

impl Stream {
    /// The request-headers callback of the plugins of `phase`. The head
    /// comes back with the plugins' changes.
    pub async fn request_headers(
        &self,
        parts: http::request::Parts,
        end_of_stream: bool,
        phase: Phase,
    ) -> (http::request::Parts, Verdict) {
        let mut head = Head::Request(parts);
        let n = lock(&self.0).slots.len();
        for i in 0..n {
            let verdict = self
                .headers_of(i, &mut head, Dir::Request, end_of_stream, Some(phase))
                .await;
            if !matches!(verdict, Verdict::Continue) {
                return (into_request(head), verdict);
            }
        }
        (into_request(head), Verdict::Continue)
    }

    /// The response-headers callbacks, last plugin first.
    pub async fn response_headers(
        &self,
        parts: http::response::Parts,
        end_of_stream: bool,
    ) -> (http::response::Parts, Verdict) {
        let mut head = Head::Response(parts);
        let n = lock(&self.0).slots.len();
        for i in (0..n).rev() {
            let verdict = self
                .headers_of(i, &mut head, Dir::Response, end_of_stream, None)
                .await;
            if !matches!(verdict, Verdict::Continue) {
                return (into_response(head), verdict);
            }
        }
        (into_response(head), Verdict::Continue)
    }

    async fn headers_of(
        &self,
        i: usize,
        head: &mut Head,
        dir: Dir,
        end_of_stream: bool,
        phase: Option<Phase>,
    ) -> Verdict {
        let called = {
            let mut st = lock(&self.0);
            let info = st.info.clone();
            let slot = &mut st.slots[i];
            if phase.is_some_and(|p| slot.plugin.phase != p)
                || (dir == Dir::Response && slot.cell.is_none())
            {
                return Verdict::Continue;
            }
            let mut io = Io::default();
            head.install(&mut io);
            let count = io
                .request
                .as_ref()
                .map(|r| r.headers.len() + 4)
                .or_else(|| io.response.as_ref().map(|r| r.headers.len() + 1))
                .unwrap_or(0) as i32;
            let eos = i32::from(end_of_stream);
            let r = slot.call(&info, &mut io, "on_headers", |s, f, ctx| {
                let cb = if dir == Dir::Request {
                    &f.request_headers
                } else {
                    &f.response_headers
                };
                cb.as_ref()
                    .map_or(Ok(ACTION_CONTINUE), |c| c.call(s, (ctx, count, eos)))
            });
            head.restore(&mut io);
            r
        };
        self.after(i, called, head).await
    }

    /// Acts on a callback's outcome: a local answer, a failure, or callouts
    /// to wait for before the stream goes on.
    async fn after(&self, i: usize, called: Result<Called, Stop>, head: &mut Head) -> Verdict {
        match self.settle_now(i, called) {
            Ok(v) => v,
            Err((i, called)) => self.wait_for_callouts(i, called.dispatched, head).await,
        }
    }

    /// Sends the callouts, hands each answer to the filter, and goes on once
    /// it resumes the stream (or has nothing left to wait for).
    async fn wait_for_callouts(
        &self,
        i: usize,
        mut pending: Vec<Dispatch>,
        head: &mut Head,
    ) -> Verdict {
        let callouts = lock(&self.0).slots[i].plugin.spec.callouts.clone();
        while !pending.is_empty() {
            let answers = join_all(pending.drain(..).map(|d| {
                let call = callouts.call(&d.upstream, d.request, d.timeout);
                async move { (d.token, call.await.ok()) }
            }))
            .await;
            for (token, answer) in answers {
                let called = {
                    let mut st = lock(&self.0);
                    let info = st.info.clone();
                    let slot = &mut st.slots[i];
                    let mut io = Io::default();
                    head.install(&mut io);
                    let r = deliver(slot, &info, &mut io, token, answer);
                    head.restore(&mut io);
                    r
                };
                match called {
                    Ok(c) => {
                        if let Some(l) = c.local {
                            return Verdict::Local(*l);
                        }
                        pending.extend(c.dispatched);
                        if c.resumed {
                            let cell = lock(&self.0).slots[i].cell.clone();
                            if let Some(cell) = cell {
                                for d in pending.drain(..) {
                                    tokio::spawn(deliver_detached(cell.clone(), d));
                                }
                            }
                            return Verdict::Continue;
                        }
                    }
                    Err(Stop::Skip) => return Verdict::Continue,
                    Err(Stop::Failed(plugin)) => return Verdict::Failed { plugin },
                }
            }
        }
        Verdict::Continue
    }

    /// Filters the request body on its way to the upstream (or the AI
    /// handler). A local response sent from a body callback stops the body
    /// with an error; [`Stream::take_local`] then holds the answer.
    pub fn request_body(&self, body: Body) -> Body {
        self.wrap(body, Dir::Request)
    }

    /// Filters the response body on its way to the client.
    pub fn response_body(&self, body: Body) -> Body {
        self.wrap(body, Dir::Response)
    }

    /// Names the consumer (once authentication has run), for the
    /// `loom.consumer` property.
    pub fn set_consumer(&self, name: &str) {
        let mut st = lock(&self.0);
        let mut info = (*st.info).clone();
        info.consumer = Some(name.to_owned());
        st.info = Arc::new(info);
    }

    /// The local response a plugin sent during the request body, if any.
    pub fn take_local(&self) -> Option<LocalResponse> {
        lock(&self.0).local.take()
    }

    fn wrap(&self, body: Body, dir: Dir) -> Body {
        // No body (a GET, a 204): nothing to filter, and the framing stays
        // as it is (a wrapped body would be sent chunked).
        if body.is_end_stream() {
            return body;
        }
        let active = lock(&self.0)
            .slots
            .iter()
            .any(|s| s.cell.is_some() && !s.off);
        if !active {
            return body;
        }
        Filtered {
            inner: body,
            stream: self.clone(),
            dir,
            ended: false,
            trailers: None,
            waiting: None,
        }
        .boxed_unsync()
    }

    /// One slot's body callback on `data` (with what it held back); `data`
    /// becomes what goes on. `None` when the slot does not run.
    fn body_callback(
        &self,
        i: usize,
        dir: Dir,
        data: &mut Bytes,
        eos: bool,
    ) -> Option<Result<Called, Stop>> {
        let mut st = lock(&self.0);
        let info = st.info.clone();
        let slot = &mut st.slots[i];
        if slot.cell.is_none() || slot.off {
            return None;
        }
        // What the filter sees: the chunk itself, or the chunks it held
        // back with this one (copied only then).
        let held = std::mem::take(&mut slot.buffered[dir as usize]);
        let buf = if held.is_empty() {
            std::mem::take(data)
        } else {
            let mut held = held;
            held.extend_from_slice(data);
            held.freeze()
        };
        let kind = if dir == Dir::Request {
            BufferType::RequestBody
        } else {
            BufferType::ResponseBody
        };
        let size = buf.len() as i32;
        let mut io = Io {
            body: Some((kind, buf)),
            ..Io::default()
        };
        let r = slot.call(&info, &mut io, "on_body", |s, f, ctx| {
            let cb = if dir == Dir::Request {
                &f.request_body
            } else {
                &f.response_body
            };
            cb.as_ref().map_or(Ok(ACTION_CONTINUE), |c| {
                c.call(s, (ctx, size, i32::from(eos)))
            })
        });
        let buf = io.body.take().map(|(_, b)| b).unwrap_or_default();
        match &r {
            Ok(c) if c.action != ACTION_CONTINUE && !eos && c.local.is_none() => {
                // Held until the plugin continues or the body ends.
                slot.buffered[dir as usize] = BytesMut::from(buf);
            }
            _ => *data = buf,
        }
        Some(r)
    }

    /// A body verdict as the body's outcome.
    fn body_verdict(&self, v: Verdict) -> Result<(), BoxError> {
        match v {
            Verdict::Continue => Ok(()),
            Verdict::Local(l) => {
                tracing::debug!(status = %l.status, "plugin answered during the body");
                lock(&self.0).local = Some(l);
                Err("stopped by a plugin's local response".into())
            }
            Verdict::Failed { plugin } => Err(format!("plugin {plugin} failed").into()),
        }
    }

    /// The outcome of a callback when no callout has to be waited for;
    /// otherwise the callouts to wait for.
    fn settle_now(
        &self,
        i: usize,
        called: Result<Called, Stop>,
    ) -> Result<Verdict, (usize, Called)> {
        let called = match called {
            Ok(c) => c,
            Err(Stop::Skip) => return Ok(Verdict::Continue),
            Err(Stop::Failed(plugin)) => return Ok(Verdict::Failed { plugin }),
        };
        if let Some(l) = called.local {
            return Ok(Verdict::Local(*l));
        }
        if called.dispatched.is_empty() {
            return Ok(Verdict::Continue);
        }
        if called.action == ACTION_CONTINUE || called.resumed {
            let cell = lock(&self.0).slots[i].cell.clone();
            if let Some(cell) = cell {
                for d in called.dispatched {
                    tokio::spawn(deliver_detached(cell.clone(), d));
                }
            }
            return Ok(Verdict::Continue);
        }
        Err((i, called))
    }

    /// Runs one chunk through the body callbacks, from slot `from` on (in
    /// the direction's order); what comes out goes on. Synchronous unless a
    /// filter pauses for a callout: then the rest comes as a future.
    fn filter_chunk(&self, dir: Dir, mut data: Bytes, eos: bool, from: usize) -> Chunk {
        let n = lock(&self.0).slots.len();
        for k in from..n {
            let i = if dir == Dir::Request { k } else { n - 1 - k };
            let Some(called) = self.body_callback(i, dir, &mut data, eos) else {
                continue;
            };
            match self.settle_now(i, called) {
                Ok(v) => {
                    if let Err(e) = self.body_verdict(v) {
                        return Chunk::Done(Err(e));
                    }
                }
                Err((i, called)) => {
                    let stream = self.clone();
                    return Chunk::Wait(Box::pin(async move {
                        let mut head = Head::None;
                        let v = stream
                            .wait_for_callouts(i, called.dispatched, &mut head)
                            .await;
                        stream.body_verdict(v)?;
                        if data.is_empty() && !eos {
                            return Ok(data);
                        }
                        match stream.filter_chunk(dir, data, eos, k + 1) {
                            Chunk::Done(r) => r,
                            Chunk::Wait(f) => f.await,
                        }
                    }));
                }
            }
            if data.is_empty() && !eos {
                break;
            }
        }
        Chunk::Done(Ok(data))
    }

    /// Runs the trailers callbacks; the trailers come back changed.
    fn trailers(&self, dir: Dir, mut trailers: http::HeaderMap) -> http::HeaderMap {
        let mut st = lock(&self.0);
        let info = st.info.clone();
        let n = st.slots.len();
        for k in 0..n {
            let i = if dir == Dir::Request { k } else { n - 1 - k };
            let slot = &mut st.slots[i];
            if slot.cell.is_none() || slot.off {
                continue;
            }
            let count = trailers.len() as i32;
            let mut io = Io::default();
            if dir == Dir::Request {
                io.request_trailers = Some(Box::new(trailers));
            } else {
                io.response_trailers = Some(Box::new(trailers));
            }
            let _ = slot.call(&info, &mut io, "on_trailers", |s, f, ctx| {
                let cb = if dir == Dir::Request {
                    &f.request_trailers
                } else {
                    &f.response_trailers
                };
                cb.as_ref()
                    .map_or(Ok(ACTION_CONTINUE), |c| c.call(s, (ctx, count)))
            });
            trailers = io
                .request_trailers
                .take()
                .or_else(|| io.response_trailers.take())
                .map(|t| *t)
                .unwrap_or_default();
        }
        trailers
    }
}

/// What a chunk's pass through the body callbacks gave.
enum Chunk {
    Done(Result<Bytes, BoxError>),
    Wait(BoxFuture<'static, Result<Bytes, BoxError>>),
}

/// A body run through the plugins' body callbacks. Chunks are filtered as
/// they are polled, synchronously; only a filter that waits for a callout
/// makes it hold a future.
struct Filtered {
    inner: Body,
    stream: Stream,
    dir: Dir,
    ended: bool,
    trailers: Option<http::HeaderMap>,
    waiting: Option<BoxFuture<'static, Result<Bytes, BoxError>>>,
}

impl http_body::Body for Filtered {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        use std::task::Poll;
        let this = self.get_mut();
        loop {
            if let Some(w) = this.waiting.as_mut() {
                let out = std::task::ready!(w.as_mut().poll(cx));
                this.waiting = None;
                match out {
                    Ok(data) if !data.is_empty() => {
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                    Ok(_) => continue,
                    Err(e) => {
                        this.ended = true;
                        this.trailers = None;
                        return Poll::Ready(Some(Err(e)));
                    }
                }
            }
            if let Some(t) = this.trailers.take() {
                return Poll::Ready(Some(Ok(Frame::trailers(t))));
            }
            if this.ended {
                return Poll::Ready(None);
            }
            let (data, trailers, done) =
                match std::task::ready!(std::pin::Pin::new(&mut this.inner).poll_frame(cx)) {
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) => (data, None, false),
                        Err(frame) => (Bytes::new(), frame.into_trailers().ok(), true),
                    },
                    Some(Err(e)) => {
                        this.ended = true;
                        return Poll::Ready(Some(Err(e)));
                    }
                    None => (Bytes::new(), None, true),
                };
            let eos = done || this.inner.is_end_stream();
            this.ended = eos;
            if let Some(t) = trailers {
                this.trailers = Some(this.stream.trailers(this.dir, t));
            }
            match this.stream.filter_chunk(this.dir, data, eos, 0) {
                Chunk::Done(Ok(out)) if !out.is_empty() => {
                    return Poll::Ready(Some(Ok(Frame::data(out))));
                }
                Chunk::Done(Ok(_)) => continue,
                Chunk::Done(Err(e)) => {
                    this.ended = true;
                    this.trailers = None;
                    return Poll::Ready(Some(Err(e)));
                }
                // A filter waits for a callout: polled from the top.
                Chunk::Wait(f) => this.waiting = Some(f),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.trailers.is_none() && self.waiting.is_none()
    }
}

fn into_request(head: Head) -> http::request::Parts {
    match head {
        Head::Request(p) => p,
        // Install/restore keep the variant; this cannot happen.
        _ => http::Request::new(()).into_parts().0,
    }
}

fn into_response(head: Head) -> http::response::Parts {
    match head {
        Head::Response(p) => p,
        _ => http::Response::new(()).into_parts().0,
    }
}

/// The sizes `proxy_on_http_call_response` reports: headers (with
/// `:status`), body, trailers; all zero for a failed call.
fn answer_sizes(answer: &Option<CallResponse>) -> (i32, i32, i32) {
    answer.as_ref().map_or((0, 0, 0), |a| {
        (
            a.headers.len() as i32 + 1,
            a.body.len() as i32,
            a.trailers.len() as i32,
        )
    })
}

/// Hands a callout's answer (or its failure: no headers) to the context
/// that made it.
fn deliver(
    slot: &mut Slot,
    info: &Arc<StreamInfo>,
    io: &mut Io,
    token: u32,
    answer: Option<CallResponse>,
) -> Result<Called, Stop> {
    let (headers, body, trailers) = answer_sizes(&answer);
    io.call = answer.map(Box::new);
    slot.call(info, io, "on_http_call_response", |s, f, ctx| {
        if let Some(c) = &f.call_response {
            c.call(s, (ctx, token as i32, headers, body, trailers))?;
        }
        Ok(ACTION_CONTINUE)
    })
}

/// Sends a callout whose answer no stream waits for (made by the root
/// context, or by a stream that went on), and hands the answer over.
pub(crate) async fn deliver_detached(cell: Arc<Cell>, d: Dispatch) {
    let callouts = cell.plugin.spec.callouts.clone();
    let answer = callouts.call(&d.upstream, d.request, d.timeout).await.ok();
    if cell.is_broken() {
        return;
    }
    let (headers, body, trailers) = answer_sizes(&answer);
    let mut io = Io {
        call: answer.map(Box::new),
        ..Io::default()
    };
    let (r, more) = {
        let mut vm = cell.lock();
        vm.store.data_mut().effective = d.context;
        let r = vm.call(&mut io, |s, f| match &f.call_response {
            Some(c) => c.call(
                s,
                (d.context as i32, d.token as i32, headers, body, trailers),
            ),
            None => Ok(()),
        });
        cell.after_call(&mut vm);
        (r, std::mem::take(&mut vm.store.data_mut().dispatched))
    };
    if let Err(f) = r {
        cell.fault("on_http_call_response", &f);
        return;
    }
    for d in more {
        Box::pin(deliver_detached(cell.clone(), d)).await;
    }
}

impl Drop for State {
    /// Ends every stream context the request opened.
    fn drop(&mut self) {
        for slot in &mut self.slots {
            let Some(cell) = slot.cell.take() else {
                continue;
            };
            if cell.is_broken() {
                continue;
            }
            let ctx = slot.ctx;
            let mut io = Io {
                info: Some(self.info.clone()),
                props: slot.props.take(),
                ..Io::default()
            };
            let mut vm = cell.lock();
            vm.store.data_mut().effective = ctx as u32;
            let r = vm.call(&mut io, |s, f| {
                if let Some(d) = &f.done {
                    d.call(&mut *s, ctx)?;
                }
                if let Some(l) = &f.log {
                    l.call(&mut *s, ctx)?;
                }
                if let Some(d) = &f.delete {
                    d.call(&mut *s, ctx)?;
                }
                Ok(())
            });
            let dispatched = std::mem::take(&mut vm.store.data_mut().dispatched);
            drop(vm);
            if let Err(f) = r {
                cell.fault("on_done", &f);
                continue;
            }
            if !dispatched.is_empty()
                && let Ok(h) = tokio::runtime::Handle::try_current()
            {
                for d in dispatched {
                    h.spawn(deliver_detached(cell.clone(), d));
                }
            }
        }
    }
}

//! The host side of the ABI: what a filter's imports do. Each function reads
//! its arguments out of the instance's linear memory, acts on the
//! [`Host`] state of the current call, and writes results back into memory
//! the filter allocated (`proxy_on_memory_allocate`).
//!
//! A filter never sees anything but its own memory and what the current
//! stream hands it: the request and response heads, the body chunk being
//! filtered, its own configuration. Provider keys and other plugins' memory
//! are out of its reach.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Uri};
use tokio::sync::mpsc::UnboundedSender;
use wasmtime::{Caller, Linker, Memory, ResourceLimiter, TypedFunc};

use super::abi::{self, BufferType, MapType, MetricKind, Status};
use super::shared::{self, Metric};
use super::{CallResponse, LocalResponse, Spec, StreamInfo};

/// One outgoing `proxy_http_call`, queued until the call returns.
pub(crate) struct Dispatch {
    pub token: u32,
    pub context: u32,
    pub upstream: String,
    pub request: http::Request<Bytes>,
    pub timeout: Duration,
}

/// The data of one stream handed to the filter for the length of a callback.
#[derive(Default)]
pub(crate) struct Io {
    /// The request head, while it may still change (request headers phase).
    pub request: Option<http::request::Parts>,
    pub response: Option<http::response::Parts>,
    pub request_trailers: Option<Box<HeaderMap>>,
    pub response_trailers: Option<Box<HeaderMap>>,
    /// The body being filtered (buffered chunks included).
    pub body: Option<(BufferType, Bytes)>,
    /// The answer delivered to `proxy_on_http_call_response`.
    pub call: Option<Box<CallResponse>>,
    /// Set by `proxy_send_local_response`.
    pub local: Option<Box<LocalResponse>>,
    /// Set by `proxy_continue_stream`/`proxy_continue_request`.
    pub resumed: bool,
    pub info: Option<Arc<StreamInfo>>,
    /// Values the filter stored with `proxy_set_property`.
    pub props: Option<HashMap<String, Vec<u8>>>,
}

impl Io {
    /// Moves what is set here into `to`, leaving this empty. Field by field:
    /// a whole-struct swap would copy every absent field too, twice per
    /// callback.
    pub fn hand_over(&mut self, to: &mut Io) {
        fn mv<T>(from: &mut Option<T>, to: &mut Option<T>) {
            if from.is_some() {
                *to = from.take();
            }
        }
        mv(&mut self.request, &mut to.request);
        mv(&mut self.response, &mut to.response);
        mv(&mut self.request_trailers, &mut to.request_trailers);
        mv(&mut self.response_trailers, &mut to.response_trailers);
        mv(&mut self.body, &mut to.body);
        mv(&mut self.call, &mut to.call);
        mv(&mut self.local, &mut to.local);
        mv(&mut self.info, &mut to.info);
        mv(&mut self.props, &mut to.props);
        to.resumed |= std::mem::take(&mut self.resumed);
    }
}

/// The memory ceiling of one instance; remembers a refused growth so that
/// the failure it causes is reported as the limit, not as a bare trap.
pub(crate) struct Limits {
    pub max_memory: usize,
    pub hit: bool,
}

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let ok = desired <= self.max_memory;
        self.hit |= !ok;
        Ok(ok)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }
}

/// The state a filter instance's host functions work on.
pub(crate) struct Host {
    pub spec: Arc<Spec>,
    pub limits: Limits,
    pub memory: Option<Memory>,
    pub alloc: Option<TypedFunc<i32, i32>>,
    /// The context the filter is acting for (`proxy_set_effective_context`).
    pub effective: u32,
    pub root: u32,
    pub io: Io,
    /// Calls dispatched during the current callback.
    pub dispatched: Vec<Dispatch>,
    pub next_token: u32,
    /// The tick period the root context asked for, and whether it changed.
    pub tick: Option<Duration>,
    pub tick_changed: bool,
    /// Where shared-queue arrivals for this instance's root are sent.
    pub queue_notify: Option<UnboundedSender<u32>>,
    pub metrics: HashMap<u32, Arc<Metric>>,
    /// Bytes written to stdout/stderr not yet ended by a newline.
    pub console: Vec<u8>,
}

impl Host {
    pub fn new(spec: Arc<Spec>, limits: Limits) -> Host {
        Host {
            spec,
            limits,
            memory: None,
            alloc: None,
            effective: 0,
            root: 0,
            io: Io::default(),
            dispatched: Vec::new(),
            next_token: 0,
            tick: None,
            tick_changed: false,
            queue_notify: None,
            metrics: HashMap::new(),
            console: Vec::new(),
        }
    }
}

type C<'a> = Caller<'a, Host>;

/// Imports a filter may use. Anything else is refused at load, by name.
pub(crate) fn known(module: &str, name: &str) -> bool {
    match module {
        "env" => ENV.contains(&name),
        "wasi_snapshot_preview1" | "wasi_unstable" => WASI.contains(&name),
        _ => false,
    }
}

const ENV: &[&str] = &[
    "proxy_log",
    "proxy_get_log_level",
    "proxy_get_current_time_nanoseconds",
    "proxy_set_tick_period_milliseconds",
    "proxy_get_configuration",
    "proxy_get_buffer_bytes",
    "proxy_set_buffer_bytes",
    "proxy_get_header_map_pairs",
    "proxy_set_header_map_pairs",
    "proxy_get_header_map_value",
    "proxy_replace_header_map_value",
    "proxy_remove_header_map_value",
    "proxy_add_header_map_value",
    "proxy_get_header_map_size",
    "proxy_get_property",
    "proxy_set_property",
    "proxy_get_shared_data",
    "proxy_set_shared_data",
    "proxy_register_shared_queue",
    "proxy_resolve_shared_queue",
    "proxy_dequeue_shared_queue",
    "proxy_enqueue_shared_queue",
    "proxy_continue_stream",
    "proxy_close_stream",
    "proxy_continue_request",
    "proxy_continue_response",
    "proxy_clear_route_cache",
    "proxy_send_local_response",
    "proxy_http_call",
    "proxy_grpc_call",
    "proxy_grpc_stream",
    "proxy_grpc_send",
    "proxy_grpc_cancel",
    "proxy_grpc_close",
    "proxy_get_status",
    "proxy_set_effective_context",
    "proxy_done",
    "proxy_call_foreign_function",
    "proxy_define_metric",
    "proxy_increment_metric",
    "proxy_record_metric",
    "proxy_get_metric",
];

const WASI: &[&str] = &[
    "args_get",
    "args_sizes_get",
    "environ_get",
    "environ_sizes_get",
    "clock_time_get",
    "random_get",
    "fd_write",
    "fd_read",
    "fd_close",
    "fd_seek",
    "fd_fdstat_get",
    "fd_prestat_get",
    "fd_prestat_dir_name",
    "proc_exit",
    "sched_yield",
    "poll_oneoff",
];

// ----- memory -----

fn memory(c: &C<'_>) -> wasmtime::Result<Memory> {
    c.data()
        .memory
        .ok_or_else(|| wasmtime::Error::msg("the module exports no memory"))
}

/// A copy of `len` bytes at `ptr` of the filter's memory.
fn read(c: &C<'_>, ptr: i32, len: i32) -> Option<Vec<u8>> {
    let mem = c.data().memory?;
    let (ptr, len) = (ptr as u32 as usize, len as u32 as usize);
    mem.data(c)
        .get(ptr..ptr.checked_add(len)?)
        .map(<[u8]>::to_vec)
}

fn write_u32(c: &mut C<'_>, at: i32, v: u32) -> bool {
    let Ok(mem) = memory(c) else { return false };
    let at = at as u32 as usize;
    match mem.data_mut(c).get_mut(at..at + 4) {
        Some(s) => {
            s.copy_from_slice(&v.to_le_bytes());
            true
        }
        None => false,
    }
}

fn write_u64(c: &mut C<'_>, at: i32, v: u64) -> bool {
    let Ok(mem) = memory(c) else { return false };
    let at = at as u32 as usize;
    match mem.data_mut(c).get_mut(at..at + 8) {
        Some(s) => {
            s.copy_from_slice(&v.to_le_bytes());
            true
        }
        None => false,
    }
}

/// Copies `data` into memory the filter allocates, and stores its address
/// and length at `ret_ptr` and `ret_len`.
fn give(c: &mut C<'_>, data: &[u8], ret_ptr: i32, ret_len: i32) -> wasmtime::Result<Status> {
    let alloc = c
        .data()
        .alloc
        .clone()
        .ok_or_else(|| wasmtime::Error::msg("the module exports no allocator"))?;
    let len = i32::try_from(data.len()).map_err(|_| wasmtime::Error::msg("value too large"))?;
    let ptr = alloc.call(&mut *c, len)?;
    if ptr == 0 && len != 0 {
        return Ok(Status::InternalFailure);
    }
    let mem = memory(c)?;
    let start = ptr as u32 as usize;
    match mem.data_mut(&mut *c).get_mut(start..start + data.len()) {
        Some(s) => s.copy_from_slice(data),
        None => return Ok(Status::InvalidMemoryAccess),
    }
    if !write_u32(c, ret_ptr, ptr as u32) || !write_u32(c, ret_len, len as u32) {
        return Ok(Status::InvalidMemoryAccess);
    }
    Ok(Status::Ok)
}

/// `len` bytes at `ptr` of `data` (the filter's memory).
fn slice(data: &[u8], ptr: i32, len: i32) -> Option<&[u8]> {
    let (ptr, len) = (ptr as u32 as usize, len as u32 as usize);
    data.get(ptr..ptr.checked_add(len)?)
}

fn text(c: &C<'_>, ptr: i32, len: i32) -> Option<String> {
    String::from_utf8(read(c, ptr, len)?).ok()
}

// ----- header maps -----

/// The pairs of a map, pseudo-headers first, as the filter sees them.
fn pairs_of(io: &Io, map: MapType) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let headers = match map {
        MapType::RequestHeaders => {
            let r = io.request.as_ref()?;
            out.push((b":method".to_vec(), r.method.as_str().as_bytes().to_vec()));
            out.push((b":path".to_vec(), path_of(&r.uri).as_bytes().to_vec()));
            out.push((b":authority".to_vec(), authority_of(r).into_bytes()));
            out.push((
                b":scheme".to_vec(),
                r.uri
                    .scheme_str()
                    .unwrap_or(scheme_of(io))
                    .as_bytes()
                    .to_vec(),
            ));
            &r.headers
        }
        MapType::ResponseHeaders => {
            let r = io.response.as_ref()?;
            out.push((b":status".to_vec(), r.status.as_str().as_bytes().to_vec()));
            &r.headers
        }
        MapType::RequestTrailers => io.request_trailers.as_deref()?,
        MapType::ResponseTrailers => io.response_trailers.as_deref()?,
        MapType::CallResponseHeaders => {
            let r = io.call.as_ref()?;
            out.push((b":status".to_vec(), r.status.as_str().as_bytes().to_vec()));
            &r.headers
        }
        MapType::CallResponseTrailers => &io.call.as_ref()?.trailers,
    };
    for (k, v) in headers {
        out.push((k.as_str().as_bytes().to_vec(), v.as_bytes().to_vec()));
    }
    Some(out)
}

fn scheme_of(io: &Io) -> &'static str {
    io.info.as_ref().map_or("http", |i| i.scheme)
}

fn path_of(uri: &Uri) -> &str {
    uri.path_and_query().map_or("/", |p| p.as_str())
}

fn authority_of(r: &http::request::Parts) -> String {
    r.headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| r.uri.authority().map(|a| a.to_string()))
        .unwrap_or_default()
}

fn value_of(io: &Io, map: MapType, key: &str) -> Option<Vec<u8>> {
    if key.starts_with(':') {
        let key = key.to_ascii_lowercase();
        return pairs_of(io, map)?
            .into_iter()
            .find(|(k, _)| k == key.as_bytes())
            .map(|(_, v)| v);
    }
    let headers = headers_of(io, map)?;
    let mut all = headers.get_all(key).iter();
    let first = all.next()?;
    let mut v = first.as_bytes().to_vec();
    for more in all {
        v.push(b',');
        v.extend_from_slice(more.as_bytes());
    }
    Some(v)
}

fn headers_of(io: &Io, map: MapType) -> Option<&HeaderMap> {
    match map {
        MapType::RequestHeaders => io.request.as_ref().map(|r| &r.headers),
        MapType::ResponseHeaders => io.response.as_ref().map(|r| &r.headers),
        MapType::RequestTrailers => io.request_trailers.as_deref(),
        MapType::ResponseTrailers => io.response_trailers.as_deref(),
        MapType::CallResponseHeaders => io.call.as_ref().map(|r| &r.headers),
        MapType::CallResponseTrailers => io.call.as_ref().map(|r| &r.trailers),
    }
}

/// The writable map of this phase; `None` when the phase is past (writes
/// are then ignored, as a filter cannot change what was already sent).
fn headers_mut(io: &mut Io, map: MapType) -> Option<&mut HeaderMap> {
    match map {
        MapType::RequestHeaders => io.request.as_mut().map(|r| &mut r.headers),
        MapType::ResponseHeaders => io.response.as_mut().map(|r| &mut r.headers),
        MapType::RequestTrailers => io.request_trailers.as_deref_mut(),
        MapType::ResponseTrailers => io.response_trailers.as_deref_mut(),
        _ => None,
    }
}

enum Edit {
    Replace,
    Add,
    Remove,
}

/// Applies one header edit; pseudo-headers change the request line or the
/// status.
fn edit(io: &mut Io, map: MapType, key: &[u8], value: &[u8], how: Edit) -> Status {
    if let Some(pseudo) = key.strip_prefix(b":") {
        let Ok(pseudo) = std::str::from_utf8(pseudo) else {
            return Status::BadArgument;
        };
        return edit_pseudo(io, map, &pseudo.to_ascii_lowercase(), value, how);
    }
    let Some(headers) = headers_mut(io, map) else {
        return Status::Ok;
    };
    // `from_bytes` lowercases as it parses.
    let Ok(name) = HeaderName::from_bytes(key) else {
        return Status::BadArgument;
    };
    match how {
        Edit::Remove => {
            headers.remove(&name);
        }
        Edit::Replace | Edit::Add => {
            let Ok(v) = HeaderValue::from_bytes(value) else {
                return Status::BadArgument;
            };
            if matches!(how, Edit::Replace) {
                headers.insert(name, v);
            } else {
                headers.append(name, v);
            }
        }
    }
    Status::Ok
}

fn edit_pseudo(io: &mut Io, map: MapType, pseudo: &str, value: &[u8], how: Edit) -> Status {
    if matches!(how, Edit::Remove) {
        return Status::Ok;
    }
    match (map, pseudo) {
        (MapType::RequestHeaders, _) => {
            let Some(r) = io.request.as_mut() else {
                return Status::Ok;
            };
            match pseudo {
                "method" => match Method::from_bytes(value) {
                    Ok(m) => r.method = m,
                    Err(_) => return Status::BadArgument,
                },
                "path" => {
                    let mut parts = r.uri.clone().into_parts();
                    match http::uri::PathAndQuery::try_from(value) {
                        Ok(p) => parts.path_and_query = Some(p),
                        Err(_) => return Status::BadArgument,
                    }
                    match Uri::from_parts(parts) {
                        Ok(u) => r.uri = u,
                        Err(_) => return Status::BadArgument,
                    }
                }
                "authority" => match HeaderValue::from_bytes(value) {
                    Ok(v) => {
                        r.headers.insert(http::header::HOST, v);
                    }
                    Err(_) => return Status::BadArgument,
                },
                _ => {}
            }
            Status::Ok
        }
        (MapType::ResponseHeaders, "status") => {
            let Some(r) = io.response.as_mut() else {
                return Status::Ok;
            };
            match std::str::from_utf8(value)
                .ok()
                .and_then(|s| s.parse::<u16>().ok())
                .and_then(|s| StatusCode::from_u16(s).ok())
            {
                Some(s) => {
                    r.status = s;
                    Status::Ok
                }
                None => Status::BadArgument,
            }
        }
        _ => Status::Ok,
    }
}

// ----- properties -----

fn property(io: &Io, spec: &Spec, path: &[&str]) -> Option<Vec<u8>> {
    let joined = path.join(".");
    if let Some(v) = io.props.as_ref().and_then(|p| p.get(&joined)) {
        return Some(v.clone());
    }
    let info = io.info.as_deref();
    let s = |v: &str| Some(v.as_bytes().to_vec());
    let int = |v: i64| Some(v.to_le_bytes().to_vec());
    let addr = |a: Option<SocketAddr>| a.map(|a| a.to_string().into_bytes());
    match joined.as_str() {
        "plugin_name" => s(&spec.name),
        "plugin_vm_id" => s(&spec.vm_id),
        "plugin_root_id" => s(""),
        "request.path" => match &io.request {
            Some(r) => s(path_of(&r.uri)),
            None => s(path_of(&info?.uri)),
        },
        "request.url_path" => match &io.request {
            Some(r) => s(r.uri.path()),
            None => s(info?.uri.path()),
        },
        "request.query" => match &io.request {
            Some(r) => s(r.uri.query().unwrap_or("")),
            None => s(info?.uri.query().unwrap_or("")),
        },
        "request.method" => match &io.request {
            Some(r) => s(r.method.as_str()),
            None => s(info?.method.as_str()),
        },
        "request.host" => match &io.request {
            Some(r) => Some(authority_of(r).into_bytes()),
            None => match &info?.host {
                Some(h) => Some(h.as_bytes().to_vec()),
                None => Some(
                    info?
                        .uri
                        .authority()
                        .map(|a| a.as_str())
                        .unwrap_or("")
                        .as_bytes()
                        .to_vec(),
                ),
            },
        },
        "request.scheme" => s(scheme_of(io)),
        "request.protocol" => s(info?.protocol),
        "request.id" => s(&info?.request_id),
        "source.address" => addr(info?.source),
        "source.port" => int(i64::from(info?.source?.port())),
        "destination.address" => addr(info?.destination),
        "destination.port" => int(i64::from(info?.destination?.port())),
        "route_name" | "xds.route_name" | "loom.route" => s(&info?.route),
        "cluster_name" | "xds.cluster_name" | "loom.upstream" => s(info?.upstream.as_ref()?.name()),
        "loom.consumer" => s(info?.consumer.as_deref()?),
        "response.code" => int(i64::from(io.response.as_ref()?.status.as_u16())),
        _ => None,
    }
}

// ----- the linker -----

macro_rules! ok {
    ($e:expr) => {
        Ok($e as i32)
    };
}

/// Every host function, bound once per engine; instances are created from it.
pub(crate) fn linker(engine: &wasmtime::Engine) -> wasmtime::Result<Linker<Host>> {
    let mut l: Linker<Host> = Linker::new(engine);
    env(&mut l)?;
    maps(&mut l)?;
    buffers(&mut l)?;
    shared_state(&mut l)?;
    streams(&mut l)?;
    metrics(&mut l)?;
    wasi(&mut l)?;
    Ok(l)
}

fn env(l: &mut Linker<Host>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_log",
        |c: C<'_>, level: i32, ptr: i32, len: i32| -> wasmtime::Result<i32> {
            let Some(msg) = read(&c, ptr, len) else {
                return ok!(Status::InvalidMemoryAccess);
            };
            let msg = String::from_utf8_lossy(&msg);
            let plugin = c.data().spec.name.as_str();
            match level {
                0 => tracing::trace!(plugin, "{msg}"),
                1 => tracing::debug!(plugin, "{msg}"),
                2 => tracing::info!(plugin, "{msg}"),
                3 => tracing::warn!(plugin, "{msg}"),
                _ => tracing::error!(plugin, "{msg}"),
            }
            ok!(Status::Ok)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_log_level",
        |mut c: C<'_>, ret: i32| -> wasmtime::Result<i32> {
            let level = if tracing::enabled!(tracing::Level::TRACE) {
                0
            } else if tracing::enabled!(tracing::Level::DEBUG) {
                1
            } else if tracing::enabled!(tracing::Level::INFO) {
                2
            } else if tracing::enabled!(tracing::Level::WARN) {
                3
            } else {
                4
            };
            if !write_u32(&mut c, ret, level) {
                return ok!(Status::InvalidMemoryAccess);
            }
            ok!(Status::Ok)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        |mut c: C<'_>, ret: i32| -> wasmtime::Result<i32> {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            if !write_u64(&mut c, ret, now) {
                return ok!(Status::InvalidMemoryAccess);
            }
            ok!(Status::Ok)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_tick_period_milliseconds",
        |mut c: C<'_>, ms: i32| -> wasmtime::Result<i32> {
            let h = c.data_mut();
            h.tick = (ms != 0).then(|| Duration::from_millis(u64::from(ms as u32)));
            h.tick_changed = true;
            ok!(Status::Ok)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_configuration",
        |mut c: C<'_>, ret_ptr: i32, ret_len: i32| -> wasmtime::Result<i32> {
            let cfg = c.data().spec.config.clone();
            ok!(give(&mut c, &cfg, ret_ptr, ret_len)?)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_property",
        |mut c: C<'_>, ptr: i32, len: i32, ret_ptr: i32, ret_len: i32| -> wasmtime::Result<i32> {
            let Some(raw) = read(&c, ptr, len) else {
                return ok!(Status::InvalidMemoryAccess);
            };
            let path = abi::property_path(&raw);
            match property(&c.data().io, &c.data().spec, &path) {
                Some(v) => ok!(give(&mut c, &v, ret_ptr, ret_len)?),
                None => ok!(Status::NotFound),
            }
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_property",
        |mut c: C<'_>, ptr: i32, len: i32, vptr: i32, vlen: i32| -> wasmtime::Result<i32> {
            let (Some(raw), Some(value)) = (read(&c, ptr, len), read(&c, vptr, vlen)) else {
                return ok!(Status::InvalidMemoryAccess);
            };
            let key = abi::property_path(&raw).join(".");
            c.data_mut()
                .io
                .props
                .get_or_insert_with(HashMap::new)
                .insert(key, value);
            ok!(Status::Ok)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_effective_context",
        |mut c: C<'_>, id: i32| -> wasmtime::Result<i32> {
            c.data_mut().effective = id as u32;
            ok!(Status::Ok)
        },
    )?;
    l.func_wrap("env", "proxy_done", |_c: C<'_>| -> wasmtime::Result<i32> {
        ok!(Status::Ok)
    })?;
    l.func_wrap(
        "env",
        "proxy_call_foreign_function",
        |_c: C<'_>,
         _a: i32,
         _b: i32,
         _d: i32,
         _e: i32,
         _f: i32,
         _g: i32|
         -> wasmtime::Result<i32> { ok!(Status::NotFound) },
    )?;
    Ok(())
}

fn maps(l: &mut Linker<Host>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        |mut c: C<'_>, map: i32, ret_ptr: i32, ret_len: i32| -> wasmtime::Result<i32> {
            let Some(map) = MapType::from_abi(map) else {
                return ok!(Status::BadArgument);
            };
            let pairs = pairs_of(&c.data().io, map).unwrap_or_default();
            let enc = abi::encode_pairs(pairs.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
            ok!(give(&mut c, &enc, ret_ptr, ret_len)?)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_header_map_size",
        |mut c: C<'_>, map: i32, ret: i32| -> wasmtime::Result<i32> {
            let Some(map) = MapType::from_abi(map) else {
                return ok!(Status::BadArgument);
            };
            let pairs = pairs_of(&c.data().io, map).unwrap_or_default();
            let size =
                abi::encode_pairs(pairs.iter().map(|(k, v)| (k.as_slice(), v.as_slice()))).len();
            if !write_u32(&mut c, ret, size as u32) {
                return ok!(Status::InvalidMemoryAccess);
            }
            ok!(Status::Ok)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_header_map_pairs",
        |mut c: C<'_>, map: i32, ptr: i32, len: i32| -> wasmtime::Result<i32> {
            let Some(map) = MapType::from_abi(map) else {
                return ok!(Status::BadArgument);
            };
            let Some(raw) = read(&c, ptr, len) else {
                return ok!(Status::InvalidMemoryAccess);
            };
            let Some(pairs) = abi::decode_pairs(&raw) else {
                return ok!(Status::ParseFailure);
            };
            let io = &mut c.data_mut().io;
            if let Some(h) = headers_mut(io, map) {
                h.clear();
            }
            for (k, v) in pairs {
                let s = edit(io, map, k, v, Edit::Add);
                if s != Status::Ok {
                    return ok!(s);
                }
            }
            ok!(Status::Ok)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut c: C<'_>,
         map: i32,
         kp: i32,
         kl: i32,
         ret_ptr: i32,
         ret_len: i32|
         -> wasmtime::Result<i32> {
            let Some(map) = MapType::from_abi(map) else {
                return ok!(Status::BadArgument);
            };
            let Some(key) = text(&c, kp, kl) else {
                return ok!(Status::InvalidMemoryAccess);
            };
            match value_of(&c.data().io, map, &key) {
                Some(v) => ok!(give(&mut c, &v, ret_ptr, ret_len)?),
                None => ok!(Status::NotFound),
            }
        },
    )?;
    for (name, how) in [
        ("proxy_replace_header_map_value", 0),
        ("proxy_add_header_map_value", 1),
    ] {
        l.func_wrap(
            "env",
            name,
            move |mut c: C<'_>,
                  map: i32,
                  kp: i32,
                  kl: i32,
                  vp: i32,
                  vl: i32|
                  -> wasmtime::Result<i32> {
                let Some(map) = MapType::from_abi(map) else {
                    return ok!(Status::BadArgument);
                };
                let mem = memory(&c)?;
                // Straight from the filter's memory: no copy but the header's own.
                let (data, host) = mem.data_and_store_mut(&mut c);
                let (Some(k), Some(v)) = (slice(data, kp, kl), slice(data, vp, vl)) else {
                    return ok!(Status::InvalidMemoryAccess);
                };
                let how = if how == 0 { Edit::Replace } else { Edit::Add };
                ok!(edit(&mut host.io, map, k, v, how))
            },
        )?;
    }
    l.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |mut c: C<'_>, map: i32, kp: i32, kl: i32| -> wasmtime::Result<i32> {
            let Some(map) = MapType::from_abi(map) else {
                return ok!(Status::BadArgument);
            };
            let mem = memory(&c)?;
            let (data, host) = mem.data_and_store_mut(&mut c);
            let Some(k) = slice(data, kp, kl) else {
                return ok!(Status::InvalidMemoryAccess);
            };
            ok!(edit(&mut host.io, map, k, b"", Edit::Remove))
        },
    )?;
    Ok(())
}

fn buffers(l: &mut Linker<Host>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |mut c: C<'_>,
         kind: i32,
         start: i32,
         max: i32,
         ret_ptr: i32,
         ret_len: i32|
         -> wasmtime::Result<i32> {
            let Some(kind) = BufferType::from_abi(kind) else {
                return ok!(Status::BadArgument);
            };
            let h = c.data();
            let whole: Bytes = match kind {
                BufferType::VmConfiguration => h.spec.vm_config.clone(),
                BufferType::PluginConfiguration => h.spec.config.clone(),
                BufferType::CallResponseBody => match &h.io.call {
                    Some(r) => r.body.clone(),
                    None => return ok!(Status::NotFound),
                },
                BufferType::RequestBody | BufferType::ResponseBody => match &h.io.body {
                    Some((k, b)) if *k == kind => b.clone(),
                    _ => return ok!(Status::NotFound),
                },
            };
            let start = (start as u32 as usize).min(whole.len());
            let end = start.saturating_add(max as u32 as usize).min(whole.len());
            ok!(give(&mut c, &whole[start..end], ret_ptr, ret_len)?)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_buffer_bytes",
        |mut c: C<'_>,
         kind: i32,
         start: i32,
         size: i32,
         ptr: i32,
         len: i32|
         -> wasmtime::Result<i32> {
            let Some(kind) = BufferType::from_abi(kind) else {
                return ok!(Status::BadArgument);
            };
            let Some(data) = read(&c, ptr, len) else {
                return ok!(Status::InvalidMemoryAccess);
            };
            let Some((k, body)) = c.data_mut().io.body.as_mut() else {
                return ok!(Status::NotFound);
            };
            if *k != kind {
                return ok!(Status::NotFound);
            }
            let start = (start as u32 as usize).min(body.len());
            let end = start.saturating_add(size as u32 as usize).min(body.len());
            let mut out = BytesMut::with_capacity(body.len() - (end - start) + data.len());
            out.extend_from_slice(&body[..start]);
            out.extend_from_slice(&data);
            out.extend_from_slice(&body[end..]);
            *body = out.freeze();
            ok!(Status::Ok)
        },
    )?;
    Ok(())
}

fn shared_state(l: &mut Linker<Host>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_get_shared_data",
        |mut c: C<'_>,
         kp: i32,
         kl: i32,
         ret_ptr: i32,
         ret_len: i32,
         ret_cas: i32|
         -> wasmtime::Result<i32> {
            let Some(key) = text(&c, kp, kl) else {
                return ok!(Status::InvalidMemoryAccess);
            };
            let Some((value, cas)) = shared::get(&c.data().spec.vm_id, &key) else {
                return ok!(Status::NotFound);
            };
            let s = give(&mut c, &value, ret_ptr, ret_len)?;
            if s == Status::Ok && !write_u32(&mut c, ret_cas, cas) {
                return ok!(Status::InvalidMemoryAccess);
            }
            ok!(s)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_shared_data",
        |c: C<'_>, kp: i32, kl: i32, vp: i32, vl: i32, cas: i32| -> wasmtime::Result<i32> {
            let (Some(key), Some(value)) = (text(&c, kp, kl), read(&c, vp, vl)) else {
                return ok!(Status::InvalidMemoryAccess);
            };
            ok!(shared::set(&c.data().spec.vm_id, &key, &value, cas as u32))
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_register_shared_queue",
        |mut c: C<'_>, np: i32, nl: i32, ret: i32| -> wasmtime::Result<i32> {
            let Some(name) = text(&c, np, nl) else {
                return ok!(Status::InvalidMemoryAccess);
            };
            let h = c.data();
            let Some(tx) = h.queue_notify.clone() else {
                return ok!(Status::InternalFailure);
            };
            let id = shared::register_queue(&h.spec.vm_id, &name, tx, h.root);
            if !write_u32(&mut c, ret, id) {
                return ok!(Status::InvalidMemoryAccess);
            }
            ok!(Status::Ok)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_resolve_shared_queue",
        |mut c: C<'_>, vp: i32, vl: i32, np: i32, nl: i32, ret: i32| -> wasmtime::Result<i32> {
            let (Some(vm), Some(name)) = (text(&c, vp, vl), text(&c, np, nl)) else {
                return ok!(Status::InvalidMemoryAccess);
            };
            let vm = if vm.is_empty() {
                c.data().spec.vm_id.clone()
            } else {
                vm
            };
            match shared::resolve_queue(&vm, &name) {
                Some(id) => {
                    if !write_u32(&mut c, ret, id) {
                        return ok!(Status::InvalidMemoryAccess);
                    }
                    ok!(Status::Ok)
                }
                None => ok!(Status::NotFound),
            }
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_enqueue_shared_queue",
        |c: C<'_>, id: i32, vp: i32, vl: i32| -> wasmtime::Result<i32> {
            let Some(v) = read(&c, vp, vl) else {
                return ok!(Status::InvalidMemoryAccess);
            };
            ok!(shared::enqueue(id as u32, &v))
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_dequeue_shared_queue",
        |mut c: C<'_>, id: i32, ret_ptr: i32, ret_len: i32| -> wasmtime::Result<i32> {
            match shared::dequeue(id as u32) {
                Ok(v) => ok!(give(&mut c, &v, ret_ptr, ret_len)?),
                Err(s) => ok!(s),
            }
        },
    )?;
    Ok(())
}

fn streams(l: &mut Linker<Host>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_continue_stream",
        |mut c: C<'_>, _kind: i32| -> wasmtime::Result<i32> {
            c.data_mut().io.resumed = true;
            ok!(Status::Ok)
        },
    )?;
    for name in ["proxy_continue_request", "proxy_continue_response"] {
        l.func_wrap("env", name, |mut c: C<'_>| -> wasmtime::Result<i32> {
            c.data_mut().io.resumed = true;
            ok!(Status::Ok)
        })?;
    }
    l.func_wrap(
        "env",
        "proxy_clear_route_cache",
        |_c: C<'_>| -> wasmtime::Result<i32> { ok!(Status::Ok) },
    )?;
    l.func_wrap(
        "env",
        "proxy_close_stream",
        // Accepted without effect: Loom does not reset a stream on a
        // filter's word; a filter that wants to stop one answers with
        // `send_local_response`.
        |_c: C<'_>, _kind: i32| -> wasmtime::Result<i32> { ok!(Status::Ok) },
    )?;
    l.func_wrap(
        "env",
        "proxy_send_local_response",
        |mut c: C<'_>,
         status: i32,
         _dp: i32,
         _dl: i32,
         bp: i32,
         bl: i32,
         hp: i32,
         hl: i32,
         _grpc: i32|
         -> wasmtime::Result<i32> {
            let (Some(body), Some(raw)) = (read(&c, bp, bl), read(&c, hp, hl)) else {
                return ok!(Status::InvalidMemoryAccess);
            };
            let Some(pairs) = abi::decode_pairs(&raw) else {
                return ok!(Status::ParseFailure);
            };
            let Some(status) = u16::try_from(status)
                .ok()
                .and_then(|s| StatusCode::from_u16(s).ok())
            else {
                return ok!(Status::BadArgument);
            };
            let mut headers = HeaderMap::new();
            for (k, v) in pairs {
                if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k), HeaderValue::from_bytes(v)) {
                    headers.append(k, v);
                }
            }
            c.data_mut().io.local = Some(Box::new(LocalResponse {
                status,
                headers,
                body: Bytes::from(body),
            }));
            ok!(Status::Ok)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_http_call",
        |mut c: C<'_>, up: i32, ul: i32, hp: i32, hl: i32, bp: i32, bl: i32, _tp: i32, _tl: i32, timeout: i32, ret: i32| -> wasmtime::Result<i32> {
            let (Some(upstream), Some(raw), Some(body)) = (text(&c, up, ul), read(&c, hp, hl), read(&c, bp, bl)) else {
                return ok!(Status::InvalidMemoryAccess);
            };
            if !c.data().spec.callouts.knows(&upstream) {
                tracing::warn!(plugin = %c.data().spec.name, upstream, "dispatch_http_call to an unknown upstream");
                return ok!(Status::BadArgument);
            }
            let Some(pairs) = abi::decode_pairs(&raw) else {
                return ok!(Status::BadArgument);
            };
            let mut req = http::Request::builder();
            let (mut path, mut authority) = (None, None);
            for (k, v) in pairs {
                match k {
                    b":method" => req = req.method(v),
                    b":path" => path = Some(v.to_vec()),
                    b":authority" => authority = Some(v.to_vec()),
                    b":scheme" => {}
                    _ => req = req.header(k, v),
                }
            }
            let Some(path) = path else {
                return ok!(Status::BadArgument);
            };
            req = req.uri(path);
            if let Some(a) = authority {
                req = req.header(http::header::HOST, a);
            }
            let Ok(request) = req.body(Bytes::from(body)) else {
                return ok!(Status::BadArgument);
            };
            let h = c.data_mut();
            h.next_token = h.next_token.wrapping_add(1).max(1);
            let token = h.next_token;
            let timeout = Duration::from_millis(u64::from((timeout as u32).max(1)));
            let context = h.effective;
            h.dispatched.push(Dispatch { token, context, upstream, request, timeout });
            if !write_u32(&mut c, ret, token) {
                return ok!(Status::InvalidMemoryAccess);
            }
            ok!(Status::Ok)
        },
    )?;
    // gRPC callouts are not offered: the filter is told, and goes on.
    l.func_wrap(
        "env",
        "proxy_grpc_call",
        |_c: C<'_>,
         _a: i32,
         _b: i32,
         _d: i32,
         _e: i32,
         _f: i32,
         _g: i32,
         _h: i32,
         _i: i32,
         _j: i32,
         _k: i32,
         _t: i32,
         _r: i32|
         -> wasmtime::Result<i32> { ok!(Status::InternalFailure) },
    )?;
    l.func_wrap(
        "env",
        "proxy_grpc_stream",
        |_c: C<'_>,
         _a: i32,
         _b: i32,
         _d: i32,
         _e: i32,
         _f: i32,
         _g: i32,
         _h: i32,
         _i: i32,
         _r: i32|
         -> wasmtime::Result<i32> { ok!(Status::InternalFailure) },
    )?;
    l.func_wrap(
        "env",
        "proxy_grpc_send",
        |_c: C<'_>, _t: i32, _p: i32, _l: i32, _e: i32| -> wasmtime::Result<i32> {
            ok!(Status::NotFound)
        },
    )?;
    for name in ["proxy_grpc_cancel", "proxy_grpc_close"] {
        l.func_wrap("env", name, |_c: C<'_>, _t: i32| -> wasmtime::Result<i32> {
            ok!(Status::NotFound)
        })?;
    }
    l.func_wrap(
        "env",
        "proxy_get_status",
        |mut c: C<'_>, code: i32, ret_ptr: i32, ret_len: i32| -> wasmtime::Result<i32> {
            let status = c
                .data()
                .io
                .call
                .as_ref()
                .map_or(0, |r| u32::from(r.status.as_u16()));
            if !write_u32(&mut c, code, status) {
                return ok!(Status::InvalidMemoryAccess);
            }
            ok!(give(&mut c, b"", ret_ptr, ret_len)?)
        },
    )?;
    Ok(())
}

fn metrics(l: &mut Linker<Host>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_define_metric",
        |mut c: C<'_>, kind: i32, np: i32, nl: i32, ret: i32| -> wasmtime::Result<i32> {
            let Some(kind) = MetricKind::from_abi(kind) else {
                return ok!(Status::BadArgument);
            };
            let Some(name) = text(&c, np, nl) else {
                return ok!(Status::InvalidMemoryAccess);
            };
            let id = shared::define_metric(&c.data().spec.name, kind, &name);
            if let Some(m) = shared::metric(id) {
                c.data_mut().metrics.insert(id, m);
            }
            if !write_u32(&mut c, ret, id) {
                return ok!(Status::InvalidMemoryAccess);
            }
            ok!(Status::Ok)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_increment_metric",
        |c: C<'_>, id: i32, by: i64| -> wasmtime::Result<i32> {
            match metric(&c, id) {
                Some(m) => ok!(m.increment(by)),
                None => ok!(Status::NotFound),
            }
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_record_metric",
        |c: C<'_>, id: i32, v: i64| -> wasmtime::Result<i32> {
            match metric(&c, id) {
                Some(m) => ok!(m.record(v as u64)),
                None => ok!(Status::NotFound),
            }
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_metric",
        |mut c: C<'_>, id: i32, ret: i32| -> wasmtime::Result<i32> {
            let Some(m) = metric(&c, id) else {
                return ok!(Status::NotFound);
            };
            if !write_u64(&mut c, ret, m.get()) {
                return ok!(Status::InvalidMemoryAccess);
            }
            ok!(Status::Ok)
        },
    )?;
    Ok(())
}

/// A metric the instance defined (or another instance of the same plugin).
fn metric(c: &C<'_>, id: i32) -> Option<Arc<Metric>> {
    c.data()
        .metrics
        .get(&(id as u32))
        .cloned()
        .or_else(|| shared::metric(id as u32))
}

/// WASI errno values the shims answer with.
const ERRNO_SUCCESS: i32 = 0;
const ERRNO_BADF: i32 = 8;
const ERRNO_NOSYS: i32 = 52;

/// The few WASI functions that language runtimes import even in a filter:
/// no arguments, no environment, stdout/stderr into the log, clocks and
/// randomness. No file or socket is reachable.
fn wasi(l: &mut Linker<Host>) -> wasmtime::Result<()> {
    for module in ["wasi_snapshot_preview1", "wasi_unstable"] {
        for name in ["args_sizes_get", "environ_sizes_get"] {
            l.func_wrap(
                module,
                name,
                |mut c: C<'_>, count: i32, size: i32| -> wasmtime::Result<i32> {
                    if !write_u32(&mut c, count, 0) || !write_u32(&mut c, size, 0) {
                        return Ok(ERRNO_BADF);
                    }
                    Ok(ERRNO_SUCCESS)
                },
            )?;
        }
        for name in ["args_get", "environ_get"] {
            l.func_wrap(
                module,
                name,
                |_c: C<'_>, _a: i32, _b: i32| -> wasmtime::Result<i32> { Ok(ERRNO_SUCCESS) },
            )?;
        }
        l.func_wrap(
            module,
            "clock_time_get",
            |mut c: C<'_>, clock: i32, _precision: i64, ret: i32| -> wasmtime::Result<i32> {
                let now = if clock == 0 {
                    SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos() as u64)
                } else {
                    monotonic_nanos()
                };
                if !write_u64(&mut c, ret, now) {
                    return Ok(ERRNO_BADF);
                }
                Ok(ERRNO_SUCCESS)
            },
        )?;
        l.func_wrap(
            module,
            "random_get",
            |mut c: C<'_>, ptr: i32, len: i32| -> wasmtime::Result<i32> {
                let mem = memory(&c)?;
                let at = ptr as u32 as usize;
                let Some(buf) = mem.data_mut(&mut c).get_mut(at..at + len as u32 as usize) else {
                    return Ok(ERRNO_BADF);
                };
                for chunk in buf.chunks_mut(8) {
                    let r = loom_proxy::random().to_le_bytes();
                    chunk.copy_from_slice(&r[..chunk.len()]);
                }
                Ok(ERRNO_SUCCESS)
            },
        )?;
        l.func_wrap(
            module,
            "fd_write",
            |mut c: C<'_>, fd: i32, iovs: i32, n: i32, ret: i32| -> wasmtime::Result<i32> {
                if fd != 1 && fd != 2 {
                    return Ok(ERRNO_BADF);
                }
                let mut written = 0u32;
                for i in 0..n {
                    let Some(iov) = read(&c, iovs.wrapping_add(i.wrapping_mul(8)), 8) else {
                        return Ok(ERRNO_BADF);
                    };
                    let ptr = i32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
                    let len = i32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
                    let Some(data) = read(&c, ptr, len) else {
                        return Ok(ERRNO_BADF);
                    };
                    written = written.saturating_add(data.len() as u32);
                    console(c.data_mut(), &data);
                }
                if !write_u32(&mut c, ret, written) {
                    return Ok(ERRNO_BADF);
                }
                Ok(ERRNO_SUCCESS)
            },
        )?;
        l.func_wrap(
            module,
            "fd_read",
            |_c: C<'_>, _fd: i32, _iovs: i32, _n: i32, _ret: i32| -> wasmtime::Result<i32> {
                Ok(ERRNO_BADF)
            },
        )?;
        l.func_wrap(
            module,
            "fd_close",
            |_c: C<'_>, _fd: i32| -> wasmtime::Result<i32> { Ok(ERRNO_BADF) },
        )?;
        l.func_wrap(
            module,
            "fd_seek",
            |_c: C<'_>, _fd: i32, _off: i64, _wh: i32, _ret: i32| -> wasmtime::Result<i32> {
                Ok(ERRNO_BADF)
            },
        )?;
        l.func_wrap(
            module,
            "fd_fdstat_get",
            |_c: C<'_>, _fd: i32, _ret: i32| -> wasmtime::Result<i32> { Ok(ERRNO_BADF) },
        )?;
        l.func_wrap(
            module,
            "fd_prestat_get",
            |_c: C<'_>, _fd: i32, _ret: i32| -> wasmtime::Result<i32> { Ok(ERRNO_BADF) },
        )?;
        l.func_wrap(
            module,
            "fd_prestat_dir_name",
            |_c: C<'_>, _fd: i32, _p: i32, _l: i32| -> wasmtime::Result<i32> { Ok(ERRNO_BADF) },
        )?;
        l.func_wrap(
            module,
            "sched_yield",
            |_c: C<'_>| -> wasmtime::Result<i32> { Ok(ERRNO_SUCCESS) },
        )?;
        l.func_wrap(
            module,
            "poll_oneoff",
            |_c: C<'_>, _a: i32, _b: i32, _n: i32, _r: i32| -> wasmtime::Result<i32> {
                Ok(ERRNO_NOSYS)
            },
        )?;
        l.func_wrap(
            module,
            "proc_exit",
            |_c: C<'_>, code: i32| -> wasmtime::Result<()> {
                Err(wasmtime::Error::msg(format!(
                    "the plugin exited (proc_exit {code})"
                )))
            },
        )?;
    }
    Ok(())
}

fn monotonic_nanos() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_nanos() as u64
}

/// Plugin stdout/stderr goes to the log a line at a time.
fn console(h: &mut Host, data: &[u8]) {
    h.console.extend_from_slice(data);
    while let Some(i) = h.console.iter().position(|b| *b == b'\n') {
        let line: Vec<u8> = h.console.drain(..=i).collect();
        tracing::info!(plugin = %h.spec.name, "{}", String::from_utf8_lossy(&line[..line.len() - 1]));
    }
    if h.console.len() > 16 * 1024 {
        tracing::info!(plugin = %h.spec.name, "{}", String::from_utf8_lossy(&h.console));
        h.console.clear();
    }
}

//! The host side of the ABI: what a filter's imports do. Each function reads
//! its arguments out of the instance's linear memory, acts on the
//! [`Host`] state of the current call, and writes results back into memory
//! the filter allocated (`proxy_on_memory_allocate`).
//!
//! A filter never sees anything but its own memory and what the current
//! stream hands it: the request and response heads, the body chunk being
//! filtered, its own configuration. Provider keys and other plugins' memory
//! are out of its reach.

macro_rules! ok {
    ($e:expr) => {
        Ok($e as i32)
    };
}

mod buffers;
mod env;
mod maps;
mod memory;
mod metrics;
mod properties;
mod shared_state;
mod streams;
mod wasi;

use buffers::*;
use env::*;
use maps::*;
use memory::*;
use metrics::*;
use properties::*;
use shared_state::*;
use streams::*;
use wasi::*;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::HeaderMap;
use tokio::sync::mpsc::UnboundedSender;
use wasmtime::{Caller, Linker, Memory, ResourceLimiter, TypedFunc};

use crate::abi::BufferType;
use crate::shared::Metric;
use crate::{CallResponse, LocalResponse, Spec, StreamInfo};

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

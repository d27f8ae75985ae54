//! Logging, time, configuration and the calls every filter makes (`env` module).

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wasmtime::Linker;

use crate::abi::{self, Status};

use super::*;

pub(super) fn env(l: &mut Linker<Host>) -> wasmtime::Result<()> {
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

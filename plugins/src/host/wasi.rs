//! The WASI shims a filter may import, and console output.

use std::time::{SystemTime, UNIX_EPOCH};

use wasmtime::Linker;

use super::*;

/// WASI errno values the shims answer with.
pub(super) const ERRNO_SUCCESS: i32 = 0;
pub(super) const ERRNO_BADF: i32 = 8;
pub(super) const ERRNO_NOSYS: i32 = 52;

/// The few WASI functions that language runtimes import even in a filter:
/// no arguments, no environment, stdout/stderr into the log, clocks and
/// randomness. No file or socket is reachable.
pub(super) fn wasi(l: &mut Linker<Host>) -> wasmtime::Result<()> {
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

pub(super) fn monotonic_nanos() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_nanos() as u64
}

/// Plugin stdout/stderr goes to the log a line at a time.
pub(super) fn console(h: &mut Host, data: &[u8]) {
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

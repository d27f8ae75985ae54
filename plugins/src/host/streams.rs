//! Stream control: continue, local responses, HTTP callouts, gRPC refusals.

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http::header::{HeaderMap, HeaderName, HeaderValue};
use wasmtime::Linker;

use crate::LocalResponse;
use crate::abi::{self, Status};

use super::*;

pub(super) fn streams(l: &mut Linker<Host>) -> wasmtime::Result<()> {
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

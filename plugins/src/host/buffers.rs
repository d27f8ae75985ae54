//! Buffers: bodies, configuration and call answers (`proxy_get_buffer_bytes`, `proxy_set_buffer_bytes`).

use bytes::{Bytes, BytesMut};
use wasmtime::Linker;

use crate::abi::{BufferType, Status};

use super::*;

pub(super) fn buffers(l: &mut Linker<Host>) -> wasmtime::Result<()> {
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

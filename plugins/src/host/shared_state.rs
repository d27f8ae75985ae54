//! Shared data and shared queues between plugins of one `vm_id`.

use wasmtime::Linker;

use crate::abi::Status;
use crate::shared::{self};

use super::*;

pub(super) fn shared_state(l: &mut Linker<Host>) -> wasmtime::Result<()> {
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

//! Metrics a filter defines and records.

use std::sync::Arc;

use wasmtime::Linker;

use crate::abi::{MetricKind, Status};
use crate::shared::{self, Metric};

use super::*;

pub(super) fn metrics(l: &mut Linker<Host>) -> wasmtime::Result<()> {
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
pub(super) fn metric(c: &C<'_>, id: i32) -> Option<Arc<Metric>> {
    c.data()
        .metrics
        .get(&(id as u32))
        .cloned()
        .or_else(|| shared::metric(id as u32))
}

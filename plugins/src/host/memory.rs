//! Reading and writing the filter's linear memory.

use wasmtime::Memory;

use crate::abi::Status;

use super::*;

pub(super) fn memory(c: &C<'_>) -> wasmtime::Result<Memory> {
    c.data()
        .memory
        .ok_or_else(|| wasmtime::Error::msg("the module exports no memory"))
}

/// A copy of `len` bytes at `ptr` of the filter's memory.
pub(super) fn read(c: &C<'_>, ptr: i32, len: i32) -> Option<Vec<u8>> {
    let mem = c.data().memory?;
    let (ptr, len) = (ptr as u32 as usize, len as u32 as usize);
    mem.data(c)
        .get(ptr..ptr.checked_add(len)?)
        .map(<[u8]>::to_vec)
}

pub(super) fn write_u32(c: &mut C<'_>, at: i32, v: u32) -> bool {
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

pub(super) fn write_u64(c: &mut C<'_>, at: i32, v: u64) -> bool {
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
pub(super) fn give(
    c: &mut C<'_>,
    data: &[u8],
    ret_ptr: i32,
    ret_len: i32,
) -> wasmtime::Result<Status> {
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
pub(super) fn slice(data: &[u8], ptr: i32, len: i32) -> Option<&[u8]> {
    let (ptr, len) = (ptr as u32 as usize, len as u32 as usize);
    data.get(ptr..ptr.checked_add(len)?)
}

pub(super) fn text(c: &C<'_>, ptr: i32, len: i32) -> Option<String> {
    String::from_utf8(read(c, ptr, len)?).ok()
}

//! Request ids: the client's `x-request-id` when it sent a sane one, else a new one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderMap;

/// The header that carries the id both ways.
pub const HEADER: &str = "x-request-id";

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn process_prefix() -> u32 {
    use std::sync::OnceLock;
    static PREFIX: OnceLock<u32> = OnceLock::new();
    *PREFIX.get_or_init(|| {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() ^ d.as_secs() as u32);
        nanos ^ std::process::id().rotate_left(16)
    })
}

/// The id of a request. A client-supplied id is kept when it is short and
/// printable, so that ids correlate across services.
pub fn for_request(headers: &HeaderMap) -> String {
    if let Some(v) = headers.get(HEADER).and_then(|v| v.to_str().ok())
        && !v.is_empty()
        && v.len() <= 128
        && v.bytes().all(|b| b.is_ascii_graphic())
    {
        return v.to_owned();
    }
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut id = String::with_capacity(20);
    push_hex(&mut id, u64::from(process_prefix()), 8);
    push_hex(&mut id, n, 12);
    id
}

/// Appends the low `digits` hex digits of `v`; `format!` with padding costs
/// several times more on the per-request path.
fn push_hex(out: &mut String, v: u64, digits: u32) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for i in (0..digits).rev() {
        out.push(char::from(HEX[((v >> (i * 4)) & 0xf) as usize]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_sane_client_ids_and_makes_unique_ones() {
        let mut h = HeaderMap::new();
        let a = for_request(&h);
        let b = for_request(&h);
        assert_ne!(a, b);
        assert_eq!(a.len(), 20);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
        let (pa, na) = a.split_at(8);
        let (pb, nb) = b.split_at(8);
        assert_eq!(pa, pb);
        assert_eq!(
            u64::from_str_radix(nb, 16).unwrap(),
            u64::from_str_radix(na, 16).unwrap() + 1
        );
        h.insert(HEADER, "abc-123".parse().unwrap());
        assert_eq!(for_request(&h), "abc-123");
        h.insert(HEADER, "has space".parse().unwrap());
        assert_ne!(for_request(&h), "has space");
    }
}

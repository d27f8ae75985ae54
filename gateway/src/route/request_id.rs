//! Request ids: the client's `x-request-id` when it sent a sane one, else a new one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

/// The header that carries the id both ways. A `HeaderName` rather than a
/// `&str`: looking a header up by `&str` parses the name each time (about
/// 550 instructions per lookup under callgrind, two per request).
pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

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

/// A request's id. Held as a header value, since it goes out in headers
/// both ways (to the upstream and back to the client): passing it on is a
/// reference-count increment, not a copy.
#[derive(Clone)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// The id as a header value.
    pub fn header(&self) -> &HeaderValue {
        &self.0
    }

    /// The id as text (always printable ASCII).
    pub fn as_str(&self) -> &str {
        self.0.to_str().unwrap_or("-")
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for RequestId {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// The id of a request. A client-supplied id is kept when it is short and
/// printable, so that ids correlate across services.
pub fn for_request(headers: &HeaderMap) -> RequestId {
    if let Some(v) = headers.get(&HEADER)
        && !v.is_empty()
        && v.len() <= 128
        && v.as_bytes().iter().all(u8::is_ascii_graphic)
    {
        return RequestId(v.clone());
    }
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut id = [0u8; 20];
    let (prefix, count) = id.split_at_mut(8);
    put_hex(prefix, u64::from(process_prefix()));
    put_hex(count, n);
    // Hex digits are always a valid header value.
    RequestId(HeaderValue::from_bytes(&id).unwrap_or(HeaderValue::from_static("-")))
}

/// Writes the low `out.len()` hex digits of `v`; `format!` with padding
/// costs several times more on the per-request path.
fn put_hex(out: &mut [u8], mut v: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for b in out.iter_mut().rev() {
        *b = HEX[(v & 0xf) as usize];
        v >>= 4;
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
        assert_ne!(a.as_str(), b.as_str());
        assert_eq!(a.as_str().len(), 20);
        assert!(a.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
        let (pa, na) = a.as_str().split_at(8);
        let (pb, nb) = b.as_str().split_at(8);
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

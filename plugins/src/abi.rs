//! The Proxy-Wasm ABI's numbers and byte layouts (0.2.1, and 0.2.0 where it
//! differs): statuses, enums, and the serialised header maps and property
//! paths that cross the module's linear memory.

/// `proxy_status_t`: what every host function returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum Status {
    Ok = 0,
    NotFound = 1,
    BadArgument = 2,
    ParseFailure = 4,
    InvalidMemoryAccess = 6,
    Empty = 7,
    CasMismatch = 8,
    InternalFailure = 10,
}

/// `proxy_action_t`, returned by the stream callbacks.
pub const ACTION_CONTINUE: i32 = 0;

/// `proxy_map_type_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapType {
    RequestHeaders,
    RequestTrailers,
    ResponseHeaders,
    ResponseTrailers,
    CallResponseHeaders,
    CallResponseTrailers,
}

impl MapType {
    pub fn from_abi(v: i32) -> Option<MapType> {
        Some(match v {
            0 => MapType::RequestHeaders,
            1 => MapType::RequestTrailers,
            2 => MapType::ResponseHeaders,
            3 => MapType::ResponseTrailers,
            6 => MapType::CallResponseHeaders,
            7 => MapType::CallResponseTrailers,
            _ => return None,
        })
    }
}

/// `proxy_buffer_type_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BufferType {
    RequestBody,
    ResponseBody,
    CallResponseBody,
    VmConfiguration,
    PluginConfiguration,
}

impl BufferType {
    pub fn from_abi(v: i32) -> Option<BufferType> {
        Some(match v {
            0 => BufferType::RequestBody,
            1 => BufferType::ResponseBody,
            4 => BufferType::CallResponseBody,
            6 => BufferType::VmConfiguration,
            7 => BufferType::PluginConfiguration,
            _ => return None,
        })
    }
}

/// `proxy_metric_type_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    Counter,
    Gauge,
    Histogram,
}

impl MetricKind {
    pub fn from_abi(v: i32) -> Option<MetricKind> {
        Some(match v {
            0 => MetricKind::Counter,
            1 => MetricKind::Gauge,
            2 => MetricKind::Histogram,
            _ => return None,
        })
    }
}

/// Serialises header pairs the way filters read them: the pair count, then
/// each name's and value's length (u32, little endian), then each name and
/// value followed by a NUL.
pub fn encode_pairs<'a, I>(pairs: I) -> Vec<u8>
where
    I: Iterator<Item = (&'a [u8], &'a [u8])> + Clone,
{
    let (mut count, mut size) = (0u32, 4usize);
    for (k, v) in pairs.clone() {
        count += 1;
        size += 8 + k.len() + v.len() + 2;
    }
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&count.to_le_bytes());
    for (k, v) in pairs.clone() {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k);
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

/// Reads header pairs serialised by a filter (the layout of
/// [`encode_pairs`]); `None` when the bytes do not hold that layout.
pub fn decode_pairs(data: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    if data.is_empty() {
        return Some(Vec::new());
    }
    let word = |at: usize| -> Option<usize> {
        let b = data.get(at..at + 4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let count = word(0)?;
    let mut lens = 4usize;
    let mut at = 4usize.checked_add(count.checked_mul(8)?)?;
    if at > data.len() {
        return None;
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let (kl, vl) = (word(lens)?, word(lens + 4)?);
        lens += 8;
        let k = data.get(at..at + kl)?;
        at += kl + 1;
        let v = data.get(at..at + vl)?;
        at += vl + 1;
        if at > data.len() {
            return None;
        }
        out.push((k, v));
    }
    Some(out)
}

/// Splits a property path (`request\0path`) into its segments.
pub fn property_path(raw: &[u8]) -> Vec<&str> {
    raw.split(|b| *b == 0)
        .map(|s| std::str::from_utf8(s).unwrap_or(""))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_round_trip() {
        let pairs: Vec<(&[u8], &[u8])> =
            vec![(b":path", b"/v1/x"), (b"x-a", b""), (b"k", b"value")];
        let enc = encode_pairs(pairs.iter().copied());
        assert_eq!(&enc[..4], &3u32.to_le_bytes());
        assert_eq!(decode_pairs(&enc).unwrap(), pairs);
        assert_eq!(decode_pairs(&[]).unwrap(), Vec::<(&[u8], &[u8])>::new());
    }

    #[test]
    fn truncated_pairs_are_refused() {
        let enc = encode_pairs([(&b"name"[..], &b"value"[..])].into_iter());
        for cut in 1..enc.len() {
            assert!(decode_pairs(&enc[..cut]).is_none(), "cut at {cut}");
        }
        // A count that promises more pairs than there are bytes.
        let mut lying = enc.clone();
        lying[0] = 200;
        assert!(decode_pairs(&lying).is_none());
    }

    #[test]
    fn property_paths_split_on_nul() {
        assert_eq!(property_path(b"request\0path"), vec!["request", "path"]);
        assert_eq!(property_path(b"plugin_name"), vec!["plugin_name"]);
    }
}

//! Header maps: `proxy_get_header_map_*`, `proxy_add/replace/remove_header_map_value`, pseudo-headers.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Uri};
use wasmtime::Linker;

use crate::abi::{self, MapType, Status};

use super::*;

/// The pairs of a map, pseudo-headers first, as the filter sees them.
pub(super) fn pairs_of(io: &Io, map: MapType) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let headers = match map {
        MapType::RequestHeaders => {
            let r = io.request.as_ref()?;
            out.push((b":method".to_vec(), r.method.as_str().as_bytes().to_vec()));
            out.push((b":path".to_vec(), path_of(&r.uri).as_bytes().to_vec()));
            out.push((b":authority".to_vec(), authority_of(r).into_bytes()));
            out.push((
                b":scheme".to_vec(),
                r.uri
                    .scheme_str()
                    .unwrap_or(scheme_of(io))
                    .as_bytes()
                    .to_vec(),
            ));
            &r.headers
        }
        MapType::ResponseHeaders => {
            let r = io.response.as_ref()?;
            out.push((b":status".to_vec(), r.status.as_str().as_bytes().to_vec()));
            &r.headers
        }
        MapType::RequestTrailers => io.request_trailers.as_deref()?,
        MapType::ResponseTrailers => io.response_trailers.as_deref()?,
        MapType::CallResponseHeaders => {
            let r = io.call.as_ref()?;
            out.push((b":status".to_vec(), r.status.as_str().as_bytes().to_vec()));
            &r.headers
        }
        MapType::CallResponseTrailers => &io.call.as_ref()?.trailers,
    };
    for (k, v) in headers {
        out.push((k.as_str().as_bytes().to_vec(), v.as_bytes().to_vec()));
    }
    Some(out)
}

pub(super) fn scheme_of(io: &Io) -> &'static str {
    io.info.as_ref().map_or("http", |i| i.scheme)
}

pub(super) fn path_of(uri: &Uri) -> &str {
    uri.path_and_query().map_or("/", |p| p.as_str())
}

pub(super) fn authority_of(r: &http::request::Parts) -> String {
    r.headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| r.uri.authority().map(|a| a.to_string()))
        .unwrap_or_default()
}

pub(super) fn value_of(io: &Io, map: MapType, key: &str) -> Option<Vec<u8>> {
    if key.starts_with(':') {
        let key = key.to_ascii_lowercase();
        return pairs_of(io, map)?
            .into_iter()
            .find(|(k, _)| k == key.as_bytes())
            .map(|(_, v)| v);
    }
    let headers = headers_of(io, map)?;
    let mut all = headers.get_all(key).iter();
    let first = all.next()?;
    let mut v = first.as_bytes().to_vec();
    for more in all {
        v.push(b',');
        v.extend_from_slice(more.as_bytes());
    }
    Some(v)
}

pub(super) fn headers_of(io: &Io, map: MapType) -> Option<&HeaderMap> {
    match map {
        MapType::RequestHeaders => io.request.as_ref().map(|r| &r.headers),
        MapType::ResponseHeaders => io.response.as_ref().map(|r| &r.headers),
        MapType::RequestTrailers => io.request_trailers.as_deref(),
        MapType::ResponseTrailers => io.response_trailers.as_deref(),
        MapType::CallResponseHeaders => io.call.as_ref().map(|r| &r.headers),
        MapType::CallResponseTrailers => io.call.as_ref().map(|r| &r.trailers),
    }
}

/// The writable map of this phase; `None` when the phase is past (writes
/// are then ignored, as a filter cannot change what was already sent).
pub(super) fn headers_mut(io: &mut Io, map: MapType) -> Option<&mut HeaderMap> {
    match map {
        MapType::RequestHeaders => io.request.as_mut().map(|r| &mut r.headers),
        MapType::ResponseHeaders => io.response.as_mut().map(|r| &mut r.headers),
        MapType::RequestTrailers => io.request_trailers.as_deref_mut(),
        MapType::ResponseTrailers => io.response_trailers.as_deref_mut(),
        _ => None,
    }
}

pub(super) enum Edit {
    Replace,
    Add,
    Remove,
}

/// Applies one header edit; pseudo-headers change the request line or the
/// status.
pub(super) fn edit(io: &mut Io, map: MapType, key: &[u8], value: &[u8], how: Edit) -> Status {
    if let Some(pseudo) = key.strip_prefix(b":") {
        let Ok(pseudo) = std::str::from_utf8(pseudo) else {
            return Status::BadArgument;
        };
        return edit_pseudo(io, map, &pseudo.to_ascii_lowercase(), value, how);
    }
    let Some(headers) = headers_mut(io, map) else {
        return Status::Ok;
    };
    // `from_bytes` lowercases as it parses.
    let Ok(name) = HeaderName::from_bytes(key) else {
        return Status::BadArgument;
    };
    match how {
        Edit::Remove => {
            headers.remove(&name);
        }
        Edit::Replace | Edit::Add => {
            let Ok(v) = HeaderValue::from_bytes(value) else {
                return Status::BadArgument;
            };
            if matches!(how, Edit::Replace) {
                headers.insert(name, v);
            } else {
                headers.append(name, v);
            }
        }
    }
    Status::Ok
}

pub(super) fn edit_pseudo(
    io: &mut Io,
    map: MapType,
    pseudo: &str,
    value: &[u8],
    how: Edit,
) -> Status {
    if matches!(how, Edit::Remove) {
        return Status::Ok;
    }
    match (map, pseudo) {
        (MapType::RequestHeaders, _) => {
            let Some(r) = io.request.as_mut() else {
                return Status::Ok;
            };
            match pseudo {
                "method" => match Method::from_bytes(value) {
                    Ok(m) => r.method = m,
                    Err(_) => return Status::BadArgument,
                },
                "path" => {
                    let mut parts = r.uri.clone().into_parts();
                    match http::uri::PathAndQuery::try_from(value) {
                        Ok(p) => parts.path_and_query = Some(p),
                        Err(_) => return Status::BadArgument,
                    }
                    match Uri::from_parts(parts) {
                        Ok(u) => r.uri = u,
                        Err(_) => return Status::BadArgument,
                    }
                }
                "authority" => match HeaderValue::from_bytes(value) {
                    Ok(v) => {
                        r.headers.insert(http::header::HOST, v);
                    }
                    Err(_) => return Status::BadArgument,
                },
                _ => {}
            }
            Status::Ok
        }
        (MapType::ResponseHeaders, "status") => {
            let Some(r) = io.response.as_mut() else {
                return Status::Ok;
            };
            match std::str::from_utf8(value)
                .ok()
                .and_then(|s| s.parse::<u16>().ok())
                .and_then(|s| StatusCode::from_u16(s).ok())
            {
                Some(s) => {
                    r.status = s;
                    Status::Ok
                }
                None => Status::BadArgument,
            }
        }
        _ => Status::Ok,
    }
}

pub(super) fn maps(l: &mut Linker<Host>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        |mut c: C<'_>, map: i32, ret_ptr: i32, ret_len: i32| -> wasmtime::Result<i32> {
            let Some(map) = MapType::from_abi(map) else {
                return ok!(Status::BadArgument);
            };
            let pairs = pairs_of(&c.data().io, map).unwrap_or_default();
            let enc = abi::encode_pairs(pairs.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
            ok!(give(&mut c, &enc, ret_ptr, ret_len)?)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_header_map_size",
        |mut c: C<'_>, map: i32, ret: i32| -> wasmtime::Result<i32> {
            let Some(map) = MapType::from_abi(map) else {
                return ok!(Status::BadArgument);
            };
            let pairs = pairs_of(&c.data().io, map).unwrap_or_default();
            let size =
                abi::encode_pairs(pairs.iter().map(|(k, v)| (k.as_slice(), v.as_slice()))).len();
            if !write_u32(&mut c, ret, size as u32) {
                return ok!(Status::InvalidMemoryAccess);
            }
            ok!(Status::Ok)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_header_map_pairs",
        |mut c: C<'_>, map: i32, ptr: i32, len: i32| -> wasmtime::Result<i32> {
            let Some(map) = MapType::from_abi(map) else {
                return ok!(Status::BadArgument);
            };
            let Some(raw) = read(&c, ptr, len) else {
                return ok!(Status::InvalidMemoryAccess);
            };
            let Some(pairs) = abi::decode_pairs(&raw) else {
                return ok!(Status::ParseFailure);
            };
            let io = &mut c.data_mut().io;
            if let Some(h) = headers_mut(io, map) {
                h.clear();
            }
            for (k, v) in pairs {
                let s = edit(io, map, k, v, Edit::Add);
                if s != Status::Ok {
                    return ok!(s);
                }
            }
            ok!(Status::Ok)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut c: C<'_>,
         map: i32,
         kp: i32,
         kl: i32,
         ret_ptr: i32,
         ret_len: i32|
         -> wasmtime::Result<i32> {
            let Some(map) = MapType::from_abi(map) else {
                return ok!(Status::BadArgument);
            };
            let Some(key) = text(&c, kp, kl) else {
                return ok!(Status::InvalidMemoryAccess);
            };
            match value_of(&c.data().io, map, &key) {
                Some(v) => ok!(give(&mut c, &v, ret_ptr, ret_len)?),
                None => ok!(Status::NotFound),
            }
        },
    )?;
    for (name, how) in [
        ("proxy_replace_header_map_value", 0),
        ("proxy_add_header_map_value", 1),
    ] {
        l.func_wrap(
            "env",
            name,
            move |mut c: C<'_>,
                  map: i32,
                  kp: i32,
                  kl: i32,
                  vp: i32,
                  vl: i32|
                  -> wasmtime::Result<i32> {
                let Some(map) = MapType::from_abi(map) else {
                    return ok!(Status::BadArgument);
                };
                let mem = memory(&c)?;
                // Straight from the filter's memory: no copy but the header's own.
                let (data, host) = mem.data_and_store_mut(&mut c);
                let (Some(k), Some(v)) = (slice(data, kp, kl), slice(data, vp, vl)) else {
                    return ok!(Status::InvalidMemoryAccess);
                };
                let how = if how == 0 { Edit::Replace } else { Edit::Add };
                ok!(edit(&mut host.io, map, k, v, how))
            },
        )?;
    }
    l.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |mut c: C<'_>, map: i32, kp: i32, kl: i32| -> wasmtime::Result<i32> {
            let Some(map) = MapType::from_abi(map) else {
                return ok!(Status::BadArgument);
            };
            let mem = memory(&c)?;
            let (data, host) = mem.data_and_store_mut(&mut c);
            let Some(k) = slice(data, kp, kl) else {
                return ok!(Status::InvalidMemoryAccess);
            };
            ok!(edit(&mut host.io, map, k, b"", Edit::Remove))
        },
    )?;
    Ok(())
}

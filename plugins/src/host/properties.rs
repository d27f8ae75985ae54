//! Properties: `proxy_get_property`, `proxy_set_property`.

use std::net::SocketAddr;

use crate::Spec;

use super::*;

pub(super) fn property(io: &Io, spec: &Spec, path: &[&str]) -> Option<Vec<u8>> {
    let joined = path.join(".");
    if let Some(v) = io.props.as_ref().and_then(|p| p.get(&joined)) {
        return Some(v.clone());
    }
    let info = io.info.as_deref();
    let s = |v: &str| Some(v.as_bytes().to_vec());
    let int = |v: i64| Some(v.to_le_bytes().to_vec());
    let addr = |a: Option<SocketAddr>| a.map(|a| a.to_string().into_bytes());
    match joined.as_str() {
        "plugin_name" => s(&spec.name),
        "plugin_vm_id" => s(&spec.vm_id),
        "plugin_root_id" => s(""),
        "request.path" => match &io.request {
            Some(r) => s(path_of(&r.uri)),
            None => s(path_of(&info?.uri)),
        },
        "request.url_path" => match &io.request {
            Some(r) => s(r.uri.path()),
            None => s(info?.uri.path()),
        },
        "request.query" => match &io.request {
            Some(r) => s(r.uri.query().unwrap_or("")),
            None => s(info?.uri.query().unwrap_or("")),
        },
        "request.method" => match &io.request {
            Some(r) => s(r.method.as_str()),
            None => s(info?.method.as_str()),
        },
        "request.host" => match &io.request {
            Some(r) => Some(authority_of(r).into_bytes()),
            None => match &info?.host {
                Some(h) => Some(h.as_bytes().to_vec()),
                None => Some(
                    info?
                        .uri
                        .authority()
                        .map(|a| a.as_str())
                        .unwrap_or("")
                        .as_bytes()
                        .to_vec(),
                ),
            },
        },
        "request.scheme" => s(scheme_of(io)),
        "request.protocol" => s(info?.protocol),
        "request.id" => s(&info?.request_id),
        "source.address" => addr(info?.source),
        "source.port" => int(i64::from(info?.source?.port())),
        "destination.address" => addr(info?.destination),
        "destination.port" => int(i64::from(info?.destination?.port())),
        "route_name" | "xds.route_name" | "loom.route" => s(&info?.route),
        "cluster_name" | "xds.cluster_name" | "loom.upstream" => s(info?.upstream.as_ref()?.name()),
        "loom.consumer" => s(info?.consumer.as_deref()?),
        "response.code" => int(i64::from(io.response.as_ref()?.status.as_u16())),
        _ => None,
    }
}

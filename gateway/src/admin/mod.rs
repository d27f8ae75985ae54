//! The admin listener: health, readiness, metrics and the admin API.

pub mod auth;
mod keys;
pub mod metrics;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use serde_json::json;

use loom_accounting::Breakdown;

use crate::runtime::state::Shared;

/// The admin routes.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/ai/providers", get(providers))
        .route("/ai/usage", get(usage_all))
        .route("/ai/usage/{consumer}", get(usage))
        .route("/config", get(config))
        .route("/ai/keys", get(keys::list).post(keys::create))
        .route(
            "/ai/keys/{id}",
            get(keys::one).patch(keys::update).delete(keys::delete),
        )
        .route("/ai/keys/{id}/rotate", axum::routing::post(keys::rotate))
        .route("/ai/audit", get(keys::audit))
        .layer(axum::middleware::from_fn_with_state(
            shared.clone(),
            auth::check,
        ))
        .with_state(shared)
}

/// Liveness, with the state of every upstream endpoint (active checks and
/// outlier ejection).
async fn health(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    let rt = s.runtime.load();
    let mut upstreams = serde_json::Map::new();
    let mut names: Vec<&String> = rt.upstreams.keys().collect();
    names.sort();
    for name in names {
        upstreams.insert(name.clone(), json!(rt.upstreams[name].states()));
    }
    Json(json!({"status": "ok", "upstreams": upstreams}))
}

/// Ready while serving. A usage store that is away does not make the
/// gateway unready (requests keep flowing and usage is buffered), but the
/// answer says so.
async fn ready(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    if s.ready.load(Ordering::Acquire) {
        let rt = s.runtime.load();
        let store = rt.accountant.store();
        let health = store.health();
        let mut body = json!({"status": "ready", "config_generation": rt.generation});
        // Keys keep being served from memory while PostgreSQL is away.
        if let Some(control) = &s.control {
            let h = control.health();
            if !h.up {
                body["status"] = json!("degraded");
            }
            body["control_plane"] = json!(h);
        }
        if !health.is_up() {
            body["status"] = json!("degraded");
            body["accounting"] = json!({
                "store": store.kind(),
                "up": false,
                "buffered_records": health.buffered.load(Ordering::Relaxed),
            });
        }
        (StatusCode::OK, Json(body))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "starting"})),
        )
    }
}

async fn metrics(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    // Circuit states are read at scrape time rather than on every change.
    let rt = s.runtime.load();
    for p in rt.providers.snapshots() {
        s.metrics.circuit_state(&p.name, p.circuit);
    }
    s.metrics.worker_connections(&s.spread.loads());
    let store = rt.accountant.store();
    s.metrics.store_health(store.kind(), &store.health());
    if let Some(c) = &rt.cache {
        let (entries, bytes) = c.cache().index().usage();
        s.metrics.cache.size(entries, bytes);
    }
    for (name, u) in &rt.upstreams {
        for e in u.states() {
            s.metrics.upstream_health(name, &e.endpoint, e.healthy);
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        s.metrics.render(),
    )
}

async fn providers(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    Json(json!({"providers": s.runtime.load().providers.snapshots()}))
}

/// The effective configuration, defaults filled in, every secret redacted.
async fn config(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    Json(serde_json::to_value(&s.runtime.load().config).unwrap_or_default())
}

/// `?period=` and `?by=` of a usage query.
fn usage_params(query: Option<&str>) -> (Option<String>, Option<String>) {
    let (mut period, mut by) = (None, None);
    for pair in query.unwrap_or("").split('&') {
        match pair.split_once('=') {
            Some(("period", v)) => period = Some(v.to_owned()),
            Some(("by", v)) => by = Some(v.to_owned()),
            _ => {}
        }
    }
    (period, by)
}

fn usage_error(status: StatusCode, message: String) -> axum::response::Response {
    (
        status,
        Json(json!({"error": {"message": message, "type": "invalid_request_error"}})),
    )
        .into_response()
}

/// `GET /ai/usage/{consumer}`: one consumer's tokens, requests and cost over
/// a period (this month by default).
async fn usage(
    State(s): State<Arc<Shared>>,
    Path(consumer): Path<String>,
    RawQuery(query): RawQuery,
) -> axum::response::Response {
    let (period, by) = usage_params(query.as_deref());
    let by = match by.as_deref() {
        None => Breakdown::None,
        Some("model") => Breakdown::Model,
        Some("provider") => Breakdown::Provider,
        Some(other) => {
            return usage_error(
                StatusCode::BAD_REQUEST,
                format!("unknown breakdown {other:?}: use by=model or by=provider"),
            );
        }
    };
    let acc = s.runtime.load().accountant.clone();
    match acc.report(&consumer, period.as_deref(), by).await {
        Ok(Some(report)) => Json(report).into_response(),
        Ok(None) => usage_error(
            StatusCode::NOT_FOUND,
            format!("unknown consumer {consumer:?}"),
        ),
        Err(e @ loom_accounting::Error::Period(_)) => {
            usage_error(StatusCode::BAD_REQUEST, e.to_string())
        }
        Err(e) => usage_error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// `GET /ai/usage`: every configured consumer (and `anonymous` when it has usage).
async fn usage_all(
    State(s): State<Arc<Shared>>,
    RawQuery(query): RawQuery,
) -> axum::response::Response {
    let (period, _) = usage_params(query.as_deref());
    let acc = s.runtime.load().accountant.clone();
    let mut names: Vec<String> = acc.consumers().names().map(str::to_owned).collect();
    names.push(loom_accounting::ANONYMOUS.to_owned());
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        match acc.report(&name, period.as_deref(), Breakdown::None).await {
            Ok(Some(r)) if name != loom_accounting::ANONYMOUS || r.requests > 0 => out.push(r),
            Ok(_) => {}
            Err(e @ loom_accounting::Error::Period(_)) => {
                return usage_error(StatusCode::BAD_REQUEST, e.to_string());
            }
            Err(e) => return usage_error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        }
    }
    Json(json!({"consumers": out})).into_response()
}

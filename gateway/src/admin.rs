//! The admin listener: health, readiness, metrics and the admin API.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use serde_json::json;

use crate::state::Shared;

/// The admin routes.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/ai/providers", get(providers))
        .route("/config", get(config))
        .with_state(shared)
}

async fn health() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

async fn ready(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    if s.ready.load(Ordering::Acquire) {
        (
            StatusCode::OK,
            Json(json!({"status": "ready", "config_generation": s.runtime.load().generation})),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "starting"})),
        )
    }
}

async fn metrics(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    // Circuit states are read at scrape time rather than on every change.
    for p in s.runtime.load().providers.snapshots() {
        s.metrics.circuit_state(&p.name, p.circuit);
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

//! `/ai/keys` and `/ai/audit`: run-time keys over the admin API
//! (docs/control-plane.md). Keys from loom.yaml are listed read-only.
//!
//! Errors share the admin API's shape, `{"error": {"message", "type",
//! "code", "param"}}`: 400 naming the field, 404, 409, and 503 while
//! PostgreSQL is away (nothing written; keys keep working).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use loom_control::{Control, Error, KeyPatch, KeyView, NewKey};
use serde::Deserialize;
use serde_json::json;

use super::auth::Caller;
use crate::runtime::state::Shared;

fn error(
    status: StatusCode,
    kind: &str,
    code: &str,
    message: String,
    param: Option<&str>,
) -> Response {
    (
        status,
        Json(json!({"error": {"message": message, "type": kind, "code": code, "param": param}})),
    )
        .into_response()
}

/// A refusal, boxed: it travels through `?` on the admin path only.
pub(super) struct Refused(Box<Response>);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        *self.0
    }
}

impl From<Response> for Refused {
    fn from(r: Response) -> Self {
        Refused(Box::new(r))
    }
}

impl From<Error> for Refused {
    fn from(e: Error) -> Self {
        Refused(Box::new(failed(e)))
    }
}

type Answer = Result<Response, Refused>;

fn failed(e: Error) -> Response {
    match e {
        Error::Invalid { field, message } => error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_field",
            format!("{field}: {message}"),
            Some(&field),
        ),
        Error::NotFound => error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "not_found",
            "no such key".into(),
            None,
        ),
        Error::Conflict(m) => error(
            StatusCode::CONFLICT,
            "invalid_request_error",
            "conflict",
            m,
            None,
        ),
        Error::Unavailable(m) => {
            tracing::warn!(error = %m, "admin: the key store is unavailable");
            error(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                "store_unavailable",
                "the key store (PostgreSQL) is unavailable: nothing was changed; existing keys keep working. Retry shortly".into(),
                None,
            )
        }
    }
}

/// The control plane, or the 404-ish answer when none is configured.
fn control(s: &Shared) -> Result<&Arc<Control>, Refused> {
    s.control.as_ref().ok_or_else(|| {
        Refused::from(error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "no_control_plane",
            "run-time keys need a control_plane section (PostgreSQL) in the configuration".into(),
            None,
        ))
    })
}

/// A JSON body of `T`, or a 400 naming what is wrong.
fn body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Refused> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let param = (path != ".").then_some(path);
        Refused::from(error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "invalid_body",
            format!("invalid body: {}", e.inner()),
            param.as_deref(),
        ))
    })
}

/// Checks what only the configuration knows: models and tiers.
fn known(s: &Shared, models: Option<&Vec<String>>, tier: Option<&String>) -> Result<(), Refused> {
    let rt = s.runtime.load();
    for (i, m) in models.into_iter().flatten().enumerate() {
        if rt.providers.candidates(m).is_err() {
            return Err(Error::Invalid {
                field: format!("models[{i}]"),
                message: format!("no provider serves the model {m:?}"),
            }
            .into());
        }
    }
    if let Some(t) = tier
        && !rt.config.ai_gateway.rate_limit.consumers.contains_key(t)
    {
        return Err(Error::Invalid {
            field: "tier".into(),
            message: format!("no tier {t:?} under ai_gateway.rate_limit.consumers"),
        }
        .into());
    }
    Ok(())
}

/// `POST /ai/keys`: 201 with the key's secret, shown this once.
pub(super) async fn create(
    State(s): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    bytes: Bytes,
) -> Answer {
    let c = control(&s)?;
    let new: NewKey = body(&bytes)?;
    known(&s, new.models.as_ref(), new.tier.as_ref())?;
    let (view, secret) = c.create(&caller.0, new).await?;
    let mut v = json!(view);
    v["key"] = json!(secret);
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    consumer: Option<String>,
    team: Option<String>,
    /// The last id of the previous page.
    after: Option<String>,
    limit: Option<usize>,
}

/// `GET /ai/keys`: run-time keys and, read-only, the configured ones.
pub(super) async fn list(State(s): State<Arc<Shared>>, Query(q): Query<ListQuery>) -> Response {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let mut views: Vec<serde_json::Value> = Vec::new();
    let rt = s.runtime.load();
    for entry in &rt.config.consumers {
        for i in 0..entry.keys.len() {
            views.push(json!({
                "id": format!("config:{}:{i}", entry.name),
                "consumer": entry.name,
                "tier": entry.tier,
                "metadata": entry.metadata,
                "source": "config",
                "read_only": true,
            }));
        }
    }
    let id = |v: &serde_json::Value| v["id"].as_str().unwrap_or_default().to_owned();
    views.retain(|v| {
        q.consumer
            .as_ref()
            .is_none_or(|c| v["consumer"] == json!(c))
            && q.team.as_ref().is_none_or(|t| v["team"] == json!(t))
            && q.after.as_ref().is_none_or(|a| id(v) > *a)
    });
    views.sort_by_key(id);
    // Run-time keys (`key_…`) sort after configured ones (`config:…`): a
    // page of the table in id order, never the whole table copied.
    let mut has_more = views.len() > limit;
    views.truncate(limit);
    if let Some(c) = &s.control
        && views.len() < limit
    {
        let after = q.after.as_deref().filter(|a| !a.starts_with("config:"));
        let (rows, more) = c.keys().page(after, limit - views.len(), |r| {
            q.consumer.as_ref().is_none_or(|c| r.consumer == *c)
                && q.team.as_ref().is_none_or(|t| r.team.as_ref() == Some(t))
        });
        views.extend(rows.iter().map(|r| json!(KeyView::of(r))));
        has_more = more;
    }
    let last = views.last().map(id);
    Json(json!({"object": "list", "data": views, "has_more": has_more, "last_id": last}))
        .into_response()
}

/// `GET /ai/keys/{id}`.
pub(super) async fn one(State(s): State<Arc<Shared>>, Path(id): Path<String>) -> Answer {
    if let Some(rest) = id.strip_prefix("config:") {
        let rt = s.runtime.load();
        if let Some((name, i)) = rest.rsplit_once(':')
            && let Some(entry) = rt.config.consumers.iter().find(|c| c.name == name)
            && i.parse::<usize>().is_ok_and(|i| i < entry.keys.len())
        {
            return Ok(Json(json!({"id": id, "consumer": name, "tier": entry.tier,
                "metadata": entry.metadata, "source": "config", "read_only": true}))
            .into_response());
        }
        return Err(Error::NotFound.into());
    }
    let k = control(&s)?.keys().get(&id).ok_or(Error::NotFound)?;
    Ok(Json(json!(KeyView::of(&k.row))).into_response())
}

fn read_only(id: &str) -> Result<(), Refused> {
    if !id.starts_with("config:") {
        return Ok(());
    }
    Err(Refused::from(error(
        StatusCode::CONFLICT,
        "invalid_request_error",
        "read_only",
        "keys from loom.yaml are read-only: change the configuration".into(),
        None,
    )))
}

/// `PATCH /ai/keys/{id}`.
pub(super) async fn update(
    State(s): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Answer {
    read_only(&id)?;
    let c = control(&s)?;
    let patch: KeyPatch = body(&bytes)?;
    let models = patch.models.as_ref().and_then(Option::as_ref);
    let tier = patch.tier.as_ref().and_then(Option::as_ref);
    known(&s, models, tier)?;
    let view = c.update(&caller.0, &id, patch).await?;
    Ok(Json(json!(view)).into_response())
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rotation {
    /// How long the old secret keeps working (`1h`, `30m`, `0s`).
    #[serde(default)]
    grace: Option<String>,
}

/// `POST /ai/keys/{id}/rotate`: a new secret, shown this once.
pub(super) async fn rotate(
    State(s): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Answer {
    read_only(&id)?;
    let c = control(&s)?;
    let rotation: Rotation = if bytes.is_empty() {
        Rotation::default()
    } else {
        body(&bytes)?
    };
    let grace = rotation
        .grace
        .as_deref()
        .map(humantime::parse_duration)
        .transpose()
        .map_err(|e| Error::Invalid {
            field: "grace".into(),
            message: format!("a duration such as 1h or 30m ({e})"),
        })?;
    if grace.is_some_and(|g| g > std::time::Duration::from_secs(30 * 86_400)) {
        return Err(Error::Invalid {
            field: "grace".into(),
            message: "at most 30 days".into(),
        }
        .into());
    }
    let (view, secret) = c.rotate(&caller.0, &id, grace).await?;
    let mut v = json!(view);
    v["key"] = json!(secret);
    Ok(Json(v).into_response())
}

/// `DELETE /ai/keys/{id}`: refused at once here, on other replicas as the
/// change reaches them (LISTEN/NOTIFY).
pub(super) async fn delete(
    State(s): State<Arc<Shared>>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Answer {
    read_only(&id)?;
    control(&s)?.delete(&caller.0, &id).await?;
    Ok(Json(json!({"id": id, "deleted": true})).into_response())
}

#[derive(Debug, Deserialize)]
pub(super) struct AuditQuery {
    limit: Option<i64>,
    before: Option<i64>,
}

/// `GET /ai/audit`: admin changes, newest first.
pub(super) async fn audit(State(s): State<Arc<Shared>>, Query(q): Query<AuditQuery>) -> Answer {
    let entries = control(&s)?
        .audit(q.limit.unwrap_or(100).clamp(1, 1000), q.before)
        .await?;
    let next = entries.last().map(|e| e.id);
    Ok(Json(json!({"object": "list", "data": entries, "next_before": next})).into_response())
}

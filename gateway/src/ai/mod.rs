//! The AI routes: OpenAI's and Anthropic's APIs on one endpoint.
//!
//! Every request runs through the same stages in [`flow`], in one order;
//! what differs by wire format is its codec in [`ingress`], chosen here by
//! the endpoint table. Streams go through the one [`relay`].
//! Authentication and limits run before this, in the pipeline.

mod admit;
pub mod cache;
mod count;
mod error;
mod failover;
mod flow;
mod guard;
mod ingress;
#[cfg(test)]
mod pipeline_tests;
mod plan;
mod relay;
mod settle;
pub mod stored;

use std::sync::Arc;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use loom_models::models_list::ModelList;
use loom_providers::Target;

pub use error::ApiError;

use crate::route::routes::CompiledRoute;
use crate::runtime::body::{Body, ReadError, json_response, read_limited};
use crate::runtime::exchange::Exchange;
use crate::runtime::state::Runtime;
use admit::Quotas;
use ingress::chat::Chat;
use ingress::completions::Completions;
use ingress::embeddings::Embeddings;
use ingress::messages::Messages;
use ingress::responses::Responses;

/// Serves one request on an AI route. Returns the exchange back unless a
/// stream took it over (it then ends with the stream's last byte).
pub async fn handle(
    rt: &Arc<Runtime>,
    route: &CompiledRoute,
    req: Request<Body>,
    mut ex: Exchange,
) -> (Response<Body>, Option<Exchange>) {
    if rt.accountant.records() {
        ex.account = Some(rt.accountant.clone());
    }
    let mut quotas = Quotas::default();
    let (mut resp, ex) = match req
        .extensions()
        .get::<crate::route::pipeline::PluginHeaders>()
        .cloned()
    {
        Some(set) => {
            loom_providers::with_plugin_headers(set.0, serve(rt, route, req, ex, &mut quotas)).await
        }
        None => serve(rt, route, req, ex, &mut quotas).await,
    };
    quotas.apply(&mut resp);
    (resp, ex)
}

async fn serve(
    rt: &Arc<Runtime>,
    route: &CompiledRoute,
    req: Request<Body>,
    ex: Exchange,
    q: &mut Quotas,
) -> (Response<Body>, Option<Exchange>) {
    let path = req.uri().path();
    let limit = route.max_body.unwrap_or(u64::MAX);
    // The endpoint table: one codec per wire format.
    let err = match (endpoint(path), req.method()) {
        ("/chat/completions", &Method::POST) => {
            return flow::run::<Chat>(rt, req, limit, ex, q).await;
        }
        ("/messages", &Method::POST) => return flow::run::<Messages>(rt, req, limit, ex, q).await,
        ("/responses", &Method::POST) => {
            return flow::run::<Responses>(rt, req, limit, ex, q).await;
        }
        ("/messages/count_tokens", &Method::POST) => {
            return count::serve(rt, req, limit, loom_providers::CountApi::Messages, ex).await;
        }
        ("/responses/input_tokens", &Method::POST) => {
            return count::serve(rt, req, limit, loom_providers::CountApi::Responses, ex).await;
        }
        ("/completions", &Method::POST) => {
            return flow::run::<Completions>(rt, req, limit, ex, q).await;
        }
        ("/embeddings", &Method::POST) => {
            return flow::run::<Embeddings>(rt, req, limit, ex, q).await;
        }
        ("/models", &Method::GET) => return (models(rt), Some(ex)),
        (p, m) if p.starts_with("/responses/") => {
            match stored::serve(rt, &ex, &p["/responses/".len()..], req.uri().query(), m).await {
                Ok(r) => return (r, Some(ex)),
                Err(e) => e,
            }
        }
        (p, &Method::GET) if p.starts_with("/models/") => match model(rt, &p["/models/".len()..]) {
            Ok(r) => return (r, Some(ex)),
            Err(e) => e,
        },
        (
            "/chat/completions"
            | "/completions"
            | "/embeddings"
            | "/models"
            | "/messages"
            | "/responses"
            | "/messages/count_tokens"
            | "/responses/input_tokens",
            _,
        ) => ApiError::MethodNotAllowed,
        _ => ApiError::NotFound {
            message: format!("Unknown endpoint {path} on an AI route"),
            code: "unknown_url",
        },
    };
    let mut ex = ex;
    ex.error = Some(err.label());
    (err.into_response(), Some(ex))
}

/// The API endpoint a path names, whatever prefix the route adds
/// (`/v1/chat/completions`, `/team-a/v1/chat/completions`, `/chat/completions`).
fn endpoint(path: &str) -> &str {
    const ENDPOINTS: [&str; 8] = [
        "/messages/count_tokens",
        "/responses/input_tokens",
        "/chat/completions",
        "/completions",
        "/embeddings",
        "/messages",
        "/models",
        "/responses",
    ];
    if let Some(e) = ENDPOINTS.iter().find(|e| path.ends_with(*e)) {
        return e;
    }
    if let Some(i) = path.rfind("/responses/") {
        return &path[i..];
    }
    match path.rfind("/models/") {
        Some(i) => &path[i..],
        None => path,
    }
}

/// A request body read whole and known to be UTF-8 text.
pub(crate) struct JsonText(Bytes);

impl JsonText {
    /// The body as text.
    pub fn text(&self) -> &str {
        // SAFETY: `read_json` checked these bytes with `str::from_utf8`, and
        // `Bytes` never changes its contents.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }

    /// The body as bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.0
    }
}

/// Reads a JSON request body: content type (→ 415), size (→ 413), UTF-8
/// (→ 400), checked once for the whole body: parsing from `&str` then takes
/// every key and string as it is, where parsing from bytes validated each
/// one again (a third of `ChatRequest`'s parse under callgrind).
pub(crate) async fn read_json(req: Request<Body>, limit: u64) -> Result<JsonText, ApiError> {
    if let Some(ct) = req.headers().get(CONTENT_TYPE) {
        const JSON: &[u8] = b"application/json";
        let v = ct.as_bytes().trim_ascii_start();
        let ok = v.len() >= JSON.len() && v[..JSON.len()].eq_ignore_ascii_case(JSON);
        if !ok {
            return Err(ApiError::UnsupportedMediaType);
        }
    }
    let bytes: Bytes = match read_limited(req, limit).await {
        Ok(b) => b,
        Err(ReadError::TooLarge(limit)) => return Err(ApiError::TooLarge(limit)),
        Err(ReadError::Failed(e)) => {
            return Err(ApiError::invalid(
                format!("Could not read the request body: {e}"),
                None,
            ));
        }
    };
    if let Err(e) = std::str::from_utf8(&bytes) {
        return Err(ApiError::Invalid {
            message: format!(
                "Invalid request body: not UTF-8 (invalid byte at offset {})",
                e.valid_up_to()
            ),
            param: None,
        });
    }
    Ok(JsonText(bytes))
}

/// Parses a request body; a failure is a 400 naming the missing field.
pub(crate) fn decode<'a, T: serde::Deserialize<'a>>(text: &'a str) -> Result<T, ApiError> {
    serde_json::from_str(text).map_err(|e| {
        let msg = e.to_string();
        let param = msg
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next())
            .map(str::to_owned);
        ApiError::Invalid {
            message: format!("Invalid request body: {msg}"),
            param,
        }
    })
}

/// `x-loom-provider`, `x-loom-model` and `x-loom-attempts`.
pub(crate) fn routing_headers(resp: &mut Response<Body>, target: &Target, attempts: u32) {
    // Names built once: parsing a `&str` name costs more than the insert.
    const PROVIDER: HeaderName = HeaderName::from_static("x-loom-provider");
    const MODEL: HeaderName = HeaderName::from_static("x-loom-model");
    const ATTEMPTS: HeaderName = HeaderName::from_static("x-loom-attempts");
    let h = resp.headers_mut();
    h.reserve(3);
    if let Some(v) = target.provider.name_header() {
        h.insert(PROVIDER, v.clone());
    }
    if let Ok(v) = HeaderValue::from_str(&target.model) {
        h.insert(MODEL, v);
    }
    // Static values for the usual counts: `HeaderValue::from(u32)` allocates.
    const COUNTS: [HeaderValue; 4] = [
        HeaderValue::from_static("0"),
        HeaderValue::from_static("1"),
        HeaderValue::from_static("2"),
        HeaderValue::from_static("3"),
    ];
    let count = match COUNTS.get(attempts as usize) {
        Some(v) => v.clone(),
        None => HeaderValue::from(attempts),
    };
    h.insert(ATTEMPTS, count);
}

fn models(rt: &Runtime) -> Response<Body> {
    let list = ModelList::new(rt.providers.models().to_vec());
    json_response(
        StatusCode::OK,
        serde_json::to_vec(&list).unwrap_or_default(),
    )
}

fn model(rt: &Runtime, id: &str) -> Result<Response<Body>, ApiError> {
    match rt.providers.models().iter().find(|c| c.id == id) {
        Some(card) => Ok(json_response(
            StatusCode::OK,
            serde_json::to_vec(card).unwrap_or_default(),
        )),
        None => Err(ApiError::NotFound {
            message: format!("The model `{id}` does not exist"),
            code: "model_not_found",
        }),
    }
}

/// Headers of an event-stream response.
pub(crate) fn sse_headers(resp: &mut Response<Body>) {
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
}

#[cfg(test)]
mod tests {
    use super::endpoint;

    #[test]
    fn endpoints_are_found_under_any_prefix() {
        assert_eq!(endpoint("/v1/chat/completions"), "/chat/completions");
        assert_eq!(endpoint("/team-a/v1/chat/completions"), "/chat/completions");
        assert_eq!(endpoint("/completions"), "/completions");
        assert_eq!(endpoint("/v1/models/gpt-4o"), "/models/gpt-4o");
        assert_eq!(endpoint("/v1/messages"), "/messages");
        assert_eq!(endpoint("/v1/responses"), "/responses");
        assert_eq!(
            endpoint("/v1/responses/resp_1/input_items"),
            "/responses/resp_1/input_items"
        );
        assert_eq!(
            endpoint("/v1/messages/count_tokens"),
            "/messages/count_tokens"
        );
        assert_eq!(
            endpoint("/v1/responses/input_tokens"),
            "/responses/input_tokens"
        );
        assert_eq!(endpoint("/v1/nothing"), "/v1/nothing");
    }
}

//! The data path, top to bottom. Every request on every listener goes through
//! [`handle`]:
//!
//! 1. take the configuration generation the request will finish on;
//! 2. request id (the client's `x-request-id` or a new one);
//! 3. route lookup (host, path, method);
//! 4. route middleware, in order: API-key authentication ([`crate::route::auth`],
//!    names the consumer) → the route's rate limit ([`crate::route::traffic`]) →
//!    Proxy-Wasm plugins (`phase: before_auth` ones run before
//!    authentication);
//! 5. the route's handler: the AI API ([`crate::ai`], which applies the
//!    consumer's limits and rate limits once it knows the model) or the
//!    reverse proxy;
//! 6. `x-request-id` on the response; metrics and the access-log line are
//!    written when the exchange ends (for a stream: at its last byte).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use http::header::{CONTENT_LENGTH, HOST, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use loom_http::ClientInfo;
use loom_plugins::{Phase, Stream, Verdict};
use loom_proxy::Upstream;

use crate::ai;
use crate::route::request_id;
use crate::route::routes::{CompiledRoute, Lookup, RouteKind};
use crate::runtime::body::{Body, BoxError, json_response};
use crate::runtime::exchange::Exchange;
use crate::runtime::state::Shared;

/// The pipeline as one client's cleartext connection calls it.
#[derive(Clone)]
pub struct Pipeline {
    pub shared: Arc<Shared>,
    pub client: ClientInfo,
}

impl loom_http::server::Handler for Pipeline {
    fn handle<B>(
        &self,
        req: Request<B>,
    ) -> impl Future<Output = Result<Response<Body>, Infallible>> + Send + use<B>
    where
        B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        handle(self.shared.clone(), self.client.clone(), req)
    }

    fn overloaded(&self) -> bool {
        self.shared.bounds.exceeded()
    }
}

/// Serves one request, whatever its listener (HTTP/1.1, HTTP/2 or HTTP/3
/// bodies).
pub async fn handle<B>(
    shared: Arc<Shared>,
    client: ClientInfo,
    req: Request<B>,
) -> Result<Response<Body>, Infallible>
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let started = Instant::now();
    // Judged before this request counts: at the bound, it is shed.
    let shedding = shared.bounds.exceeded();
    let rt = shared.runtime.load_full();
    let id = request_id::for_request(req.headers());
    let id_header = id.header().clone();
    let host = req
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().host());
    let mut ex = Exchange::new(
        shared.clone(),
        id,
        req.method().clone(),
        req.uri().path().to_owned(),
        started,
    );

    let found = rt.routes.find(
        host,
        req.uri().path(),
        req.method(),
        req.uri().query(),
        req.headers(),
    );
    let (resp, ex) = match found {
        Lookup::NotFound => (
            plain_error(StatusCode::NOT_FOUND, "no route matches this request"),
            Some(ex),
        ),
        Lookup::MethodNotAllowed => (
            plain_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this route",
            ),
            Some(ex),
        ),
        Lookup::Found(route) if shedding => {
            ex.route = route.id.clone();
            ex.route_metrics = Some(route.metrics.clone());
            ex.error = Some("overloaded");
            shared.metrics.shed.inc();
            (
                crate::listen::overload::shed(matches!(route.kind, RouteKind::Ai)),
                Some(ex),
            )
        }
        Lookup::Found(route) => {
            ex.route = route.id.clone();
            ex.route_metrics = Some(route.metrics.clone());
            let plugins = (!route.plugins.is_empty())
                .then(|| route.plugins.start(stream_info(&req, &client, route, &ex)));
            let (resp, mut ex) =
                match admit(&shared, &rt, route, req, &client, ex, plugins.as_ref()).await {
                    Admitted::Answered(resp, ex) => (resp, Some(ex)),
                    Admitted::Go(req, ex) => {
                        let (resp, ex) = match &route.kind {
                            RouteKind::Ai => ai::handle(&rt, route, req, ex).await,
                            RouteKind::Proxy(upstream) => {
                                let mut ex = ex;
                                let resp =
                                    proxy_route(&shared, route, upstream, req, client, &mut ex)
                                        .await;
                                (resp, Some(ex))
                            }
                            RouteKind::Redirect(r) => (r.response(req.uri()), Some(ex)),
                        };
                        // A plugin may have answered while the request body streamed.
                        match plugins.as_ref().and_then(Stream::take_local) {
                            Some(local) => (local_response(local), ex),
                            None => (resp, ex),
                        }
                    }
                };
            match &plugins {
                Some(stream) => (plugins_on_response(stream, resp, ex.as_mut()).await, ex),
                None => (resp, ex),
            }
        }
    };
    finish(resp, id_header, ex)
}

/// What the middleware decided.
enum Admitted {
    /// Answered already (refused, or a plugin's own answer).
    Answered(Response<Body>, Exchange),
    /// On to the route's handler.
    Go(Request<Body>, Exchange),
}

/// Middleware: plugins before authentication, authentication, the route's
/// rate limit, plugins after authentication (their body filter included).
async fn admit<B>(
    shared: &Arc<Shared>,
    rt: &crate::runtime::state::Runtime,
    route: &CompiledRoute,
    mut req: Request<B>,
    client: &ClientInfo,
    mut ex: Exchange,
    plugins: Option<&Stream>,
) -> Admitted
where
    B: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    // On AI routes, what plugins set on the request goes to the provider:
    // the client's headers are noted before any plugin runs.
    let before = plugins
        .filter(|_| matches!(route.kind, RouteKind::Ai))
        .map(|_| req.headers().clone());
    if let Some(stream) = plugins.filter(|_| route.plugins.has(Phase::BeforeAuth)) {
        req = match plugins_on_request(stream, req, Phase::BeforeAuth, &mut ex).await {
            Ok(r) => r,
            Err(resp) => return Admitted::Answered(resp, ex),
        };
    }
    if let Some(auth) = &route.auth {
        let keys = shared.control.as_ref().map(|c| &**c.keys());
        match auth.authenticate(req.headers_mut(), rt.accountant.consumers(), keys) {
            Ok((consumer, key)) => {
                if let Some(stream) = plugins {
                    stream.set_consumer(&consumer.name);
                }
                ex.consumer = Some(consumer);
                ex.key = key;
            }
            Err(d) => {
                let (status, message, code) = d.parts(auth.header());
                ex.error = Some("unauthorized");
                return Admitted::Answered(unauthorized(status, &message, code), ex);
            }
        }
    }
    // The route's rate limit, once the consumer is known.
    if let Some(rl) = &route.rate_limit {
        let consumer = ex.consumer.as_ref().map(|c| c.name.as_str());
        if let Some(refusal) = rl.admit(req.headers(), &client.ip, consumer).await {
            ex.error = Some("rate_limited");
            shared.metrics.route_limited(&route.id);
            return Admitted::Answered(refusal, ex);
        }
    }
    let Some(stream) = plugins else {
        return Admitted::Go(req.map(|b| b.map_err(Into::into).boxed_unsync()), ex);
    };
    if route.plugins.has(Phase::AfterAuth) {
        req = match plugins_on_request(stream, req, Phase::AfterAuth, &mut ex).await {
            Ok(r) => r,
            Err(resp) => return Admitted::Answered(resp, ex),
        };
    }
    if let Some(before) = before {
        let set = plugin_set_headers(&before, req.headers());
        if !set.is_empty() {
            req.extensions_mut().insert(PluginHeaders(Arc::new(set)));
        }
    }
    Admitted::Go(
        req.map(|b| stream.request_body(b.map_err(Into::into).boxed_unsync())),
        ex,
    )
}

/// Headers that plugins set on an AI route's request, for the provider.
#[derive(Clone)]
pub(crate) struct PluginHeaders(pub Arc<http::HeaderMap>);

/// The headers in `after` that `before` did not have with the same value:
/// what plugins set or changed. Framing and hop-by-hop headers are Loom's
/// to write and never copied.
fn plugin_set_headers(before: &http::HeaderMap, after: &http::HeaderMap) -> http::HeaderMap {
    use http::header::{CONNECTION, CONTENT_LENGTH, HOST, TE, TRANSFER_ENCODING, UPGRADE};
    let mut set = http::HeaderMap::new();
    for (name, value) in after {
        if [
            CONNECTION,
            CONTENT_LENGTH,
            HOST,
            TE,
            TRANSFER_ENCODING,
            UPGRADE,
        ]
        .contains(name)
            || name.as_str() == "keep-alive"
            || name.as_str() == "proxy-connection"
        {
            continue;
        }
        if !before.get_all(name).iter().any(|v| v == value) {
            set.append(name.clone(), value.clone());
        }
    }
    set
}

/// A proxy route: canary share, the forward, response header rewrites.
async fn proxy_route(
    shared: &Arc<Shared>,
    route: &CompiledRoute,
    upstream: &Arc<Upstream>,
    req: Request<Body>,
    client: ClientInfo,
    ex: &mut Exchange,
) -> Response<Body> {
    // A canary takes its share (or the requests that ask for it).
    let upstream = match &route.canary {
        Some(c) if c.takes(req.headers()) => &c.upstream,
        _ => upstream,
    };
    let mut resp = proxy(shared, route, upstream, req, client, ex).await;
    if let Some(rw) = &route.rewrite {
        rw.response.apply(resp.headers_mut());
    }
    resp
}

/// What plugins may read about a request through properties.
fn stream_info<B>(
    req: &Request<B>,
    client: &ClientInfo,
    route: &CompiledRoute,
    ex: &Exchange,
) -> loom_plugins::StreamInfo {
    loom_plugins::StreamInfo {
        request_id: ex.request_id.as_str().to_owned(),
        route: route.id.clone(),
        method: req.method().clone(),
        uri: req.uri().clone(),
        host: req.headers().get(HOST).cloned(),
        scheme: client.scheme,
        protocol: match req.version() {
            http::Version::HTTP_2 => "HTTP/2",
            http::Version::HTTP_3 => "HTTP/3",
            http::Version::HTTP_10 => "HTTP/1.0",
            _ => "HTTP/1.1",
        },
        source: Some(client.addr),
        destination: None,
        upstream: match &route.kind {
            RouteKind::Proxy(u) => Some(u.clone()),
            _ => None,
        },
        consumer: None,
    }
}

/// Runs the request-headers callbacks of one phase; an answer in place of
/// the upstream comes back as `Err`.
async fn plugins_on_request<B: http_body::Body>(
    stream: &Stream,
    req: Request<B>,
    phase: Phase,
    ex: &mut Exchange,
) -> Result<Request<B>, Response<Body>> {
    let (parts, body) = req.into_parts();
    let end = http_body::Body::is_end_stream(&body);
    let (parts, verdict) = stream.request_headers(parts, end, phase).await;
    match verdict {
        Verdict::Continue => Ok(Request::from_parts(parts, body)),
        Verdict::Local(local) => {
            ex.error = Some("plugin_response");
            Err(local_response(local))
        }
        Verdict::Failed { plugin } => {
            ex.error = Some("plugin_failed");
            Err(plugin_failed(&plugin))
        }
    }
}

/// Runs the response callbacks: headers now, the body as it streams.
async fn plugins_on_response(
    stream: &Stream,
    resp: Response<Body>,
    ex: Option<&mut Exchange>,
) -> Response<Body> {
    let (parts, body) = resp.into_parts();
    let end = http_body::Body::is_end_stream(&body);
    let (parts, verdict) = stream.response_headers(parts, end).await;
    match verdict {
        Verdict::Continue => Response::from_parts(parts, stream.response_body(body)),
        Verdict::Local(local) => local_response(local),
        Verdict::Failed { plugin } => {
            if let Some(ex) = ex {
                ex.error = Some("plugin_failed");
            }
            plugin_failed(&plugin)
        }
    }
}

/// A plugin's own answer (`send_local_response`).
fn local_response(local: loom_plugins::LocalResponse) -> Response<Body> {
    let mut resp = Response::new(crate::runtime::body::full(local.body));
    *resp.status_mut() = local.status;
    *resp.headers_mut() = local.headers;
    resp
}

/// A fail-closed plugin failed: the request fails, in OpenAI's envelope.
fn plugin_failed(plugin: &str) -> Response<Body> {
    let body = serde_json::json!({"error": {
        "message": format!("plugin {plugin} failed while handling this request"),
        "type": "plugin_error", "param": null, "code": "plugin_failed"}});
    json_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        serde_json::to_vec(&body).unwrap_or_default(),
    )
}

/// The request id on the response, and the status on the exchange.
fn finish(
    mut resp: Response<Body>,
    id_header: HeaderValue,
    ex: Option<Exchange>,
) -> Result<Response<Body>, Infallible> {
    resp.headers_mut().insert(request_id::HEADER, id_header);
    if let Some(mut ex) = ex {
        ex.status = resp.status().as_u16();
    }
    Ok(resp)
}

/// An error of the gateway itself on a non-AI path, as JSON.
fn plain_error(status: StatusCode, message: &str) -> Response<Body> {
    let body = serde_json::json!({"error": {"message": message, "type": "gateway_error", "param": null, "code": null}});
    json_response(status, serde_json::to_vec(&body).unwrap_or_default())
}

/// A refused API key, in OpenAI's error envelope.
fn unauthorized(status: StatusCode, message: &str, code: &str) -> Response<Body> {
    let body = serde_json::json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": code}});
    let mut resp = json_response(status, serde_json::to_vec(&body).unwrap_or_default());
    resp.headers_mut().insert(
        http::header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer"),
    );
    resp
}

/// A gateway error to a gRPC client: a trailers-only answer (HTTP 200,
/// `grpc-status`, `grpc-message`), as gRPC clients expect: DEADLINE_EXCEEDED
/// for a timeout, UNAVAILABLE for an upstream that cannot be reached.
fn grpc_error(status: StatusCode, message: &str) -> Response<Body> {
    let code = match status {
        StatusCode::GATEWAY_TIMEOUT => "4",
        StatusCode::BAD_REQUEST => "3",
        _ => "14",
    };
    let mut resp = Response::new(crate::runtime::body::full(bytes::Bytes::new()));
    let h = resp.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert("grpc-status", HeaderValue::from_static(code));
    if let Ok(v) = HeaderValue::from_str(&message.replace(['\r', '\n'], " ")) {
        h.insert("grpc-message", v);
    }
    resp
}

/// Marks the copies sent to a shadow upstream.
const SHADOW: http::header::HeaderName = http::header::HeaderName::from_static("x-loom-shadow");

/// Whether a request's body is small enough to keep for a retry: declared
/// at most `MAX_REPLAY` bytes, or absent (no length and not chunked).
fn replayable<B>(req: &Request<B>) -> bool {
    let h = req.headers();
    match h.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()) {
        Some(n) => n.parse::<u64>().is_ok_and(|n| n <= loom_proxy::MAX_REPLAY),
        None => !h.contains_key(http::header::TRANSFER_ENCODING),
    }
}

/// Forwards a request on a proxy route; both bodies stream (a request
/// that may be retried is read first: it is small).
async fn proxy(
    shared: &Arc<Shared>,
    route: &CompiledRoute,
    upstream: &Arc<Upstream>,
    mut req: Request<Body>,
    client: ClientInfo,
    ex: &mut Exchange,
) -> Response<Body> {
    req.headers_mut()
        .insert(request_id::HEADER, ex.request_id.header().clone());
    if let Some(rw) = &route.rewrite {
        if let Some(uri) = rw.uri(req.uri()) {
            *req.uri_mut() = uri;
        }
        rw.request.apply(req.headers_mut());
    }
    let mut req = match route.max_body {
        None => req,
        Some(limit) => {
            let declared = req
                .headers()
                .get(CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|n| n > limit) {
                ex.error = Some("body_too_large");
                return plain_error(StatusCode::PAYLOAD_TOO_LARGE, "request body too large");
            }
            let limit = usize::try_from(limit).unwrap_or(usize::MAX);
            req.map(|b| Limited::new(b, limit).boxed_unsync())
        }
    };
    let grpc = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
    // gRPC-Web from a browser: sent on as gRPC, answered as gRPC-Web.
    let web = crate::route::grpc_web::mode(req.headers());
    if let Some(mode) = web {
        req = match Box::pin(crate::route::grpc_web::request(req, mode)).await {
            Ok(r) => r,
            Err(e) => {
                ex.error = Some("bad_request_body");
                return grpc_error(StatusCode::BAD_REQUEST, &e);
            }
        };
    }
    // A WebSocket (or other upgrade): forwarded once, then tunnelled.
    let upgrade = loom_proxy::is_upgrade(&req).then(|| hyper::upgrade::on(&mut req));
    if let Some(client_side) = upgrade {
        let mut resp = match Box::pin(shared.forwarder.forward(upstream, req, client)).await {
            Ok(r) => r,
            Err(e) => {
                ex.error = Some("upstream_error");
                return plain_error(e.status(), &e.to_string());
            }
        };
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            let upstream_side = hyper::upgrade::on(&mut resp);
            let idle = upstream.tunnel_idle;
            tokio::spawn(async move {
                loom_proxy::tunnel(client_side, upstream_side, idle).await;
            });
        }
        return resp;
    }
    let retry = route
        .retry
        .as_ref()
        .filter(|p| p.allows(req.method()) && replayable(&req));
    let shadow = route
        .shadow
        .as_ref()
        .filter(|s| s.takes() && replayable(&req));
    let result = if retry.is_none() && shadow.is_none() {
        shared.forwarder.forward(upstream, req, client).await
    } else {
        // Boxed, as every branch but the plain forward: their futures
        // would otherwise be carried and copied by every request's.
        let replayed = Box::pin(async {
            // Small body: read it once, for the copy and for the tries.
            let (parts, body) = req.into_parts();
            let body = match body.collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    ex.error = Some("bad_request_body");
                    return Err(plain_error(
                        StatusCode::BAD_REQUEST,
                        &format!("could not read the request body: {e}"),
                    ));
                }
            };
            if let Some(s) = shadow {
                // Fire and forget: the copy runs on its own task and its answer
                // is dropped; the primary never waits for it.
                let mut copy = loom_http::rebuild(&parts, body.clone());
                copy.headers_mut()
                    .insert(SHADOW, HeaderValue::from_static("1"));
                let (shared, up, client) = (shared.clone(), s.upstream.clone(), client.clone());
                let route_id = route.id.clone();
                tokio::spawn(async move {
                    let ok = shared.forwarder.forward(&up, copy, client).await.is_ok();
                    shared.metrics.shadowed(&route_id, ok);
                });
            }
            match retry {
                Some(policy) => {
                    let (result, retries, exhausted) = shared
                        .forwarder
                        .forward_retrying(upstream, &parts, body, client, policy)
                        .await;
                    shared.metrics.retries(&route.id, retries, exhausted);
                    Ok(result)
                }
                None => {
                    let req = loom_http::rebuild(&parts, body);
                    Ok(shared.forwarder.forward(upstream, req, client).await)
                }
            }
        });
        match replayed.await {
            Ok(r) => r,
            Err(resp) => return resp,
        }
    };
    match result {
        Ok(resp) => match web {
            Some(mode) => crate::route::grpc_web::response(resp, mode),
            None => resp,
        },
        Err(e) => {
            ex.error = Some(match e.status() {
                StatusCode::GATEWAY_TIMEOUT => "upstream_timeout",
                _ => "upstream_error",
            });
            tracing::warn!(request_id = %ex.request_id, error = %e, "proxy request failed");
            if grpc {
                return grpc_error(e.status(), &e.to_string());
            }
            plain_error(e.status(), &e.to_string())
        }
    }
}

//! The HTTP client every provider shares: rustls with the platform's trust
//! store, HTTP/2 where the server offers it (ALPN), pooled keep-alive
//! connections.
//!
//! This is Loom's own pool ([`loom_http::Pool`]) rather than reqwest:
//! reqwest re-parses every request URL with the `url` crate (with IDNA) and
//! runs a redirect policy per request: under callgrind on the `bench/run.sh`
//! chat workload that was 20% of the gateway's instructions per request, for
//! features a provider call never uses. Here URIs are parsed once per
//! provider and reused. The pool keeps connections per thread (see its
//! documentation for why).

use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderMap};
use http::{Request, Response, Uri};
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use loom_http::{Pool, PoolBody};

use tokio::time::Instant;

use crate::Error;

/// A provider's response body, streamed from a pooled connection.
pub(crate) type Incoming = PoolBody<Full<Bytes>>;

/// A cheap-to-clone handle on the connection pools.
#[derive(Clone, Debug)]
pub struct HttpClient {
    pool: Pool<Full<Bytes>>,
}

impl HttpClient {
    /// Builds the client; fails only when no TLS trust store can be loaded.
    pub fn new() -> Result<HttpClient, Error> {
        // Two rustls crypto providers are linked (aws-lc-rs here, ring for
        // the Qdrant client's gRPC), so rustls cannot pick one by itself:
        // aws-lc-rs is installed as the process default (once; later calls
        // find it in place).
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        http.set_nodelay(true);
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .try_with_platform_verifier()
            .map_err(|e| Error::Unsupported(format!("cannot load the TLS trust store: {e}")))?
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(http);
        Ok(HttpClient {
            // As many idle connections per provider and thread as hyper's
            // pool kept by default: no bound.
            pool: Pool::new(connector, usize::MAX, false),
        })
    }

    pub(crate) async fn send(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, loom_http::Error> {
        self.pool.send(req).await
    }
}

/// Posts `body` to `uri` before `deadline`; a response whose status is not a
/// success becomes [`Error::Status`] carrying the provider's body.
pub(crate) async fn post(
    client: &HttpClient,
    provider: &str,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
    deadline: Instant,
) -> Result<Response<Incoming>, Error> {
    // Pinned where it is made: moving the call's future into the timeout
    // would copy all of it.
    let call = std::pin::pin!(async {
        let resp = send(client, provider, uri, headers, body).await?;
        checked(provider, resp).await
    });
    match tokio::time::timeout_at(deadline, call).await {
        Ok(r) => r,
        Err(_) => Err(Error::Timeout {
            provider: provider.to_owned(),
        }),
    }
}

tokio::task_local! {
    /// Headers that Proxy-Wasm plugins set on the client's request of an AI
    /// route, sent to the provider too (see [`with_plugin_headers`]).
    static PLUGIN_HEADERS: std::sync::Arc<HeaderMap>;
}

/// Runs `call` (a request's provider calls, failover included) with
/// `headers` added to every request it sends a provider: what plugins set
/// on an AI route (a tenant id, a tracing header, an organisation header)
/// reaches the provider as it reaches a proxy route's upstream. A header
/// the provider adapter sets itself (its credential, its content type)
/// keeps the adapter's value. A task-local, because the calls sit several
/// layers under the route (each endpoint, each provider, each attempt) and
/// a request without plugin headers must pay nothing.
pub async fn with_plugin_headers<F: std::future::Future>(
    headers: std::sync::Arc<HeaderMap>,
    call: F,
) -> F::Output {
    PLUGIN_HEADERS.scope(headers, call).await
}

/// Adds the plugin headers in scope, if any, where `own` lacks the name.
fn add_plugin_headers(own: &HeaderMap, req: &mut HeaderMap) {
    let _ = PLUGIN_HEADERS.try_with(|added| {
        for (name, value) in added.iter() {
            if !own.contains_key(name) {
                req.append(name.clone(), value.clone());
            }
        }
    });
}

/// Sends the request; no deadline of its own.
async fn send(
    client: &HttpClient,
    provider: &str,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response<Incoming>, Error> {
    send_as(client, provider, http::Method::POST, uri, headers, body).await
}

/// Sends a request of `method`; no deadline of its own.
async fn send_as(
    client: &HttpClient,
    provider: &str,
    method: http::Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Result<Response<Incoming>, Error> {
    let mut req = Request::builder()
        .method(method)
        .uri(uri.clone())
        .body(Full::new(body))
        .map_err(|e| Error::Unsupported(e.to_string()))?;
    *req.headers_mut() = headers.clone();
    add_plugin_headers(headers, req.headers_mut());
    client
        .send(req)
        .await
        .map_err(|e| Error::from_transport(provider, e))
}

/// The response if its status is a success, else [`Error::Status`] with the
/// provider's body, message and `Retry-After`.
async fn checked(provider: &str, resp: Response<Incoming>) -> Result<Response<Incoming>, Error> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status();
    let content_type = resp
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let retry_after = resp
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(|s| std::time::Duration::from_secs_f64(s.min(3600.0)));
    let body = read_body(provider, resp).await.unwrap_or_default();
    Err(Error::Status {
        provider: provider.to_owned(),
        status,
        message: crate::openai::upstream_message(&body),
        body,
        content_type,
        retry_after,
    })
}

/// Posts `body` and reads the whole answer before `deadline`, under one
/// timer: a timer per step costs a timer-wheel entry each, measurable on
/// every request.
pub(crate) async fn fetch(
    client: &HttpClient,
    provider: &str,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
    deadline: Instant,
) -> Result<Bytes, Error> {
    // Pinned where it is made: moving the call's future into the timeout
    // would copy all of it, twice.
    let call = std::pin::pin!(async {
        let resp = send(client, provider, uri, headers, body).await?;
        let resp = checked(provider, resp).await?;
        read_body(provider, resp).await
    });
    match tokio::time::timeout_at(deadline, call).await {
        Ok(r) => r,
        Err(_) => Err(Error::Timeout {
            provider: provider.to_owned(),
        }),
    }
}

/// A bodiless request of `method` (`GET`, `DELETE`) whose whole answer is
/// read before `deadline`; a status that is not a success becomes
/// [`Error::Status`].
pub(crate) async fn fetch_as(
    client: &HttpClient,
    provider: &str,
    method: http::Method,
    uri: &Uri,
    headers: &HeaderMap,
    deadline: Instant,
) -> Result<Bytes, Error> {
    let call = std::pin::pin!(async {
        let resp = send_as(client, provider, method, uri, headers, Bytes::new()).await?;
        let resp = checked(provider, resp).await?;
        read_body(provider, resp).await
    });
    match tokio::time::timeout_at(deadline, call).await {
        Ok(r) => r,
        Err(_) => Err(Error::Timeout {
            provider: provider.to_owned(),
        }),
    }
}

/// A `GET` that must answer within `timeout`: the cheap call of an active
/// health check.
pub(crate) async fn probe(
    client: &HttpClient,
    provider: &str,
    uri: &Uri,
    headers: &HeaderMap,
    timeout: std::time::Duration,
) -> Result<(), Error> {
    let call = async {
        let mut req = Request::get(uri.clone())
            .body(Full::new(Bytes::new()))
            .map_err(|e| Error::Unsupported(e.to_string()))?;
        *req.headers_mut() = headers.clone();
        let resp = client
            .send(req)
            .await
            .map_err(|e| Error::from_transport(provider, e))?;
        // Reachable and accepting the key is what a check asks: a path this
        // provider does not serve (404, 405) still passes; a server error,
        // a refused key or a rate limit does not.
        let status = resp.status().as_u16();
        if status < 500 && !matches!(status, 401 | 403 | 429) {
            return Ok(());
        }
        checked(provider, resp).await.map(drop)
    };
    match tokio::time::timeout(timeout, call).await {
        Ok(r) => r,
        Err(_) => Err(Error::Timeout {
            provider: provider.to_owned(),
        }),
    }
}

/// Reads a whole response body before `deadline`.
pub(crate) async fn collect(
    provider: &str,
    resp: Response<Incoming>,
    deadline: Instant,
) -> Result<Bytes, Error> {
    let read = std::pin::pin!(read_body(provider, resp));
    match tokio::time::timeout_at(deadline, read).await {
        Err(_) => Err(Error::Timeout {
            provider: provider.to_owned(),
        }),
        Ok(r) => r,
    }
}

/// Reads a whole response body; no deadline of its own.
async fn read_body(provider: &str, resp: Response<Incoming>) -> Result<Bytes, Error> {
    // The usual answer arrives in one frame and is kept as it is.
    match loom_http::collect(resp.into_body(), u64::MAX, 0).await {
        Ok(read) => Ok(read.data),
        Err(e) => Err(Error::Stream {
            provider: provider.to_owned(),
            detail: match e {
                loom_http::CollectError::Failed(detail) => detail,
                loom_http::CollectError::TooLarge => "answer too large".to_owned(),
            },
        }),
    }
}

/// Builds the header map of a provider: fixed headers, then the configured
/// extra headers. Every value is marked sensitive so it never prints.
pub(crate) fn headers(
    cfg: &loom_config::settings::Provider,
    fixed: Vec<(http::HeaderName, String)>,
) -> Result<HeaderMap, Error> {
    let invalid = |what: String| Error::Unsupported(format!("provider {}: {what}", cfg.name));
    let mut map = HeaderMap::new();
    map.insert(
        CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    let extra = cfg.headers.iter().map(|(k, v)| {
        http::HeaderName::try_from(k.as_str())
            .map(|name| (name, v.expose().to_owned()))
            .map_err(|_| invalid(format!("invalid header name {k:?}")))
    });
    for pair in fixed.into_iter().map(Ok).chain(extra) {
        let (name, value) = pair?;
        let mut value = http::HeaderValue::try_from(value)
            .map_err(|_| invalid(format!("invalid value for header {name}")))?;
        value.set_sensitive(true);
        map.insert(name, value);
    }
    Ok(map)
}

//! Forwarding one request to an upstream endpoint.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HOST, HeaderName, HeaderValue};
use http::{Request, Response, Uri, Version};
use hyper_util::client::legacy::connect::HttpConnector;

use crate::balance::InFlight;
use crate::retry::{Failure, RetryPolicy};
use crate::{Error, Upstream};
use http_body_util::BodyExt;
use loom_http::{Body, BoxError, ClientInfo, Pool, PoolBody, rebuild, strip_hop_by_hop};

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// A pool's identity on its thread: the forwarder, the connect timeout,
/// the idle bound, whether it speaks HTTP/2, and its TLS configuration.
type PoolKey = (usize, Duration, usize, bool, usize);

type Pooled = Pool<Body>;

thread_local! {
    static CLIENTS: std::cell::RefCell<Vec<(PoolKey, Pooled)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Sends requests to upstreams over pooled keep-alive connections. One per
/// process: pools are kept per distinct connect timeout and pool size, so a
/// configuration reload keeps its connections.
#[derive(Default)]
pub struct Forwarder {
    /// Pools live in each thread's `CLIENTS`; this only gives the
    /// forwarder an address of its own.
    _identity: u8,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder").finish_non_exhaustive()
    }
}

impl Forwarder {
    fn client(&self, upstream: &Upstream) -> Pooled {
        // Pools per thread: each worker thread runs its own event loop, and
        // a pooled connection's task lives on the loop that opened it. A
        // request on another thread would wake that loop for every read
        // and write; a pool per thread keeps both on one (and finding it
        // takes no lock).
        let key = (
            self as *const Forwarder as usize,
            upstream.connect_timeout,
            upstream.max_idle,
            upstream.h2,
            upstream.tls.as_ref().map_or(0, |t| Arc::as_ptr(t) as usize),
        );
        CLIENTS.with(|clients| {
            let mut clients = clients.borrow_mut();
            if let Some((_, c)) = clients.iter().find(|(k, _)| *k == key) {
                return c.clone();
            }
            let mut connector = HttpConnector::new();
            connector.set_connect_timeout(Some(upstream.connect_timeout));
            connector.set_nodelay(true);
            connector.enforce_http(false);
            // Plain-HTTP upstreams never use the TLS side; it still needs a
            // configuration to exist.
            let tls = upstream
                .tls
                .as_ref()
                .map_or_else(plain_tls, |t| (**t).clone());
            let with = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(tls)
                .https_or_http();
            let connector = if upstream.h2 {
                with.enable_http2().wrap_connector(connector)
            } else {
                with.enable_http1().wrap_connector(connector)
            };
            let c = Pool::new(connector, upstream.max_idle, upstream.h2);
            clients.push((key, c.clone()));
            c
        })
    }

    /// Forwards `req` to the next endpoint of `upstream`. The response comes
    /// back once its headers have arrived; its body streams afterwards.
    ///
    /// (Not an `async fn` of its own: a wrapper future would copy the
    /// whole of the inner one when first awaited.)
    pub fn forward<'a>(
        &'a self,
        upstream: &'a Arc<Upstream>,
        req: Request<Body>,
        client: ClientInfo,
    ) -> impl Future<Output = Result<Response<Body>, Error>> + Send + 'a {
        self.forward_once(upstream, req, client, upstream.timeout)
    }

    /// Forwards a request whose body is in memory, retrying as `policy`
    /// says. Returns the answer (the last one, when every try failed) and
    /// the number of retries made, and whether the budget stopped one.
    pub async fn forward_retrying(
        &self,
        upstream: &Arc<Upstream>,
        parts: &http::request::Parts,
        body: Bytes,
        client: ClientInfo,
        policy: &RetryPolicy,
    ) -> (Result<Response<Body>, Error>, u32, bool) {
        policy.request();
        let per_try = policy.per_try_timeout.unwrap_or(upstream.timeout);
        let mut retries = 0;
        let mut exhausted = false;
        let tries = async {
            loop {
                let req = rebuild(parts, body.clone());
                let result = self
                    .forward_once(upstream, req, client.clone(), per_try)
                    .await;
                let failure = match &result {
                    Ok(r) if r.status().is_client_error() || r.status().as_u16() < 400 => None,
                    Ok(r) => Some(Failure::Status(r.status())),
                    Err(Error::Connect { .. }) => Some(Failure::Connect),
                    Err(Error::Timeout { .. }) => Some(Failure::Timeout),
                    Err(Error::Failed { .. }) => Some(Failure::Reset),
                    Err(_) => None,
                };
                let again =
                    failure.is_some_and(|f| policy.retries(f)) && retries + 1 < policy.attempts;
                if !again {
                    return result;
                }
                if !policy.take_retry() {
                    exhausted = true;
                    return result;
                }
                retries += 1;
            }
        };
        let result = match policy.timeout {
            Some(t) => tokio::time::timeout(t, tries).await.unwrap_or_else(|_| {
                Err(Error::Timeout {
                    upstream: upstream.name.clone(),
                })
            }),
            None => tries.await,
        };
        (result, retries, exhausted)
    }

    async fn forward_once(
        &self,
        upstream: &Arc<Upstream>,
        mut req: Request<Body>,
        client: ClientInfo,
        timeout: Duration,
    ) -> Result<Response<Body>, Error> {
        let admitted = match &upstream.breaker {
            None => None,
            Some(b) => Some(b.admit().map_err(|why| Error::CircuitOpen {
                upstream: upstream.name.clone(),
                why: match why {
                    crate::breaker::Refusal::Pending => "too many pending requests",
                    crate::breaker::Refusal::Open => "failing upstream",
                },
            })?),
        };
        let (endpoint, in_flight) = upstream.pick(req.headers(), client.ip.as_bytes());
        // Without a base path the request's path and query are reused as
        // they are (no formatting, no second parse).
        let path_and_query = match (endpoint.base_path.is_empty(), req.uri().path_and_query()) {
            (true, Some(pq)) => pq.clone(),
            (_, pq) => {
                let pq = pq.map_or("/", |p| p.as_str());
                format!("{}{pq}", endpoint.base_path)
                    .parse()
                    .map_err(|e: http::uri::InvalidUri| Error::BadRequest(e.to_string()))?
            }
        };
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(endpoint.scheme.clone());
        parts.authority = Some(endpoint.authority.clone());
        parts.path_and_query = Some(path_and_query);
        let uri = Uri::from_parts(parts).map_err(|e| Error::BadRequest(e.to_string()))?;

        let original_host = req.headers().get(HOST).cloned().or_else(|| {
            req.uri()
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        let headers = req.headers_mut();
        let upgrade = loom_http::is_upgrade(headers)
            .then(|| crate::upgrade::upgrade_headers(headers))
            .flatten();
        // `TE: trailers` is the one TE value HTTP/2 allows, and gRPC
        // servers require it: kept through the hop-by-hop removal.
        let te_trailers = headers
            .get(http::header::TE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
            });
        strip_hop_by_hop(headers);
        if te_trailers {
            headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
        }
        if let Some(u) = &upgrade {
            crate::upgrade::restore(headers, u.clone());
        }
        let xff = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(prior) => {
                let ip = client.ip.to_str().unwrap_or("unknown");
                HeaderValue::try_from(format!("{prior}, {ip}")).ok()
            }
            None => Some(client.ip.clone()),
        };
        if let Some(v) = xff {
            headers.insert(X_FORWARDED_FOR, v);
        }
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(client.scheme));
        if let Some(host) = original_host {
            headers.insert(X_FORWARDED_HOST, host);
        }
        if let Some(v) = &endpoint.host {
            headers.insert(HOST, v.clone());
        }
        *req.uri_mut() = uri;
        *req.version_mut() = if upstream.h2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };

        let pool = self.client(upstream);
        // Pinned where it is made: the exchange's future is large, and
        // moving it into the timeout copied it twice per request.
        let send = std::pin::pin!(pool.send(req));
        let outcome = tokio::time::timeout(timeout, send).await;
        let failed = !matches!(&outcome, Ok(Ok(r)) if !r.status().is_server_error());
        upstream.observed(endpoint, failed);
        if let Some(a) = admitted {
            a.done(failed);
        }
        let mut resp = match outcome {
            Err(_) => {
                return Err(Error::Timeout {
                    upstream: upstream.name.clone(),
                });
            }
            // Named for the upstream rather than the endpoint's address.
            Ok(Err(loom_http::Error::Connect { detail, .. })) => {
                return Err(Error::Connect {
                    upstream: upstream.name.clone(),
                    detail,
                });
            }
            Ok(Err(loom_http::Error::Failed { detail, .. })) => {
                return Err(Error::Failed {
                    upstream: upstream.name.clone(),
                    detail,
                });
            }
            Ok(Err(e)) => return Err(e.into()),
            Ok(Ok(resp)) => resp,
        };
        let switching = resp.status() == http::StatusCode::SWITCHING_PROTOCOLS;
        let back = switching
            .then(|| crate::upgrade::upgrade_headers(resp.headers()))
            .flatten();
        strip_hop_by_hop(resp.headers_mut());
        if let Some(u) = back {
            crate::upgrade::restore(resp.headers_mut(), u);
        }
        Ok(resp.map(|body| match in_flight {
            // The request stays in flight until its response body ends.
            Some(guard) => Guarded {
                body,
                _guard: guard,
            }
            .boxed_unsync(),
            None => body.map_err(Into::into).boxed_unsync(),
        }))
    }
}

/// A TLS configuration for upstreams without `https://` endpoints, where
/// it is never used: no roots, so it could not connect anywhere anyway.
fn plain_tls() -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map(|b| {
        b.with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth()
    })
    .unwrap_or_else(|_| {
        rustls::ClientConfig::builder()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth()
    })
}

/// A response body that holds its endpoint's in-flight count until it ends
/// or is dropped.
struct Guarded {
    body: PoolBody<Body>,
    _guard: InFlight,
}

impl http_body::Body for Guarded {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        std::pin::Pin::new(&mut self.body)
            .poll_frame(cx)
            .map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

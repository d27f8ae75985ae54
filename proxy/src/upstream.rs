//! A named group of endpoints and how the next one is picked.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use http::uri::{Authority, Scheme};

use crate::Error;
use crate::balance::{Balancer, InFlight, Kind};
use crate::health::{EndpointHealth, Outliers};

/// One endpoint: where to connect and the path prefix to prepend.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub scheme: Scheme,
    pub authority: Authority,
    /// Path of the endpoint URL without a trailing slash (`""` for none).
    pub base_path: String,
    /// The URL as configured, for reports.
    pub url: String,
    /// The `Host` header sent to it, made once.
    pub host: Option<http::HeaderValue>,
    pub health: Arc<EndpointHealth>,
}

/// One endpoint's state, for the admin API and metrics.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EndpointState {
    pub endpoint: String,
    /// Takes traffic: up by the active check and not ejected.
    pub healthy: bool,
    /// Down by the active check.
    pub down: bool,
    /// Ejected by outlier detection.
    pub ejected: bool,
}

/// A named upstream built from configuration.
#[derive(Debug)]
pub struct Upstream {
    pub(crate) name: String,
    pub(crate) endpoints: Vec<Endpoint>,
    balancer: Balancer,
    hash_on: HashKey,
    pub(crate) outliers: Option<Outliers>,
    pub(crate) checks: Option<loom_config::settings::UpstreamHealthCheck>,
    pub(crate) connect_timeout: Duration,
    pub(crate) timeout: Duration,
    pub(crate) max_idle: usize,
    /// A tunnel (WebSocket) that moves nothing for this long is closed.
    pub tunnel_idle: Duration,
    /// HTTP/2 with prior knowledge to the endpoints (gRPC).
    pub(crate) h2: bool,
    /// TLS to `https://` endpoints; `None` when every endpoint is `http://`.
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
    pub(crate) breaker: Option<crate::breaker::Breaker>,
}

impl Upstream {
    /// Builds an upstream; every endpoint must be an `http://` URL.
    pub fn new(cfg: &loom_config::settings::Upstream) -> Result<Upstream, Error> {
        let endpoints = cfg
            .endpoints
            .iter()
            .map(|e| parse_endpoint(&cfg.name, e.url()))
            .collect::<Result<Vec<_>, _>>()?;
        let names: Vec<String> = cfg.endpoints.iter().map(|e| e.url().to_owned()).collect();
        let weights: Vec<u32> = cfg.endpoints.iter().map(|e| e.weight()).collect();
        use loom_config::settings::LoadBalancer as L;
        let kind = match cfg.load_balancer {
            L::RoundRobin => Kind::RoundRobin,
            L::Weighted => Kind::Weighted,
            L::LeastRequest => Kind::LeastRequest,
            L::ConsistentHash => Kind::ConsistentHash,
            L::Random => Kind::Random,
        };
        let hash_on = match &cfg.hash_on {
            Some(loom_config::settings::HashOn {
                header: Some(h), ..
            }) => HashKey::Header(http::HeaderName::try_from(h.as_str()).map_err(|_| {
                Error::InvalidEndpoint {
                    upstream: cfg.name.clone(),
                    endpoint: format!("hash_on.header {h:?}"),
                }
            })?),
            Some(loom_config::settings::HashOn {
                cookie: Some(c), ..
            }) => HashKey::Cookie(c.clone()),
            _ => HashKey::ClientIp,
        };
        Ok(Upstream {
            name: cfg.name.clone(),
            endpoints,
            balancer: Balancer::new(kind, &names, &weights),
            hash_on,
            outliers: cfg.outlier_detection.as_ref().map(|o| Outliers {
                consecutive_failures: o.consecutive_failures.max(1),
                base_ejection: o.base_ejection_time.get(),
                max_ejection_percent: o.max_ejection_percent.min(100),
            }),
            checks: cfg.health_check.clone(),
            connect_timeout: cfg.connect_timeout.get(),
            timeout: cfg.timeout.get(),
            max_idle: cfg.max_idle_per_endpoint,
            tunnel_idle: cfg.tunnel_idle_timeout.get(),
            h2: cfg.protocol == loom_config::settings::UpstreamProtocol::H2,
            breaker: cfg
                .circuit_breaker
                .as_ref()
                .map(crate::breaker::Breaker::new),
            tls: if cfg
                .endpoints
                .iter()
                .any(|e| e.url().starts_with("https://"))
            {
                Some(Arc::new(client_tls(&cfg.name, cfg.tls.as_ref())?))
            } else {
                None
            },
        })
    }

    /// Its configured name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The endpoint for a request with `headers` from `client_ip`, and the
    /// guard that counts it in flight (least-request balancing).
    pub(crate) fn pick(
        &self,
        headers: &HeaderMap,
        client_ip: &[u8],
    ) -> (&Endpoint, Option<InFlight>) {
        let key = match (&self.balancer, &self.hash_on) {
            (Balancer::ConsistentHash { .. }, HashKey::Header(h)) => {
                Some(headers.get(h).map_or(client_ip, |v| v.as_bytes()))
            }
            (Balancer::ConsistentHash { .. }, HashKey::Cookie(name)) => {
                Some(cookie(headers, name).unwrap_or(client_ip))
            }
            (Balancer::ConsistentHash { .. }, HashKey::ClientIp) => Some(client_ip),
            _ => None,
        };
        let endpoints = &self.endpoints;
        let (i, guard) = self
            .balancer
            .pick(endpoints.len(), key, &|i| endpoints[i].health.available());
        (&self.endpoints[i], guard)
    }

    /// Records a real request's outcome on `endpoint` for outlier detection.
    pub(crate) fn observed(&self, endpoint: &Endpoint, failed: bool) {
        let Some(o) = &self.outliers else { return };
        let ejected_now = if failed {
            self.endpoints.iter().filter(|e| e.health.ejected()).count()
        } else {
            0
        };
        if endpoint
            .health
            .observed(failed, o, ejected_now, self.endpoints.len())
        {
            tracing::warn!(upstream = %self.name, endpoint = %endpoint.url, "endpoint ejected after consecutive failures");
        }
    }

    /// Every endpoint's state.
    pub fn states(&self) -> Vec<EndpointState> {
        self.endpoints
            .iter()
            .map(|e| EndpointState {
                endpoint: e.url.clone(),
                healthy: e.health.available(),
                down: !e.health.up(),
                ejected: e.health.ejected(),
            })
            .collect()
    }

    /// Whether its circuit breaker is open (or probing).
    pub fn circuit_open(&self) -> bool {
        self.breaker.as_ref().is_some_and(|b| b.is_open())
    }

    /// Whether this upstream configures active health checks.
    pub fn checked(&self) -> bool {
        self.checks.is_some()
    }

    /// Probes every endpoint each interval, all at once, until the returned
    /// future is dropped (with the configuration that built it). A 2xx
    /// answer within the timeout is a success; anything else a failure.
    pub async fn run_health_checks(self: Arc<Self>) {
        use http_body_util::Empty;
        use hyper_util::client::legacy::Client;
        use hyper_util::client::legacy::connect::HttpConnector;
        use hyper_util::rt::TokioExecutor;
        let Some(cfg) = self.checks.clone() else {
            return;
        };
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(cfg.timeout.get()));
        let client: Client<_, Empty<bytes::Bytes>> =
            Client::builder(TokioExecutor::new()).build(connector);
        let mut tick = tokio::time::interval(cfg.interval.get());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let name = self.name.as_str();
        loop {
            tick.tick().await;
            let probes = self.endpoints.iter().map(|e| {
                let client = client.clone();
                let cfg = &cfg;
                let uri = format!("{}://{}{}{}", e.scheme, e.authority, e.base_path, cfg.path);
                async move {
                    let ok = match uri.parse::<http::Uri>() {
                        Ok(uri) => matches!(
                            tokio::time::timeout(cfg.timeout.get(), client.get(uri)).await,
                            Ok(Ok(r)) if r.status().is_success()
                        ),
                        Err(_) => false,
                    };
                    if e.health
                        .checked(ok, cfg.healthy_threshold.max(1), cfg.unhealthy_threshold.max(1))
                    {
                        if ok {
                            tracing::info!(upstream = %name, endpoint = %e.url, "endpoint healthy again");
                        } else {
                            tracing::warn!(upstream = %name, endpoint = %e.url, "endpoint failed its health checks");
                        }
                    }
                }
            });
            futures_util::future::join_all(probes).await;
        }
    }
}

/// What consistent hashing hashes.
#[derive(Debug)]
enum HashKey {
    ClientIp,
    Header(http::HeaderName),
    Cookie(String),
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let (k, v) = pair.split_at(pair.iter().position(|b| *b == b'=')?);
            (k == name.as_bytes()).then(|| &v[1..])
        })
}

/// The TLS client configuration of an upstream with `https://` endpoints:
/// the system's roots (or `ca_file`'s), and a client certificate if given.
fn client_tls(
    upstream: &str,
    cfg: Option<&loom_config::settings::UpstreamTls>,
) -> Result<rustls::ClientConfig, Error> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use rustls_platform_verifier::BuilderVerifierExt;
    let fail = |what: String| Error::Tls {
        upstream: upstream.to_owned(),
        detail: what,
    };
    let certs = |file: &str| -> Result<Vec<CertificateDer<'static>>, Error> {
        CertificateDer::pem_file_iter(file)
            .and_then(|i| i.collect::<Result<Vec<_>, _>>())
            .map_err(|e| fail(format!("{file}: {e}")))
    };
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| fail(e.to_string()))?;
    let builder = match cfg.and_then(|c| c.ca_file.as_deref()) {
        Some(file) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in certs(file)? {
                roots.add(c).map_err(|e| fail(format!("{file}: {e}")))?;
            }
            builder.with_root_certificates(roots)
        }
        None => builder
            .with_platform_verifier()
            .map_err(|e| fail(e.to_string()))?,
    };
    match cfg.and_then(|c| {
        c.client_cert_file
            .as_deref()
            .zip(c.client_key_file.as_deref())
    }) {
        Some((cert, key)) => {
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| fail(format!("{key}: {e}")))?;
            builder
                .with_client_auth_cert(certs(cert)?, key)
                .map_err(|e| fail(format!("{cert}: {e}")))
        }
        None => Ok(builder.with_no_client_auth()),
    }
}

fn parse_endpoint(upstream: &str, url: &str) -> Result<Endpoint, Error> {
    let invalid = || Error::InvalidEndpoint {
        upstream: upstream.to_owned(),
        endpoint: url.to_owned(),
    };
    let uri: http::Uri = url.parse().map_err(|_| invalid())?;
    let scheme = uri.scheme().cloned().ok_or_else(invalid)?;
    if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
        return Err(invalid());
    }
    let authority = uri.authority().cloned().ok_or_else(invalid)?;
    let host = http::HeaderValue::from_str(authority.as_str()).ok();
    let base_path = uri.path().trim_end_matches('/').to_owned();
    Ok(Endpoint {
        scheme,
        authority,
        base_path,
        host,
        url: url.to_owned(),
        health: Arc::new(EndpointHealth::default()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(endpoints: &[&str]) -> Result<Upstream, Error> {
        let cfg: loom_config::settings::Upstream =
            serde_norway::from_str(&format!("name: u\nendpoints: [{}]", endpoints.join(", ")))
                .unwrap();
        Upstream::new(&cfg)
    }

    #[test]
    fn round_robin_over_endpoints() {
        let u = upstream(&["http://127.0.0.1:1", "http://127.0.0.1:2/base/"]).unwrap();
        let picks: Vec<String> = (0..4)
            .map(|_| {
                u.pick(&HeaderMap::new(), b"10.0.0.1")
                    .0
                    .authority
                    .to_string()
            })
            .collect();
        assert_eq!(
            picks,
            ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:1", "127.0.0.1:2"]
        );
        assert_eq!(u.endpoints[1].base_path, "/base");
    }

    #[test]
    fn cookies_are_read_by_name() {
        let mut h = HeaderMap::new();
        h.append(
            http::header::COOKIE,
            http::HeaderValue::from_static("theme=dark; session=abc"),
        );
        assert_eq!(cookie(&h, "session"), Some(&b"abc"[..]));
        assert_eq!(cookie(&h, "theme"), Some(&b"dark"[..]));
        assert_eq!(cookie(&h, "sess"), None);
    }

    #[test]
    fn rejects_endpoints_that_are_not_http_urls() {
        assert!(upstream(&["ftp://x"]).is_err());
        assert!(upstream(&["not a url"]).is_err());
    }
}

//! A named group of endpoints and how the next one is picked.

use std::time::Duration;

use http::HeaderMap;
use http::uri::{Authority, Scheme};

use crate::Error;
use crate::balance::{Balancer, InFlight, Kind};

/// One endpoint: where to connect and the path prefix to prepend.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    pub scheme: Scheme,
    pub authority: Authority,
    /// Path of the endpoint URL without a trailing slash (`""` for none).
    pub base_path: String,
}

/// A named upstream built from configuration.
#[derive(Debug)]
pub struct Upstream {
    pub(crate) name: String,
    pub(crate) endpoints: Vec<Endpoint>,
    balancer: Balancer,
    hash_on: HashKey,
    pub(crate) connect_timeout: Duration,
    pub(crate) timeout: Duration,
    pub(crate) max_idle: usize,
}

impl Upstream {
    /// Builds an upstream; every endpoint must be an `http://` URL.
    pub fn new(cfg: &loom_config::Upstream) -> Result<Upstream, Error> {
        let endpoints = cfg
            .endpoints
            .iter()
            .map(|e| parse_endpoint(&cfg.name, e.url()))
            .collect::<Result<Vec<_>, _>>()?;
        let names: Vec<String> = cfg.endpoints.iter().map(|e| e.url().to_owned()).collect();
        let weights: Vec<u32> = cfg.endpoints.iter().map(|e| e.weight()).collect();
        use loom_config::LoadBalancer as L;
        let kind = match cfg.load_balancer {
            L::RoundRobin => Kind::RoundRobin,
            L::Weighted => Kind::Weighted,
            L::LeastRequest => Kind::LeastRequest,
            L::ConsistentHash => Kind::ConsistentHash,
            L::Random => Kind::Random,
        };
        let hash_on = match &cfg.hash_on {
            Some(loom_config::HashOn {
                header: Some(h), ..
            }) => HashKey::Header(http::HeaderName::try_from(h.as_str()).map_err(|_| {
                Error::InvalidEndpoint {
                    upstream: cfg.name.clone(),
                    endpoint: format!("hash_on.header {h:?}"),
                }
            })?),
            Some(loom_config::HashOn {
                cookie: Some(c), ..
            }) => HashKey::Cookie(c.clone()),
            _ => HashKey::ClientIp,
        };
        Ok(Upstream {
            name: cfg.name.clone(),
            endpoints,
            balancer: Balancer::new(kind, &names, &weights),
            hash_on,
            connect_timeout: cfg.connect_timeout.get(),
            timeout: cfg.timeout.get(),
            max_idle: cfg.max_idle_per_endpoint,
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
        let (i, guard) = self.balancer.pick(self.endpoints.len(), key);
        (&self.endpoints[i], guard)
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
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
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

fn parse_endpoint(upstream: &str, url: &str) -> Result<Endpoint, Error> {
    let invalid = || Error::InvalidEndpoint {
        upstream: upstream.to_owned(),
        endpoint: url.to_owned(),
    };
    let uri: http::Uri = url.parse().map_err(|_| invalid())?;
    let scheme = uri.scheme().cloned().ok_or_else(invalid)?;
    if scheme != Scheme::HTTP {
        return Err(invalid());
    }
    let authority = uri.authority().cloned().ok_or_else(invalid)?;
    let base_path = uri.path().trim_end_matches('/').to_owned();
    Ok(Endpoint {
        scheme,
        authority,
        base_path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(endpoints: &[&str]) -> Result<Upstream, Error> {
        let cfg: loom_config::Upstream =
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
    fn rejects_non_http_endpoints() {
        assert!(upstream(&["ftp://x"]).is_err());
        assert!(upstream(&["not a url"]).is_err());
    }
}

//! A named group of endpoints and how the next one is picked.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::uri::{Authority, Scheme};

use crate::Error;

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
    next: AtomicUsize,
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
            .map(|e| parse_endpoint(&cfg.name, e))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Upstream {
            name: cfg.name.clone(),
            endpoints,
            next: AtomicUsize::new(0),
            connect_timeout: cfg.connect_timeout.get(),
            timeout: cfg.timeout.get(),
            max_idle: cfg.max_idle_per_endpoint,
        })
    }

    /// Its configured name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The next endpoint in round-robin order.
    pub(crate) fn pick(&self) -> &Endpoint {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        &self.endpoints[i % self.endpoints.len()]
    }
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
        let picks: Vec<String> = (0..4).map(|_| u.pick().authority.to_string()).collect();
        assert_eq!(
            picks,
            ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:1", "127.0.0.1:2"]
        );
        assert_eq!(u.endpoints[1].base_path, "/base");
    }

    #[test]
    fn rejects_non_http_endpoints() {
        assert!(upstream(&["ftp://x"]).is_err());
        assert!(upstream(&["not a url"]).is_err());
    }
}

//! The HTTP client every provider shares: rustls with the platform's trust
//! store, HTTP/2 where the server offers it (ALPN), pooled keep-alive
//! connections.
//!
//! This is hyper-util's pooled client used directly rather than through
//! reqwest. reqwest re-parses every request URL with the `url` crate (with
//! IDNA) and runs a redirect policy per request: under callgrind on the
//! `bench/run.sh` chat workload that was 20% of the gateway's instructions per
//! request, for features a provider call never uses. Here URIs are parsed
//! once per provider and reused.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::Error;

/// A cheap-to-clone handle on the shared connection pools.
#[derive(Clone, Debug)]
pub struct HttpClient {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl HttpClient {
    /// Builds the client; fails only when no TLS trust store can be loaded.
    pub fn new() -> Result<HttpClient, Error> {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(Duration::from_secs(10)));
        http.set_nodelay(true);
        http.enforce_http(false);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .try_with_platform_verifier()
            .map_err(|e| Error::Unsupported(format!("cannot load the TLS trust store: {e}")))?
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_timer(TokioTimer::new())
            .build(https);
        Ok(HttpClient { client })
    }

    /// Sends a request; the response comes back once its headers have arrived.
    pub(crate) async fn send(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<Response<Incoming>, hyper_util::client::legacy::Error> {
        self.client.request(req).await
    }
}

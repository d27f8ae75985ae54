//! Plugin callouts (`dispatch_http_call`) to the configuration's named
//! upstreams, through the same balancing, health and breakers as proxy
//! routes.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::{BoxFuture, CallResponse, Callouts};
use loom_http::ClientInfo;
use loom_proxy::{Forwarder, Upstream};

/// Largest callout answer handed to a plugin.
const MAX_ANSWER: usize = 4 << 20;

struct ToUpstreams {
    upstreams: HashMap<String, Arc<Upstream>>,
    forwarder: Arc<Forwarder>,
}

/// Callouts to `upstreams`, by name.
pub fn to_upstreams(upstreams: HashMap<String, Arc<Upstream>>) -> Arc<dyn Callouts> {
    Arc::new(ToUpstreams {
        upstreams,
        forwarder: Arc::new(Forwarder::default()),
    })
}

impl Callouts for ToUpstreams {
    fn knows(&self, upstream: &str) -> bool {
        self.upstreams.contains_key(upstream)
    }

    fn call(
        &self,
        upstream: &str,
        request: http::Request<Bytes>,
        timeout: Duration,
    ) -> BoxFuture<'static, Result<CallResponse, String>> {
        let up = self.upstreams.get(upstream).cloned();
        let forwarder = self.forwarder.clone();
        Box::pin(async move {
            let up = up.ok_or_else(|| "unknown upstream".to_owned())?;
            let (head, body) = request.into_parts();
            let req = loom_http::rebuild(&head, body);
            let local = ClientInfo::new(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), "http");
            let exchange = async {
                let resp = forwarder
                    .forward(&up, req, local)
                    .await
                    .map_err(|e| e.to_string())?;
                let (parts, body) = resp.into_parts();
                let read = loom_http::collect(body, MAX_ANSWER as u64, 0)
                    .await
                    .map_err(|e| match e {
                        loom_http::CollectError::TooLarge => "answer too large".to_owned(),
                        loom_http::CollectError::Failed(e) => e,
                    })?;
                Ok(CallResponse {
                    status: parts.status,
                    headers: parts.headers,
                    body: read.data,
                    trailers: read.trailers,
                })
            };
            tokio::time::timeout(timeout, exchange)
                .await
                .map_err(|_| "timed out".to_owned())?
        })
    }
}

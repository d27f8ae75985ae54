//! Plugin callouts (`dispatch_http_call`) to the configuration's named
//! upstreams, through the same balancing, health and breakers as proxy
//! routes.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;

use super::{BoxFuture, CallResponse, Callouts};
use crate::{ClientInfo, Forwarder, Upstream};

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
            let req = crate::rebuild(&head, body);
            let local = ClientInfo::new(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), "http");
            let exchange = async {
                let resp = forwarder
                    .forward(&up, req, local)
                    .await
                    .map_err(|e| e.to_string())?;
                let (parts, body) = resp.into_parts();
                // Read frame by frame: `Limited` over a boxed error trips a
                // rustc limitation on `Send` futures (rust-lang/rust#102211).
                let mut body = body;
                let mut data = bytes::BytesMut::new();
                let mut trailers = http::HeaderMap::new();
                while let Some(frame) = body.frame().await {
                    let frame = frame.map_err(|e| e.to_string())?;
                    match frame.into_data() {
                        Ok(chunk) => {
                            if data.len() + chunk.len() > MAX_ANSWER {
                                return Err("answer too large".to_owned());
                            }
                            data.extend_from_slice(&chunk);
                        }
                        Err(frame) => {
                            if let Ok(t) = frame.into_trailers() {
                                trailers = t;
                            }
                        }
                    }
                }
                Ok(CallResponse {
                    status: parts.status,
                    headers: parts.headers,
                    body: data.freeze(),
                    trailers,
                })
            };
            tokio::time::timeout(timeout, exchange)
                .await
                .map_err(|_| "timed out".to_owned())?
        })
    }
}

//! HTTP/3 listeners: QUIC (quinn) on UDP with the certificates of the
//! listener's `tls` block (chosen by SNI and reloaded like an `https`
//! listener's), HTTP/3 framing (h3). Every request goes through the same
//! pipeline as HTTP/1.1 and HTTP/2 ones; bodies stream both ways.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use bytes::{Buf, Bytes};
use http::{HeaderValue, Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use loom_http::ClientInfo;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::listen::server::{Limits, Open};
use crate::listen::tls::Certificates;
use crate::route::pipeline;
use crate::runtime::body::Body;
use crate::runtime::state::Shared;

/// A bound HTTP/3 listener: its UDP socket and QUIC settings.
pub struct Quic {
    pub name: String,
    pub socket: std::net::UdpSocket,
    config: quinn::ServerConfig,
}

/// Binds the UDP socket of every `http3` listener (failing if an address is
/// taken), with the QUIC settings over its certificates.
pub fn bind(
    listeners: &[loom_config::Listener],
    certs: &[(String, Arc<Certificates>)],
    limits: &Limits,
) -> anyhow::Result<Vec<Quic>> {
    let mut out = Vec::new();
    for l in listeners
        .iter()
        .filter(|l| l.protocol == loom_config::Protocol::Http3)
    {
        let addr = loom_config::listen_address(&l.address).map_err(anyhow::Error::msg)?;
        let socket = std::net::UdpSocket::bind(addr)
            .with_context(|| format!("listener {}: cannot bind UDP {addr}", l.name))?;
        socket.set_nonblocking(true)?;
        let certs = certs
            .iter()
            .find(|(n, _)| *n == l.name)
            .map(|(_, c)| c.clone())
            .with_context(|| format!("listener {}: http3 needs tls", l.name))?;
        let tls = certs.quic_config()?;
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
            .map_err(|e| anyhow::anyhow!("listener {}: QUIC TLS: {e}", l.name))?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        // An idle connection is closed like a slow client's: after the
        // header-read timeout (at least 10 s, so keep-alive works).
        let idle = limits
            .header_timeout
            .max(std::time::Duration::from_secs(10));
        transport.max_idle_timeout(Some(idle.try_into().context("idle timeout")?));
        config.transport_config(Arc::new(transport));
        out.push(Quic {
            name: l.name.clone(),
            socket,
            config,
        });
    }
    Ok(out)
}

/// The `Alt-Svc` value TLS listeners send so that clients move to HTTP/3.
pub fn alt_svc(quic: &[Quic]) -> Option<HeaderValue> {
    let ports: Vec<String> = quic
        .iter()
        .filter_map(|q| q.socket.local_addr().ok())
        .map(|a| format!("h3=\":{}\"; ma=86400", a.port()))
        .collect();
    if ports.is_empty() {
        return None;
    }
    HeaderValue::from_str(&ports.join(", ")).ok()
}

/// Serves one HTTP/3 listener until `stop` turns true, then lets requests
/// in flight finish within the grace period.
pub async fn serve(
    shared: Arc<Shared>,
    quic: Quic,
    mut stop: watch::Receiver<bool>,
    limits: Limits,
) {
    let local = quic.socket.local_addr().ok();
    let endpoint = match quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(quic.config),
        quic.socket,
        Arc::new(quinn::TokioRuntime),
    ) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(listener = %quic.name, error = %e, "cannot serve the HTTP/3 listener");
            return;
        }
    };
    tracing::info!(listener = %quic.name, address = ?local, "listening (HTTP/3)");
    let mut connections = JoinSet::new();
    loop {
        let incoming = tokio::select! {
            _ = stop.changed() => break,
            i = endpoint.accept() => match i {
                Some(i) => i,
                None => break,
            },
        };
        let Ok(permit) = limits.connections.clone().try_acquire_owned() else {
            incoming.refuse();
            continue;
        };
        let (shared, stop, limits) = (shared.clone(), stop.clone(), limits.clone());
        connections.spawn(async move {
            let _held = permit;
            connection(shared, incoming, stop, limits).await;
        });
    }
    let drained = tokio::time::timeout(limits.grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(listener = %quic.name, "grace period over; closing the remaining HTTP/3 connections");
    }
    endpoint.close(0u32.into(), b"shutdown");
    endpoint.wait_idle().await;
}

/// One QUIC connection: its requests, each on its own task.
async fn connection(
    shared: Arc<Shared>,
    incoming: quinn::Incoming,
    mut stop: watch::Receiver<bool>,
    limits: Limits,
) {
    let conn = match tokio::time::timeout(limits.header_timeout, incoming).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "QUIC handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!("QUIC handshake timed out");
            return;
        }
    };
    let _open = Open::new(&shared.metrics.connections);
    let peer: SocketAddr = conn.remote_address();
    let client = ClientInfo::new(peer, "https");
    let built = h3::server::builder()
        .max_field_section_size(limits.max_header_size as u64)
        .build(h3_quinn::Connection::new(conn))
        .await;
    let mut h3 = match built {
        Ok(c) => c,
        Err(e) => {
            tracing::debug!(error = %e, "HTTP/3 connection setup failed");
            return;
        }
    };
    let mut requests = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => {
                // GOAWAY: no new requests; those in flight finish.
                let _ = h3.shutdown(0).await;
                break;
            }
            accepted = h3.accept() => match accepted {
                Ok(Some(resolver)) => {
                    let (shared, client) = (shared.clone(), client.clone());
                    requests.spawn(async move {
                        match resolver.resolve_request().await {
                            Ok((req, stream)) => request(shared, client, req, stream).await,
                            Err(e) => tracing::debug!(error = %e, "bad HTTP/3 request"),
                        }
                    });
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "HTTP/3 connection ended");
                    break;
                }
            },
        }
    }
    while requests.join_next().await.is_some() {}
}

type Stream = h3::server::RequestStream<h3_quinn::BidiStream<Bytes>, Bytes>;

/// One request: through the pipeline, the answer streamed back.
async fn request(shared: Arc<Shared>, client: ClientInfo, req: Request<()>, stream: Stream) {
    let (mut send, recv) = stream.split();
    let req = req.map(|()| request_body(recv));
    let Ok(resp) = pipeline::handle(shared, client, req).await;
    if let Err(e) = respond(&mut send, resp).await {
        tracing::debug!(error = %e, "HTTP/3 response not delivered");
    }
}

type Recv = h3::server::RequestStream<h3_quinn::RecvStream, Bytes>;

/// The request stream's receiving half. A request the route answers
/// without reading its body to the end (a `GET` whose client has not yet
/// closed its side) asks the client to stop sending with `H3_NO_ERROR`,
/// as RFC 9114 §4.1.2 says: quinn's own default, code 0, is an error to
/// HTTP/3 clients.
struct Reading {
    recv: Recv,
    /// A read is in flight: h3-quinn has lent the stream to it, and
    /// stopping it now would find no stream (its code unwraps).
    busy: bool,
}

impl Drop for Reading {
    fn drop(&mut self) {
        if !self.busy {
            self.recv.stop_sending(h3::error::Code::H3_NO_ERROR);
        }
    }
}

/// The request body as it arrives, trailers included.
fn request_body(recv: Recv) -> Body {
    let start = Reading { recv, busy: false };
    let frames = futures_util::stream::unfold(Some(start), |state| async move {
        let mut reading = state?;
        reading.busy = true;
        let read = reading.recv.recv_data().await;
        reading.busy = false;
        match read {
            Ok(Some(mut chunk)) => {
                let data = chunk.copy_to_bytes(chunk.remaining());
                Some((Ok(Frame::data(data)), Some(reading)))
            }
            Ok(None) => {
                reading.busy = true;
                let trailers = reading.recv.recv_trailers().await;
                reading.busy = false;
                match trailers {
                    Ok(Some(t)) => Some((Ok(Frame::trailers(t)), None)),
                    Ok(None) => None,
                    Err(e) => Some((Err(e.into()), None)),
                }
            }
            Err(e) => Some((Err(e.into()), None)),
        }
    });
    StreamBody::new(frames).boxed_unsync()
}

async fn respond(
    send: &mut h3::server::RequestStream<h3_quinn::SendStream<Bytes>, Bytes>,
    resp: Response<Body>,
) -> Result<(), h3::error::StreamError> {
    let (mut parts, mut body) = resp.into_parts();
    // HTTP/3 forbids connection-specific headers.
    loom_http::strip_hop_by_hop(&mut parts.headers);
    send.send_response(Response::from_parts(parts, ())).await?;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => match frame.into_data() {
                Ok(data) => send.send_data(data).await?,
                Err(frame) => {
                    if let Ok(t) = frame.into_trailers() {
                        send.send_trailers(t).await?;
                        return Ok(());
                    }
                }
            },
            Err(e) => {
                tracing::debug!(error = %e, "response body failed; resetting the HTTP/3 stream");
                send.stop_stream(h3::error::Code::H3_INTERNAL_ERROR);
                return Ok(());
            }
        }
    }
    send.finish().await
}

//! Listeners: accept connections, serve HTTP/1.1 and HTTP/2 on one port
//! (cleartext h2c on `http` listeners; TLS with ALPN on `https` ones), and
//! drain gracefully on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use loom_http::ClientInfo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::sync::watch;

use crate::listen::spread::{Handed, Load, Spread};
use crate::listen::tls::Certificates;
use crate::route::pipeline::{self, Pipeline};
use crate::runtime::state::Shared;
use loom_http::server as http1;
use tokio_rustls::TlsAcceptor;

/// A bound listener. Every worker thread accepts on its own copy of the
/// socket (`try_clone`), registered with its own event loop.
pub struct Bound {
    pub name: String,
    pub listener: std::net::TcpListener,
    /// The TLS acceptor of an `https` listener.
    pub tls: Option<TlsAcceptor>,
    /// `Alt-Svc` for an `https` listener's answers when HTTP/3 is served.
    pub alt_svc: Option<http::HeaderValue>,
}

impl Bound {
    /// A copy for one more worker.
    pub fn try_clone(&self) -> std::io::Result<Bound> {
        Ok(Bound {
            name: self.name.clone(),
            listener: self.listener.try_clone()?,
            tls: self.tls.clone(),
            alt_svc: self.alt_svc.clone(),
        })
    }
}

/// Binds every configured listener, failing if any address is taken;
/// `https` listeners take their certificates from `certs` (by name).
pub async fn bind(
    listeners: &[loom_config::Listener],
    certs: &[(String, Arc<Certificates>)],
) -> anyhow::Result<Vec<Bound>> {
    let mut out = Vec::with_capacity(listeners.len());
    for l in listeners
        .iter()
        .filter(|l| l.protocol != loom_config::Protocol::Http3)
    {
        let addr = loom_config::listen_address(&l.address).map_err(anyhow::Error::msg)?;
        let listener = TcpListener::bind(addr)
            .await
            .and_then(|l| l.into_std())
            .with_context(|| format!("listener {}: cannot bind {addr}", l.name))?;
        let tls = match certs.iter().find(|(n, _)| *n == l.name) {
            Some((_, c)) if l.protocol == loom_config::Protocol::Https => {
                Some(TlsAcceptor::from(c.server_config()?))
            }
            _ => None,
        };
        out.push(Bound {
            name: l.name.clone(),
            listener,
            tls,
            alt_svc: None,
        });
    }
    Ok(out)
}

/// The certificates of every `https` listener of `listeners`, by name.
pub fn certificates(
    listeners: &[loom_config::Listener],
) -> anyhow::Result<Vec<(String, Arc<Certificates>)>> {
    listeners
        .iter()
        .filter(|l| {
            matches!(
                l.protocol,
                loom_config::Protocol::Https | loom_config::Protocol::Http3
            )
        })
        .map(|l| {
            let tls = l
                .tls
                .as_ref()
                .with_context(|| format!("listener {}: https and http3 need tls", l.name))?;
            let c = Certificates::load(tls).with_context(|| format!("listener {}", l.name))?;
            Ok((l.name.clone(), c))
        })
        .collect()
}

/// Counts a connection in `loom_http_active_connections` while it lives.
pub struct Open(prometheus::IntGauge);

impl Open {
    pub fn new(g: &prometheus::IntGauge) -> Open {
        g.inc();
        Open(g.clone())
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Limits of the data-plane listeners.
#[derive(Clone)]
pub struct Limits {
    /// How long a drain waits for requests in flight.
    pub grace: Duration,
    /// Time for a request's head (and an https client's handshake).
    pub header_timeout: Duration,
    /// Largest request head.
    pub max_header_size: usize,
    /// Connections served at once, shared by every worker and listener.
    pub connections: Arc<tokio::sync::Semaphore>,
}

/// One worker's place among the workers: its index, and the spread that
/// evens out their connections ([`crate::spread`]).
pub struct Worker {
    pub index: usize,
    pub spread: Arc<Spread>,
    pub inbox: UnboundedReceiver<Handed>,
}

/// What one worker needs to start serving a connection it accepted or was
/// handed.
struct Serving {
    shared: Arc<Shared>,
    listeners: Vec<Listening>,
    builder: auto::Builder<TokioExecutor>,
    graceful: GracefulShutdown,
    settings: http1::Settings,
    stop: watch::Receiver<bool>,
}

/// A listener as a worker serves it (its socket is with the accept loop).
struct Listening {
    tls: Option<TlsAcceptor>,
    alt_svc: Option<http::HeaderValue>,
}

/// Starts the data plane: one thread per worker, each with its own event
/// loop accepting on its copy of every listener; a worker that accepts a
/// connection while another serves fewer hands it over (`spread`), so the
/// cores share the clients evenly. A request, its upstream connection and
/// its wakeups stay on one thread: no work stealing and no cross-thread
/// wake-ups on the hot path (measured in docs/benchmarks.md). The control
/// plane (admin, reload, health checks, background writers) stays on the
/// caller's runtime. The returned task ends when every worker has drained.
pub fn start_workers(
    shared: &Arc<Shared>,
    bound: Vec<Bound>,
    inboxes: Vec<UnboundedReceiver<Handed>>,
    stop: &watch::Receiver<bool>,
    limits: &Limits,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let mut threads = Vec::with_capacity(inboxes.len());
    for (i, inbox) in inboxes.into_iter().enumerate() {
        let worker = Worker {
            index: i,
            spread: shared.spread.clone(),
            inbox,
        };
        let copies = bound
            .iter()
            .map(Bound::try_clone)
            .collect::<std::io::Result<Vec<_>>>()
            .context("cloning the listeners for a worker")?;
        let (shared, stop, limits) = (shared.clone(), stop.clone(), limits.clone());
        let thread = std::thread::Builder::new()
            .name(format!("loom-worker-{i}"))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                match rt {
                    Ok(rt) => rt.block_on(async move {
                        if shared.bounds.max_delay_us != 0 {
                            tokio::spawn(crate::listen::overload::probe_loop_delay());
                        }
                        serve(shared, copies, stop, limits, worker).await
                    }),
                    Err(e) => tracing::error!(error = %e, "cannot start a worker's event loop"),
                }
            })
            .context("starting a worker thread")?;
        threads.push(thread);
    }
    Ok(tokio::task::spawn_blocking(move || {
        for t in threads {
            let _ = t.join();
        }
    }))
}

/// Serves the data-plane listeners until `stop` turns true, then waits up to
/// `limits.grace` for in-flight requests and streams to finish. Connections
/// this worker accepts but another should serve are handed to it, and those
/// handed here arrive in `worker.inbox`.
pub async fn serve(
    shared: Arc<Shared>,
    bound: Vec<Bound>,
    mut stop: watch::Receiver<bool>,
    limits: Limits,
    worker: Worker,
) {
    let Limits {
        grace,
        header_timeout,
        max_header_size,
        connections,
    } = limits;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        // hyper's read buffer bounds the request head; its floor is 8 KiB.
        .max_buf_size(max_header_size.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(max_header_size).unwrap_or(u32::MAX));
    let mut sockets = Vec::with_capacity(bound.len());
    let mut listeners = Vec::with_capacity(bound.len());
    for b in bound {
        sockets.push((b.name, b.listener));
        listeners.push(Listening {
            tls: b.tls,
            alt_svc: b.alt_svc,
        });
    }
    let serving = Arc::new(Serving {
        shared,
        listeners,
        builder,
        graceful: GracefulShutdown::new(),
        settings: http1::Settings {
            header_timeout,
            max_header_size,
        },
        stop: stop.clone(),
    });
    let Worker {
        index,
        spread,
        mut inbox,
    } = worker;
    let mut accepts = tokio::task::JoinSet::new();
    for (at, (name, socket)) in sockets.into_iter().enumerate() {
        let serving = serving.clone();
        let spread = spread.clone();
        let connections = connections.clone();
        let mut stop = stop.clone();
        accepts.spawn(async move {
            let local = socket.local_addr().ok();
            let listener = match TcpListener::from_std(socket) {
                Ok(l) => l,
                Err(e) => {
                    tracing::error!(listener = %name, error = %e, "cannot serve the listener");
                    return;
                }
            };
            tracing::debug!(listener = %name, address = ?local, "worker accepting");
            loop {
                // At the connection limit, stop accepting until one ends:
                // further clients wait in the kernel's queue.
                let permit = tokio::select! {
                    _ = stop.changed() => break,
                    p = connections.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                };
                let (stream, peer): (_, SocketAddr) = tokio::select! {
                    _ = stop.changed() => break,
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            // Out of file descriptors and similar: back off briefly.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    },
                };
                let load = spread.place(index);
                if load.worker() == index {
                    serving.start(stream, peer, at, (permit, load));
                    continue;
                }
                match stream.into_std() {
                    Ok(stream) => {
                        let handed = Handed {
                            stream,
                            peer,
                            listener: at,
                            permit,
                            load,
                        };
                        if spread.hand(handed).is_err() {
                            // That worker has stopped, so Loom is stopping:
                            // the connection closes, as queued ones do.
                            tracing::debug!("a worker stopped before a connection reached it");
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "cannot hand a connection over"),
                }
            }
        });
    }
    let from_others = {
        let serving = serving.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            loop {
                let handed = tokio::select! {
                    _ = stop.changed() => break,
                    h = inbox.recv() => match h {
                        Some(h) => h,
                        None => break,
                    },
                };
                let Handed {
                    stream,
                    peer,
                    listener,
                    permit,
                    load,
                } = handed;
                serving.start_std(stream, peer, listener, (permit, load));
            }
        })
    };
    let _ = stop.changed().await;
    while accepts.join_next().await.is_some() {}
    let _ = from_others.await;
    // Every task holding `serving` has ended: the drain can take it.
    let Ok(Serving { graceful, .. }) = Arc::try_unwrap(serving) else {
        return;
    };
    tracing::info!(connections = graceful.count(), grace = ?grace, "draining");
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("grace period over; closing the remaining connections");
    }
}

/// What a connection holds while it lives: its place under the connection
/// limit and its count against its worker.
type Held = (OwnedSemaphorePermit, Load);

impl Serving {
    /// Serves a connection handed over from another worker.
    fn start_std(
        self: &Arc<Self>,
        stream: std::net::TcpStream,
        peer: SocketAddr,
        listener: usize,
        held: Held,
    ) {
        match TcpStream::from_std(stream) {
            Ok(stream) => self.start(stream, peer, listener, held),
            Err(e) => tracing::debug!(error = %e, "cannot take a handed connection"),
        }
    }

    /// Serves a connection on this worker, on a task of its own.
    fn start(self: &Arc<Self>, stream: TcpStream, peer: SocketAddr, listener: usize, held: Held) {
        let _ = stream.set_nodelay(true);
        let open = Open::new(&self.shared.metrics.connections);
        let Some(l) = self.listeners.get(listener) else {
            return;
        };
        let shared = self.shared.clone();
        let Some(acceptor) = l.tls.clone() else {
            // Cleartext: Loom's own HTTP/1.1 connection, which hands
            // itself to hyper for HTTP/2 and upgrades.
            let client = ClientInfo::new(peer, "http");
            let handoff = http1::Handoff {
                builder: self.builder.clone(),
                watcher: self.graceful.watcher(),
            };
            let (settings, stop) = (self.settings, self.stop.clone());
            tokio::spawn(async move {
                let _held = (held, open);
                let pipeline = Pipeline { shared, client };
                http1::serve(stream, pipeline, settings, handoff, stop).await;
            });
            return;
        };
        // The handshake runs on the connection's own task, bounded
        // like a request's headers, so a slow client holds up nobody.
        let builder = self.builder.clone();
        let watcher = self.graceful.watcher();
        let alt_svc = l.alt_svc.clone();
        let header_timeout = self.settings.header_timeout;
        tokio::spawn(async move {
            let _held = (held, open);
            let tls = match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!("TLS handshake timed out");
                    return;
                }
            };
            let client = ClientInfo::new(peer, "https");
            let svc = service_fn(move |req| {
                let (shared, client, alt_svc) = (shared.clone(), client.clone(), alt_svc.clone());
                async move {
                    let mut resp = pipeline::handle(shared, client, req).await?;
                    if let Some(v) = alt_svc {
                        resp.headers_mut().insert(http::header::ALT_SVC, v);
                    }
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                .into_owned();
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
}

/// Serves the admin API until `stop` turns true.
pub async fn serve_admin(
    shared: Arc<Shared>,
    listener: TcpListener,
    mut stop: watch::Receiver<bool>,
) {
    let app = crate::admin::router(shared);
    let shutdown = async move {
        let _ = stop.changed().await;
    };
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %e, "admin listener failed");
    }
}

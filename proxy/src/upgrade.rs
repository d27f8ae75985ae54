//! Protocol upgrades through a proxy route (WebSocket): the client's
//! `Upgrade` request goes to the upstream with its `Connection: upgrade`
//! and `Upgrade` headers; when the upstream answers `101 Switching
//! Protocols`, both connections are handed over and their bytes copied
//! both ways until either side closes or nothing moves for the idle
//! timeout. Frames (data, ping, pong, close) pass through untouched.

use std::time::Duration;

use http::header::{CONNECTION, HeaderValue, UPGRADE};
use http::{HeaderMap, Request};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Whether a request asks to switch protocols.
pub fn is_upgrade<B>(req: &Request<B>) -> bool {
    loom_http::is_upgrade(req.headers())
}

/// The upgrade headers to send on after hop-by-hop headers were removed.
pub(crate) fn upgrade_headers(headers: &HeaderMap) -> Option<HeaderValue> {
    headers.get(UPGRADE).cloned()
}

/// Restores `Connection: upgrade` and `Upgrade` on a message whose
/// hop-by-hop headers were removed.
pub(crate) fn restore(headers: &mut HeaderMap, upgrade: HeaderValue) {
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, upgrade);
}

/// Copies bytes both ways between the two upgraded connections until one
/// closes, or nothing has moved for `idle`. Returns the bytes copied
/// (client to upstream, upstream to client).
pub async fn tunnel(client: OnUpgrade, upstream: OnUpgrade, idle: Duration) -> (u64, u64) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(both) => both,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            return (0, 0);
        }
    };
    let (mut cr, mut cw) = tokio::io::split(TokioIo::new(client));
    let (mut ur, mut uw) = tokio::io::split(TokioIo::new(upstream));
    let mut up = 0u64;
    let mut down = 0u64;
    let mut a = vec![0u8; 16 * 1024];
    let mut b = vec![0u8; 16 * 1024];
    loop {
        let step = tokio::time::timeout(idle, async {
            tokio::select! {
                n = cr.read(&mut a) => match n {
                    Ok(0) | Err(_) => None,
                    Ok(n) => uw.write_all(&a[..n]).await.ok().map(|()| (n, true)),
                },
                n = ur.read(&mut b) => match n {
                    Ok(0) | Err(_) => None,
                    Ok(n) => cw.write_all(&b[..n]).await.ok().map(|()| (n, false)),
                },
            }
        })
        .await;
        match step {
            Ok(Some((n, true))) => up += n as u64,
            Ok(Some((n, false))) => down += n as u64,
            // A side closed, failed, or the tunnel sat idle: close both.
            Ok(None) | Err(_) => break,
        }
    }
    let _ = uw.shutdown().await;
    let _ = cw.shutdown().await;
    (up, down)
}

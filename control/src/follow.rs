//! Following the store: the first load (PostgreSQL, else the snapshot on
//! disk), then `LISTEN loom_keys` for changes as they commit and a full
//! read every `resync_every`, reconnecting with back-off while the database
//! is away. After each full read the table is written to the snapshot
//! file (off the runtime's workers), for a start while the database is
//! away.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt as _;
use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;

use crate::table::KeyRow;
use crate::{Control, Error, store};

/// Changes waiting to be applied at most; past it a full read follows.
const QUEUE: usize = 10_000;

/// The first load, before the gateway serves: from PostgreSQL when it
/// answers (migrating first when configured), else from the snapshot.
pub(crate) async fn first_load(control: &Control) {
    match load(control, control.settings.migrate).await {
        Ok(()) => {}
        Err(e) => {
            let path = PathBuf::from(&control.settings.snapshot);
            match tokio::task::spawn_blocking(move || read_snapshot(&path)).await {
                Ok(Ok(rows)) => {
                    let n = rows.len();
                    control.table.replace(rows);
                    control.from_snapshot.store(true, Ordering::Relaxed);
                    tracing::warn!(error = %e, keys = n, snapshot = %control.settings.snapshot,
                        "control plane: PostgreSQL is unavailable; serving the keys of the last snapshot");
                }
                Ok(Err(se)) => tracing::warn!(error = %e, snapshot = %se,
                    "control plane: PostgreSQL is unavailable and there is no snapshot; no run-time keys until it answers"),
                Err(_) => {}
            }
        }
    }
}

/// One full read on a connection of its own (migrating first if asked).
async fn load(control: &Control, migrate: bool) -> Result<(), Error> {
    let (mut client, conn) =
        store::connect(control.settings.postgres.expose(), control.timeout()).await?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let result = async {
        if migrate {
            let applied = store::migrate(&mut client).await?;
            if !applied.is_empty() {
                tracing::info!(?applied, "control plane: migrations applied");
            }
        }
        let rows = tokio::time::timeout(control.timeout() * 5, store::all(&client))
            .await
            .map_err(|_| Error::Unavailable("reading the keys timed out".into()))??;
        synced(control, rows).await;
        Ok(())
    }
    .await;
    drop(client);
    let _ = driver.await;
    result
}

/// Applies a full read and writes the snapshot.
async fn synced(control: &Control, rows: Vec<KeyRow>) {
    control.table.replace(rows);
    control.up.store(true, Ordering::Relaxed);
    control.last_sync.store(crate::now(), Ordering::Relaxed);
    save(control).await;
}

/// Writes the table to the snapshot file, off the runtime's workers.
async fn save(control: &Control) {
    control.dirty.store(false, Ordering::Relaxed);
    let Ok(bytes) = serde_json::to_vec(&control.table.rows()) else {
        return;
    };
    let path = PathBuf::from(&control.settings.snapshot);
    let written = tokio::task::spawn_blocking(move || write_snapshot(&path, &bytes)).await;
    if let Ok(Err(e)) = written {
        tracing::warn!(error = %e, "control plane: the key snapshot could not be written");
    }
}

/// How often a changed table is written to the snapshot at most.
const SNAPSHOT_EVERY: Duration = Duration::from_secs(1);

/// Writes the snapshot after changes, at most every [`SNAPSHOT_EVERY`], so
/// that many changes cost one write.
pub(crate) async fn snapshots(control: Weak<Control>) {
    let mut tick = tokio::time::interval(SNAPSHOT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(c) = control.upgrade() else {
            return;
        };
        if c.dirty.load(Ordering::Relaxed) {
            save(&c).await;
        }
    }
}

fn read_snapshot(path: &std::path::Path) -> Result<Vec<KeyRow>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// Writes the snapshot beside its place, then moves it there: a crash
/// mid-write leaves the previous one whole.
fn write_snapshot(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// Follows the store until `control` is dropped.
pub(crate) async fn follow(control: Weak<Control>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let Some(c) = control.upgrade() else {
            return;
        };
        match session(&c).await {
            Ok(()) => return,
            Err(e) => {
                if c.up.swap(false, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "control plane: lost PostgreSQL; every loaded key stays valid, admin writes answer 503");
                }
            }
        }
        drop(c);
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
        if control.upgrade().is_none() {
            return;
        }
    }
}

/// One connection's life: LISTEN, read everything, then apply changes as
/// they come and read everything again every `resync_every`. Returns
/// `Err` when the connection fails.
async fn session(control: &Arc<Control>) -> Result<(), Error> {
    let (client, mut conn) =
        store::connect(control.settings.postgres.expose(), control.timeout()).await?;
    let (tx, mut changes) = mpsc::channel::<String>(QUEUE);
    let (overflow_tx, mut overflow) = mpsc::channel::<()>(1);
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(m) = messages.next().await {
            match m {
                Ok(AsyncMessage::Notification(n)) => {
                    if tx.try_send(n.payload().to_owned()).is_err() {
                        let _ = overflow_tx.try_send(());
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    let result = async {
        client
            .batch_execute(&format!("LISTEN {}", store::CHANNEL))
            .await
            .map_err(|e| Error::Unavailable(e.to_string()))?;
        let rows = store::all(&client).await?;
        let was_up = control.up.load(Ordering::Relaxed);
        synced(control, rows).await;
        if !was_up {
            tracing::info!(
                keys = control.table.len(),
                "control plane: following PostgreSQL"
            );
        }
        let mut tick = tokio::time::interval(control.settings.resync_every.get());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                change = changes.recv() => {
                    let Some(id) = change else {
                        return Err(Error::Unavailable("the connection closed".into()));
                    };
                    match tokio::time::timeout(control.timeout(), store::one(&client, &id)).await {
                        Ok(Ok(Some(row))) => {
                            control.table.put(row);
                            control.dirty.store(true, Ordering::Relaxed);
                        }
                        Ok(Ok(None)) => {
                            control.table.remove(&id);
                            control.dirty.store(true, Ordering::Relaxed);
                        }
                        Ok(Err(e)) => return Err(e),
                        Err(_) => return Err(Error::Unavailable("reading a key timed out".into())),
                    }
                }
                _ = overflow.recv() => {
                    let rows = store::all(&client).await?;
                    synced(control, rows).await;
                }
                _ = tick.tick() => {
                    let rows = tokio::time::timeout(control.timeout() * 5, store::all(&client))
                        .await
                        .map_err(|_| Error::Unavailable("reading the keys timed out".into()))??;
                    synced(control, rows).await;
                }
            }
        }
    }
    .await;
    driver.abort();
    result
}

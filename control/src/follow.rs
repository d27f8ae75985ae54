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

/// Longest a full read of the key table may take (a million keys take a
/// few seconds; `timeout` bounds the single-row calls).
const FULL_READ: Duration = Duration::from_secs(120);

/// What the follower tells the start-up about its first read.
type FirstRead = tokio::sync::oneshot::Sender<Result<(), String>>;

/// The first load, before the gateway serves: migrations when configured,
/// then the follower's first read of PostgreSQL (one read: the follower
/// listens first, so nothing committed meanwhile is missed), else the
/// snapshot.
pub(crate) async fn first_load(control: &Arc<Control>) {
    if control.settings.migrate
        && let Err(e) = migrate(control).await
    {
        tracing::warn!(error = %e, "control plane: migrations not applied");
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(follow(Arc::downgrade(control), Some(tx)));
    let e = match tokio::time::timeout(FULL_READ, rx).await {
        Ok(Ok(Ok(()))) => return,
        Ok(Ok(Err(e))) => e,
        Ok(Err(_)) => "the follower stopped".to_owned(),
        Err(_) => "the first read timed out".to_owned(),
    };
    let path = PathBuf::from(&control.settings.snapshot);
    match tokio::task::spawn_blocking(move || read_snapshot(&path)).await {
        Ok(Ok(rows)) if control.last_sync.load(Ordering::Relaxed) == 0 => {
            let n = rows.len();
            control.table.replace(rows);
            control.from_snapshot.store(true, Ordering::Relaxed);
            tracing::warn!(error = %e, keys = n, snapshot = %control.settings.snapshot,
                "control plane: PostgreSQL is unavailable; serving the keys of the last snapshot");
        }
        Ok(Ok(_)) => {}
        Ok(Err(se)) => tracing::warn!(error = %e, snapshot = %se,
            "control plane: PostgreSQL is unavailable and there is no snapshot; no run-time keys until it answers"),
        Err(_) => {}
    }
}

/// Applies the migrations on a connection of its own.
async fn migrate(control: &Control) -> Result<(), Error> {
    let (mut client, conn) =
        store::connect(control.settings.postgres.expose(), control.timeout()).await?;
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    let result = store::migrate(&mut client).await;
    drop(client);
    let _ = driver.await;
    let applied = result?;
    if !applied.is_empty() {
        tracing::info!(?applied, "control plane: migrations applied");
    }
    Ok(())
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
    let path = PathBuf::from(&control.settings.snapshot);
    let table = control.table.clone();
    let written = tokio::task::spawn_blocking(move || write_snapshot(&path, &table)).await;
    if let Ok(Err(e)) = written {
        tracing::warn!(error = %e, "control plane: the key snapshot could not be written");
    }
}

/// How often a changed table is written to the snapshot at most.
const SNAPSHOT_EVERY: Duration = Duration::from_secs(1);

/// Writes the snapshot after changes, at most every [`SNAPSHOT_EVERY`] and
/// never more than a twentieth of the time (a large table takes a while to
/// write), so that many changes cost one write.
pub(crate) async fn snapshots(control: Weak<Control>) {
    let mut pause = SNAPSHOT_EVERY;
    loop {
        tokio::time::sleep(pause).await;
        let Some(c) = control.upgrade() else {
            return;
        };
        if c.dirty.load(Ordering::Relaxed) {
            let started = std::time::Instant::now();
            save(&c).await;
            pause = SNAPSHOT_EVERY.max(started.elapsed() * 20);
        }
    }
}

fn read_snapshot(path: &std::path::Path) -> Result<Vec<KeyRow>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// Writes the snapshot beside its place, then moves it there: a crash
/// mid-write leaves the previous one whole.
fn write_snapshot(path: &std::path::Path, table: &crate::KeyTable) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&tmp)?);
    table.write_json(&mut out)?;
    out.flush()?;
    drop(out);
    std::fs::rename(&tmp, path)
}

/// Follows the store until `control` is dropped.
pub(crate) async fn follow(control: Weak<Control>, mut first: Option<FirstRead>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let Some(c) = control.upgrade() else {
            return;
        };
        match session(&c, &mut first).await {
            Ok(()) => return,
            Err(e) => {
                if let Some(tx) = first.take() {
                    let _ = tx.send(Err(e.to_string()));
                }
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
async fn session(control: &Arc<Control>, first: &mut Option<FirstRead>) -> Result<(), Error> {
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
        let rows = tokio::time::timeout(FULL_READ, store::all(&client))
            .await
            .map_err(|_| Error::Unavailable("reading the keys timed out".into()))??;
        let was_up = control.up.load(Ordering::Relaxed);
        synced(control, rows).await;
        if let Some(tx) = first.take() {
            let _ = tx.send(Ok(()));
        }
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
                    let rows = tokio::time::timeout(FULL_READ, store::all(&client))
                        .await
                        .map_err(|_| Error::Unavailable("reading the keys timed out".into()))??;
                    synced(control, rows).await;
                }
                _ = tick.tick() => {
                    let rows = tokio::time::timeout(FULL_READ, store::all(&client))
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

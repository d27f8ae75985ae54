//! Hot reload: on SIGHUP or a change of the configuration file, parse,
//! validate and compile the new configuration, then swap it in atomically. A
//! bad configuration is logged and the running one keeps serving; requests in
//! flight finish on the configuration they started with.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

use crate::runtime::state::{Runtime, Shared};

/// Watches `path` and SIGHUP, reloading on either, until the process ends.
pub async fn watch(shared: Arc<Shared>, path: PathBuf) -> anyhow::Result<()> {
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let file_name = path.file_name().map(ToOwned::to_owned);
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_owned();
    let file_tx = tx.clone();
    // Watch the directory: editors and config managers replace files by rename.
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if let Ok(ev) = ev
            && ev.kind.is_modify() | ev.kind.is_create()
            && ev
                .paths
                .iter()
                .any(|p| p.file_name() == file_name.as_deref())
        {
            let _ = file_tx.send(());
        }
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;

    let mut hup = signal(SignalKind::hangup())?;
    let hup_tx = tx;
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP received");
            if hup_tx.send(()).is_err() {
                break;
            }
        }
    });

    while rx.recv().await.is_some() {
        // Coalesce the burst of events one save produces.
        tokio::time::sleep(Duration::from_millis(100)).await;
        while rx.try_recv().is_ok() {}
        reload(&shared, &path).await;
    }
    drop(watcher);
    Ok(())
}

/// How long a file must hold the same bytes before a reload applies it.
const SETTLE: Duration = Duration::from_millis(50);
/// How many times a file still being written is read again.
const SETTLE_TRIES: usize = 20;

/// Reads `path` until two reads `SETTLE` apart agree, so a file caught
/// half-written (an editor truncates, then writes; a config manager copies
/// in pieces) is never applied. After `SETTLE_TRIES` disagreements the last
/// read is used; validation then judges it like any other.
async fn read_settled(path: &Path) -> std::io::Result<String> {
    settled(
        || tokio::fs::read_to_string(path),
        || tokio::time::sleep(SETTLE),
    )
    .await
}

/// The settling loop of [`read_settled`], over any reader and pause.
async fn settled<R, RF, W, WF>(mut read: R, mut pause: W) -> std::io::Result<String>
where
    R: FnMut() -> RF,
    RF: std::future::Future<Output = std::io::Result<String>>,
    W: FnMut() -> WF,
    WF: std::future::Future<Output = ()>,
{
    let mut text = read().await?;
    for _ in 0..SETTLE_TRIES {
        pause().await;
        let again = read().await?;
        if again == text {
            break;
        }
        text = again;
    }
    Ok(text)
}

/// One reload attempt.
pub async fn reload(shared: &Arc<Shared>, path: &Path) {
    let text = match read_settled(path).await {
        Ok(text) => text,
        Err(e) => {
            shared.metrics.reload(false);
            tracing::error!(path = %path.display(), error = %e, "configuration file unreadable; the previous one keeps serving");
            return;
        }
    };
    let loaded = {
        let file = path.display().to_string();
        tokio::task::spawn_blocking(move || loom_config::check_str(&text, &file)).await
    };
    let config = match loaded {
        Ok(Ok(c)) => {
            crate::log_warnings(&c.warnings);
            c.config
        }
        Ok(Err(e)) => {
            shared.metrics.reload(false);
            for line in e.to_string().lines() {
                tracing::error!(
                    problem = line,
                    "configuration rejected; the previous one keeps serving"
                );
            }
            return;
        }
        Err(e) => {
            shared.metrics.reload(false);
            tracing::error!(error = %e, "configuration reload failed");
            return;
        }
    };
    let current = shared.runtime.load();
    let addresses = |c: &loom_config::Config| {
        let mut v: Vec<String> = c
            .listeners
            .iter()
            .map(|l| format!("{}={}/{:?}", l.name, l.address, l.protocol))
            .collect();
        v.push(format!("admin={}", c.admin.address));
        v
    };
    if addresses(&crate::effective_listeners(current.config.clone()))
        != addresses(&crate::effective_listeners(config.clone()))
    {
        tracing::warn!(
            "listener or admin addresses changed: the new addresses take effect only after a restart"
        );
    }
    // Certificates of `https` listeners: every file read before any is
    // installed, so a bad file leaves them all as they were.
    let mut certificates = Vec::new();
    for l in &config.listeners {
        let (Some((_, certs)), Some(tls)) = (
            shared.certificates.iter().find(|(n, _)| *n == l.name),
            l.tls.as_ref(),
        ) else {
            continue;
        };
        match crate::listen::tls::Certificates::read(tls) {
            Ok(loaded) => certificates.push((certs.clone(), loaded)),
            Err(e) => {
                shared.metrics.reload(false);
                tracing::error!(listener = %l.name, error = %format!("{e:#}"), "configuration rejected; the previous one keeps serving");
                return;
            }
        }
    }
    let generation = shared.generation.fetch_add(1, Ordering::AcqRel) + 1;
    // Installed before the build: scrubbing the new credentials early
    // (and the old ones still) never hurts, even if the build fails.
    crate::runtime::redact::install(&config);
    match Runtime::build(
        config,
        &shared.http,
        &shared.stats,
        &shared.metrics,
        &shared.stores,
        generation,
    ) {
        Ok(rt) => {
            for (certs, loaded) in certificates {
                certs.install(loaded);
            }
            shared.runtime.store(Arc::new(rt));
            shared.metrics.reload(true);
            tracing::info!(generation, "configuration reloaded");
        }
        Err(e) => {
            shared.metrics.reload(false);
            tracing::error!(error = %format!("{e:#}"), "configuration rejected; the previous one keeps serving");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads that return `reads` in turn (the last one from then on).
    async fn settle_over(reads: &[&str]) -> (String, usize) {
        let mut n = 0;
        let got = settled(
            || {
                let text = reads[n.min(reads.len() - 1)].to_owned();
                n += 1;
                std::future::ready(Ok(text))
            },
            || std::future::ready(()),
        )
        .await
        .expect("reads succeed");
        (got, n)
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_file_still_being_written_is_read_again_until_it_holds_still() {
        let half = "routes:\n  - id: a\n";
        let whole = "routes:\n  - id: a\n    path: /a\n    upstream: u\n";
        // Caught truncated, then half-written, then whole: the whole file.
        assert_eq!(settle_over(&["", half, whole]).await, (whole.to_owned(), 4));
        // Already still: one read to compare with.
        assert_eq!(settle_over(&[whole]).await, (whole.to_owned(), 2));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_file_that_never_holds_still_is_given_up_on() {
        let mut n = 0u32;
        let got = settled(
            || {
                n += 1;
                std::future::ready(Ok(format!("version {n}")))
            },
            || std::future::ready(()),
        )
        .await
        .expect("reads succeed");
        assert_eq!(got, format!("version {}", SETTLE_TRIES + 1));
    }
}

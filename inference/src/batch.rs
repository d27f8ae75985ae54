//! Embedding off the async runtime.
//!
//! One worker thread owns the local model's inference: requests queue on a
//! bounded channel, and the worker drains every request waiting (up to
//! [`MAX_BATCH`]) per wake-up. Each text is still run as its own inference:
//! the int8 model quantises activations per tensor, so texts run in one
//! batch shift each other's vectors (cosine 0.974–0.994 against the same
//! text alone, `tests/embed.rs`), and a cache hit must never depend on
//! what else was in flight. Requests whose client has gone are skipped
//! before they cost anything. A full queue refuses at once rather than
//! making the request wait: the cache then looks up exact matches only.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};

use tokio::sync::oneshot;

use crate::embed::LocalEmbedder;

/// Most texts embedded in one inference.
pub const MAX_BATCH: usize = 16;
/// Requests that may wait for the worker.
const QUEUE: usize = 256;

type Job = (String, oneshot::Sender<Result<Vec<f32>, String>>);

/// A handle to the embedding worker; the worker stops when every handle is
/// dropped.
#[derive(Clone)]
pub struct Batcher {
    queue: SyncSender<Job>,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").finish_non_exhaustive()
    }
}

impl Batcher {
    /// Starts the worker for `embedder`.
    pub fn start(embedder: Arc<LocalEmbedder>) -> std::io::Result<Batcher> {
        let (queue, jobs) = std::sync::mpsc::sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("loom-embed".into())
            .spawn(move || work(&embedder, &jobs))?;
        Ok(Batcher { queue })
    }

    /// The embedding of `text`, computed by the worker.
    pub async fn embed(&self, text: &str) -> Result<Vec<f32>, String> {
        let (tx, rx) = oneshot::channel();
        match self.queue.try_send((text.to_owned(), tx)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err("the embedding queue is full".into()),
            Err(TrySendError::Disconnected(_)) => return Err("the embedding worker stopped".into()),
        }
        rx.await
            .unwrap_or_else(|_| Err("the embedding worker stopped".into()))
    }
}

fn work(embedder: &LocalEmbedder, jobs: &Receiver<Job>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        for (text, tx) in batch {
            // A client that left has dropped its receiver: skip its text.
            if tx.is_closed() {
                continue;
            }
            let _ = tx.send(embedder.embed(&text).map_err(|e| e.to_string()));
        }
    }
}

//! The `redis` backend: exact entries kept in Redis, so that every replica
//! of the gateway answers a request another replica already paid for.
//!
//! Only exact digests are shared (a hash lookup needs no embedding, and
//! Redis holds no vectors); similar prompts are still found in each
//! replica's memory index. A lookup waits at most the configured timeout;
//! a slow or unreachable Redis makes the lookup a miss, never an error, and
//! stores are written in the background. Keys are
//! `<prefix>cache:<hex digest>` with the entry's TTL, so Redis expires them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::aio::ConnectionManager;

use crate::Answer;
use crate::key::Digest;

/// Exact entries in Redis.
pub struct SharedExact {
    conn: ConnectionManager,
    prefix: String,
    timeout: Duration,
    /// Whether the last round trip worked; a change is logged once.
    up: Arc<AtomicBool>,
}

impl std::fmt::Debug for SharedExact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedExact")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn key(prefix: &str, exact: &Digest) -> String {
    let mut k = String::with_capacity(prefix.len() + 6 + 64);
    k.push_str(prefix);
    k.push_str("cache:");
    crate::key::push_hex(&mut k, exact);
    k
}

fn health(up: &AtomicBool, ok: bool, error: &dyn std::fmt::Display) {
    if up.swap(ok, Ordering::Relaxed) != ok {
        if ok {
            tracing::info!("semantic cache: Redis answers again");
        } else {
            tracing::warn!(error = %error, "semantic cache: Redis unreachable; shared entries are skipped");
        }
    }
}

impl SharedExact {
    /// Entries under `prefix` on `conn`, each round trip bounded by `timeout`.
    pub fn new(conn: ConnectionManager, prefix: &str, timeout: Duration) -> SharedExact {
        SharedExact {
            conn,
            prefix: prefix.to_owned(),
            timeout,
            up: Arc::new(AtomicBool::new(true)),
        }
    }

    /// The answer stored under `exact`, if Redis answers in time.
    pub async fn get(&self, exact: &Digest) -> Option<Answer> {
        let mut conn = self.conn.clone();
        let k = key(&self.prefix, exact);
        let fetched = tokio::time::timeout(self.timeout, async move {
            redis::cmd("GET")
                .arg(&k)
                .query_async::<Option<Vec<u8>>>(&mut conn)
                .await
        })
        .await;
        match fetched {
            Ok(Ok(bytes)) => {
                health(&self.up, true, &"");
                serde_json::from_slice(&bytes?).ok()
            }
            Ok(Err(e)) => {
                health(&self.up, false, &e);
                None
            }
            Err(_) => {
                health(&self.up, false, &"timed out");
                None
            }
        }
    }

    /// Stores `answer` under `exact` for `ttl_secs`, in the background.
    pub fn put(&self, exact: &Digest, answer: &Answer, ttl_secs: u64) {
        let Ok(value) = serde_json::to_vec(answer) else {
            return;
        };
        let mut conn = self.conn.clone();
        let k = key(&self.prefix, exact);
        let up = self.up.clone();
        let timeout = self.timeout.max(Duration::from_secs(1));
        tokio::spawn(async move {
            let set = tokio::time::timeout(timeout, async move {
                redis::cmd("SET")
                    .arg(&k)
                    .arg(value)
                    .arg("EX")
                    .arg(ttl_secs.max(1))
                    .query_async::<()>(&mut conn)
                    .await
            })
            .await;
            match set {
                Ok(Ok(())) => health(&up, true, &""),
                Ok(Err(e)) => health(&up, false, &e),
                Err(_) => health(&up, false, &"timed out"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_are_prefixed_hex_digests() {
        let k = super::key("loom:", &[0xab; 32]);
        assert_eq!(k.len(), "loom:cache:".len() + 64);
        assert!(k.starts_with("loom:cache:abab"));
    }
}

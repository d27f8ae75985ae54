//! Usage stores kept across reloads, so that neither the memory ledger nor
//! Redis records waiting to be written are lost when the configuration
//! changes.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use loom_accounting::{Clock, MemoryStore, RedisStore, Store};
use loom_config::{StoreKind, TokenAccounting};
use loom_inference::batch::Batcher;
use loom_inference::embed::LocalEmbedder;

use super::models::CacheSlot;
use crate::ai::stored::{Kept, RedisKept, ResponseStore};

/// Usage stores and loaded models, kept across reloads so that neither the
/// memory ledger nor Redis records waiting to be written are lost when
/// configuration changes, and a model is read from disk once.
#[derive(Default)]
pub struct StoreCache {
    pub clock: Clock,
    pub(super) memory: OnceLock<Arc<Store>>,
    pub(super) redis: Mutex<Vec<(loom_config::RedisStore, Arc<Store>)>>,
    pub(super) embedders: Mutex<Vec<(PathBuf, Arc<LocalEmbedder>)>>,
    /// Embedding workers, one per models folder.
    pub(super) batchers: Mutex<Vec<(PathBuf, Batcher)>>,
    /// Semantic cache indexes by embedder identity, with the snapshot file
    /// the latest configuration names.
    pub(super) caches: Mutex<Vec<CacheSlot>>,
    /// Responses kept for the Responses API, in memory.
    pub(super) responses: Arc<ResponseStore>,
    /// Their Redis copies, one per Redis, with the writes each missed.
    pub(super) kept_redis: Mutex<Vec<(loom_config::RedisStore, Arc<RedisKept>)>>,
}

impl StoreCache {
    /// A cache whose accountants read time from `clock`.
    pub fn new(clock: Clock) -> StoreCache {
        StoreCache {
            clock,
            ..StoreCache::default()
        }
    }

    /// The store `accounting` names, reused when an earlier configuration had it.
    pub fn get(&self, accounting: &TokenAccounting) -> anyhow::Result<Arc<Store>> {
        let redis = accounting
            .store
            .as_ref()
            .filter(|s| s.kind == StoreKind::Redis)
            .and_then(|s| s.redis.as_ref());
        let Some(cfg) = redis else {
            let retention = (accounting.retention_days, accounting.retention_months);
            return Ok(self
                .memory
                .get_or_init(|| Arc::new(Store::Memory(MemoryStore::new(retention))))
                .clone());
        };
        let mut stores = self.redis.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, s)) = stores.iter().find(|(c, _)| c == cfg) {
            return Ok(s.clone());
        }
        let store = Arc::new(Store::Redis(RedisStore::connect(
            cfg,
            accounting.buffer_limit,
        )?));
        stores.push((cfg.clone(), store.clone()));
        Ok(store)
    }

    /// Kept responses as `ai` configures them: the process's memory copy,
    /// bounded as configured, and the Redis copy of `store: redis`.
    pub fn kept_responses(&self, ai: &loom_config::AiGateway) -> anyhow::Result<Kept> {
        let r = &ai.responses;
        self.responses.bound(r.ttl.get(), r.max_size.0);
        let redis = match (r.store, ai.kept_redis()) {
            (loom_config::KeptStore::Redis, Some(cfg)) => {
                let mut all = self.kept_redis.lock().unwrap_or_else(|e| e.into_inner());
                Some(match all.iter().find(|(c, _)| c == cfg) {
                    Some((_, kept)) => kept.clone(),
                    None => {
                        let conn = loom_accounting::redis_connection(cfg)
                            .map_err(|e| anyhow::anyhow!("ai_gateway.responses.redis: {e}"))?;
                        let kept = RedisKept::start(
                            conn,
                            &cfg.key_prefix,
                            cfg.timeout.get(),
                            self.responses.clone(),
                        );
                        all.push((cfg.clone(), kept.clone()));
                        kept
                    }
                })
            }
            (loom_config::KeptStore::Redis, None) => {
                anyhow::bail!("ai_gateway.responses.store: redis needs a Redis")
            }
            (loom_config::KeptStore::Memory, _) => None,
        };
        Ok(Kept::new(self.responses.clone(), redis))
    }

    /// Every store in use, for a flush at shutdown.
    pub fn all(&self) -> Vec<Arc<Store>> {
        let mut v: Vec<_> = self.memory.get().cloned().into_iter().collect();
        v.extend(
            self.redis
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|(_, s)| s.clone()),
        );
        v
    }
}

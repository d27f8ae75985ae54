//! The completion cache.
//!
//! The gateway asks a [`SemanticCache`] for a stored answer after
//! guardrails and before choosing a provider, and offers it each
//! successful answer afterwards. A lookup builds the request's key
//! ([`key`]); an identical request is found by its exact digest without
//! embedding anything; otherwise the final user turn is embedded
//! ([`Embedder`]: the local model through `loom_inference::batch::Batcher`, or a
//! configured provider) and compared only with prompts of the same
//! partition (same context and structural fingerprint, [`signature`]) in the
//! [`memory`] index.

pub mod key;
pub mod memory;
pub mod qdrant;
pub mod shared;
pub mod signature;
pub mod snapshot;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use aws_lc_rs::digest::{Context, SHA256};
use loom_models::chat::ChatRequest;
use serde::{Deserialize, Serialize};

use crate::key::Digest;
use crate::key::{KeyBuilder, NotCacheable};
use crate::memory::{MemoryIndex, Similar};
use crate::signature::Signature;

/// The similarity threshold when the configuration names none: chosen from
/// the evaluation set's precision curve (docs/semantic-cache.md).
pub const DEFAULT_THRESHOLD: f64 = 0.88;

/// A boxed future, so embedders can be held as trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Turns a prompt into a unit vector.
pub trait Embedder: Send + Sync {
    fn embed<'a>(&'a self, text: &'a str) -> BoxFuture<'a, Result<Vec<f32>, String>>;
}

impl Embedder for loom_inference::batch::Batcher {
    fn embed<'a>(&'a self, text: &'a str) -> BoxFuture<'a, Result<Vec<f32>, String>> {
        Box::pin(loom_inference::batch::Batcher::embed(self, text))
    }
}

/// A cached answer: the whole response and who produced it (for the
/// savings a hit reports).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Answer {
    /// The whole response, as the client first received it.
    pub response: loom_models::chat::ChatResponse,
    pub provider: String,
    /// The model the provider billed.
    pub model: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

/// How one request is looked up.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Cosine similarity at or above which a similar prompt's answer serves.
    pub threshold: f32,
    pub keys: KeyBuilder,
}

/// What a lookup found.
pub enum Lookup {
    Hit {
        answer: Arc<Answer>,
        /// 1.0 for an identical request.
        similarity: f32,
    },
    /// Not found; the answer may be stored under this key.
    Miss(Pending),
    /// The request is not cacheable.
    Skip(NotCacheable),
}

/// The keys of a request that missed, to store its answer under.
#[derive(Debug, Clone)]
pub struct Pending {
    exact: Digest,
    similar: Option<Similar>,
}

/// An answer cache with similarity lookups.
pub struct SemanticCache {
    index: Arc<MemoryIndex<Answer>>,
    embedder: Option<Arc<dyn Embedder>>,
    /// Exact entries shared with other replicas (`backend: redis`).
    shared: Option<Arc<shared::SharedExact>>,
    /// Embeddings and answers in Qdrant (`backend: qdrant`), in place of
    /// the memory index's vectors.
    vectors: Option<Arc<qdrant::QdrantIndex>>,
}

impl std::fmt::Debug for SemanticCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SemanticCache")
            .field("index", &self.index)
            .field("similarity", &self.embedder.is_some())
            .finish()
    }
}

/// The partition of a prompt: its context and its structural fingerprint.
fn partition(context: &Digest, signature: &Signature) -> Digest {
    let mut ctx = Context::new(&SHA256);
    ctx.update(context);
    ctx.update(signature.fingerprint.as_bytes());
    ctx.finish().as_ref().try_into().unwrap_or([0; 32])
}

impl SemanticCache {
    /// A cache over `index`; without an embedder only identical requests hit.
    pub fn new(index: Arc<MemoryIndex<Answer>>, embedder: Option<Arc<dyn Embedder>>) -> Self {
        SemanticCache {
            index,
            embedder,
            shared: None,
            vectors: None,
        }
    }

    /// Keeps embeddings and answers in Qdrant, shared by every replica.
    pub fn with_qdrant(mut self, vectors: Arc<qdrant::QdrantIndex>) -> Self {
        self.vectors = Some(vectors);
        self
    }

    /// The Qdrant collection, when that is the backend (for its sweep).
    pub fn qdrant(&self) -> Option<&Arc<qdrant::QdrantIndex>> {
        self.vectors.as_ref()
    }

    /// Also keeps exact entries in Redis, shared by every replica.
    pub fn with_shared(mut self, shared: Arc<shared::SharedExact>) -> Self {
        self.shared = Some(shared);
        self
    }

    /// The index, for its size and a snapshot.
    pub fn index(&self) -> &Arc<MemoryIndex<Answer>> {
        &self.index
    }

    /// Whether similar prompts are looked up (an embedder is configured).
    pub fn similarity(&self) -> bool {
        self.embedder.is_some()
    }

    /// Looks `req` up in `scope` at `now` (seconds); with `search` false
    /// only computes the keys an answer is stored under (a client's
    /// refresh). An embedding failure is logged and degrades to exact
    /// matching: the answer is then stored under its exact key only.
    pub async fn lookup(
        &self,
        settings: &Settings,
        scope: &str,
        req: &ChatRequest,
        now: u64,
        search: bool,
    ) -> Lookup {
        let key = match settings.keys.key(scope, req) {
            Ok(k) => k,
            Err(why) => return Lookup::Skip(why),
        };
        if search && let Some(found) = self.index.get(&key.exact, now) {
            return Lookup::Hit {
                answer: found.value,
                similarity: 1.0,
            };
        }
        let from_elsewhere = match (&self.shared, &self.vectors) {
            _ if !search => None,
            (Some(shared), _) => shared.get(&key.exact).await,
            (None, Some(q)) => q.get(&key.exact, now, self.index.ttl()).await,
            (None, None) => None,
        };
        if let Some(answer) = from_elsewhere {
            // Another replica's answer (Redis or Qdrant): kept here too, so
            // the next lookup stays in memory.
            let answer = Arc::new(answer);
            let size = serde_json::to_vec(&answer.response).map_or(0, |b| b.len());
            self.index.put(key.exact, None, answer.clone(), size, now);
            return Lookup::Hit {
                answer,
                similarity: 1.0,
            };
        }
        let Some(embedder) = &self.embedder else {
            return Lookup::Miss(Pending {
                exact: key.exact,
                similar: None,
            });
        };
        let mut signature = Signature::of(&key.prompt);
        let part = partition(&key.context, &signature);
        let mut vector = match embedder.embed(&key.prompt).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "semantic cache: embedding failed; exact match only");
                return Lookup::Miss(Pending {
                    exact: key.exact,
                    similar: None,
                });
            }
        };
        if search {
            let found = match &self.vectors {
                Some(q) => q
                    .search(
                        &part,
                        &vector,
                        &signature,
                        settings.threshold,
                        now,
                        self.index.ttl(),
                    )
                    .await
                    .map(|(a, s)| (Arc::new(a), s)),
                None => {
                    // A graph search takes up to a millisecond at 100,000
                    // entries: on a blocking thread, not an async worker.
                    let (index, threshold) = (self.index.clone(), settings.threshold);
                    let searched = tokio::task::spawn_blocking(move || {
                        let f = index
                            .search(&part, &vector, &signature, threshold, now)
                            .map(|f| (f.value, f.similarity));
                        (f, vector, signature)
                    })
                    .await;
                    match searched {
                        Ok((f, v, sig)) => {
                            vector = v;
                            signature = sig;
                            f
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "semantic cache: search failed; exact match only");
                            return Lookup::Miss(Pending {
                                exact: key.exact,
                                similar: None,
                            });
                        }
                    }
                }
            };
            if let Some((answer, similarity)) = found {
                return Lookup::Hit { answer, similarity };
            }
        }
        Lookup::Miss(Pending {
            exact: key.exact,
            similar: Some(Similar {
                partition: part,
                vector,
                signature,
            }),
        })
    }

    /// Stores `answer` (`size` bytes of response) under the keys of a miss.
    pub fn store(&self, pending: Pending, answer: Answer, size: usize, now: u64) -> bool {
        if let Some(shared) = &self.shared {
            shared.put(&pending.exact, &answer, self.index.ttl());
        }
        let answer = Arc::new(answer);
        let mut similar = pending.similar;
        if let Some(q) = &self.vectors {
            // The vectors live in Qdrant; this replica keeps the exact entry.
            if let Some(s) = similar.take() {
                let (q, answer, exact) = (q.clone(), answer.clone(), pending.exact);
                tokio::spawn(async move {
                    q.put(&exact, &s.partition, s.vector, &s.signature, &answer, now)
                        .await;
                });
            }
        }
        self.index.put(pending.exact, similar, answer, size, now)
    }
}

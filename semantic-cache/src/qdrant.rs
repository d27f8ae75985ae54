//! The `qdrant` backend: embeddings and answers kept in a Qdrant collection
//! shared by every replica, through qdrant-client (gRPC).
//!
//! One point per entry: its id is derived from the exact digest (so an
//! identical request finds it by id, and storing it again replaces it), its
//! vector is the final user turn's embedding, and its payload holds the
//! partition (context digest and fingerprint, hex), the time it was stored,
//! the signature for the guards, and the answer as JSON. A similar lookup
//! searches with a payload filter on the partition and on the age, so
//! entries past the TTL are never served; a background sweep deletes them.
//! The collection (cosine distance, keyword index on the partition, integer
//! index on the time) is created on first use when it does not exist.
//!
//! Every call waits at most the configured timeout; an unreachable Qdrant
//! makes the lookup a miss and the store a no-op (the change is logged
//! once), never an error.

use std::sync::atomic::{AtomicBool, Ordering};

use qdrant_client::Qdrant;
use qdrant_client::qdrant::{
    Condition, CreateCollectionBuilder, CreateFieldIndexCollectionBuilder, DeletePointsBuilder,
    Distance, FieldType, Filter, GetPointsBuilder, PointStruct, QueryPointsBuilder, Range,
    UpsertPointsBuilder, VectorParamsBuilder,
};
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

use crate::Answer;
use crate::key::Digest;
use crate::signature::Signature;

/// Nearest points a search asks for; the guards pick the first compatible.
const CANDIDATES: u64 = 8;

/// Settings of the backend.
#[derive(Debug, Clone)]
pub struct QdrantSettings {
    /// gRPC URL, e.g. `http://127.0.0.1:6334`.
    pub url: String,
    pub api_key: Option<String>,
    pub collection: String,
    pub timeout: std::time::Duration,
}

/// A cache collection in Qdrant.
pub struct QdrantIndex {
    client: Qdrant,
    collection: String,
    timeout: std::time::Duration,
    /// Set once the collection is known to exist with its indexes.
    ready: OnceCell<()>,
    up: AtomicBool,
}

impl std::fmt::Debug for QdrantIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QdrantIndex")
            .field("collection", &self.collection)
            .finish_non_exhaustive()
    }
}

/// What a point carries besides its vector.
#[derive(Serialize, Deserialize)]
struct Stored {
    partition: String,
    stored_at: u64,
    signature: Signature,
    /// The answer as JSON text: payload values are typed, an answer is not
    /// worth mapping field by field.
    answer: String,
}

fn hex(d: &Digest) -> String {
    let mut s = String::with_capacity(64);
    crate::key::push_hex(&mut s, d);
    s
}

/// A point id from the exact digest: its first 16 bytes as a UUID.
fn point_id(exact: &Digest) -> String {
    let h = hex(exact);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

impl QdrantIndex {
    /// A client for `settings`; connects on first use.
    pub fn connect(settings: &QdrantSettings) -> Result<QdrantIndex, String> {
        let client = Qdrant::from_url(&settings.url)
            .api_key(settings.api_key.clone())
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .skip_compatibility_check()
            .build()
            .map_err(|e| e.to_string())?;
        Ok(QdrantIndex {
            client,
            collection: settings.collection.clone(),
            timeout: settings.timeout,
            ready: OnceCell::new(),
            up: AtomicBool::new(true),
        })
    }

    fn health<T, E: std::fmt::Display>(&self, r: Result<T, E>) -> Option<T> {
        let ok = r.is_ok();
        if self.up.swap(ok, Ordering::Relaxed) != ok {
            match &r {
                Ok(_) => {
                    tracing::info!(collection = %self.collection, "semantic cache: Qdrant answers again")
                }
                Err(e) => {
                    tracing::warn!(collection = %self.collection, error = %e, "semantic cache: Qdrant unreachable; shared entries are skipped")
                }
            }
        }
        r.ok()
    }

    /// Creates the collection and its payload indexes unless they exist.
    async fn ensure(&self, dims: usize) -> Option<()> {
        let made = self
            .ready
            .get_or_try_init(|| async {
                let exists = self.client.collection_exists(&self.collection).await?;
                if !exists {
                    self.client
                        .create_collection(
                            CreateCollectionBuilder::new(&self.collection).vectors_config(
                                VectorParamsBuilder::new(dims as u64, Distance::Cosine),
                            ),
                        )
                        .await?;
                    self.client
                        .create_field_index(CreateFieldIndexCollectionBuilder::new(
                            &self.collection,
                            "partition",
                            FieldType::Keyword,
                        ))
                        .await?;
                    self.client
                        .create_field_index(CreateFieldIndexCollectionBuilder::new(
                            &self.collection,
                            "stored_at",
                            FieldType::Integer,
                        ))
                        .await?;
                }
                Ok::<(), qdrant_client::QdrantError>(())
            })
            .await;
        self.health(made.map(|_| ()))
    }

    /// Bounds a call by the timeout.
    async fn timed<T, E: std::fmt::Display>(
        &self,
        call: impl std::future::Future<Output = Result<T, E>>,
    ) -> Option<T> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(r) => self.health(r),
            Err(_) => self.health(Err::<T, _>("timed out")),
        }
    }

    /// The entry stored under `exact`, if younger than `ttl` at `now`.
    pub async fn get(&self, exact: &Digest, now: u64, ttl: u64) -> Option<Answer> {
        self.ready.get()?;
        let got = self
            .timed(
                self.client.get_points(
                    GetPointsBuilder::new(&self.collection, vec![point_id(exact).into()])
                        .with_payload(true),
                ),
            )
            .await?;
        let point = got.result.into_iter().next()?;
        let stored = decode(point.payload)?;
        if now.saturating_sub(stored.stored_at) >= ttl {
            return None;
        }
        serde_json::from_str(&stored.answer).ok()
    }

    /// The closest compatible entry of `partition` at least `threshold`
    /// similar to `vector`, younger than `ttl` at `now`.
    pub async fn search(
        &self,
        partition: &Digest,
        vector: &[f32],
        signature: &Signature,
        threshold: f32,
        now: u64,
        ttl: u64,
    ) -> Option<(Answer, f32)> {
        self.ensure(vector.len()).await?;
        let filter = Filter::must([
            Condition::matches("partition", hex(partition)),
            Condition::range(
                "stored_at",
                Range {
                    gt: Some(now.saturating_sub(ttl) as f64),
                    ..Range::default()
                },
            ),
        ]);
        let found = self
            .timed(
                self.client.query(
                    QueryPointsBuilder::new(&self.collection)
                        .query(vector.to_vec())
                        .filter(filter)
                        .score_threshold(threshold)
                        .limit(CANDIDATES)
                        .with_payload(true),
                ),
            )
            .await?;
        found.result.into_iter().find_map(|p| {
            let score = p.score;
            let stored = decode(p.payload)?;
            if !stored.signature.compatible(signature) {
                return None;
            }
            Some((serde_json::from_str(&stored.answer).ok()?, score.min(1.0)))
        })
    }

    /// Stores an entry (its vector is required: Qdrant points have one).
    pub async fn put(
        &self,
        exact: &Digest,
        partition: &Digest,
        vector: Vec<f32>,
        signature: &Signature,
        answer: &Answer,
        now: u64,
    ) {
        if self.ensure(vector.len()).await.is_none() {
            return;
        }
        let Ok(answer) = serde_json::to_string(answer) else {
            return;
        };
        let stored = Stored {
            partition: hex(partition),
            stored_at: now,
            signature: signature.clone(),
            answer,
        };
        let Ok(payload) = serde_json::to_value(&stored).map(qdrant_client::Payload::try_from)
        else {
            return;
        };
        let Ok(payload) = payload else { return };
        let point = PointStruct::new(point_id(exact), vector, payload);
        self.timed(
            self.client
                .upsert_points(UpsertPointsBuilder::new(&self.collection, vec![point])),
        )
        .await;
    }

    /// Deletes the entries older than `ttl` at `now`.
    pub async fn expire(&self, now: u64, ttl: u64) {
        if self.ready.get().is_none() {
            return;
        }
        let old = Filter::must([Condition::range(
            "stored_at",
            Range {
                lte: Some(now.saturating_sub(ttl) as f64),
                ..Range::default()
            },
        )]);
        self.timed(
            self.client
                .delete_points(DeletePointsBuilder::new(&self.collection).points(old)),
        )
        .await;
    }
}

fn decode(
    payload: std::collections::HashMap<String, qdrant_client::qdrant::Value>,
) -> Option<Stored> {
    let json = serde_json::Value::from(qdrant_client::Payload::from(payload));
    serde_json::from_value(json).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn point_ids_are_uuids_of_the_digest() {
        let id = point_id(&[0xab; 32]);
        assert_eq!(id, "abababab-abab-abab-abab-abababababab");
        assert_ne!(point_id(&[1; 32]), point_id(&[2; 32]));
    }
}

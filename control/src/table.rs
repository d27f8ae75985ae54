//! The key table every replica keeps in memory: secret digest → key, so
//! that a key is checked on the request path without the database.
//!
//! Sharded by the digest's first byte, each shard behind a `std` lock held
//! only for a map lookup or update (never across an await): a lookup is a
//! SHA-256 and one hash probe. A rotated key has two digests for a while:
//! the new one, and the old one until its grace period ends.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::{Arc, RwLock};

use loom_accounting::Consumer;
use serde::{Deserialize, Serialize};

/// One key as the store keeps it (never its secret, only digests).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRow {
    pub id: String,
    pub consumer: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// SHA-256 of the secret, hex.
    pub secret_hash: String,
    /// SHA-256 of the secret a rotation replaced, hex, valid until
    /// `previous_until` (unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_until: Option<i64>,
    /// Unix seconds after which the key is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    /// Models the key may call; any when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    pub created_at: i64,
    pub updated_at: i64,
    pub version: i64,
}

/// What the request path learns from a key.
#[derive(Debug)]
pub struct KeyRecord {
    pub row: KeyRow,
    /// The consumer usage and limits are kept under.
    pub consumer: Arc<Consumer>,
}

impl KeyRecord {
    /// Whether the key may call `model`.
    pub fn allows(&self, model: &str) -> bool {
        self.row
            .models
            .as_ref()
            .is_none_or(|m| m.iter().any(|a| a == model))
    }
}

#[derive(Debug, Clone)]
struct Entry {
    record: Arc<KeyRecord>,
    /// For an old secret: unix seconds until which it is taken.
    until: Option<i64>,
}

/// A consumer's name and tier.
type ConsumerKey = (String, Option<String>);

const SHARDS: usize = 16;

/// Keys by secret digest, and their digests by id.
#[derive(Debug)]
pub struct KeyTable {
    shards: [RwLock<HashMap<[u8; 32], Entry>>; SHARDS],
    /// In id order, for pages of the admin API.
    by_id: RwLock<BTreeMap<String, Arc<KeyRecord>>>,
    /// One `Consumer` per (name, tier), shared by its keys.
    consumers: RwLock<HashMap<ConsumerKey, Arc<Consumer>>>,
}

impl Default for KeyTable {
    fn default() -> Self {
        KeyTable {
            shards: std::array::from_fn(|_| RwLock::default()),
            by_id: RwLock::default(),
            consumers: RwLock::default(),
        }
    }
}

pub(crate) use loom_accounting::{digest_from_hex as unhex, to_hex as hex};

fn shard(d: &[u8; 32]) -> usize {
    usize::from(d[0]) % SHARDS
}

impl KeyTable {
    /// The live key whose secret is `secret`, at unix time `now`: not
    /// expired, and for an old secret, within its grace period.
    pub fn authenticate(&self, secret: &[u8], now: i64) -> Option<Arc<KeyRecord>> {
        let d = loom_accounting::sha256(secret);
        let entry = {
            let shard = self.shards[shard(&d)].read().ok()?;
            shard.get(&d)?.clone()
        };
        if entry.until.is_some_and(|u| now >= u) {
            return None;
        }
        if entry.record.row.expires_at.is_some_and(|e| now >= e) {
            return None;
        }
        Some(entry.record)
    }

    /// The key `id`.
    pub fn get(&self, id: &str) -> Option<Arc<KeyRecord>> {
        self.by_id.read().ok()?.get(id).cloned()
    }

    /// How many keys are loaded.
    pub fn len(&self) -> usize {
        self.by_id.read().map_or(0, |m| m.len())
    }

    /// True when no key is loaded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every key, sorted by id.
    pub fn rows(&self) -> Vec<KeyRow> {
        self.by_id
            .read()
            .map(|m| m.values().map(|r| r.row.clone()).collect())
            .unwrap_or_default()
    }

    /// Up to `limit` keys after the id `after`, in id order, that `keep`
    /// accepts; and whether more follow.
    pub fn page(
        &self,
        after: Option<&str>,
        limit: usize,
        keep: impl Fn(&KeyRow) -> bool,
    ) -> (Vec<KeyRow>, bool) {
        let Ok(m) = self.by_id.read() else {
            return (Vec::new(), false);
        };
        let from = after.map_or(Bound::Unbounded, |a| Bound::Excluded(a.to_owned()));
        let mut rows = m
            .range((from, Bound::Unbounded))
            .map(|(_, r)| &r.row)
            .filter(|r| keep(r));
        let page: Vec<KeyRow> = rows.by_ref().take(limit).cloned().collect();
        let more = rows.next().is_some();
        (page, more)
    }

    /// Adds or replaces a key (its old digests go).
    pub fn put(&self, row: KeyRow) {
        let Some(current) = unhex(&row.secret_hash) else {
            tracing::warn!(key = %row.id, "control plane: a key with a malformed digest is skipped");
            return;
        };
        let previous = row.previous_hash.as_deref().and_then(unhex);
        let until = row.previous_until;
        let record = Arc::new(KeyRecord {
            consumer: self.consumer(&row.consumer, row.tier.as_ref()),
            row,
        });
        self.remove(&record.row.id);
        let insert = |d: [u8; 32], until: Option<i64>| {
            if let Ok(mut s) = self.shards[shard(&d)].write() {
                s.insert(
                    d,
                    Entry {
                        record: record.clone(),
                        until,
                    },
                );
            }
        };
        insert(current, None);
        if let Some(p) = previous {
            insert(p, until.or(Some(0)));
        }
        if let Ok(mut ids) = self.by_id.write() {
            ids.insert(record.row.id.clone(), record.clone());
        }
    }

    /// The shared `Consumer` of `name` at `tier`.
    fn consumer(&self, name: &str, tier: Option<&String>) -> Arc<Consumer> {
        let key = (name.to_owned(), tier.cloned());
        if let Some(c) = self
            .consumers
            .read()
            .ok()
            .and_then(|m| m.get(&key).cloned())
        {
            return c;
        }
        let made = Arc::new(Consumer {
            name: key.0.clone(),
            tier: key.1.clone(),
            metadata: BTreeMap::new(),
        });
        match self.consumers.write() {
            Ok(mut m) => m.entry(key).or_insert(made).clone(),
            Err(_) => made,
        }
    }

    /// Writes every key, in id order, as a JSON array to `out`, without
    /// copying the table (the id index stays read-locked meanwhile; lookups
    /// on the request path do not use it).
    pub fn write_json(&self, out: impl std::io::Write) -> std::io::Result<()> {
        use serde::ser::SerializeSeq;
        let Ok(m) = self.by_id.read() else {
            return Err(std::io::Error::other("the key table's lock is poisoned"));
        };
        let mut ser = serde_json::Serializer::new(out);
        let mut seq = serde::Serializer::serialize_seq(&mut ser, Some(m.len()))?;
        for r in m.values() {
            seq.serialize_element(&r.row)?;
        }
        seq.end()?;
        Ok(())
    }

    /// Removes the key `id`, if loaded.
    pub fn remove(&self, id: &str) {
        let Some(old) = self.by_id.write().ok().and_then(|mut m| m.remove(id)) else {
            return;
        };
        let digests = [
            unhex(&old.row.secret_hash),
            old.row.previous_hash.as_deref().and_then(unhex),
        ];
        for d in digests.into_iter().flatten() {
            if let Ok(mut s) = self.shards[shard(&d)].write()
                && s.get(&d).is_some_and(|e| e.record.row.id == id)
            {
                s.remove(&d);
            }
        }
    }

    /// Replaces the whole table with `rows`.
    pub fn replace(&self, rows: Vec<KeyRow>) {
        let keep: std::collections::HashSet<String> = rows.iter().map(|r| r.id.clone()).collect();
        let gone: Vec<String> = self
            .by_id
            .read()
            .map(|m| m.keys().filter(|id| !keep.contains(*id)).cloned().collect())
            .unwrap_or_default();
        for id in gone {
            self.remove(&id);
        }
        for row in rows {
            if self.get(&row.id).is_none_or(|r| r.row != row) {
                self.put(row);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn row(id: &str, secret: &str) -> KeyRow {
        KeyRow {
            id: id.into(),
            consumer: "web".into(),
            team: None,
            name: None,
            secret_hash: hex(&loom_accounting::sha256(secret.as_bytes())),
            previous_hash: None,
            previous_until: None,
            expires_at: None,
            models: None,
            tier: None,
            metadata: BTreeMap::new(),
            created_at: 0,
            updated_at: 0,
            version: 1,
        }
    }

    #[test]
    fn keys_are_found_by_secret_until_expiry_or_removal() {
        let t = KeyTable::default();
        let mut r = row("key_1", "sk-loom-one");
        r.expires_at = Some(100);
        t.put(r);
        assert_eq!(t.authenticate(b"sk-loom-one", 99).unwrap().row.id, "key_1");
        assert!(t.authenticate(b"sk-loom-one", 100).is_none(), "expired");
        assert!(t.authenticate(b"sk-loom-two", 0).is_none());
        t.remove("key_1");
        assert!(t.authenticate(b"sk-loom-one", 0).is_none());
        assert!(t.is_empty());
    }

    #[test]
    fn a_rotated_secret_works_through_its_grace_only() {
        let t = KeyTable::default();
        t.put(row("key_1", "old"));
        let mut rotated = row("key_1", "new");
        rotated.previous_hash = Some(hex(&loom_accounting::sha256(b"old")));
        rotated.previous_until = Some(50);
        rotated.version = 2;
        t.replace(vec![rotated]);
        assert!(t.authenticate(b"new", 60).is_some());
        assert!(t.authenticate(b"old", 49).is_some());
        assert!(t.authenticate(b"old", 50).is_none());
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn pages_follow_id_order_and_filters() {
        let t = KeyTable::default();
        for i in 0..5 {
            let mut r = row(&format!("key_{i}"), &format!("s{i}"));
            r.consumer = if i % 2 == 0 { "even" } else { "odd" }.into();
            t.put(r);
        }
        let (page, more) = t.page(None, 2, |_| true);
        assert_eq!(
            page.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["key_0", "key_1"]
        );
        assert!(more);
        let (page, more) = t.page(Some("key_1"), 10, |r| r.consumer == "even");
        assert_eq!(
            page.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["key_2", "key_4"]
        );
        assert!(!more);
    }

    #[test]
    fn model_allow_lists() {
        let t = KeyTable::default();
        let mut r = row("key_1", "s");
        r.models = Some(vec!["gpt-4o".into()]);
        t.put(r);
        let k = t.authenticate(b"s", 0).unwrap();
        assert!(k.allows("gpt-4o") && !k.allows("gpt-4.1"));
    }
}

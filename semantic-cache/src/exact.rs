//! The exact-match store of the memory backend: answers by exact digest
//! (see [`crate::key`]), each with its size and the time it was stored.
//! Entries older than the TTL are gone on their next lookup; when the total
//! size passes `max_bytes`, the least recently used entries are evicted
//! first. Time is given by the caller (seconds), so tests and the gateway's
//! clock decide it.
//!
//! One mutex guards the map; it is never held across an `.await` (the API
//! is synchronous) and every operation is a map lookup plus O(log n) for
//! the recency index.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// A digest key (SHA-256).
pub type Digest = [u8; 32];

struct Entry<V> {
    value: Arc<V>,
    size: usize,
    stored_at: u64,
    /// Position in the recency index.
    used: u64,
}

struct Inner<V> {
    map: HashMap<Digest, Entry<V>>,
    /// Recency stamp → key; the smallest stamp is the least recently used.
    recency: BTreeMap<u64, Digest>,
    bytes: usize,
    stamp: u64,
}

/// Answers by exact key, bounded in bytes and age.
pub struct ExactStore<V> {
    inner: Mutex<Inner<V>>,
    max_bytes: usize,
    ttl_secs: u64,
}

impl<V> std::fmt::Debug for ExactStore<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (entries, bytes) = self.usage();
        f.debug_struct("ExactStore")
            .field("entries", &entries)
            .field("bytes", &bytes)
            .field("max_bytes", &self.max_bytes)
            .finish()
    }
}

impl<V> ExactStore<V> {
    /// A store of at most `max_bytes` whose entries live `ttl_secs`.
    pub fn new(max_bytes: usize, ttl_secs: u64) -> ExactStore<V> {
        ExactStore {
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                recency: BTreeMap::new(),
                bytes: 0,
                stamp: 0,
            }),
            max_bytes,
            ttl_secs,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<V>> {
        // A panic while holding the lock leaves consistent data (every
        // mutation completes before unlocking), so a poisoned lock is used as is.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The value stored under `key`, if younger than the TTL at `now`.
    pub fn get(&self, key: &Digest, now: u64) -> Option<Arc<V>> {
        let mut inner = self.lock();
        let expired = inner
            .map
            .get(key)
            .map(|e| now.saturating_sub(e.stored_at) >= self.ttl_secs)?;
        if expired {
            inner.remove(key);
            return None;
        }
        inner.stamp += 1;
        let stamp = inner.stamp;
        let e = inner.map.get_mut(key)?;
        let old = std::mem::replace(&mut e.used, stamp);
        let value = e.value.clone();
        inner.recency.remove(&old);
        inner.recency.insert(stamp, *key);
        Some(value)
    }

    /// Stores `value` of `size` bytes under `key` at `now`, evicting the
    /// least recently used entries to stay within the bound. A value larger
    /// than the whole bound is not stored.
    pub fn put(&self, key: Digest, value: Arc<V>, size: usize, now: u64) -> bool {
        if size > self.max_bytes {
            return false;
        }
        let mut inner = self.lock();
        inner.remove(&key);
        while inner.bytes + size > self.max_bytes {
            let Some((_, oldest)) = inner.recency.pop_first() else {
                break;
            };
            if let Some(e) = inner.map.remove(&oldest) {
                inner.bytes -= e.size;
            }
        }
        inner.stamp += 1;
        let stamp = inner.stamp;
        inner.recency.insert(stamp, key);
        inner.bytes += size;
        inner.map.insert(
            key,
            Entry {
                value,
                size,
                stored_at: now,
                used: stamp,
            },
        );
        true
    }

    /// (entries, bytes) held now.
    pub fn usage(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.map.len(), inner.bytes)
    }
}

impl<V> Inner<V> {
    fn remove(&mut self, key: &Digest) {
        if let Some(e) = self.map.remove(key) {
            self.bytes -= e.size;
            self.recency.remove(&e.used);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> Digest {
        [n; 32]
    }

    #[test]
    fn entries_expire_after_the_ttl() {
        let s = ExactStore::new(1000, 60);
        assert!(s.put(key(1), Arc::new("answer"), 10, 100));
        assert_eq!(s.get(&key(1), 159).as_deref(), Some(&"answer"));
        assert_eq!(s.get(&key(1), 160), None);
        assert_eq!(s.usage(), (0, 0));
    }

    #[test]
    fn the_least_recently_used_go_first_when_full() {
        let s = ExactStore::new(30, 3600);
        s.put(key(1), Arc::new(1), 10, 0);
        s.put(key(2), Arc::new(2), 10, 0);
        s.put(key(3), Arc::new(3), 10, 0);
        // Reading 1 makes 2 the least recently used.
        assert!(s.get(&key(1), 1).is_some());
        s.put(key(4), Arc::new(4), 10, 2);
        assert!(s.get(&key(2), 3).is_none());
        assert!(s.get(&key(1), 3).is_some() && s.get(&key(3), 3).is_some());
        assert_eq!(s.usage(), (3, 30));
        // Too big for the whole store: refused, nothing evicted.
        assert!(!s.put(key(5), Arc::new(5), 31, 3));
        assert_eq!(s.usage(), (3, 30));
        // Replacing a key does not count it twice.
        s.put(key(1), Arc::new(10), 5, 4);
        assert_eq!(s.usage(), (3, 25));
        assert_eq!(s.get(&key(1), 4).as_deref(), Some(&10));
    }
}

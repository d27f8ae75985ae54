//! The memory backend: answers by exact digest and by embedding, bounded
//! in bytes (least recently used evicted first) and in age (TTL).
//!
//! Embeddings live in **partitions**: one per context digest and
//! signature fingerprint (see [`crate::key`] and [`crate::signature`]), so
//! a similarity search only compares prompts whose conversation, model,
//! parameters, scope, numbers, names and negations already agree. A small
//! partition is scanned (a few hundred dot products cost less than any
//! graph walk); one that grows past [`GRAPH_AT`] entries also gets an HNSW
//! graph (hnsw_rs). The graph cannot delete: evicted entries stay in it as
//! tombstones, skipped by a filter, and the graph is rebuilt on a
//! background thread once they outnumber the living.
//!
//! One mutex guards the maps; it is held for map operations only. Graph
//! searches and insertions run outside it (hnsw_rs locks internally), so a
//! search of 100,000 entries never blocks a store. Time is given by the
//! caller (seconds), so tests and the gateway's clock decide it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use hnsw_rs::prelude::{Distance, Hnsw};

use crate::key::Digest;
use crate::signature::Signature;

/// Entries of a partition from which it also keeps an HNSW graph.
pub const GRAPH_AT: usize = 2048;

/// Graph parameters: links per node, layers, and the candidate list sizes
/// while building and while searching (measured in `benches/vector.rs`).
const LINKS: usize = 16;
const LAYERS: usize = 16;
const EF_BUILD: usize = 64;
const EF_SEARCH: usize = 48;
/// Nearest neighbours a graph search returns; the structural guards then
/// pick the first compatible one.
const CANDIDATES: usize = 8;

/// One minus the dot product of two unit vectors: the cosine distance.
/// hnsw_rs's own `DistDot` asserts on rounding (a dot product of 1.0000001)
/// and sums sequentially; this one clamps and sums in eight lanes, which
/// the compiler vectorises.
#[derive(Debug, Default, Clone, Copy)]
pub struct UnitCosine;

impl Distance<f32> for UnitCosine {
    fn eval(&self, a: &[f32], b: &[f32]) -> f32 {
        (1.0 - dot(a, b)).max(0.0)
    }
}

/// The dot product, in eight independent lanes.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// What a similarity entry carries besides its value.
#[derive(Debug, Clone)]
pub struct Similar {
    /// The partition: context digest and signature fingerprint.
    pub partition: Digest,
    pub vector: Vec<f32>,
    pub signature: Signature,
}

struct Entry<V> {
    value: Arc<V>,
    size: usize,
    stored_at: u64,
    used: u64,
    exact: Digest,
    similar: Option<(Digest, Signature)>,
    /// Position in its partition's arrays.
    slot: usize,
}

type Graph = Hnsw<'static, f32, UnitCosine>;

#[derive(Default)]
struct Partition {
    ids: Vec<u64>,
    /// `ids.len()` vectors, one after the other.
    vectors: Vec<f32>,
    graph: Option<Arc<Graph>>,
    /// Ids in the graph that are no longer in the partition.
    dead: usize,
    /// Ids stored while a rebuild runs, to add to the new graph.
    pending: Option<Vec<u64>>,
}

struct Inner<V> {
    entries: HashMap<u64, Entry<V>>,
    exact: HashMap<Digest, u64>,
    partitions: HashMap<Digest, Partition>,
    recency: BTreeMap<u64, u64>,
    /// Ids in the order they were stored: the TTL is the same for all, so
    /// the oldest are at the front.
    age: VecDeque<(u64, u64)>,
    bytes: usize,
    next_id: u64,
    stamp: u64,
}

/// A cache of answers, found by exact digest or by a similar prompt.
pub struct MemoryIndex<V> {
    inner: Arc<Mutex<Inner<V>>>,
    limits: Mutex<(usize, u64)>,
    /// Dimensions of every embedding held; 0 until the first is stored
    /// when the embedder's size is not known in advance.
    dims: AtomicUsize,
    builds: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// Insertions into graphs, done by a background thread: one costs
    /// about 0.7 ms at 100,000 entries, too long for the caller's thread
    /// (an async worker). Until it is in, an entry is found by its exact
    /// digest only.
    inserts: Mutex<Option<std::sync::mpsc::Sender<GraphInsert>>>,
}

/// Work for the background inserter.
enum GraphInsert {
    Insert(Arc<Graph>, Vec<f32>, u64),
    /// Answered once everything queued before it is done.
    Flush(std::sync::mpsc::Sender<()>),
}

impl<V> std::fmt::Debug for MemoryIndex<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (entries, bytes) = {
            let inner = lock(&self.inner);
            (inner.entries.len(), inner.bytes)
        };
        f.debug_struct("MemoryIndex")
            .field("entries", &entries)
            .field("bytes", &bytes)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every mutation completes before unlocking: a poisoned lock holds
    // consistent data.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a lookup found.
pub struct Found<V> {
    pub value: Arc<V>,
    /// 1.0 for an exact match.
    pub similarity: f32,
}

impl<V: Send + Sync + 'static> MemoryIndex<V> {
    /// An index of at most `max_bytes` whose entries live `ttl_secs`, for
    /// embeddings of `dims` dimensions (0: as many as the first one has).
    pub fn new(max_bytes: usize, ttl_secs: u64, dims: usize) -> MemoryIndex<V> {
        MemoryIndex {
            inner: Arc::new(Mutex::new(Inner {
                entries: HashMap::new(),
                exact: HashMap::new(),
                partitions: HashMap::new(),
                recency: BTreeMap::new(),
                age: VecDeque::new(),
                bytes: 0,
                next_id: 0,
                stamp: 0,
            })),
            limits: Mutex::new((max_bytes, ttl_secs)),
            dims: AtomicUsize::new(dims),
            builds: Mutex::new(Vec::new()),
            inserts: Mutex::new(None),
        }
    }

    /// Dimensions of the embeddings this index holds.
    pub fn dims(&self) -> usize {
        self.dims.load(Ordering::Relaxed)
    }

    /// New bounds (a reloaded configuration); entries over them go on the
    /// next store.
    pub fn set_limits(&self, max_bytes: usize, ttl_secs: u64) {
        *lock(&self.limits) = (max_bytes, ttl_secs);
    }

    /// Seconds an entry lives.
    pub fn ttl(&self) -> u64 {
        self.limits().1
    }

    fn limits(&self) -> (usize, u64) {
        *lock(&self.limits)
    }

    /// The answer stored under `exact`, if younger than the TTL at `now`.
    pub fn get(&self, exact: &Digest, now: u64) -> Option<Found<V>> {
        let ttl = self.limits().1;
        let mut inner = lock(&self.inner);
        let id = *inner.exact.get(exact)?;
        inner.touch(id, now, ttl).map(|value| Found {
            value,
            similarity: 1.0,
        })
    }

    /// The most similar compatible answer in `partition`, at least
    /// `threshold` close, if younger than the TTL at `now`.
    pub fn search(
        &self,
        partition: &Digest,
        vector: &[f32],
        signature: &Signature,
        threshold: f32,
        now: u64,
    ) -> Option<Found<V>> {
        let ttl = self.limits().1;
        let dims = self.dims();
        if vector.len() != dims {
            return None;
        }
        let candidates: Vec<(u64, f32)>;
        let graph = {
            let inner = lock(&self.inner);
            let p = inner.partitions.get(partition)?;
            match &p.graph {
                Some(g) => g.clone(),
                None => {
                    candidates = p
                        .ids
                        .iter()
                        .zip(p.vectors.chunks_exact(dims))
                        .map(|(&id, v)| (id, dot(vector, v)))
                        .filter(|(_, s)| *s >= threshold)
                        .collect();
                    drop(inner);
                    return self.best(candidates, partition, signature, now, ttl);
                }
            }
        };
        let found = graph.search(vector, CANDIDATES, EF_SEARCH);
        candidates = found
            .into_iter()
            .map(|n| (n.d_id as u64, 1.0 - n.distance))
            .filter(|(_, s)| *s >= threshold)
            .collect();
        self.best(candidates, partition, signature, now, ttl)
    }

    /// The closest candidate that is alive, in the partition, and
    /// structurally compatible.
    fn best(
        &self,
        mut candidates: Vec<(u64, f32)>,
        partition: &Digest,
        signature: &Signature,
        now: u64,
        ttl: u64,
    ) -> Option<Found<V>> {
        candidates.sort_by(|a, b| b.1.total_cmp(&a.1));
        let mut inner = lock(&self.inner);
        for (id, similarity) in candidates {
            let ok = inner.entries.get(&id).is_some_and(|e| {
                e.similar
                    .as_ref()
                    .is_some_and(|(p, s)| p == partition && s.compatible(signature))
            });
            if ok && let Some(value) = inner.touch(id, now, ttl) {
                return Some(Found {
                    value,
                    similarity: similarity.min(1.0),
                });
            }
        }
        None
    }

    /// Stores `value` of `size` bytes under `exact` and, when given, under
    /// its embedding. Evicts expired entries, then the least recently used,
    /// to stay within the bounds. A value larger than the whole bound is
    /// not stored.
    pub fn put(
        &self,
        exact: Digest,
        similar: Option<Similar>,
        value: Arc<V>,
        size: usize,
        now: u64,
    ) -> bool {
        self.insert(exact, similar, value, size, now, now)
    }

    /// Stores an entry that was stored at `stored_at` (a snapshot's), unless
    /// it expired by `now`.
    pub fn put_at(
        &self,
        exact: Digest,
        similar: Option<Similar>,
        value: V,
        size: usize,
        stored_at: u64,
        now: u64,
    ) -> bool {
        if now.saturating_sub(stored_at) >= self.limits().1 {
            return false;
        }
        self.insert(exact, similar, Arc::new(value), size, stored_at, now)
    }

    fn insert(
        &self,
        exact: Digest,
        similar: Option<Similar>,
        value: Arc<V>,
        size: usize,
        stored_at: u64,
        now: u64,
    ) -> bool {
        let (max_bytes, ttl) = self.limits();
        let vector_bytes = similar.as_ref().map_or(0, |s| s.vector.len() * 4);
        let size = size + vector_bytes + 96;
        if let Some(s) = &similar {
            let n = s.vector.len();
            let dims = match self
                .dims
                .compare_exchange(0, n, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => n,
                Err(d) => d,
            };
            if n != dims || n == 0 {
                return false;
            }
        }
        if size > max_bytes {
            return false;
        }
        let mut inner = lock(&self.inner);
        if let Some(old) = inner.exact.get(&exact).copied() {
            inner.remove(old);
        }
        inner.expire(now, ttl);
        while inner.bytes + size > max_bytes {
            let Some((_, oldest)) = inner.recency.pop_first() else {
                break;
            };
            inner.remove(oldest);
        }
        let id = inner.next_id;
        inner.next_id += 1;
        inner.stamp += 1;
        let stamp = inner.stamp;
        inner.recency.insert(stamp, id);
        inner.age.push_back((stored_at, id));
        inner.exact.insert(exact, id);
        inner.bytes += size;
        let mut slot = 0;
        let mut graph_work = None;
        let mut build = None;
        let sim = similar.map(|s| {
            let p = inner.partitions.entry(s.partition).or_default();
            slot = p.ids.len();
            p.ids.push(id);
            p.vectors.extend_from_slice(&s.vector);
            if let Some(pending) = p.pending.as_mut() {
                pending.push(id);
            }
            if let Some(g) = &p.graph {
                graph_work = Some((g.clone(), s.vector.clone()));
            } else if p.ids.len() >= GRAPH_AT && p.pending.is_none() {
                build = Some(s.partition);
            }
            (s.partition, s.signature)
        });
        inner.entries.insert(
            id,
            Entry {
                value,
                size,
                stored_at,
                used: stamp,
                exact,
                similar: sim,
                slot,
            },
        );
        let rebuild = inner.rebuild_due();
        drop(inner);
        if let Some((g, v)) = graph_work {
            self.insert_later(g, v, id);
        }
        for p in build.into_iter().chain(rebuild) {
            self.build_graph(p);
        }
        true
    }

    /// Hands a graph insertion to the background inserter (started on first
    /// use); inserts inline if no thread can be started.
    fn insert_later(&self, graph: Arc<Graph>, vector: Vec<f32>, id: u64) {
        let mut inserts = lock(&self.inserts);
        if inserts.is_none() {
            let (tx, rx) = std::sync::mpsc::channel::<GraphInsert>();
            let spawned = std::thread::Builder::new()
                .name("loom-cache-insert".into())
                .spawn(move || {
                    while let Ok(job) = rx.recv() {
                        match job {
                            GraphInsert::Insert(g, v, id) => g.insert((&v, id as usize)),
                            GraphInsert::Flush(done) => {
                                let _ = done.send(());
                            }
                        }
                    }
                });
            if spawned.is_ok() {
                *inserts = Some(tx);
            }
        }
        let job = GraphInsert::Insert(graph, vector, id);
        let job = match inserts.as_ref() {
            Some(tx) => match tx.send(job) {
                Ok(()) => return,
                Err(e) => e.0,
            },
            None => job,
        };
        drop(inserts);
        if let GraphInsert::Insert(g, v, id) = job {
            g.insert((&v, id as usize));
        }
    }

    /// Builds a partition's graph from its vectors on a background thread;
    /// entries stored meanwhile are added once it is in place.
    fn build_graph(&self, partition: Digest) {
        let (ids, vectors) = {
            let mut inner = lock(&self.inner);
            let Some(p) = inner.partitions.get_mut(&partition) else {
                return;
            };
            if p.pending.is_some() {
                return;
            }
            p.pending = Some(Vec::new());
            (p.ids.clone(), p.vectors.clone())
        };
        let inner = self.inner.clone();
        let dims = self.dims();
        let spawned = std::thread::Builder::new()
            .name("loom-cache-graph".into())
            .spawn(move || {
                let graph = Arc::new(Graph::new(
                    LINKS,
                    ids.len().max(GRAPH_AT) * 2,
                    LAYERS,
                    EF_BUILD,
                    UnitCosine,
                ));
                for (id, v) in ids.iter().zip(vectors.chunks_exact(dims)) {
                    graph.insert((v, *id as usize));
                }
                let late: Vec<(u64, Vec<f32>)> = {
                    let mut inner = lock(&inner);
                    let Some(p) = inner.partitions.get_mut(&partition) else {
                        return;
                    };
                    let pending = p.pending.take().unwrap_or_default();
                    p.graph = Some(graph.clone());
                    p.dead = 0;
                    let late: Vec<(u64, usize)> = pending
                        .into_iter()
                        .filter_map(|id| inner.entries.get(&id).map(|e| (id, e.slot)))
                        .collect();
                    let p = inner.partitions.get(&partition);
                    late.into_iter()
                        .filter_map(|(id, slot)| {
                            let v = p?.vectors.get(slot * dims..(slot + 1) * dims)?;
                            Some((id, v.to_vec()))
                        })
                        .collect()
                };
                for (id, v) in late {
                    graph.insert((&v, id as usize));
                }
            });
        match spawned {
            Ok(handle) => {
                let mut builds = lock(&self.builds);
                builds.retain(|h| !h.is_finished());
                builds.push(handle);
            }
            Err(_) => {
                // No thread: the partition stays scanned, which is only slower.
                if let Some(p) = lock(&self.inner).partitions.get_mut(&partition) {
                    p.pending = None;
                }
            }
        }
    }

    /// Waits for graphs being built and insertions queued in the
    /// background (benchmarks and tests).
    pub fn wait_for_graphs(&self) {
        let builds = std::mem::take(&mut *lock(&self.builds));
        for b in builds {
            let _ = b.join();
        }
        // The inserter runs jobs in order: once the flush is answered,
        // everything queued before it is in.
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let sent = lock(&self.inserts)
            .as_ref()
            .is_some_and(|tx| tx.send(GraphInsert::Flush(done_tx)).is_ok());
        if sent {
            let _ = done_rx.recv();
        }
    }

    /// (entries, bytes) held now.
    pub fn usage(&self) -> (usize, usize) {
        let inner = lock(&self.inner);
        (inner.entries.len(), inner.bytes)
    }

    /// Every living entry, for a snapshot: exact digest, similarity part,
    /// value and the time it was stored.
    pub fn entries(&self) -> Vec<(Digest, Option<Similar>, Arc<V>, u64)> {
        let dims = self.dims();
        let inner = lock(&self.inner);
        let mut out: Vec<_> = inner
            .entries
            .values()
            .map(|e| {
                let similar = e.similar.as_ref().and_then(|(p, s)| {
                    let part = inner.partitions.get(p)?;
                    let v = part.vectors.get(e.slot * dims..(e.slot + 1) * dims)?;
                    Some(Similar {
                        partition: *p,
                        vector: v.to_vec(),
                        signature: s.clone(),
                    })
                });
                (e.exact, similar, e.value.clone(), e.stored_at)
            })
            .collect();
        out.sort_by_key(|(_, _, _, at)| *at);
        out
    }
}

impl<V> Inner<V> {
    /// Marks `id` used at `now` and gives its value, unless it expired.
    fn touch(&mut self, id: u64, now: u64, ttl: u64) -> Option<Arc<V>> {
        let e = self.entries.get(&id)?;
        if now.saturating_sub(e.stored_at) >= ttl {
            self.remove(id);
            return None;
        }
        self.stamp += 1;
        let stamp = self.stamp;
        let e = self.entries.get_mut(&id)?;
        let old = std::mem::replace(&mut e.used, stamp);
        let value = e.value.clone();
        self.recency.remove(&old);
        self.recency.insert(stamp, id);
        Some(value)
    }

    /// Removes the entries stored `ttl` or longer before `now`.
    fn expire(&mut self, now: u64, ttl: u64) {
        while let Some(&(at, id)) = self.age.front() {
            if now.saturating_sub(at) < ttl {
                break;
            }
            self.age.pop_front();
            if self.entries.get(&id).is_some_and(|e| e.stored_at == at) {
                self.remove(id);
            }
        }
        // Ids removed otherwise linger in `age` until they reach the front;
        // keep it from growing past twice the living.
        if self.age.len() > 2 * self.entries.len() + 64 {
            let entries = &self.entries;
            self.age.retain(|(_, id)| entries.contains_key(id));
        }
    }

    fn remove(&mut self, id: u64) {
        let Some(e) = self.entries.remove(&id) else {
            return;
        };
        self.bytes -= e.size;
        self.recency.remove(&e.used);
        if self.exact.get(&e.exact) == Some(&id) {
            self.exact.remove(&e.exact);
        }
        let Some((partition, _)) = e.similar else {
            return;
        };
        let Some(p) = self.partitions.get_mut(&partition) else {
            return;
        };
        let dims = p.vectors.len() / p.ids.len().max(1);
        let last = p.ids.len() - 1;
        p.ids.swap_remove(e.slot);
        if e.slot != last {
            let (head, tail) = p.vectors.split_at_mut(last * dims);
            head[e.slot * dims..(e.slot + 1) * dims].copy_from_slice(&tail[..dims]);
            let moved = p.ids[e.slot];
            if let Some(m) = self.entries.get_mut(&moved) {
                m.slot = e.slot;
            }
        }
        p.vectors.truncate(last * dims);
        if p.graph.is_some() {
            p.dead += 1;
        }
        if p.ids.is_empty() && p.pending.is_none() {
            self.partitions.remove(&partition);
        } else if p.graph.is_some() && p.ids.len() < GRAPH_AT / 2 && p.pending.is_none() {
            // Small again: scanning is faster than the graph.
            p.graph = None;
            p.dead = 0;
        }
    }

    /// A partition whose graph holds more tombstones than living entries.
    fn rebuild_due(&self) -> Option<Digest> {
        self.partitions
            .iter()
            .find(|(_, p)| p.graph.is_some() && p.pending.is_none() && p.dead > p.ids.len())
            .map(|(d, _)| *d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(seed: u64, dims: usize) -> Vec<f32> {
        // A deterministic pseudo-random unit vector.
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut v: Vec<f32> = (0..dims)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x % 2000) as f32 / 1000.0 - 1.0
            })
            .collect();
        let n = dot(&v, &v).sqrt();
        v.iter_mut().for_each(|y| *y /= n);
        v
    }

    fn similar(p: u8, v: Vec<f32>, prompt: &str) -> Option<Similar> {
        Some(Similar {
            partition: [p; 32],
            vector: v,
            signature: Signature::of(prompt),
        })
    }

    #[test]
    fn finds_exact_and_similar_entries_within_their_partition_only() {
        let idx = MemoryIndex::new(1 << 20, 3600, 16);
        let v = unit(1, 16);
        assert!(idx.put(
            [1; 32],
            similar(9, v.clone(), "how tall is it"),
            Arc::new("a"),
            10,
            0
        ));
        let got = idx.get(&[1; 32], 1).expect("exact hit");
        assert_eq!((*got.value, got.similarity), ("a", 1.0));
        let sig = Signature::of("how tall is it");
        let near = idx.search(&[9; 32], &v, &sig, 0.9, 1).expect("similar hit");
        assert!(near.similarity > 0.99);
        // Another partition, a far vector, or an incompatible signature: no hit.
        assert!(idx.search(&[8; 32], &v, &sig, 0.9, 1).is_none());
        assert!(idx.search(&[9; 32], &unit(2, 16), &sig, 0.9, 1).is_none());
        let other = Signature::of("how tall is it not");
        assert!(idx.search(&[9; 32], &v, &other, 0.9, 1).is_none());
    }

    #[test]
    fn expiry_and_eviction_keep_partitions_consistent() {
        let idx = MemoryIndex::new(10_000, 100, 8);
        let per = 10 + 8 * 4 + 96;
        for i in 0..200u64 {
            let d = [(i % 250) as u8; 32];
            idx.put(d, similar(1, unit(i, 8), "x"), Arc::new(i), 10, i);
        }
        let (n, bytes) = idx.usage();
        assert!(
            bytes <= 10_000 && n == 10_000 / per,
            "{n} entries, {bytes} bytes"
        );
        // The survivors are the newest, and each is found by its own vector.
        let sig = Signature::of("x");
        for i in 200 - n as u64..200 {
            let f = idx
                .search(&[1; 32], &unit(i, 8), &sig, 0.999, 200)
                .expect("found");
            assert_eq!(*f.value, i);
        }
        // Past the TTL nothing is served, and the next store clears them.
        assert!(idx.get(&[199; 32], 299).is_none());
        idx.put([0; 32], None, Arc::new(0), 10, 400);
        assert_eq!(idx.usage().0, 1);
    }

    #[test]
    fn a_large_partition_is_searched_through_its_graph() {
        let dims = 32;
        let idx = MemoryIndex::new(usize::MAX, 3600, dims);
        let n = GRAPH_AT as u64 + 200;
        for i in 0..n {
            let mut d = [0u8; 32];
            d[..8].copy_from_slice(&i.to_le_bytes());
            idx.put(d, similar(1, unit(i, dims), "q"), Arc::new(i), 10, 0);
        }
        idx.wait_for_graphs();
        assert!(
            lock(&idx.inner)
                .partitions
                .get(&[1; 32])
                .is_some_and(|p| p.graph.is_some() && p.pending.is_none()),
            "graph built"
        );
        let sig = Signature::of("q");
        let mut found = 0;
        for i in (0..n).step_by(97) {
            if idx
                .search(&[1; 32], &unit(i, dims), &sig, 0.999, 1)
                .is_some_and(|f| *f.value == i)
            {
                found += 1;
            }
        }
        let asked = n.div_ceil(97);
        assert!(found as u64 >= asked * 9 / 10, "{found}/{asked}");
    }
}

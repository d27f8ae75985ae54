//! Lookup cost of the memory index at scale: 100,000 entries in one
//! partition (the worst case: every prompt shares its context, so one
//! graph holds them all), exact hits, similarity searches (p50/p99, recall
//! of the true nearest neighbour), store cost, and memory per entry.
//!
//! Vectors are synthetic but clustered like sentence embeddings: 2,000
//! random unit "topics", each entry a topic plus noise (cosine about 0.8
//! to its topic), so neighbourhoods are dense as they are for real
//! prompts. A plain main rather than criterion: percentiles, recall and
//! memory are what matter here.
//!
//!   cargo bench -p loom-semantic-cache --bench vector [-- ENTRIES]

use std::sync::Arc;
use std::time::Instant;

use loom_semantic_cache::memory::{MemoryIndex, Similar, dot};
use loom_semantic_cache::signature::Signature;

const DIMS: usize = 384;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % 2_000_001) as f32 / 1_000_000.0 - 1.0
    }
    fn unit(&mut self) -> Vec<f32> {
        let mut v: Vec<f32> = (0..DIMS).map(|_| self.next()).collect();
        normalise(&mut v);
        v
    }
}

fn normalise(v: &mut [f32]) {
    let n = dot(v, v).sqrt();
    v.iter_mut().for_each(|x| *x /= n);
}

fn near(rng: &mut Rng, center: &[f32], noise: f32) -> Vec<f32> {
    let mut v: Vec<f32> = center.iter().map(|c| c + noise * rng.next()).collect();
    normalise(&mut v);
    v
}

fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map_or(0, |pages| pages * 4096)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(100_000);
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    let topics: Vec<Vec<f32>> = (0..2000).map(|_| rng.unit()).collect();
    let signature = Signature::of("a prompt");
    let partition = [7u8; 32];
    let answer = "x".repeat(1000);
    let index: MemoryIndex<String> = MemoryIndex::new(usize::MAX, 86_400, DIMS);
    let vectors: Vec<Vec<f32>> = (0..n)
        .map(|i| near(&mut rng, &topics[i % topics.len()], 0.045))
        .collect();
    eprintln!("cosine entry-topic ≈ {:.3}", dot(&vectors[0], &topics[0]));
    let before = rss_bytes();
    let started = Instant::now();
    for (i, v) in vectors.iter().enumerate() {
        let mut exact = [0u8; 32];
        exact[..8].copy_from_slice(&(i as u64).to_le_bytes());
        let similar = Similar {
            partition,
            vector: v.clone(),
            signature: signature.clone(),
        };
        index.put(
            exact,
            Some(similar),
            Arc::new(answer.clone()),
            answer.len(),
            0,
        );
    }
    index.wait_for_graphs();
    let stored = started.elapsed();
    let after = rss_bytes();
    println!(
        "stored {n} entries in {:.1} s ({:.0} µs each, graph included); memory {:.0} bytes per entry ({} of answer, {} of vector)",
        stored.as_secs_f64(),
        stored.as_secs_f64() * 1e6 / n as f64,
        (after.saturating_sub(before)) as f64 / n as f64,
        answer.len(),
        DIMS * 4,
    );

    // Exact hits.
    let mut times = Vec::with_capacity(10_000);
    for i in 0..10_000usize {
        let mut exact = [0u8; 32];
        exact[..8].copy_from_slice(&((i * 7919 % n) as u64).to_le_bytes());
        let t = Instant::now();
        let hit = index.get(&exact, 1);
        times.push(t.elapsed().as_secs_f64() * 1e6);
        assert!(hit.is_some());
    }
    times.sort_by(f64::total_cmp);
    println!(
        "exact hit: p50 {:.2} µs, p99 {:.2} µs",
        percentile(&times, 0.5),
        percentile(&times, 0.99)
    );

    // Similarity searches: a fresh paraphrase of a stored entry.
    let queries = 2000;
    let mut times = Vec::with_capacity(queries);
    let mut found = 0;
    let mut exact_nearest = 0;
    for q in 0..queries {
        let target = (q * 104_729) % n;
        let query = near(&mut rng, &vectors[target], 0.01);
        let t = Instant::now();
        let hit = index.search(&partition, &query, &signature, 0.0, 1);
        times.push(t.elapsed().as_secs_f64() * 1e3);
        if hit.is_some() {
            found += 1;
        }
        // The true nearest by a full scan, for recall (outside the timing).
        if q % 20 == 0 {
            let best = vectors
                .iter()
                .map(|v| dot(v, &query))
                .fold(f32::MIN, f32::max);
            if hit.is_some_and(|h| (h.similarity - best).abs() < 1e-4) {
                exact_nearest += 1;
            }
        }
    }
    times.sort_by(f64::total_cmp);
    println!(
        "similar search among {n}: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms; found {found}/{queries}; true nearest {exact_nearest}/{}",
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times[times.len() - 1],
        queries / 20
    );
}

//! Exact-match lookup with 100,000 cached entries (issue #7's target: under
//! 20 µs for a hit), including building the key of a typical request.
//!
//! `cargo bench -p loom-semantic-cache --bench exact`

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use loom_models::chat::ChatRequest;
use loom_semantic_cache::key::KeyBuilder;
use loom_semantic_cache::memory::MemoryIndex;

fn bench(c: &mut Criterion) {
    let keys = KeyBuilder {
        absent_temperature_is_zero: true,
        max_temperature: 0.0,
    };
    let store: MemoryIndex<Vec<u8>> = MemoryIndex::new(1 << 30, 3600, 384);
    let request = |i: usize| -> ChatRequest {
        serde_json::from_value(serde_json::json!({
            "model": "gpt-4o",
            "temperature": 0,
            "messages": [
                {"role": "system", "content": "You are a helpful assistant for our travel agency."},
                {"role": "user", "content": format!("What is the best month to visit city number {i}?")}
            ]
        }))
        .expect("request")
    };
    for i in 0..100_000 {
        let k = keys.key("app", &request(i)).expect("cacheable");
        store.put(k.exact, None, Arc::new(vec![0u8; 600]), 600, 0);
    }
    let probe = request(42_424);
    c.bench_function("key of a request", |b| {
        b.iter(|| keys.key("app", std::hint::black_box(&probe)))
    });
    let k = keys.key("app", &probe).expect("cacheable").exact;
    c.bench_function("exact hit among 100,000 entries", |b| {
        b.iter(|| store.get(std::hint::black_box(&k), 1))
    });
    c.bench_function("key + exact hit", |b| {
        b.iter(|| {
            let k = keys
                .key("app", std::hint::black_box(&probe))
                .expect("cacheable");
            store.get(&k.exact, 1)
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

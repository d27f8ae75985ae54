//! A key lookup on the request path with 1,000,000 run-time keys loaded:
//! SHA-256 of the presented secret and one probe of the in-memory table,
//! no database.
//!
//!   cargo bench -p loom-control --bench lookup

use std::collections::BTreeMap;

use criterion::{Criterion, criterion_group, criterion_main};
use loom_control::{KeyRow, KeyTable};

fn table(n: usize) -> KeyTable {
    let t = KeyTable::default();
    let rows: Vec<KeyRow> = (0..n)
        .map(|i| KeyRow {
            id: format!("key_{i:08}"),
            consumer: format!("consumer-{}", i % 1000),
            team: None,
            name: None,
            secret_hash: loom_accounting::to_hex(&loom_accounting::sha256(
                format!("sk-loom-{i:024}").as_bytes(),
            )),
            previous_hash: None,
            previous_until: None,
            expires_at: None,
            models: None,
            tier: None,
            metadata: BTreeMap::new(),
            created_at: 0,
            updated_at: 0,
            version: 1,
        })
        .collect();
    t.replace(rows);
    t
}

fn lookup(c: &mut Criterion) {
    let t = table(1_000_000);
    let hit = format!("sk-loom-{:024}", 777_777);
    c.bench_function("key lookup, 1M keys, hit", |b| {
        b.iter(|| t.authenticate(std::hint::black_box(hit.as_bytes()), 1))
    });
    c.bench_function("key lookup, 1M keys, miss", |b| {
        b.iter(|| t.authenticate(std::hint::black_box(b"sk-loom-not-a-key-at-all"), 1))
    });
}

criterion_group!(benches, lookup);
criterion_main!(benches);

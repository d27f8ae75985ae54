//! Cost of one local embedding (all-MiniLM-L6-v2 int8, one thread).
//!
//! `scripts/fetch-models && cargo bench -p loom-semantic-cache --bench embed`

use std::path::PathBuf;

use criterion::{Criterion, criterion_group, criterion_main};
use loom_inference::embed::{LocalEmbedder, ModelFiles};

fn bench(c: &mut Criterion) {
    let dir = std::env::var_os("LOOM_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/loom/models")
        });
    let Ok(e) = LocalEmbedder::load(&ModelFiles::in_dir(&dir)) else {
        eprintln!(
            "SKIPPED: no model in {}; run scripts/fetch-models",
            dir.display()
        );
        return;
    };
    // About 30 tokens.
    let prompt = "Can you explain, in simple terms, how a transformer model uses attention to decide which words in a sentence matter most?";
    c.bench_function("embed 30-token prompt", |b| {
        b.iter(|| e.embed(std::hint::black_box(prompt)))
    });
    // A 2 KB prompt: cut at 256 tokens, the longest input the embedder reads.
    let long = "Please summarise the quarterly report: revenue grew across regions and the app went live. ".repeat(24);
    c.bench_function("embed 2 KB prompt (256 tokens)", |b| {
        b.iter(|| e.embed(std::hint::black_box(&long)))
    });
    let short = "What is the capital of France?";
    c.bench_function("embed 9-token prompt", |b| {
        b.iter(|| e.embed(std::hint::black_box(short)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

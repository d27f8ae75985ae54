//! Cost of PII detection and masking on a typical prompt.
//!
//! `cargo bench -p loom-guardrails --bench pii`

use criterion::{Criterion, criterion_group, criterion_main};
use loom_guardrails::pii::{PiiDetector, PiiKind};

fn prompt(with_pii: bool) -> String {
    let para = "Please summarise the quarterly report: revenue grew 12.5% to $4,210,000 \
                across 37 regions, order 1234567890 shipped on 2024-03-15, version 2.4.1 \
                of the app went live at 10:30 and latency fell to 180 ms. ";
    let mut s = para.repeat(8); // about 2 KB
    if with_pii {
        s.push_str(
            "Reach me at jane.doe@example.com or +1 415-555-2671; card 4111 1111 1111 1111.",
        );
    }
    s
}

fn bench(c: &mut Criterion) {
    let d = PiiDetector::new(&PiiKind::ALL);
    let clean = prompt(false);
    let dirty = prompt(true);
    c.bench_function("pii find, 2 KB, no PII", |b| {
        b.iter(|| d.find(std::hint::black_box(&clean)))
    });
    c.bench_function("pii mask, 2 KB, three values", |b| {
        b.iter(|| d.mask(std::hint::black_box(&dirty)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

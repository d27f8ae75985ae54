//! Cost of the rule-based guardrails on a 2 KB prompt, each check alone and
//! all together as a request sees them, and of the stream guard per chunk.
//!
//! `cargo bench -p loom-guardrails --bench guardrails`

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use loom_guardrails::content::ContentRules;
use loom_guardrails::injection::InjectionRules;
use loom_guardrails::pii::{PiiDetector, PiiKind};
use loom_guardrails::{Guardrails, Release, Unobserved};
use loom_models::chat::ChatRequest;

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

fn all_checks() -> Guardrails {
    let security = serde_norway::from_str(
        "prompt_injection: {enabled: true}\n\
         content_filtering: {enabled: true, categories: [hate, violence, self_harm, sexual, harassment]}\n\
         pii_detection: {enabled: true, types: [email, phone, ssn, credit_card, ipv4, ipv6, iban]}",
    )
    .expect("security");
    Guardrails::from_config(&security, Arc::new(Unobserved), &Default::default())
}

fn request(text: &str) -> ChatRequest {
    serde_json::from_value(serde_json::json!({
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "You are a helpful analyst."},
            {"role": "user", "content": text}
        ]
    }))
    .expect("request")
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
    c.bench_function("normalise for rules, 2 KB", |b| {
        b.iter(|| loom_guardrails::normalize::for_rules(std::hint::black_box(&clean)))
    });
    c.bench_function("decoded runs, 2 KB", |b| {
        b.iter(|| loom_guardrails::normalize::decoded_runs(std::hint::black_box(&clean)))
    });
    for k in PiiKind::ALL {
        let one = PiiDetector::new(&[k]);
        c.bench_function(&format!("pii kind {}", k.name()), |b| {
            b.iter(|| one.find(std::hint::black_box(&clean)))
        });
    }
    let injection = InjectionRules::new();
    c.bench_function("injection rules, 2 KB", |b| {
        b.iter(|| injection.assess(std::hint::black_box(&clean)))
    });
    let content = ContentRules::new();
    c.bench_function("content rules, 2 KB", |b| {
        b.iter(|| content.assess(std::hint::black_box(&clean)))
    });
    let g = Arc::new(all_checks());
    let template = request(&dirty);
    c.bench_function("all rule checks, 2 KB request with PII", |b| {
        b.iter_batched(
            || template.clone(),
            |mut r| g.check_request(&mut r),
            criterion::BatchSize::SmallInput,
        )
    });
    // A streamed answer of 2 KB in chunks of about 4 tokens (16 bytes).
    let answer = prompt(true);
    let chunks: Vec<&str> = answer
        .as_bytes()
        .chunks(16)
        .map(|c| std::str::from_utf8(c).expect("ascii"))
        .collect();
    c.bench_function(
        "stream guard, 2 KB answer in 16-byte chunks (per answer)",
        |b| {
            b.iter(|| {
                let mut s = g.stream_guard(None).expect("answers checked");
                let mut n = 0;
                for ch in &chunks {
                    if let Release::Text(t) = s.push(0, ch) {
                        n += t.len();
                    }
                }
                if let Release::Text(t) = s.finish(0) {
                    n += t.len();
                }
                n
            })
        },
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);

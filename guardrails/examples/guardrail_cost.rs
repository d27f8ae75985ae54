//! Runs the rule-based request checks on a 2 KB prompt `N` times (default
//! 2,000): for instruction counts under callgrind, which are stable on a
//! noisy machine where wall-clock benchmarks are not. Then streams a 2 KB
//! answer through the stream guard in 16-byte chunks and reports how long
//! text is held back, in chunks.
//!
//! cargo build --release -p loom-guardrails --example guardrail_cost
//! valgrind --tool=callgrind target/release/examples/guardrail_cost 2000

use std::sync::Arc;

use loom_guardrails::{Guardrails, Unobserved};
use loom_models::chat::ChatRequest;

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    let para = "Please summarise the quarterly report: revenue grew 12.5% to $4,210,000 \
                across 37 regions, order 1234567890 shipped on 2024-03-15, version 2.4.1 \
                of the app went live at 10:30 and latency fell to 180 ms. ";
    let mut text = para.repeat(8);
    text.push_str("Reach me at jane.doe@example.com or +1 415-555-2671; card 4111 1111 1111 1111.");
    let security = serde_norway::from_str(
        "prompt_injection: {enabled: true}\n\
         content_filtering: {enabled: true, categories: [hate, violence, self_harm, sexual, harassment]}\n\
         pii_detection: {enabled: true, types: [email, phone, ssn, credit_card, ipv4, ipv6, iban]}",
    )
    .expect("security");
    let g = Guardrails::from_config(&security, Arc::new(Unobserved), &Default::default());
    let template: ChatRequest = serde_json::from_value(serde_json::json!({
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": text}]
    }))
    .expect("request");
    // Warm the lazily compiled rule sets outside the count.
    let mut r = template.clone();
    g.check_request(&mut r);
    let started = std::time::Instant::now();
    let mut changed = 0;
    for _ in 0..n {
        let mut r = template.clone();
        changed += usize::from(g.check_request(&mut r).changed);
    }
    println!(
        "{n} requests, {} changed, {:.1} µs per request",
        changed,
        started.elapsed().as_secs_f64() * 1e6 / n as f64
    );
    hold_back(&text);
}

/// How many chunks each byte of a streamed answer waits before release.
fn hold_back(answer: &str) {
    let g = Arc::new(Guardrails::from_config(
        &serde_norway::from_str("pii_detection: {enabled: true}").expect("security"),
        Arc::new(Unobserved),
        &Default::default(),
    ));
    let mut s = g.stream_guard(None).expect("answers are checked");
    let chunks: Vec<&str> = answer
        .as_bytes()
        .chunks(16)
        .map(|c| std::str::from_utf8(c).expect("ascii"))
        .collect();
    let (mut arrived, mut released) = (0usize, 0usize);
    let mut waits: Vec<usize> = Vec::new();
    // For each released byte: chunks since it arrived.
    let mut arrival_chunk: Vec<usize> = Vec::new();
    for (i, c) in chunks.iter().enumerate() {
        arrived += c.len();
        arrival_chunk.extend(std::iter::repeat_n(i, c.len()));
        // Masking changes lengths: count released bytes by what is still held.
        let _ = s.push(0, c);
        let now_released = arrived - s.held(0);
        waits.extend(arrival_chunk[released..now_released].iter().map(|a| i - a));
        released = now_released;
    }
    waits.sort_unstable();
    let mean = waits.iter().sum::<usize>() as f64 / waits.len().max(1) as f64;
    println!(
        "stream hold-back over {} chunks of 16 bytes: mean {:.2} chunks, p99 {} chunks, max {} chunks",
        chunks.len(),
        mean,
        waits[waits.len() * 99 / 100],
        waits.last().copied().unwrap_or(0)
    );
}

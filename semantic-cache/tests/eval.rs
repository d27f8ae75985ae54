//! The semantic cache's quality gate: the labelled pairs of
//! `eval/pairs.jsonl` (written by `scripts/cache-eval-data`) through the
//! real embedder and the structural guards, exactly as a lookup decides.
//! Prints the precision and recall curve over thresholds and fails when
//! precision at the default threshold falls under 0.99.
//!
//! Outside CI, a machine without the model skips with a message; in CI
//! (`CI=true`) its absence fails.

use loom_inference::embed::{LocalEmbedder, cosine};
use loom_semantic_cache::DEFAULT_THRESHOLD;
use loom_semantic_cache::signature::Signature;

struct Pair {
    hit: bool,
    kind: String,
    similarity: f32,
    compatible: bool,
}

fn pairs(e: &LocalEmbedder) -> Vec<Pair> {
    let text = include_str!("../eval/pairs.jsonl");
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            let (a, b) = (v["a"].as_str().expect("a"), v["b"].as_str().expect("b"));
            let similarity = cosine(&e.embed(a).expect("embed"), &e.embed(b).expect("embed"));
            Pair {
                hit: v["hit"].as_bool().expect("hit"),
                kind: v["kind"].as_str().expect("kind").to_owned(),
                similarity,
                compatible: Signature::of(a).compatible(&Signature::of(b)),
            }
        })
        .collect()
}

/// (precision, recall, false hits) at `threshold`, with or without guards.
fn score(pairs: &[Pair], threshold: f32, guards: bool) -> (f64, f64, usize) {
    let served = |p: &Pair| p.similarity >= threshold && (!guards || p.compatible);
    let tp = pairs.iter().filter(|p| p.hit && served(p)).count();
    let fp = pairs.iter().filter(|p| !p.hit && served(p)).count();
    let positives = pairs.iter().filter(|p| p.hit).count();
    let precision = if tp + fp == 0 {
        1.0
    } else {
        tp as f64 / (tp + fp) as f64
    };
    (precision, tp as f64 / positives as f64, fp)
}

#[test]
fn precision_at_the_default_threshold_is_at_least_0_99() {
    let Some(e) = loom_inference::testing::embedder() else {
        return;
    };
    let pairs = pairs(&e);
    assert!(pairs.len() >= 300, "{} pairs", pairs.len());
    eprintln!("threshold  precision recall false-hits | cosine alone: precision recall");
    for t in [0.75f32, 0.8, 0.85, 0.88, 0.9, 0.92, 0.95, 0.97] {
        let (p, r, fp) = score(&pairs, t, true);
        let (p0, r0, _) = score(&pairs, t, false);
        eprintln!("{t:.2}       {p:.3}     {r:.3}  {fp:>3}        | {p0:.3}     {r0:.3}");
    }
    // Which kinds the guards catch: near-misses the embedding alone would serve.
    let t = DEFAULT_THRESHOLD as f32;
    let mut kinds: Vec<&str> = pairs.iter().map(|p| p.kind.as_str()).collect();
    kinds.sort_unstable();
    kinds.dedup();
    for k in kinds {
        let of: Vec<&Pair> = pairs.iter().filter(|p| p.kind == k).collect();
        let close = of.iter().filter(|p| p.similarity >= t).count();
        let served = of
            .iter()
            .filter(|p| p.similarity >= t && p.compatible)
            .count();
        eprintln!(
            "{k:<15} {:>3} pairs, {close:>3} at or above {t}, {served:>3} served",
            of.len()
        );
    }
    if std::env::var_os("LOOM_EVAL_VERBOSE").is_some() {
        for (p, l) in pairs
            .iter()
            .zip(include_str!("../eval/pairs.jsonl").lines())
        {
            let wrong = (p.hit && p.similarity >= t && !p.compatible)
                || (!p.hit && p.similarity >= 0.8 && p.compatible);
            if wrong {
                eprintln!("{:.3} {l}", p.similarity);
            }
        }
    }
    let (precision, recall, _) = score(&pairs, t, true);
    assert!(
        precision >= 0.99,
        "precision {precision:.3} (recall {recall:.3}) at the default threshold {t}"
    );
    // The guards must not cost most paraphrases.
    assert!(recall >= 0.5, "recall {recall:.3} at {t}");
}

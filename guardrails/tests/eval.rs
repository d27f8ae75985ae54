//! Precision and recall of the guardrails on the labelled sets in
//! `guardrails/eval/` (built by `scripts/guardrail-eval-data`). Fails when
//! PII precision or recall of any type falls under 0.95, or injection
//! precision under 0.95 at `sensitivity: medium`.
//!
//! `cargo test -p loom-guardrails --test eval -- --nocapture` prints the table.

use std::collections::BTreeMap;

use loom_guardrails::injection::{InjectionRules, Sensitivity};
use loom_guardrails::pii::PiiDetector;
use serde_json::Value;

fn rows(name: &str) -> Vec<Value> {
    let path = format!("{}/eval/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .lines()
        .map(|l| serde_json::from_str(l).expect("jsonl row"))
        .collect()
}

#[derive(Default, Debug)]
struct Counts {
    tp: u32,
    fp: u32,
    fn_: u32,
}

impl Counts {
    fn precision(&self) -> f64 {
        f64::from(self.tp) / f64::from((self.tp + self.fp).max(1))
    }
    fn recall(&self) -> f64 {
        f64::from(self.tp) / f64::from((self.tp + self.fn_).max(1))
    }
}

#[test]
fn pii_precision_and_recall_per_type() {
    let detector = PiiDetector::all();
    let mut by_type: BTreeMap<String, Counts> = BTreeMap::new();
    let mut misses = Vec::new();
    for row in rows("pii.jsonl") {
        let text = row["text"].as_str().expect("text");
        let labels: Vec<(String, usize, usize)> = row["spans"]
            .as_array()
            .expect("spans")
            .iter()
            .map(|s| {
                (
                    s["type"].as_str().expect("type").to_owned(),
                    s["start"].as_u64().expect("start") as usize,
                    s["end"].as_u64().expect("end") as usize,
                )
            })
            .collect();
        let found = detector.find(text);
        let mut matched = vec![false; labels.len()];
        for f in &found {
            let kind = detector.name(f.kind).to_owned();
            // A hit covers at least half of a label of its type.
            let hit = labels.iter().enumerate().find(|(i, (t, s, e))| {
                !matched[*i]
                    && *t == kind
                    && f.start.max(*s) < f.end.min(*e)
                    && 2 * (f.end.min(*e) - f.start.max(*s)) >= e - s
            });
            let c = by_type.entry(kind.clone()).or_default();
            match hit {
                Some((i, _)) => {
                    matched[i] = true;
                    c.tp += 1;
                }
                None => {
                    c.fp += 1;
                    misses.push(format!(
                        "false {kind}: {:?} in {text:?}",
                        &text[f.start..f.end]
                    ));
                }
            }
        }
        for (i, (t, s, e)) in labels.iter().enumerate() {
            if !matched[i] {
                by_type.entry(t.clone()).or_default().fn_ += 1;
                misses.push(format!("missed {t}: {:?} in {text:?}", &text[*s..*e]));
            }
        }
    }
    println!("PII        precision  recall   tp  fp  fn");
    let mut total = Counts::default();
    for (t, c) in &by_type {
        println!(
            "{t:<10} {:>9.3} {:>7.3} {:>4} {:>3} {:>3}",
            c.precision(),
            c.recall(),
            c.tp,
            c.fp,
            c.fn_
        );
        total.tp += c.tp;
        total.fp += c.fp;
        total.fn_ += c.fn_;
    }
    println!(
        "{:<10} {:>9.3} {:>7.3} {:>4} {:>3} {:>3}",
        "all",
        total.precision(),
        total.recall(),
        total.tp,
        total.fp,
        total.fn_
    );
    for m in misses.iter().take(40) {
        println!("  {m}");
    }
    for (t, c) in &by_type {
        assert!(c.precision() >= 0.95 && c.recall() >= 0.95, "{t}: {c:?}");
    }
}

#[test]
fn injection_precision_at_each_sensitivity() {
    let rules = InjectionRules::new();
    let data = rows("injection.jsonl");
    let scored: Vec<(f32, bool, &str, &str)> = data
        .iter()
        .map(|r| {
            let text = r["text"].as_str().expect("text");
            (
                rules.assess(text).score,
                r["label"].as_u64() == Some(1),
                r["source"].as_str().unwrap_or(""),
                text,
            )
        })
        .collect();
    println!("injection  threshold precision recall   tp  fp  fn");
    let mut medium = Counts::default();
    for (name, s) in [
        ("low", Sensitivity::Low),
        ("medium", Sensitivity::Medium),
        ("high", Sensitivity::High),
    ] {
        let t = s.threshold();
        let mut c = Counts::default();
        for (score, attack, _, _) in &scored {
            match (*score >= t, *attack) {
                (true, true) => c.tp += 1,
                (true, false) => c.fp += 1,
                (false, true) => c.fn_ += 1,
                (false, false) => {}
            }
        }
        println!(
            "{name:<10} {t:>9.2} {:>9.3} {:>6.3} {:>4} {:>3} {:>3}",
            c.precision(),
            c.recall(),
            c.tp,
            c.fp,
            c.fn_
        );
        if s == Sensitivity::Medium {
            medium = c;
        }
    }
    // Recall by source family at medium.
    let mut by_source: BTreeMap<String, (u32, u32)> = BTreeMap::new();
    for (score, attack, source, _) in &scored {
        if *attack {
            let family = source
                .split(['+', '/'])
                .take(2)
                .collect::<Vec<_>>()
                .join("/");
            let e = by_source.entry(family).or_default();
            e.1 += 1;
            if *score >= Sensitivity::Medium.threshold() {
                e.0 += 1;
            }
        }
    }
    for (s, (hit, n)) in &by_source {
        println!("  recall {s:<40} {hit}/{n}");
    }
    for (score, attack, source, text) in &scored {
        if !*attack && *score >= Sensitivity::Medium.threshold() {
            println!("  false positive ({score:.2}, {source}): {text:?}");
        }
    }
    if std::env::var_os("LOOM_EVAL_MISSES").is_some() {
        for (score, attack, source, text) in &scored {
            if *attack && *score < Sensitivity::Medium.threshold() && !source.contains("inthewild")
            {
                println!(
                    "  missed ({score:.2}, {source}): {:?}",
                    text.chars().take(120).collect::<String>()
                );
            }
        }
    }
    assert!(medium.precision() >= 0.95, "{medium:?}");
}

#[test]
fn injection_rules_classifier_and_combined() {
    use loom_guardrails::classifier::{LinearHead, evidence};
    let Some(embedder) = loom_inference::testing::embedder() else {
        return;
    };
    let head = LinearHead::injection();
    let rules = InjectionRules::new();
    let t = Sensitivity::Medium.threshold();
    let rows = rows("injection.jsonl");
    let mut counts: BTreeMap<&str, Counts> = BTreeMap::new();
    let mut wild = (0, 0, 0);
    for r in &rows {
        let text = r["text"].as_str().expect("text");
        let attack = r["label"].as_u64() == Some(1);
        let rule_score = rules.assess(text).score;
        let p = head.probability(&embedder.embed(text).expect("embed"));
        let combined = 1.0 - (1.0 - rule_score) * (1.0 - evidence(p));
        for (name, hit) in [
            ("rules alone (medium)", rule_score >= t),
            ("classifier alone (p >= 0.9)", p >= 0.9),
            ("classifier alone (p >= 0.7)", p >= 0.7),
            ("combined (medium)", combined >= t),
        ] {
            let c = counts.entry(name).or_default();
            match (hit, attack) {
                (true, true) => c.tp += 1,
                (true, false) => c.fp += 1,
                (false, true) => c.fn_ += 1,
                (false, false) => {}
            }
        }
        if r["source"]
            .as_str()
            .is_some_and(|s| s.contains("inthewild"))
        {
            wild.0 += 1;
            wild.1 += u32::from(rule_score >= t);
            wild.2 += u32::from(combined >= t);
        }
    }
    println!("injection                    precision recall   tp  fp  fn");
    for (name, c) in &counts {
        println!(
            "{name:<28} {:>9.3} {:>6.3} {:>4} {:>3} {:>3}",
            c.precision(),
            c.recall(),
            c.tp,
            c.fp,
            c.fn_
        );
    }
    println!(
        "in-the-wild recall: rules {}/{n}, combined {}/{n}",
        wild.1,
        wild.2,
        n = wild.0
    );
    let combined = &counts["combined (medium)"];
    assert!(combined.precision() >= 0.95, "{combined:?}");
}

#[test]
fn content_rules_classifier_and_combined() {
    use loom_guardrails::classifier::{content_heads, evidence};
    use loom_guardrails::content::{Category, ContentRules};
    let Some(embedder) = loom_inference::testing::embedder() else {
        return;
    };
    let heads = content_heads();
    let rules = ContentRules::new();
    // Held-out content data, plus the injection set's hard benign prompts
    // (no category) as more negatives.
    let mut data: Vec<(String, Vec<String>)> = rows("content.jsonl")
        .iter()
        .map(|r| {
            (
                r["text"].as_str().expect("text").to_owned(),
                r["categories"]
                    .as_array()
                    .expect("categories")
                    .iter()
                    .filter_map(|c| c.as_str().map(str::to_owned))
                    .collect(),
            )
        })
        .collect();
    data.extend(
        rows("injection.jsonl")
            .iter()
            .filter(|r| r["label"].as_u64() == Some(0))
            .map(|r| (r["text"].as_str().expect("text").to_owned(), Vec::new())),
    );
    let mut table: BTreeMap<(String, &str), Counts> = BTreeMap::new();
    for (text, labels) in &data {
        let (scores, _) = rules.assess(text);
        let v = embedder.embed(text).expect("embed");
        for c in Category::ALL {
            let rule = scores
                .iter()
                .find(|s| s.category == c)
                .map_or(0.0, |s| s.score);
            let p = heads
                .iter()
                .find(|(n, _)| n == c.name())
                .map_or(0.0, |(_, h)| h.probability(&v));
            let e = evidence(p);
            let truth = labels.iter().any(|l| l == c.name());
            for (how, hit) in [
                ("rules", rule >= 0.6),
                ("classifier", e >= 0.6),
                ("combined", 1.0 - (1.0 - rule) * (1.0 - e) >= 0.6),
            ] {
                let k = table.entry((c.name().to_owned(), how)).or_default();
                match (hit, truth) {
                    (true, true) => k.tp += 1,
                    (true, false) => k.fp += 1,
                    (false, true) => k.fn_ += 1,
                    (false, false) => {}
                }
            }
        }
    }
    println!(
        "content ({} texts)        precision recall   tp  fp  fn",
        data.len()
    );
    let mut recall = (0, 0);
    for ((cat, how), c) in &table {
        println!(
            "{cat:<11} {how:<11} {:>9.3} {:>6.3} {:>4} {:>3} {:>3}",
            c.precision(),
            c.recall(),
            c.tp,
            c.fp,
            c.fn_
        );
        match *how {
            "rules" => recall.0 += c.tp,
            "combined" => recall.1 += c.tp,
            _ => {}
        }
    }
    assert!(
        recall.1 > recall.0,
        "the classifier adds nothing: {recall:?}"
    );
}

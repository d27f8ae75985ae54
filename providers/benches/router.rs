//! Router decision cost with ten providers serving one model: candidate
//! lookup plus ordering by each strategy (breaker checks included).
//!
//!     cargo bench -p loom-providers --bench router

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use loom_config::AiGateway;
use loom_providers::{HttpClient, Registry, StatsBook};

fn registry(strategy: &str) -> Registry {
    let mut yaml = String::from("providers:\n");
    let mut routing = format!("routing:\n  strategy: {strategy}\n  providers:\n");
    for i in 0..10 {
        yaml.push_str(&format!(
            "  - {{name: p{i}, type: mock, models: [gpt-4o], priority: {i}}}\n"
        ));
        routing.push_str(&format!(
            "    - {{name: p{i}, weight: {}, cost_per_1k_input: 0.0{}, cost_per_1k_output: 0.0{}}}\n",
            i + 1,
            9 - i,
            9 - i
        ));
    }
    yaml.push_str(&routing);
    let cfg: AiGateway = serde_norway::from_str(&yaml).unwrap_or_else(|e| panic!("{e}"));
    let client = HttpClient::new().unwrap_or_else(|e| panic!("{e}"));
    Registry::build(&cfg.providers(), &client, &StatsBook::default())
        .unwrap_or_else(|e| panic!("{e}"))
}

fn benches(c: &mut Criterion) {
    for strategy in ["priority", "round_robin", "weighted", "cost", "latency"] {
        let r = registry(strategy);
        c.bench_function(&format!("route 10 providers: {strategy}"), |b| {
            b.iter(|| {
                let candidates = r.candidates(black_box("gpt-4o")).unwrap_or_default();
                black_box(r.router().plan("gpt-4o", candidates, 2000, Some(256)).ok())
            })
        });
    }
}

criterion_group!(router, benches);
criterion_main!(router);

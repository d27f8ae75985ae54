//! Replays the corpora of every fuzz target (`fuzz/corpus/<target>`): the
//! seeds and every input a fuzz run found to crash stay regression tests on
//! every build. One file for all targets: `loom-providers` depends on each
//! crate that has a `fuzzing` entry point.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("corpus folder") {
        let path = entry.expect("corpus entry").path();
        run(&std::fs::read(&path).expect("corpus file"));
        n += 1;
    }
    assert!(n > 0, "{} holds no input", dir.display());
}

#[test]
fn request_head_corpus() {
    replay("request_head", loom_http::fuzzing::request);
}

#[test]
fn response_head_corpus() {
    replay("response_head", loom_http::fuzzing::response);
}

#[test]
fn sse_corpus() {
    replay("sse", loom_providers::fuzzing::sse);
}

#[test]
fn usage_corpus() {
    replay("usage", loom_providers::fuzzing::usage);
}

#[test]
fn chat_head_corpus() {
    replay("chat_head", loom_models::fuzzing::chat_head);
}

#[test]
fn anthropic_corpus() {
    replay("anthropic", loom_providers::fuzzing::anthropic);
}

#[test]
fn gemini_corpus() {
    replay("gemini", loom_providers::fuzzing::gemini);
}

#[test]
fn config_corpus() {
    replay("config", loom_config::fuzzing::load);
}

#[test]
fn passthrough_corpus() {
    replay("passthrough", loom_providers::fuzzing::passthrough);
}

//! Replays the fuzz corpora of this crate's targets (`fuzz/corpus/<target>`):
//! the seeds and every input a fuzz run found to crash stay regression tests.

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
fn chat_head_corpus() {
    replay("chat_head", loom_models::fuzzing::chat_head);
}

//! The local model for tests that need it: loaded from `$LOOM_MODELS` or
//! `~/.cache/loom/models`. Outside CI, a machine without it skips with a
//! message; in CI (`CI=true`) its absence fails.

use std::path::PathBuf;

use loom_semantic_cache::embed::{LocalEmbedder, ModelFiles};

pub fn embedder() -> Option<LocalEmbedder> {
    let dir = std::env::var_os("LOOM_MODELS")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/loom/models")))
        .expect("LOOM_MODELS or HOME");
    let files = ModelFiles::in_dir(&dir);
    if !files.model.exists() {
        assert!(
            std::env::var("CI").is_err(),
            "{}: missing in CI (scripts/fetch-models)",
            files.model.display()
        );
        eprintln!(
            "SKIPPED: {} not found; run scripts/fetch-models",
            files.model.display()
        );
        return None;
    }
    Some(LocalEmbedder::load(&files).expect("the model loads"))
}

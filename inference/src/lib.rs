//! Local model inference on the CPU with ONNX Runtime, shared by the
//! semantic cache (the sentence embedder) and the guardrails (an operator's
//! sequence classifier): model and tokenizer loading, the embedder, the
//! classifier, and the worker thread that runs embeddings off the async
//! runtime. Nothing here knows about caching or guardrails.

pub mod batch;
pub mod classify;
pub mod embed;

/// For tests and benchmarks of any crate that need the real model.
#[doc(hidden)]
pub mod testing {
    use std::path::PathBuf;

    use crate::embed::{LocalEmbedder, ModelFiles};

    /// The models folder: `$LOOM_MODELS`, else `~/.cache/loom/models`.
    pub fn models_dir() -> PathBuf {
        std::env::var_os("LOOM_MODELS")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/loom/models"))
            })
            .unwrap_or_else(|| PathBuf::from(".cache/loom/models"))
    }

    /// The local embedder. Outside CI, a machine without the model skips
    /// with a message (`None`); in CI (`CI=true`) its absence fails.
    pub fn embedder() -> Option<LocalEmbedder> {
        let files = ModelFiles::in_dir(&models_dir());
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
}

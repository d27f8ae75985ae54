//! A text classifier the operator brings: any ONNX sequence-classification
//! model with its `tokenizer.json` (Prompt Guard- or DeBERTa-style models
//! exported from Hugging Face), run like the local embedder. The
//! probability reported is the softmax mass of the labels named positive
//! (`INJECTION`, `JAILBREAK`… read from the folder's `config.json`
//! `id2label`; label index 1 when there is no such file).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ort::session::Session;
use ort::value::Tensor;
use tokenizers::Tokenizer;

use crate::embed::{EmbedError, load_runtime, load_session, load_tokenizer, require_files};

/// A loaded sequence classifier.
pub struct SequenceClassifier {
    tokenizer: Tokenizer,
    session: Mutex<Session>,
    /// Model inputs it declares, among `input_ids`, `attention_mask`, `token_type_ids`.
    inputs: Vec<String>,
    output: String,
    /// Label indices counted as positive.
    positive: Vec<usize>,
}

impl std::fmt::Debug for SequenceClassifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SequenceClassifier")
            .field("inputs", &self.inputs)
            .field("positive", &self.positive)
            .finish_non_exhaustive()
    }
}

impl SequenceClassifier {
    /// Loads `dir/model.onnx` and `dir/tokenizer.json` with the ONNX Runtime
    /// library at `runtime`; `positive` names the labels that count (case
    /// does not matter).
    pub fn load(
        dir: &Path,
        runtime: &Path,
        positive: &[String],
    ) -> Result<SequenceClassifier, EmbedError> {
        let model = dir.join("model.onnx");
        let tok = dir.join("tokenizer.json");
        require_files(&[&model, &tok])?;
        let env = load_runtime(runtime)?;
        let tokenizer = load_tokenizer(&tok, 512)?;
        let session = load_session(env, &model)?;
        let load = |path: &PathBuf, detail: String| EmbedError::Load {
            path: path.clone(),
            detail,
        };
        let inputs: Vec<String> = session
            .inputs()
            .iter()
            .map(|i| i.name().to_owned())
            .filter(|n| {
                matches!(
                    n.as_str(),
                    "input_ids" | "attention_mask" | "token_type_ids"
                )
            })
            .collect();
        if !inputs.iter().any(|n| n == "input_ids") {
            return Err(load(&model, "the model takes no input_ids".into()));
        }
        let output = session
            .outputs()
            .first()
            .map(|o| o.name().to_owned())
            .ok_or_else(|| load(&model, "the model has no output".into()))?;
        let positive = positive_labels(&dir.join("config.json"), positive);
        Ok(SequenceClassifier {
            tokenizer,
            session: Mutex::new(session),
            inputs,
            output,
            positive,
        })
    }

    /// The probability that `text` belongs to a positive label.
    pub fn probability(&self, text: &str) -> Result<f32, EmbedError> {
        let run = |e: String| EmbedError::Run(e);
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| run(e.to_string()))?;
        let n = enc.get_ids().len();
        let mut feed: Vec<(String, Tensor<i64>)> = Vec::with_capacity(self.inputs.len());
        for name in &self.inputs {
            let v: Vec<i64> = match name.as_str() {
                "input_ids" => enc.get_ids().iter().map(|&x| i64::from(x)).collect(),
                "attention_mask" => enc
                    .get_attention_mask()
                    .iter()
                    .map(|&x| i64::from(x))
                    .collect(),
                _ => enc.get_type_ids().iter().map(|&x| i64::from(x)).collect(),
            };
            feed.push((
                name.clone(),
                Tensor::from_array(([1usize, n], v)).map_err(|e| run(e.to_string()))?,
            ));
        }
        let mut session = self
            .session
            .lock()
            .map_err(|_| run("the session lock is poisoned".into()))?;
        let outputs = session.run(feed).map_err(|e| run(e.to_string()))?;
        let (_, logits) = outputs[self.output.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(|e| run(e.to_string()))?;
        Ok(positive_mass(logits, &self.positive))
    }
}

/// Softmax of the first row of logits, summed over the positive indices.
fn positive_mass(logits: &[f32], positive: &[usize]) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
    let total: f32 = exps.iter().sum();
    if total <= 0.0 {
        return 0.0;
    }
    positive.iter().filter_map(|&i| exps.get(i)).sum::<f32>() / total
}

/// Indices of the positive labels by `id2label` in `config.json`, or `[1]`.
fn positive_labels(config: &Path, names: &[String]) -> Vec<usize> {
    let parsed = std::fs::read_to_string(config)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok());
    let Some(map) = parsed.as_ref().and_then(|v| v["id2label"].as_object()) else {
        return vec![1];
    };
    let found: Vec<usize> = map
        .iter()
        .filter(|(_, label)| {
            label
                .as_str()
                .is_some_and(|l| names.iter().any(|n| n.eq_ignore_ascii_case(l)))
        })
        .filter_map(|(i, _)| i.parse().ok())
        .collect();
    if found.is_empty() { vec![1] } else { found }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn softmax_mass_of_positive_labels() {
        let p = positive_mass(&[0.0, 0.0, 0.0, 0.0], &[1, 2]);
        assert!((p - 0.5).abs() < 1e-6);
        assert!(positive_mass(&[10.0, -10.0], &[1]) < 1e-6);
        assert_eq!(positive_mass(&[1.0], &[3]), 0.0);
    }
}

//! The ML side of the injection check: a logistic-regression head over a
//! sentence embedding. The head's weights are trained by
//! `scripts/train-guardrail-classifier` (sources and licences there) and
//! committed in `guardrails/models/`; the embedding comes from whatever
//! [`Embedder`] the gateway provides (the local all-MiniLM-L6-v2 model), so
//! this crate carries no inference runtime.

use serde_json::Value;

/// Turns text into a unit-length sentence embedding.
pub trait Embedder: Send + Sync {
    /// The embedding of `text`; an error is a reason, for the log.
    fn embed(&self, text: &str) -> Result<Vec<f32>, String>;
}

/// A whole-text classifier (a model the operator brings).
pub trait TextClassifier: Send + Sync {
    /// The probability that `text` is what the model detects.
    fn probability(&self, text: &str) -> Result<f32, String>;
}

/// How the injection check gets its probability.
#[derive(Clone)]
pub enum Scorer {
    /// The built-in head over the sentence embedder.
    Head(std::sync::Arc<dyn Embedder>, LinearHead),
    /// A model of the operator's own.
    Model(std::sync::Arc<dyn TextClassifier>),
}

impl Scorer {
    /// The probability for `text`.
    pub fn probability(&self, text: &str) -> Result<f32, String> {
        match self {
            Scorer::Head(e, h) => e.embed(text).map(|v| h.probability(&v)),
            Scorer::Model(m) => m.probability(text),
        }
    }
}

/// A linear classifier over embeddings: `sigmoid(w · x + b)`.
#[derive(Debug, Clone)]
pub struct LinearHead {
    weights: Vec<f32>,
    bias: f32,
}

/// The injection head trained for all-MiniLM-L6-v2 (384 dimensions).
const INJECTION_HEAD: &str = include_str!("../models/injection-head.json");

/// One head per content category, trained the same way.
const CONTENT_HEADS: &str = include_str!("../models/content-heads.json");

/// The content heads, by category name (`hate`, `violence`, …).
pub fn content_heads() -> Vec<(String, LinearHead)> {
    let Ok(v) = serde_json::from_str::<Value>(CONTENT_HEADS) else {
        return Vec::new();
    };
    v["heads"]
        .as_object()
        .map(|heads| {
            heads
                .iter()
                .filter_map(|(name, h)| {
                    LinearHead::from_json(&h.to_string())
                        .ok()
                        .map(|head| (name.clone(), head))
                })
                .collect()
        })
        .unwrap_or_default()
}

impl LinearHead {
    /// Reads a head written by the training script: `{"weights": [...], "bias": b}`.
    pub fn from_json(text: &str) -> Result<LinearHead, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let weights: Vec<f32> = v["weights"]
            .as_array()
            .ok_or("no weights")?
            .iter()
            .map(|x| {
                x.as_f64()
                    .map(|f| f as f32)
                    .ok_or("a weight is not a number")
            })
            .collect::<Result<_, _>>()?;
        let bias = v["bias"].as_f64().ok_or("no bias")? as f32;
        if weights.is_empty() {
            return Err("no weights".into());
        }
        Ok(LinearHead { weights, bias })
    }

    /// The built-in prompt-injection head.
    pub fn injection() -> LinearHead {
        // Proven by the `the_builtin_head_loads` test.
        LinearHead::from_json(INJECTION_HEAD).unwrap_or(LinearHead {
            weights: vec![0.0; 384],
            bias: -10.0,
        })
    }

    /// Dimensions the head expects.
    pub fn dimensions(&self) -> usize {
        self.weights.len()
    }

    /// The probability that the embedded text is an injection.
    pub fn probability(&self, embedding: &[f32]) -> f32 {
        if embedding.len() != self.weights.len() {
            return 0.0;
        }
        let z: f32 = self
            .weights
            .iter()
            .zip(embedding)
            .map(|(w, x)| w * x)
            .sum::<f32>()
            + self.bias;
        1.0 / (1.0 + (-z).exp())
    }
}

/// The classifier's probability as evidence for the rule score: below one
/// half it says nothing; above, it counts like a rule of weight `0.8 · p`.
pub fn evidence(probability: f32) -> f32 {
    if probability < 0.5 {
        0.0
    } else {
        0.8 * probability
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_heads_load() {
        let h = LinearHead::from_json(INJECTION_HEAD).expect("committed head");
        assert_eq!(h.dimensions(), 384);
        let names: Vec<String> = content_heads().into_iter().map(|(n, _)| n).collect();
        for c in crate::content::Category::ALL {
            assert!(names.iter().any(|n| n == c.name()), "{}", c.name());
        }
    }

    #[test]
    fn probability_is_a_sigmoid_of_the_dot_product() {
        let h = LinearHead::from_json(r#"{"weights": [2.0, -1.0], "bias": 0.5}"#).expect("head");
        let p = h.probability(&[1.0, 0.5]);
        assert!((p - 1.0 / (1.0 + (-2.0f32).exp())).abs() < 1e-6, "{p}");
        assert_eq!(h.probability(&[1.0]), 0.0);
        assert!(LinearHead::from_json("{}").is_err());
        assert_eq!(evidence(0.4), 0.0);
        assert!((evidence(0.9) - 0.72).abs() < 1e-6);
    }
}

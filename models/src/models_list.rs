//! `GET /v1/models`.

use serde::{Deserialize, Serialize};

/// The model listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelList {
    pub object: String,
    pub data: Vec<ModelCard>,
}

impl ModelList {
    /// A listing of the given cards.
    pub fn new(data: Vec<ModelCard>) -> Self {
        ModelList {
            object: "list".to_owned(),
            data,
        }
    }
}

/// One model in the listing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub owned_by: String,
}

impl ModelCard {
    /// A card for `id`, served by the provider named `owned_by`.
    pub fn new(id: impl Into<String>, owned_by: impl Into<String>) -> Self {
        ModelCard {
            id: id.into(),
            object: "model".to_owned(),
            created: 0,
            owned_by: owned_by.into(),
        }
    }
}

//! OpenAI's error envelope, the shape of every error on an AI route.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `{"error": {...}}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorEnvelope {
    pub error: ErrorBody,
}

/// The inside of the envelope. `param` and `code` are always present, `null`
/// when they do not apply, as OpenAI sends them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub param: Option<String>,
    #[serde(default)]
    pub code: Option<Value>,
}

impl ErrorEnvelope {
    /// An envelope with the given message, type and optional code.
    pub fn new(message: impl Into<String>, kind: impl Into<String>, code: Option<&str>) -> Self {
        ErrorEnvelope {
            error: ErrorBody {
                message: message.into(),
                kind: kind.into(),
                param: None,
                code: code.map(|c| Value::String(c.to_owned())),
            },
        }
    }

    /// The same envelope naming the request parameter at fault.
    pub fn with_param(mut self, param: impl Into<String>) -> Self {
        self.error.param = Some(param.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_nulls_like_openai() {
        let e = ErrorEnvelope::new("bad", "invalid_request_error", None);
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"error":{"message":"bad","type":"invalid_request_error","param":null,"code":null}}"#
        );
    }
}

//! Guardrails: checks on what goes to a provider and what comes back.
//!
//! The gateway runs [`Guardrails::check_request`] after authentication and
//! limits and before the cache and the provider, and passes response text
//! through [`Guardrails::check_response`]. With no guard configured both are a
//! length check on an empty list. Prompt-injection, PII and content guards
//! implement [`Guard`].

pub mod pii;

use loom_models::chat::ChatRequest;

/// What a guard decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Let it through (possibly after the guard rewrote it).
    Allow,
    /// Refuse the request; `reason` is a low-cardinality metrics label.
    Block {
        reason: &'static str,
        message: String,
    },
}

/// One check.
pub trait Guard: Send + Sync {
    /// Inspects, and may rewrite, a request before it leaves the gateway.
    fn check_request(&self, req: &mut ChatRequest) -> Verdict;
    /// Inspects, and may rewrite, a piece of response text.
    fn check_response(&self, text: &mut String) -> Verdict;
}

/// The guards of one configuration, run in order.
#[derive(Default)]
pub struct Guardrails {
    guards: Vec<Box<dyn Guard>>,
}

impl Guardrails {
    /// Guards run in the given order; the first block wins.
    pub fn new(guards: Vec<Box<dyn Guard>>) -> Self {
        Guardrails { guards }
    }

    /// Whether any guard is configured.
    pub fn is_empty(&self) -> bool {
        self.guards.is_empty()
    }

    /// Runs every request guard.
    pub fn check_request(&self, req: &mut ChatRequest) -> Verdict {
        for g in &self.guards {
            if let v @ Verdict::Block { .. } = g.check_request(req) {
                return v;
            }
        }
        Verdict::Allow
    }

    /// Runs every response guard.
    pub fn check_response(&self, text: &mut String) -> Verdict {
        for g in &self.guards {
            if let v @ Verdict::Block { .. } = g.check_response(text) {
                return v;
            }
        }
        Verdict::Allow
    }
}

impl std::fmt::Debug for Guardrails {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guardrails")
            .field("guards", &self.guards.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct BlockWord(&'static str);
    impl Guard for BlockWord {
        fn check_request(&self, req: &mut ChatRequest) -> Verdict {
            if req.messages.iter().any(|m| m.text().contains(self.0)) {
                Verdict::Block {
                    reason: "test",
                    message: "blocked".into(),
                }
            } else {
                Verdict::Allow
            }
        }
        fn check_response(&self, _: &mut String) -> Verdict {
            Verdict::Allow
        }
    }

    #[test]
    fn first_block_wins() {
        let g = Guardrails::new(vec![Box::new(BlockWord("x"))]);
        let mut req: ChatRequest =
            serde_json::from_str(r#"{"model":"m","messages":[{"role":"user","content":"say x"}]}"#)
                .unwrap();
        assert!(matches!(g.check_request(&mut req), Verdict::Block { .. }));
        req.messages[0].content = None;
        assert_eq!(g.check_request(&mut req), Verdict::Allow);
        assert!(Guardrails::default().is_empty());
    }
}

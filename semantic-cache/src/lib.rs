//! The completion cache seam.
//!
//! The gateway asks a [`CompletionCache`] for a stored answer after guardrails
//! and before choosing a provider, and offers it each successful answer
//! afterwards. The exact-match fast path, the embedding index and its
//! structural guards, and the Qdrant and Redis backends implement this trait.

pub mod classify;
pub mod embed;
pub mod exact;
pub mod key;

use std::future::Future;
use std::pin::Pin;

use loom_models::chat::{ChatRequest, ChatResponse};

/// A stored answer and how close its request was to this one.
#[derive(Debug, Clone)]
pub struct Hit {
    pub response: ChatResponse,
    /// 1.0 for an exact match.
    pub similarity: f32,
}

/// A boxed future, so caches can be held as trait objects.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A cache of chat completions, scoped by consumer.
pub trait CompletionCache: Send + Sync {
    /// A stored answer for `req`, if one is close enough.
    fn lookup<'a>(&'a self, scope: &'a str, req: &'a ChatRequest) -> BoxFuture<'a, Option<Hit>>;
    /// Offers an answer for storage; the cache decides whether to keep it.
    fn store<'a>(
        &'a self,
        scope: &'a str,
        req: &'a ChatRequest,
        resp: &'a ChatResponse,
    ) -> BoxFuture<'a, ()>;
}

//! What a control-plane call can fail with.

/// A control-plane failure, each with the status the admin API answers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// PostgreSQL is away or did not answer: 503, nothing written.
    #[error("the key store is unavailable: {0}")]
    Unavailable(String),
    /// A field is wrong: 400 naming it.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// No such key: 404.
    #[error("no such key")]
    NotFound,
    /// The change conflicts with the stored state: 409.
    #[error("{0}")]
    Conflict(String),
}

//! The accounting crate's one error type.

/// What can go wrong in accounting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration names something unusable (a Redis address, say).
    #[error("{0}")]
    Config(String),
    /// The shared store did not answer in time or at all.
    #[error("usage store unavailable: {0}")]
    Store(String),
    /// The store refused a write as such (not for being unreachable).
    #[error("usage store rejected a write: {0}")]
    Rejected(String),
    /// A usage query names a period that cannot be read.
    #[error("invalid period {0:?}: expected day, month, YYYY-MM or YYYY-MM-DD")]
    Period(String),
}

impl From<redis::RedisError> for Error {
    fn from(e: redis::RedisError) -> Self {
        // The error text of the client names the command, never its arguments.
        Error::Store(e.to_string())
    }
}

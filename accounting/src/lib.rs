//! Consumers, token accounting, limits and rate limits.
//!
//! A request is authenticated to a [`Consumer`], admitted by the
//! [`Accountant`] (rate limits and daily/monthly limits, one store round
//! trip), and when it ends its [`UsageRecord`] is priced and added to the
//! ledger of its consumer, provider and model, per UTC day and month. The
//! [`Store`] is this process's memory or Redis shared by every replica.

mod accountant;
mod consumers;
mod error;
mod gcra;
mod limiter;
mod period;
mod prices;
mod store;
pub mod tokens;

pub use accountant::{
    Accountant, Admission, Ask, Breakdown, CacheSavings, Line, Quota, Report, human, human_into,
};
pub use consumers::{
    ANONYMOUS, Consumer, Consumers, digest_from_hex, hash_key, sha256, stored_digest, to_hex,
};
pub use error::Error;
pub use gcra::{Rate, Standing};
pub use limiter::KeyedLimiter;
pub use period::{Clock, Period, Span};
pub use prices::{Price, PriceTable, format_dollars};
pub use store::{Health, MemoryStore, RedisStore, Refusal, Store, redis_connection};

/// What one finished AI request used, as accounting needs it.
#[derive(Debug, Clone)]
pub struct UsageRecord<'a> {
    pub consumer: &'a Consumer,
    pub provider: &'a str,
    /// The model as the provider was asked for it (after mapping): what it bills.
    pub model: &'a str,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Prompt tokens served from the provider's prompt cache.
    pub cached_tokens: u64,
    /// Prompt tokens written to the provider's prompt cache.
    pub cache_write_tokens: u64,
    /// True when Loom counted the tokens because the provider reported none.
    pub estimated: bool,
}

//! What the libraries read: the configuration with its aliases, precedence
//! rules, fallbacks and defaults applied, built in `config/src/resolve.rs`.
//!
//! No library crate reads the YAML document (`crate::schema`): the provider
//! registry reads [`Providers`], the accountant [`Accounting`] and
//! [`ConsumerEntry`], the guardrails [`Guardrails`], the reverse proxy
//! [`Upstream`]. Sections whose YAML shape needs no resolution (an upstream,
//! a guardrail section, a consumer, a Redis connection) are defined here and
//! embedded by the document as they are; a test
//! (`config/tests/boundaries.rs`) keeps the libraries to this module.

mod accounting;
mod consumers;
mod control;
mod guardrails;
mod providers;
mod upstream;

pub use crate::resilience::{CircuitBreaker, Retry, UpstreamBreaker};
pub use crate::units::{ByteSize, Duration, Pattern, Secret};
pub use accounting::*;
pub use consumers::*;
pub use control::*;
pub use guardrails::*;
pub use providers::*;
pub use upstream::*;

//! Token and request accounting.
//!
//! Every AI request ends by handing a [`UsageRecord`] to the [`UsageSink`]s
//! the gateway was configured with: today the Prometheus counters and provider
//! statistics in the gateway; per-consumer ledgers (memory and Redis), limits
//! and token rate limits attach here. A [`Consumer`] is who a request is
//! accounted to, once authentication identifies it.

use std::time::Duration;

/// Who a request is accounted to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumer {
    pub name: String,
    /// Rate-limit tier, when configured.
    pub tier: Option<String>,
}

/// The outcome of one AI request, as accounting needs it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UsageRecord {
    pub request_id: String,
    /// `None` until authentication identifies consumers.
    pub consumer: Option<String>,
    pub provider: String,
    /// The model as the client asked for it.
    pub model: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Prompt tokens served from the provider's prompt cache.
    pub cached_tokens: u64,
    /// True when the counts were estimated rather than reported by the provider.
    pub estimated: bool,
    pub duration: Duration,
}

impl UsageRecord {
    /// Prompt plus completion tokens.
    pub fn total_tokens(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }
}

/// Something that keeps usage: a ledger, a limiter, a metrics exporter.
pub trait UsageSink: Send + Sync {
    /// Records one finished request. Must not block: sinks that do I/O
    /// buffer and flush in the background.
    fn record(&self, usage: &UsageRecord);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn total_is_the_sum() {
        let r = UsageRecord {
            prompt_tokens: 7,
            completion_tokens: 5,
            ..UsageRecord::default()
        };
        assert_eq!(r.total_tokens(), 12);
    }
}

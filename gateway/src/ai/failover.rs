//! Trying the planned providers in turn, as the failover policy allows.
//!
//! Every AI endpoint runs its provider calls through [`Tries`]: each failed
//! attempt is settled (statistics, breaker, metrics), `Retry-After` is
//! honoured, and a retryable failure moves on to the next provider of the
//! plan, with a jittered back-off when the same provider is all there is.

use std::future::Future;
use std::time::{Duration, Instant};

use loom_providers::{Router, Target};

use super::ApiError;
use super::settle::{Delivery, settle};
use crate::runtime::exchange::Exchange;

/// The last failed attempt (already settled).
pub(crate) struct Failure {
    pub error: ApiError,
    pub target: Target,
    pub attempts: u32,
}

/// The attempts of one request. Handlers call the provider inline:
///
/// ```text
/// loop {
///     let target = tries.next(ex).await;
///     match within(router, call(&target)).await {
///         Ok(v) => { tries.succeeded(&target); … }
///         Err(e) => if let Some(failure) = tries.failed(ex, &target, e, …) { return … }
///     }
/// }
/// ```
pub(crate) struct Tries<'a> {
    router: &'a Router,
    plan: &'a [Target],
    pub attempts: u32,
    pub called: Instant,
    started: Instant,
}

impl<'a> Tries<'a> {
    /// Attempts over `plan` under `router`'s policy.
    pub fn new(router: &'a Router, plan: &'a [Target]) -> Tries<'a> {
        let now = Instant::now();
        Tries {
            router,
            plan,
            attempts: 0,
            called: now,
            started: now,
        }
    }

    /// The provider of the next attempt (after a back-off when it is the
    /// same as the last one).
    pub async fn next(&mut self, ex: &mut Exchange) -> Target {
        let target = self.plan[self.attempts as usize % self.plan.len()].clone();
        if self.attempts > 0 && self.plan.len() == 1 {
            backoff(self.attempts).await;
        }
        self.attempts += 1;
        ex.provider = Some(target.provider.shared_name().clone());
        self.called = Instant::now();
        target
    }

    /// Records a successful attempt.
    pub fn succeeded(&self, target: &Target) {
        target.provider.stats().record_ttfb(self.called.elapsed());
    }

    /// Settles a failed attempt. `None`: try the next provider; `Some`: stop
    /// and answer with this failure.
    pub fn failed(
        &self,
        ex: &mut Exchange,
        target: Target,
        e: loom_providers::Error,
        client_model: &str,
        stream: bool,
    ) -> Option<Failure> {
        let in_time = self.started.elapsed() < self.router.policy().deadline;
        let retry =
            in_time && self.attempts < self.router.attempts() && self.router.should_retry(&e);
        if let Some(d) = e.retry_after() {
            target.provider.stats().back_off(d);
        }
        let error = ApiError::from(e);
        let status = error.status().as_u16();
        settle(
            ex,
            &target.provider,
            client_model,
            &target.model,
            self.called.elapsed(),
            status,
            None,
            if stream {
                Delivery::Stream
            } else {
                Delivery::Whole
            },
        );
        if !retry {
            return Some(Failure {
                error,
                target,
                attempts: self.attempts,
            });
        }
        let next = &self.plan[self.attempts as usize % self.plan.len()];
        ex.shared()
            .metrics
            .failover(target.provider.name(), next.provider.name(), error.label());
        tracing::info!(
            request_id = %ex.request_id,
            from = target.provider.name(),
            to = next.provider.name(),
            reason = error.label(),
            "failing over"
        );
        None
    }
}

/// One attempt, within the failover policy's per-attempt timeout when
/// failover is on (the provider's own timeout applies otherwise).
pub(crate) async fn within<T>(
    router: &Router,
    provider: &str,
    attempt: impl Future<Output = Result<T, loom_providers::Error>>,
) -> Result<T, loom_providers::Error> {
    let policy = router.policy();
    if !policy.enabled {
        return attempt.await;
    }
    match tokio::time::timeout(policy.attempt_timeout, attempt).await {
        Ok(r) => r,
        Err(_) => Err(loom_providers::Error::Timeout {
            provider: provider.to_owned(),
        }),
    }
}

/// Jittered exponential back-off before retrying the same provider.
async fn backoff(attempt: u32) {
    let base = 50u64 << attempt.min(6);
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()))
        % base.max(1);
    tokio::time::sleep(Duration::from_millis(base / 2 + jitter)).await;
}

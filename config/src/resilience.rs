//! Resilience settings in one vocabulary: the proxy's upstream circuit
//! breaker and the providers' circuit breaker, the proxy's retries and the
//! AI failover.
//!
//! | idea | key | unit |
//! |---|---|---|
//! | tries in all, the first included | `attempts` | count |
//! | time for one try | `attempt_timeout` | duration |
//! | time for all tries together | `deadline` | duration |
//! | failure share that opens a breaker | `failure_percent` | percent, 1–100 |
//! | requests in the window before the share counts | `min_requests` | count |
//! | failures in a row that open a breaker sooner | `consecutive_failures` | count |
//! | how long an open breaker refuses | `open_for` | duration |
//!
//! The spellings used before (`max_retries`, `per_try_timeout`, `timeout`,
//! `failure_rate`, `failure_threshold`, `cooldown`) are still read, each in
//! the unit it had where it was used; [`Spellings`] remembers them so that
//! `loom validate` can warn that they are deprecated.

use serde::{Deserialize, Serialize};

use crate::units::Duration;

/// One deprecated spelling met in a section: the key written and the key
/// that replaces it.
#[derive(Debug, Clone, Copy)]
pub struct Spelling {
    pub old: &'static str,
    pub new: &'static str,
}

/// `old` is the deprecated spelling of `new`.
const fn renamed(old: &'static str, new: &'static str) -> Spelling {
    Spelling { old, new }
}

/// The deprecated spellings a section was written with. Two sections that
/// say the same thing in different words are equal.
#[derive(Debug, Clone, Default)]
pub struct Spellings(pub Vec<Spelling>);

impl PartialEq for Spellings {
    fn eq(&self, _: &Spellings) -> bool {
        true
    }
}
impl Eq for Spellings {}

/// Picks the canonical key's value, or the deprecated one's (converted),
/// refusing both at once.
fn either<T, U>(
    new: Option<T>,
    old: Option<U>,
    names: Spelling,
    convert: impl FnOnce(U) -> Result<T, String>,
    spellings: &mut Spellings,
) -> Result<Option<T>, String> {
    match (new, old) {
        (Some(_), Some(_)) => Err(format!(
            "`{}` and its deprecated spelling `{}` are both set; keep `{}`",
            names.new, names.old, names.new
        )),
        (Some(v), None) => Ok(Some(v)),
        (None, Some(v)) => {
            spellings.0.push(names);
            convert(v).map(Some)
        }
        (None, None) => Ok(None),
    }
}

fn same<T>(v: T) -> Result<T, String> {
    Ok(v)
}

/// `routes[].retry`: the proxy's retries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(try_from = "RawRetry")]
pub struct Retry {
    /// Tries in all, the first included.
    pub attempts: u32,
    /// What is retried: `connect_failure`, `reset`, `timeout`, `5xx`, or
    /// status codes.
    pub on: Vec<String>,
    /// `idempotent` (GET, HEAD, OPTIONS, PUT, DELETE, TRACE) or `all`.
    pub methods: crate::schema::RetryMethods,
    /// Time for each try's response headers; the upstream's `timeout` when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt_timeout: Option<Duration>,
    /// Time for all tries together.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Duration>,
    /// Retries may add at most this share of the route's requests (per 10 s).
    pub budget_percent: u32,
    /// Retries always allowed per 10 s, whatever the share.
    pub min_retries: u32,
    #[serde(skip)]
    pub spellings: Spellings,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    attempts: Option<u32>,
    on: Option<Vec<String>>,
    #[serde(default)]
    methods: crate::schema::RetryMethods,
    attempt_timeout: Option<Duration>,
    per_try_timeout: Option<Duration>,
    deadline: Option<Duration>,
    timeout: Option<Duration>,
    budget_percent: Option<u32>,
    min_retries: Option<u32>,
}

impl TryFrom<RawRetry> for Retry {
    type Error = String;
    fn try_from(r: RawRetry) -> Result<Retry, String> {
        let mut sp = Spellings::default();
        let attempt_timeout = either(
            r.attempt_timeout,
            r.per_try_timeout,
            renamed("per_try_timeout", "attempt_timeout"),
            same,
            &mut sp,
        )?;
        let deadline = either(
            r.deadline,
            r.timeout,
            renamed("timeout", "deadline"),
            same,
            &mut sp,
        )?;
        Ok(Retry {
            attempts: r.attempts.unwrap_or(2),
            on: r.on.unwrap_or_else(|| {
                ["connect_failure", "reset", "502", "503", "504"]
                    .map(str::to_owned)
                    .to_vec()
            }),
            methods: r.methods,
            attempt_timeout,
            deadline,
            budget_percent: r.budget_percent.unwrap_or(20),
            min_retries: r.min_retries.unwrap_or(3),
            spellings: sp,
        })
    }
}

/// `upstreams[].circuit_breaker`: the proxy's breaker of one upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(try_from = "RawUpstreamBreaker")]
pub struct UpstreamBreaker {
    /// Requests waiting for the upstream's answer at once; beyond: 503.
    pub max_pending: usize,
    /// Percent of failed requests over `window` that opens the breaker.
    pub failure_percent: u32,
    /// Requests needed in the window before the share counts.
    pub min_requests: u32,
    pub window: Duration,
    /// How long an open breaker refuses before it lets a probe through.
    pub open_for: Duration,
    #[serde(skip)]
    pub spellings: Spellings,
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawUpstreamBreaker {
    max_pending: Option<usize>,
    failure_percent: Option<u32>,
    /// Percent, as before.
    failure_rate: Option<u32>,
    min_requests: Option<u32>,
    window: Option<Duration>,
    open_for: Option<Duration>,
    cooldown: Option<Duration>,
}

impl TryFrom<RawUpstreamBreaker> for UpstreamBreaker {
    type Error = String;
    fn try_from(r: RawUpstreamBreaker) -> Result<UpstreamBreaker, String> {
        let mut sp = Spellings::default();
        let failure_percent = either(
            r.failure_percent,
            r.failure_rate,
            renamed("failure_rate", "failure_percent"),
            same,
            &mut sp,
        )?;
        let open_for = either(
            r.open_for,
            r.cooldown,
            renamed("cooldown", "open_for"),
            same,
            &mut sp,
        )?;
        Ok(UpstreamBreaker {
            max_pending: r.max_pending.unwrap_or(1024),
            failure_percent: failure_percent.unwrap_or(50),
            min_requests: r.min_requests.unwrap_or(20),
            window: r.window.unwrap_or(Duration::from_secs(10)),
            open_for: open_for.unwrap_or(Duration::from_secs(30)),
            spellings: sp,
        })
    }
}

/// `ai_gateway.routing.circuit_breaker`: each provider's breaker (and each
/// model's at a provider). It opens when the failure share over the last
/// 10 seconds reaches `failure_percent`: on the share alone once
/// `min_requests` came, or sooner after `consecutive_failures` refusals in
/// a row. It never opens at a share below `failure_percent`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(try_from = "RawCircuitBreaker")]
pub struct CircuitBreaker {
    /// Refusals in a row that open the circuit before `min_requests` came
    /// (the share must still reach `failure_percent`).
    pub consecutive_failures: u32,
    /// How long the circuit stays open before one trial request.
    pub open_for: Duration,
    /// Failure share over the last 10 seconds that opens the circuit.
    pub failure_percent: u32,
    /// Requests in those 10 seconds for the share to count on its own.
    pub min_requests: u32,
    #[serde(skip)]
    pub spellings: Spellings,
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        CircuitBreaker {
            consecutive_failures: 5,
            open_for: Duration::from_secs(30),
            failure_percent: 50,
            min_requests: 20,
            spellings: Spellings::default(),
        }
    }
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawCircuitBreaker {
    consecutive_failures: Option<u32>,
    failure_threshold: Option<u32>,
    open_for: Option<Duration>,
    cooldown: Option<Duration>,
    failure_percent: Option<u32>,
    /// A fraction (0.5), as before.
    failure_rate: Option<f64>,
    min_requests: Option<u32>,
}

impl TryFrom<RawCircuitBreaker> for CircuitBreaker {
    type Error = String;
    fn try_from(r: RawCircuitBreaker) -> Result<CircuitBreaker, String> {
        let mut sp = Spellings::default();
        let d = CircuitBreaker::default();
        let consecutive = either(
            r.consecutive_failures,
            r.failure_threshold,
            renamed("failure_threshold", "consecutive_failures"),
            same,
            &mut sp,
        )?;
        let open_for = either(
            r.open_for,
            r.cooldown,
            renamed("cooldown", "open_for"),
            same,
            &mut sp,
        )?;
        let percent = either(
            r.failure_percent,
            r.failure_rate,
            renamed("failure_rate", "failure_percent"),
            |fraction: f64| {
                if fraction > 0.0 && fraction <= 1.0 {
                    Ok((fraction * 100.0).round().max(1.0) as u32)
                } else {
                    Err(format!(
                        "failure_rate is a fraction above 0 and at most 1, not {fraction}; write failure_percent: 1 to 100 instead"
                    ))
                }
            },
            &mut sp,
        )?;
        Ok(CircuitBreaker {
            consecutive_failures: consecutive.unwrap_or(d.consecutive_failures),
            open_for: open_for.unwrap_or(d.open_for),
            failure_percent: percent.unwrap_or(d.failure_percent),
            min_requests: r.min_requests.unwrap_or(d.min_requests),
            spellings: sp,
        })
    }
}

/// `ai_gateway.routing.failover` (or `ai_gateway.failover`): trying the
/// next provider when one fails.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(try_from = "RawFailover")]
pub struct Failover {
    /// On or off; absent means what `routing.fallback` says. An explicit
    /// value wins over `fallback`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Provider answers that move on to the next provider.
    pub retry_codes: Vec<u16>,
    /// Tries in all, the first included.
    pub attempts: u32,
    /// Time for one try.
    pub attempt_timeout: Duration,
    /// Caps the time of all tries together; no new try starts after it.
    /// `attempt_timeout` × `attempts` when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Duration>,
    #[serde(skip)]
    pub spellings: Spellings,
}

impl Default for Failover {
    fn default() -> Self {
        Failover {
            enabled: None,
            retry_codes: vec![429, 500, 502, 503],
            attempts: 3,
            attempt_timeout: Duration::from_secs(30),
            deadline: None,
            spellings: Spellings::default(),
        }
    }
}

#[derive(Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct RawFailover {
    enabled: Option<bool>,
    retry_codes: Option<Vec<u16>>,
    attempts: Option<u32>,
    /// Retries after the first try, as before.
    max_retries: Option<u32>,
    attempt_timeout: Option<Duration>,
    /// One try's time, as before.
    timeout: Option<Duration>,
    deadline: Option<Duration>,
}

impl TryFrom<RawFailover> for Failover {
    type Error = String;
    fn try_from(r: RawFailover) -> Result<Failover, String> {
        let mut sp = Spellings::default();
        let d = Failover::default();
        let attempts = either(
            r.attempts,
            r.max_retries,
            renamed("max_retries", "attempts"),
            |retries: u32| Ok(retries.saturating_add(1)),
            &mut sp,
        )?;
        let attempt_timeout = either(
            r.attempt_timeout,
            r.timeout,
            renamed("timeout", "attempt_timeout"),
            same,
            &mut sp,
        )?;
        Ok(Failover {
            enabled: r.enabled,
            retry_codes: r.retry_codes.unwrap_or(d.retry_codes),
            attempts: attempts.unwrap_or(d.attempts),
            attempt_timeout: attempt_timeout.unwrap_or(d.attempt_timeout),
            deadline: r.deadline,
            spellings: sp,
        })
    }
}

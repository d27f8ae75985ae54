//! Request rate limits by key (a client address, a consumer, a header's
//! value) for route middleware: GCRA, the same arithmetic as the consumer
//! rate limits, kept in this process or in Redis for every replica.
//!
//! **Local**: the theoretical arrival time of each key in one of sixteen
//! mutex-guarded maps chosen by the key's hash (a lock is held for a map
//! probe, never across an await); keys whose allowance is full again are
//! dropped when a map grows, so idle clients cost nothing.
//!
//! **Redis**: one round trip per request to a Lua script that reads the
//! key's arrival time, decides with Redis's own clock (replicas' clocks
//! may disagree; Redis's is one), and writes it back with an expiry equal
//! to the time it takes to become full again. A round trip that fails or
//! takes longer than the timeout applies the failure mode: allow (`open`,
//! the default) or refuse (`closed`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redis::Script;
use redis::aio::ConnectionManager;

use crate::gcra::{Rate, Standing, take_request};

const SHARDS: usize = 16;
/// A shard past this many keys drops those back at full allowance.
const SHARD_SWEEP_AT: usize = 4096;

/// GCRA in Lua: KEYS[1] the key; ARGV interval (µs) and limit. Returns
/// {allowed, remaining, reset_us, retry_after_us}.
const GCRA: &str = r#"
local t = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local tau = t * limit
local nxt = tat + t
if nxt - now > tau then
  return {0, 0, math.ceil(tat - now), math.ceil(nxt - now - tau)}
end
redis.call('SET', KEYS[1], string.format('%.0f', nxt), 'PX', math.ceil((nxt - now) / 1000) + 1)
return {1, math.floor((tau - (nxt - now)) / t), math.ceil(nxt - now), 0}
"#;

/// Where the arrival times live.
enum Backend {
    Local {
        shards: Vec<Mutex<HashMap<String, f64>>>,
        epoch: Instant,
    },
    Redis {
        conn: ConnectionManager,
        script: Script,
        prefix: String,
        timeout: Duration,
        fail_open: bool,
        up: AtomicBool,
    },
}

/// A request rate limit by key.
pub struct KeyedLimiter {
    rate: Rate,
    backend: Backend,
}

impl std::fmt::Debug for KeyedLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedLimiter")
            .field("rate", &self.rate)
            .finish_non_exhaustive()
    }
}

fn shard_of(key: &str) -> usize {
    // FNV-1a: a stable, cheap spread over the shards.
    let mut h: u32 = 0x811c_9dc5;
    for b in key.as_bytes() {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h as usize % SHARDS
}

impl KeyedLimiter {
    /// A limiter kept in this process.
    pub fn local(rate: Rate) -> KeyedLimiter {
        KeyedLimiter {
            rate,
            backend: Backend::Local {
                shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
                epoch: Instant::now(),
            },
        }
    }

    /// A limiter kept in Redis under `prefix`, shared by every replica.
    pub fn redis(
        rate: Rate,
        conn: ConnectionManager,
        prefix: &str,
        timeout: Duration,
        fail_open: bool,
    ) -> KeyedLimiter {
        KeyedLimiter {
            rate,
            backend: Backend::Redis {
                conn,
                script: Script::new(GCRA),
                prefix: prefix.to_owned(),
                timeout,
                fail_open,
                up: AtomicBool::new(true),
            },
        }
    }

    /// The limit (requests per window).
    pub fn rate(&self) -> Rate {
        self.rate
    }

    /// Takes one request for `key`.
    pub async fn take(&self, key: &str) -> Standing {
        match &self.backend {
            Backend::Local { shards, epoch } => {
                let now = epoch.elapsed().as_micros() as f64;
                let mut map = shards[shard_of(key)]
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                if map.len() >= SHARD_SWEEP_AT {
                    map.retain(|_, tat| *tat > now);
                }
                let tat = map.entry(key.to_owned()).or_insert(now);
                take_request(tat, now, self.rate)
            }
            Backend::Redis {
                conn,
                script,
                prefix,
                timeout,
                fail_open,
                up,
            } => {
                let mut conn = conn.clone();
                let mut invocation = script.key(format!("{prefix}rl:{key}"));
                invocation.arg(self.rate.interval_us()).arg(self.rate.limit);
                let call = invocation.invoke_async::<(u8, u64, u64, u64)>(&mut conn);
                let answer = match tokio::time::timeout(*timeout, call).await {
                    Ok(Ok(a)) => Ok(a),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err("timed out".to_owned()),
                };
                let ok = answer.is_ok();
                if up.swap(ok, Ordering::Relaxed) != ok {
                    match &answer {
                        Ok(_) => tracing::info!("route rate limits: Redis answers again"),
                        Err(e) => {
                            tracing::warn!(error = %e, fail_open, "route rate limits: Redis unreachable")
                        }
                    }
                }
                match answer {
                    Ok((allowed, remaining, reset, retry_after)) => Standing {
                        allowed: allowed == 1,
                        remaining,
                        reset: Duration::from_micros(reset),
                        retry_after: Duration::from_micros(retry_after),
                    },
                    Err(_) => Standing {
                        allowed: *fail_open,
                        remaining: 0,
                        reset: Duration::ZERO,
                        retry_after: self.rate.window / self.rate.limit.max(1) as u32,
                    },
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_key_gets_its_own_allowance() {
        let l = KeyedLimiter::local(Rate {
            limit: 3,
            window: Duration::from_secs(60),
        });
        for _ in 0..3 {
            assert!(l.take("a").await.allowed);
        }
        let refused = l.take("a").await;
        assert!(!refused.allowed && refused.retry_after > Duration::from_secs(15));
        assert!(l.take("b").await.allowed);
    }
}

//! The shared store: Redis, so that every replica enforces one limit and
//! reports one ledger.
//!
//! Keys carry the consumer as a hash tag (`loom:{mobile-app}:d:2026-11-27`),
//! so one consumer's keys share a Redis Cluster slot and each script touches
//! a single slot. The request path makes one round trip (the admission
//! script); finished requests are written by a background task in
//! pipelines, one script call per request, after the response. While Redis is
//! unreachable those records wait in memory and are written when it
//! returns; each carries a unique id that the script marks as seen, so a
//! batch replayed after a lost reply is never counted twice.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{IntoConnectionInfo, Script};
use tokio::sync::{mpsc, oneshot};

use super::{Check, Entry, Gate, Health, Refusal, Usage};
use crate::Error;
use crate::gcra::Standing;

/// Admission: period limits, then the token budget, then one request from
/// the request rate. Nothing is taken when anything refuses.
const ADMIT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local need = tonumber(ARGV[9])
local function used(key)
  local v = redis.call('HMGET', key, 'p', 'c', '$')
  return (tonumber(v[1]) or 0) + (tonumber(v[2]) or 0), tonumber(v[3]) or 0
end
local day_t, day_c, mon_t, mon_c = 0, 0, 0, 0
if tonumber(ARGV[5]) >= 0 or tonumber(ARGV[7]) >= 0 then day_t, day_c = used(KEYS[3]) end
if tonumber(ARGV[6]) >= 0 or tonumber(ARGV[8]) >= 0 then mon_t, mon_c = used(KEYS[4]) end
local function refuse(code) return {code, 0, -1, 0, -1, 0, day_t, mon_t} end
if tonumber(ARGV[5]) >= 0 and day_t + need > tonumber(ARGV[5]) then return refuse(3) end
if tonumber(ARGV[6]) >= 0 and mon_t + need > tonumber(ARGV[6]) then return refuse(4) end
if tonumber(ARGV[7]) >= 0 and day_c >= tonumber(ARGV[7]) then return refuse(5) end
if tonumber(ARGV[8]) >= 0 and mon_c >= tonumber(ARGV[8]) then return refuse(6) end
local tok_rem, tok_reset = -1, 0
local ti = tonumber(ARGV[3])
if ti > 0 then
  local tau = ti * tonumber(ARGV[4])
  local u = math.max(tonumber(redis.call('GET', KEYS[2]) or '0') - now, 0)
  if u >= tau then return {2, math.ceil(u - tau + ti), -1, 0, 0, math.ceil(u), day_t, mon_t} end
  tok_rem = math.floor((tau - u) / ti)
  tok_reset = math.ceil(u)
end
local req_rem, req_reset = -1, 0
local ri = tonumber(ARGV[1])
if ri > 0 then
  local tau = ri * tonumber(ARGV[2])
  local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now)
  local nxt = tat + ri
  if nxt - now > tau then
    return {1, math.ceil(nxt - now - tau), 0, math.ceil(tat - now), tok_rem, tok_reset, day_t, mon_t}
  end
  redis.call('SET', KEYS[1], string.format('%.0f', nxt), 'PX', math.ceil((nxt - now) / 1000) + 1)
  req_rem = math.floor((tau - (nxt - now)) / ri)
  req_reset = math.ceil(nxt - now)
end
return {0, 0, req_rem, req_reset, tok_rem, tok_reset, day_t, mon_t}
"#;

/// One finished request: marked seen (or skipped if it already was), added
/// to its day and month, and charged to the token budget.
const COMMIT: &str = r#"
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then return 0 end
if #ARGV > 5 then
  for i = 6, #ARGV, 2 do
    redis.call('HINCRBY', KEYS[2], ARGV[i], ARGV[i + 1])
    redis.call('HINCRBY', KEYS[3], ARGV[i], ARGV[i + 1])
  end
  redis.call('EXPIRE', KEYS[2], ARGV[2])
  redis.call('EXPIRE', KEYS[3], ARGV[3])
end
local ti = tonumber(ARGV[4])
if ti > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local tat = math.max(tonumber(redis.call('GET', KEYS[4]) or '0'), now) + ti * tonumber(ARGV[5])
  redis.call('SET', KEYS[4], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
end
return 1
"#;

/// How long a request id is remembered, so that a replayed write is skipped.
const SEEN_TTL_SECS: u64 = 2 * 86_400;
/// Most records written in one pipeline.
const BATCH: usize = 256;
/// While Redis is down the request path tries it at most this often.
const PROBE_EVERY_MS: u64 = 1000;

enum Msg {
    Entry(Box<Entry>),
    Flush(oneshot::Sender<()>),
}

/// Usage and limiter state in Redis.
pub struct RedisStore {
    conn: ConnectionManager,
    prefix: Arc<str>,
    timeout: Duration,
    admit: Script,
    health: Arc<Health>,
    tx: mpsc::UnboundedSender<Msg>,
}

impl RedisStore {
    /// Connects lazily (start-up does not wait for Redis) and starts the
    /// background writer. Must be called inside a Tokio runtime.
    pub fn connect(
        cfg: &loom_config::RedisStore,
        buffer_limit: usize,
    ) -> Result<RedisStore, Error> {
        let address = if cfg.address.contains("://") {
            cfg.address.clone()
        } else if cfg.tls {
            format!("rediss://{}", cfg.address)
        } else {
            format!("redis://{}", cfg.address)
        };
        let info = address
            .as_str()
            .into_connection_info()
            .map_err(|e| Error::Config(format!("invalid Redis address {:?}: {e}", cfg.address)))?;
        let mut settings = info.redis_settings().clone();
        if !cfg.password.expose().is_empty() {
            settings = settings.set_password(cfg.password.expose());
        }
        if let Some(user) = &cfg.username {
            settings = settings.set_username(user);
        }
        if let Some(db) = cfg.db {
            settings = settings.set_db(i64::from(db));
        }
        let client = redis::Client::open(info.set_redis_settings(settings))
            .map_err(|e| Error::Config(format!("Redis client: {e}")))?;
        let manager_cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(cfg.timeout.0.max(Duration::from_secs(2))))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, manager_cfg)
            .map_err(|e| Error::Config(format!("Redis client: {e}")))?;
        let health = Arc::new(Health::default());
        health.up.store(true, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(writer(
            conn.clone(),
            rx,
            health.clone(),
            buffer_limit,
            Arc::from(cfg.key_prefix.as_str()),
        ));
        Ok(RedisStore {
            conn,
            prefix: Arc::from(cfg.key_prefix.as_str()),
            timeout: cfg.timeout.0,
            admit: Script::new(ADMIT),
            health,
            tx,
        })
    }

    fn key(&self, consumer: &str, rest: &str) -> String {
        key(&self.prefix, consumer, rest)
    }

    pub(super) async fn admit(&self, c: &Check<'_>) -> Result<Gate, Error> {
        let now_ms = unix_ms();
        if !self.health.is_up() && now_ms < self.health.retry_at_ms.load(Ordering::Relaxed) {
            return Err(Error::Store("Redis is unreachable".into()));
        }
        let mut inv = self.admit.prepare_invoke();
        inv.key(self.key(c.consumer, "rl:req"))
            .key(self.key(c.consumer, "rl:tok"))
            .key(self.key(c.consumer, &format!("d:{}", c.day)))
            .key(self.key(c.consumer, &format!("m:{}", c.month)));
        let rate = |r: Option<crate::Rate>| r.map_or((0.0, 0), |r| (r.interval_us(), r.limit));
        let (ri, rl) = rate(c.requests);
        let (ti, tl) = rate(c.tokens);
        let opt = |v: Option<u64>| v.map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX));
        inv.arg(ri)
            .arg(rl)
            .arg(ti)
            .arg(tl)
            .arg(opt(c.limits.day_tokens))
            .arg(opt(c.limits.month_tokens))
            .arg(opt(c.limits.day_cost))
            .arg(opt(c.limits.month_cost))
            .arg(c.need);
        let mut conn = self.conn.clone();
        let reply: Result<Vec<i64>, Error> =
            match tokio::time::timeout(self.timeout, inv.invoke_async(&mut conn)).await {
                Ok(r) => r.map_err(Error::from),
                Err(_) => Err(Error::Store("Redis did not answer in time".into())),
            };
        match reply {
            Ok(v) if v.len() == 8 => {
                self.health.up.store(true, Ordering::Relaxed);
                Ok(gate(&v, c))
            }
            Ok(_) => Err(Error::Store(
                "unexpected reply from the admission script".into(),
            )),
            Err(e) => {
                self.mark_down(now_ms);
                Err(e)
            }
        }
    }

    fn mark_down(&self, now_ms: u64) {
        self.health.up.store(false, Ordering::Relaxed);
        self.health
            .retry_at_ms
            .store(now_ms + PROBE_EVERY_MS, Ordering::Relaxed);
    }

    pub(super) fn commit(&self, entry: Entry) {
        self.health.buffered.fetch_add(1, Ordering::Relaxed);
        if self.tx.send(Msg::Entry(Box::new(entry))).is_err() {
            self.health.buffered.fetch_sub(1, Ordering::Relaxed);
            self.health.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(super) async fn usage(&self, consumer: &str, period: &str) -> Result<Option<Usage>, Error> {
        let key = self.key(
            consumer,
            &format!("{}:{period}", if period.len() == 7 { "m" } else { "d" }),
        );
        let mut conn = self.conn.clone();
        let fields: Vec<(String, u64)> = match tokio::time::timeout(
            Duration::from_secs(2),
            redis::cmd("HGETALL").arg(&key).query_async(&mut conn),
        )
        .await
        {
            Ok(r) => r?,
            Err(_) => return Err(Error::Store("Redis did not answer in time".into())),
        };
        if fields.is_empty() {
            return Ok(None);
        }
        let mut usage = Usage::default();
        for (field, v) in fields {
            let mut parts = field.splitn(3, '\t');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(f), None, None) => usage.totals.set(f, v),
                (Some(f), Some(provider), Some(model)) => usage
                    .by_model
                    .entry((provider.to_owned(), model.to_owned()))
                    .or_default()
                    .set(f, v),
                _ => {}
            }
        }
        Ok(Some(usage))
    }

    pub(super) async fn flush(&self, within: Duration) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).is_ok() {
            let _ = tokio::time::timeout(within, rx).await;
        }
    }

    pub(super) fn health(&self) -> Arc<Health> {
        self.health.clone()
    }
}

fn key(prefix: &str, consumer: &str, rest: &str) -> String {
    let mut k = String::with_capacity(prefix.len() + consumer.len() + rest.len() + 3);
    k.push_str(prefix);
    k.push('{');
    k.push_str(consumer);
    k.push_str("}:");
    k.push_str(rest);
    k
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn gate(v: &[i64], c: &Check<'_>) -> Gate {
    let us = |x: i64| Duration::from_micros(x.max(0) as u64);
    let refused = match v[0] {
        1 => Some(Refusal::Requests),
        2 => Some(Refusal::Tokens),
        3 => Some(Refusal::DayTokens),
        4 => Some(Refusal::MonthTokens),
        5 => Some(Refusal::DayCost),
        6 => Some(Refusal::MonthCost),
        _ => None,
    };
    let standing = |allowed: bool, remaining: i64, reset: i64| Standing {
        allowed,
        remaining: remaining.max(0) as u64,
        reset: us(reset),
        retry_after: if allowed { Duration::ZERO } else { us(v[1]) },
    };
    Gate {
        refused,
        requests: (c.requests.is_some() && v[2] >= 0 || refused == Some(Refusal::Requests))
            .then(|| standing(refused != Some(Refusal::Requests), v[2], v[3])),
        tokens: (c.tokens.is_some() && v[4] >= 0 || refused == Some(Refusal::Tokens))
            .then(|| standing(refused != Some(Refusal::Tokens), v[4], v[5])),
        day_used: v[6].max(0) as u64,
        month_used: v[7].max(0) as u64,
    }
}

/// The background writer: batches records into pipelines; keeps them while
/// Redis is away and retries with back-off; answers flush requests.
async fn writer(
    mut conn: ConnectionManager,
    mut rx: mpsc::UnboundedReceiver<Msg>,
    health: Arc<Health>,
    buffer_limit: usize,
    prefix: Arc<str>,
) {
    let commit = Script::new(COMMIT);
    let mut pending: VecDeque<Entry> = VecDeque::new();
    let mut flushes: Vec<oneshot::Sender<()>> = Vec::new();
    let mut backoff = Duration::from_millis(100);
    let mut closed = false;
    loop {
        if pending.is_empty() {
            for f in flushes.drain(..) {
                let _ = f.send(());
            }
            if closed {
                return;
            }
            match rx.recv().await {
                Some(Msg::Entry(e)) => pending.push_back(*e),
                Some(Msg::Flush(f)) => {
                    let _ = f.send(());
                    continue;
                }
                None => return,
            }
        }
        loop {
            match rx.try_recv() {
                Ok(Msg::Entry(e)) => {
                    pending.push_back(*e);
                    if pending.len() > buffer_limit {
                        pending.pop_front();
                        health.dropped.fetch_add(1, Ordering::Relaxed);
                        health.buffered.fetch_sub(1, Ordering::Relaxed);
                    }
                }
                Ok(Msg::Flush(f)) => flushes.push(f),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        let n = pending.len().min(BATCH);
        match write(&mut conn, &commit, &prefix, pending.range(..n)).await {
            Ok(()) => {
                pending.drain(..n);
                health.buffered.fetch_sub(n, Ordering::Relaxed);
                if !health.is_up() {
                    tracing::info!(
                        written = n,
                        waiting = pending.len(),
                        "usage store is back; writing buffered usage"
                    );
                }
                health.up.store(true, Ordering::Relaxed);
                backoff = Duration::from_millis(100);
            }
            Err(Error::Rejected(e)) => {
                // Redis refused the batch itself (a key of the wrong type, say):
                // retrying cannot help, so it is dropped and counted.
                tracing::error!(error = %e, dropped = n, "usage store rejected a batch");
                pending.drain(..n);
                health.buffered.fetch_sub(n, Ordering::Relaxed);
                health.dropped.fetch_add(n as u64, Ordering::Relaxed);
            }
            Err(e) => {
                if health.is_up() {
                    tracing::warn!(error = %e, "usage store unreachable; keeping usage in memory until it returns");
                }
                health.up.store(false, Ordering::Relaxed);
                health
                    .retry_at_ms
                    .store(unix_ms() + PROBE_EVERY_MS, Ordering::Relaxed);
                // Flush callers are not kept waiting for an outage.
                for f in flushes.drain(..) {
                    let _ = f.send(());
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Writes `entries` in one pipeline, loading the script first if Redis lost it.
async fn write<'a>(
    conn: &mut ConnectionManager,
    commit: &Script,
    prefix: &str,
    entries: impl Iterator<Item = &'a Entry> + Clone,
) -> Result<(), Error> {
    let build = || {
        let mut pipe = redis::pipe();
        for e in entries.clone() {
            let mut inv = commit.prepare_invoke();
            inv.key(key(prefix, &e.consumer, &format!("seen:{:032x}", e.id)))
                .key(key(prefix, &e.consumer, &format!("d:{}", e.day)))
                .key(key(prefix, &e.consumer, &format!("m:{}", e.month)))
                .key(key(prefix, &e.consumer, "rl:tok"));
            let ti = e.token_rate.map_or(0.0, |r| r.interval_us());
            inv.arg(SEEN_TTL_SECS)
                .arg(e.day_ttl)
                .arg(e.month_ttl)
                .arg(ti)
                .arg(e.totals.tokens());
            if e.ledger {
                for (f, v) in e.totals.fields() {
                    if v > 0 {
                        inv.arg(f).arg(v);
                    }
                }
                for (f, v) in e.totals.fields() {
                    if v > 0 {
                        inv.arg(format!("{f}\t{}\t{}", e.provider, e.model)).arg(v);
                    }
                }
            }
            pipe.invoke_script(&inv);
        }
        pipe
    };
    let mut result: Result<Vec<i64>, redis::RedisError> = build().query_async(conn).await;
    if let Err(e) = &result
        && e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
    {
        commit.prepare_invoke().load_async(conn).await?;
        result = build().query_async(conn).await;
    }
    match result {
        Ok(_) => Ok(()),
        Err(e) if matches!(e.retry_method(), redis::RetryMethod::NoRetry) && !e.is_io_error() => {
            Err(Error::Rejected(e.to_string()))
        }
        Err(e) => Err(e.into()),
    }
}

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

/// Admission of one or more requests of one consumer, in arrival order:
/// for each, period limits, then the token budget, then one request from the
/// request rate; nothing is taken for a refused request. ARGV: request
/// interval µs, request limit, token interval µs, token limit, day/month
/// token limits, day/month cost limits (-1: none), then each request's need.
/// Returns eight numbers per request, as one space-separated string: decoding
/// one string costs the client far less than an array of integers.
const ADMIT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local ri, rl = tonumber(ARGV[1]), tonumber(ARGV[2])
local ti, tl = tonumber(ARGV[3]), tonumber(ARGV[4])
local dl, ml = tonumber(ARGV[5]), tonumber(ARGV[6])
local dc, mc = tonumber(ARGV[7]), tonumber(ARGV[8])
local day_t, day_c, mon_t, mon_c = 0, 0, 0, 0
if dl >= 0 or dc >= 0 then
  local v = redis.call('HMGET', KEYS[3], 'p', 'c', '$')
  day_t = (tonumber(v[1]) or 0) + (tonumber(v[2]) or 0)
  day_c = tonumber(v[3]) or 0
end
if ml >= 0 or mc >= 0 then
  local v = redis.call('HMGET', KEYS[4], 'p', 'c', '$')
  mon_t = (tonumber(v[1]) or 0) + (tonumber(v[2]) or 0)
  mon_c = tonumber(v[3]) or 0
end
local used = 0
if ti > 0 then used = math.max(tonumber(redis.call('GET', KEYS[2]) or '0') - now, 0) end
local tat = now
if ri > 0 then tat = math.max(tonumber(redis.call('GET', KEYS[1]) or '0'), now) end
local taken = false
local out = {}
for i = 9, #ARGV do
  local need = tonumber(ARGV[i])
  local code, retry, rrem, rreset, trem, treset = 0, 0, -1, 0, -1, 0
  if dl >= 0 and day_t + need > dl then code = 3
  elseif ml >= 0 and mon_t + need > ml then code = 4
  elseif dc >= 0 and day_c >= dc then code = 5
  elseif mc >= 0 and mon_c >= mc then code = 6
  end
  if code == 0 and ti > 0 then
    local tau = ti * tl
    treset = math.ceil(used)
    if used >= tau then
      code, retry, trem = 2, math.ceil(used - tau + ti), 0
    else
      trem = math.floor((tau - used) / ti)
    end
  end
  if code == 0 and ri > 0 then
    local tau = ri * rl
    local nxt = tat + ri
    if nxt - now > tau then
      code, retry, rrem, rreset = 1, math.ceil(nxt - now - tau), 0, math.ceil(tat - now)
    else
      tat, taken = nxt, true
      rrem, rreset = math.floor((tau - (nxt - now)) / ri), math.ceil(nxt - now)
    end
  end
  local n = #out
  out[n + 1], out[n + 2], out[n + 3], out[n + 4] = code, retry, rrem, rreset
  out[n + 5], out[n + 6], out[n + 7], out[n + 8] = trem, treset, day_t, mon_t
end
if taken then
  redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
end
return table.concat(out, ' ')
"#;

/// One batch of summed usage: skipped if this writer already applied it
/// (each writer numbers its batches in the order it sends them, and Redis
/// keeps the highest number applied per writer and consumer), else added to
/// its day and month and charged to the token budget. ARGV: writer id,
/// batch number, day TTL, month TTL, token interval µs, tokens, then field
/// and amount pairs.
const COMMIT: &str = r#"
local seq = tonumber(ARGV[2])
if seq <= tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0') then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('EXPIRE', KEYS[1], 604800)
if #ARGV > 6 then
  for i = 7, #ARGV, 2 do
    redis.call('HINCRBY', KEYS[2], ARGV[i], ARGV[i + 1])
    redis.call('HINCRBY', KEYS[3], ARGV[i], ARGV[i + 1])
  end
  redis.call('EXPIRE', KEYS[2], ARGV[3])
  redis.call('EXPIRE', KEYS[3], ARGV[4])
end
local ti = tonumber(ARGV[5])
if ti > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local tat = math.max(tonumber(redis.call('GET', KEYS[4]) or '0'), now) + ti * tonumber(ARGV[6])
  redis.call('SET', KEYS[4], string.format('%.0f', tat), 'PX', math.ceil((tat - now) / 1000) + 1)
end
return 1
"#;

/// How long the writer gathers finished requests before a write.
const LINGER: Duration = Duration::from_millis(50);
/// Most batches (each one consumer's summed usage) written in one pipeline.
const BATCH: usize = 256;
/// While Redis is down the request path tries it at most this often.
const PROBE_EVERY_MS: u64 = 1000;

enum Msg {
    Entry(Box<Owned>),
    Flush(oneshot::Sender<()>),
}

/// An [`Entry`] that owns its parts, to cross to the writer task.
#[derive(Debug, Clone)]
struct Owned {
    consumer: Box<str>,
    provider: Box<str>,
    model: Box<str>,
    totals: super::Totals,
    ledger: bool,
    day: Arc<str>,
    month: Arc<str>,
    day_ttl: u64,
    month_ttl: u64,
    token_rate: Option<crate::Rate>,
}

/// Usage and limiter state in Redis.
pub struct RedisStore {
    conn: ConnectionManager,
    prefix: Arc<str>,
    health: Arc<Health>,
    tx: mpsc::UnboundedSender<Msg>,
    admissions: mpsc::UnboundedSender<Admit>,
}

/// One admission waiting for the admitter.
struct Admit {
    consumer: Box<str>,
    params: [i64; 6],
    rates: (f64, f64),
    day: Box<str>,
    month: Box<str>,
    need: u64,
    reply: oneshot::Sender<Result<[i64; 8], Error>>,
}

impl RedisStore {
    /// Connects lazily (start-up does not wait for Redis) and starts the
    /// background writer. Must be called inside a Tokio runtime.
    pub fn connect(
        cfg: &loom_config::settings::RedisStore,
        buffer_limit: usize,
    ) -> Result<RedisStore, Error> {
        let conn = connection(cfg)?;
        let health = Arc::new(Health::default());
        health.up.store(true, Ordering::Relaxed);
        let (admissions, queue) = mpsc::unbounded_channel();
        tokio::spawn(admitter(
            conn.clone(),
            queue,
            Arc::from(cfg.key_prefix.as_str()),
            cfg.timeout.0,
        ));
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
            health,
            tx,
            admissions,
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
        let rate = |r: Option<crate::Rate>| r.map_or((0.0, 0), |r| (r.interval_us(), r.limit));
        let (ri, rl) = rate(c.requests);
        let (ti, tl) = rate(c.tokens);
        let opt = |v: Option<u64>| v.map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX));
        let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let (reply, answer) = oneshot::channel();
        let ask = Admit {
            consumer: c.consumer.into(),
            params: [
                int(rl),
                int(tl),
                opt(c.limits.day_tokens),
                opt(c.limits.month_tokens),
                opt(c.limits.day_cost),
                opt(c.limits.month_cost),
            ],
            rates: (ri, ti),
            day: c.day.into(),
            month: c.month.into(),
            need: c.need,
            reply,
        };
        if self.admissions.send(ask).is_err() {
            return Err(Error::Store("the admission task has stopped".into()));
        }
        // The admitter bounds each round trip by the timeout, so no timer is
        // needed per request: one per round trip serves them all.
        let reply = match answer.await {
            Ok(r) => r,
            Err(_) => Err(Error::Store("the admission task has stopped".into())),
        };
        match reply {
            Ok(v) => {
                self.health.up.store(true, Ordering::Relaxed);
                Ok(gate(&v, c))
            }
            Err(e) => {
                self.mark_down(now_ms, &e);
                Err(e)
            }
        }
    }

    fn mark_down(&self, now_ms: u64, why: &Error) {
        if self.health.up.swap(false, Ordering::Relaxed) {
            tracing::warn!(error = %why, "usage store unreachable; admitting by the failure mode and keeping usage in memory");
        }
        self.health
            .retry_at_ms
            .store(now_ms + PROBE_EVERY_MS, Ordering::Relaxed);
    }

    pub(super) fn commit(&self, e: &Entry<'_>) {
        self.health.buffered.fetch_add(1, Ordering::Relaxed);
        let owned = Owned {
            consumer: e.consumer.into(),
            provider: e.provider.into(),
            model: e.model.into(),
            totals: e.totals,
            ledger: e.ledger,
            day: e.day.clone(),
            month: e.month.clone(),
            day_ttl: e.day_ttl,
            month_ttl: e.month_ttl,
            token_rate: e.token_rate,
        };
        if self.tx.send(Msg::Entry(Box::new(owned))).is_err() {
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
                (Some(f), Some(provider), Some(model)) => {
                    usage.model_mut(provider, model).set(f, v)
                }
                _ => {}
            }
        }
        Ok(Some(usage))
    }

    pub(super) async fn flush(&self, within: Duration) {
        if !self.health.is_up() {
            // Nothing can be written now; waiting would only delay shutdown.
            let waiting = self.health.buffered.load(Ordering::Relaxed);
            if waiting > 0 {
                tracing::warn!(
                    waiting,
                    "usage store unreachable: buffered usage is lost at exit"
                );
            }
            return;
        }
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

fn gate(v: &[i64; 8], c: &Check<'_>) -> Gate {
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

/// The admitter: takes every admission that arrived while the previous
/// round trip was out, and sends them as one pipeline with one script run
/// per consumer. Under load many requests share a round trip and a script
/// run (group commit); a lone request goes at once. Decisions are the same
/// as one script run per request, in arrival order.
async fn admitter(
    mut conn: ConnectionManager,
    mut queue: mpsc::UnboundedReceiver<Admit>,
    prefix: Arc<str>,
    timeout: Duration,
) {
    let script = Script::new(ADMIT);
    while let Some(first) = queue.recv().await {
        let mut groups: Vec<Vec<Admit>> = vec![vec![first]];
        while let Ok(a) = queue.try_recv() {
            let same = |g: &Vec<Admit>| {
                let h = &g[0];
                h.consumer == a.consumer
                    && h.params == a.params
                    && h.rates == a.rates
                    && h.day == a.day
                    && h.month == a.month
            };
            match groups.iter_mut().find(|g| same(g)) {
                Some(g) => g.push(a),
                None => groups.push(vec![a]),
            }
        }
        // Requests whose caller gave up need no answer.
        for g in &mut groups {
            g.retain(|a| !a.reply.is_closed());
        }
        groups.retain(|g| !g.is_empty());
        if groups.is_empty() {
            continue;
        }
        let build = || {
            let mut pipe = redis::pipe();
            for g in &groups {
                let h = &g[0];
                let mut inv = script.prepare_invoke();
                inv.key(key(&prefix, &h.consumer, "rl:req"))
                    .key(key(&prefix, &h.consumer, "rl:tok"))
                    .key(key(&prefix, &h.consumer, &format!("d:{}", h.day)))
                    .key(key(&prefix, &h.consumer, &format!("m:{}", h.month)));
                let [rl, tl, dl, ml, dc, mc] = h.params;
                inv.arg(h.rates.0)
                    .arg(rl)
                    .arg(h.rates.1)
                    .arg(tl)
                    .arg(dl)
                    .arg(ml)
                    .arg(dc)
                    .arg(mc);
                for a in g {
                    inv.arg(a.need);
                }
                pipe.invoke_script(&inv);
            }
            pipe
        };
        let round_trip = async {
            let mut result: Result<Vec<Vec<u8>>, redis::RedisError> =
                build().query_async(&mut conn).await;
            if let Err(e) = &result
                && e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)
            {
                if let Err(e) = script.prepare_invoke().load_async(&mut conn).await {
                    result = Err(e);
                } else {
                    result = build().query_async(&mut conn).await;
                }
            }
            result.map_err(|e| e.to_string())
        };
        let result = match tokio::time::timeout(timeout, round_trip).await {
            Ok(r) => r,
            Err(_) => Err("Redis did not answer in time".to_owned()),
        };
        match result {
            Ok(replies) if replies.len() == groups.len() => {
                for (g, reply) in groups.into_iter().zip(replies) {
                    let mut numbers = reply
                        .split(|b| *b == b' ')
                        .map(|n| std::str::from_utf8(n).ok()?.parse::<f64>().ok());
                    for a in g {
                        let mut v = [0i64; 8];
                        let mut complete = true;
                        for slot in &mut v {
                            match numbers.next().flatten() {
                                Some(n) => *slot = n as i64,
                                None => complete = false,
                            }
                        }
                        let answer = if complete {
                            Ok(v)
                        } else {
                            Err(Error::Store(
                                "unexpected reply from the admission script".into(),
                            ))
                        };
                        let _ = a.reply.send(answer);
                    }
                }
            }
            Ok(_) => {
                for a in groups.into_iter().flatten() {
                    let _ = a.reply.send(Err(Error::Store(
                        "unexpected reply from the admission script".into(),
                    )));
                }
            }
            Err(msg) => {
                for a in groups.into_iter().flatten() {
                    let _ = a.reply.send(Err(Error::Store(msg.clone())));
                }
            }
        }
    }
}

/// Usage of one consumer over one stretch of the writer's queue, summed:
/// what one run of the commit script adds. Its id (writer, number) is fixed
/// when it is built, so a batch sent again after a lost reply is recognised
/// and skipped: one small hash per consumer instead of a key per batch.
#[derive(Debug, Clone)]
struct Batch {
    id: u128,
    consumer: Box<str>,
    day: Arc<str>,
    month: Arc<str>,
    day_ttl: u64,
    month_ttl: u64,
    token_rate: Option<crate::Rate>,
    tokens: u64,
    /// Hash field → amount, totals and per provider and model.
    fields: Vec<(String, u64)>,
    /// Requests summed in this batch.
    records: usize,
}

/// Unique batch ids: a random per-process prefix and a counter.
struct Ids {
    seed: u64,
    next: u64,
}

impl Ids {
    fn new() -> Ids {
        let mut seed = [0u8; 8];
        if aws_lc_rs::rand::fill(&mut seed).is_err() {
            seed = (u64::from(std::process::id()) ^ unix_ms()).to_le_bytes();
        }
        Ids {
            seed: u64::from_le_bytes(seed),
            next: 0,
        }
    }

    fn next(&mut self) -> u128 {
        self.next += 1;
        (u128::from(self.seed) << 64) | u128::from(self.next)
    }
}

/// Sums `entries` into one batch per consumer, day and token rate.
fn batches(entries: Vec<Owned>, ids: &mut Ids) -> Vec<Batch> {
    // Summed first without allocating per entry; field names are built once per batch.
    let mut out: Vec<(Batch, Usage)> = Vec::new();
    for e in entries {
        let same =
            |b: &Batch| b.consumer == e.consumer && b.day == e.day && b.token_rate == e.token_rate;
        let i = match out.iter().position(|(b, _)| same(b)) {
            Some(i) => i,
            None => {
                out.push((
                    Batch {
                        id: ids.next(),
                        consumer: e.consumer.clone(),
                        day: e.day.clone(),
                        month: e.month.clone(),
                        day_ttl: e.day_ttl,
                        month_ttl: e.month_ttl,
                        token_rate: e.token_rate,
                        tokens: 0,
                        fields: Vec::new(),
                        records: 0,
                    },
                    Usage::default(),
                ));
                out.len() - 1
            }
        };
        let (b, usage) = &mut out[i];
        b.tokens += e.totals.tokens();
        b.records += 1;
        if e.ledger {
            usage.add(&e.provider, &e.model, &e.totals);
        }
    }
    out.into_iter()
        .map(|(mut b, usage)| {
            for (f, v) in usage.totals.fields() {
                if v > 0 {
                    b.fields.push((f.to_owned(), v));
                }
            }
            for (provider, model, t) in &usage.by_model {
                for (f, v) in t.fields() {
                    if v > 0 {
                        b.fields.push((format!("{f}\t{provider}\t{model}"), v));
                    }
                }
            }
            b
        })
        .collect()
}

/// The background writer: sums what arrived since the last write into one
/// batch per consumer and writes the batches in one pipeline; keeps them
/// while Redis is away and retries with back-off; answers flush requests.
async fn writer(
    mut conn: ConnectionManager,
    mut rx: mpsc::UnboundedReceiver<Msg>,
    health: Arc<Health>,
    buffer_limit: usize,
    prefix: Arc<str>,
) {
    let commit = Script::new(COMMIT);
    let mut ids = Ids::new();
    let mut pending: VecDeque<Batch> = VecDeque::new();
    let mut waiting_records = 0usize;
    let mut flushes: Vec<oneshot::Sender<()>> = Vec::new();
    let mut backoff = Duration::from_millis(100);
    let mut closed = false;
    loop {
        let mut fresh = Vec::new();
        if pending.is_empty() {
            for f in flushes.drain(..) {
                let _ = f.send(());
            }
            if closed {
                return;
            }
            match rx.recv().await {
                Some(Msg::Entry(e)) => fresh.push(*e),
                Some(Msg::Flush(f)) => {
                    let _ = f.send(());
                    continue;
                }
                None => return,
            }
            // Gather for a moment: one write then carries many requests, which
            // costs Redis far less than a write per handful.
            let deadline = tokio::time::Instant::now() + LINGER;
            loop {
                tokio::select! {
                    msg = rx.recv() => match msg {
                        Some(Msg::Entry(e)) => fresh.push(*e),
                        Some(Msg::Flush(f)) => {
                            flushes.push(f);
                            break;
                        }
                        None => {
                            closed = true;
                            break;
                        }
                    },
                    () = tokio::time::sleep_until(deadline) => break,
                }
            }
        }
        while !closed {
            match rx.try_recv() {
                Ok(Msg::Entry(e)) => fresh.push(*e),
                Ok(Msg::Flush(f)) => flushes.push(f),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    closed = true;
                    break;
                }
            }
        }
        waiting_records += fresh.len();
        pending.extend(batches(fresh, &mut ids));
        while waiting_records > buffer_limit {
            let Some(oldest) = pending.pop_front() else {
                break;
            };
            waiting_records -= oldest.records;
            health.buffered.fetch_sub(oldest.records, Ordering::Relaxed);
            health
                .dropped
                .fetch_add(oldest.records as u64, Ordering::Relaxed);
        }
        let n = pending.len().min(BATCH);
        let records: usize = pending.range(..n).map(|b| b.records).sum();
        match write(&mut conn, &commit, &prefix, pending.range(..n)).await {
            Ok(()) => {
                pending.drain(..n);
                waiting_records -= records;
                health.buffered.fetch_sub(records, Ordering::Relaxed);
                if !health.is_up() {
                    tracing::info!(
                        written = records,
                        waiting = waiting_records,
                        "usage store is back; writing buffered usage"
                    );
                }
                health.up.store(true, Ordering::Relaxed);
                backoff = Duration::from_millis(100);
            }
            Err(Error::Rejected(e)) => {
                // Redis refused the batch itself (a key of the wrong type, say):
                // retrying cannot help, so it is dropped and counted.
                tracing::error!(error = %e, dropped = records, "usage store rejected a batch");
                pending.drain(..n);
                waiting_records -= records;
                health.buffered.fetch_sub(records, Ordering::Relaxed);
                health.dropped.fetch_add(records as u64, Ordering::Relaxed);
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

/// Writes `batches` in one pipeline, loading the script first if Redis lost it.
async fn write<'a>(
    conn: &mut ConnectionManager,
    commit: &Script,
    prefix: &str,
    batches: impl Iterator<Item = &'a Batch> + Clone,
) -> Result<(), Error> {
    let build = || {
        let mut pipe = redis::pipe();
        for b in batches.clone() {
            let mut inv = commit.prepare_invoke();
            inv.key(key(prefix, &b.consumer, "applied"))
                .key(key(prefix, &b.consumer, &format!("d:{}", b.day)))
                .key(key(prefix, &b.consumer, &format!("m:{}", b.month)))
                .key(key(prefix, &b.consumer, "rl:tok"));
            let ti = b.token_rate.map_or(0.0, |r| r.interval_us());
            inv.arg(format!("{:016x}", (b.id >> 64) as u64))
                .arg((b.id & u128::from(u64::MAX)) as u64)
                .arg(b.day_ttl)
                .arg(b.month_ttl)
                .arg(ti)
                .arg(b.tokens);
            for (f, v) in &b.fields {
                inv.arg(f).arg(*v);
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

/// A lazily connecting, reconnecting Redis connection for `cfg`: address
/// (`host:port`, `redis://`, `rediss://`), credentials, database, TLS, and
/// the response timeout. Used by the usage store and the semantic cache.
pub fn connection(cfg: &loom_config::settings::RedisStore) -> Result<ConnectionManager, Error> {
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
    ConnectionManager::new_lazy_with_config(client, manager_cfg)
        .map_err(|e| Error::Config(format!("Redis client: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(consumer: &str, model: &str, prompt: u64) -> Owned {
        Owned {
            consumer: consumer.into(),
            provider: "openai".into(),
            model: model.into(),
            totals: super::super::Totals {
                prompt,
                completion: 1,
                requests: 1,
                ..Default::default()
            },
            ledger: true,
            day: "2026-11-27".into(),
            month: "2026-11".into(),
            day_ttl: 60,
            month_ttl: 60,
            token_rate: None,
        }
    }

    #[test]
    fn entries_are_summed_per_consumer() {
        let mut ids = Ids::new();
        let b = batches(
            vec![
                entry("a", "gpt-4o", 5),
                entry("b", "gpt-4o", 7),
                entry("a", "o3", 11),
            ],
            &mut ids,
        );
        assert_eq!(b.len(), 2);
        assert_ne!(b[0].id, b[1].id);
        let field = |b: &Batch, f: &str| b.fields.iter().find(|(k, _)| k == f).map(|x| x.1);
        assert_eq!((&*b[0].consumer, b[0].records), ("a", 2));
        assert_eq!(field(&b[0], "p"), Some(16));
        assert_eq!(field(&b[0], "r"), Some(2));
        assert_eq!(field(&b[0], "p\topenai\to3"), Some(11));
        assert_eq!(b[0].tokens, 18);
    }

    #[tokio::test]
    async fn a_batch_sent_twice_counts_once() {
        if std::net::TcpStream::connect("127.0.0.1:6379").is_err() {
            assert!(std::env::var_os("CI").is_none(), "Redis must run in CI");
            eprintln!("SKIPPED: Redis is not reachable on 127.0.0.1:6379");
            return;
        }
        let client = redis::Client::open("redis://127.0.0.1:6379").expect("client");
        let mut conn = ConnectionManager::new(client).await.expect("connect");
        let prefix = format!("loomtest:replay:{}:", unix_ms());
        let b = batches(
            vec![entry("a", "gpt-4o", 5), entry("a", "gpt-4o", 6)],
            &mut Ids::new(),
        );
        let commit = Script::new(COMMIT);
        write(&mut conn, &commit, &prefix, b.iter())
            .await
            .expect("write");
        // The reply was "lost": the same batch goes again.
        write(&mut conn, &commit, &prefix, b.iter())
            .await
            .expect("write");
        let p: u64 = redis::cmd("HGET")
            .arg(key(&prefix, "a", "d:2026-11-27"))
            .arg("p")
            .query_async(&mut conn)
            .await
            .expect("hget");
        assert_eq!(p, 11);
    }
}

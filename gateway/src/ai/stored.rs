//! Responses kept for the Responses API's state, for providers reached by
//! translation (OpenAI keeps its own): a response created with `store`
//! (the default) can be continued with `previous_response_id`, read back
//! with `GET /v1/responses/{id}` and its input with `.../input_items`, and
//! deleted. Each is scoped to the consumer that created it: another
//! consumer gets 404, as for an id that never existed.
//!
//! Always kept in memory, process-wide (a configuration reload keeps
//! them), bounded by count, by bytes and by age; the oldest go first. With
//! `ai_gateway.responses.store: redis` each is also written to Redis, so
//! that any replica can continue it, and Redis is read first (a delete on
//! one replica holds on all). Redis is never a point of failure: a write it
//! misses is retried in the background until it answers, and while it is
//! away each replica serves what it kept itself. Locks are held only to
//! insert, look up or remove, never across an await.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Responses kept at most in memory.
const MAX_ENTRIES: usize = 10_000;
/// Writes and deletes waiting for Redis at most; past it the oldest are
/// given up (the memory copy stays).
const MAX_PENDING: usize = 10_000;
/// How often writes Redis missed are retried.
const RESYNC_EVERY: Duration = Duration::from_secs(1);

/// One kept response.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    /// The consumer that created it.
    pub consumer: String,
    /// The conversation's input items (earlier turns included).
    pub input: Vec<Value>,
    /// Its output items.
    pub output: Vec<Value>,
    /// The response object as the client got it.
    pub response: Bytes,
    size: usize,
    at: Instant,
}

impl Stored {
    fn new(consumer: &str, input: Vec<Value>, output: Vec<Value>, response: Bytes) -> Stored {
        let size = response.len()
            + input
                .iter()
                .chain(&output)
                .map(|v| v.to_string().len())
                .sum::<usize>();
        Stored {
            consumer: consumer.to_owned(),
            input,
            output,
            response,
            size,
            at: Instant::now(),
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    by_id: HashMap<String, Stored>,
    /// Ids, oldest first.
    order: VecDeque<String>,
    bytes: usize,
}

/// The kept responses of the process, in memory.
#[derive(Debug)]
pub struct ResponseStore {
    inner: Mutex<Inner>,
    ttl_secs: AtomicU64,
    max_bytes: AtomicUsize,
}

impl Default for ResponseStore {
    fn default() -> Self {
        ResponseStore {
            inner: Mutex::default(),
            ttl_secs: AtomicU64::new(24 * 3600),
            max_bytes: AtomicUsize::new(256 << 20),
        }
    }
}

impl ResponseStore {
    /// Applies the configured age and size bounds (at each configuration).
    pub fn bound(&self, ttl: Duration, max_bytes: u64) {
        self.ttl_secs.store(ttl.as_secs().max(1), Ordering::Relaxed);
        self.max_bytes.store(
            usize::try_from(max_bytes).unwrap_or(usize::MAX),
            Ordering::Relaxed,
        );
    }

    fn ttl(&self) -> Duration {
        Duration::from_secs(self.ttl_secs.load(Ordering::Relaxed))
    }

    /// Keeps a response, dropping the oldest past the bounds.
    fn insert(&self, id: &str, stored: Stored) {
        let max_bytes = self.max_bytes.load(Ordering::Relaxed);
        if stored.size > max_bytes {
            return;
        }
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let size = stored.size;
        if let Some(old) = inner.by_id.insert(id.to_owned(), stored) {
            inner.bytes -= old.size;
            inner.order.retain(|i| i != id);
        }
        inner.bytes += size;
        inner.order.push_back(id.to_owned());
        while inner.order.len() > MAX_ENTRIES || inner.bytes > max_bytes {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            if let Some(old) = inner.by_id.remove(&oldest) {
                inner.bytes -= old.size;
            }
        }
    }

    /// The response `id`, whoever created it, if kept and not expired.
    fn get_any(&self, id: &str) -> Option<Stored> {
        let ttl = self.ttl();
        let inner = self.inner.lock().ok()?;
        inner
            .by_id
            .get(id)
            .filter(|s| s.at.elapsed() < ttl)
            .cloned()
    }

    /// The response `id` of `consumer`, if kept and not expired.
    fn get(&self, id: &str, consumer: &str) -> Option<Stored> {
        self.get_any(id).filter(|s| s.consumer == consumer)
    }

    /// Forgets the response `id` of `consumer`; false when there was none.
    fn delete(&self, id: &str, consumer: &str) -> bool {
        let Ok(mut inner) = self.inner.lock() else {
            return false;
        };
        if inner.by_id.get(id).is_none_or(|s| s.consumer != consumer) {
            return false;
        }
        if let Some(old) = inner.by_id.remove(id) {
            inner.bytes -= old.size;
            inner.order.retain(|i| i != id);
        }
        true
    }
}

/// A kept response as Redis holds it.
#[derive(Serialize, Deserialize)]
struct Record {
    consumer: String,
    input: Vec<Value>,
    output: Vec<Value>,
    response: String,
}

/// What Redis has yet to take.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pending {
    Put(String),
    Delete(String),
}

/// The Redis copy of kept responses, shared by every replica. One per
/// Redis, kept across configuration reloads with what it has yet to write.
pub struct RedisKept {
    conn: ConnectionManager,
    prefix: String,
    timeout: Duration,
    /// Whether the last round trip worked; a change is logged once.
    up: AtomicBool,
    pending: Mutex<VecDeque<Pending>>,
}

impl std::fmt::Debug for RedisKept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisKept")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl RedisKept {
    /// Kept responses on `conn` under `prefix`, each round trip bounded by
    /// `timeout`; retries what Redis missed into `memory`'s copies for as
    /// long as it lives.
    pub fn start(
        conn: ConnectionManager,
        prefix: &str,
        timeout: Duration,
        memory: Arc<ResponseStore>,
    ) -> Arc<RedisKept> {
        let kept = Arc::new(RedisKept {
            conn,
            prefix: prefix.to_owned(),
            timeout,
            up: AtomicBool::new(true),
            pending: Mutex::default(),
        });
        tokio::spawn(resync(Arc::downgrade(&kept), memory));
        kept
    }

    fn key(&self, id: &str) -> String {
        format!("{}response:{id}", self.prefix)
    }

    fn health(&self, ok: bool, error: &dyn std::fmt::Display) {
        if self.up.swap(ok, Ordering::Relaxed) != ok {
            if ok {
                tracing::info!("kept responses: Redis answers again");
            } else {
                tracing::warn!(error = %error, "kept responses: Redis unreachable; each replica serves what it kept");
            }
        }
    }

    /// Runs one command within the timeout; `Err` when Redis did not answer.
    async fn run<T: redis::FromRedisValue>(&self, cmd: redis::Cmd) -> Result<T, ()> {
        let mut conn = self.conn.clone();
        match tokio::time::timeout(self.timeout, cmd.query_async::<T>(&mut conn)).await {
            Ok(Ok(v)) => {
                self.health(true, &"");
                Ok(v)
            }
            Ok(Err(e)) => {
                self.health(false, &e);
                Err(())
            }
            Err(_) => {
                self.health(false, &"timed out");
                Err(())
            }
        }
    }

    fn later(&self, p: Pending) {
        let Ok(mut pending) = self.pending.lock() else {
            return;
        };
        if pending.contains(&p) {
            return;
        }
        if pending.len() >= MAX_PENDING {
            pending.pop_front();
        }
        pending.push_back(p);
    }

    fn waiting(&self, p: &Pending) -> bool {
        self.pending.lock().is_ok_and(|q| q.contains(p))
    }

    /// Writes the kept copy of `id` (false when Redis did not take it).
    async fn write(&self, id: &str, memory: &ResponseStore) -> bool {
        let Some(s) = memory.get_any(id) else {
            // Gone from memory (bounds or age): nothing left to share.
            return true;
        };
        let ttl = memory.ttl().saturating_sub(s.at.elapsed()).as_secs();
        if ttl == 0 {
            return true;
        }
        let record = Record {
            consumer: s.consumer,
            input: s.input,
            output: s.output,
            response: String::from_utf8_lossy(&s.response).into_owned(),
        };
        let Ok(value) = serde_json::to_vec(&record) else {
            return true;
        };
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.key(id)).arg(value).arg("EX").arg(ttl);
        self.run::<()>(cmd).await.is_ok()
    }

    async fn remove(&self, id: &str) -> bool {
        let mut cmd = redis::cmd("DEL");
        cmd.arg(self.key(id));
        self.run::<i64>(cmd).await.is_ok()
    }

    /// The record of `id`: `Ok(None)` when Redis has none, `Err` when it
    /// did not answer.
    async fn fetch(&self, id: &str) -> Result<Option<Record>, ()> {
        let mut cmd = redis::cmd("GET");
        cmd.arg(self.key(id));
        let bytes = self.run::<Option<Vec<u8>>>(cmd).await?;
        Ok(bytes.and_then(|b| serde_json::from_slice(&b).ok()))
    }
}

/// Retries what Redis missed, oldest first, until the store is dropped.
async fn resync(kept: Weak<RedisKept>, memory: Arc<ResponseStore>) {
    let mut tick = tokio::time::interval(RESYNC_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(kept) = kept.upgrade() else {
            return;
        };
        loop {
            let next = kept.pending.lock().ok().and_then(|q| q.front().cloned());
            let Some(p) = next else {
                break;
            };
            let done = match &p {
                Pending::Put(id) => kept.write(id, &memory).await,
                Pending::Delete(id) => kept.remove(id).await,
            };
            if !done {
                break;
            }
            if let Ok(mut q) = kept.pending.lock()
                && q.front() == Some(&p)
            {
                q.pop_front();
            }
        }
    }
}

/// Kept responses as a configuration uses them: the process's memory copy
/// and, with `store: redis`, the shared one.
#[derive(Debug, Clone)]
pub struct Kept {
    memory: Arc<ResponseStore>,
    redis: Option<Arc<RedisKept>>,
}

impl Kept {
    /// Kept responses in `memory` and, when given, Redis.
    pub fn new(memory: Arc<ResponseStore>, redis: Option<Arc<RedisKept>>) -> Kept {
        Kept { memory, redis }
    }

    /// Keeps a response; the Redis copy is written in the background.
    pub(crate) fn put(
        &self,
        id: &str,
        consumer: &str,
        input: Vec<Value>,
        output: Vec<Value>,
        response: Bytes,
    ) {
        self.memory
            .insert(id, Stored::new(consumer, input, output, response));
        if let Some(redis) = &self.redis {
            let (redis, memory, id) = (redis.clone(), self.memory.clone(), id.to_owned());
            tokio::spawn(async move {
                if !redis.write(&id, &memory).await {
                    redis.later(Pending::Put(id));
                }
            });
        }
    }

    /// The response `id` of `consumer`: from Redis when it is configured
    /// and answers, else from this process's copy.
    pub(crate) async fn get(&self, id: &str, consumer: &str) -> Option<Stored> {
        let Some(redis) = &self.redis else {
            return self.memory.get(id, consumer);
        };
        if redis.waiting(&Pending::Delete(id.to_owned())) {
            return None;
        }
        match redis.fetch(id).await {
            Ok(Some(r)) => (r.consumer == consumer)
                .then(|| Stored::new(&r.consumer, r.input, r.output, Bytes::from(r.response))),
            // Deleted or expired there, unless not written there yet.
            Ok(None) if redis.waiting(&Pending::Put(id.to_owned())) => {
                self.memory.get(id, consumer)
            }
            Ok(None) => None,
            Err(()) => self.memory.get(id, consumer),
        }
    }

    /// Forgets the response `id` of `consumer` everywhere; false when
    /// there was none.
    pub(crate) async fn delete(&self, id: &str, consumer: &str) -> bool {
        let local = self.memory.delete(id, consumer);
        let Some(redis) = &self.redis else {
            return local;
        };
        if !local {
            match redis.fetch(id).await {
                Ok(Some(r)) if r.consumer == consumer => {}
                _ => return false,
            }
        }
        if !redis.remove(id).await {
            redis.later(Pending::Delete(id.to_owned()));
        }
        true
    }
}

/// `GET /v1/responses/{id}`, `DELETE /v1/responses/{id}` and
/// `GET /v1/responses/{id}/input_items`, for the consumer of `ex`: from
/// what Loom kept, else from the first provider that keeps responses
/// itself (OpenAI, Azure OpenAI), which created the ones Loom did not.
/// `query` is the request's query (list parameters), passed on.
pub(crate) async fn serve(
    rt: &crate::runtime::state::Runtime,
    ex: &crate::runtime::exchange::Exchange,
    rest: &str,
    query: Option<&str>,
    method: &http::Method,
) -> Result<http::Response<crate::runtime::body::Body>, super::ApiError> {
    use loom_providers::Adapter as _;
    match kept_here(&rt.kept, ex, rest, method).await {
        Err(super::ApiError::NotFound { message, code }) => {
            let Some(provider) = rt
                .providers
                .providers()
                .iter()
                .find(|p| p.adapter().serves_responses())
            else {
                return Err(super::ApiError::NotFound { message, code });
            };
            let rest = match query {
                Some(q) => format!("{rest}?{q}"),
                None => rest.to_owned(),
            };
            let body = provider
                .adapter()
                .kept_response(method.clone(), &rest)
                .await
                .map_err(super::ApiError::from)?;
            Ok(crate::runtime::body::json_response(
                http::StatusCode::OK,
                body,
            ))
        }
        other => other,
    }
}

/// [`serve`] from what Loom kept.
async fn kept_here(
    kept: &Kept,
    ex: &crate::runtime::exchange::Exchange,
    rest: &str,
    method: &http::Method,
) -> Result<http::Response<crate::runtime::body::Body>, super::ApiError> {
    use http::{Method, StatusCode};

    let store = kept;
    let consumer = ex.consumer_name();
    let (id, items) = match rest.strip_suffix("/input_items") {
        Some(id) => (id, true),
        None => (rest, false),
    };
    let not_found = || super::ApiError::NotFound {
        message: format!("Response with id '{id}' not found."),
        code: "not_found",
    };
    let json = |v: Value| {
        crate::runtime::body::json_response(
            StatusCode::OK,
            serde_json::to_vec(&v).unwrap_or_default(),
        )
    };
    match (method, items) {
        (&Method::GET, false) => {
            let kept = store.get(id, consumer).await.ok_or_else(not_found)?;
            Ok(crate::runtime::body::json_response(
                StatusCode::OK,
                kept.response,
            ))
        }
        (&Method::GET, true) => {
            let kept = store.get(id, consumer).await.ok_or_else(not_found)?;
            let first = kept.input.first().and_then(|i| i.get("id")).cloned();
            let last = kept.input.last().and_then(|i| i.get("id")).cloned();
            Ok(json(serde_json::json!({
                "object": "list", "data": kept.input,
                "first_id": first, "last_id": last, "has_more": false
            })))
        }
        (&Method::DELETE, false) => {
            if !store.delete(id, consumer).await {
                return Err(not_found());
            }
            Ok(json(
                serde_json::json!({"id": id, "object": "response.deleted", "deleted": true}),
            ))
        }
        _ => Err(super::ApiError::MethodNotAllowed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn memory_only() -> Kept {
        Kept::new(Arc::new(ResponseStore::default()), None)
    }

    #[tokio::test]
    async fn kept_per_consumer_and_bounded() {
        let store = memory_only();
        store.put(
            "resp_1",
            "team-a",
            vec![json!({"role": "user", "content": "hi"})],
            vec![],
            Bytes::from_static(b"{}"),
        );
        assert!(store.get("resp_1", "team-a").await.is_some());
        assert!(
            store.get("resp_1", "team-b").await.is_none(),
            "another consumer's response is not found"
        );
        assert!(!store.delete("resp_1", "team-b").await);
        assert!(store.delete("resp_1", "team-a").await);
        assert!(store.get("resp_1", "team-a").await.is_none());
        for i in 0..MAX_ENTRIES + 5 {
            store.put(
                &format!("r{i}"),
                "c",
                vec![],
                vec![],
                Bytes::from_static(b"{}"),
            );
        }
        assert!(
            store.get("r0", "c").await.is_none(),
            "the oldest went first"
        );
        assert!(
            store
                .get(&format!("r{}", MAX_ENTRIES + 4), "c")
                .await
                .is_some()
        );
    }

    #[tokio::test]
    async fn bounded_by_bytes() {
        let memory = Arc::new(ResponseStore::default());
        memory.bound(Duration::from_secs(60), 4_000);
        let store = Kept::new(memory, None);
        let big = Bytes::from(vec![b'x'; 1_500]);
        for id in ["a", "b", "c"] {
            store.put(id, "c", vec![], vec![], big.clone());
        }
        assert!(
            store.get("a", "c").await.is_none(),
            "past the bound the oldest go"
        );
        assert!(store.get("c", "c").await.is_some());
        store.put("huge", "c", vec![], vec![], Bytes::from(vec![b'x'; 5_000]));
        assert!(
            store.get("huge", "c").await.is_none(),
            "larger than the bound: not kept"
        );
        assert!(
            store.get("c", "c").await.is_some(),
            "and nothing pushed out for it"
        );
    }
}

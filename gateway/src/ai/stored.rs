//! Responses kept for the Responses API's state, for providers reached by
//! translation (OpenAI keeps its own): a response created with `store`
//! (the default) can be continued with `previous_response_id`, read back
//! with `GET /v1/responses/{id}` and its input with `.../input_items`, and
//! deleted. Each is scoped to the consumer that created it: another
//! consumer gets 404, as for an id that never existed.
//!
//! Kept in memory, process-wide (a configuration reload keeps them),
//! bounded by count, by bytes and by age; the oldest go first. The lock is
//! held only to insert, look up or remove, never across an await.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;

/// Responses kept at most.
const MAX_ENTRIES: usize = 10_000;
/// Bytes kept at most (input items, output items and the response object).
const MAX_BYTES: usize = 256 << 20;
/// How long a response is kept.
const TTL: Duration = Duration::from_secs(24 * 3600);

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

#[derive(Debug, Default)]
struct Inner {
    by_id: HashMap<String, Stored>,
    /// Ids, oldest first.
    order: VecDeque<String>,
    bytes: usize,
}

/// The kept responses of the process.
#[derive(Debug, Default)]
pub struct ResponseStore {
    inner: Mutex<Inner>,
}

impl ResponseStore {
    /// Keeps a response, dropping the oldest past the bounds.
    pub(crate) fn put(
        &self,
        id: &str,
        consumer: &str,
        input: Vec<Value>,
        output: Vec<Value>,
        response: Bytes,
    ) {
        let size = response.len()
            + input
                .iter()
                .chain(&output)
                .map(|v| v.to_string().len())
                .sum::<usize>();
        if size > MAX_BYTES {
            return;
        }
        let stored = Stored {
            consumer: consumer.to_owned(),
            input,
            output,
            response,
            size,
            at: Instant::now(),
        };
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if let Some(old) = inner.by_id.insert(id.to_owned(), stored) {
            inner.bytes -= old.size;
            inner.order.retain(|i| i != id);
        }
        inner.bytes += size;
        inner.order.push_back(id.to_owned());
        while inner.order.len() > MAX_ENTRIES || inner.bytes > MAX_BYTES {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            if let Some(old) = inner.by_id.remove(&oldest) {
                inner.bytes -= old.size;
            }
        }
    }

    /// The response `id` of `consumer`, if kept and not expired.
    pub(crate) fn get(&self, id: &str, consumer: &str) -> Option<Stored> {
        let inner = self.inner.lock().ok()?;
        inner
            .by_id
            .get(id)
            .filter(|s| s.consumer == consumer && s.at.elapsed() < TTL)
            .cloned()
    }

    /// Forgets the response `id` of `consumer`; false when there was none.
    pub(crate) fn delete(&self, id: &str, consumer: &str) -> bool {
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

/// `GET /v1/responses/{id}`, `DELETE /v1/responses/{id}` and
/// `GET /v1/responses/{id}/input_items`, for the consumer of `ex`.
pub(crate) fn serve(
    ex: &crate::runtime::exchange::Exchange,
    rest: &str,
    method: &http::Method,
) -> Result<http::Response<crate::runtime::body::Body>, super::ApiError> {
    use http::{Method, StatusCode};

    let store = &ex.shared().responses;
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
            let kept = store.get(id, consumer).ok_or_else(not_found)?;
            Ok(crate::runtime::body::json_response(
                StatusCode::OK,
                kept.response,
            ))
        }
        (&Method::GET, true) => {
            let kept = store.get(id, consumer).ok_or_else(not_found)?;
            let first = kept.input.first().and_then(|i| i.get("id")).cloned();
            let last = kept.input.last().and_then(|i| i.get("id")).cloned();
            Ok(json(serde_json::json!({
                "object": "list", "data": kept.input,
                "first_id": first, "last_id": last, "has_more": false
            })))
        }
        (&Method::DELETE, false) => {
            if !store.delete(id, consumer) {
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

    #[test]
    fn kept_per_consumer_and_bounded() {
        let store = ResponseStore::default();
        store.put(
            "resp_1",
            "team-a",
            vec![json!({"role": "user", "content": "hi"})],
            vec![],
            Bytes::from_static(b"{}"),
        );
        assert!(store.get("resp_1", "team-a").is_some());
        assert!(
            store.get("resp_1", "team-b").is_none(),
            "another consumer's response is not found"
        );
        assert!(!store.delete("resp_1", "team-b"));
        assert!(store.delete("resp_1", "team-a"));
        assert!(store.get("resp_1", "team-a").is_none());
        for i in 0..MAX_ENTRIES + 5 {
            store.put(
                &format!("r{i}"),
                "c",
                vec![],
                vec![],
                Bytes::from_static(b"{}"),
            );
        }
        assert!(store.get("r0", "c").is_none(), "the oldest went first");
        assert!(store.get(&format!("r{}", MAX_ENTRIES + 4), "c").is_some());
    }
}

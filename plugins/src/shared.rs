//! What plugins share across instances and threads: shared data (with
//! compare-and-swap), shared queues, and metrics. Kept per process and keyed
//! by `vm_id`, so a plugin reloaded with the same `vm_id` keeps its data, as
//! in Envoy.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use tokio::sync::mpsc::UnboundedSender;

use super::abi::{MetricKind, Status};

/// Shared data of one `vm_id`: key → (value, cas).
type Data = HashMap<String, (Vec<u8>, u32)>;

struct Queue {
    items: VecDeque<Vec<u8>>,
    /// The root context that registered it, told when an item arrives.
    owner: Option<(UnboundedSender<u32>, u32)>,
}

#[derive(Default)]
struct Tables {
    data: HashMap<String, Data>,
    next_cas: u32,
    queues: HashMap<u32, Queue>,
    queue_names: HashMap<(String, String), u32>,
    next_queue: u32,
}

static TABLES: LazyLock<Mutex<Tables>> = LazyLock::new(Default::default);

fn tables() -> std::sync::MutexGuard<'static, Tables> {
    TABLES.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The value and its cas token.
pub fn get(vm_id: &str, key: &str) -> Option<(Vec<u8>, u32)> {
    tables().data.get(vm_id)?.get(key).cloned()
}

/// Sets a value; a non-zero `cas` must match the current token.
pub fn set(vm_id: &str, key: &str, value: &[u8], cas: u32) -> Status {
    let mut t = tables();
    t.next_cas = t.next_cas.wrapping_add(1).max(1);
    let next = t.next_cas;
    let data = t.data.entry(vm_id.to_owned()).or_default();
    match data.get_mut(key) {
        Some(entry) => {
            if cas != 0 && cas != entry.1 {
                return Status::CasMismatch;
            }
            entry.0.clear();
            entry.0.extend_from_slice(value);
            entry.1 = next;
        }
        None => {
            data.insert(key.to_owned(), (value.to_vec(), next));
        }
    }
    Status::Ok
}

/// Registers (or takes over) the queue `name` for a root context; its id.
pub fn register_queue(vm_id: &str, name: &str, notify: UnboundedSender<u32>, root: u32) -> u32 {
    let mut t = tables();
    let key = (vm_id.to_owned(), name.to_owned());
    let id = match t.queue_names.get(&key) {
        Some(id) => *id,
        None => {
            t.next_queue = t.next_queue.wrapping_add(1).max(1);
            let id = t.next_queue;
            t.queue_names.insert(key, id);
            id
        }
    };
    let q = t.queues.entry(id).or_insert_with(|| Queue {
        items: VecDeque::new(),
        owner: None,
    });
    q.owner = Some((notify, root));
    id
}

/// The id of a queue another plugin registered.
pub fn resolve_queue(vm_id: &str, name: &str) -> Option<u32> {
    tables()
        .queue_names
        .get(&(vm_id.to_owned(), name.to_owned()))
        .copied()
}

/// Most queued items a queue keeps; older ones are dropped past it.
const QUEUE_BOUND: usize = 10_000;

pub fn enqueue(id: u32, value: &[u8]) -> Status {
    let mut t = tables();
    let Some(q) = t.queues.get_mut(&id) else {
        return Status::NotFound;
    };
    if q.items.len() >= QUEUE_BOUND {
        q.items.pop_front();
    }
    q.items.push_back(value.to_vec());
    if let Some((tx, _)) = &q.owner
        && tx.send(id).is_err()
    {
        q.owner = None;
    }
    Status::Ok
}

pub fn dequeue(id: u32) -> Result<Vec<u8>, Status> {
    let mut t = tables();
    let q = t.queues.get_mut(&id).ok_or(Status::NotFound)?;
    q.items.pop_front().ok_or(Status::Empty)
}

/// Upper bounds of the buckets of plugin histograms.
const BUCKETS: [u64; 12] = [
    1, 5, 10, 50, 100, 500, 1_000, 5_000, 10_000, 50_000, 100_000, 1_000_000,
];

/// One metric a plugin defined.
pub struct Metric {
    plugin: String,
    name: String,
    kind: MetricKind,
    value: AtomicI64,
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
}

#[derive(Default)]
struct Metrics {
    list: Vec<Arc<Metric>>,
}

static METRICS: LazyLock<Mutex<Metrics>> = LazyLock::new(Default::default);

fn metrics() -> std::sync::MutexGuard<'static, Metrics> {
    METRICS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Defines (or finds) a plugin's metric; its id is global, so every
/// instance of the plugin gets the same id for the same name.
pub fn define_metric(plugin: &str, kind: MetricKind, name: &str) -> u32 {
    let mut m = metrics();
    if let Some(i) = m
        .list
        .iter()
        .position(|x| x.plugin == plugin && x.name == name && x.kind == kind)
    {
        return i as u32 + 1;
    }
    m.list.push(Arc::new(Metric {
        plugin: plugin.to_owned(),
        name: name.to_owned(),
        kind,
        value: AtomicI64::new(0),
        buckets: Default::default(),
        count: AtomicU64::new(0),
    }));
    m.list.len() as u32
}

/// A metric by id, for the instance's own table.
pub fn metric(id: u32) -> Option<Arc<Metric>> {
    metrics().list.get((id as usize).checked_sub(1)?).cloned()
}

impl Metric {
    pub fn increment(&self, by: i64) -> Status {
        match self.kind {
            MetricKind::Histogram => Status::BadArgument,
            MetricKind::Counter if by < 0 => Status::BadArgument,
            _ => {
                self.value.fetch_add(by, Ordering::Relaxed);
                Status::Ok
            }
        }
    }

    pub fn record(&self, v: u64) -> Status {
        match self.kind {
            MetricKind::Histogram => {
                if let Some(i) = BUCKETS.iter().position(|b| v <= *b) {
                    self.buckets[i].fetch_add(1, Ordering::Relaxed);
                }
                self.count.fetch_add(1, Ordering::Relaxed);
                self.value
                    .fetch_add(i64::try_from(v).unwrap_or(i64::MAX), Ordering::Relaxed);
            }
            _ => self
                .value
                .store(i64::try_from(v).unwrap_or(i64::MAX), Ordering::Relaxed),
        }
        Status::Ok
    }

    pub fn get(&self) -> u64 {
        let v = match self.kind {
            MetricKind::Histogram => self.count.load(Ordering::Relaxed) as i64,
            _ => self.value.load(Ordering::Relaxed),
        };
        v.max(0) as u64
    }
}

/// A metric name as Prometheus accepts it.
fn prom_name(kind: MetricKind, name: &str) -> String {
    let mut out = String::from("loom_plugin_");
    out.extend(name.chars().map(|c| {
        if c.is_ascii_alphanumeric() || c == '_' {
            c
        } else {
            '_'
        }
    }));
    if kind == MetricKind::Counter && !out.ends_with("_total") {
        out.push_str("_total");
    }
    out
}

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Appends every plugin metric to a Prometheus text exposition, as
/// `loom_plugin_<name>{plugin="..."}`.
pub fn render_metrics(out: &mut String) {
    let list = metrics().list.clone();
    let mut typed = std::collections::HashSet::new();
    for m in &list {
        let name = prom_name(m.kind, &m.name);
        if typed.insert(name.clone()) {
            let kind = match m.kind {
                MetricKind::Counter => "counter",
                MetricKind::Gauge => "gauge",
                MetricKind::Histogram => "histogram",
            };
            let _ = writeln!(out, "# HELP {name} Defined by a Proxy-Wasm plugin.");
            let _ = writeln!(out, "# TYPE {name} {kind}");
        }
        let plugin = label(&m.plugin);
        match m.kind {
            MetricKind::Histogram => {
                let mut cumulative = 0;
                for (b, n) in BUCKETS.iter().zip(&m.buckets) {
                    cumulative += n.load(Ordering::Relaxed);
                    let _ = writeln!(
                        out,
                        "{name}_bucket{{plugin=\"{plugin}\",le=\"{b}\"}} {cumulative}"
                    );
                }
                let count = m.count.load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "{name}_bucket{{plugin=\"{plugin}\",le=\"+Inf\"}} {count}"
                );
                let _ = writeln!(
                    out,
                    "{name}_sum{{plugin=\"{plugin}\"}} {}",
                    m.value.load(Ordering::Relaxed)
                );
                let _ = writeln!(out, "{name}_count{{plugin=\"{plugin}\"}} {count}");
            }
            _ => {
                let _ = writeln!(
                    out,
                    "{name}{{plugin=\"{plugin}\"}} {}",
                    m.value.load(Ordering::Relaxed)
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_and_swap() {
        assert_eq!(set("t-cas", "k", b"1", 0), Status::Ok);
        let (v, cas) = get("t-cas", "k").unwrap();
        assert_eq!(v, b"1");
        assert_eq!(set("t-cas", "k", b"2", cas), Status::Ok);
        // The old token no longer matches.
        assert_eq!(set("t-cas", "k", b"3", cas), Status::CasMismatch);
        assert_eq!(get("t-cas", "k").unwrap().0, b"2");
        // Another vm_id does not see it.
        assert!(get("t-other", "k").is_none());
    }

    #[test]
    fn queues_notify_their_owner() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let id = register_queue("t-q", "jobs", tx, 7);
        assert_eq!(resolve_queue("t-q", "jobs"), Some(id));
        assert_eq!(resolve_queue("t-q", "nope"), None);
        assert_eq!(dequeue(id), Err(Status::Empty));
        assert_eq!(enqueue(id, b"a"), Status::Ok);
        assert_eq!(rx.try_recv().unwrap(), id);
        assert_eq!(dequeue(id).unwrap(), b"a");
        assert_eq!(enqueue(9999, b"a"), Status::NotFound);
    }

    #[test]
    fn metrics_render_as_prometheus() {
        let c = define_metric("t-plugin", MetricKind::Counter, "hits.seen");
        assert_eq!(
            define_metric("t-plugin", MetricKind::Counter, "hits.seen"),
            c
        );
        let h = define_metric("t-plugin", MetricKind::Histogram, "size");
        assert_eq!(metric(c).unwrap().increment(2), Status::Ok);
        assert_eq!(metric(c).unwrap().increment(-1), Status::BadArgument);
        metric(h).unwrap().record(7);
        let mut out = String::new();
        render_metrics(&mut out);
        assert!(
            out.contains("loom_plugin_hits_seen_total{plugin=\"t-plugin\"} 2"),
            "{out}"
        );
        assert!(
            out.contains("loom_plugin_size_bucket{plugin=\"t-plugin\",le=\"10\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("loom_plugin_size_count{plugin=\"t-plugin\"} 1"),
            "{out}"
        );
    }
}

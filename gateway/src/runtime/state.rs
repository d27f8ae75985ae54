//! Process state and per-configuration state.
//!
//! [`Shared`] lives as long as the process: metrics, provider statistics, HTTP
//! connection pools, readiness. [`Runtime`] is what one configuration compiles
//! to; it is swapped atomically on reload, and every request holds the
//! `Arc<Runtime>` it started with until it finishes, streams included.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Mutex, OnceLock};

use anyhow::Context;
use arc_swap::ArcSwap;
use loom_accounting::{Accountant, Clock, MemoryStore, RedisStore, Store};
use loom_config::{Config, StoreKind, TokenAccounting};
use loom_guardrails::Policies;
use loom_inference::batch::Batcher;
use loom_inference::classify::SequenceClassifier;
use loom_inference::embed::{DIMENSIONS, LocalEmbedder, ModelFiles};
use loom_providers::Adapter as _;
use loom_providers::{Registry, StatsBook};
use loom_proxy::{Forwarder, Upstream};
use loom_semantic_cache::memory::MemoryIndex;
use loom_semantic_cache::{Answer, BoxFuture, Embedder, SemanticCache};

use crate::admin::metrics::Metrics;
use crate::ai::cache::CacheStage;
use crate::route::routes::RouteTable;

/// Where the configuration came from.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    File(PathBuf),
    /// The built-in quickstart configuration.
    Embedded,
}

/// State that outlives configuration reloads.
pub struct Shared {
    pub runtime: ArcSwap<Runtime>,
    pub metrics: Metrics,
    pub stats: StatsBook,
    pub http: loom_providers::HttpClient,
    pub forwarder: Forwarder,
    /// True once the configuration is loaded and every listener is bound.
    pub ready: AtomicBool,
    pub generation: AtomicU64,
    pub access_log: bool,
    pub stores: StoreCache,
    /// The certificates of `https` listeners, by listener name, reloaded
    /// with the configuration.
    pub certificates: Vec<(String, Arc<crate::listen::tls::Certificates>)>,
    /// The workers' connection counts, read by `/metrics`.
    pub spread: Arc<crate::listen::spread::Spread>,
    /// `server.max_requests_per_worker` and `server.shed_at_loop_delay`
    /// (fixed at start).
    pub bounds: crate::listen::overload::Bounds,
}

impl Shared {
    /// The process state for `config`: its runtime (generation 1), metrics,
    /// clients and stores, and the inboxes of `workers` workers. `clock_offset`
    /// shifts the clock that limit periods are kept by (tests only).
    pub fn build(
        config: Config,
        clock_offset: i64,
        workers: usize,
    ) -> anyhow::Result<(Arc<Shared>, Vec<crate::listen::spread::Inbox>)> {
        let http = loom_providers::HttpClient::new()?;
        let stats = StatsBook::default();
        let metrics = Metrics::new().context("registering metrics")?;
        let stores = StoreCache::new(Clock::with_offset(clock_offset));
        let bounds = crate::listen::overload::Bounds {
            max_requests: config.server.max_requests_per_worker,
            max_delay_us: config
                .server
                .shed_at_loop_delay
                .map_or(0, |d| d.get().as_micros().max(1) as u64),
        };
        let access_log = config.logging.access_log;
        let certificates = crate::listen::server::certificates(&config.listeners)?;
        let runtime = Runtime::build(config, &http, &stats, &metrics, &stores, 1)?;
        let (spread, inboxes) = crate::listen::spread::Spread::new(workers);
        let shared = Arc::new(Shared {
            certificates,
            spread,
            runtime: ArcSwap::from_pointee(runtime),
            metrics,
            stats,
            http,
            forwarder: loom_proxy::Forwarder::default(),
            ready: AtomicBool::new(false),
            generation: AtomicU64::new(1),
            access_log,
            stores,
            bounds,
        });
        Ok((shared, inboxes))
    }
}

/// Usage stores and loaded models, kept across reloads so that neither the
/// memory ledger nor Redis records waiting to be written are lost when
/// configuration changes, and a model is read from disk once.
#[derive(Default)]
pub struct StoreCache {
    pub clock: Clock,
    memory: OnceLock<Arc<Store>>,
    redis: Mutex<Vec<(loom_config::RedisStore, Arc<Store>)>>,
    embedders: Mutex<Vec<(PathBuf, Arc<LocalEmbedder>)>>,
    /// Embedding workers, one per models folder.
    batchers: Mutex<Vec<(PathBuf, Batcher)>>,
    /// Semantic cache indexes by embedder identity, with the snapshot file
    /// the latest configuration names.
    caches: Mutex<Vec<CacheSlot>>,
}

struct CacheSlot {
    identity: String,
    index: Arc<MemoryIndex<Answer>>,
    snapshot: Option<PathBuf>,
}

/// A configured provider as the cache's embedder.
struct ProviderEmbedder {
    provider: Arc<loom_providers::Provider>,
    model: String,
}

impl Embedder for ProviderEmbedder {
    fn embed<'a>(&'a self, text: &'a str) -> BoxFuture<'a, Result<Vec<f32>, String>> {
        Box::pin(async move {
            let req = loom_models::embeddings::EmbeddingRequest {
                model: self.model.clone(),
                input: serde_json::Value::String(text.to_owned()),
                ..Default::default()
            };
            let reply = self
                .provider
                .adapter()
                .embeddings(&req, None)
                .await
                .map_err(|e| e.to_string())?;
            let body: loom_models::embeddings::EmbeddingResponse =
                serde_json::from_slice(&reply.body).map_err(|e| e.to_string())?;
            let first = body
                .data
                .into_iter()
                .next()
                .ok_or("no embedding returned")?;
            let mut v: Vec<f32> =
                serde_json::from_value(first.embedding).map_err(|e| e.to_string())?;
            // Providers' vectors are usually unit length already; make sure,
            // so that a dot product is the cosine.
            let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
            if norm > 0.0 {
                v.iter_mut().for_each(|x| *x /= norm);
            }
            Ok(v)
        })
    }
}

/// The local sentence embedder as the guardrails see it.
struct Local(Arc<LocalEmbedder>);

impl loom_guardrails::classifier::Embedder for Local {
    fn embed(&self, text: &str) -> Result<Vec<f32>, String> {
        self.0.embed(text).map_err(|e| e.to_string())
    }
}

/// An injection classifier of the operator's own, as the guardrails see it.
struct Own(SequenceClassifier);

impl loom_guardrails::classifier::TextClassifier for Own {
    fn probability(&self, text: &str) -> Result<f32, String> {
        self.0.probability(text).map_err(|e| e.to_string())
    }
}

/// The models folder a configuration names, or `$LOOM_MODELS`, or
/// `~/.cache/loom/models`.
fn models_dir(named: Option<&str>) -> PathBuf {
    named
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("LOOM_MODELS").map(PathBuf::from))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/loom/models")))
        .unwrap_or_else(|| PathBuf::from("models"))
}

impl StoreCache {
    /// A cache whose accountants read time from `clock`.
    pub fn new(clock: Clock) -> StoreCache {
        StoreCache {
            clock,
            ..StoreCache::default()
        }
    }

    /// The models `config`'s classifiers use, each loaded once per folder
    /// and kept across reloads: the sentence embedder (one models folder per
    /// gateway) and any injection classifier of the operator's own.
    pub fn models(&self, config: &Config) -> anyhow::Result<loom_guardrails::Models> {
        let wanted = Policies::classifiers(config);
        let mut out = loom_guardrails::Models::default();
        if wanted.is_empty() {
            return Ok(out);
        }
        let mut folders: Vec<Option<String>> = Vec::new();
        for c in &wanted {
            if !folders.contains(&c.models) {
                folders.push(c.models.clone());
            }
        }
        let [one] = folders.as_slice() else {
            anyhow::bail!(
                "classifier.models: every policy must name the same models folder (one embedder per gateway)"
            );
        };
        let dir = models_dir(one.as_deref());
        let files = ModelFiles::in_dir(&dir);
        if wanted.iter().any(|c| c.model.is_none()) {
            let e = self.local_embedder(&dir).context(
                "classifier: loading the sentence embedder (scripts/fetch-models fetches it)",
            )?;
            out.embedder = Some(Arc::new(Local(e)));
        }
        for c in &wanted {
            let Some(own) = &c.model else { continue };
            if out.injection.iter().any(|(d, _)| d == own) {
                continue;
            }
            let labels = if c.labels.is_empty() {
                vec!["INJECTION".to_owned(), "JAILBREAK".to_owned()]
            } else {
                c.labels.clone()
            };
            let m = SequenceClassifier::load(std::path::Path::new(own), &files.runtime, &labels)
                .with_context(|| format!("prompt_injection.classifier.model: loading {own}"))?;
            out.injection.push((own.clone(), Arc::new(Own(m))));
        }
        Ok(out)
    }

    /// The local embedder of `dir`, loaded once.
    fn local_embedder(&self, dir: &std::path::Path) -> anyhow::Result<Arc<LocalEmbedder>> {
        let mut cache = self.embedders.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, e)) = cache.iter().find(|(d, _)| d == dir) {
            return Ok(e.clone());
        }
        let e = Arc::new(LocalEmbedder::load(&ModelFiles::in_dir(dir))?);
        cache.push((dir.to_owned(), e.clone()));
        Ok(e)
    }

    /// The semantic cache `config` asks for: its index kept across reloads
    /// while the embedder is the same (and loaded from the snapshot file
    /// when first made), with this configuration's embedder.
    pub fn semantic_cache(
        &self,
        config: &Config,
        providers: &Registry,
    ) -> anyhow::Result<Option<SemanticCache>> {
        let c = &config.ai_gateway.semantic_cache;
        if !c.enabled {
            return Ok(None);
        }
        let (identity, dims, embedder): (String, usize, Option<Arc<dyn Embedder>>) = match &c
            .embedding
        {
            Some(e) if e.provider != "local" => {
                let provider = providers
                    .providers()
                    .iter()
                    .find(|p| p.name() == e.provider)
                    .with_context(|| {
                        format!("semantic_cache.embedding: no provider {:?}", e.provider)
                    })?
                    .clone();
                let model = e
                    .model
                    .clone()
                    .unwrap_or_else(|| "text-embedding-3-small".to_owned());
                (
                    format!("provider:{}:{model}", e.provider),
                    0,
                    Some(Arc::new(ProviderEmbedder { provider, model })),
                )
            }
            named => {
                let dir = models_dir(named.as_ref().and_then(|e| e.models.as_deref()));
                match self.batcher(&dir) {
                    Ok(b) => (
                        format!("local:{}", dir.display()),
                        DIMENSIONS,
                        Some(Arc::new(b) as Arc<dyn Embedder>),
                    ),
                    // Named explicitly: the operator expects similarity.
                    Err(e) if named.is_some() => {
                        return Err(e.context(
                                "semantic_cache.embedding: loading the local model (scripts/fetch-models fetches it)",
                            ));
                    }
                    Err(e) => {
                        tracing::warn!(
                            error = %format!("{e:#}"),
                            "semantic_cache: the local embedding model is not available; only identical requests hit (scripts/fetch-models fetches it)"
                        );
                        ("exact".to_owned(), 0, None)
                    }
                }
            }
        };
        let max = c.max_size.map_or(256 << 20, |m| m.0 as usize);
        let ttl = c.ttl.map_or(3600, |t| t.get().as_secs().max(1));
        let snapshot = c.snapshot.as_ref().map(PathBuf::from);
        let mut slots = self.caches.lock().unwrap_or_else(|e| e.into_inner());
        let index = match slots.iter_mut().find(|s| s.identity == identity) {
            Some(slot) => {
                slot.index.set_limits(max, ttl);
                slot.snapshot.clone_from(&snapshot);
                slot.index.clone()
            }
            None => {
                let index = Arc::new(MemoryIndex::new(max, ttl, dims));
                if let Some(path) = &snapshot {
                    match loom_semantic_cache::snapshot::load(&index, path, self.clock.now_unix()) {
                        Ok(n) => {
                            tracing::info!(entries = n, file = %path.display(), "semantic cache loaded")
                        }
                        Err(e) => tracing::warn!(error = %e, "semantic cache snapshot not loaded"),
                    }
                }
                slots.push(CacheSlot {
                    identity,
                    index: index.clone(),
                    snapshot,
                });
                index
            }
        };
        let mut cache = SemanticCache::new(index, embedder);
        if c.backend == loom_config::CacheBackend::Redis {
            let redis = config
                .ai_gateway
                .cache_redis()
                .context("semantic_cache.backend: redis needs semantic_cache.redis")?;
            let conn = loom_accounting::redis_connection(redis)
                .context("semantic_cache.redis: connecting")?;
            cache = cache.with_shared(Arc::new(loom_semantic_cache::shared::SharedExact::new(
                conn,
                &redis.key_prefix,
                redis.timeout.get(),
            )));
        }
        if c.backend == loom_config::CacheBackend::Qdrant {
            let q = c
                .qdrant
                .as_ref()
                .context("semantic_cache.backend: qdrant needs semantic_cache.qdrant")?;
            let api_key = q.api_key.expose();
            let index = loom_semantic_cache::qdrant::QdrantIndex::connect(
                &loom_semantic_cache::qdrant::QdrantSettings {
                    url: q.url.clone(),
                    api_key: (!api_key.is_empty()).then(|| api_key.to_owned()),
                    collection: q.collection.clone(),
                    timeout: q.timeout.get(),
                },
            )
            .map_err(|e| anyhow::anyhow!("semantic_cache.qdrant: {e}"))?;
            cache = cache.with_qdrant(Arc::new(index));
        }
        Ok(Some(cache))
    }

    /// The embedding worker of `dir`, started once.
    fn batcher(&self, dir: &std::path::Path) -> anyhow::Result<Batcher> {
        let mut batchers = self.batchers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, b)) = batchers.iter().find(|(d, _)| d == dir) {
            return Ok(b.clone());
        }
        let b = Batcher::start(self.local_embedder(dir)?)?;
        batchers.push((dir.to_owned(), b.clone()));
        Ok(b)
    }

    /// Writes every cache with a snapshot file (at shutdown).
    pub fn save_caches(&self) {
        let slots = self.caches.lock().unwrap_or_else(|e| e.into_inner());
        for slot in slots.iter() {
            let Some(path) = &slot.snapshot else { continue };
            match loom_semantic_cache::snapshot::save(&slot.index, path) {
                Ok(n) => {
                    tracing::info!(entries = n, file = %path.display(), "semantic cache saved")
                }
                Err(e) => tracing::warn!(error = %e, "semantic cache snapshot not saved"),
            }
        }
    }

    /// The store `accounting` names, reused when an earlier configuration had it.
    pub fn get(&self, accounting: &TokenAccounting) -> anyhow::Result<Arc<Store>> {
        let redis = accounting
            .store
            .as_ref()
            .filter(|s| s.kind == StoreKind::Redis)
            .and_then(|s| s.redis.as_ref());
        let Some(cfg) = redis else {
            let retention = (accounting.retention_days, accounting.retention_months);
            return Ok(self
                .memory
                .get_or_init(|| Arc::new(Store::Memory(MemoryStore::new(retention))))
                .clone());
        };
        let mut stores = self.redis.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, s)) = stores.iter().find(|(c, _)| c == cfg) {
            return Ok(s.clone());
        }
        let store = Arc::new(Store::Redis(RedisStore::connect(
            cfg,
            accounting.buffer_limit,
        )?));
        stores.push((cfg.clone(), store.clone()));
        Ok(store)
    }

    /// Every store in use, for a flush at shutdown.
    pub fn all(&self) -> Vec<Arc<Store>> {
        let mut v: Vec<_> = self.memory.get().cloned().into_iter().collect();
        v.extend(
            self.redis
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|(_, s)| s.clone()),
        );
        v
    }
}

/// What one configuration compiles to.
pub struct Runtime {
    pub config: Config,
    pub routes: RouteTable,
    pub providers: Registry,
    /// Routers of AI routes that override the routing strategy, by route id.
    pub route_routers: HashMap<String, loom_providers::Router>,
    /// Guardrail policies: global, per route and per consumer tier.
    pub guardrails: Policies,
    /// Consumers, limits, rate limits, prices and the usage store.
    pub accountant: Arc<Accountant>,
    /// The active health checker of this configuration's providers, stopped
    /// when the configuration is replaced.
    _health: Option<AbortOnDrop>,
    /// The semantic cache stage, when enabled.
    pub cache: Option<CacheStage>,
    /// Deletes expired entries from Qdrant, stopped with this configuration.
    _sweep: Option<AbortOnDrop>,
    /// Upstreams by name, for their health.
    pub upstreams: HashMap<String, Arc<Upstream>>,
    /// Active health checks of upstreams.
    _checks: Vec<AbortOnDrop>,
    /// Configuration generation, 1 for the first.
    pub generation: u64,
    pub streaming_enabled: bool,
}

impl Runtime {
    /// Compiles `config`, reusing the process's clients and statistics.
    pub fn build(
        config: Config,
        http: &loom_providers::HttpClient,
        stats: &StatsBook,
        metrics: &Metrics,
        stores: &StoreCache,
        generation: u64,
    ) -> anyhow::Result<Runtime> {
        let upstreams: HashMap<String, Arc<Upstream>> = config
            .upstreams
            .iter()
            .map(|u| Ok((u.name.clone(), Arc::new(Upstream::new(u)?))))
            .collect::<Result<_, loom_proxy::Error>>()?;
        // Active health checks, stopped with this configuration.
        let checks: Vec<AbortOnDrop> = upstreams
            .values()
            .filter(|u| u.checked())
            .map(|u| AbortOnDrop(tokio::spawn(u.clone().run_health_checks())))
            .collect();
        let plugins = load_plugins(&config.plugins, &upstreams)?;
        let routes = RouteTable::build(
            &config.routes,
            config.ai_gateway.max_body_size.0,
            metrics,
            |name| upstreams.get(name).cloned(),
            config.ai_gateway.ledger_redis(),
            &plugins,
        )?;
        let providers =
            Registry::build(&config.ai_gateway, http, stats).context("building providers")?;
        let route_routers = config
            .routes
            .iter()
            .filter_map(|r| {
                let strategy = r.strategy?;
                Some((
                    r.id.clone(),
                    loom_providers::Router::with_strategy(&config.ai_gateway, strategy),
                ))
            })
            .collect();
        let store = stores.get(&config.ai_gateway.token_accounting)?;
        let accountant = Arc::new(Accountant::new(
            &config.ai_gateway,
            &config.consumers,
            store,
            stores.clock,
        ));
        if accountant.consumers().is_empty()
            && config.routes.iter().any(|r| r.middleware.auth.is_some())
        {
            tracing::warn!(
                "routes require an API key but no consumers are configured: every request on them is refused"
            );
        }
        let health = &config.ai_gateway.routing.health_check;
        let _health = health.enabled.then(|| {
            AbortOnDrop(tokio::spawn(check_health(
                providers.providers().to_vec(),
                health.interval.get(),
                health.timeout.get(),
            )))
        });
        let cache = stores
            .semantic_cache(&config, &providers)?
            .map(|c| CacheStage::new(&config, c, stores.clock));
        // Qdrant expires nothing by itself: sweep what is past the TTL.
        let _sweep = cache.as_ref().and_then(|c| {
            let q = c.cache().qdrant()?.clone();
            let index = c.cache().index().clone();
            let clock = stores.clock;
            Some(AbortOnDrop(tokio::spawn(async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
                loop {
                    tick.tick().await;
                    q.expire(clock.now_unix(), index.ttl()).await;
                }
            })))
        });
        Ok(Runtime {
            cache,
            _sweep,
            upstreams,
            _checks: checks,
            routes,
            accountant,
            _health,
            providers,
            route_routers,
            guardrails: Policies::from_config(
                &config,
                metrics.guardrails.clone(),
                &stores.models(&config)?,
            ),
            generation,
            streaming_enabled: config.ai_gateway.streaming.enabled,
            config,
        })
    }
}

/// A background task that ends with its owner.
/// Loads the configured Proxy-Wasm plugins (compiled code is reused across
/// reloads; every reload starts new instances).
fn load_plugins(
    list: &[loom_config::Plugin],
    upstreams: &HashMap<String, Arc<Upstream>>,
) -> anyhow::Result<HashMap<String, loom_plugins::Plugin>> {
    use loom_plugins::{Phase, Plugin, PluginConfig};
    if list.is_empty() {
        return Ok(HashMap::new());
    }
    let callouts = loom_plugins::to_upstreams(upstreams.clone());
    let bytes = |v: &Option<serde_json::Value>| -> bytes::Bytes {
        match v {
            None => bytes::Bytes::new(),
            Some(serde_json::Value::String(s)) => bytes::Bytes::from(s.clone()),
            Some(other) => bytes::Bytes::from(other.to_string()),
        }
    };
    let mut out = HashMap::new();
    for p in list {
        let plugin = Plugin::load(PluginConfig {
            name: p.name.clone(),
            path: PathBuf::from(&p.path),
            config: bytes(&p.config),
            vm_config: bytes(&p.vm_config),
            vm_id: p.vm_id.clone().unwrap_or_else(|| p.name.clone()),
            fail_open: p.fail_open,
            phase: match p.phase {
                loom_config::PluginPhase::BeforeAuth => Phase::BeforeAuth,
                loom_config::PluginPhase::AfterAuth => Phase::AfterAuth,
            },
            max_memory: usize::try_from(p.max_memory.0).unwrap_or(usize::MAX),
            max_cpu_time: p.max_cpu_time.get(),
            callouts: callouts.clone(),
        })?;
        out.insert(p.name.clone(), plugin);
    }
    Ok(out)
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Checks every provider each `interval`, all at once, each within `timeout`.
async fn check_health(
    providers: Vec<Arc<loom_providers::Provider>>,
    interval: std::time::Duration,
    timeout: std::time::Duration,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let checks = providers.iter().map(|p| async move {
            if let Err(e) = p.health_check(timeout).await {
                tracing::warn!(provider = p.name(), error = %e, "health check failed");
            }
        });
        futures_util::future::join_all(checks).await;
    }
}

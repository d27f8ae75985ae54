//! Process state and per-configuration state.
//!
//! [`Shared`] lives as long as the process: metrics, provider statistics, HTTP
//! connection pools, readiness, and what outlives a configuration (usage
//! stores: `stores.rs`; models and cache indexes: `models.rs`). [`Runtime`]
//! is what one configuration compiles to; it is swapped atomically on
//! reload, and every request holds the `Arc<Runtime>` it started with until
//! it finishes, streams included.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};

use anyhow::Context;
use arc_swap::ArcSwap;
use loom_accounting::{Accountant, Clock};
use loom_config::Config;
use loom_guardrails::Policies;
use loom_providers::{Registry, StatsBook};
use loom_proxy::{Forwarder, Upstream};

use super::stores::StoreCache;
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
    /// Run-time keys (`control_plane`), fixed at start.
    pub control: Option<Arc<loom_control::Control>>,
}

impl Shared {
    /// The process state for `config`: its runtime (generation 1), metrics,
    /// clients and stores, and the inboxes of `workers` workers. `clock_offset`
    /// shifts the clock that limit periods are kept by (tests only).
    pub fn build(
        config: Config,
        clock_offset: i64,
        workers: usize,
        control: Option<Arc<loom_control::Control>>,
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
            control,
        });
        Ok((shared, inboxes))
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
    /// Responses kept for the Responses API (`previous_response_id`).
    pub kept: crate::ai::stored::Kept,
    /// The admin API's tokens.
    pub admin_auth: Arc<crate::admin::auth::AdminAuth>,
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
        let provider_settings = config.ai_gateway.providers();
        let providers =
            Registry::build(&provider_settings, http, stats).context("building providers")?;
        let route_routers = config
            .routes
            .iter()
            .filter_map(|r| {
                let strategy = r.strategy?;
                Some((
                    r.id.clone(),
                    loom_providers::Router::with_strategy(&provider_settings, strategy),
                ))
            })
            .collect();
        let store = stores.get(&config.ai_gateway.token_accounting)?;
        let accountant = Arc::new(Accountant::new(
            &config.ai_gateway.accounting(),
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
            guardrails: {
                let policies = config.guardrails();
                let models = stores.models(&policies)?;
                Policies::new(&policies, metrics.guardrails.clone(), &models)
            },
            generation,
            streaming_enabled: config.ai_gateway.streaming.enabled,
            kept: stores.kept_responses(&config.ai_gateway)?,
            admin_auth: Arc::new(crate::admin::auth::AdminAuth::new(&config.admin)),
            config,
        })
    }
}

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

/// A background task that ends with its owner.
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

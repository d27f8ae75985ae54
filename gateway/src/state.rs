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

use anyhow::Context;
use arc_swap::ArcSwap;
use loom_config::Config;
use loom_guardrails::Guardrails;
use loom_providers::{Registry, StatsBook};
use loom_proxy::{Forwarder, Upstream};

use crate::metrics::Metrics;
use crate::routes::RouteTable;

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
}

/// What one configuration compiles to.
pub struct Runtime {
    pub config: Config,
    pub routes: RouteTable,
    pub providers: Registry,
    /// Routers of AI routes that override the routing strategy, by route id.
    pub route_routers: HashMap<String, loom_providers::Router>,
    pub guardrails: Guardrails,
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
        generation: u64,
    ) -> anyhow::Result<Runtime> {
        let upstreams: HashMap<String, Arc<Upstream>> = config
            .upstreams
            .iter()
            .map(|u| Ok((u.name.clone(), Arc::new(Upstream::new(u)?))))
            .collect::<Result<_, loom_proxy::Error>>()?;
        let routes = RouteTable::build(
            &config.routes,
            config.ai_gateway.max_body_size.0,
            metrics,
            |name| upstreams.get(name).cloned(),
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
        Ok(Runtime {
            routes,
            providers,
            route_routers,
            guardrails: Guardrails::default(),
            generation,
            streaming_enabled: config.ai_gateway.streaming.enabled,
            config,
        })
    }
}

//! `loom`: the AI gateway and reverse proxy.
//!
//! `main` parses the command line, loads the configuration, binds the
//! listeners and waits for a signal. The request path itself starts in
//! [`pipeline::handle`].

mod admin;
mod ai;
mod listen;
mod route;
mod runtime;

use listen::{http3, server};
use runtime::{redact, reload};

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use loom_config::{Config, LogFormat};
use tokio::signal::unix::{SignalKind, signal};

use crate::admin::metrics::Metrics;
use crate::runtime::state::{ConfigSource, Runtime, Shared};
use crate::runtime::stores::StoreCache;

/// The built-in quickstart configuration (mock provider, loopback only).
const QUICKSTART: &str = include_str!("../../examples/quickstart.yaml");

#[derive(Parser)]
#[command(name = "loom", version, about = "AI gateway and reverse proxy")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Serve this configuration file (the same as `serve --config FILE`).
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway. Without --config, runs the built-in quickstart (mock provider).
    Serve {
        #[arg(long, short = 'c', value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Check a configuration file; prints each problem, or OK.
    Validate {
        #[arg(value_name = "FILE")]
        file: PathBuf,
    },
    /// Print the `sha256:` form of an API key, to put in `consumers[].keys`
    /// instead of the key itself. Reads the key from standard input.
    HashKey,
    /// Apply the control plane's database migrations (`control_plane.postgres`
    /// of the configuration), then exit.
    Migrate {
        #[arg(long, short = 'c', value_name = "FILE")]
        config: PathBuf,
    },
    /// Print the JSON Schema of the configuration file (for editors; the
    /// same as docs/loom.schema.json).
    Schema,
    /// Print the version.
    Version,
}

/// Accepts the Go-style single-dash `-config FILE` and `-config=FILE`.
fn normalise_args() -> Vec<String> {
    std::env::args()
        .map(|a| match a.as_str() {
            "-config" => "--config".to_owned(),
            _ if a.starts_with("-config=") => format!("-{a}"),
            _ => a,
        })
        .collect()
}

fn main() -> ExitCode {
    let cli = Cli::parse_from(normalise_args());
    match (cli.command, cli.config) {
        (Some(Command::Version), _) => {
            println!("loom {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        (Some(Command::Validate { file }), _) => validate(&file),
        (Some(Command::Schema), _) => {
            match serde_json::to_string_pretty(&loom_config::json_schema()) {
                Ok(text) => {
                    println!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("cannot print the schema: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        (Some(Command::HashKey), _) => hash_key(),
        (Some(Command::Migrate { config }), _) => migrate(&config),
        (Some(Command::Serve { config }), global) => run(config.or(global)),
        (None, Some(config)) => run(Some(config)),
        (None, None) => {
            eprintln!(
                "usage: loom serve [--config FILE] | loom validate FILE | loom version (try --help)"
            );
            ExitCode::from(2)
        }
    }
}

/// `loom migrate`: applies the control plane's migrations.
fn migrate(file: &std::path::Path) -> ExitCode {
    let config = match loom_config::check_file(file) {
        Ok(c) => c.config,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let Some(cp) = config.control_plane else {
        eprintln!(
            "{}: no control_plane section: nothing to migrate",
            file.display()
        );
        return ExitCode::from(2);
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(loom_control::Control::migrate(&cp)) {
        Ok(applied) if applied.is_empty() => {
            println!("up to date");
            ExitCode::SUCCESS
        }
        Ok(applied) => {
            for m in applied {
                println!("applied {m}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("migrate: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Reads a key from standard input (so it stays out of shell history) and
/// prints its digest.
fn hash_key() -> ExitCode {
    let mut key = String::new();
    if std::io::stdin().read_line(&mut key).is_err() || key.trim().is_empty() {
        eprintln!("usage: echo -n \"$KEY\" | loom hash-key");
        return ExitCode::from(2);
    }
    println!(
        "{}",
        loom_accounting::hash_key(key.trim_end_matches(['\r', '\n']))
    );
    ExitCode::SUCCESS
}

fn validate(file: &std::path::Path) -> ExitCode {
    let mut warnings = Vec::new();
    let checked = loom_config::check_file(file)
        .map_err(anyhow::Error::from)
        .and_then(|checked| {
            warnings = checked.warnings;
            let config = checked.config;
            // Building stores needs a runtime to exist; nothing runs on it.
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let _entered = rt.enter();
            let http = loom_providers::HttpClient::new()?;
            let metrics = Metrics::new()?;
            Runtime::build(
                config,
                &http,
                &loom_providers::StatsBook::default(),
                &metrics,
                &StoreCache::default(),
                0,
            )
            .map(|_| ())
        });
    for w in &warnings {
        println!("warning: {w}");
    }
    match checked {
        Ok(()) => {
            println!("{}: OK", file.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            for line in format!("{e:#}").lines() {
                println!("{line}");
            }
            ExitCode::FAILURE
        }
    }
}

fn load(source: &ConfigSource) -> Result<loom_config::Checked, loom_config::Error> {
    match source {
        ConfigSource::File(path) => loom_config::check_file(path),
        ConfigSource::Embedded => loom_config::check_str(QUICKSTART, "<built-in quickstart>"),
    }
}

/// Logs what a configuration may say but probably should not.
pub(crate) fn log_warnings(warnings: &[loom_config::Problem]) {
    for w in warnings {
        tracing::warn!(problem = %w, "configuration warning");
    }
}

/// The configuration with the default listener filled in when none is given.
pub(crate) fn effective_listeners(mut config: Config) -> Config {
    if config.listeners.is_empty() {
        config.listeners.push(loom_config::Listener::default());
    }
    config
}

fn init_logging(cfg: &loom_config::Logging) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cfg.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| redact::ScrubbedStderr);
    match cfg.format {
        LogFormat::Json => builder.json().with_current_span(false).init(),
        LogFormat::Text => builder.with_ansi(false).init(),
    }
}

fn run(path: Option<PathBuf>) -> ExitCode {
    let source = path.map_or(ConfigSource::Embedded, ConfigSource::File);
    let (config, warnings) = match load(&source) {
        Ok(c) => (effective_listeners(c.config), c.warnings),
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    // Before the first log line: every line is scrubbed of the credentials.
    redact::install(&config);
    init_logging(&config.logging);
    log_warnings(&warnings);
    // The control plane's runtime; requests are served by the workers'.
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(source, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "loom stopped");
            ExitCode::FAILURE
        }
    }
}

/// `LOOM_CLOCK_OFFSET`: seconds added to the clock that periods are kept by,
/// for replaying another day in tests. Unset in production.
fn clock_offset() -> anyhow::Result<i64> {
    match std::env::var("LOOM_CLOCK_OFFSET") {
        Ok(v) => v
            .trim()
            .parse()
            .with_context(|| format!("LOOM_CLOCK_OFFSET={v:?} is not a number of seconds")),
        Err(_) => Ok(0),
    }
}

async fn serve(source: ConfigSource, config: Config) -> anyhow::Result<()> {
    let limits = server::Limits {
        grace: config.server.shutdown_grace.get(),
        header_timeout: config.server.header_read_timeout.get(),
        max_header_size: usize::try_from(config.server.max_header_size.0).unwrap_or(usize::MAX),
        connections: Arc::new(tokio::sync::Semaphore::new(
            config.server.max_connections.max(1),
        )),
    };
    let workers = config
        .server
        .workers
        .filter(|n| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let listeners = config.listeners.clone();
    let admin = config.admin.clone();
    if config.ai_gateway.token_accounting.enabled || config.ai_gateway.rate_limit.enabled {
        // Token estimates need the encoders; build them before traffic arrives.
        tokio::task::spawn_blocking(loom_accounting::Accountant::warm_up);
    }
    // Run-time keys: loaded (from PostgreSQL, else the last snapshot)
    // before the first request.
    let control = match &config.control_plane {
        Some(cp) => Some(loom_control::Control::start(cp.clone()).await),
        None => None,
    };
    let (shared, inboxes) = Shared::build(config, clock_offset()?, workers, control)?;

    let mut bound = server::bind(&listeners, &shared.certificates).await?;
    let quic = http3::bind(&listeners, &shared.certificates, &limits)?;
    // TLS listeners tell clients where HTTP/3 is served.
    let alt_svc = http3::alt_svc(&quic);
    for b in bound.iter_mut().filter(|b| b.tls.is_some()) {
        b.alt_svc = alt_svc.clone();
    }
    // The admin listener stays up while the data plane drains, so readiness
    // can report the drain; it stops last.
    let admin = start_admin(&admin, &shared).await?;
    watch_config(&source, &shared);

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    for b in &bound {
        tracing::info!(listener = %b.name, address = ?b.listener.local_addr().ok(), workers, "listening");
    }
    // HTTP/3 listeners run on this runtime: one QUIC endpoint each.
    let quic_tasks: Vec<_> = quic
        .into_iter()
        .map(|q| {
            tokio::spawn(http3::serve(
                shared.clone(),
                q,
                stop_rx.clone(),
                limits.clone(),
            ))
        })
        .collect();
    let serving = server::start_workers(&shared, bound, inboxes, &stop_rx, &limits)?;
    shared.ready.store(true, Ordering::Release);
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "ready");

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: draining"),
        _ = int.recv() => tracing::info!("SIGINT: draining"),
    }
    shared.ready.store(false, Ordering::Release);
    let _ = stop_tx.send(true);
    let _ = serving.await;
    for t in quic_tasks {
        let _ = t.await;
    }
    save_state(&shared).await;
    if let Some((stop, task)) = admin {
        let _ = stop.send(true);
        let _ = task.await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Starts the admin listener, when enabled; it stops when told through the
/// returned sender.
async fn start_admin(
    admin: &loom_config::Admin,
    shared: &Arc<Shared>,
) -> anyhow::Result<
    Option<(
        tokio::sync::watch::Sender<bool>,
        tokio::task::JoinHandle<()>,
    )>,
> {
    if !admin.enabled {
        return Ok(None);
    }
    let addr = loom_config::listen_address(&admin.address).map_err(anyhow::Error::msg)?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("admin: cannot bind {addr}"))?;
    tracing::info!(address = %addr, "admin listening");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(server::serve_admin(shared.clone(), listener, stop_rx));
    Ok(Some((stop_tx, task)))
}

/// Reloads the configuration when its file changes or on SIGHUP.
fn watch_config(source: &ConfigSource, shared: &Arc<Shared>) {
    let ConfigSource::File(path) = source else {
        tracing::info!("serving the built-in quickstart configuration (mock provider)");
        return;
    };
    let (shared, path) = (shared.clone(), path.clone());
    tokio::spawn(async move {
        if let Err(e) = reload::watch(shared, path).await {
            tracing::error!(error = %e, "hot reload is unavailable");
        }
    });
}

/// What must outlive the process: the semantic cache's snapshot and usage
/// not yet written to a shared store.
async fn save_state(shared: &Arc<Shared>) {
    // Writing a large cache takes a while: off the runtime's workers.
    let stores = shared.clone();
    let _ = tokio::task::spawn_blocking(move || stores.stores.save_caches()).await;
    for store in shared.stores.all() {
        store.flush(Duration::from_secs(5)).await;
    }
}

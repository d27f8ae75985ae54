//! Compiling plugins and running their instances: one wasmtime engine per
//! process (with an epoch ticker for CPU budgets), compiled modules cached
//! on disk, one instance per plugin per thread.

use std::cell::RefCell;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use wasmtime::{Instance, InstancePre, Linker, Module, Store, Trap, TypedFunc};

use super::host::{self, Host, Io};
use super::{Phase, PluginConfig, Spec};
use crate::Error;

/// How often the engine's epoch advances: the granularity of CPU budgets.
const EPOCH: Duration = Duration::from_millis(5);

struct Shared {
    engine: wasmtime::Engine,
    linker: Linker<Host>,
}

static ENGINE: OnceLock<Result<Shared, String>> = OnceLock::new();

fn shared() -> Result<&'static Shared, Error> {
    ENGINE
        .get_or_init(|| {
            let mut cfg = wasmtime::Config::new();
            cfg.epoch_interruption(true);
            let engine = wasmtime::Engine::new(&cfg).map_err(|e| e.to_string())?;
            let linker = host::linker(&engine).map_err(|e| e.to_string())?;
            // Advances the epoch so that a callback past its budget traps.
            let ticker = engine.weak();
            std::thread::Builder::new()
                .name("loom-wasm-epoch".into())
                .spawn(move || {
                    while let Some(e) = ticker.upgrade() {
                        e.increment_epoch();
                        drop(e);
                        std::thread::sleep(EPOCH);
                    }
                })
                .map_err(|e| e.to_string())?;
            Ok(Shared { engine, linker })
        })
        .as_ref()
        .map_err(|e| Error::Plugin {
            plugin: String::new(),
            detail: format!("the WebAssembly engine could not start: {e}"),
        })
}

/// Where compiled plugins are kept between restarts.
fn cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("LOOM_PLUGIN_CACHE") {
        return (!d.is_empty()).then(|| PathBuf::from(d));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("loom").join("plugins"))
}

/// A cache file name for `wasm` compiled by this engine: two independent
/// 64-bit hashes of the bytes, the engine's settings and wasmtime's version.
fn cache_key(engine: &wasmtime::Engine, wasm: &[u8]) -> String {
    let mut parts = [0u64; 2];
    for (salt, out) in parts.iter_mut().enumerate() {
        let mut h = std::hash::DefaultHasher::new();
        salt.hash(&mut h);
        engine.precompile_compatibility_hash().hash(&mut h);
        wasm.len().hash(&mut h);
        wasm.hash(&mut h);
        *out = h.finish();
    }
    format!("{:016x}{:016x}.cwasm", parts[0], parts[1])
}

/// Modules compiled by this process, by cache key: a reload that keeps a
/// plugin's file does not compile it again.
static COMPILED: Mutex<Vec<(String, Module)>> = Mutex::new(Vec::new());

/// Compiles `wasm`, or reuses the code compiled earlier by this process or
/// by an earlier run.
fn compile(engine: &wasmtime::Engine, wasm: &[u8], name: &str) -> Result<Module, String> {
    let key = cache_key(engine, wasm);
    let mut compiled = COMPILED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, m)) = compiled.iter().find(|(k, _)| *k == key) {
        return Ok(m.clone());
    }
    let module = compile_or_load(engine, wasm, name, &key)?;
    compiled.push((key, module.clone()));
    Ok(module)
}

fn compile_or_load(
    engine: &wasmtime::Engine,
    wasm: &[u8],
    name: &str,
    key: &str,
) -> Result<Module, String> {
    let cached = cache_dir().map(|d| d.join(key));
    if let Some(path) = &cached
        && path.exists()
    {
        // SAFETY: the file was written by `Module::serialize` of this
        // engine configuration (its name hashes the engine's settings and
        // the source bytes) into Loom's own cache folder; wasmtime checks
        // its header and version again before use.
        match unsafe { Module::deserialize_file(engine, path) } {
            Ok(m) => return Ok(m),
            Err(e) => {
                tracing::warn!(plugin = name, error = %e, "compiled plugin cache unusable; compiling again")
            }
        }
    }
    let module =
        Module::new(engine, wasm).map_err(|e| format!("not a valid WebAssembly module: {e}"))?;
    if let Some(path) = cached
        && let Ok(bytes) = module.serialize()
    {
        let stored = path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| {
                let tmp = path.with_extension("tmp");
                std::fs::write(&tmp, bytes)?;
                std::fs::rename(&tmp, &path)
            });
        if let Err(e) = stored {
            tracing::debug!(plugin = name, error = %e, "could not keep the compiled plugin");
        }
    }
    Ok(module)
}

/// A loaded plugin: compiled code, its settings, and its instances.
#[derive(Clone)]
pub struct Plugin(pub(crate) Arc<Inner>);

pub(crate) struct Inner {
    pub spec: Arc<Spec>,
    pre: InstancePre<Host>,
    pub fail_open: bool,
    pub phase: Phase,
    max_memory: usize,
    ticks: u64,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.0.spec.name)
            .finish()
    }
}

impl Plugin {
    /// Reads, compiles and links the plugin, then starts one instance to
    /// check that the filter accepts its configuration.
    pub fn load(cfg: PluginConfig) -> Result<Plugin, Error> {
        let fail = |detail: String| Error::Plugin {
            plugin: cfg.name.clone(),
            detail,
        };
        let shared = shared()?;
        let wasm = std::fs::read(&cfg.path)
            .map_err(|e| fail(format!("cannot read {}: {e}", cfg.path.display())))?;
        let module = compile(&shared.engine, &wasm, &cfg.name).map_err(&fail)?;
        check_module(&module).map_err(&fail)?;
        let pre = shared
            .linker
            .instantiate_pre(&module)
            .map_err(|e| fail(format!("cannot link: {e}")))?;
        let ticks = cfg.max_cpu_time.as_nanos().div_ceil(EPOCH.as_nanos()) as u64 + 1;
        let plugin = Plugin(Arc::new(Inner {
            spec: Arc::new(Spec {
                name: cfg.name.clone(),
                vm_id: cfg.vm_id,
                config: cfg.config,
                vm_config: cfg.vm_config,
                callouts: cfg.callouts,
            }),
            pre,
            fail_open: cfg.fail_open,
            phase: cfg.phase,
            max_memory: cfg.max_memory,
            ticks,
        }));
        // Start one instance now, so that a filter that refuses its
        // configuration is a load error rather than a failure per request.
        Vm::start(&plugin.0, mpsc::unbounded_channel().0).map_err(fail)?;
        Ok(plugin)
    }

    pub fn name(&self) -> &str {
        &self.0.spec.name
    }
}

/// Refuses a module that is not a Proxy-Wasm filter, or that imports
/// something the host does not offer (named, so the author knows what).
fn check_module(module: &Module) -> Result<(), String> {
    for i in module.imports() {
        if !host::known(i.module(), i.name()) {
            return Err(format!(
                "imports {}.{}, which this host does not provide",
                i.module(),
                i.name()
            ));
        }
    }
    let exports: Vec<&str> = module.exports().map(|e| e.name()).collect();
    if !exports
        .iter()
        .any(|e| e.starts_with("proxy_abi_version_0_2"))
    {
        return Err("not a Proxy-Wasm 0.2 filter (no proxy_abi_version_0_2_* export)".into());
    }
    if !exports.contains(&"memory") {
        return Err("exports no memory".into());
    }
    if !exports.contains(&"proxy_on_memory_allocate") && !exports.contains(&"malloc") {
        return Err("exports no allocator (proxy_on_memory_allocate or malloc)".into());
    }
    Ok(())
}

type F2 = TypedFunc<(i32, i32), i32>;
type F3 = TypedFunc<(i32, i32, i32), i32>;
type F5 = TypedFunc<(i32, i32, i32, i32, i32), ()>;

/// The filter's callbacks; absent ones are skipped.
pub(crate) struct Exports {
    pub context_create: Option<TypedFunc<(i32, i32), ()>>,
    vm_start: Option<F2>,
    configure: Option<F2>,
    tick: Option<TypedFunc<i32, ()>>,
    queue_ready: Option<TypedFunc<(i32, i32), ()>>,
    pub request_headers: Option<F3>,
    pub request_body: Option<F3>,
    pub request_trailers: Option<F2>,
    pub response_headers: Option<F3>,
    pub response_body: Option<F3>,
    pub response_trailers: Option<F2>,
    pub done: Option<TypedFunc<i32, i32>>,
    pub log: Option<TypedFunc<i32, ()>>,
    pub delete: Option<TypedFunc<i32, ()>>,
    pub call_response: Option<F5>,
}

impl Exports {
    fn of(instance: &Instance, store: &mut Store<Host>) -> Exports {
        macro_rules! f {
            ($name:literal) => {
                instance.get_typed_func(&mut *store, $name).ok()
            };
        }
        Exports {
            context_create: f!("proxy_on_context_create"),
            vm_start: f!("proxy_on_vm_start"),
            configure: f!("proxy_on_configure"),
            tick: f!("proxy_on_tick"),
            queue_ready: f!("proxy_on_queue_ready"),
            request_headers: f!("proxy_on_request_headers"),
            request_body: f!("proxy_on_request_body"),
            request_trailers: f!("proxy_on_request_trailers"),
            response_headers: f!("proxy_on_response_headers"),
            response_body: f!("proxy_on_response_body"),
            response_trailers: f!("proxy_on_response_trailers"),
            done: f!("proxy_on_done"),
            log: f!("proxy_on_log"),
            delete: f!("proxy_on_delete"),
            call_response: f!("proxy_on_http_call_response"),
        }
    }
}

/// The root context's id in every instance.
pub(crate) const ROOT: i32 = 1;

/// One running instance of a plugin.
pub(crate) struct Vm {
    pub store: Store<Host>,
    pub f: Exports,
    next_context: u32,
    ticks: u64,
}

/// Why a callback failed.
#[derive(Debug)]
pub(crate) struct Fault(pub String);

impl Vm {
    /// Instantiates the filter and runs its start-up: `_initialize`, the
    /// root context, `on_vm_start` and `on_configure`.
    fn start(inner: &Inner, notify: mpsc::UnboundedSender<u32>) -> Result<Vm, String> {
        let limits = host::Limits {
            max_memory: inner.max_memory,
            hit: false,
        };
        let engine = inner.pre.module().engine();
        let mut store = Store::new(engine, Host::new(inner.spec.clone(), limits));
        store.limiter(|h| &mut h.limits);
        store.set_epoch_deadline(inner.ticks);
        let instance = inner
            .pre
            .instantiate(&mut store)
            .map_err(|e| format!("cannot instantiate: {}", describe(&e)))?;
        let memory = instance.get_memory(&mut store, "memory");
        let alloc = instance
            .get_typed_func::<i32, i32>(&mut store, "proxy_on_memory_allocate")
            .or_else(|_| instance.get_typed_func::<i32, i32>(&mut store, "malloc"))
            .ok();
        let h = store.data_mut();
        h.memory = memory;
        h.alloc = alloc;
        h.root = ROOT as u32;
        h.effective = ROOT as u32;
        h.queue_notify = Some(notify);
        let init = instance
            .get_typed_func::<(), ()>(&mut store, "_initialize")
            .or_else(|_| instance.get_typed_func::<(), ()>(&mut store, "_start"))
            .ok();
        if let Some(init) = init {
            init.call(&mut store, ())
                .map_err(|e| format!("start-up failed: {}", describe(&e)))?;
        }
        let f = Exports::of(&instance, &mut store);
        let mut vm = Vm {
            store,
            f,
            next_context: ROOT as u32,
            ticks: inner.ticks,
        };
        let (vm_len, cfg_len) = (
            inner.spec.vm_config.len() as i32,
            inner.spec.config.len() as i32,
        );
        let mut io = Io::default();
        vm.call(&mut io, |s, f| match &f.context_create {
            Some(c) => c.call(s, (ROOT, 0)),
            None => Ok(()),
        })
        .map_err(|e| e.0)?;
        let started = vm
            .call(&mut io, |s, f| {
                f.vm_start
                    .as_ref()
                    .map_or(Ok(1), |c| c.call(s, (ROOT, vm_len)))
            })
            .map_err(|e| e.0)?;
        if started == 0 {
            return Err("the filter refused to start (on_vm_start returned false)".into());
        }
        let configured = vm
            .call(&mut io, |s, f| {
                f.configure
                    .as_ref()
                    .map_or(Ok(1), |c| c.call(s, (ROOT, cfg_len)))
            })
            .map_err(|e| e.0)?;
        if configured == 0 {
            return Err(
                "the filter refused its configuration (on_configure returned false)".into(),
            );
        }
        Ok(vm)
    }

    /// Runs one callback with `io` handed to the filter for its length.
    pub fn call<R>(
        &mut self,
        io: &mut Io,
        run: impl FnOnce(&mut Store<Host>, &Exports) -> wasmtime::Result<R>,
    ) -> Result<R, Fault> {
        io.hand_over(&mut self.store.data_mut().io);
        self.store.data_mut().limits.hit = false;
        self.store.set_epoch_deadline(self.ticks);
        let result = run(&mut self.store, &self.f);
        self.store.data_mut().io.hand_over(io);
        result.map_err(|e| {
            if std::mem::take(&mut self.store.data_mut().limits.hit) {
                Fault("stopped: over its memory limit".into())
            } else {
                Fault(describe(&e))
            }
        })
    }

    /// A new stream context id (created in the filter by the caller).
    pub fn next_context(&mut self) -> i32 {
        self.next_context = self.next_context.wrapping_add(1).max(ROOT as u32 + 1);
        self.next_context as i32
    }
}

/// A trap or limit in words.
fn describe(e: &wasmtime::Error) -> String {
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => "stopped: over its CPU time budget".into(),
        Some(Trap::UnreachableCodeReached) => {
            "trapped (the filter panicked or hit unreachable code)".into()
        }
        Some(t) => format!("trapped: {t}"),
        None => format!("{e:#}"),
    }
}

/// An instance as shared by the requests of one thread.
pub(crate) struct Cell {
    vm: Mutex<Vm>,
    /// Set when a callback failed; the instance is replaced before its next
    /// request.
    broken: AtomicBool,
    tick: watch::Sender<Option<Duration>>,
    pub plugin: Arc<Inner>,
}

impl Cell {
    pub fn lock(&self) -> MutexGuard<'_, Vm> {
        self.vm.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Relaxed)
    }

    /// Records a failed callback: logged, and the instance retired.
    pub fn fault(&self, what: &str, f: &Fault) {
        self.broken.store(true, Ordering::Relaxed);
        tracing::warn!(plugin = %self.plugin.spec.name, callback = what, error = %f.0, "plugin failed; its instance is replaced");
    }

    /// Tells the service task about a new tick period, after a callback.
    pub fn after_call(&self, vm: &mut Vm) {
        let h = vm.store.data_mut();
        if h.tick_changed {
            h.tick_changed = false;
            let _ = self.tick.send(h.tick);
        }
    }
}

thread_local! {
    static INSTANCES: RefCell<Vec<(Weak<Inner>, Arc<Cell>)>> = const { RefCell::new(Vec::new()) };
}

/// This thread's instance of `plugin`, started on first use (and again
/// after a failure).
pub(crate) fn instance(plugin: &Arc<Inner>) -> Result<Arc<Cell>, String> {
    let found = INSTANCES.with(|list| {
        list.borrow()
            .iter()
            .find(|(p, c)| std::ptr::eq(p.as_ptr(), Arc::as_ptr(plugin)) && !c.is_broken())
            .map(|(_, c)| c.clone())
    });
    if let Some(c) = found {
        return Ok(c);
    }
    let cell = start_cell(plugin)?;
    INSTANCES.with(|list| {
        let mut list = list.borrow_mut();
        list.retain(|(p, c)| {
            p.strong_count() > 0 && !c.is_broken() && !std::ptr::eq(p.as_ptr(), Arc::as_ptr(plugin))
        });
        list.push((Arc::downgrade(plugin), cell.clone()));
    });
    Ok(cell)
}

/// Starts an instance and, inside a runtime, the task that delivers its
/// ticks and shared-queue arrivals.
fn start_cell(plugin: &Arc<Inner>) -> Result<Arc<Cell>, String> {
    let (qtx, qrx) = mpsc::unbounded_channel();
    let mut vm = Vm::start(plugin, qtx)?;
    let period = vm.store.data().tick;
    vm.store.data_mut().tick_changed = false;
    let (ttx, trx) = watch::channel(period);
    let cell = Arc::new(Cell {
        vm: Mutex::new(vm),
        broken: AtomicBool::new(false),
        tick: ttx,
        plugin: plugin.clone(),
    });
    if let Ok(handle) = tokio::runtime::Handle::try_current() {
        handle.spawn(service(Arc::downgrade(&cell), trx, qrx));
    }
    Ok(cell)
}

/// Calls the root context's `on_tick` at the period it asked for, and
/// `on_queue_ready` when an item arrives on a queue it registered; exits
/// when the instance is gone.
async fn service(
    cell: Weak<Cell>,
    mut period: watch::Receiver<Option<Duration>>,
    mut queued: mpsc::UnboundedReceiver<u32>,
) {
    loop {
        let every = *period.borrow_and_update();
        // None: nothing to do; Some(None): a tick; Some(Some(q)): queue q.
        let tick = async {
            match every {
                Some(p) => tokio::time::sleep(p).await,
                None => std::future::pending().await,
            }
        };
        let event: Option<Option<u32>> = tokio::select! {
            _ = tick => Some(None),
            changed = period.changed() => {
                if changed.is_err() {
                    return;
                }
                None
            }
            q = queued.recv() => match q {
                Some(q) => Some(Some(q)),
                None => return,
            },
        };
        let Some(cell) = cell.upgrade() else { return };
        if cell.is_broken() {
            return;
        }
        let Some(what) = event else { continue };
        let mut io = Io::default();
        let (dispatched, fault) = {
            let mut vm = cell.lock();
            let r = match what {
                None => vm.call(&mut io, |s, f| {
                    f.tick.as_ref().map_or(Ok(()), |t| t.call(s, ROOT))
                }),
                Some(q) => vm.call(&mut io, |s, f| {
                    f.queue_ready
                        .as_ref()
                        .map_or(Ok(()), |t| t.call(s, (ROOT, q as i32)))
                }),
            };
            cell.after_call(&mut vm);
            (std::mem::take(&mut vm.store.data_mut().dispatched), r.err())
        };
        if let Some(f) = fault {
            cell.fault(
                if what.is_none() {
                    "on_tick"
                } else {
                    "on_queue_ready"
                },
                &f,
            );
            return;
        }
        for d in dispatched {
            tokio::spawn(super::filter::deliver_detached(cell.clone(), d));
        }
    }
}

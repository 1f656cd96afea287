//! The plugin runtime: one wasmtime engine, a disk cache of compiled components, the host
//! imports a plugin may call and per-call limits. It knows nothing of the store: deployed plugins
//! (versions, activation, hot swap) are `spool::plugins`.
//!
//! # Parts
//!
//! - [`engine`]: the one `wasmtime::Engine` (fuel, epochs, pooling allocator) and its epoch ticker.
//! - [`executor`]: the plugin threads (lower OS priority) that a server's plugin calls run on.
//! - [`fair`]: execution slots shared fairly across queues, handed over at epoch ticks.
//! - [`cache`]: compiled components on disk, keyed by content hash and engine configuration.
//! - [`flatten`]: a dynamically linked component (Python) merged into one core module before
//!   it is compiled, so it instantiates about twice as fast.
//! - [`bindings`]: host-side bindings generated from `wit/spool.wit`.
//! - [`limits`]: fuel, wall-clock and memory limits, and how a failed call is categorised.
//! - [`host_imports`]: what a plugin may ask of the host ([`HostApi`]), bounded and checked.
//! - [`plugin`]: a loaded plugin; one call = one fresh store and instance.
//! - [`settings`]: what a plugin declares about itself (its `spool-settings` section).
//! - [`warm`]: a worker's warm handler instance, reused across calls (`instance_mode = reuse`).
//! - [`warm_filter`]: a filter version's pool of idle warm instances, shared by publishes.
//! - `reuse`: what both keep between calls, and when a warm instance retires.
//! - `swap`: whether this process's memory may be swapped out, which decides how the engine
//!   resets a used memory slot.
//! - [`local`]: run a plugin once against a message with no server (`spool plugin run`).
//!
//! # Isolation
//!
//! Every call gets a fresh `Store` and instance from the plugin's `InstancePre` (cheap with the
//! pooling allocator), so no guest state survives between messages. WASI is linked with nothing
//! granted: no files, environment, arguments or sockets; stdout and stderr are captured (bounded)
//! and logged at debug level. A trap, fuel exhaustion, timeout or memory-limit hit fails only the
//! call that caused it, as a [`PluginFailure`] with an [`ErrorCategory`](spool_model::ErrorCategory).

pub mod bindings;
pub mod cache;
pub mod capabilities;
pub mod engine;
pub mod executor;
pub mod fair;
pub mod flatten;
pub mod host_imports;
pub mod limits;
pub mod local;
pub mod plugin;
mod reuse;
pub mod settings;
mod stdio;
mod swap;
pub mod warm;
pub mod warm_filter;

/// Test plugins and a recording host, for this crate's tests and (feature `testutil`) the
/// host crate's.
#[cfg(any(test, feature = "testutil"))]
pub mod testutil;

use std::path::PathBuf;
use std::sync::Arc;

use wasmtime::component::Linker;

pub use capabilities::OutboundHosts;
pub use executor::PluginExecutor;
pub use host_imports::{CallContext, HostApi, LogLevel, Origin};
pub use limits::{Limits, PluginFailure};
pub use local::{LocalReport, LocalRun, run_local};
pub use plugin::{CallStats, HandlerOutcome, Plugin, PluginMessage, RouteDecision, World};
pub use settings::PluginSettings;
pub use warm::WarmHandler;
pub use warm_filter::FilterPool;

use cache::ComponentCache;
use engine::EpochTicker;
pub use engine::Tier;
use host_imports::CallState;

/// How the runtime is sized.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Where compiled components (`*.cwasm`) are kept between runs.
    pub cache_dir: PathBuf,
    /// Plugin instances that may exist at once across all queues. The pooling allocator reserves
    /// virtual memory (not RAM) for each slot up front, so keep this near the total concurrency.
    pub max_instances: u32,
    /// Hard cap on one instance's linear memory; per-queue limits may only be lower.
    pub max_memory_mb: u32,
    /// Components at least this large whose optimised code is not cached yet are compiled with
    /// the baseline compiler first (seconds instead of tens of seconds for Python or
    /// JavaScript) and serve with it while the optimising compile runs in the background.
    /// `u64::MAX` turns this off.
    pub baseline_from_bytes: u64,
    /// Flatten dynamically linked components into one core module before compiling them
    /// ([`flatten`]); off compiles every component exactly as given.
    pub flatten: bool,
}

/// Python and JavaScript components are 12–18 MB; Rust ones rarely reach 1 MB and compile
/// optimised in well under a second.
pub const BASELINE_FROM_BYTES: u64 = 4 << 20;

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            cache_dir: std::env::temp_dir().join("spool-plugin-cache"),
            max_instances: 128,
            max_memory_mb: 256,
            baseline_from_bytes: BASELINE_FROM_BYTES,
            flatten: true,
        }
    }
}

/// What can go wrong loading a plugin. The API maps `InvalidComponent` and `ImportNotAllowed` to
/// 400 and `WrongWorld` to 422; the rest are server errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The bytes are not a valid WebAssembly component.
    #[error("invalid component: {0}")]
    InvalidComponent(String),
    /// A valid component, but not one of Spool's worlds.
    #[error("{0}")]
    WrongWorld(String),
    /// The component imports an interface Spool does not provide at all (the message names it).
    #[error("{0}")]
    ImportNotAllowed(String),
    /// The compiled-component cache could not be read or written.
    #[error("plugin cache {}: {message}", path.display())]
    Cache { path: PathBuf, message: String },
    /// The engine could not be created with the requested options.
    #[error("wasm engine: {0}")]
    Engine(String),
}

/// The plugin runtime. Cheap to clone; all clones share its engines, linkers and caches.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<RuntimeInner>,
}

/// One compiler's engine, with the linker and code cache that belong to it (compiled code
/// only runs in the engine that compiled it).
pub(crate) struct Compiler {
    pub(crate) tier: Tier,
    pub(crate) engine: wasmtime::Engine,
    pub(crate) linker: Linker<CallState>,
    pub(crate) cache: ComponentCache,
}

impl Compiler {
    fn new(options: &RuntimeOptions, tier: Tier) -> Result<Compiler, RuntimeError> {
        let engine = engine::build_engine(options, tier)?;
        let linker = host_imports::build_linker(&engine)?;
        let cache = ComponentCache::open(&options.cache_dir, &engine, options.flatten)?;
        Ok(Compiler {
            tier,
            engine,
            linker,
            cache,
        })
    }
}

struct RuntimeInner {
    optimized: Compiler,
    /// `None` when the baseline compiler is off or could not be set up on this machine.
    baseline: Option<Compiler>,
    optimizer: Optimizer,
    options: RuntimeOptions,
    // Dropped (and joined) when the last clone of the runtime and of every plugin is gone:
    // plugins keep the runtime alive because their timeouts depend on the ticker.
    ticker: EpochTicker,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl Runtime {
    /// Whether plugins can run with their limits enforced: the epoch ticker is alive.
    pub fn is_up(&self) -> bool {
        self.inner.ticker.is_running()
    }

    /// Creates the engines (optimising and, unless turned off, baseline), their linkers with
    /// WASI (nothing granted) and the host imports, the cache directory, and starts the epoch
    /// ticker thread.
    pub fn new(options: RuntimeOptions) -> Result<Runtime, RuntimeError> {
        let optimized = Compiler::new(&options, Tier::Optimized)?;
        let baseline = if options.baseline_from_bytes == u64::MAX {
            None
        } else {
            match Compiler::new(&options, Tier::Baseline) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!(error = %e,
                        "no baseline compiler: large plugins compile optimised before they serve");
                    None
                }
            }
        };
        let mut engines = vec![optimized.engine.clone()];
        engines.extend(baseline.as_ref().map(|c| c.engine.clone()));
        let ticker = EpochTicker::start(engines, engine::EPOCH_TICK)
            .map_err(|e| RuntimeError::Engine(format!("cannot start the epoch ticker: {e}")))?;
        Ok(Runtime {
            inner: Arc::new(RuntimeInner {
                optimized,
                baseline,
                optimizer: Optimizer::default(),
                options,
                ticker,
            }),
        })
    }

    /// Compiles (or loads from the disk cache) and validates a component, detects its world and
    /// prepares it for instantiation.
    ///
    /// A large component whose optimised code is not cached yet is compiled with the baseline
    /// compiler ([`Plugin::tier`]); hand it to [`Runtime::optimize_later`] to get the optimised
    /// one. This is CPU-heavy and blocking (tens of milliseconds for a small Rust plugin on a
    /// cache miss, seconds for Python or JavaScript): call it from
    /// `tokio::task::spawn_blocking`.
    pub fn load(&self, name: &str, version: u32, wasm: &[u8]) -> Result<Arc<Plugin>, RuntimeError> {
        // Hashed once here: 18 MB of Python take tens of milliseconds.
        let sha256 = plugin::sha256_hex(wasm);
        let optimized = &self.inner.optimized;
        let compiler = match &self.inner.baseline {
            Some(baseline)
                if wasm.len() as u64 >= self.inner.options.baseline_from_bytes
                    && !optimized.cache.has(&sha256) =>
            {
                baseline
            }
            _ => optimized,
        };
        plugin::load(self, compiler, name, version, wasm, sha256).map(Arc::new)
    }

    /// [`Runtime::load`] on a thread of its own at the plugin threads' lower priority, so a
    /// deploy's compile (seconds for Python or JavaScript) neither occupies a thread of the
    /// async runtime's blocking pool nor takes CPU time from the API and the SQLite writer when
    /// the cores are contended. Hands the bytes back with the result, for the caller to store.
    pub async fn load_in_background(
        &self,
        name: &str,
        version: u32,
        wasm: Vec<u8>,
    ) -> (Result<Arc<Plugin>, RuntimeError>, Vec<u8>) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (runtime, owned_name) = (self.clone(), name.to_owned());
        let spawned = std::thread::Builder::new()
            .name("spool-compile".to_owned())
            .spawn(move || {
                executor::lower_priority();
                let result = runtime.load(&owned_name, version, &wasm);
                // The caller may have gone (its request was cancelled): nothing to do then.
                let _ = tx.send((result, wasm));
            });
        if let Err(e) = spawned {
            return (
                Err(RuntimeError::Engine(format!(
                    "cannot start a thread to compile plugin {name:?}: {e}"
                ))),
                Vec::new(),
            );
        }
        rx.await.unwrap_or_else(|_| {
            (
                Err(RuntimeError::Engine(format!(
                    "compiling plugin {name:?} stopped unexpectedly (the compile thread panicked)"
                ))),
                Vec::new(),
            )
        })
    }

    /// As [`Runtime::load`], always with the optimising compiler (what benchmarks measure).
    pub fn load_optimized(
        &self,
        name: &str,
        version: u32,
        wasm: &[u8],
    ) -> Result<Arc<Plugin>, RuntimeError> {
        let sha256 = plugin::sha256_hex(wasm);
        plugin::load(self, &self.inner.optimized, name, version, wasm, sha256).map(Arc::new)
    }

    /// Compiles a baseline plugin with the optimising compiler on the runtime's one background
    /// thread (low priority, one compile at a time, so neither the API nor the queues wait for
    /// it), then hands the optimised plugin to `done`. The optimised code lands in the disk
    /// cache, so a restart loads it directly. Does nothing for a plugin that is already
    /// optimised, or whose optimisation is already queued.
    pub fn optimize_later(&self, plugin: &Plugin, done: impl FnOnce(Plugin) + Send + 'static) {
        if let Some(wasm) = plugin.source() {
            self.inner.optimizer.submit(OptimizeJob {
                runtime: Arc::downgrade(&self.inner),
                name: plugin.name().to_owned(),
                version: plugin.version(),
                sha256: plugin.sha256().to_owned(),
                wasm,
                done: Box::new(done),
            });
        }
    }

    pub fn options(&self) -> &RuntimeOptions {
        &self.inner.options
    }

    #[cfg(test)]
    pub(crate) fn optimized(&self) -> &Compiler {
        &self.inner.optimized
    }

    pub(crate) fn compiler(&self, tier: Tier) -> &Compiler {
        match (tier, &self.inner.baseline) {
            (Tier::Baseline, Some(baseline)) => baseline,
            _ => &self.inner.optimized,
        }
    }
}

type OnOptimized = Box<dyn FnOnce(Plugin) + Send>;

/// The one background thread that compiles baseline plugins again with the optimising compiler.
#[derive(Default)]
struct Optimizer {
    queue: std::sync::Mutex<Option<std::sync::mpsc::Sender<OptimizeJob>>>,
    /// SHA-256 of components queued or compiling, so a component is optimised once.
    pending: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

struct OptimizeJob {
    runtime: std::sync::Weak<RuntimeInner>,
    name: String,
    version: u32,
    sha256: String,
    wasm: Arc<Vec<u8>>,
    done: OnOptimized,
}

impl Optimizer {
    fn submit(&self, job: OptimizeJob) {
        let sha256 = job.sha256.clone();
        if !lock(&self.pending).insert(sha256.clone()) {
            return;
        }
        let mut queue = lock(&self.queue);
        // A thread that is gone (it panicked) is replaced below.
        let job = match queue.as_ref() {
            Some(q) => match q.send(job) {
                Ok(()) => return,
                Err(std::sync::mpsc::SendError(job)) => job,
            },
            None => job,
        };
        let (tx, rx) = std::sync::mpsc::channel::<OptimizeJob>();
        let pending = self.pending.clone();
        let spawned = std::thread::Builder::new()
            .name("spool-optimize".to_owned())
            .spawn(move || {
                executor::lower_priority_to(executor::OPTIMIZE_NICE);
                // Ends when the runtime (which owns the sender) is dropped.
                while let Ok(job) = rx.recv() {
                    let sha256 = job.sha256.clone();
                    if let Some(inner) = job.runtime.upgrade() {
                        let runtime = Runtime { inner };
                        let started = std::time::Instant::now();
                        let optimized = &runtime.inner.optimized;
                        match plugin::load(
                            &runtime,
                            optimized,
                            &job.name,
                            job.version,
                            &job.wasm,
                            job.sha256,
                        ) {
                            Ok(plugin) => {
                                tracing::info!(plugin = %job.name, version = job.version,
                                    seconds = started.elapsed().as_secs_f64(),
                                    "optimised code compiled; swapping it in");
                                (job.done)(plugin);
                            }
                            Err(e) => tracing::warn!(plugin = %job.name, version = job.version,
                                error = %e, "optimising compile failed; the baseline code stays"),
                        }
                    }
                    lock(&pending).remove(&sha256);
                }
            });
        match spawned {
            Ok(_) => {
                // Cannot fail: the receiver is alive in the thread just started.
                let _ = tx.send(job);
                *queue = Some(tx);
            }
            Err(e) => {
                lock(&self.pending).remove(&sha256);
                tracing::warn!(error = %e, "cannot start the optimising thread; the baseline code stays");
            }
        }
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

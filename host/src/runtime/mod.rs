//! The plugin runtime: one wasmtime engine, a disk cache of compiled components, the host
//! imports a plugin may call and per-call limits. It knows nothing of the store: deployed plugins
//! (versions, activation, hot swap) are [`crate::plugins`].
//!
//! # Parts
//!
//! - [`engine`]: the one `wasmtime::Engine` (fuel, epochs, pooling allocator) and its epoch ticker.
//! - [`executor`]: the plugin threads (lower OS priority) that a server's plugin calls run on.
//! - [`fair`]: execution slots shared fairly across queues, handed over at epoch ticks.
//! - [`cache`]: compiled components on disk, keyed by content hash and engine configuration.
//! - [`bindings`]: host-side bindings generated from `wit/spool.wit`.
//! - [`limits`]: fuel, wall-clock and memory limits, and how a failed call is categorised.
//! - [`host_imports`]: what a plugin may ask of the host ([`HostApi`]), bounded and checked.
//! - [`plugin`]: a loaded plugin; one call = one fresh store and instance.
//! - [`warm`]: a worker's warm handler instance, reused across calls (`instance_mode = reuse`).
//! - [`local`]: run a plugin once against a message with no server (`spool plugin run`).
//!
//! # Isolation
//!
//! Every call gets a fresh `Store` and instance from the plugin's `InstancePre` (cheap with the
//! pooling allocator), so no guest state survives between messages. WASI is linked with nothing
//! granted: no files, environment, arguments or sockets; stdout and stderr are captured (bounded)
//! and logged at debug level. A trap, fuel exhaustion, timeout or memory-limit hit fails only the
//! call that caused it, as a [`PluginFailure`] with an [`ErrorCategory`](crate::model::ErrorCategory).

pub mod bindings;
pub mod cache;
pub mod capabilities;
pub mod engine;
pub mod executor;
pub mod fair;
pub mod host_imports;
pub mod limits;
pub mod local;
pub mod plugin;
mod stdio;
pub mod warm;
pub mod warm_filter;

#[cfg(test)]
pub(crate) mod testutil;

use std::path::PathBuf;
use std::sync::Arc;

use wasmtime::component::Linker;

pub use capabilities::OutboundHosts;
pub use executor::PluginExecutor;
pub use host_imports::{CallContext, HostApi, LogLevel, Origin};
pub use limits::{Limits, PluginFailure};
pub use local::{LocalReport, LocalRun, run_local};
pub use plugin::{CallStats, HandlerOutcome, Plugin, PluginMessage, RouteDecision, World};
pub use warm::WarmHandler;
pub use warm_filter::FilterPool;

use cache::ComponentCache;
use engine::EpochTicker;
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
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            cache_dir: std::env::temp_dir().join("spool-plugin-cache"),
            max_instances: 128,
            max_memory_mb: 256,
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

/// The plugin runtime. Cheap to clone; all clones share one engine, linker and cache.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<RuntimeInner>,
}

struct RuntimeInner {
    engine: wasmtime::Engine,
    linker: Linker<CallState>,
    cache: ComponentCache,
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

    /// Creates the engine, the linker with WASI (nothing granted) and the host imports, the cache
    /// directory, and starts the epoch ticker thread.
    pub fn new(options: RuntimeOptions) -> Result<Runtime, RuntimeError> {
        let engine = engine::build_engine(&options)?;
        let linker = host_imports::build_linker(&engine)?;
        let cache = ComponentCache::open(&options.cache_dir, &engine)?;
        let ticker = EpochTicker::start(engine.clone(), engine::EPOCH_TICK)
            .map_err(|e| RuntimeError::Engine(format!("cannot start the epoch ticker: {e}")))?;
        Ok(Runtime {
            inner: Arc::new(RuntimeInner {
                engine,
                linker,
                cache,
                options,
                ticker,
            }),
        })
    }

    /// Compiles (or loads from the disk cache) and validates a component, detects its world and
    /// prepares it for instantiation.
    ///
    /// This is CPU-heavy and blocking (tens of milliseconds for a small Rust plugin on a cache
    /// miss, seconds for Python or JavaScript): call it from `tokio::task::spawn_blocking`.
    pub fn load(&self, name: &str, version: u32, wasm: &[u8]) -> Result<Arc<Plugin>, RuntimeError> {
        plugin::load(self, name, version, wasm).map(Arc::new)
    }

    pub fn options(&self) -> &RuntimeOptions {
        &self.inner.options
    }

    pub(crate) fn engine(&self) -> &wasmtime::Engine {
        &self.inner.engine
    }

    pub(crate) fn linker(&self) -> &Linker<CallState> {
        &self.inner.linker
    }

    pub(crate) fn cache(&self) -> &ComponentCache {
        &self.inner.cache
    }
}

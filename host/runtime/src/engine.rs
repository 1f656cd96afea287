//! The one wasmtime engine of the process and the thread that advances its epoch.

use std::sync::{OnceLock, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Strategy};

use super::{RuntimeError, RuntimeOptions, swap};

/// How often the epoch advances. Every tick a running plugin yields to the async executor, which
/// is what lets `tokio::time::timeout` stop it; so this is also the timeout's resolution.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

const MIB: usize = 1 << 20;

/// Slots whose pages are returned to the kernel together.
const DECOMMIT_BATCH: usize = 64;
/// Bytes of each memory and table reset in place rather than returned to the kernel, when
/// wasmtime must assume the lowest pages are the dirty ones (no `PAGEMAP_SCAN`).
const KEEP_RESIDENT: usize = 64 * 1024;
/// Bytes of each linear memory reset in place when `PAGEMAP_SCAN` (Linux 6.7+) tells wasmtime
/// which pages a call dirtied. An interpreted guest (Python, JavaScript) dirties a few MiB of its
/// memory image per instance; resetting those pages by copying the image back keeps them mapped,
/// so the next instance in the slot takes no page faults for them. Measured on the Python
/// handler: a fresh instance 1.45 ms → 1.12 ms, and a Rust one no slower (docs/PLUGINS.md).
const KEEP_RESIDENT_SCANNED: usize = 16 * MIB;

/// Which compiler an engine uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// Cranelift: the fastest code, and seconds to tens of seconds for an interpreter-sized
    /// component (Python, JavaScript).
    Optimized,
    /// Winch, the baseline compiler: about ten times faster to compile and about half as fast to
    /// run. A large component serves its first messages with it while the optimising compile
    /// runs in the background.
    Baseline,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Optimized => "optimized",
            Tier::Baseline => "baseline",
        }
    }
}

/// Builds an engine: component model, fuel, epoch interruption and the pooling allocator.
///
/// Any change here changes the compiled code, which is why the cache keys artifacts by
/// `Engine::precompile_compatibility_hash`.
pub fn build_engine(options: &RuntimeOptions, tier: Tier) -> Result<Engine, RuntimeError> {
    if !pagemap_scan_is_safe() {
        return build_engine_with(options, tier, false);
    }
    // Without kernel support, `Enabled::Yes` makes `Engine::new` fail: fall back to resetting
    // only the lowest pages, which is what costs little there.
    build_engine_with(options, tier, true).or_else(|_| build_engine_with(options, tier, false))
}

/// Whether a slot may be reset from what `PAGEMAP_SCAN` reports on this host.
///
/// Wasmtime 48 resets in place only the dirty pages that are *present*. A page the guest wrote
/// and the kernel then swapped out is neither reset nor returned to the kernel, so the next
/// instance in that slot would read the previous one's data: a fresh instance that is not
/// fresh. Wasmtime 50 fixes this (bytecodealliance/wasmtime#14357) but needs a newer Rust than
/// Spool builds with. Where memory may be swapped, every memory is reset the old way instead:
/// the first pages copied back, the rest returned to the kernel, which drops swapped-out pages
/// too.
fn pagemap_scan_is_safe() -> bool {
    static SAFE: OnceLock<bool> = OnceLock::new();
    *SAFE.get_or_init(|| match swap::may_swap() {
        Some(false) => true,
        Some(true) => {
            tracing::info!(
                "swap is on: plugin memories are reset without PAGEMAP_SCAN (fresh instances \
                 cost more; see docs/PLUGINS.md#fresh-instances-and-swap)"
            );
            false
        }
        // Not Linux, or no procfs: PAGEMAP_SCAN is unavailable there anyway.
        None => false,
    })
}

fn build_engine_with(
    options: &RuntimeOptions,
    tier: Tier,
    pagemap_scan: bool,
) -> Result<Engine, RuntimeError> {
    if options.max_instances == 0 {
        return Err(RuntimeError::Engine(
            "max_instances must be at least 1".to_owned(),
        ));
    }
    if options.max_memory_mb == 0 || options.max_memory_mb > 4096 {
        return Err(RuntimeError::Engine(format!(
            "max_memory_mb must be between 1 and 4096, got {}",
            options.max_memory_mb
        )));
    }
    let instances = options.max_instances;
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(instances)
        // A Rust component has a handful of core instances (the module plus wit-component's
        // shims); interpreters built with dynamic linking (Python) have a dozen or more.
        .total_core_instances(instances.saturating_mul(16))
        // Each memory slot reserves its full address range (4 GiB plus guards) of virtual
        // memory, never RAM; two per component leaves room for adapters with their own memory.
        .total_memories(instances.saturating_mul(2))
        .total_tables(instances.saturating_mul(8))
        .total_stacks(instances)
        .max_memory_size(options.max_memory_mb as usize * MIB)
        // Interpreted guests (Python, JavaScript) bring large modules.
        .max_core_instance_size(8 * MIB)
        .max_component_instance_size(8 * MIB)
        .max_tables_per_module(4)
        .max_memories_per_module(2)
        // Returning a slot's pages to the kernel (madvise) costs a TLB shoot-down on every core;
        // per message that was most of a fresh call. Batch the returns, and reset the first
        // pages of each memory and table with memset instead, which is cheaper for the small
        // footprint of a typical handler.
        .decommit_batch_size(DECOMMIT_BATCH.min(instances as usize / 2).max(1))
        .table_keep_resident(KEEP_RESIDENT);
    if pagemap_scan {
        pool.pagemap_scan(wasmtime::Enabled::Yes)
            .linear_memory_keep_resident(KEEP_RESIDENT_SCANNED);
    } else {
        pool.linear_memory_keep_resident(KEEP_RESIDENT);
    }

    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .consume_fuel(true)
        .epoch_interruption(true)
        .strategy(match tier {
            Tier::Optimized => Strategy::Cranelift,
            Tier::Baseline => Strategy::Winch,
        })
        // A compile runs on the thread that asks for it: a deploy's on a blocking thread, a
        // background optimisation on one low-priority thread. Parallel compilation would spread
        // it over every core, at normal priority, beside the API and the queues.
        .parallel_compilation(false)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config).map_err(|e| RuntimeError::Engine(format!("{e:#}")))
}

/// Advances the engine's epoch every tick on a dedicated thread; stops when dropped.
pub(crate) struct EpochTicker {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl EpochTicker {
    pub(crate) fn start(engines: Vec<Engine>, tick: Duration) -> std::io::Result<EpochTicker> {
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("spool-epoch".to_owned())
            .spawn(move || {
                // `recv_timeout` doubles as the sleep: it returns early with `Disconnected`
                // when the ticker is dropped, so shutdown does not wait for a tick.
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(tick) {
                    for engine in &engines {
                        engine.increment_epoch();
                    }
                }
            })?;
        Ok(EpochTicker {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl EpochTicker {
    /// Whether the ticker thread still runs (without it, timeouts would never fire).
    pub(crate) fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            // The thread only sleeps and increments a counter; it cannot panic or block.
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_nonsense_sizes() {
        let opts = RuntimeOptions {
            max_instances: 0,
            ..RuntimeOptions::default()
        };
        assert!(matches!(
            build_engine(&opts, Tier::Optimized),
            Err(RuntimeError::Engine(_))
        ));
        let opts = RuntimeOptions {
            max_memory_mb: 0,
            ..RuntimeOptions::default()
        };
        assert!(matches!(
            build_engine(&opts, Tier::Optimized),
            Err(RuntimeError::Engine(_))
        ));
    }

    #[test]
    fn ticker_stops_when_dropped() {
        let engine = build_engine(
            &RuntimeOptions {
                max_instances: 1,
                ..RuntimeOptions::default()
            },
            Tier::Baseline,
        )
        .unwrap();
        let ticker = EpochTicker::start(vec![engine], Duration::from_secs(3600)).unwrap();
        let started = std::time::Instant::now();
        drop(ticker);
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}

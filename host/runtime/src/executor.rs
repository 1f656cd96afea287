//! Where plugin calls run: threads of their own, at a lower OS priority, with fair execution
//! slots across queues.
//!
//! Plugin calls used to run on the runtime that serves the API. A guest that loops yields at
//! every epoch tick but is rescheduled at once, so eight of them filled both threads' run queues
//! and API requests, claims and other queues' deliveries waited behind them. Now:
//!
//! - Plugin work runs on a runtime of its own (`spool-plugin-N` threads, one per core), so the
//!   API's threads never run guest code.
//! - Those threads run at nice [`NICE`]: when the cores are contended, the kernel prefers the API
//!   threads and the SQLite writer thread, which decide the latency everyone else sees.
//! - Among plugin calls, [`fair`](super::fair) execution slots (as many as threads) keep one
//!   queue from crowding out another.

use tokio::runtime::{Handle, Runtime};

use super::fair::ExecutionSlots;

/// Nice value of the plugin threads (0 is normal, 19 the lowest priority). At +10 a busy plugin
/// thread gets about a tenth of the CPU time of a busy normal thread on the same core.
pub const NICE: i32 = 10;

/// The plugin threads. Dropping it stops them without waiting (calls still running are
/// abandoned at their next yield), which is also safe from inside async code.
pub struct PluginExecutor {
    runtime: Option<Runtime>,
    handle: Handle,
    slots: ExecutionSlots,
}

impl std::fmt::Debug for PluginExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginExecutor")
            .field("threads", &self.slots.slots())
            .finish_non_exhaustive()
    }
}

impl PluginExecutor {
    /// Starts `threads` plugin threads (at least one) with as many execution slots.
    pub fn new(threads: usize) -> std::io::Result<PluginExecutor> {
        let threads = threads.max(1);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name_fn(|| {
                use std::sync::atomic::{AtomicUsize, Ordering};
                static N: AtomicUsize = AtomicUsize::new(0);
                format!("spool-plugin-{}", N.fetch_add(1, Ordering::Relaxed))
            })
            .on_thread_start(lower_priority)
            .enable_all()
            .build()?;
        Ok(PluginExecutor {
            handle: runtime.handle().clone(),
            runtime: Some(runtime),
            slots: ExecutionSlots::new(threads),
        })
    }

    /// One thread per core the process may use.
    pub fn per_core() -> std::io::Result<PluginExecutor> {
        Self::new(std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    /// Where to spawn tasks that call plugins.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    pub fn slots(&self) -> &ExecutionSlots {
        &self.slots
    }
}

impl Drop for PluginExecutor {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            // Dropping a runtime blocks until its tasks stop, which panics inside async code.
            rt.shutdown_background();
        }
    }
}

/// Nice value of the background optimising compile: below the plugin threads, since the
/// baseline code already serves and nothing waits for it.
pub const OPTIMIZE_NICE: i32 = 19;

/// Lowers the calling thread's scheduling priority to [`NICE`].
pub(crate) fn lower_priority() {
    lower_priority_to(NICE);
}

/// Lowers the calling thread's scheduling priority to `nice`.
pub(crate) fn lower_priority_to(nice: i32) {
    // On Linux the nice value belongs to each thread, and `setpriority(PRIO_PROCESS, 0, ..)`
    // changes only the calling thread's (see setpriority(2), "BUGS"). Elsewhere it would change
    // the whole process, so it is left alone there.
    #[cfg(target_os = "linux")]
    if let Err(e) = rustix::process::setpriority_process(None, nice) {
        // Raising one's own nice value needs no privilege; if it fails anyway, the fair slots
        // still isolate queues from each other.
        tracing::debug!(error = %e, "cannot lower the priority of a plugin thread");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_threads_are_named_and_run_at_a_lower_priority() {
        let executor = PluginExecutor::new(1).unwrap();
        let (name, nice) = executor
            .handle()
            .block_on(async {
                tokio::spawn(async {
                    let name = std::thread::current().name().map(str::to_owned);
                    (name, rustix::process::getpriority_process(None))
                })
                .await
            })
            .unwrap();
        assert!(name.is_some_and(|n| n.starts_with("spool-plugin-")));
        // At least NICE: a test run that is itself niced further cannot be raised back.
        #[cfg(target_os = "linux")]
        assert!(nice.unwrap() >= NICE);
        let _ = nice;
    }

    #[tokio::test]
    async fn dropping_inside_async_code_does_not_panic() {
        let executor = PluginExecutor::new(1).unwrap();
        let handle = executor.handle();
        handle.spawn(std::future::pending::<()>());
        drop(executor);
    }
}

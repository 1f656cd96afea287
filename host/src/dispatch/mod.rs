//! Per-queue workers: claim a batch, invoke the queue's handler plugin, settle the outcome.
//!
//! Each queue has one task on this host (`worker.rs`): a claimer that leases messages in batches
//! into a small buffer, and `concurrency` workers that deliver them one at a time
//! (`delivery.rs`). Claimers and settlers run on the server's runtime; workers run on the plugin
//! threads (`runtime::executor`), each call holding one of the fair execution slots. Idle claimers sleep until the store signals the queue, a scheduled message
//! falls due, or the queue's config changes.
//!
//! Shutdown: claimers stop claiming; running deliveries get `drain_timeout` to finish; any still
//! running then are stopped, and they and everything still buffered are released (given back
//! without counting the attempt), so a restart picks them up at once.

pub mod backoff;
pub mod breaker;
mod delivery;
mod host_api;
mod settler;
mod worker;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::breaker::{BreakerSnapshot, QueueBreaker};
use crate::model::{Claimed, QueueConfig, SettleResult, Settlement};
use crate::plugins::PluginRegistry;
use crate::router::Router;
use crate::runtime::PluginExecutor;
use crate::runtime::fair::ExecutionSlots;
use crate::store::Store;

/// Sees every delivery: for benchmarks and metrics. Calls happen on the delivery's task, so
/// implementations must be quick and must not block.
pub trait DeliveryObserver: Send + Sync + 'static {
    /// The handler is about to run `msg` (claimed, not yet instantiated).
    fn started(&self, _msg: &Claimed) {}
    /// The handler of `msg` returned (or was stopped) after `handler_time`, the plugin call
    /// alone; its settlement is not committed yet.
    fn finished(&self, _msg: &Claimed, _handler_time: Duration) {}
    /// The delivery's settlement was handed to the store; `delivery.result` says what the store
    /// made of it.
    fn settled(&self, _msg: &Claimed, _delivery: &SettledDelivery<'_>) {}
}

/// What [`DeliveryObserver::settled`] learns about one delivery.
#[derive(Debug, Clone, Copy)]
pub struct SettledDelivery<'a> {
    pub settlement: &'a Settlement,
    /// The plugin version that ran, as `name@version`; `None` when none could be loaded.
    pub version: Option<&'a str>,
    /// `None` when the commit failed: the lease then expires and the message comes back.
    pub result: Option<SettleResult>,
    /// The plugin call alone.
    pub handler_time: Duration,
}

impl<'a> SettledDelivery<'a> {
    /// The name (without version) of the plugin that ran; names cannot contain `@`.
    pub fn plugin(&self) -> Option<&'a str> {
        self.version
            .map(|v| v.rsplit_once('@').map_or(v, |(name, _)| name))
    }
}

/// Why a queue's messages are waiting instead of being handed to its handler on this server.
/// Waiting messages spend no attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    pub cause: WaitCause,
    /// What is wrong and what to do, for people.
    pub reason: String,
}

/// The kinds of [`Waiting`]; stable identifiers for scripts and metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitCause {
    /// The queue is paused.
    Paused,
    /// The queue has no handler set.
    NoHandler,
    /// No plugin of the handler's name is deployed.
    PluginMissing,
    /// The plugin is deployed but is not a handler (a filter, say).
    NotAHandler,
    /// The plugin is deployed but cannot be loaded (its stored bytes are damaged, it no longer
    /// compiles, or the store could not be read).
    PluginUnloadable,
}

impl WaitCause {
    pub const ALL: [WaitCause; 5] = [
        WaitCause::Paused,
        WaitCause::NoHandler,
        WaitCause::PluginMissing,
        WaitCause::NotAHandler,
        WaitCause::PluginUnloadable,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            WaitCause::Paused => "paused",
            WaitCause::NoHandler => "no_handler",
            WaitCause::PluginMissing => "plugin_missing",
            WaitCause::NotAHandler => "not_a_handler",
            WaitCause::PluginUnloadable => "plugin_unloadable",
        }
    }

    /// A mistake someone should fix, rather than a queue left idle on purpose.
    pub fn is_fault(self) -> bool {
        !matches!(self, WaitCause::Paused | WaitCause::NoHandler)
    }
}

/// Handle to the running dispatcher; cheap to clone.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
    // Owned here rather than in `Inner`, which tasks on the plugin threads hold: the threads
    // stop when the last handle is dropped, never from one of their own tasks.
    _executor: Arc<PluginExecutor>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher").finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) registry: Arc<PluginRegistry>,
    pub(crate) router: Router,
    /// Stop claiming.
    pub(crate) stop: CancellationToken,
    /// Stop running deliveries too (the drain timeout passed).
    pub(crate) abort: CancellationToken,
    /// One task per queue (its claimer, which owns the queue's workers).
    pub(crate) queues_tasks: TaskTracker,
    /// Config of each queue that has a claimer, so it sees changes. Shared, so a worker takes
    /// the current config per message without copying it.
    queues: Mutex<HashMap<String, watch::Sender<Arc<QueueConfig>>>>,
    /// Bumped on every deploy or rollback, so claimers waiting for their handler look again.
    pub(crate) plugins: watch::Sender<u64>,
    pub(crate) observer: Option<Arc<dyn DeliveryObserver>>,
    /// The plugin threads, where workers run (see `runtime::executor`).
    pub(crate) plugin_threads: tokio::runtime::Handle,
    /// Execution slots shared fairly by every queue's plugin calls.
    pub(crate) slots: ExecutionSlots,
    /// Each queue's current reason for not being consumed (absent: it is consumed).
    waiting: Mutex<HashMap<String, Waiting>>,
    /// Each running claimer's circuit breaker (in memory, this host's own).
    breakers: Mutex<HashMap<String, Arc<QueueBreaker>>>,
}

impl Inner {
    /// Records whether `queue` waits (and why); its claimer calls this when it changes.
    pub(crate) fn set_waiting(&self, queue: &str, waiting: Option<Waiting>) {
        let mut map = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        match waiting {
            Some(w) => {
                map.insert(queue.to_owned(), w);
            }
            None => {
                map.remove(queue);
            }
        }
    }

    /// Publishes `queue`'s breaker (its claimer starts).
    pub(crate) fn add_breaker(&self, queue: &str, breaker: Arc<QueueBreaker>) {
        let mut map = self.breakers.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(queue.to_owned(), breaker);
    }

    /// Forgets `queue`'s breaker (its claimer ends), unless a newer claimer of a queue of the
    /// same name has replaced it meanwhile.
    pub(crate) fn remove_breaker(&self, queue: &str, breaker: &Arc<QueueBreaker>) {
        let mut map = self.breakers.lock().unwrap_or_else(|e| e.into_inner());
        if map.get(queue).is_some_and(|b| Arc::ptr_eq(b, breaker)) {
            map.remove(queue);
        }
    }
}

impl Dispatcher {
    /// A dispatcher with its plugin threads (one per core). Fails only if the threads cannot
    /// be started.
    pub fn new(
        store: Arc<dyn Store>,
        registry: Arc<PluginRegistry>,
        router: Router,
    ) -> std::io::Result<Self> {
        Self::build(store, registry, router, None)
    }

    /// Like [`new`](Self::new), reporting every delivery to `observer`.
    pub fn with_observer(
        store: Arc<dyn Store>,
        registry: Arc<PluginRegistry>,
        router: Router,
        observer: Arc<dyn DeliveryObserver>,
    ) -> std::io::Result<Self> {
        Self::build(store, registry, router, Some(observer))
    }

    fn build(
        store: Arc<dyn Store>,
        registry: Arc<PluginRegistry>,
        router: Router,
        observer: Option<Arc<dyn DeliveryObserver>>,
    ) -> std::io::Result<Self> {
        let executor = PluginExecutor::per_core().map_err(|e| {
            std::io::Error::new(e.kind(), format!("cannot start the plugin threads: {e}"))
        })?;
        router.attach(executor.handle().clone(), executor.slots().clone());
        Ok(Dispatcher {
            inner: Arc::new(Inner {
                plugin_threads: executor.handle().clone(),
                slots: executor.slots().clone(),
                store,
                registry,
                router,
                stop: CancellationToken::new(),
                abort: CancellationToken::new(),
                queues_tasks: TaskTracker::new(),
                queues: Mutex::new(HashMap::new()),
                plugins: watch::Sender::new(0),
                observer,
                waiting: Mutex::new(HashMap::new()),
                breakers: Mutex::new(HashMap::new()),
            }),
            _executor: Arc::new(executor),
        })
    }

    /// Starts claimers for every queue in the store.
    pub async fn start(&self) -> Result<(), crate::store::StoreError> {
        for q in self.inner.store.list_queues().await? {
            self.apply(&q.name, q.config);
        }
        Ok(())
    }

    /// The router handlers publish through (and the API publishes through).
    pub fn router(&self) -> &Router {
        &self.inner.router
    }

    /// Tells the dispatcher a queue was created or its config changed (start, resize, pause or
    /// switch the handler of its workers). Takes effect before this returns for every message
    /// a worker starts afterwards.
    pub fn queue_changed(&self, name: &str, config: &QueueConfig) {
        if self.inner.stop.is_cancelled() {
            return;
        }
        self.apply(name, config.clone());
    }

    /// Tells the dispatcher a queue was deleted: its claimer stops claiming and ends once the
    /// deliveries it started have finished. Their settles find the messages gone and change
    /// nothing (a lost lease), and what it had prefetched is released into nothing.
    pub fn queue_deleted(&self, name: &str) {
        let mut queues = self.inner.queues.lock().unwrap_or_else(|e| e.into_inner());
        // Dropping the config sender is the claimer's signal to stop.
        if queues.remove(name).is_some() {
            tracing::info!(queue = name, "queue deleted; stopping its claimer");
        }
    }

    /// Brings the claimers in line with `queues`, the store's list: on a database shared with
    /// other hosts, queues are created, changed (paused, resized) and deleted through any of
    /// them, and this host learns of it only by looking. Returns how many queues changed.
    pub fn sync_queues(&self, queues: Vec<crate::model::Queue>) -> usize {
        if self.inner.stop.is_cancelled() {
            return 0;
        }
        let mut changed = 0;
        let current: HashMap<String, Arc<QueueConfig>> = {
            let map = self.inner.queues.lock().unwrap_or_else(|e| e.into_inner());
            map.iter()
                .map(|(n, tx)| (n.clone(), tx.borrow().clone()))
                .collect()
        };
        let names: std::collections::HashSet<&str> =
            queues.iter().map(|q| q.name.as_str()).collect();
        for name in current.keys().filter(|n| !names.contains(n.as_str())) {
            self.queue_deleted(name);
            changed += 1;
        }
        for q in queues {
            if current.get(&q.name).is_none_or(|c| **c != q.config) {
                tracing::debug!(queue = %q.name, "queue created or changed through another host");
                self.apply(&q.name, q.config);
                changed += 1;
            }
        }
        changed
    }

    /// Tells the dispatcher a plugin was deployed or rolled back: claimers waiting for a handler
    /// that was missing look again at once.
    pub fn plugin_changed(&self) {
        self.inner.plugins.send_modify(|v| *v += 1);
    }

    fn apply(&self, name: &str, config: QueueConfig) {
        let config = Arc::new(config);
        let mut queues = self.inner.queues.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = queues.get(name) {
            tx.send_replace(config);
            return;
        }
        let (tx, rx) = watch::channel(config);
        queues.insert(name.to_owned(), tx);
        let inner = self.inner.clone();
        let name = name.to_owned();
        self.inner
            .queues_tasks
            .spawn(async move { worker::run(inner, name, rx).await });
    }

    /// Why `queue` is not being consumed on this server; `None` while it is.
    pub fn waiting(&self, queue: &str) -> Option<Waiting> {
        let map = self.inner.waiting.lock().unwrap_or_else(|e| e.into_inner());
        map.get(queue).cloned()
    }

    /// Every queue that is not being consumed, by name.
    pub fn all_waiting(&self) -> Vec<(String, Waiting)> {
        let map = self.inner.waiting.lock().unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<_> = map.iter().map(|(q, w)| (q.clone(), w.clone())).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// The circuit breaker of `queue` on this server; `None` when the queue has no claimer
    /// here (yet).
    pub fn breaker(&self, queue: &str) -> Option<BreakerSnapshot> {
        let map = self
            .inner
            .breakers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        map.get(queue).map(|b| b.lock().snapshot())
    }

    /// Every queue's breaker on this server, by name.
    pub fn all_breakers(&self) -> Vec<(String, BreakerSnapshot)> {
        let map = self
            .inner
            .breakers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut all: Vec<_> = map
            .iter()
            .map(|(q, b)| (q.clone(), b.lock().snapshot()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    /// Closes `queue`'s breaker by hand (the consecutive failures and the cool-down start
    /// over) and wakes its claimer. Returns the state after, `None` when the queue has no
    /// claimer on this server.
    pub fn reset_breaker(&self, queue: &str) -> Option<BreakerSnapshot> {
        let breaker = {
            let map = self
                .inner
                .breakers
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            map.get(queue).cloned()
        }?;
        let (was_open, snapshot) = {
            let mut b = breaker.lock();
            (b.reset(), b.snapshot())
        };
        if was_open {
            tracing::info!(queue, "circuit breaker reset by hand; claiming again");
        }
        breaker.changed.notify_one();
        Some(snapshot)
    }

    /// Whether shutdown has begun (no more claims).
    pub fn is_stopping(&self) -> bool {
        self.inner.stop.is_cancelled()
    }

    /// Stops claiming, waits up to `drain` for running handlers, then stops the rest and
    /// releases their messages. Returns whether any handler had to be stopped.
    pub async fn shutdown(&self, drain: Duration) -> bool {
        let inner = &self.inner;
        inner.stop.cancel();
        inner.queues_tasks.close();
        if tokio::time::timeout(drain, inner.queues_tasks.wait())
            .await
            .is_ok()
        {
            return false;
        }
        tracing::warn!(
            drain_ms = drain.as_millis() as u64,
            "drain timeout passed; stopping running handlers and releasing their messages"
        );
        inner.abort.cancel();
        // Stopped deliveries settle as released; give them a moment to commit.
        let _ = tokio::time::timeout(Duration::from_secs(5), inner.queues_tasks.wait()).await;
        true
    }
}

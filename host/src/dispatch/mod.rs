//! Per-queue workers: claim a batch, invoke the queue's handler plugin, settle the outcome.
//!
//! Each queue with a handler has one *claimer* task on this host. It claims only as many
//! messages as it has free concurrency permits, so nothing sits leased without running, and
//! starts one delivery task per message (see [`delivery`]). Idle claimers sleep until the store
//! signals the queue, a scheduled message falls due, or the queue's config changes.
//!
//! Shutdown: claimers stop claiming; running deliveries get `drain_timeout` to finish; any still
//! running then are stopped and their messages released (given back without counting the
//! attempt), so a restart picks them up at once.

pub mod backoff;
mod delivery;
mod host_api;
mod warm_pool;
mod worker;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::model::{Claimed, QueueConfig, Settlement};
use crate::router::Router;
use crate::runtime::registry::PluginRegistry;
use crate::store::Store;

/// Sees every delivery: for benchmarks and metrics. Calls happen on the delivery's task, so
/// implementations must be quick and must not block.
pub trait DeliveryObserver: Send + Sync + 'static {
    /// The handler is about to run `msg` (claimed, not yet instantiated).
    fn started(&self, _msg: &Claimed) {}
    /// The delivery ended with `settlement`, now committed (or failed to commit: then the lease
    /// expires and the message comes back). `handler_time` is the plugin call alone.
    fn settled(&self, _msg: &Claimed, _settlement: &Settlement, _handler_time: Duration) {}
}

/// Handle to the running dispatcher; cheap to clone.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
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
    /// Claimer tasks.
    pub(crate) claimers: TaskTracker,
    /// Delivery tasks.
    pub(crate) deliveries: TaskTracker,
    /// Config of each queue that has a claimer, so it sees changes.
    queues: Mutex<HashMap<String, watch::Sender<QueueConfig>>>,
    /// Bumped on every deploy or rollback, so claimers waiting for their handler look again.
    pub(crate) plugins: watch::Sender<u64>,
    pub(crate) observer: Option<Arc<dyn DeliveryObserver>>,
}

impl Dispatcher {
    pub fn new(store: Arc<dyn Store>, registry: Arc<PluginRegistry>, router: Router) -> Self {
        Self::build(store, registry, router, None)
    }

    /// Like [`new`](Self::new), reporting every delivery to `observer`.
    pub fn with_observer(
        store: Arc<dyn Store>,
        registry: Arc<PluginRegistry>,
        router: Router,
        observer: Arc<dyn DeliveryObserver>,
    ) -> Self {
        Self::build(store, registry, router, Some(observer))
    }

    fn build(
        store: Arc<dyn Store>,
        registry: Arc<PluginRegistry>,
        router: Router,
        observer: Option<Arc<dyn DeliveryObserver>>,
    ) -> Self {
        Dispatcher {
            inner: Arc::new(Inner {
                store,
                registry,
                router,
                stop: CancellationToken::new(),
                abort: CancellationToken::new(),
                claimers: TaskTracker::new(),
                deliveries: TaskTracker::new(),
                queues: Mutex::new(HashMap::new()),
                plugins: watch::Sender::new(0),
                observer,
            }),
        }
    }

    /// Starts claimers for every queue in the store.
    pub async fn start(&self) -> Result<(), crate::store::StoreError> {
        for q in self.inner.store.list_queues().await? {
            self.apply(&q.name, q.config);
        }
        Ok(())
    }

    /// Tells the dispatcher a queue was created or its config changed (start, resize, pause or
    /// stop its claimer). Reads the new config from the store.
    pub fn queue_changed(&self, name: &str) {
        if self.inner.stop.is_cancelled() {
            return;
        }
        let this = self.clone();
        let name = name.to_owned();
        tokio::spawn(async move {
            match this.inner.store.get_queue(&name).await {
                Ok(q) => this.apply(&q.name, q.config),
                Err(e) => tracing::warn!(queue = %name, error = %e, "cannot reload queue config"),
            }
        });
    }

    /// Tells the dispatcher a plugin was deployed or rolled back: claimers waiting for a handler
    /// that was missing look again at once.
    pub fn plugin_changed(&self) {
        self.inner.plugins.send_modify(|v| *v += 1);
    }

    fn apply(&self, name: &str, config: QueueConfig) {
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
            .claimers
            .spawn(async move { worker::run(inner, name, rx).await });
    }

    /// Stops claiming, waits up to `drain` for running handlers, then stops the rest and
    /// releases their messages. Returns how many deliveries had to be stopped.
    pub async fn shutdown(&self, drain: Duration) -> usize {
        let inner = &self.inner;
        inner.stop.cancel();
        inner.claimers.close();
        inner.claimers.wait().await;
        inner.deliveries.close();
        let running = inner.deliveries.len();
        if running > 0 {
            tracing::info!(
                running,
                drain_ms = drain.as_millis() as u64,
                "draining handlers"
            );
        }
        if tokio::time::timeout(drain, inner.deliveries.wait())
            .await
            .is_ok()
        {
            return 0;
        }
        let stopped = inner.deliveries.len();
        tracing::warn!(
            stopped,
            "drain timeout passed; stopping handlers and releasing their messages"
        );
        inner.abort.cancel();
        // Released messages are settled by the deliveries themselves; give them a moment.
        let _ = tokio::time::timeout(Duration::from_secs(5), inner.deliveries.wait()).await;
        stopped
    }
}

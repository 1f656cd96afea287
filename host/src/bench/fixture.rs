//! A complete Spool in this process on a fresh database: store, runtime, registry, dispatcher
//! with a counting observer, and (on request) the HTTP API on a loopback port.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use super::args::{Mode, SyncMode};
use crate::api::{ApiLimits, AppState};
use crate::dispatch::{DeliveryObserver, Dispatcher, SettledDelivery};
use crate::model::{Claimed, MessageId, NewMessage, QueueConfigPatch, Settlement};
use crate::plugins::PluginRegistry;
use crate::router::Router;
use crate::runtime::{CallContext, HostApi, LogLevel, Origin, Runtime, RuntimeOptions};
use crate::store::postgres::{DatabaseUrl, PgStore};
use crate::store::sqlite::SqliteStore;
use crate::store::{Store, StoreOptions};

/// The queue every scenario uses.
pub const QUEUE: &str = "bench";
/// The name the echo plugin is deployed under.
pub const PLUGIN: &str = "echo";

/// A payload of a typical small JSON event (64 bytes), distinct per message.
pub fn payload(i: u64) -> Vec<u8> {
    format!("{{\"id\":\"{i:016}\",\"note\":\"spool bench payload, 64 bytes\"}}").into_bytes()
}

pub fn new_message(i: u64) -> NewMessage {
    NewMessage {
        payload: payload(i),
        ..NewMessage::default()
    }
}

/// When each message reached some point (handler start, ack).
pub type Timeline = Vec<(MessageId, Instant)>;

/// Counts settled deliveries and, while recording, when each message started and settled.
#[derive(Default)]
pub struct BenchObserver {
    acked: AtomicU64,
    failed: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    record: AtomicBool,
    starts: Mutex<Timeline>,
    acks: Mutex<Timeline>,
}

impl BenchObserver {
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// The most deliveries that were started and whose settlement was not yet committed, at one
    /// time. Settles are committed in batches after the handler returns, so this can exceed the
    /// queue's concurrency (which bounds handlers running at once).
    pub fn max_in_flight(&self) -> u64 {
        self.max_in_flight.load(Ordering::Relaxed)
    }

    /// Start keeping per-message start and settle instants.
    pub fn record(&self, on: bool) {
        self.record.store(on, Ordering::Relaxed);
    }

    /// The recorded (start, settle) instants, taken out.
    pub fn take_records(&self) -> (Timeline, Timeline) {
        let starts = std::mem::take(&mut *lock(&self.starts));
        let acks = std::mem::take(&mut *lock(&self.acks));
        (starts, acks)
    }

    /// Waits until `n` deliveries were acked (polling every 2 ms: cheap, and fine-grained
    /// enough for runs of a second or more). Returns false if cancelled or timed out.
    pub async fn wait_acked(&self, n: u64, cancel: &CancellationToken, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if self.acked() >= n {
                return true;
            }
            if cancel.is_cancelled() || Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl DeliveryObserver for BenchObserver {
    fn started(&self, msg: &Claimed) {
        let now_in_flight = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.max_in_flight
            .fetch_max(now_in_flight, Ordering::Relaxed);
        if self.record.load(Ordering::Relaxed) {
            lock(&self.starts).push((msg.id, Instant::now()));
        }
    }

    fn settled(&self, msg: &Claimed, delivery: &SettledDelivery<'_>) {
        if self.record.load(Ordering::Relaxed) {
            lock(&self.acks).push((msg.id, Instant::now()));
        }
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        if matches!(delivery.settlement, Settlement::Ack) {
            self.acked.fetch_add(1, Ordering::Relaxed);
        } else {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A host for direct plugin calls (the overhead scenario and criterion benches): log lines are
/// dropped, other imports answer without touching any store.
#[derive(Debug, Default)]
pub struct NullHost;

#[async_trait]
impl HostApi for NullHost {
    async fn publish(
        &self,
        _origin: &Origin,
        _topic: &str,
        _payload: Vec<u8>,
        _headers: Vec<(String, String)>,
    ) -> Result<String, String> {
        Err("publish is not available in benchmarks".to_owned())
    }

    async fn heartbeat(&self, _origin: &Origin) -> Result<(), String> {
        Ok(())
    }

    async fn kv_get(&self, _plugin: &str, _key: &str) -> Result<Option<Vec<u8>>, String> {
        Ok(None)
    }

    async fn kv_set(&self, _plugin: &str, _key: &str, _value: Vec<u8>) -> Result<(), String> {
        Ok(())
    }

    async fn kv_delete(&self, _plugin: &str, _key: &str) -> Result<(), String> {
        Ok(())
    }

    fn log(&self, _origin: &Origin, _level: LogLevel, _message: &str) {}
}

/// A call context for the echo plugin served by [`NullHost`].
pub fn null_context() -> CallContext {
    CallContext {
        origin: Origin {
            plugin: PLUGIN.to_owned(),
            version: 1,
            message_id: Some("1".to_owned()),
            queue: QUEUE.to_owned(),
            correlation_id: None,
        },
        config: Arc::new(BTreeMap::new()),
        outbound: Default::default(),
        host: Arc::new(NullHost),
    }
}

/// What a fixture needs to know.
#[derive(Debug, Clone)]
pub struct FixtureOptions {
    /// Directory for this fixture's database (created, and removed again by `stop`).
    pub dir: PathBuf,
    /// Shared compiled-component cache.
    pub cache_dir: PathBuf,
    pub sync: SyncMode,
    /// Echo plugin bytes to deploy, if the scenario runs handlers.
    pub plugin: Option<Arc<Vec<u8>>>,
    /// A PostgreSQL database to work on instead of a SQLite file in `dir`. Several fixtures
    /// on one database are several hosts sharing it.
    pub database: Option<DatabaseUrl>,
    /// Delete acked messages at once (`acked_retention = 0`) instead of keeping them an hour.
    pub delete_acked: bool,
}

/// One in-process Spool.
pub struct Spool {
    pub store: Arc<dyn Store>,
    pub dispatcher: Dispatcher,
    pub observer: Arc<BenchObserver>,
    registry: Arc<PluginRegistry>,
    dir: PathBuf,
    http: Option<(
        CancellationToken,
        tokio::task::JoinHandle<std::io::Result<()>>,
    )>,
}

impl Spool {
    pub async fn start(opts: &FixtureOptions) -> anyhow::Result<Spool> {
        std::fs::create_dir_all(&opts.dir)
            .with_context(|| format!("cannot create {}", opts.dir.display()))?;
        let mut store_opts = StoreOptions {
            sync_full: opts.sync == SyncMode::Full,
            ..StoreOptions::default()
        };
        if opts.delete_acked {
            store_opts.acked_retention_ms = 0;
        }
        let store: Arc<dyn Store> = match &opts.database {
            Some(url) => Arc::new(
                PgStore::open(url.clone(), store_opts)
                    .await
                    .context("cannot open the bench database")?,
            ),
            None => {
                let db = opts.dir.join("spool.db");
                let store = tokio::task::spawn_blocking(move || SqliteStore::open(&db, store_opts))
                    .await
                    .context("store open task")?
                    .context("cannot open the bench database")?;
                Arc::new(store)
            }
        };
        let runtime = Runtime::new(RuntimeOptions {
            cache_dir: opts.cache_dir.clone(),
            max_instances: 128,
            max_memory_mb: 64,
            ..RuntimeOptions::default()
        })
        .context("cannot start the plugin runtime")?;
        let mut registry = PluginRegistry::new(store.clone(), runtime, Default::default());
        if opts.database.is_some() {
            // As `spool serve` on a shared database: a deploy through another host is seen.
            registry = registry.with_revalidate_interval(crate::host::SHARED_RESCAN);
        }
        let registry = Arc::new(registry);
        if let Some(wasm) = &opts.plugin {
            registry
                .deploy(PLUGIN, wasm.as_ref().clone(), None)
                .await
                .context("cannot deploy the echo plugin")?;
        }
        let observer = Arc::new(BenchObserver::default());
        let dispatcher = Dispatcher::with_observer(
            store.clone(),
            registry.clone(),
            Router::new(store.clone(), registry.clone(), Default::default()),
            observer.clone(),
        )?;
        dispatcher
            .start()
            .await
            .context("cannot start dispatcher")?;
        Ok(Spool {
            store,
            dispatcher,
            observer,
            registry,
            dir: opts.dir.clone(),
            http: None,
        })
    }

    /// Creates (or changes) the bench queue and tells the dispatcher.
    pub async fn put_queue(&self, patch: QueueConfigPatch) -> anyhow::Result<()> {
        self.put_named_queue(QUEUE, patch).await
    }

    /// Creates (or changes) queue `name` and tells the dispatcher.
    pub async fn put_named_queue(&self, name: &str, patch: QueueConfigPatch) -> anyhow::Result<()> {
        let (queue, _) = self
            .store
            .put_queue(name, &patch)
            .await
            .with_context(|| format!("cannot configure queue {name:?}"))?;
        self.dispatcher.queue_changed(&queue.name, &queue.config);
        Ok(())
    }

    /// What `spool serve` on a shared database does every 500 ms: takes up queues created or
    /// changed through other hosts, and looks again for handlers deployed through them.
    pub async fn follow(&self) -> anyhow::Result<()> {
        let queues = self
            .store
            .list_queues()
            .await
            .context("cannot list queues")?;
        self.dispatcher.sync_queues(queues);
        self.dispatcher.plugin_changed();
        Ok(())
    }

    /// Deploys another plugin under `name`.
    pub async fn deploy(&self, name: &str, wasm: Vec<u8>) -> anyhow::Result<()> {
        self.registry
            .deploy(name, wasm, None)
            .await
            .with_context(|| format!("cannot deploy plugin {name:?}"))?;
        self.dispatcher.plugin_changed();
        Ok(())
    }

    /// A paused queue consumed by echo with `concurrency` handlers in `mode`.
    pub fn handler_patch(concurrency: u32, mode: Mode, paused: bool) -> QueueConfigPatch {
        QueueConfigPatch {
            handler: Some(Some(PLUGIN.to_owned())),
            concurrency: Some(concurrency),
            instance_mode: Some(mode.instance_mode()),
            paused: Some(paused),
            ..QueueConfigPatch::default()
        }
    }

    /// Enqueues `n` messages in batches of 1 000, four requests at a time (setup, not timed).
    pub async fn fill(&self, n: u64, cancel: &CancellationToken) -> anyhow::Result<u64> {
        const CHUNK: u64 = 1_000;
        let next = Arc::new(AtomicU64::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let (store, next, cancel) = (self.store.clone(), next.clone(), cancel.clone());
            tasks.spawn(async move {
                let mut done = 0u64;
                loop {
                    let start = next.fetch_add(CHUNK, Ordering::Relaxed);
                    if start >= n || cancel.is_cancelled() {
                        return Ok::<u64, anyhow::Error>(done);
                    }
                    let end = (start + CHUNK).min(n);
                    let batch = (start..end).map(new_message).collect();
                    store.enqueue(QUEUE, batch).await?;
                    done += end - start;
                }
            });
        }
        let mut total = 0;
        while let Some(r) = tasks.join_next().await {
            total += r.context("fill task")??;
        }
        Ok(total)
    }

    /// The database file.
    pub fn db_path(&self) -> PathBuf {
        self.dir.join("spool.db")
    }

    /// Serves the real HTTP API on 127.0.0.1 and returns its address.
    pub async fn serve_http(&mut self) -> anyhow::Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot listen on 127.0.0.1")?;
        let addr = listener.local_addr()?;
        let state = AppState {
            store: self.store.clone(),
            registry: self.registry.clone(),
            dispatcher: self.dispatcher.clone(),
            limits: ApiLimits::default(),
            auth: Default::default(),
            backup_dir: None,
            metrics: Default::default(),
            scheduler: crate::scheduler::Scheduler::system(
                self.store.clone(),
                self.dispatcher.router().clone(),
                Default::default(),
            ),
        };
        let stop = CancellationToken::new();
        let shutdown = stop.clone().cancelled_owned();
        let task = tokio::spawn(crate::api::serve(listener, state, shutdown));
        self.http = Some((stop, task));
        Ok(addr)
    }

    /// Stops the API and the dispatcher, closes the database and deletes its files.
    pub async fn stop(self) -> anyhow::Result<()> {
        let Spool {
            store,
            dispatcher,
            observer,
            registry,
            dir,
            http,
        } = self;
        if let Some((stop, task)) = http {
            stop.cancel();
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "bench HTTP server failed"),
                Err(e) => tracing::warn!(error = %e, "bench HTTP server task failed"),
            }
        }
        dispatcher.shutdown(Duration::from_secs(5)).await;
        drop((dispatcher, registry, observer));
        // The writer thread closes the database when the last store handle is gone; the
        // files can go once it has.
        drop(store);
        tokio::task::spawn_blocking(move || remove_dir_retrying(&dir))
            .await
            .context("cleanup task")?;
        Ok(())
    }
}

/// Removes a fixture directory. The store's writer thread may still be closing the database
/// for a moment after the last handle is dropped, so a failure is retried briefly.
pub fn remove_dir_retrying(dir: &Path) {
    for _ in 0..50 {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    if let Err(e) = std::fs::remove_dir_all(dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot remove bench directory");
    }
}

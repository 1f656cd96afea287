//! A running Spool server: the store, the plugin runtime, the dispatcher, the maintenance loop
//! and the HTTP API, wired together. [`Host::start`] brings everything up; [`Host::run`] serves
//! until the shutdown future resolves, then drains.

use std::fs::File;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::{self, ApiLimits, AppState};
use crate::auth::Tokens;
use crate::config::Config;
use crate::dispatch::Dispatcher;
use crate::metrics::Metrics;
use crate::plugins::{PluginRegistry, RegistryError};
use crate::router::{RouteError, Router};
use crate::runtime::{Runtime, RuntimeError, RuntimeOptions};
use crate::scheduler::Scheduler;
use crate::store::postgres::PgStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{Store, StoreError, StoreOptions};

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(
        "cannot listen on {addr}: {source} (is another server using the port? pick another with --listen)"
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot open lock file {path}: {source}")]
    LockFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "another spool server is already using {db} (lock {lock} is held); stop it first or pass another --db"
    )]
    Locked { db: PathBuf, lock: PathBuf },
    #[error("cannot open database {db}: {source}")]
    Store { db: PathBuf, source: StoreError },
    #[error("cannot open the PostgreSQL store: {0}")]
    Postgres(StoreError),
    #[error("cannot set up queue {queue:?} from the config: {source}")]
    Queue { queue: String, source: StoreError },
    #[error("cannot start the plugin runtime: {0}")]
    Runtime(#[from] RuntimeError),
    #[error("cannot read plugin {name:?} from {path}: {source}")]
    PluginFile {
        name: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot deploy plugin {name:?} from {path}: {source}")]
    Deploy {
        name: String,
        path: PathBuf,
        source: RegistryError,
    },
    #[error("cannot create route {route} from the config: {source}")]
    Route { route: String, source: RouteError },
    #[error("cannot create {schedule} from the config: {message}")]
    Schedule { schedule: String, message: String },
    #[error(
        "[router] unroutable_queue names queue {0:?}, which does not exist; declare it under \
         [queues.{0}] or create it before starting"
    )]
    UnroutableQueue(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// On a database shared with other hosts: how often plugin versions and schedules are
/// re-read, which bounds how long a change made through another host takes to reach this one.
pub(crate) const SHARED_RESCAN: std::time::Duration = std::time::Duration::from_millis(500);

/// A started server, ready to serve.
pub struct Host {
    config: Config,
    listener: TcpListener,
    addr: SocketAddr,
    state: AppState,
    dispatcher: Dispatcher,
    store: Arc<dyn Store>,
    /// Held for the life of the host: one server per SQLite file (none for PostgreSQL, which
    /// several hosts share by design).
    _lock: Option<File>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Host {
    /// Opens the database, starts the runtime, deploys and creates what the config names, starts
    /// the workers and binds the listener.
    pub async fn start(config: Config) -> Result<Host, HostError> {
        let opts = StoreOptions {
            acked_retention_ms: config.acked_retention.as_millis() as u64,
            dead_retention_ms: config.dead_retention.as_millis() as u64,
            sync_full: config.sync_full,
            max_size_bytes: config.max_size_bytes,
            startup_check: config.startup_check,
            accept_wal_loss: config.accept_wal_loss,
        };
        let (store, lock): (Arc<dyn Store>, _) = match &config.database_url {
            Some(url) => {
                let store = PgStore::open(url.clone(), opts)
                    .await
                    .map_err(HostError::Postgres)?;
                (Arc::new(store), None)
            }
            None => {
                let lock = lock_database(&config.db)?;
                let db = config.db.clone();
                let store = tokio::task::spawn_blocking(move || SqliteStore::open(&db, opts))
                    .await
                    .map_err(std::io::Error::other)?
                    .map_err(|source| HostError::Store {
                        db: config.db.clone(),
                        source,
                    })?;
                (Arc::new(store), Some(lock))
            }
        };

        let runtime = Runtime::new(RuntimeOptions {
            cache_dir: config.cache_dir.clone(),
            max_instances: config.max_instances,
            max_memory_mb: config.max_memory_mb,
            flatten: config.flatten,
            ..RuntimeOptions::default()
        })?;
        // On a shared database, deploys, rollbacks and activations made through other hosts
        // must take effect here within a second.
        let shared = config.database_url.is_some();
        let mut registry =
            PluginRegistry::new(store.clone(), runtime, config.plugin_config.clone())
                .with_grants(config.plugin_grants.clone());
        if shared {
            registry = registry.with_revalidate_interval(SHARED_RESCAN);
        }
        let registry = Arc::new(registry);
        for (name, path) in &config.plugin_files {
            let wasm = tokio::fs::read(path)
                .await
                .map_err(|source| HostError::PluginFile {
                    name: name.clone(),
                    path: path.clone(),
                    source,
                })?;
            let v = registry
                .deploy(name, wasm, None)
                .await
                .map_err(|source| HostError::Deploy {
                    name: name.clone(),
                    path: path.clone(),
                    source,
                })?
                .version;
            tracing::info!(plugin = %name, version = v.version, sha256 = %v.sha256, "plugin from config");
        }
        for (name, patch) in &config.queues {
            store
                .put_queue(name, patch)
                .await
                .map_err(|source| HostError::Queue {
                    queue: name.clone(),
                    source,
                })?;
        }

        if let Some(q) = &config.router.unroutable_queue {
            match store.get_queue(q).await {
                Ok(_) => {}
                Err(StoreError::QueueNotFound(_)) => {
                    return Err(HostError::UnroutableQueue(q.clone()));
                }
                Err(source) => {
                    return Err(HostError::Queue {
                        queue: q.clone(),
                        source,
                    });
                }
            }
        }
        let router = Router::new(store.clone(), registry.clone(), config.router.clone());
        for (i, route) in config.routes.iter().enumerate() {
            let (r, created) =
                router
                    .add_route(route.clone())
                    .await
                    .map_err(|source| HostError::Route {
                        route: format!(
                            "routes[{i}] ({:?} -> queue {:?})",
                            route.pattern, route.queue
                        ),
                        source,
                    })?;
            if created {
                tracing::info!(route = r.id, pattern = %r.pattern, queue = %r.queue, "route from config");
            }
        }
        // One observer for the whole server: the dispatcher feeds it, the API reads it.
        let metrics = Arc::new(Metrics::new());
        let dispatcher =
            Dispatcher::with_observer(store.clone(), registry.clone(), router, metrics.clone())?;
        dispatcher
            .start()
            .await
            .map_err(|source| HostError::Store {
                db: config.db.clone(),
                source,
            })?;

        let mut scheduler_options = config.scheduler;
        if shared {
            // Other hosts create and resume schedules without signalling this one; a look at
            // the store every second is one indexed query.
            scheduler_options.rescan_every = SHARED_RESCAN;
        }
        let scheduler = Scheduler::system(
            store.clone(),
            dispatcher.router().clone(),
            scheduler_options,
        );
        apply_config_schedules(&config, &scheduler).await?;

        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| HostError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let addr = listener.local_addr()?;
        let state = AppState {
            store: store.clone(),
            registry,
            dispatcher: dispatcher.clone(),
            limits: ApiLimits {
                max_payload_bytes: config.max_payload_bytes,
                max_batch: config.max_batch,
                max_body_bytes: config.max_body_bytes,
                max_plugin_bytes: config.max_plugin_bytes,
                request_timeout: config.request_timeout,
                header_read_timeout: config.header_read_timeout,
            },
            auth: Arc::new(Tokens::new(config.tokens.clone())),
            backup_dir: config.backup_dir.clone(),
            metrics,
            scheduler: scheduler.clone(),
        };
        Ok(Host {
            config,
            listener,
            addr,
            state,
            dispatcher,
            store,
            _lock: lock,
        })
    }

    /// The address the API listens on (with the real port when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` resolves; then stops accepting requests, drains the handlers
    /// (up to the drain timeout) and releases what did not finish.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), HostError> {
        let stop_maintenance = CancellationToken::new();
        let maintenance = tokio::spawn(crate::scheduler::run_maintenance(
            self.store.clone(),
            self.config.maintenance_interval,
            stop_maintenance.clone(),
        ));
        let timer = tokio::spawn(self.state.scheduler.clone().run(stop_maintenance.clone()));
        let history = tokio::spawn(crate::scheduler::history::run_history(
            self.store.clone(),
            stop_maintenance.clone(),
        ));
        let follower = self.config.database_url.is_some().then(|| {
            tokio::spawn(follow_other_hosts(
                self.store.clone(),
                self.dispatcher.clone(),
                stop_maintenance.clone(),
            ))
        });

        let served = api::serve(self.listener, self.state, shutdown).await;
        tracing::info!("shutting down: no new deliveries");
        let stopped_handlers = self.dispatcher.shutdown(self.config.drain_timeout).await;
        stop_maintenance.cancel();
        let _ = maintenance.await;
        let _ = timer.await;
        let _ = history.await;
        if let Some(follower) = follower {
            let _ = follower.await;
        }
        tracing::info!(stopped_handlers, "shutdown complete");
        served?;
        Ok(())
    }
}

/// On a database shared with other hosts: every [`SHARED_RESCAN`], applies the queues created,
/// changed or deleted through them to this host's claimers, and wakes claimers waiting for a
/// handler when another host changed which plugin versions are active.
async fn follow_other_hosts(
    store: Arc<dyn Store>,
    dispatcher: Dispatcher,
    stop: CancellationToken,
) {
    let mut active: Option<Vec<(String, u32)>> = None;
    let mut failing = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(SHARED_RESCAN) => {}
        }
        let looked = async {
            dispatcher.sync_queues(store.list_queues().await?);
            let now: Vec<(String, u32)> = store
                .list_plugins()
                .await?
                .into_iter()
                .filter(|v| v.active)
                .map(|v| (v.name, v.version))
                .collect();
            if active.as_ref().is_some_and(|before| *before != now) {
                dispatcher.plugin_changed();
            }
            active = Some(now);
            Ok::<_, StoreError>(())
        };
        match looked.await {
            Ok(()) if failing => {
                tracing::info!("reading queues and plugins from the shared database again");
                failing = false;
            }
            Ok(()) => {}
            Err(e) if !failing => {
                tracing::warn!(error = %e, "cannot read queues and plugins from the shared \
                    database; changes made through other hosts wait until it answers");
                failing = true;
            }
            Err(_) => {}
        }
    }
}

/// Creates the `[[schedules]]` of the config, or updates those whose definition in the file
/// changed (found by name, so their next fire and history are kept).
async fn apply_config_schedules(config: &Config, scheduler: &Scheduler) -> Result<(), HostError> {
    if config.schedules.is_empty() {
        return Ok(());
    }
    let store = scheduler.store();
    let existing = store
        .list_schedules()
        .await
        .map_err(|source| HostError::Store {
            db: config.db.clone(),
            source,
        })?;
    let now = scheduler.now_ms();
    for (i, (name, json)) in config.schedules.iter().enumerate() {
        let what = format!("schedules[{i}] ({name:?})");
        let wanted =
            crate::api::schedules::from_config(json, config.max_payload_bytes).map_err(|e| {
                HostError::Schedule {
                    schedule: what.clone(),
                    message: e.message,
                }
            })?;
        let result = match existing
            .iter()
            .find(|s| s.name.as_deref() == Some(name.as_str()))
        {
            Some(s) if crate::scheduler::same_definition(&wanted, s) => continue,
            Some(s) => store
                .update_schedule(s.id, crate::scheduler::replace_with(wanted), now)
                .await
                .map(|s| (s, false)),
            None => store.create_schedule(wanted, now).await.map(|s| (s, true)),
        };
        let (s, created) = result.map_err(|e| HostError::Schedule {
            schedule: what.clone(),
            message: e.to_string(),
        })?;
        tracing::info!(schedule = s.id, name = %name, created, "schedule from config");
    }
    Ok(())
}

/// Takes an exclusive lock next to the database so two servers never share one SQLite file
/// (each would recover the other's leases as expired).
fn lock_database(db: &std::path::Path) -> Result<File, HostError> {
    if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut lock_path = db.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|source| HostError::LockFile {
            path: lock_path.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(HostError::Locked {
            db: db.to_owned(),
            lock: lock_path,
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(HostError::LockFile {
            path: lock_path,
            source,
        }),
    }
}

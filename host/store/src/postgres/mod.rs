//! The PostgreSQL store: several Spool hosts sharing one database. Connections come from a
//! pool (deadpool-postgres over tokio-postgres); migrations are safe when several hosts start
//! at once; the password never leaves [`DatabaseUrl`]. Each file covers one part of the
//! `Store` trait, implemented in `store_impl.rs` by delegation.

mod claim;
mod counters;
mod dlq;
mod enqueue;
mod history;
mod housekeeping;
mod kv;
mod leases;
mod listen;
mod messages;
mod migrate;
mod plugin_config;
mod plugins;
mod queues;
mod routes;
mod schedules;
mod settle;
mod store_impl;
mod url;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};

pub use url::DatabaseUrl;

use crate::{StoreError, StoreResult};

/// How many connections one host keeps at most.
const POOL_SIZE: usize = 16;
/// How long an operation waits for a free connection before failing.
const POOL_WAIT: Duration = Duration::from_secs(10);

/// A pool of connections to one PostgreSQL database with Spool's schema applied.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    url: DatabaseUrl,
    signals: std::sync::Arc<crate::Signals>,
    _listener: std::sync::Arc<listen::Listener>,
    opts: std::sync::Arc<crate::StoreOptions>,
    /// The last storage failure a write met (disk full, I/O error on the server), until a
    /// write succeeds again; see `write_failure`.
    failure: std::sync::Arc<std::sync::Mutex<Option<crate::StorageFailure>>>,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl PgStore {
    /// Connects to `url` and applies pending migrations (one host at a time, under an advisory
    /// lock, so hosts starting together apply each migration once).
    pub async fn connect(url: &str) -> StoreResult<PgStore> {
        PgStore::connect_with(url, crate::StoreOptions::default()).await
    }

    /// [`connect`](Self::connect) with options. Of [`crate::StoreOptions`], the retention
    /// windows apply; the rest are about a SQLite file (the server has its own settings).
    pub async fn connect_with(url: &str, opts: crate::StoreOptions) -> StoreResult<PgStore> {
        PgStore::open(DatabaseUrl::parse(url)?, opts).await
    }

    /// [`connect_with`](Self::connect_with) an already parsed URL.
    pub async fn open(url: DatabaseUrl, opts: crate::StoreOptions) -> StoreResult<PgStore> {
        let manager = Manager::from_config(
            url.config().clone(),
            tokio_postgres::NoTls,
            ManagerConfig {
                // A connection handed out is checked with a round trip, so one the server
                // closed (restart, idle timeout, PgBouncer) is replaced, not used.
                recycling_method: RecyclingMethod::Verified,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .wait_timeout(Some(POOL_WAIT))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Database(format!("cannot build a connection pool: {e}")))?;
        let signals = std::sync::Arc::new(crate::Signals::default());
        let listener = listen::Listener::spawn(url.clone(), signals.clone());
        let store = PgStore {
            pool,
            url,
            signals,
            _listener: std::sync::Arc::new(listener),
            opts: std::sync::Arc::new(opts),
            failure: std::sync::Arc::default(),
        };
        let mut conn = store.conn().await?;
        migrate::migrate(&mut conn, &store.url).await?;
        // A database `spool migrate` is still copying into holds part of a SQLite database:
        // a host working on it would serve (and change) a state that matches neither side.
        crate::migrate_copy::refuse_unfinished(&conn, &store.url).await?;
        drop(conn);
        tracing::info!(url = %store.url, schema = migrate::SCHEMA_VERSION, "postgres store open");
        Ok(store)
    }

    /// One connection of its own, outside any pool, with the schema applied (under the same
    /// advisory lock as [`open`](Self::open)): for `spool migrate`, which writes through
    /// `COPY` in transactions it holds for a whole batch, and needs no listener or pool.
    pub(crate) async fn connect_one(url: &DatabaseUrl) -> StoreResult<tokio_postgres::Client> {
        let (mut client, connection) =
            url.config()
                .connect(tokio_postgres::NoTls)
                .await
                .map_err(|e| {
                    StoreError::Database(format!(
                        "cannot connect to {url}: {}",
                        url.scrub(&e.to_string())
                    ))
                })?;
        let shown = url.to_string();
        let scrub = url.clone();
        tokio::spawn(async move {
            // Runs the connection until the client is dropped; a failure is also what the next
            // statement on the client reports, so it is only logged here.
            if let Err(e) = connection.await {
                tracing::warn!(url = %shown, error = %scrub.scrub(&e.to_string()),
                    "database connection ended");
            }
        });
        migrate::migrate(&mut client, url).await?;
        Ok(client)
    }

    /// Wake-ups for this host's workers, fed by every host's commits.
    pub fn signals(&self) -> &crate::Signals {
        &self.signals
    }

    /// A database error as a `StoreError`, naming what failed, with the password scrubbed.
    fn db(&self, what: &str, e: tokio_postgres::Error) -> StoreError {
        let message = format!("{what} on {}: {}", self.url, self.url.scrub(&e.to_string()));
        let err = housekeeping::classify(&e, message);
        self.note_failure(&err);
        err
    }

    /// `sql` prepared once per connection and kept. A statement sent as a string is prepared
    /// anew on every call, a round trip and a parse of its own before it runs: on the paths
    /// every message takes, that doubled the round trips.
    async fn stmt(
        &self,
        tx: &impl deadpool_postgres::GenericClient,
        sql: &str,
    ) -> StoreResult<tokio_postgres::Statement> {
        tx.prepare_cached(sql)
            .await
            .map_err(|e| self.db("prepare a statement", e))
    }

    /// A connection from the pool.
    async fn conn(&self) -> StoreResult<deadpool_postgres::Object> {
        self.pool.get().await.map_err(|e| {
            StoreError::Database(format!(
                "cannot connect to {}: {}",
                self.url,
                self.url.scrub(&e.to_string())
            ))
        })
    }
}

#[cfg(test)]
mod tests;

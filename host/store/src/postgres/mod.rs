//! The PostgreSQL store (work in progress on branch pg-store): several Spool hosts sharing one
//! database. This part: connecting with a pool, the password kept out of every message, and
//! migrations that are safe when several hosts start at once.

mod claim;
mod counters;
mod dlq;
mod enqueue;
mod kv;
mod leases;
mod listen;
mod messages;
mod migrate;
mod plugin_config;
mod queues;
mod routes;
mod schedules;
mod settle;
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
        let url = DatabaseUrl::parse(url)?;
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
        };
        let mut conn = store.conn().await?;
        migrate::migrate(&mut conn, &store.url).await?;
        drop(conn);
        tracing::info!(url = %store.url, schema = migrate::SCHEMA_VERSION, "postgres store open");
        Ok(store)
    }

    /// Wake-ups for this host's workers, fed by every host's commits.
    pub fn signals(&self) -> &crate::Signals {
        &self.signals
    }

    /// A database error as a `StoreError`, naming what failed, with the password scrubbed.
    fn db(&self, what: &str, e: tokio_postgres::Error) -> StoreError {
        StoreError::Database(format!(
            "{what} on {}: {}",
            self.url,
            self.url.scrub(&e.to_string())
        ))
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

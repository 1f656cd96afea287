//! Schema migrations, applied by whichever host gets the advisory lock first; the others wait
//! for it and then find nothing left to do.

use tokio_postgres::Client;

use super::DatabaseUrl;
use crate::{StoreError, StoreResult};

/// Every schema version in order; `spool_schema.version` is how many have been applied.
const MIGRATIONS: &[&str] = &[
    include_str!("schema.sql"),
    include_str!("schema_history.sql"),
];

/// The schema version this build writes.
pub(super) const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// The advisory lock every host takes to migrate ("spool" and a 1, as one 64-bit key).
const LOCK_KEY: i64 = 0x73_70_6f_6f_6c_00_00_01;

/// Applies the pending migrations in one transaction, under the advisory lock (released by
/// the commit or rollback). Refuses a database written by a newer build.
pub(super) async fn migrate(conn: &mut Client, url: &DatabaseUrl) -> StoreResult<()> {
    let err = |what: &str, e: tokio_postgres::Error| {
        StoreError::Database(format!("{what} on {url}: {}", url.scrub(&e.to_string())))
    };
    let tx = conn
        .transaction()
        .await
        .map_err(|e| err("cannot begin the migration", e))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK_KEY])
        .await
        .map_err(|e| err("cannot take the migration lock", e))?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS spool_schema (version INTEGER NOT NULL)")
        .await
        .map_err(|e| err("cannot create spool_schema", e))?;
    let applied: Option<i32> = tx
        .query_opt("SELECT version FROM spool_schema", &[])
        .await
        .map_err(|e| err("cannot read the schema version", e))?
        .map(|row| row.get(0));
    let applied = usize::try_from(applied.unwrap_or(0)).unwrap_or(0);
    if applied > SCHEMA_VERSION {
        return Err(StoreError::Database(format!(
            "database {url} has schema version {applied}, newer than this build's \
             {SCHEMA_VERSION}: run the newer spool, or restore a backup taken before it"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(applied) {
        tx.batch_execute(sql)
            .await
            .map_err(|e| err(&format!("schema migration {} failed", i + 1), e))?;
        tracing::info!(version = i + 1, "applied schema migration");
    }
    let version = i32::try_from(SCHEMA_VERSION).unwrap_or(i32::MAX);
    tx.execute("DELETE FROM spool_schema", &[])
        .await
        .map_err(|e| err("cannot record the schema version", e))?;
    tx.execute(
        "INSERT INTO spool_schema (version) VALUES ($1)",
        &[&version],
    )
    .await
    .map_err(|e| err("cannot record the schema version", e))?;
    tx.commit()
        .await
        .map_err(|e| err("cannot commit the migration", e))
}

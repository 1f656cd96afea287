//! Maintenance and health on PostgreSQL: lease recovery, TTL expiry and retention (any host may
//! run them at any time; rows another host is working on are skipped), readiness, and what the
//! SQLite-only operations mean here.

use spool_model::{ErrorCategory, MessageId, MessageState, now_ms};

use super::PgStore;
use super::enqueue::to_i64;
use crate::counters::{Counter, Counters};
use crate::{
    BackupReport, CheckLevel, CheckReport, DbStats, Maintenance, StorageFailure, StoreError,
    StoreResult,
};

/// Rows one maintenance pass handles per kind, so one pass stays a short transaction; the
/// next pass (every few seconds, on every host) takes the rest.
const MAINTAIN_LIMIT: i64 = 10_000;

/// Why an operation made for a database file does not apply to a PostgreSQL server.
fn server_managed(what: &str, instead: &str) -> StoreError {
    StoreError::NotForThisStore(format!(
        "{what} is for Spool's embedded SQLite database; this server stores its data in \
         PostgreSQL: {instead} (see docs/POSTGRES.md)"
    ))
}

impl PgStore {
    /// See `Store::maintain`.
    pub async fn maintain(&self) -> StoreResult<Maintenance> {
        let now = now_ms();
        let mut report = Maintenance::default();
        let mut counters = Counters::default();
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(|e| self.db("begin", e))?;

        // Expired leases: their host died or stalled without settling. SKIP LOCKED: a lease
        // being settled right now by its host, or recovered by another host's pass, is theirs.
        let expired = tx
            .query(
                "SELECT m.id, m.queue_id, q.name, m.attempts, m.cancel_requested, \
                 m.lease_expiries, coalesce((q.config->>'max_attempts')::int, 1) \
                 FROM messages m JOIN queues q ON q.id = m.queue_id \
                 WHERE m.state = 2 AND m.lease_expires_at <= $1 \
                 ORDER BY m.lease_expires_at LIMIT $2 FOR UPDATE OF m SKIP LOCKED",
                &[&now, &MAINTAIN_LIMIT],
            )
            .await
            .map_err(|e| self.db("scan expired leases", e))?;
        let mut woken = std::collections::BTreeSet::new();
        for row in &expired {
            let id: MessageId = row.get(0);
            let queue_id: i64 = row.get(1);
            let queue: String = row.get(2);
            let attempts: i32 = row.get(3);
            let cancel_requested: bool = row.get(4);
            let expiries = row.get::<_, i32>(5) + 1;
            let max_attempts: i32 = row.get(6);
            if cancel_requested {
                tx.execute(
                    "UPDATE messages SET state = 5, finished_at = $2, lease_expires_at = NULL, \
                     cancel_requested = false, idem_key = NULL, lease_expiries = $3 \
                     WHERE id = $1",
                    &[&id, &now, &expiries],
                )
                .await
                .map_err(|e| self.db("cancel message with expired lease", e))?;
                counters.add(queue_id, Counter::Cancelled, 1);
                counters.moved(
                    queue_id,
                    Some(MessageState::Leased),
                    Some(MessageState::Cancelled),
                    1,
                );
            } else if attempts >= max_attempts {
                let error =
                    format!("lease expired {expiries} times (handler host died or stalled)");
                self.dead_letter(&tx, id, now, &error, ErrorCategory::LeaseExpired, None)
                    .await?;
                tx.execute(
                    "UPDATE messages SET lease_expiries = $2 WHERE id = $1",
                    &[&id, &expiries],
                )
                .await
                .map_err(|e| self.db("count lease expiry", e))?;
                counters.add(queue_id, Counter::Dead, 1);
                counters.moved(
                    queue_id,
                    Some(MessageState::Leased),
                    Some(MessageState::Dead),
                    1,
                );
                report.leases_dead += 1;
                tracing::warn!(
                    id,
                    queue,
                    attempts,
                    "lease expired on the last attempt; dead-lettered"
                );
            } else {
                tx.execute(
                    "UPDATE messages SET state = 1, lease_expires_at = NULL, lease_expiries = $2, \
                     last_error = $3, error_category = $4 WHERE id = $1",
                    &[
                        &id,
                        &expiries,
                        &"lease expired (handler host died or stalled)",
                        &ErrorCategory::LeaseExpired.as_str(),
                    ],
                )
                .await
                .map_err(|e| self.db("recover expired lease", e))?;
                report.leases_recovered += 1;
                counters.moved(
                    queue_id,
                    Some(MessageState::Leased),
                    Some(MessageState::Ready),
                    1,
                );
                tracing::info!(id, queue, attempts, "expired lease recovered");
                woken.insert(queue);
            }
        }

        let queue_ids: Vec<i64> = tx
            .query("SELECT id FROM queues", &[])
            .await
            .map_err(|e| self.db("scan queues", e))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        for queue_id in queue_ids {
            report.expired += self.expire_due(&tx, queue_id, now, &mut counters).await?;
        }

        let acked_cutoff = now.saturating_sub(to_i64(self.opts.acked_retention_ms));
        report.acked_purged = tx
            .execute(
                "DELETE FROM messages WHERE id IN (SELECT id FROM messages \
                 WHERE state = 3 AND finished_at <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
                &[&acked_cutoff, &MAINTAIN_LIMIT],
            )
            .await
            .map_err(|e| self.db("delete acked messages past retention", e))?;

        let dead_cutoff = now.saturating_sub(to_i64(self.opts.dead_retention_ms));
        let purged = tx
            .query(
                "DELETE FROM messages WHERE id IN (SELECT id FROM messages \
                 WHERE state = 4 AND reviewed_at <= $1 LIMIT $2 FOR UPDATE SKIP LOCKED) \
                 RETURNING queue_id",
                &[&dead_cutoff, &MAINTAIN_LIMIT],
            )
            .await
            .map_err(|e| self.db("delete reviewed dead letters past retention", e))?;
        for row in &purged {
            counters.moved(row.get(0), Some(MessageState::Dead), None, 1);
        }
        report.dead_purged = purged.len() as u64;

        self.flush_counters(&tx, &mut counters).await?;
        for queue in &woken {
            self.notify_ready(&tx, queue).await?;
        }
        tx.commit().await.map_err(|e| self.db("commit", e))?;
        if report != Maintenance::default() {
            tracing::info!(
                leases_recovered = report.leases_recovered,
                leases_dead = report.leases_dead,
                expired = report.expired,
                acked_purged = report.acked_purged,
                dead_purged = report.dead_purged,
                "maintenance pass"
            );
        }
        Ok(report)
    }

    /// See `Store::ping`: one round trip on a pooled connection.
    pub async fn ping(&self) -> StoreResult<()> {
        let conn = self.conn().await?;
        conn.query_one("SELECT 1", &[])
            .await
            .map_err(|e| self.db("ping", e))?;
        Ok(())
    }

    /// See `Store::write_failure`: after a write failed for lack of space or an I/O error on the
    /// server, each call tries one small write and clears the failure when it succeeds.
    pub async fn write_failure(&self) -> Option<StorageFailure> {
        let failure = self
            .failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()?;
        let probe = async {
            let conn = self.conn().await?;
            conn.execute(
                "INSERT INTO spool_meta (key, value) VALUES ('write_probe', $1) \
                 ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                &[&now_ms().to_string()],
            )
            .await
            .map_err(|e| self.db("write probe", e))
        };
        match probe.await {
            Ok(_) => {
                tracing::info!(url = %self.url, "writes to PostgreSQL succeed again");
                *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = None;
                None
            }
            Err(_) => Some(failure),
        }
    }

    /// See `Store::check_integrity`: PostgreSQL checks its own pages (checksums, `amcheck`);
    /// Spool does not second-guess the server.
    pub async fn check_integrity(&self, _level: CheckLevel) -> StoreResult<CheckReport> {
        Err(server_managed(
            "an integrity check",
            "check the server with PostgreSQL's own tools (data checksums, pg_amcheck)",
        ))
    }

    /// See `Store::backup`: refused, naming PostgreSQL's own tools.
    pub async fn backup(&self, _target: std::path::PathBuf) -> StoreResult<BackupReport> {
        Err(server_managed(
            "`spool backup`",
            "back it up with pg_dump, pg_basebackup or your provider's snapshots",
        ))
    }

    /// See `Store::db_stats`: the database's size on the server. PostgreSQL has no per-database
    /// log file or free-page count worth reporting here; those stay zero.
    pub async fn db_stats(&self) -> StoreResult<DbStats> {
        let conn = self.conn().await?;
        let row = conn
            .query_one(
                "SELECT pg_database_size(current_database()), \
                 current_setting('block_size')::bigint",
                &[],
            )
            .await
            .map_err(|e| self.db("read database size", e))?;
        Ok(DbStats {
            size_bytes: u64::try_from(row.get::<_, i64>(0)).unwrap_or(0),
            free_pages: 0,
            page_size: u64::try_from(row.get::<_, i64>(1)).unwrap_or(0),
            wal_bytes: 0,
            last_backup_at_ms: None,
        })
    }

    /// Records a storage failure seen in `e` (disk full or an I/O error on the server), for
    /// `write_failure`.
    pub(super) fn note_failure(&self, e: &StoreError) {
        if let Some(failure) = StorageFailure::of(e) {
            let mut slot = self.failure.lock().unwrap_or_else(|e| e.into_inner());
            if slot.is_none() {
                tracing::error!(url = %self.url, error = %failure.message,
                    "PostgreSQL cannot write; readiness reports it until a write succeeds");
                *slot = Some(failure);
            }
        }
    }
}

/// The store error for a driver error: out-of-space and I/O failures on the server become
/// `StorageFull`/`StorageIo` (what `/readyz` reports), everything else `Database`.
pub(super) fn classify(e: &tokio_postgres::Error, message: String) -> StoreError {
    use tokio_postgres::error::SqlState;
    match e.code() {
        Some(code) if *code == SqlState::DISK_FULL => StoreError::StorageFull(message),
        Some(code) if *code == SqlState::IO_ERROR => StoreError::StorageIo(message),
        _ => StoreError::Database(message),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn server_managed_operations_name_the_tool_to_use() {
        let msg = super::server_managed("`spool backup`", "back it up with pg_dump").to_string();
        assert!(
            msg.contains("pg_dump") && msg.contains("docs/POSTGRES.md"),
            "{msg}"
        );
    }
}

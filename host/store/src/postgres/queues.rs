//! Queues: create, patch, read. Mirrors `sqlite::write_ops::put_queue` and its reads.

use deadpool_postgres::GenericClient;
use spool_model::{Queue, QueueConfig, QueueConfigPatch, now_ms, validate_name};

use super::PgStore;
use crate::{StoreError, StoreResult};

impl PgStore {
    /// See `Store::put_queue`. The row is locked for the patch (`FOR UPDATE`), so two hosts
    /// patching one queue apply both patches, one after the other.
    pub async fn put_queue(
        &self,
        name: &str,
        patch: &QueueConfigPatch,
    ) -> StoreResult<(Queue, bool)> {
        validate_name("queue", name).map_err(StoreError::Invalid)?;
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(|e| self.db("begin", e))?;
        if let Some(Some(handler)) = &patch.handler {
            check_handler_world(self, &tx, name, handler).await?;
        }
        let existing = tx
            .query_opt(
                "SELECT config, created_at FROM queues WHERE name = $1 FOR UPDATE",
                &[&name],
            )
            .await
            .map_err(|e| self.db("look up queue", e))?;
        let result = match existing {
            Some(row) => {
                let old: QueueConfig = decode_config(name, row.get(0))?;
                let config = old
                    .patched(patch)
                    .map_err(|e| StoreError::Invalid(format!("queue {name:?}: {e}")))?;
                tx.execute(
                    "UPDATE queues SET config = $2 WHERE name = $1",
                    &[&name, &encode_config(&config)?],
                )
                .await
                .map_err(|e| self.db("update queue", e))?;
                if old.paused && !config.paused {
                    self.notify_ready(&tx, name).await?;
                }
                tracing::info!(queue = name, "queue updated");
                let created_at = row.get(1);
                (
                    Queue {
                        name: name.to_owned(),
                        config,
                        created_at,
                    },
                    false,
                )
            }
            None => {
                let config = QueueConfig::default()
                    .patched(patch)
                    .map_err(|e| StoreError::Invalid(format!("queue {name:?}: {e}")))?;
                let now = now_ms();
                // Another host may create the same queue at the same moment: the unique name
                // makes one insert win; the other finds nothing inserted and reads the winner.
                let inserted = tx
                    .execute(
                        "INSERT INTO queues (name, config, created_at) VALUES ($1, $2, $3) \
                         ON CONFLICT (name) DO NOTHING",
                        &[&name, &encode_config(&config)?, &now],
                    )
                    .await
                    .map_err(|e| self.db("insert queue", e))?;
                if inserted == 0 {
                    drop(tx);
                    return Box::pin(self.put_queue(name, patch)).await;
                }
                tracing::info!(queue = name, "queue created");
                (
                    Queue {
                        name: name.to_owned(),
                        config,
                        created_at: now,
                    },
                    true,
                )
            }
        };
        tx.commit().await.map_err(|e| self.db("commit", e))?;
        Ok(result)
    }

    /// See `Store::get_queue`.
    pub async fn get_queue(&self, name: &str) -> StoreResult<Queue> {
        let conn = self.conn().await?;
        let row = conn
            .query_opt(
                "SELECT config, created_at FROM queues WHERE name = $1",
                &[&name],
            )
            .await
            .map_err(|e| self.db("read queue", e))?
            .ok_or_else(|| StoreError::QueueNotFound(name.to_owned()))?;
        Ok(Queue {
            name: name.to_owned(),
            config: decode_config(name, row.get(0))?,
            created_at: row.get(1),
        })
    }

    /// See `Store::list_queues`: by name.
    pub async fn list_queues(&self) -> StoreResult<Vec<Queue>> {
        let conn = self.conn().await?;
        conn.query(
            "SELECT name, config, created_at FROM queues ORDER BY name",
            &[],
        )
        .await
        .map_err(|e| self.db("list queues", e))?
        .into_iter()
        .map(|row| {
            let name: String = row.get(0);
            Ok(Queue {
                config: decode_config(&name, row.get(1))?,
                created_at: row.get(2),
                name,
            })
        })
        .collect()
    }

    /// See `Store::queue_stats`: the counter shards summed, and the oldest ready message.
    pub async fn queue_stats(&self, name: &str) -> StoreResult<spool_model::QueueStats> {
        let conn = self.conn().await?;
        let row = conn
            .query_opt(STATS_BY_NAME, &[&name])
            .await
            .map_err(|e| self.db("read queue stats", e))?
            .ok_or_else(|| StoreError::QueueNotFound(name.to_owned()))?;
        Ok(stats_from_row(&row, 0, now_ms()))
    }

    /// See `Store::all_queue_stats`: by name.
    pub async fn all_queue_stats(&self) -> StoreResult<Vec<(String, spool_model::QueueStats)>> {
        let conn = self.conn().await?;
        let now = now_ms();
        Ok(conn
            .query(STATS_ALL, &[])
            .await
            .map_err(|e| self.db("read queue stats", e))?
            .iter()
            .map(|row| (row.get(0), stats_from_row(row, 1, now)))
            .collect())
    }

    /// Tells every host's workers of `queue` to look again, when the transaction commits.
    pub(super) async fn notify_ready(
        &self,
        tx: &impl GenericClient,
        queue: &str,
    ) -> StoreResult<()> {
        tx.execute(
            &self.stmt(tx, "SELECT pg_notify($1, $2)").await?,
            &[&super::listen::CHANNEL, &queue],
        )
        .await
        .map_err(|e| self.db("notify", e))?;
        Ok(())
    }
}

/// A queue's handler must be a `handler` plugin; one not deployed yet is allowed (its deploy
/// is checked against the queue instead), as in the SQLite store.
async fn check_handler_world(
    store: &PgStore,
    tx: &impl GenericClient,
    queue: &str,
    handler: &str,
) -> StoreResult<()> {
    let row = tx
        .query_opt(
            "SELECT p.version, p.world FROM plugin_heads h \
             JOIN plugins p ON p.name = h.name AND p.version = h.active_version \
             WHERE h.name = $1",
            &[&handler],
        )
        .await
        .map_err(|e| store.db("look up the handler", e))?;
    match row {
        Some(row) if row.get::<_, String>(1) != crate::plugin_rules::HANDLER_WORLD => {
            let (version, world): (i32, String) = (row.get(0), row.get(1));
            Err(StoreError::WrongWorld(format!(
                "plugin {handler:?} (active version {version}) is a {world} plugin, not a \
                 handler: queue {queue:?} cannot use it as its handler; deploy a component \
                 built for the `handler` world under another name and set that"
            )))
        }
        _ => Ok(()),
    }
}

fn decode_config(queue: &str, json: serde_json::Value) -> StoreResult<QueueConfig> {
    serde_json::from_value(json).map_err(|e| {
        StoreError::Database(format!(
            "stored config of queue {queue:?} is unreadable: {e}"
        ))
    })
}

fn encode_config(config: &QueueConfig) -> StoreResult<serde_json::Value> {
    serde_json::to_value(config)
        .map_err(|e| StoreError::Database(format!("cannot encode queue config: {e}")))
}

/// The stats columns of queue `q`: ten sums over its counter shards, then when its oldest
/// ready message was enqueued.
macro_rules! stats_columns {
    () => {
        "COALESCE(sum(c.enqueued), 0)::BIGINT, COALESCE(sum(c.acked), 0)::BIGINT, \
         COALESCE(sum(c.retried), 0)::BIGINT, COALESCE(sum(c.dead), 0)::BIGINT, \
         COALESCE(sum(c.cancelled), 0)::BIGINT, COALESCE(sum(c.expired), 0)::BIGINT, \
         COALESCE(sum(c.scheduled_now), 0)::BIGINT, COALESCE(sum(c.ready_now), 0)::BIGINT, \
         COALESCE(sum(c.leased_now), 0)::BIGINT, COALESCE(sum(c.dead_now), 0)::BIGINT, \
         (SELECT enqueued_at FROM messages m WHERE m.queue_id = q.id AND m.state = 1 \
          ORDER BY m.id LIMIT 1)"
    };
}

const STATS_BY_NAME: &str = concat!(
    "SELECT ",
    stats_columns!(),
    " FROM queues q LEFT JOIN queue_counters c ON c.queue_id = q.id WHERE q.name = $1 \
     GROUP BY q.id"
);

const STATS_ALL: &str = concat!(
    "SELECT q.name, ",
    stats_columns!(),
    " FROM queues q LEFT JOIN queue_counters c ON c.queue_id = q.id GROUP BY q.id, q.name \
     ORDER BY q.name"
);

fn stats_from_row(row: &tokio_postgres::Row, first: usize, now: i64) -> spool_model::QueueStats {
    let n = |i: usize| row.get::<_, i64>(first + i).max(0) as u64;
    let oldest: Option<i64> = row.get(first + 10);
    spool_model::QueueStats {
        enqueued: n(0),
        acked: n(1),
        retried: n(2),
        dead: n(3),
        cancelled: n(4),
        expired: n(5),
        scheduled: n(6),
        ready: n(7),
        leased: n(8),
        dlq_depth: n(9),
        oldest_ready_age_ms: oldest.map(|t| (now - t).max(0) as u64),
    }
}

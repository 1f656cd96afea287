//! Queue counters on PostgreSQL: deltas added to one of [`SHARDS`] rows per queue, so
//! transactions of several hosts on one queue do not wait for each other's row lock until
//! commit; stats add the shards up.

use deadpool_postgres::GenericClient;

use super::PgStore;
use crate::StoreResult;
use crate::counters::Counters;

/// Counter rows per queue. More shards, fewer lock waits between concurrent writers, and a
/// slightly larger sum for stats (still a few dozen rows, never the messages).
pub(super) const SHARDS: i32 = 64;

impl PgStore {
    /// Writes `counters`' deltas in the caller's transaction, into the shard of its connection
    /// (its server process id modulo [`SHARDS`]). A shard row stays locked until commit, so a
    /// random pick made one transaction in four wait for another's commit with 16 writers;
    /// pooled connections have consecutive process ids as a rule, and so shards of their own.
    pub(super) async fn flush_counters(
        &self,
        tx: &impl GenericClient,
        counters: &mut Counters,
    ) -> StoreResult<()> {
        if counters.is_empty() {
            return Ok(());
        }
        let stmt = self
            .stmt(
                tx,
                "INSERT INTO queue_counters AS c (queue_id, shard, enqueued, acked, retried, \
                 dead, cancelled, expired, scheduled_now, ready_now, leased_now, dead_now) \
                 VALUES ($1, (pg_backend_pid() % $2)::SMALLINT, $3, $4, $5, $6, $7, $8, $9, $10, \
                 $11, $12) \
                 ON CONFLICT (queue_id, shard) DO UPDATE SET \
                 enqueued = c.enqueued + EXCLUDED.enqueued, acked = c.acked + EXCLUDED.acked, \
                 retried = c.retried + EXCLUDED.retried, dead = c.dead + EXCLUDED.dead, \
                 cancelled = c.cancelled + EXCLUDED.cancelled, \
                 expired = c.expired + EXCLUDED.expired, \
                 scheduled_now = c.scheduled_now + EXCLUDED.scheduled_now, \
                 ready_now = c.ready_now + EXCLUDED.ready_now, \
                 leased_now = c.leased_now + EXCLUDED.leased_now, \
                 dead_now = c.dead_now + EXCLUDED.dead_now",
            )
            .await?;
        // Queue ids in order, so two transactions touching the same queues lock their shard
        // rows in the same order and cannot deadlock.
        let mut deltas: Vec<_> = counters.drain().collect();
        deltas.sort_by_key(|(queue_id, _)| *queue_id);
        for (queue_id, d) in deltas {
            tx.execute(
                &stmt,
                &[
                    &queue_id, &SHARDS, &d[0], &d[1], &d[2], &d[3], &d[4], &d[5], &d[6], &d[7],
                    &d[8], &d[9],
                ],
            )
            .await
            .map_err(|e| self.db("update queue counters", e))?;
        }
        Ok(())
    }
}

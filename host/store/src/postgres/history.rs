//! Per-minute queue history on PostgreSQL (`Store::record_history`, `Store::queue_history`).
//! Every host samples; the last sample of a minute stands.

use spool_model::HistoryPoint;

use super::PgStore;
use super::enqueue::to_i64;
use crate::StoreResult;

impl PgStore {
    /// See `Store::record_history`.
    pub async fn record_history(&self, minute: i64, forget_before: i64) -> StoreResult<usize> {
        let stats = self.all_queue_stats().await?;
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(|e| self.db("begin", e))?;
        let upsert = self
            .stmt(
                &tx,
                "INSERT INTO queue_history (queue_id, minute, scheduled, ready, leased, \
                 dlq_depth, enqueued, acked, retried, dead, cancelled, expired, \
                 oldest_ready_age_ms) \
                 SELECT id, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13 FROM queues \
                 WHERE name = $1 \
                 ON CONFLICT (queue_id, minute) DO UPDATE SET scheduled = EXCLUDED.scheduled, \
                 ready = EXCLUDED.ready, leased = EXCLUDED.leased, \
                 dlq_depth = EXCLUDED.dlq_depth, enqueued = EXCLUDED.enqueued, \
                 acked = EXCLUDED.acked, retried = EXCLUDED.retried, dead = EXCLUDED.dead, \
                 cancelled = EXCLUDED.cancelled, expired = EXCLUDED.expired, \
                 oldest_ready_age_ms = EXCLUDED.oldest_ready_age_ms",
            )
            .await?;
        for (name, s) in &stats {
            let p = HistoryPoint::of(minute, s);
            tx.execute(
                &upsert,
                &[
                    name,
                    &p.minute,
                    &to_i64(p.scheduled),
                    &to_i64(p.ready),
                    &to_i64(p.leased),
                    &to_i64(p.dlq_depth),
                    &to_i64(p.enqueued),
                    &to_i64(p.acked),
                    &to_i64(p.retried),
                    &to_i64(p.dead),
                    &to_i64(p.cancelled),
                    &to_i64(p.expired),
                    &p.oldest_ready_age_ms.map(to_i64),
                ],
            )
            .await
            .map_err(|e| self.db("record queue history", e))?;
        }
        tx.execute(
            "DELETE FROM queue_history WHERE minute < $1",
            &[&forget_before],
        )
        .await
        .map_err(|e| self.db("forget old queue history", e))?;
        tx.commit().await.map_err(|e| self.db("commit", e))?;
        Ok(stats.len())
    }

    /// See `Store::queue_history`.
    pub async fn queue_history(&self, queue: &str, since: i64) -> StoreResult<Vec<HistoryPoint>> {
        let conn = self.conn().await?;
        let queue_id = self.queue_id(&conn, queue).await?;
        let rows = conn
            .query(
                "SELECT minute, scheduled, ready, leased, dlq_depth, enqueued, acked, retried, \
                 dead, cancelled, expired, oldest_ready_age_ms FROM queue_history \
                 WHERE queue_id = $1 AND minute >= $2 ORDER BY minute",
                &[&queue_id, &since],
            )
            .await
            .map_err(|e| self.db("read queue history", e))?;
        Ok(rows
            .iter()
            .map(|r| {
                let n = |i: usize| to_u64(r.get::<_, i64>(i));
                HistoryPoint {
                    minute: r.get(0),
                    scheduled: n(1),
                    ready: n(2),
                    leased: n(3),
                    dlq_depth: n(4),
                    enqueued: n(5),
                    acked: n(6),
                    retried: n(7),
                    dead: n(8),
                    cancelled: n(9),
                    expired: n(10),
                    oldest_ready_age_ms: r.get::<_, Option<i64>>(11).map(to_u64),
                }
            })
            .collect())
    }
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

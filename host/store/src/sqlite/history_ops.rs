//! Per-minute queue history on SQLite (`Store::record_history`, `Store::queue_history`).

use rusqlite::{Connection, params};
use spool_model::HistoryPoint;

use super::read_ops::all_queue_stats;
use super::rows::{Ctx, require_queue, to_i64};
use super::writer::Tx;
use crate::StoreResult;

/// Upserts every queue's point of `minute` and forgets those before `forget_before`.
pub(super) fn record(tx: &mut Tx<'_>, minute: i64, forget_before: i64) -> StoreResult<usize> {
    let conn = tx.conn;
    let stats = all_queue_stats(conn)?;
    let mut upsert = conn
        .prepare_cached(
            "INSERT INTO queue_history (queue_id, minute, scheduled, ready, leased, dlq_depth, \
             enqueued, acked, retried, dead, cancelled, expired, oldest_ready_age_ms) \
             SELECT id, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13 FROM queues \
             WHERE name = ?1 \
             ON CONFLICT (queue_id, minute) DO UPDATE SET scheduled = excluded.scheduled, \
             ready = excluded.ready, leased = excluded.leased, dlq_depth = excluded.dlq_depth, \
             enqueued = excluded.enqueued, acked = excluded.acked, \
             retried = excluded.retried, dead = excluded.dead, \
             cancelled = excluded.cancelled, expired = excluded.expired, \
             oldest_ready_age_ms = excluded.oldest_ready_age_ms",
        )
        .ctx("prepare history upsert")?;
    for (name, s) in &stats {
        let p = HistoryPoint::of(minute, s);
        upsert
            .execute(params![
                name,
                p.minute,
                to_i64(p.scheduled),
                to_i64(p.ready),
                to_i64(p.leased),
                to_i64(p.dlq_depth),
                to_i64(p.enqueued),
                to_i64(p.acked),
                to_i64(p.retried),
                to_i64(p.dead),
                to_i64(p.cancelled),
                to_i64(p.expired),
                p.oldest_ready_age_ms.map(to_i64),
            ])
            .ctx("record queue history")?;
    }
    conn.prepare_cached("DELETE FROM queue_history WHERE minute < ?1")
        .ctx("prepare history retention")?
        .execute(params![forget_before])
        .ctx("forget old queue history")?;
    Ok(stats.len())
}

/// Queue `queue`'s points from `since`, oldest first.
pub(super) fn read(conn: &Connection, queue: &str, since: i64) -> StoreResult<Vec<HistoryPoint>> {
    let q = require_queue(conn, queue)?;
    let mut stmt = conn
        .prepare_cached(
            "SELECT minute, scheduled, ready, leased, dlq_depth, enqueued, acked, retried, dead, \
             cancelled, expired, oldest_ready_age_ms FROM queue_history \
             WHERE queue_id = ?1 AND minute >= ?2 ORDER BY minute",
        )
        .ctx("prepare history read")?;
    let rows = stmt
        .query_map(params![q.id, since], |r| {
            let n = |i: usize| r.get::<_, i64>(i).map(to_u64);
            Ok(HistoryPoint {
                minute: r.get(0)?,
                scheduled: n(1)?,
                ready: n(2)?,
                leased: n(3)?,
                dlq_depth: n(4)?,
                enqueued: n(5)?,
                acked: n(6)?,
                retried: n(7)?,
                dead: n(8)?,
                cancelled: n(9)?,
                expired: n(10)?,
                oldest_ready_age_ms: r.get::<_, Option<i64>>(11)?.map(to_u64),
            })
        })
        .ctx("read queue history")?;
    rows.collect::<rusqlite::Result<_>>()
        .ctx("read queue history")
}

/// Removes a deleted queue's history (in the deleting transaction).
pub(super) fn forget_queue(conn: &Connection, queue_id: i64) -> StoreResult<()> {
    conn.prepare_cached("DELETE FROM queue_history WHERE queue_id = ?1")
        .ctx("prepare history delete")?
        .execute(params![queue_id])
        .ctx("delete queue history")?;
    Ok(())
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

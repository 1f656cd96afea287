//! Read operations. Each runs on a pooled read connection inside `spawn_blocking`; those that
//! issue several statements wrap them in one read transaction so they see a single snapshot.
//!
//! State codes in SQL: 0 scheduled, 1 ready, 2 leased, 3 acked, 4 dead, 5 cancelled, 6 expired.

use rusqlite::{Connection, OptionalExtension, params};

use super::rows::{
    Ctx, QueueRow, decode_config, decode_cursor, message_columns, message_from_row, page_limit,
    queue_by_name, require_queue, state_code,
};
use super::write_ops::{plugin_version, validate_kv};
use crate::paging::page;
use crate::{DeadFilter, MessageFilter, StoreError, StoreResult};
use spool_model::{
    Message, MessageId, Page, PluginActivation, PluginVersion, Queue, QueueStats, TraceEntry,
    now_ms,
};

pub(super) fn get_queue(conn: &Connection, name: &str) -> StoreResult<Queue> {
    require_queue(conn, name).map(QueueRow::into_queue)
}

pub(super) fn list_queues(conn: &Connection) -> StoreResult<Vec<Queue>> {
    let rows = conn
        .prepare_cached("SELECT name, config, created_at FROM queues ORDER BY name")
        .ctx("prepare queue list")?
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .ctx("list queues")?
        .collect::<rusqlite::Result<Vec<_>>>()
        .ctx("list queues")?;
    rows.into_iter()
        .map(|(name, json, created_at)| {
            Ok(Queue {
                config: decode_config(&name, &json)?,
                name,
                created_at,
            })
        })
        .collect()
}

/// The queue-row columns [`stats_from_row`] reads, after the queue's name; a macro so the
/// statements below are built at compile time.
macro_rules! stats_columns {
    () => {
        "q.enqueued_total, q.acked_total, q.retried_total, q.dead_total, q.cancelled_total, \
         q.expired_total, q.scheduled_now, q.ready_now, q.leased_now, q.dead_now, \
         (SELECT enqueued_at FROM messages WHERE queue_id = q.id AND state = 1 ORDER BY id LIMIT 1)"
    };
}

/// One queue's stats from its row: counters kept by every write (no row counting), plus the
/// oldest ready message, one step down the `(queue_id, state, id)` index. So a queue's stats
/// cost the same at any depth.
fn stats_from_row(r: &rusqlite::Row<'_>, first: usize, now: i64) -> rusqlite::Result<QueueStats> {
    let n = |i: usize| -> rusqlite::Result<u64> { Ok(r.get::<_, i64>(first + i)?.max(0) as u64) };
    let oldest: Option<i64> = r.get(first + 10)?;
    Ok(QueueStats {
        enqueued: n(0)?,
        acked: n(1)?,
        retried: n(2)?,
        dead: n(3)?,
        cancelled: n(4)?,
        expired: n(5)?,
        scheduled: n(6)?,
        ready: n(7)?,
        leased: n(8)?,
        dlq_depth: n(9)?,
        oldest_ready_age_ms: oldest.map(|t| (now - t).max(0) as u64),
    })
}

pub(super) fn queue_stats(conn: &Connection, name: &str) -> StoreResult<QueueStats> {
    let now = now_ms();
    conn.prepare_cached(concat!(
        "SELECT ",
        stats_columns!(),
        " FROM queues q WHERE q.name = ?1"
    ))
    .ctx("prepare queue stats")?
    .query_row(params![name], |r| stats_from_row(r, 0, now))
    .optional()
    .ctx("read queue stats")?
    .ok_or_else(|| StoreError::QueueNotFound(name.to_owned()))
}

/// Every queue's stats in one statement, by name.
pub(super) fn all_queue_stats(conn: &Connection) -> StoreResult<Vec<(String, QueueStats)>> {
    let now = now_ms();
    conn.prepare_cached(concat!(
        "SELECT q.name, ",
        stats_columns!(),
        " FROM queues q ORDER BY q.name"
    ))
    .ctx("prepare queue stats")?
    .query_map([], |r| Ok((r.get(0)?, stats_from_row(r, 1, now)?)))
    .ctx("read queue stats")?
    .collect::<rusqlite::Result<Vec<_>>>()
    .ctx("read queue stats")
}

pub(super) fn get_message(conn: &Connection, id: MessageId) -> StoreResult<Message> {
    conn.prepare_cached(concat!(
        "SELECT ",
        message_columns!(),
        " FROM messages m JOIN queues q ON q.id = m.queue_id WHERE m.id = ?1"
    ))
    .ctx("prepare message lookup")?
    .query_row(params![id], message_from_row)
    .optional()
    .ctx("read message")?
    .ok_or(StoreError::MessageNotFound(id))
}

/// Most messages a trace returns: a runaway fan-out must not turn one request into a dump of
/// the table.
const MAX_TRACE: i64 = 10_000;

/// The correlation tree of message `id`: every message with its correlation id, and the
/// message that started the chain (whose id is the correlation id of the messages it caused).
pub(super) fn trace(conn: &Connection, id: MessageId) -> StoreResult<(String, Vec<TraceEntry>)> {
    let tx = conn.unchecked_transaction().ctx("begin trace read")?;
    let correlation: Option<String> = tx
        .prepare_cached("SELECT correlation_id FROM messages WHERE id = ?1")
        .ctx("prepare trace root")?
        .query_row(params![id], |r| r.get(0))
        .optional()
        .ctx("read trace root")?
        .ok_or(StoreError::MessageNotFound(id))?;
    let correlation = correlation.unwrap_or_else(|| id.to_string());
    // A correlation id that names a message (the usual case: the root's id) brings the root.
    let root: Option<MessageId> = correlation
        .parse::<MessageId>()
        .ok()
        .filter(|r| r.to_string() == correlation);
    let entries = tx
        .prepare_cached(
            "SELECT m.id, m.parent_id, q.name, m.topic, m.state, m.plugin_version, m.enqueued_at \
             FROM messages m JOIN queues q ON q.id = m.queue_id \
             WHERE m.correlation_id = ?1 OR m.id = ?2 ORDER BY m.id LIMIT ?3",
        )
        .ctx("prepare trace")?
        .query_map(params![correlation, root, MAX_TRACE], |r| {
            Ok(TraceEntry {
                id: r.get(0)?,
                parent_id: r.get(1)?,
                queue: r.get(2)?,
                topic: r.get(3)?,
                state: super::rows::state_column(r, 4)?,
                plugin_version: r.get(5)?,
                enqueued_at: r.get(6)?,
            })
        })
        .ctx("read trace")?
        .collect::<rusqlite::Result<Vec<_>>>()
        .ctx("read trace")?;
    Ok((correlation, entries))
}

pub(super) fn list_messages(
    conn: &mut Connection,
    queue: &str,
    filter: &MessageFilter,
) -> StoreResult<Page<Message>> {
    let after = decode_cursor(filter.cursor.as_deref())?;
    let limit = page_limit(filter.limit);
    let tx = conn.transaction().ctx("begin list snapshot")?;
    let q =
        queue_by_name(&tx, queue)?.ok_or_else(|| StoreError::QueueNotFound(queue.to_owned()))?;
    let items = match (filter.state, &filter.idempotency_key) {
        // Keys are unique per producer scope, so this finds a handful at most; the partial
        // index on (queue_id, idem_scope, idem_key) holds every keyed message of the queue.
        (state, Some(key)) => tx
            .prepare_cached(concat!(
                "SELECT ",
                message_columns!(),
                " FROM messages m JOIN queues q ON q.id = m.queue_id \
                 WHERE m.queue_id = ?1 AND m.idem_key = ?2 AND (?3 IS NULL OR m.state = ?3) \
                 AND m.id > ?4 ORDER BY m.id LIMIT ?5"
            ))
            .ctx("prepare message search")?
            .query_map(
                params![q.id, key, state.map(state_code), after, limit + 1],
                message_from_row,
            )
            .ctx("search messages")?
            .collect::<rusqlite::Result<Vec<_>>>(),
        (Some(state), None) => tx
            .prepare_cached(concat!(
                "SELECT ",
                message_columns!(),
                " FROM messages m JOIN queues q ON q.id = m.queue_id \
                 WHERE m.queue_id = ?1 AND m.state = ?2 AND m.id > ?3 ORDER BY m.id LIMIT ?4"
            ))
            .ctx("prepare message list")?
            .query_map(
                params![q.id, state_code(state), after, limit + 1],
                message_from_row,
            )
            .ctx("list messages")?
            .collect::<rusqlite::Result<Vec<_>>>(),
        // Without a filter, merge the per-state ranges of the (queue_id, state, id) index
        // instead of walking the whole table in id order past other queues' messages.
        (None, None) => tx
            .prepare_cached(concat!(
                "SELECT ",
                message_columns!(),
                " FROM messages m JOIN queues q ON q.id = m.queue_id WHERE m.id IN (\
                 SELECT id FROM (SELECT id FROM messages WHERE queue_id = ?1 AND state = 0 AND id > ?2 ORDER BY id LIMIT ?3) \
                 UNION ALL SELECT id FROM (SELECT id FROM messages WHERE queue_id = ?1 AND state = 1 AND id > ?2 ORDER BY id LIMIT ?3) \
                 UNION ALL SELECT id FROM (SELECT id FROM messages WHERE queue_id = ?1 AND state = 2 AND id > ?2 ORDER BY id LIMIT ?3) \
                 UNION ALL SELECT id FROM (SELECT id FROM messages WHERE queue_id = ?1 AND state = 3 AND id > ?2 ORDER BY id LIMIT ?3) \
                 UNION ALL SELECT id FROM (SELECT id FROM messages WHERE queue_id = ?1 AND state = 4 AND id > ?2 ORDER BY id LIMIT ?3) \
                 UNION ALL SELECT id FROM (SELECT id FROM messages WHERE queue_id = ?1 AND state = 5 AND id > ?2 ORDER BY id LIMIT ?3) \
                 UNION ALL SELECT id FROM (SELECT id FROM messages WHERE queue_id = ?1 AND state = 6 AND id > ?2 ORDER BY id LIMIT ?3) \
                 ORDER BY 1 LIMIT ?3) ORDER BY m.id"
            ))
            .ctx("prepare message list")?
            .query_map(params![q.id, after, limit + 1], message_from_row)
            .ctx("list messages")?
            .collect::<rusqlite::Result<Vec<_>>>(),
    }
    .ctx("list messages")?;
    Ok(page(items, limit))
}

pub(super) fn list_dead(conn: &mut Connection, filter: &DeadFilter) -> StoreResult<Page<Message>> {
    let after = decode_cursor(filter.cursor.as_deref())?;
    let limit = page_limit(filter.limit);
    let tx = conn.transaction().ctx("begin dlq snapshot")?;
    let queue_id = match &filter.queue {
        Some(name) => Some(require_queue(&tx, name)?.id),
        None => None,
    };
    let category = filter.category.map(|c| c.as_str());
    let items = tx
        .prepare_cached(concat!(
            "SELECT ",
            message_columns!(),
            " FROM messages m JOIN queues q ON q.id = m.queue_id \
             WHERE m.state = 4 AND m.id > ?1 \
             AND (?2 IS NULL OR m.queue_id = ?2) \
             AND (?3 IS NULL OR m.error_category = ?3) \
             AND (?4 IS NULL OR (m.reviewed_at IS NOT NULL) = ?4) \
             ORDER BY m.id LIMIT ?5"
        ))
        .ctx("prepare dlq list")?
        .query_map(
            params![after, queue_id, category, filter.reviewed, limit + 1],
            message_from_row,
        )
        .ctx("list dead letters")?
        .collect::<rusqlite::Result<Vec<_>>>()
        .ctx("list dead letters")?;
    Ok(page(items, limit))
}

pub(super) fn active_plugin(
    conn: &mut Connection,
    name: &str,
) -> StoreResult<(PluginVersion, Vec<u8>)> {
    let tx = conn.transaction().ctx("begin plugin snapshot")?;
    let active: i64 = tx
        .prepare_cached("SELECT active_version FROM plugin_heads WHERE name = ?1")
        .ctx("prepare plugin head")?
        .query_row(params![name], |r| r.get(0))
        .optional()
        .ctx("read plugin head")?
        .ok_or_else(|| StoreError::PluginNotFound(name.to_owned()))?;
    let version = plugin_version(&tx, name, active, true)?;
    let wasm = super::plugin_chunks::stored_bytes(&tx, name, active)?;
    Ok((version, wasm))
}

pub(super) fn list_plugins(conn: &Connection) -> StoreResult<Vec<PluginVersion>> {
    conn.prepare_cached(
        "SELECT p.name, p.version, p.sha256, p.world, p.size, p.created_at, \
         coalesce(h.active_version = p.version, 0) \
         FROM plugins p LEFT JOIN plugin_heads h ON h.name = p.name \
         ORDER BY p.name, p.version",
    )
    .ctx("prepare plugin list")?
    .query_map([], |r| {
        Ok(PluginVersion {
            name: r.get(0)?,
            version: r.get(1)?,
            sha256: r.get(2)?,
            world: r.get(3)?,
            size: r.get::<_, i64>(4)?.max(0) as u64,
            created_at: r.get(5)?,
            active: r.get(6)?,
        })
    })
    .ctx("list plugins")?
    .collect::<rusqlite::Result<Vec<_>>>()
    .ctx("list plugins")
}

pub(super) fn plugin_history(
    conn: &mut Connection,
    name: &str,
) -> StoreResult<Vec<PluginActivation>> {
    let tx = conn.transaction().ctx("begin plugin history snapshot")?;
    let known: i64 = tx
        .prepare_cached("SELECT count(*) FROM plugin_heads WHERE name = ?1")
        .ctx("prepare plugin head")?
        .query_row(params![name], |r| r.get(0))
        .ctx("read plugin head")?;
    if known == 0 {
        return Err(StoreError::PluginNotFound(name.to_owned()));
    }
    tx.prepare_cached(
        "SELECT at, actor, action, from_version, to_version FROM plugin_history \
         WHERE name = ?1 ORDER BY id",
    )
    .ctx("prepare plugin history")?
    .query_map(params![name], |r| {
        let action: String = r.get(2)?;
        Ok(PluginActivation {
            at: r.get(0)?,
            actor: r.get(1)?,
            action: action.parse().map_err(|e: String| {
                rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, e.into())
            })?,
            from_version: r.get(3)?,
            to_version: r.get(4)?,
        })
    })
    .ctx("read plugin history")?
    .collect::<rusqlite::Result<Vec<_>>>()
    .ctx("read plugin history")
}

pub(super) fn kv_get(conn: &Connection, plugin: &str, key: &str) -> StoreResult<Option<Vec<u8>>> {
    validate_kv(plugin, key, None)?;
    conn.prepare_cached("SELECT value FROM plugin_kv WHERE plugin = ?1 AND key = ?2")
        .ctx("prepare kv get")?
        .query_row(params![plugin, key], |r| r.get(0))
        .optional()
        .ctx("read kv entry")
}

pub(super) fn ping(conn: &Connection) -> StoreResult<()> {
    conn.prepare_cached("SELECT count(*) FROM queues")
        .ctx("prepare ping")?
        .query_row([], |r| r.get::<_, i64>(0))
        .ctx("ping")?;
    Ok(())
}

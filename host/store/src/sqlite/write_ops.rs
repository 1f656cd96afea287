//! Write operations. Each runs on the writer thread inside its own savepoint of a group-commit
//! transaction (see `writer.rs`), so returning an error undoes everything the operation wrote.
//!
//! Message writes say `OR FAIL`: the default `ABORT` makes SQLite keep a statement journal (a
//! copy of every page a statement touches) so that it can undo a half-done statement, which
//! roughly doubles the cost of an ack. The job's savepoint already undoes the whole operation on
//! any error, so statement-level undo buys nothing here.
//!
//! State codes in SQL: 0 scheduled, 1 ready, 2 leased, 3 acked, 4 dead, 5 cancelled, 6 expired.

use crate::message_timing::{Timing, timing};
use std::collections::HashMap;
use std::sync::LazyLock;

use rand::Rng;
use rusqlite::{Connection, OptionalExtension, params};

use super::rows::{
    Counter, Counters, Ctx, QueueRow, decode_headers, encode_config, encode_headers,
    flush_counters, queue_by_name, require_queue, state_code, state_column, to_i64, truncate,
};
use super::writer::Tx;
use super::{plugin_chunks, route_ops};
pub(super) use crate::kv_rules::validate_kv;
use crate::{ClaimBatch, DeadFilter, Maintenance, StoreError, StoreResult};
use spool_model::{
    Claimed, DeletedMessages, Deployed, Enqueued, ErrorCategory, MessageId, MessageState,
    NewMessage, PluginAction, PluginDeleted, PluginVersion, Queue, QueueConfig, QueueConfigPatch,
    RouteId, Settle, SettleResult, Settlement, Strategy, now_ms, validate_name,
};

/// Most messages one claim hands out.
const MAX_CLAIM: u32 = 10_000;
/// Longest idempotency key, in bytes.
const MAX_IDEMPOTENCY_KEY: usize = 256;
/// Longest error text kept with a message, in bytes.
const MAX_ERROR_TEXT: usize = 8 * 1024;
/// Rows each kind of maintenance work touches per `maintain` call; keeps one pass from holding
/// the writer (and so every producer) for long after an outage left a big backlog.
const MAINTAIN_LIMIT: i64 = 10_000;

// --- queues ------------------------------------------------------------------------------------

pub(super) fn put_queue(
    tx: &mut Tx<'_>,
    name: &str,
    patch: &QueueConfigPatch,
) -> StoreResult<(Queue, bool)> {
    validate_name("queue", name).map_err(StoreError::Invalid)?;
    if let Some(Some(handler)) = &patch.handler {
        check_handler_world(tx.conn, name, handler)?;
    }
    match queue_by_name(tx.conn, name)? {
        Some(existing) => {
            let config = existing
                .config
                .patched(patch)
                .map_err(|e| StoreError::Invalid(format!("queue {name:?}: {e}")))?;
            tx.conn
                .prepare_cached("UPDATE queues SET config = ?2 WHERE id = ?1")
                .ctx("prepare queue update")?
                .execute(params![existing.id, encode_config(&config)?])
                .ctx("update queue")?;
            if existing.config.paused && !config.paused {
                tx.wake(name);
            }
            tracing::info!(queue = name, "queue updated");
            let row = QueueRow { config, ..existing };
            Ok((row.into_queue(), false))
        }
        None => {
            let config = QueueConfig::default()
                .patched(patch)
                .map_err(|e| StoreError::Invalid(format!("queue {name:?}: {e}")))?;
            let now = now_ms();
            tx.conn
                .prepare_cached("INSERT INTO queues (name, config, created_at) VALUES (?1, ?2, ?3)")
                .ctx("prepare queue insert")?
                .execute(params![name, encode_config(&config)?, now])
                .ctx("insert queue")?;
            tracing::info!(queue = name, "queue created");
            let queue = Queue {
                name: name.to_owned(),
                config,
                created_at: now,
            };
            Ok((queue, true))
        }
    }
}

/// A queue's handler must be a `handler` plugin. One that is not deployed yet is allowed
/// (deploy-later is a valid workflow); the deploy is then checked against this queue instead.
fn check_handler_world(conn: &Connection, queue: &str, handler: &str) -> StoreResult<()> {
    let Some(active) = active_version(conn, handler)? else {
        return Ok(());
    };
    let v = plugin_version(conn, handler, active, true)?;
    if v.world == crate::plugin_rules::HANDLER_WORLD {
        return Ok(());
    }
    Err(StoreError::WrongWorld(format!(
        "plugin {handler:?} (active version {}) is a {} plugin, not a handler: queue {queue:?} \
         cannot use it as its handler; deploy a component built for the `handler` world under \
         another name and set that",
        v.version, v.world
    )))
}

/// Deletes the queue and every message it holds; see `Store::delete_queue`.
pub(super) fn delete_queue(
    tx: &mut Tx<'_>,
    name: &str,
    force: bool,
) -> StoreResult<DeletedMessages> {
    let conn = tx.conn;
    let q = require_queue(conn, name)?;
    let mut deleted = DeletedMessages::default();
    let by_state: Vec<(MessageState, i64)> = conn
        .prepare_cached("SELECT state, count(*) FROM messages WHERE queue_id = ?1 GROUP BY state")
        .ctx("prepare queue census")?
        .query_map(params![q.id], |r| Ok((state_column(r, 0)?, r.get(1)?)))
        .ctx("count queue messages")?
        .collect::<rusqlite::Result<_>>()
        .ctx("count queue messages")?;
    for (state, n) in by_state {
        deleted.add(state, n.max(0) as u64);
    }
    if deleted.live() > 0 && !force {
        return Err(StoreError::QueueNotEmpty {
            queue: name.to_owned(),
            scheduled: deleted.scheduled,
            ready: deleted.ready,
            leased: deleted.leased,
        });
    }
    // A route to a missing queue would refuse every publish it matches, so routes go with
    // their queue only when asked to.
    let routes = route_ops::routes_to_queue(conn, q.id)?;
    if !routes.is_empty() && !force {
        return Err(StoreError::QueueHasRoutes {
            queue: name.to_owned(),
            routes,
        });
    }
    deleted.routes = route_ops::delete_routes_to_queue(conn, q.id)?;
    conn.prepare_cached("DELETE FROM messages WHERE queue_id = ?1")
        .ctx("prepare queue message delete")?
        .execute(params![q.id])
        .ctx("delete queue messages")?;
    super::history_ops::forget_queue(conn, q.id)?;
    conn.prepare_cached("DELETE FROM queues WHERE id = ?1")
        .ctx("prepare queue delete")?
        .execute(params![q.id])
        .ctx("delete queue")?;
    tracing::info!(
        queue = name,
        force,
        scheduled = deleted.scheduled,
        ready = deleted.ready,
        leased = deleted.leased,
        acked = deleted.acked,
        dead = deleted.dead,
        cancelled = deleted.cancelled,
        expired = deleted.expired,
        "queue deleted"
    );
    Ok(deleted)
}

// --- producers ---------------------------------------------------------------------------------

pub(super) fn enqueue(
    tx: &mut Tx<'_>,
    queue: &str,
    messages: Vec<NewMessage>,
) -> StoreResult<Vec<Enqueued>> {
    let q = require_queue(tx.conn, queue)?;
    let mut counters = Counters::default();
    let out = enqueue_into(tx, &q, messages, None, &mut counters)?;
    flush_counters(&mut counters, tx.conn)?;
    Ok(out)
}

/// Writes `messages` into queue `q` (through `route`, if a route chose it); the caller flushes
/// `counters`. Shared by enqueue, publish and the outbox of an ack.
pub(super) fn enqueue_into(
    tx: &mut Tx<'_>,
    q: &QueueRow,
    messages: Vec<NewMessage>,
    route: Option<RouteId>,
    counters: &mut Counters,
) -> StoreResult<Vec<Enqueued>> {
    let now = now_ms();
    // A key held by a message whose TTL has passed must be free for the new message, so due
    // expiries are applied first; without keys the claim path does this lazily.
    if messages.iter().any(|m| m.idempotency_key.is_some()) {
        expire_due(tx.conn, q.id, now, counters)?;
    }
    let default_ttl = q.config.default_ttl_ms.map(to_i64);

    let mut out = Vec::with_capacity(messages.len());
    // Messages without a key are buffered and written by multi-row INSERTs; a keyed message
    // (or one with a reserved id) flushes the buffer first so that duplicates inside one batch
    // resolve in order and ids stay in the order of the messages.
    let mut pending: Vec<NewRow> = Vec::with_capacity(messages.len().min(INSERT_CHUNK));
    let mut inserted = 0usize;
    for (i, m) in messages.into_iter().enumerate() {
        if let Some(key) = &m.idempotency_key
            && (key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY)
        {
            return Err(StoreError::Invalid(format!(
                "message {i}: idempotency_key must be 1 to {MAX_IDEMPOTENCY_KEY} bytes, got {}",
                key.len()
            )));
        }
        let Timing {
            state,
            available_at,
            expires_at,
        } = timing(&m, now, default_ttl);
        let row = NewRow {
            state: state_code(state),
            available_at,
            expires_at,
            headers: encode_headers(&m.headers)?,
            scope: m.idempotency_scope.clone().unwrap_or_default(),
            route,
            depth: i64::from(m.depth),
            m,
        };
        let Some(key) = row.m.idempotency_key.as_deref() else {
            counters.moved(q.id, None, Some(state), 1);
            let reserved = row.m.id.is_some();
            if reserved {
                inserted += insert_rows(tx.conn, q.id, now, &mut pending, &mut out)?;
            }
            pending.push(row);
            if pending.len() == INSERT_CHUNK || reserved {
                inserted += insert_rows(tx.conn, q.id, now, &mut pending, &mut out)?;
            }
            continue;
        };
        inserted += insert_rows(tx.conn, q.id, now, &mut pending, &mut out)?;
        match find_by_key(tx.conn, q.id, &row.scope, key)? {
            Some((id, existing)) => {
                if row.m.supersede
                    && matches!(existing, MessageState::Scheduled | MessageState::Ready)
                {
                    counters.moved(q.id, Some(existing), Some(state), 1);
                    tx.conn
                        .prepare_cached(
                            "UPDATE OR FAIL messages SET payload = ?2, headers = ?3, priority = ?4, \
                             available_at = ?5, expires_at = ?6, state = ?7 WHERE id = ?1",
                        )
                        .ctx("prepare supersede")?
                        .execute(params![
                            id,
                            row.m.payload,
                            row.headers,
                            row.m.priority,
                            row.available_at,
                            row.expires_at,
                            row.state
                        ])
                        .ctx("supersede message")?;
                }
                out.push(Enqueued { id, existing: true });
            }
            None => {
                counters.moved(q.id, None, Some(state), 1);
                pending.push(row);
                inserted += insert_rows(tx.conn, q.id, now, &mut pending, &mut out)?;
            }
        }
    }
    inserted += insert_rows(tx.conn, q.id, now, &mut pending, &mut out)?;
    counters.add(q.id, Counter::Enqueued, inserted as i64);
    // Scheduled messages wake the worker too: it may be sleeping until a later due time.
    if !out.is_empty() {
        tx.wake(&q.name);
    }
    tracing::debug!(queue = %q.name, count = out.len(), inserted, "enqueued");
    Ok(out)
}

/// Rows per multi-row INSERT: amortises per-statement work (AUTOINCREMENT bookkeeping, statement
/// stepping and reset) while staying far below SQLite's parameter limit.
const INSERT_CHUNK: usize = 32;
const INSERT_COLUMNS: usize = 17;

/// A message about to be inserted, with its derived columns.
struct NewRow {
    state: i64,
    available_at: i64,
    expires_at: Option<i64>,
    headers: Option<String>,
    /// The `idem_scope` column: the producer's scope, or `''`, the shared one.
    scope: String,
    route: Option<RouteId>,
    depth: i64,
    m: NewMessage,
}

fn insert_sql(rows: usize) -> String {
    let mut sql = String::from(
        "INSERT OR FAIL INTO messages (queue_id, state, priority, enqueued_at, available_at, \
         expires_at, idem_key, idem_scope, topic, correlation_id, headers, payload, producer, \
         id, parent_id, chain_depth, route_id) VALUES ",
    );
    for r in 0..rows {
        if r > 0 {
            sql.push(',');
        }
        sql.push('(');
        for c in 0..INSERT_COLUMNS {
            if c > 0 {
                sql.push(',');
            }
            sql.push_str(&format!("?{}", r * INSERT_COLUMNS + c + 1));
        }
        sql.push(')');
    }
    sql
}

/// Inserts and drains `rows`, appending their ids to `out` in order; returns how many.
fn insert_rows(
    conn: &Connection,
    queue_id: i64,
    now: i64,
    rows: &mut Vec<NewRow>,
    out: &mut Vec<Enqueued>,
) -> StoreResult<usize> {
    let n = rows.len();
    if n == 0 {
        return Ok(0);
    }
    // Full chunks use one cached statement; a short tail goes row by row rather than caching a
    // statement for every possible tail length.
    static INSERT_ONE: LazyLock<String> = LazyLock::new(|| insert_sql(1));
    static INSERT_CHUNKED: LazyLock<String> = LazyLock::new(|| insert_sql(INSERT_CHUNK));
    let (sql, per_stmt) = if n == INSERT_CHUNK {
        (&*INSERT_CHUNKED, INSERT_CHUNK)
    } else {
        (&*INSERT_ONE, 1)
    };
    let mut stmt = conn.prepare_cached(sql).ctx("prepare message insert")?;
    for group in rows.chunks(per_stmt) {
        let mut values: Vec<&dyn rusqlite::ToSql> =
            Vec::with_capacity(group.len() * INSERT_COLUMNS);
        for r in group {
            values.extend_from_slice(&[
                &queue_id,
                &r.state,
                &r.m.priority,
                &now,
                &r.available_at,
                &r.expires_at,
                &r.m.idempotency_key,
                &r.scope,
                &r.m.topic,
                &r.m.correlation_id,
                &r.headers,
                &r.m.payload,
                &r.m.producer,
                &r.m.id,
                &r.m.parent_id,
                &r.depth,
                &r.route,
            ]);
        }
        stmt.execute(&*values).ctx("insert messages")?;
        // A reserved id always travels alone (see `enqueue_into`).
        if let [
            NewRow {
                m: NewMessage { id: Some(id), .. },
                ..
            },
        ] = group
        {
            out.push(Enqueued {
                id: *id,
                existing: false,
            });
            continue;
        }
        // One INSERT statement under the write lock assigns consecutive rowids (AUTOINCREMENT:
        // each is one more than the largest ever used), so the last id gives all of them.
        let last = conn.last_insert_rowid();
        let first = last - group.len() as i64 + 1;
        out.extend((first..=last).map(|id| Enqueued {
            id,
            existing: false,
        }));
    }
    rows.clear();
    Ok(n)
}

/// The live message holding `key` in `scope` of one queue. Keys of other scopes are invisible,
/// so nothing a producer sends can return or supersede another producer's message.
fn find_by_key(
    conn: &Connection,
    queue_id: i64,
    scope: &str,
    key: &str,
) -> StoreResult<Option<(MessageId, MessageState)>> {
    conn.prepare_cached(
        "SELECT id, state FROM messages WHERE queue_id = ?1 AND idem_scope = ?2 AND idem_key = ?3",
    )
    .ctx("prepare idempotency lookup")?
    .query_row(params![queue_id, scope, key], |r| {
        Ok((r.get(0)?, state_column(r, 1)?))
    })
    .optional()
    .ctx("look up idempotency key")
}

/// Expires never-started messages of one queue whose TTL has passed, freeing their keys.
fn expire_due(
    conn: &Connection,
    queue_id: i64,
    now: i64,
    counters: &mut Counters,
) -> StoreResult<u64> {
    // One statement per source state, so the depth counters know what left. Each repeats the
    // TTL index's `state < 2` term literally: SQLite only uses a partial index when the query
    // states its condition.
    let mut total = 0;
    for (sql, from) in [
        (
            "UPDATE OR FAIL messages SET state = 6, finished_at = ?2, idem_key = NULL \
             WHERE queue_id = ?1 AND state < 2 AND state = 0 AND attempts = 0 \
             AND expires_at IS NOT NULL AND expires_at <= ?2",
            MessageState::Scheduled,
        ),
        (
            "UPDATE OR FAIL messages SET state = 6, finished_at = ?2, idem_key = NULL \
             WHERE queue_id = ?1 AND state < 2 AND state = 1 AND attempts = 0 \
             AND expires_at IS NOT NULL AND expires_at <= ?2",
            MessageState::Ready,
        ),
    ] {
        let n = conn
            .prepare_cached(sql)
            .ctx("prepare ttl expiry")?
            .execute(params![queue_id, now])
            .ctx("expire messages")? as i64;
        counters.moved(queue_id, Some(from), Some(MessageState::Expired), n);
        total += n;
    }
    counters.add(queue_id, Counter::Expired, total);
    Ok(total as u64)
}

// --- consumers ---------------------------------------------------------------------------------

/// Appends the columns [`claimed_row`] reads to a claim statement, at compile time.
macro_rules! returning_claimed {
    ($sql:literal) => {
        concat!(
            $sql,
            " RETURNING id, attempts, priority, headers, topic, correlation_id, enqueued_at, payload, \
             chain_depth"
        )
    };
}

pub(super) fn claim(
    tx: &mut Tx<'_>,
    queue: &str,
    max: u32,
    lease_ms: u64,
) -> StoreResult<ClaimBatch> {
    let q = require_queue(tx.conn, queue)?;
    if q.config.paused || max == 0 {
        return Ok(ClaimBatch::default());
    }
    let conn = tx.conn;
    let now = now_ms();
    let mut counters = Counters::default();
    expire_due(conn, q.id, now, &mut counters)?;
    let promoted = conn
        .prepare_cached(
            "UPDATE OR FAIL messages SET state = 1 WHERE queue_id = ?1 AND state = 0 AND available_at <= ?2",
        )
        .ctx("prepare promotion")?
        .execute(params![q.id, now])
        .ctx("promote scheduled messages")?;
    counters.moved(
        q.id,
        Some(MessageState::Scheduled),
        Some(MessageState::Ready),
        promoted as i64,
    );

    let max = i64::from(max.min(MAX_CLAIM));
    let lease_until = now.saturating_add(to_i64(lease_ms));
    let mut rows = match q.config.strategy {
        Strategy::Priority => claim_ordered(
            conn,
            returning_claimed!(
                "UPDATE OR FAIL messages SET state = 2, attempts = attempts + 1, \
                 lease_expires_at = ?3 WHERE id IN (SELECT id FROM messages \
                 WHERE queue_id = ?1 AND state = 1 ORDER BY priority DESC, id LIMIT ?2)"
            ),
            q.id,
            max,
            lease_until,
        )?,
        Strategy::Fifo => claim_ordered(
            conn,
            returning_claimed!(
                "UPDATE OR FAIL messages SET state = 2, attempts = attempts + 1, \
                 lease_expires_at = ?3 WHERE id IN (SELECT id FROM messages \
                 WHERE queue_id = ?1 AND state = 1 ORDER BY id LIMIT ?2)"
            ),
            q.id,
            max,
            lease_until,
        )?,
        Strategy::Lifo => claim_ordered(
            conn,
            returning_claimed!(
                "UPDATE OR FAIL messages SET state = 2, attempts = attempts + 1, \
                 lease_expires_at = ?3 WHERE id IN (SELECT id FROM messages \
                 WHERE queue_id = ?1 AND state = 1 ORDER BY id DESC LIMIT ?2)"
            ),
            q.id,
            max,
            lease_until,
        )?,
        Strategy::WeightedRandom => claim_weighted(conn, q.id, max, now, lease_until)?,
    };
    counters.moved(
        q.id,
        Some(MessageState::Ready),
        Some(MessageState::Leased),
        rows.len() as i64,
    );
    flush_counters(&mut counters, conn)?;
    // RETURNING yields rows in whatever order SQLite updated them; hand them out in the
    // strategy's order (weighted-random rows are already in their drawn order).
    match q.config.strategy {
        Strategy::Priority => rows.sort_by_key(|r| (std::cmp::Reverse(r.priority), r.id)),
        Strategy::Fifo => rows.sort_by_key(|r| r.id),
        Strategy::Lifo => rows.sort_by_key(|r| std::cmp::Reverse(r.id)),
        Strategy::WeightedRandom => {}
    }

    let next_due_at = if rows.is_empty() {
        conn.prepare_cached(
            "SELECT min(available_at) FROM messages WHERE queue_id = ?1 AND state = 0",
        )
        .ctx("prepare next due")?
        .query_row(params![q.id], |r| r.get::<_, Option<i64>>(0))
        .ctx("read next due time")?
    } else {
        None
    };
    let messages = rows
        .into_iter()
        .map(|r| Claimed {
            id: r.id,
            queue: q.name.clone(),
            attempt: r.attempt,
            payload: r.payload,
            headers: r.headers,
            topic: r.topic,
            correlation_id: r.correlation_id,
            enqueued_at: r.enqueued_at,
            lease_expires_at: lease_until,
            depth: r.depth,
        })
        .collect::<Vec<_>>();
    tracing::trace!(queue, claimed = messages.len(), "claimed");
    Ok(ClaimBatch {
        messages,
        next_due_at,
    })
}

struct ClaimedRow {
    id: MessageId,
    attempt: u32,
    priority: i32,
    headers: Vec<(String, String)>,
    topic: Option<String>,
    correlation_id: Option<String>,
    enqueued_at: i64,
    payload: Vec<u8>,
    depth: u32,
}

fn claimed_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ClaimedRow> {
    let attempts: i64 = r.get(1)?;
    Ok(ClaimedRow {
        id: r.get(0)?,
        attempt: u32::try_from(attempts).unwrap_or(u32::MAX),
        priority: r.get(2)?,
        headers: decode_headers(3, r.get(3)?)?,
        topic: r.get(4)?,
        correlation_id: r.get(5)?,
        enqueued_at: r.get(6)?,
        payload: r.get::<_, Option<Vec<u8>>>(7)?.unwrap_or_default(),
        depth: u32::try_from(r.get::<_, i64>(8)?).unwrap_or(u32::MAX),
    })
}

fn claim_ordered(
    conn: &Connection,
    update: &str,
    queue_id: i64,
    max: i64,
    lease_until: i64,
) -> StoreResult<Vec<ClaimedRow>> {
    let mut stmt = conn.prepare_cached(update).ctx("prepare claim")?;
    let rows = stmt
        .query_map(params![queue_id, max, lease_until], claimed_row)
        .ctx("claim messages")?;
    rows.collect::<rusqlite::Result<Vec<_>>>()
        .ctx("read claimed messages")
}

/// Draws up to `max` of the oldest ready messages at random, weighted by priority and by how
/// long each has been waiting. Because the candidates are always the oldest ones and a waiting
/// message's weight keeps growing, every message is eventually drawn: nothing starves.
fn claim_weighted(
    conn: &Connection,
    queue_id: i64,
    max: i64,
    now: i64,
    lease_until: i64,
) -> StoreResult<Vec<ClaimedRow>> {
    let candidates_limit = (max.saturating_mul(8)).clamp(64, 4_096);
    let candidates: Vec<(MessageId, i64, i64)> = conn
        .prepare_cached(
            "SELECT id, priority, available_at FROM messages WHERE queue_id = ?1 AND state = 1 \
             ORDER BY id LIMIT ?2",
        )
        .ctx("prepare weighted candidates")?
        .query_map(params![queue_id, candidates_limit], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .ctx("read weighted candidates")?
        .collect::<rusqlite::Result<_>>()
        .ctx("read weighted candidates")?;
    let Some(min_priority) = candidates.iter().map(|c| c.1).min() else {
        return Ok(Vec::new());
    };

    // Weighted sampling without replacement (Efraimidis–Spirakis): each candidate draws
    // ln(u) / w and the largest keys win.
    let mut rng = rand::rng();
    let mut keyed: Vec<(f64, MessageId)> = candidates
        .iter()
        .map(|&(id, priority, available_at)| {
            let priority_weight = 1.0 + (priority - min_priority) as f64;
            let age_s = (now - available_at).max(0) as f64 / 1_000.0;
            let weight = priority_weight * (1.0 + age_s);
            let u: f64 = 1.0 - rng.random::<f64>();
            (u.ln() / weight, id)
        })
        .collect();
    keyed.sort_by(|a, b| b.0.total_cmp(&a.0));
    keyed.truncate(usize::try_from(max).unwrap_or(usize::MAX));

    let mut stmt = conn
        .prepare_cached(returning_claimed!(
            "UPDATE OR FAIL messages SET state = 2, attempts = attempts + 1, \
             lease_expires_at = ?2 WHERE id = ?1 AND state = 1"
        ))
        .ctx("prepare weighted claim")?;
    let mut out = Vec::with_capacity(keyed.len());
    for (_, id) in keyed {
        if let Some(row) = stmt
            .query_row(params![id, lease_until], claimed_row)
            .optional()
            .ctx("claim message")?
        {
            out.push(row);
        }
    }
    Ok(out)
}

struct LeaseRow {
    state: MessageState,
    attempts: i64,
    cancel_requested: bool,
    queue_id: i64,
    queue: String,
}

fn lease_row(conn: &Connection, id: MessageId) -> StoreResult<Option<LeaseRow>> {
    conn.prepare_cached(
        "SELECT m.state, m.attempts, m.cancel_requested, m.queue_id, q.name \
         FROM messages m JOIN queues q ON q.id = m.queue_id WHERE m.id = ?1",
    )
    .ctx("prepare lease lookup")?
    .query_row(params![id], |r| {
        Ok(LeaseRow {
            state: state_column(r, 0)?,
            attempts: r.get(1)?,
            cancel_requested: r.get(2)?,
            queue_id: r.get(3)?,
            queue: r.get(4)?,
        })
    })
    .optional()
    .ctx("look up lease")
}

pub(super) fn settle(tx: &mut Tx<'_>, settles: Vec<Settle>) -> StoreResult<Vec<SettleResult>> {
    let conn = tx.conn;
    let now = now_ms();
    let delete_acked = tx.opts.acked_retention_ms == 0;
    let mut counters = Counters::default();
    // Acks are most settles: one fenced statement applies all of them at once; only a miss
    // (lost lease, or a cancel request) goes through the per-message path below.
    let mut acked = ack_batch(conn, &settles, now, delete_acked)?;
    let mut out = Vec::with_capacity(settles.len());
    for s in settles {
        // `remove`: a second settle of the same delivery in this batch finds the lease gone.
        if let Some(queue_id) = acked.remove(&(s.id, s.attempt)) {
            // The handler's publishes commit with its ack, or not at all.
            if !s.outbox.is_empty() {
                route_ops::deliver(tx, s.outbox, &mut counters)?;
            }
            counters.add(queue_id, Counter::Acked, 1);
            counters.moved(
                queue_id,
                Some(MessageState::Leased),
                Some(MessageState::Acked),
                1,
            );
            out.push(SettleResult::Applied);
            continue;
        }
        let lease = match lease_row(conn, s.id)? {
            Some(l) if l.state == MessageState::Leased && l.attempts == i64::from(s.attempt) => l,
            _ => {
                tracing::debug!(
                    id = s.id,
                    attempt = s.attempt,
                    "settle of a lost lease ignored"
                );
                out.push(SettleResult::LeaseLost);
                continue;
            }
        };
        if lease.cancel_requested {
            conn.prepare_cached(
                "UPDATE OR FAIL messages SET state = 5, finished_at = ?2, lease_expires_at = NULL, \
                 cancel_requested = 0, idem_key = NULL, \
                 plugin_version = coalesce(?3, plugin_version) WHERE id = ?1",
            )
            .ctx("prepare settle cancel")?
            .execute(params![s.id, now, s.plugin_version])
            .ctx("cancel settled message")?;
            counters.add(lease.queue_id, Counter::Cancelled, 1);
            counters.moved(
                lease.queue_id,
                Some(MessageState::Leased),
                Some(MessageState::Cancelled),
                1,
            );
            out.push(SettleResult::Cancelled);
            continue;
        }
        match &s.settlement {
            // The batch above acked every live lease without a cancel request, inside this
            // same transaction, so an ack cannot reach this arm with its lease still live.
            Settlement::Ack => {}
            Settlement::Retry {
                delay_ms,
                error,
                category,
            } => {
                let available_at = now.saturating_add(to_i64(*delay_ms));
                let state = if *delay_ms > 0 {
                    MessageState::Scheduled
                } else {
                    MessageState::Ready
                };
                conn.prepare_cached(
                    "UPDATE OR FAIL messages SET state = ?2, available_at = ?3, lease_expires_at = NULL, \
                     last_error = ?4, error_category = ?5, \
                     plugin_version = coalesce(?6, plugin_version) WHERE id = ?1",
                )
                .ctx("prepare retry")?
                .execute(params![
                    s.id,
                    state_code(state),
                    available_at,
                    truncate(error, MAX_ERROR_TEXT),
                    category.as_str(),
                    s.plugin_version
                ])
                .ctx("retry message")?;
                counters.add(lease.queue_id, Counter::Retried, 1);
                counters.moved(lease.queue_id, Some(MessageState::Leased), Some(state), 1);
                tx.wake(&lease.queue);
            }
            // The handler's own choice: back to the queue like a retry, but the error fields
            // are left alone, so they keep describing the last real failure (if any).
            Settlement::RetryRequested { delay_ms } => {
                let available_at = now.saturating_add(to_i64(*delay_ms));
                let state = if *delay_ms > 0 {
                    MessageState::Scheduled
                } else {
                    MessageState::Ready
                };
                conn.prepare_cached(
                    "UPDATE OR FAIL messages SET state = ?2, available_at = ?3, lease_expires_at = NULL, \
                     plugin_version = coalesce(?4, plugin_version) WHERE id = ?1",
                )
                .ctx("prepare requested retry")?
                .execute(params![s.id, state_code(state), available_at, s.plugin_version])
                .ctx("retry message")?;
                counters.add(lease.queue_id, Counter::Retried, 1);
                counters.moved(lease.queue_id, Some(MessageState::Leased), Some(state), 1);
                tx.wake(&lease.queue);
            }
            Settlement::Dead { error, category } => {
                dead_letter(
                    conn,
                    s.id,
                    now,
                    error,
                    *category,
                    s.plugin_version.as_deref(),
                )?;
                counters.add(lease.queue_id, Counter::Dead, 1);
                counters.moved(
                    lease.queue_id,
                    Some(MessageState::Leased),
                    Some(MessageState::Dead),
                    1,
                );
                tracing::info!(id = s.id, queue = %lease.queue, category = %category, "dead-lettered");
            }
            Settlement::Release => {
                conn.prepare_cached(
                    "UPDATE OR FAIL messages SET state = 1, attempts = max(attempts - 1, 0), \
                     lease_expires_at = NULL, plugin_version = coalesce(?2, plugin_version) \
                     WHERE id = ?1",
                )
                .ctx("prepare release")?
                .execute(params![s.id, s.plugin_version])
                .ctx("release message")?;
                counters.moved(
                    lease.queue_id,
                    Some(MessageState::Leased),
                    Some(MessageState::Ready),
                    1,
                );
                tx.wake(&lease.queue);
            }
        }
        out.push(SettleResult::Applied);
    }
    flush_counters(&mut counters, conn)?;
    Ok(out)
}

/// Acks, in one statement, every ack in `settles` whose lease is live at its attempt and whose
/// message has no cancel request; returns the acked (id, attempt) pairs with their queue ids.
fn ack_batch(
    conn: &Connection,
    settles: &[Settle],
    now: i64,
    delete: bool,
) -> StoreResult<HashMap<(MessageId, u32), i64>> {
    // The batch travels as one JSON array of [id, attempt, plugin_version] bound to a single
    // parameter: one statement, whatever the batch size, and nothing spliced into SQL.
    let acks: Vec<_> = settles
        .iter()
        .filter(|s| s.settlement == Settlement::Ack)
        .map(|s| (s.id, s.attempt, s.plugin_version.as_deref()))
        .collect();
    if acks.is_empty() {
        return Ok(HashMap::new());
    }
    let batch = serde_json::to_string(&acks)
        .map_err(|e| StoreError::Database(format!("encode ack batch: {e}")))?;
    let mut stmt = if delete {
        conn.prepare_cached(
            "DELETE FROM messages WHERE id IN ( \
               SELECT m.id FROM json_each(?1) AS j JOIN messages AS m \
               ON m.id = j.value ->> 0 AND m.attempts = j.value ->> 1 \
               WHERE m.state = 2 AND m.cancel_requested = 0) \
             RETURNING id, attempts, queue_id",
        )
        .ctx("prepare ack delete")?
    } else {
        conn.prepare_cached(
            "UPDATE OR FAIL messages SET state = 3, payload = NULL, finished_at = ?2, \
               lease_expires_at = NULL, plugin_version = coalesce(a.version, plugin_version) \
             FROM (SELECT value ->> 0 AS id, value ->> 1 AS attempt, value ->> 2 AS version \
                   FROM json_each(?1)) AS a \
             WHERE messages.id = a.id AND messages.attempts = a.attempt \
               AND messages.state = 2 AND messages.cancel_requested = 0 \
             RETURNING messages.id, messages.attempts, messages.queue_id",
        )
        .ctx("prepare ack")?
    };
    fn id_and_queue(r: &rusqlite::Row<'_>) -> rusqlite::Result<((MessageId, u32), i64)> {
        Ok(((r.get(0)?, r.get(1)?), r.get(2)?))
    }
    let rows = if delete {
        stmt.query_map(params![batch], id_and_queue)
    } else {
        stmt.query_map(params![batch, now], id_and_queue)
    }
    .ctx("ack messages")?;
    rows.collect::<rusqlite::Result<HashMap<_, _>>>()
        .ctx("ack messages")
}

pub(super) fn dead_letter(
    conn: &Connection,
    id: MessageId,
    now: i64,
    error: &str,
    category: ErrorCategory,
    plugin_version: Option<&str>,
) -> StoreResult<()> {
    conn.prepare_cached(
        "UPDATE OR FAIL messages SET state = 4, finished_at = ?2, lease_expires_at = NULL, \
         last_error = ?3, error_category = ?4, reviewed_at = NULL, \
         plugin_version = coalesce(?5, plugin_version) WHERE id = ?1",
    )
    .ctx("prepare dead-letter")?
    .execute(params![
        id,
        now,
        truncate(error, MAX_ERROR_TEXT),
        category.as_str(),
        plugin_version
    ])
    .ctx("dead-letter message")?;
    Ok(())
}

pub(super) fn extend_lease(
    tx: &mut Tx<'_>,
    id: MessageId,
    attempt: u32,
    lease_ms: u64,
) -> StoreResult<bool> {
    let until = now_ms().saturating_add(to_i64(lease_ms));
    let n = tx
        .conn
        .prepare_cached(
            "UPDATE OR FAIL messages SET lease_expires_at = ?3 WHERE id = ?1 AND state = 2 AND attempts = ?2",
        )
        .ctx("prepare lease extension")?
        .execute(params![id, attempt, until])
        .ctx("extend lease")?;
    Ok(n == 1)
}

// --- messages ----------------------------------------------------------------------------------

pub(super) fn cancel(tx: &mut Tx<'_>, id: MessageId) -> StoreResult<MessageState> {
    let conn = tx.conn;
    let row = lease_row(conn, id)?.ok_or(StoreError::MessageNotFound(id))?;
    match row.state {
        MessageState::Scheduled | MessageState::Ready => {
            conn.prepare_cached(
                "UPDATE OR FAIL messages SET state = 5, finished_at = ?2, idem_key = NULL WHERE id = ?1",
            )
            .ctx("prepare cancel")?
            .execute(params![id, now_ms()])
            .ctx("cancel message")?;
            let mut counters = Counters::default();
            counters.add(row.queue_id, Counter::Cancelled, 1);
            counters.moved(
                row.queue_id,
                Some(row.state),
                Some(MessageState::Cancelled),
                1,
            );
            flush_counters(&mut counters, conn)?;
            Ok(MessageState::Cancelled)
        }
        MessageState::Leased => {
            conn.prepare_cached("UPDATE OR FAIL messages SET cancel_requested = 1 WHERE id = ?1")
                .ctx("prepare cancel request")?
                .execute(params![id])
                .ctx("request cancel")?;
            Ok(MessageState::Leased)
        }
        state => Err(StoreError::InvalidState {
            id,
            state,
            action: "cancel",
        }),
    }
}

/// Makes a scheduled message (delayed, or a retry waiting out its backoff) ready now and wakes
/// its queue. Any other state is `InvalidState`: a ready message is ready already, and a leased
/// or finished one has no wait to cut short.
pub(super) fn requeue(tx: &mut Tx<'_>, id: MessageId) -> StoreResult<()> {
    let row = lease_row(tx.conn, id)?.ok_or(StoreError::MessageNotFound(id))?;
    if row.state != MessageState::Scheduled {
        return Err(StoreError::InvalidState {
            id,
            state: row.state,
            action: "requeue (only a scheduled message, delayed or backing off, can be made ready)",
        });
    }
    tx.conn
        .prepare_cached("UPDATE OR FAIL messages SET state = 1, available_at = ?2 WHERE id = ?1")
        .ctx("prepare requeue")?
        .execute(params![id, now_ms()])
        .ctx("requeue message")?;
    let mut counters = Counters::default();
    counters.moved(
        row.queue_id,
        Some(MessageState::Scheduled),
        Some(MessageState::Ready),
        1,
    );
    flush_counters(&mut counters, tx.conn)?;
    tx.wake(&row.queue);
    tracing::info!(id, queue = %row.queue, attempts = row.attempts, "message requeued");
    Ok(())
}

// --- dead-letter queue -------------------------------------------------------------------------

pub(super) fn replay_dead(tx: &mut Tx<'_>, id: MessageId) -> StoreResult<()> {
    let mut counters = Counters::default();
    let queue = replay_one(tx, id, &mut counters)?;
    flush_counters(&mut counters, tx.conn)?;
    tracing::info!(id, queue = %queue, "dead letter replayed");
    Ok(())
}

/// Replays one dead letter and wakes its queue; returns the queue's name.
fn replay_one(tx: &mut Tx<'_>, id: MessageId, counters: &mut Counters) -> StoreResult<String> {
    // The TTL is cleared: an operator replaying a dead letter wants it handled, and its original
    // deadline has usually long passed.
    let queue: Option<(i64, String)> = tx
        .conn
        .prepare_cached(
            "UPDATE OR FAIL messages SET state = 1, attempts = 0, reviewed_at = NULL, finished_at = NULL, \
             available_at = ?2, expires_at = NULL, lease_expires_at = NULL, lease_expiries = 0 \
             WHERE id = ?1 AND state = 4 \
             RETURNING queue_id, (SELECT name FROM queues WHERE queues.id = messages.queue_id)",
        )
        .ctx("prepare replay")?
        .query_row(params![id, now_ms()], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .ctx("replay dead letter")?;
    let (queue_id, queue) = queue.ok_or(StoreError::DeadLetterNotFound(id))?;
    counters.moved(
        queue_id,
        Some(MessageState::Dead),
        Some(MessageState::Ready),
        1,
    );
    tx.wake(&queue);
    Ok(queue)
}

/// The dead letters `filter` selects (queue, category, reviewed), oldest first, at most
/// `filter.limit`; the cursor is ignored (bulk operations always start from the oldest).
fn dead_matching(conn: &Connection, filter: &DeadFilter) -> StoreResult<Vec<MessageId>> {
    let queue_id = match &filter.queue {
        Some(name) => Some(require_queue(conn, name)?.id),
        None => None,
    };
    conn.prepare_cached(
        "SELECT id FROM messages WHERE state = 4 \
         AND (?1 IS NULL OR queue_id = ?1) \
         AND (?2 IS NULL OR error_category = ?2) \
         AND (?3 IS NULL OR (reviewed_at IS NOT NULL) = ?3) \
         ORDER BY id LIMIT ?4",
    )
    .ctx("prepare dlq selection")?
    .query_map(
        params![
            queue_id,
            filter.category.map(|c| c.as_str()),
            filter.reviewed,
            filter.limit
        ],
        |r| r.get(0),
    )
    .ctx("select dead letters")?
    .collect::<rusqlite::Result<Vec<_>>>()
    .ctx("select dead letters")
}

/// Replays every dead letter `filter` selects (up to its limit); returns their ids.
pub(super) fn replay_dead_matching(
    tx: &mut Tx<'_>,
    filter: &DeadFilter,
) -> StoreResult<Vec<MessageId>> {
    let ids = dead_matching(tx.conn, filter)?;
    let mut counters = Counters::default();
    for &id in &ids {
        replay_one(tx, id, &mut counters)?;
    }
    flush_counters(&mut counters, tx.conn)?;
    tracing::info!(count = ids.len(), queue = ?filter.queue, "dead letters replayed");
    Ok(ids)
}

/// Purges every dead letter `filter` selects (up to its limit); returns how many.
pub(super) fn purge_dead_matching(tx: &mut Tx<'_>, filter: &DeadFilter) -> StoreResult<u64> {
    let ids = dead_matching(tx.conn, filter)?;
    let mut counters = Counters::default();
    for &id in &ids {
        delete_dead(tx.conn, id, &mut counters)?;
    }
    flush_counters(&mut counters, tx.conn)?;
    tracing::info!(count = ids.len(), queue = ?filter.queue, "dead letters purged");
    Ok(ids.len() as u64)
}

pub(super) fn mark_reviewed(tx: &mut Tx<'_>, id: MessageId) -> StoreResult<()> {
    let n = tx
        .conn
        .prepare_cached(
            "UPDATE OR FAIL messages SET reviewed_at = coalesce(reviewed_at, ?2) WHERE id = ?1 AND state = 4",
        )
        .ctx("prepare mark reviewed")?
        .execute(params![id, now_ms()])
        .ctx("mark dead letter reviewed")?;
    if n == 0 {
        return Err(StoreError::DeadLetterNotFound(id));
    }
    Ok(())
}

pub(super) fn purge_dead(tx: &mut Tx<'_>, id: MessageId) -> StoreResult<()> {
    let mut counters = Counters::default();
    if !delete_dead(tx.conn, id, &mut counters)? {
        return Err(StoreError::DeadLetterNotFound(id));
    }
    flush_counters(&mut counters, tx.conn)?;
    tracing::info!(id, "dead letter purged");
    Ok(())
}

/// Deletes one dead letter; returns whether there was one.
pub(super) fn delete_dead(
    conn: &Connection,
    id: MessageId,
    counters: &mut Counters,
) -> StoreResult<bool> {
    let queue_id: Option<i64> = conn
        .prepare_cached("DELETE FROM messages WHERE id = ?1 AND state = 4 RETURNING queue_id")
        .ctx("prepare purge")?
        .query_row(params![id], |r| r.get(0))
        .optional()
        .ctx("purge dead letter")?;
    if let Some(queue_id) = queue_id {
        counters.moved(queue_id, Some(MessageState::Dead), None, 1);
    }
    Ok(queue_id.is_some())
}

// --- plugins -----------------------------------------------------------------------------------

/// Reads one plugin version (without its bytes); `active` is the head's version.
pub(super) fn plugin_version(
    conn: &Connection,
    name: &str,
    version: i64,
    active: bool,
) -> StoreResult<PluginVersion> {
    conn.prepare_cached(
        "SELECT version, sha256, world, size, created_at FROM plugins \
         WHERE name = ?1 AND version = ?2",
    )
    .ctx("prepare plugin lookup")?
    .query_row(params![name, version], |r| {
        Ok(PluginVersion {
            name: name.to_owned(),
            version: r.get(0)?,
            sha256: r.get(1)?,
            world: r.get(2)?,
            size: r.get::<_, i64>(3)?.max(0) as u64,
            created_at: r.get(4)?,
            active,
        })
    })
    .ctx("read plugin version")
}

fn active_version(conn: &Connection, name: &str) -> StoreResult<Option<i64>> {
    conn.prepare_cached("SELECT active_version FROM plugin_heads WHERE name = ?1")
        .ctx("prepare plugin head")?
        .query_row(params![name], |r| r.get(0))
        .optional()
        .ctx("read plugin head")
}

/// Queues whose handler is `plugin`, by name.
fn queues_using(conn: &Connection, plugin: &str) -> StoreResult<Vec<String>> {
    conn.prepare_cached(
        "SELECT name FROM queues WHERE json_extract(config, '$.handler') = ?1 ORDER BY name",
    )
    .ctx("prepare plugin users")?
    .query_map(params![plugin], |r| r.get(0))
    .ctx("find queues using a plugin")?
    .collect::<rusqlite::Result<Vec<_>>>()
    .ctx("find queues using a plugin")
}

/// Refuses to make a version of `world` active while something needs `name` in another world
/// (see `plugin_rules::check_users_world`).
fn check_users_world(conn: &Connection, name: &str, version: &str, world: &str) -> StoreResult<()> {
    let queues = queues_using(conn, name)?;
    let routes = route_ops::routes_using(conn, name)?;
    crate::plugin_rules::check_users_world(name, version, world, &queues, &routes)
}

/// Stores a new version of `name` (or activates the stored one with these bytes). When
/// `plugin_chunks::chunked(wasm.len())`, the caller has written the chunks already and the row
/// keeps an empty `wasm`; if they are not all there (deleted meanwhile with another plugin
/// that shared them), this fails with [`StoreError::UploadInterrupted`] and the caller writes them
/// again.
pub(super) fn put_plugin(
    tx: &mut Tx<'_>,
    name: &str,
    world: &str,
    sha256: &str,
    wasm: &[u8],
    actor: Option<&str>,
) -> StoreResult<Deployed> {
    crate::plugin_rules::validate_upload(name, world, sha256, wasm)?;
    let conn = tx.conn;
    let chunked = plugin_chunks::chunked(wasm.len());
    if chunked && !plugin_chunks::complete(conn, sha256, wasm.len())? {
        return Err(StoreError::UploadInterrupted(format!(
            "plugin {name:?}: the stored pieces of the upload are incomplete; upload it again"
        )));
    }
    let active = active_version(conn, name)?;
    let existing: Option<i64> = conn
        .prepare_cached("SELECT max(version) FROM plugins WHERE name = ?1 AND sha256 = ?2")
        .ctx("prepare plugin bytes lookup")?
        .query_row(params![name, sha256], |r| r.get(0))
        .ctx("look up plugin bytes")?;
    if let Some(version) = existing {
        // The same component as a stored version. If the stored copy no longer matches it (a
        // damaged record), the upload repairs it in place.
        let intact = plugin_chunks::stored_bytes(conn, name, version)? == wasm;
        if !intact {
            // Chunked, the upload has just rewritten the pieces: the row need only point at them.
            let row_bytes: &[u8] = if chunked { &[] } else { wasm };
            conn.prepare_cached(
                "UPDATE plugins SET wasm = ?3, size = ?4 WHERE name = ?1 AND version = ?2",
            )
            .ctx("prepare plugin repair")?
            .execute(params![name, version, row_bytes, wasm.len() as i64])
            .ctx("repair plugin bytes")?;
            tracing::warn!(
                plugin = name,
                version,
                "the stored component of this version was damaged; replaced it with the \
                 uploaded copy (same SHA-256)"
            );
        }
        if active == Some(version) {
            return Ok(Deployed {
                version: plugin_version(conn, name, version, true)?,
                new_version: false,
            });
        }
        // The same bytes as an earlier version: that version again, not a copy of it.
        let v = plugin_version(conn, name, version, true)?;
        check_users_world(conn, name, &format!("version {version}"), &v.world)?;
        set_active(conn, name, active, version, PluginAction::Deploy, actor)?;
        tracing::info!(
            plugin = name,
            from = active,
            to = version,
            sha256,
            "plugin bytes match an earlier version; that version is active again"
        );
        return Ok(Deployed {
            version: v,
            new_version: false,
        });
    }
    check_users_world(conn, name, "(new version)", world)?;
    let version: i64 = conn
        .prepare_cached("SELECT coalesce(max(version), 0) + 1 FROM plugins WHERE name = ?1")
        .ctx("prepare next plugin version")?
        .query_row(params![name], |r| r.get(0))
        .ctx("read next plugin version")?;
    let now = now_ms();
    conn.prepare_cached(
        "INSERT INTO plugins (name, version, sha256, world, size, created_at, wasm) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .ctx("prepare plugin insert")?
    .execute(params![
        name,
        version,
        sha256,
        world,
        wasm.len() as i64,
        now,
        if chunked { &[][..] } else { wasm }
    ])
    .ctx("insert plugin version")?;
    set_active(conn, name, active, version, PluginAction::Deploy, actor)?;
    tracing::info!(
        plugin = name,
        version,
        sha256,
        "plugin version stored and activated"
    );
    Ok(Deployed {
        version: plugin_version(conn, name, version, true)?,
        new_version: true,
    })
}

/// Makes `to` the active version of `name` and records the change in the history.
fn set_active(
    conn: &Connection,
    name: &str,
    from: Option<i64>,
    to: i64,
    action: PluginAction,
    actor: Option<&str>,
) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO plugin_heads (name, active_version) VALUES (?1, ?2) \
         ON CONFLICT (name) DO UPDATE SET active_version = excluded.active_version",
    )
    .ctx("prepare plugin activation")?
    .execute(params![name, to])
    .ctx("activate plugin version")?;
    conn.prepare_cached(
        "INSERT INTO plugin_history (name, at, actor, action, from_version, to_version) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .ctx("prepare plugin history")?
    .execute(params![name, now_ms(), actor, action.as_str(), from, to])
    .ctx("record plugin activation")?;
    Ok(())
}

pub(super) fn rollback_plugin(
    tx: &mut Tx<'_>,
    name: &str,
    actor: Option<&str>,
) -> StoreResult<PluginVersion> {
    let conn = tx.conn;
    let active =
        active_version(conn, name)?.ok_or_else(|| StoreError::PluginNotFound(name.to_owned()))?;
    let previous: Option<i64> = conn
        .prepare_cached("SELECT max(version) FROM plugins WHERE name = ?1 AND version < ?2")
        .ctx("prepare previous plugin version")?
        .query_row(params![name, active], |r| r.get(0))
        .ctx("read previous plugin version")?;
    let previous = previous.ok_or_else(|| StoreError::NoPreviousVersion(name.to_owned()))?;
    let v = plugin_version(conn, name, previous, true)?;
    check_users_world(conn, name, &format!("version {previous}"), &v.world)?;
    set_active(
        conn,
        name,
        Some(active),
        previous,
        PluginAction::Rollback,
        actor,
    )?;
    tracing::info!(
        plugin = name,
        from = active,
        to = previous,
        "plugin rolled back"
    );
    Ok(v)
}

pub(super) fn activate_plugin(
    tx: &mut Tx<'_>,
    name: &str,
    version: u32,
    actor: Option<&str>,
) -> StoreResult<PluginVersion> {
    let conn = tx.conn;
    let active =
        active_version(conn, name)?.ok_or_else(|| StoreError::PluginNotFound(name.to_owned()))?;
    let wanted = i64::from(version);
    let exists: bool = conn
        .prepare_cached("SELECT count(*) FROM plugins WHERE name = ?1 AND version = ?2")
        .ctx("prepare plugin version lookup")?
        .query_row(params![name, wanted], |r| r.get::<_, i64>(0))
        .ctx("look up plugin version")?
        > 0;
    if !exists {
        return Err(StoreError::PluginVersionNotFound {
            plugin: name.to_owned(),
            version,
        });
    }
    let v = plugin_version(conn, name, wanted, true)?;
    if active == wanted {
        return Ok(v);
    }
    check_users_world(conn, name, &format!("version {version}"), &v.world)?;
    set_active(
        conn,
        name,
        Some(active),
        wanted,
        PluginAction::Activate,
        actor,
    )?;
    tracing::info!(
        plugin = name,
        from = active,
        to = wanted,
        "plugin version activated"
    );
    Ok(v)
}

/// Deletes a plugin that nothing uses; see `Store::delete_plugin`.
pub(super) fn delete_plugin(tx: &mut Tx<'_>, name: &str) -> StoreResult<PluginDeleted> {
    let conn = tx.conn;
    if active_version(conn, name)?.is_none() {
        return Err(StoreError::PluginNotFound(name.to_owned()));
    }
    let queues = queues_using(conn, name)?;
    let routes = route_ops::routes_using(conn, name)?;
    if !queues.is_empty() || !routes.is_empty() {
        return Err(StoreError::PluginInUse {
            plugin: name.to_owned(),
            queues,
            routes,
        });
    }
    let delete = |sql: &str, what: &str| -> StoreResult<u64> {
        conn.prepare_cached(sql)
            .ctx(what)?
            .execute(params![name])
            .ctx(what)
            .map(|n| n as u64)
    };
    let versions = delete(
        "DELETE FROM plugins WHERE name = ?1",
        "delete plugin versions",
    )?;
    delete(
        "DELETE FROM plugin_heads WHERE name = ?1",
        "delete plugin head",
    )?;
    delete(
        "DELETE FROM plugin_history WHERE name = ?1",
        "delete plugin history",
    )?;
    let kv_entries = delete(
        "DELETE FROM plugin_kv WHERE plugin = ?1",
        "delete plugin key-value data",
    )?;
    super::plugin_config_ops::delete_settings(conn, name)?;
    plugin_chunks::delete_unreferenced(conn, None)?;
    tracing::info!(plugin = name, versions, kv_entries, "plugin deleted");
    Ok(PluginDeleted {
        name: name.to_owned(),
        versions,
        kv_entries,
    })
}

pub(super) fn kv_set(tx: &mut Tx<'_>, plugin: &str, key: &str, value: Vec<u8>) -> StoreResult<()> {
    validate_kv(plugin, key, Some(&value))?;
    tx.conn
        .prepare_cached(
            "INSERT INTO plugin_kv (plugin, key, value) VALUES (?1, ?2, ?3) \
             ON CONFLICT (plugin, key) DO UPDATE SET value = excluded.value",
        )
        .ctx("prepare kv set")?
        .execute(params![plugin, key, value])
        .ctx("set kv entry")?;
    Ok(())
}

/// Refuses a set that would take `plugin` past its quotas. The other keys are counted with
/// this one replaced, so overwriting a key with a value of the same size always fits.
pub(super) fn kv_check_quota(
    tx: &mut Tx<'_>,
    plugin: &str,
    key: &str,
    value_len: usize,
    max_keys: u64,
    max_bytes: u64,
) -> StoreResult<()> {
    let (others, other_bytes): (i64, i64) = tx
        .conn
        .prepare_cached(
            "SELECT COUNT(*), COALESCE(SUM(length(CAST(key AS BLOB)) + length(value)), 0) \
             FROM plugin_kv WHERE plugin = ?1 AND key != ?2",
        )
        .ctx("prepare kv quota")?
        .query_row(params![plugin, key], |r| Ok((r.get(0)?, r.get(1)?)))
        .ctx("read kv usage")?;
    let keys = others as u64 + 1;
    let bytes = other_bytes as u64 + (key.len() + value_len) as u64;
    if keys > max_keys {
        return Err(StoreError::KvQuota(format!(
            "plugin {plugin:?} may hold at most {max_keys} keys (kv_max_keys); delete some or \
             raise the grant"
        )));
    }
    if bytes > max_bytes {
        return Err(StoreError::KvQuota(format!(
            "plugin {plugin:?} may hold at most {max_bytes} bytes of keys and values \
             (kv_max_bytes), this set would make {bytes}; delete some or raise the grant"
        )));
    }
    Ok(())
}

pub(super) fn kv_delete(tx: &mut Tx<'_>, plugin: &str, key: &str) -> StoreResult<()> {
    validate_kv(plugin, key, None)?;
    tx.conn
        .prepare_cached("DELETE FROM plugin_kv WHERE plugin = ?1 AND key = ?2")
        .ctx("prepare kv delete")?
        .execute(params![plugin, key])
        .ctx("delete kv entry")?;
    Ok(())
}

// --- housekeeping ------------------------------------------------------------------------------

pub(super) fn maintain(tx: &mut Tx<'_>) -> StoreResult<Maintenance> {
    let conn = tx.conn;
    let now = now_ms();
    let mut report = Maintenance::default();
    let mut counters = Counters::default();

    let queues: HashMap<i64, (String, u32)> = {
        let mut stmt = conn
            .prepare_cached("SELECT id, name, config FROM queues")
            .ctx("prepare queue scan")?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                ))
            })
            .ctx("scan queues")?
            .collect::<rusqlite::Result<Vec<_>>>()
            .ctx("scan queues")?;
        let mut map = HashMap::with_capacity(rows.len());
        for (id, name, json) in rows {
            let config = super::rows::decode_config(&name, &json)?;
            map.insert(id, (name, config.max_attempts));
        }
        map
    };

    // Expired leases: their host died or stalled without settling.
    let expired: Vec<(MessageId, i64, i64, bool, i64)> = conn
        .prepare_cached(
            "SELECT id, queue_id, attempts, cancel_requested, lease_expiries FROM messages \
             WHERE state = 2 AND lease_expires_at <= ?1 ORDER BY lease_expires_at LIMIT ?2",
        )
        .ctx("prepare lease scan")?
        .query_map(params![now, MAINTAIN_LIMIT], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .ctx("scan expired leases")?
        .collect::<rusqlite::Result<_>>()
        .ctx("scan expired leases")?;
    for (id, queue_id, attempts, cancel_requested, expiries) in expired {
        let (queue, max_attempts) = match queues.get(&queue_id) {
            Some((name, max)) => (name.as_str(), i64::from(*max)),
            None => continue,
        };
        let expiries = expiries + 1;
        if cancel_requested {
            conn.prepare_cached(
                "UPDATE OR FAIL messages SET state = 5, finished_at = ?2, lease_expires_at = NULL, \
                 cancel_requested = 0, idem_key = NULL, lease_expiries = ?3 WHERE id = ?1",
            )
            .ctx("prepare lease cancel")?
            .execute(params![id, now, expiries])
            .ctx("cancel message with expired lease")?;
            counters.add(queue_id, Counter::Cancelled, 1);
            counters.moved(
                queue_id,
                Some(MessageState::Leased),
                Some(MessageState::Cancelled),
                1,
            );
        } else if attempts >= max_attempts {
            let error = format!("lease expired {expiries} times (handler host died or stalled)");
            dead_letter(conn, id, now, &error, ErrorCategory::LeaseExpired, None)?;
            conn.prepare_cached("UPDATE OR FAIL messages SET lease_expiries = ?2 WHERE id = ?1")
                .ctx("prepare lease expiry count")?
                .execute(params![id, expiries])
                .ctx("count lease expiry")?;
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
            conn.prepare_cached(
                "UPDATE OR FAIL messages SET state = 1, lease_expires_at = NULL, lease_expiries = ?2, \
                 last_error = ?3, error_category = ?4 WHERE id = ?1",
            )
            .ctx("prepare lease recovery")?
            .execute(params![
                id,
                expiries,
                "lease expired (handler host died or stalled)",
                ErrorCategory::LeaseExpired.as_str()
            ])
            .ctx("recover expired lease")?;
            report.leases_recovered += 1;
            counters.moved(
                queue_id,
                Some(MessageState::Leased),
                Some(MessageState::Ready),
                1,
            );
            tx.wake(queue);
            tracing::info!(id, queue, attempts, "expired lease recovered");
        }
    }

    for &queue_id in queues.keys() {
        report.expired += expire_due(conn, queue_id, now, &mut counters)?;
    }

    let acked_cutoff = now.saturating_sub(to_i64(tx.opts.acked_retention_ms));
    report.acked_purged = conn
        .prepare_cached(
            "DELETE FROM messages WHERE id IN (SELECT id FROM messages \
             WHERE state = 3 AND finished_at <= ?1 LIMIT ?2)",
        )
        .ctx("prepare acked retention")?
        .execute(params![acked_cutoff, MAINTAIN_LIMIT])
        .ctx("delete acked messages past retention")? as u64;

    let dead_cutoff = now.saturating_sub(to_i64(tx.opts.dead_retention_ms));
    let purged: Vec<i64> = conn
        .prepare_cached(
            "DELETE FROM messages WHERE id IN (SELECT id FROM messages \
             WHERE state = 4 AND reviewed_at <= ?1 LIMIT ?2) RETURNING queue_id",
        )
        .ctx("prepare dead retention")?
        .query_map(params![dead_cutoff, MAINTAIN_LIMIT], |r| r.get(0))
        .ctx("delete reviewed dead letters past retention")?
        .collect::<rusqlite::Result<_>>()
        .ctx("delete reviewed dead letters past retention")?;
    for &queue_id in &purged {
        counters.moved(queue_id, Some(MessageState::Dead), None, 1);
    }
    report.dead_purged = purged.len() as u64;

    // Pieces of uploads that never finished (the server stopped in the middle).
    let orphans =
        plugin_chunks::delete_unreferenced(conn, Some(now - plugin_chunks::ORPHAN_AFTER_MS))?;
    if orphans > 0 {
        tracing::info!(
            chunks = orphans,
            "removed pieces of plugin uploads that never finished"
        );
    }

    flush_counters(&mut counters, conn)?;
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

// --- health ------------------------------------------------------------------------------------

/// Room the database must have under `[store] max_size_bytes` for a probe to call writes
/// healthy again: small writes may still fit in partly filled pages long after big ones fail.
const PROBE_HEADROOM_BYTES: i64 = 256 * 1024;

/// Rewrites one small row: a write appended to the log, so it fails while the disk is full
/// and succeeds once there is room again. Under a size cap it also asks for some headroom.
pub(super) fn write_probe(tx: &mut Tx<'_>) -> StoreResult<()> {
    tx.conn
        .prepare_cached(
            "INSERT INTO spool_meta (key, value) VALUES ('write_probe', ?1) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .ctx("prepare write probe")?
        .execute(params![now_ms().to_string()])
        .ctx("write probe")?;
    if tx.opts.max_size_bytes.is_some() {
        let pragma = |name: &str| -> StoreResult<i64> {
            tx.conn
                .pragma_query_value(None, name, |r| r.get(0))
                .ctx("read page counts")
        };
        let free_pages =
            pragma("max_page_count")? - pragma("page_count")? + pragma("freelist_count")?;
        if free_pages * pragma("page_size")? < PROBE_HEADROOM_BYTES {
            return Err(StoreError::StorageFull(format!(
                "less than {PROBE_HEADROOM_BYTES} bytes left under [store] max_size_bytes"
            )));
        }
    }
    Ok(())
}

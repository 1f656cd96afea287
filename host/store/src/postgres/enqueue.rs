//! Enqueue on PostgreSQL. Mirrors `sqlite::write_ops::enqueue_into`: all messages of a call in
//! one transaction, in order; an idempotency key returns (or supersedes) the live message that
//! holds it. Unlike SQLite's single writer, two hosts may insert the same key at once: the
//! unique index decides (`ON CONFLICT DO NOTHING`), and the loser reads the winner's message.

use crate::message_timing::{Timing, timing};
use deadpool_postgres::GenericClient;
use spool_model::{Enqueued, MessageState, NewMessage, now_ms};

use super::PgStore;
use crate::counters::{Counter, Counters};
use crate::{StoreError, StoreResult};

/// Longest idempotency key, in bytes (as in the SQLite store).
const MAX_IDEMPOTENCY_KEY: usize = 256;

/// The integer a state is stored as (shared with the SQLite store's encoding).
pub(super) fn state_code(state: MessageState) -> i16 {
    match state {
        MessageState::Scheduled => 0,
        MessageState::Ready => 1,
        MessageState::Leased => 2,
        MessageState::Acked => 3,
        MessageState::Dead => 4,
        MessageState::Cancelled => 5,
        MessageState::Expired => 6,
    }
}

pub(super) fn state_of(code: i16) -> StoreResult<MessageState> {
    Ok(match code {
        0 => MessageState::Scheduled,
        1 => MessageState::Ready,
        2 => MessageState::Leased,
        3 => MessageState::Acked,
        4 => MessageState::Dead,
        5 => MessageState::Cancelled,
        6 => MessageState::Expired,
        other => {
            return Err(StoreError::Database(format!(
                "unknown message state {other} stored"
            )));
        }
    })
}

pub(super) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Headers as a JSON array of `[name, value]` pairs, or NULL when there are none.
fn encode_headers(headers: &[(String, String)]) -> StoreResult<Option<serde_json::Value>> {
    if headers.is_empty() {
        return Ok(None);
    }
    serde_json::to_value(headers)
        .map(Some)
        .map_err(|e| StoreError::Invalid(format!("headers cannot be encoded: {e}")))
}

const INSERT: &str = "INSERT INTO messages (queue_id, state, priority, enqueued_at, available_at, \
     expires_at, idem_key, idem_scope, topic, correlation_id, headers, payload, producer, \
     id, parent_id, chain_depth, route_id) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, \
     COALESCE($14, nextval('messages_id_seq')), $15, $16, $17) \
     ON CONFLICT (queue_id, idem_scope, idem_key) WHERE idem_key IS NOT NULL DO NOTHING \
     RETURNING id";

/// `n` new ids, ascending.
pub(super) const DRAW_IDS: &str = "SELECT id FROM (SELECT nextval('messages_id_seq') AS id \
     FROM generate_series(1, $1)) s ORDER BY id";

/// Messages without idempotency keys, a column per array.
const INSERT_MANY: &str = "INSERT INTO messages (queue_id, enqueued_at, route_id, id, state, \
     priority, available_at, expires_at, idem_scope, topic, correlation_id, headers, payload, \
     producer, parent_id, chain_depth) \
     SELECT $1, $2, $3, u.* FROM unnest($4::BIGINT[], $5::SMALLINT[], $6::INT[], $7::BIGINT[], \
     $8::BIGINT[], $9::TEXT[], $10::TEXT[], $11::TEXT[], $12::JSONB[], $13::BYTEA[], \
     $14::TEXT[], $15::BIGINT[], $16::INT[]) AS u";

/// The column arrays of [`INSERT_MANY`].
struct Columns {
    id: Vec<i64>,
    state: Vec<i16>,
    priority: Vec<i32>,
    available_at: Vec<i64>,
    expires_at: Vec<Option<i64>>,
    scope: Vec<String>,
    topic: Vec<Option<String>>,
    correlation_id: Vec<Option<String>>,
    headers: Vec<Option<serde_json::Value>>,
    payload: Vec<Vec<u8>>,
    producer: Vec<Option<String>>,
    parent_id: Vec<Option<i64>>,
    depth: Vec<i32>,
}

impl Columns {
    fn with_capacity(n: usize) -> Columns {
        Columns {
            id: Vec::with_capacity(n),
            state: Vec::with_capacity(n),
            priority: Vec::with_capacity(n),
            available_at: Vec::with_capacity(n),
            expires_at: Vec::with_capacity(n),
            scope: Vec::with_capacity(n),
            topic: Vec::with_capacity(n),
            correlation_id: Vec::with_capacity(n),
            headers: Vec::with_capacity(n),
            payload: Vec::with_capacity(n),
            producer: Vec::with_capacity(n),
            parent_id: Vec::with_capacity(n),
            depth: Vec::with_capacity(n),
        }
    }
}

/// What [`PgStore::insert_many`] wrote: the ids in the order given, and how many per state.
struct Inserted {
    ids: Vec<i64>,
    by_state: Vec<(MessageState, i64)>,
}

impl PgStore {
    /// See `Store::enqueue`.
    pub async fn enqueue(
        &self,
        queue: &str,
        messages: Vec<NewMessage>,
    ) -> StoreResult<Vec<Enqueued>> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(|e| self.db("begin", e))?;
        let lookup = self
            .stmt(&tx, "SELECT id FROM queues WHERE name = $1")
            .await?;
        let queue_id: i64 = tx
            .query_opt(&lookup, &[&queue])
            .await
            .map_err(|e| self.db("look up queue", e))?
            .ok_or_else(|| StoreError::QueueNotFound(queue.to_owned()))?
            .get(0);
        let mut counters = Counters::default();
        let out = self
            .enqueue_into(&tx, queue, queue_id, messages, None, &mut counters)
            .await?;
        self.flush_counters(&tx, &mut counters).await?;
        tx.commit().await.map_err(|e| self.db("commit", e))?;
        Ok(out)
    }

    /// Writes `messages` into one queue in the caller's transaction; the caller flushes
    /// `counters`. Shared by enqueue, publish and a handler's outbox.
    pub(super) async fn enqueue_into(
        &self,
        tx: &impl GenericClient,
        queue: &str,
        queue_id: i64,
        messages: Vec<NewMessage>,
        route: Option<i64>,
        counters: &mut Counters,
    ) -> StoreResult<Vec<Enqueued>> {
        let now = now_ms();
        if messages.iter().any(|m| m.idempotency_key.is_some()) {
            self.expire_due(tx, queue_id, now, counters).await?;
        }
        let ttl = self
            .stmt(
                tx,
                "SELECT config->'default_ttl_ms' FROM queues WHERE id = $1",
            )
            .await?;
        let default_ttl: Option<i64> = tx
            .query_one(&ttl, &[&queue_id])
            .await
            .map_err(|e| self.db("read the queue's default TTL", e))?
            .get::<_, Option<serde_json::Value>>(0)
            .and_then(|v| v.as_u64())
            .map(to_i64);
        if messages.len() > 1 && messages.iter().all(|m| m.idempotency_key.is_none()) {
            let rows = self
                .insert_many(tx, queue_id, messages, route, now, default_ttl)
                .await?;
            for (state, n) in rows.by_state {
                counters.moved(queue_id, None, Some(state), n);
            }
            counters.add(queue_id, Counter::Enqueued, rows.ids.len() as i64);
            self.notify_ready(tx, queue).await?;
            tracing::debug!(queue, count = rows.ids.len(), "enqueued");
            return Ok(rows
                .ids
                .into_iter()
                .map(|id| Enqueued {
                    id,
                    existing: false,
                })
                .collect());
        }
        let insert = self.stmt(tx, INSERT).await?;
        let mut out = Vec::with_capacity(messages.len());
        let mut inserted = 0i64;
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
            let headers = encode_headers(&m.headers)?;
            let scope = m.idempotency_scope.clone().unwrap_or_default();
            let depth = i32::try_from(m.depth).unwrap_or(i32::MAX);
            let row = tx
                .query_opt(
                    &insert,
                    &[
                        &queue_id,
                        &state_code(state),
                        &m.priority,
                        &now,
                        &available_at,
                        &expires_at,
                        &m.idempotency_key,
                        &scope,
                        &m.topic,
                        &m.correlation_id,
                        &headers,
                        &m.payload,
                        &m.producer,
                        &m.id,
                        &m.parent_id,
                        &depth,
                        &route,
                    ],
                )
                .await
                .map_err(|e| self.db("insert message", e))?;
            if let Some(row) = row {
                counters.moved(queue_id, None, Some(state), 1);
                inserted += 1;
                out.push(Enqueued {
                    id: row.get(0),
                    existing: false,
                });
                continue;
            }
            // The key is held by a live message (of this host's transaction or a committed one).
            let key = m.idempotency_key.as_deref().unwrap_or_default();
            let holder = tx
                .query_one(
                    "SELECT id, state FROM messages WHERE queue_id = $1 AND idem_scope = $2 \
                     AND idem_key = $3 FOR UPDATE",
                    &[&queue_id, &scope, &key],
                )
                .await
                .map_err(|e| self.db("look up idempotency key", e))?;
            let (id, existing): (i64, MessageState) = (holder.get(0), state_of(holder.get(1))?);
            if m.supersede && matches!(existing, MessageState::Scheduled | MessageState::Ready) {
                counters.moved(queue_id, Some(existing), Some(state), 1);
                tx.execute(
                    "UPDATE messages SET payload = $2, headers = $3, priority = $4, \
                     available_at = $5, expires_at = $6, state = $7 WHERE id = $1",
                    &[
                        &id,
                        &m.payload,
                        &headers,
                        &m.priority,
                        &available_at,
                        &expires_at,
                        &state_code(state),
                    ],
                )
                .await
                .map_err(|e| self.db("supersede message", e))?;
            }
            out.push(Enqueued { id, existing: true });
        }
        counters.add(queue_id, Counter::Enqueued, inserted);
        if !out.is_empty() {
            self.notify_ready(tx, queue).await?;
        }
        tracing::debug!(queue, count = out.len(), inserted, "enqueued");
        Ok(out)
    }

    /// Inserts messages without idempotency keys in one statement: with a round trip per row,
    /// a 100-message call took 100 round trips. Ids are drawn first, so the call's messages
    /// get ascending ids in the order given, as one by one.
    async fn insert_many(
        &self,
        tx: &impl GenericClient,
        queue_id: i64,
        messages: Vec<NewMessage>,
        route: Option<i64>,
        now: i64,
        default_ttl: Option<i64>,
    ) -> StoreResult<Inserted> {
        let wanted = messages.iter().filter(|m| m.id.is_none()).count();
        let mut drawn = if wanted == 0 {
            Vec::new()
        } else {
            tx.query(
                &self.stmt(tx, DRAW_IDS).await?,
                &[&i32::try_from(wanted).unwrap_or(i32::MAX)],
            )
            .await
            .map_err(|e| self.db("draw message ids", e))?
            .iter()
            .map(|r| r.get::<_, i64>(0))
            .collect()
        }
        .into_iter();
        let n = messages.len();
        let mut cols = Columns::with_capacity(n);
        let mut by_state: Vec<(MessageState, i64)> = Vec::new();
        for m in messages {
            let t = timing(&m, now, default_ttl);
            match by_state.iter_mut().find(|(s, _)| *s == t.state) {
                Some((_, count)) => *count += 1,
                None => by_state.push((t.state, 1)),
            }
            let id = match m.id {
                Some(id) => id,
                None => drawn.next().ok_or_else(|| {
                    StoreError::Database("the id sequence gave fewer ids than asked".into())
                })?,
            };
            cols.id.push(id);
            cols.state.push(state_code(t.state));
            cols.priority.push(m.priority);
            cols.available_at.push(t.available_at);
            cols.expires_at.push(t.expires_at);
            cols.scope.push(m.idempotency_scope.unwrap_or_default());
            cols.topic.push(m.topic);
            cols.correlation_id.push(m.correlation_id);
            cols.headers.push(encode_headers(&m.headers)?);
            cols.payload.push(m.payload);
            cols.producer.push(m.producer);
            cols.parent_id.push(m.parent_id);
            cols.depth.push(i32::try_from(m.depth).unwrap_or(i32::MAX));
        }
        let insert = self.stmt(tx, INSERT_MANY).await?;
        tx.execute(
            &insert,
            &[
                &queue_id,
                &now,
                &route,
                &cols.id,
                &cols.state,
                &cols.priority,
                &cols.available_at,
                &cols.expires_at,
                &cols.scope,
                &cols.topic,
                &cols.correlation_id,
                &cols.headers,
                &cols.payload,
                &cols.producer,
                &cols.parent_id,
                &cols.depth,
            ],
        )
        .await
        .map_err(|e| self.db("insert messages", e))?;
        Ok(Inserted {
            ids: cols.id,
            by_state,
        })
    }

    /// Expires never-started messages of one queue whose TTL has passed, freeing their keys.
    pub(super) async fn expire_due(
        &self,
        tx: &impl GenericClient,
        queue_id: i64,
        now: i64,
        counters: &mut Counters,
    ) -> StoreResult<u64> {
        // The old state of each expired row (scheduled or ready) is what the depth counters
        // need, so the rows are picked first and the update reports what they were.
        // Sent as a string, so planned for these values each time: as a prepared statement its
        // generic plan may join `due` by hashing every message once many carry a TTL.
        let rows = tx
            .query(
                "WITH due AS (SELECT id, state FROM messages WHERE queue_id = $1 AND state < 2 \
                 AND attempts = 0 AND expires_at IS NOT NULL AND expires_at <= $2 FOR UPDATE), \
                 expired AS (UPDATE messages m SET state = 6, finished_at = $2, idem_key = NULL \
                 FROM due WHERE m.id = due.id RETURNING due.state AS was) \
                 SELECT was, count(*) FROM expired GROUP BY was",
                &[&queue_id, &now],
            )
            .await
            .map_err(|e| self.db("expire messages", e))?;
        let mut total = 0;
        for row in rows {
            let (was, n): (i16, i64) = (row.get(0), row.get(1));
            counters.moved(
                queue_id,
                Some(state_of(was)?),
                Some(MessageState::Expired),
                n,
            );
            total += n;
        }
        counters.add(queue_id, Counter::Expired, total);
        Ok(u64::try_from(total).unwrap_or(0))
    }
}

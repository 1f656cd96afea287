//! One message: read, cancel, requeue. Mirrors the SQLite store's `get_message`, `cancel` and
//! `requeue`; the message row is locked for the change, so a settle or claim on another host
//! waits for it (or, for a claim, skips it).

use spool_model::{Message, MessageId, MessageState, now_ms};

use super::PgStore;
use super::enqueue::state_of;
use crate::counters::{Counter, Counters};
use crate::{StoreError, StoreResult};

/// The columns [`message_from_row`] reads, in order; `m` is `messages`, `q` is `queues`.
macro_rules! message_columns {
    () => {
        "m.id, q.name, m.state, m.priority, m.attempts, m.headers, m.topic, m.correlation_id, \
         m.idem_key, m.enqueued_at, m.available_at, m.expires_at, m.lease_expires_at, \
         m.finished_at, m.last_error, m.error_category, m.plugin_version, m.reviewed_at, \
         m.payload, m.producer, m.parent_id, m.chain_depth, m.route_id"
    };
}
pub(super) use message_columns;

pub(super) fn message_from_row(row: &tokio_postgres::Row) -> StoreResult<Message> {
    let headers: Option<serde_json::Value> = row.get(5);
    let headers = match headers {
        None => Vec::new(),
        Some(v) => serde_json::from_value(v)
            .map_err(|e| StoreError::Database(format!("stored headers are unreadable: {e}")))?,
    };
    let category: Option<String> = row.get(15);
    let error_category = category
        .map(|c| {
            c.parse()
                .map_err(|e| StoreError::Database(format!("stored error category: {e}")))
        })
        .transpose()?;
    Ok(Message {
        id: row.get(0),
        queue: row.get(1),
        state: state_of(row.get(2))?,
        priority: row.get(3),
        attempts: u32::try_from(row.get::<_, i32>(4)).unwrap_or(0),
        headers,
        topic: row.get(6),
        correlation_id: row.get(7),
        idempotency_key: row.get(8),
        enqueued_at: row.get(9),
        available_at: row.get(10),
        expires_at: row.get(11),
        lease_expires_at: row.get(12),
        finished_at: row.get(13),
        last_error: row.get(14),
        error_category,
        plugin_version: row.get(16),
        reviewed_at: row.get(17),
        payload: row.get(18),
        producer: row.get(19),
        parent_id: row.get(20),
        depth: u32::try_from(row.get::<_, i32>(21)).unwrap_or(0),
        route_id: row.get(22),
    })
}

impl PgStore {
    /// See `Store::get_message`.
    pub async fn get_message(&self, id: MessageId) -> StoreResult<Message> {
        let conn = self.conn().await?;
        let row = conn
            .query_opt(
                concat!(
                    "SELECT ",
                    message_columns!(),
                    " FROM messages m JOIN queues q ON q.id = m.queue_id WHERE m.id = $1"
                ),
                &[&id],
            )
            .await
            .map_err(|e| self.db("read message", e))?
            .ok_or(StoreError::MessageNotFound(id))?;
        message_from_row(&row)
    }

    /// See `Store::cancel`.
    pub async fn cancel(&self, id: MessageId) -> StoreResult<MessageState> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(|e| self.db("begin", e))?;
        let (state, queue_id, _) = self.locked(&tx, id).await?;
        let result = match state {
            MessageState::Scheduled | MessageState::Ready => {
                tx.execute(
                    "UPDATE messages SET state = 5, finished_at = $2, idem_key = NULL \
                     WHERE id = $1",
                    &[&id, &now_ms()],
                )
                .await
                .map_err(|e| self.db("cancel message", e))?;
                let mut counters = Counters::default();
                counters.add(queue_id, Counter::Cancelled, 1);
                counters.moved(queue_id, Some(state), Some(MessageState::Cancelled), 1);
                self.flush_counters(&tx, &mut counters).await?;
                MessageState::Cancelled
            }
            MessageState::Leased => {
                tx.execute(
                    "UPDATE messages SET cancel_requested = true WHERE id = $1",
                    &[&id],
                )
                .await
                .map_err(|e| self.db("request cancel", e))?;
                MessageState::Leased
            }
            state => {
                return Err(StoreError::InvalidState {
                    id,
                    state,
                    action: "cancel",
                });
            }
        };
        tx.commit().await.map_err(|e| self.db("commit", e))?;
        Ok(result)
    }

    /// See `Store::requeue`.
    pub async fn requeue(&self, id: MessageId) -> StoreResult<()> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(|e| self.db("begin", e))?;
        let (state, queue_id, queue) = self.locked(&tx, id).await?;
        if state != MessageState::Scheduled {
            return Err(StoreError::InvalidState {
                id,
                state,
                action: "requeue (only a scheduled message, delayed or backing off, can be made \
                         ready)",
            });
        }
        tx.execute(
            "UPDATE messages SET state = 1, available_at = $2 WHERE id = $1",
            &[&id, &now_ms()],
        )
        .await
        .map_err(|e| self.db("requeue message", e))?;
        let mut counters = Counters::default();
        counters.moved(
            queue_id,
            Some(MessageState::Scheduled),
            Some(MessageState::Ready),
            1,
        );
        self.flush_counters(&tx, &mut counters).await?;
        self.notify_ready(&tx, &queue).await?;
        tx.commit().await.map_err(|e| self.db("commit", e))?;
        tracing::info!(id, queue = %queue, "message requeued");
        Ok(())
    }

    /// The message's state, queue id and queue name, its row locked for this transaction.
    async fn locked(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        id: MessageId,
    ) -> StoreResult<(MessageState, i64, String)> {
        let row = tx
            .query_opt(
                "SELECT m.state, m.queue_id, q.name FROM messages m \
                 JOIN queues q ON q.id = m.queue_id WHERE m.id = $1 FOR UPDATE OF m",
                &[&id],
            )
            .await
            .map_err(|e| self.db("look up message", e))?
            .ok_or(StoreError::MessageNotFound(id))?;
        Ok((state_of(row.get(0))?, row.get(1), row.get(2)))
    }
}

/// The most entries a trace returns.
const MAX_TRACE: i64 = 10_000;

impl PgStore {
    /// See `Store::trace`: the message's correlation id and every stored message sharing it
    /// (with the message that started the chain), by id, read in one snapshot.
    pub async fn trace(
        &self,
        id: MessageId,
    ) -> StoreResult<(String, Vec<spool_model::TraceEntry>)> {
        let mut conn = self.conn().await?;
        let tx = conn
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(|e| self.db("begin", e))?;
        let correlation: Option<String> = tx
            .query_opt("SELECT correlation_id FROM messages WHERE id = $1", &[&id])
            .await
            .map_err(|e| self.db("read trace root", e))?
            .ok_or(StoreError::MessageNotFound(id))?
            .get(0);
        let correlation = correlation.unwrap_or_else(|| id.to_string());
        // A correlation id that names a message (the usual case: the root's id) brings it.
        let root: Option<MessageId> = correlation
            .parse::<MessageId>()
            .ok()
            .filter(|r| r.to_string() == correlation);
        let entries = tx
            .query(
                "SELECT m.id, m.parent_id, q.name, m.topic, m.state, m.plugin_version, \
                 m.enqueued_at FROM messages m JOIN queues q ON q.id = m.queue_id \
                 WHERE m.correlation_id = $1 OR m.id = $2 ORDER BY m.id LIMIT $3",
                &[&correlation, &root, &MAX_TRACE],
            )
            .await
            .map_err(|e| self.db("read trace", e))?
            .iter()
            .map(|r| {
                Ok(spool_model::TraceEntry {
                    id: r.get(0),
                    parent_id: r.get(1),
                    queue: r.get(2),
                    topic: r.get(3),
                    state: state_of(r.get(4))?,
                    plugin_version: r.get(5),
                    enqueued_at: r.get(6),
                })
            })
            .collect::<StoreResult<Vec<_>>>()?;
        tx.commit().await.map_err(|e| self.db("commit", e))?;
        Ok((correlation, entries))
    }
}

//! Listing messages, and the dead-letter queue: list, replay, mark reviewed, purge — one, or
//! the oldest `limit` a filter selects, atomically. Mirrors the SQLite store.

use deadpool_postgres::GenericClient;
use spool_model::{Message, MessageId, MessageState, Page, now_ms};

use super::PgStore;
use super::enqueue::state_code;
use super::messages::message_from_row;
use crate::counters::Counters;
use crate::paging::{decode_cursor, page, page_limit};
use crate::{DeadFilter, MessageFilter, StoreError, StoreResult};

impl PgStore {
    /// See `Store::list_messages`: oldest first, optionally in one state.
    pub async fn list_messages(
        &self,
        queue: &str,
        filter: &MessageFilter,
    ) -> StoreResult<Page<Message>> {
        let after = decode_cursor(filter.cursor.as_deref())?;
        let limit = page_limit(filter.limit);
        let conn = self.conn().await?;
        let queue_id = self.queue_id(&conn, queue).await?;
        let state = filter.state.map(state_code);
        let rows = conn
            .query(
                concat!(
                    "SELECT ",
                    super::messages::message_columns!(),
                    " FROM messages m JOIN queues q ON q.id = m.queue_id \
                     WHERE m.queue_id = $1 AND ($2::SMALLINT IS NULL OR m.state = $2) \
                     AND m.id > $3 AND ($5::TEXT IS NULL OR m.idem_key = $5) \
                     ORDER BY m.id LIMIT $4"
                ),
                &[
                    &queue_id,
                    &state,
                    &after,
                    &(limit + 1),
                    &filter.idempotency_key,
                ],
            )
            .await
            .map_err(|e| self.db("list messages", e))?;
        let items = rows
            .iter()
            .map(message_from_row)
            .collect::<StoreResult<_>>()?;
        Ok(page(items, limit))
    }

    /// See `Store::list_dead`.
    pub async fn list_dead(&self, filter: &DeadFilter) -> StoreResult<Page<Message>> {
        let after = decode_cursor(filter.cursor.as_deref())?;
        let limit = page_limit(filter.limit);
        let conn = self.conn().await?;
        let queue_id = match &filter.queue {
            Some(name) => Some(self.queue_id(&conn, name).await?),
            None => None,
        };
        let category = filter.category.map(|c| c.as_str());
        let rows = conn
            .query(
                concat!(
                    "SELECT ",
                    super::messages::message_columns!(),
                    " FROM messages m JOIN queues q ON q.id = m.queue_id \
                     WHERE m.state = 4 AND m.id > $1 \
                     AND ($2::BIGINT IS NULL OR m.queue_id = $2) \
                     AND ($3::TEXT IS NULL OR m.error_category = $3) \
                     AND ($4::BOOLEAN IS NULL OR (m.reviewed_at IS NOT NULL) = $4) \
                     ORDER BY m.id LIMIT $5"
                ),
                &[&after, &queue_id, &category, &filter.reviewed, &(limit + 1)],
            )
            .await
            .map_err(|e| self.db("list dead letters", e))?;
        let items = rows
            .iter()
            .map(message_from_row)
            .collect::<StoreResult<_>>()?;
        Ok(page(items, limit))
    }

    /// See `Store::replay_dead`: back to ready, attempts 0, TTL cleared.
    pub async fn replay_dead(&self, id: MessageId) -> StoreResult<()> {
        self.dead_batch(&[id], DeadAction::Replay).await?;
        Ok(())
    }

    /// See `Store::purge_dead`.
    pub async fn purge_dead(&self, id: MessageId) -> StoreResult<()> {
        self.dead_batch(&[id], DeadAction::Purge).await?;
        Ok(())
    }

    /// See `Store::mark_reviewed` (the first review's time stays).
    pub async fn mark_reviewed(&self, id: MessageId) -> StoreResult<()> {
        let conn = self.conn().await?;
        let n = conn
            .execute(
                "UPDATE messages SET reviewed_at = coalesce(reviewed_at, $2) \
                 WHERE id = $1 AND state = 4",
                &[&id, &now_ms()],
            )
            .await
            .map_err(|e| self.db("mark dead letter reviewed", e))?;
        if n == 0 {
            return Err(StoreError::DeadLetterNotFound(id));
        }
        Ok(())
    }

    /// See `Store::replay_dead_matching`.
    pub async fn replay_dead_matching(&self, filter: &DeadFilter) -> StoreResult<Vec<MessageId>> {
        let ids = self.dead_matching(filter).await?;
        self.dead_batch(&ids, DeadAction::Replay).await
    }

    /// See `Store::purge_dead_matching`.
    pub async fn purge_dead_matching(&self, filter: &DeadFilter) -> StoreResult<u64> {
        let ids = self.dead_matching(filter).await?;
        Ok(self.dead_batch(&ids, DeadAction::Purge).await?.len() as u64)
    }

    async fn dead_matching(&self, filter: &DeadFilter) -> StoreResult<Vec<MessageId>> {
        let conn = self.conn().await?;
        let queue_id = match &filter.queue {
            Some(name) => Some(self.queue_id(&conn, name).await?),
            None => None,
        };
        let category = filter.category.map(|c| c.as_str());
        Ok(conn
            .query(
                "SELECT id FROM messages WHERE state = 4 \
                 AND ($1::BIGINT IS NULL OR queue_id = $1) \
                 AND ($2::TEXT IS NULL OR error_category = $2) \
                 AND ($3::BOOLEAN IS NULL OR (reviewed_at IS NOT NULL) = $3) \
                 ORDER BY id LIMIT $4",
                &[
                    &queue_id,
                    &category,
                    &filter.reviewed,
                    &i64::from(filter.limit),
                ],
            )
            .await
            .map_err(|e| self.db("select dead letters", e))?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    /// Replays or purges `ids` in one transaction; every one must still be a dead letter
    /// (`DeadLetterNotFound` names the first that is not, and nothing changes).
    async fn dead_batch(
        &self,
        ids: &[MessageId],
        action: DeadAction,
    ) -> StoreResult<Vec<MessageId>> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(|e| self.db("begin", e))?;
        let mut counters = Counters::default();
        let sql = match action {
            // The TTL is cleared: whoever replays a dead letter wants it handled.
            DeadAction::Replay => {
                "UPDATE messages m SET state = 1, attempts = 0, reviewed_at = NULL, \
                 finished_at = NULL, available_at = $2, expires_at = NULL, \
                 lease_expires_at = NULL, lease_expiries = 0 FROM queues q \
                 WHERE m.id = $1 AND m.state = 4 AND q.id = m.queue_id \
                 RETURNING m.queue_id, q.name"
            }
            DeadAction::Purge => {
                "DELETE FROM messages m USING queues q WHERE m.id = $1 AND m.state = 4 \
                 AND q.id = m.queue_id AND $2::BIGINT IS NOT NULL RETURNING m.queue_id, q.name"
            }
        };
        let now = now_ms();
        let mut queues = Vec::new();
        for &id in ids {
            let row = tx
                .query_opt(sql, &[&id, &now])
                .await
                .map_err(|e| self.db("change a dead letter", e))?
                .ok_or(StoreError::DeadLetterNotFound(id))?;
            let (queue_id, queue): (i64, String) = (row.get(0), row.get(1));
            let to = match action {
                DeadAction::Replay => Some(MessageState::Ready),
                DeadAction::Purge => None,
            };
            counters.moved(queue_id, Some(MessageState::Dead), to, 1);
            if !queues.contains(&queue) {
                queues.push(queue);
            }
        }
        self.flush_counters(&tx, &mut counters).await?;
        if matches!(action, DeadAction::Replay) {
            for queue in &queues {
                self.notify_ready(&tx, queue).await?;
            }
        }
        tx.commit().await.map_err(|e| self.db("commit", e))?;
        tracing::info!(count = ids.len(), action = ?action, "dead letters changed");
        Ok(ids.to_vec())
    }

    /// The id of queue `name` (`QueueNotFound` if there is none).
    pub(super) async fn queue_id(&self, c: &impl GenericClient, name: &str) -> StoreResult<i64> {
        Ok(
            c.query_opt("SELECT id FROM queues WHERE name = $1", &[&name])
                .await
                .map_err(|e| self.db("look up queue", e))?
                .ok_or_else(|| StoreError::QueueNotFound(name.to_owned()))?
                .get(0),
        )
    }
}

#[derive(Debug, Clone, Copy)]
enum DeadAction {
    Replay,
    Purge,
}

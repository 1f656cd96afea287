//! Deliveries (publish, a handler's outbox) and settling leases on PostgreSQL. Mirrors
//! `sqlite::route_ops::deliver` and `sqlite::write_ops::settle`: acks go in one fenced
//! statement; a lost lease (expired and re-claimed elsewhere, or another attempt) is ignored.

use std::collections::HashMap;

use deadpool_postgres::GenericClient;
use spool_model::{
    Delivery, Enqueued, ErrorCategory, MessageId, MessageState, Settle, SettleResult, Settlement,
    now_ms,
};

use super::PgStore;
use super::enqueue::{state_code, to_i64};
use crate::counters::{Counter, Counters};
use crate::{StoreError, StoreResult};

/// Longest error text kept with a message, in bytes.
const MAX_ERROR_TEXT: usize = 8 * 1024;

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl PgStore {
    /// See `Store::publish`.
    pub async fn publish(&self, deliveries: Vec<Delivery>) -> StoreResult<Vec<Enqueued>> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(|e| self.db("begin", e))?;
        let mut counters = Counters::default();
        let out = self.deliver(&tx, deliveries, &mut counters).await?;
        self.flush_counters(&tx, &mut counters).await?;
        tx.commit().await.map_err(|e| self.db("commit", e))?;
        Ok(out)
    }

    /// Writes deliveries in the caller's transaction, in order; a delivery with a filter error
    /// becomes a dead letter of its queue; routes count what they delivered.
    pub(super) async fn deliver(
        &self,
        tx: &impl GenericClient,
        deliveries: Vec<Delivery>,
        counters: &mut Counters,
    ) -> StoreResult<Vec<Enqueued>> {
        let now = now_ms();
        let mut ids: HashMap<String, i64> = HashMap::new();
        let mut routed: HashMap<i64, i64> = HashMap::new();
        let mut out = Vec::with_capacity(deliveries.len());
        for d in deliveries {
            let queue_id = match ids.get(&d.queue) {
                Some(id) => *id,
                None => {
                    let id: i64 = tx
                        .query_opt("SELECT id FROM queues WHERE name = $1", &[&d.queue])
                        .await
                        .map_err(|e| self.db("look up queue", e))?
                        .ok_or_else(|| StoreError::QueueNotFound(d.queue.clone()))?
                        .get(0);
                    ids.insert(d.queue.clone(), id);
                    id
                }
            };
            let e = self
                .enqueue_into(tx, &d.queue, queue_id, vec![d.message], d.route, counters)
                .await?
                .remove(0);
            if !e.existing {
                if let Some(error) = &d.filter_error {
                    self.dead_letter(tx, e.id, now, error, ErrorCategory::Filter, None)
                        .await?;
                    counters.add(queue_id, Counter::Dead, 1);
                    counters.moved(
                        queue_id,
                        Some(MessageState::Ready),
                        Some(MessageState::Dead),
                        1,
                    );
                }
                if let Some(route) = d.route {
                    *routed.entry(route).or_default() += 1;
                }
            }
            out.push(e);
        }
        let mut routed: Vec<_> = routed.into_iter().collect();
        routed.sort();
        for (route, n) in routed {
            tx.execute(
                "UPDATE routes SET delivered_total = delivered_total + $2 WHERE id = $1",
                &[&route, &n],
            )
            .await
            .map_err(|e| self.db("count route deliveries", e))?;
        }
        Ok(out)
    }

    pub(super) async fn dead_letter(
        &self,
        tx: &impl GenericClient,
        id: MessageId,
        now: i64,
        error: &str,
        category: ErrorCategory,
        plugin_version: Option<&str>,
    ) -> StoreResult<()> {
        tx.execute(
            "UPDATE messages SET state = 4, finished_at = $2, lease_expires_at = NULL, \
             last_error = $3, error_category = $4, reviewed_at = NULL, \
             plugin_version = coalesce($5, plugin_version) WHERE id = $1",
            &[
                &id,
                &now,
                &truncate(error, MAX_ERROR_TEXT),
                &category.as_str(),
                &plugin_version,
            ],
        )
        .await
        .map_err(|e| self.db("dead-letter message", e))?;
        Ok(())
    }

    /// See `Store::settle`. `delete_acked`: acked messages are deleted rather than kept
    /// (`acked_retention_ms = 0`).
    pub async fn settle(
        &self,
        settles: Vec<Settle>,
        delete_acked: bool,
    ) -> StoreResult<Vec<SettleResult>> {
        let now = now_ms();
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(|e| self.db("begin", e))?;
        let mut counters = Counters::default();
        let mut acked = self.ack_batch(&tx, &settles, now, delete_acked).await?;
        let mut out = Vec::with_capacity(settles.len());
        for s in settles {
            if let Some(queue_id) = acked.remove(&(s.id, s.attempt)) {
                if !s.outbox.is_empty() {
                    self.deliver(&tx, s.outbox, &mut counters).await?;
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
            let attempt = i32::try_from(s.attempt).unwrap_or(i32::MAX);
            // Locked, so a concurrent claim or recovery on another host waits for this settle.
            let lease = tx
                .query_opt(
                    "SELECT m.cancel_requested, m.queue_id, q.name FROM messages m \
                     JOIN queues q ON q.id = m.queue_id \
                     WHERE m.id = $1 AND m.state = 2 AND m.attempts = $2 FOR UPDATE OF m",
                    &[&s.id, &attempt],
                )
                .await
                .map_err(|e| self.db("look up lease", e))?;
            let Some(lease) = lease else {
                tracing::debug!(
                    id = s.id,
                    attempt = s.attempt,
                    "settle of a lost lease ignored"
                );
                out.push(SettleResult::LeaseLost);
                continue;
            };
            let (cancel, queue_id, queue): (bool, i64, String) =
                (lease.get(0), lease.get(1), lease.get(2));
            if cancel {
                tx.execute(
                    "UPDATE messages SET state = 5, finished_at = $2, lease_expires_at = NULL, \
                     cancel_requested = false, idem_key = NULL, \
                     plugin_version = coalesce($3, plugin_version) WHERE id = $1",
                    &[&s.id, &now, &s.plugin_version],
                )
                .await
                .map_err(|e| self.db("cancel settled message", e))?;
                counters.add(queue_id, Counter::Cancelled, 1);
                counters.moved(
                    queue_id,
                    Some(MessageState::Leased),
                    Some(MessageState::Cancelled),
                    1,
                );
                out.push(SettleResult::Cancelled);
                continue;
            }
            match &s.settlement {
                // Acked by the batch above whenever the lease was live without a cancel.
                Settlement::Ack => {}
                Settlement::Retry {
                    delay_ms,
                    error,
                    category,
                } => {
                    let (state, at) = retry_target(now, *delay_ms);
                    tx.execute(
                        "UPDATE messages SET state = $2, available_at = $3, \
                         lease_expires_at = NULL, last_error = $4, error_category = $5, \
                         plugin_version = coalesce($6, plugin_version) WHERE id = $1",
                        &[
                            &s.id,
                            &state_code(state),
                            &at,
                            &truncate(error, MAX_ERROR_TEXT),
                            &category.as_str(),
                            &s.plugin_version,
                        ],
                    )
                    .await
                    .map_err(|e| self.db("retry message", e))?;
                    counters.add(queue_id, Counter::Retried, 1);
                    counters.moved(queue_id, Some(MessageState::Leased), Some(state), 1);
                    self.notify_ready(&tx, &queue).await?;
                }
                // The handler's own choice: the error fields keep the last real failure.
                Settlement::RetryRequested { delay_ms } => {
                    let (state, at) = retry_target(now, *delay_ms);
                    tx.execute(
                        "UPDATE messages SET state = $2, available_at = $3, \
                         lease_expires_at = NULL, plugin_version = coalesce($4, plugin_version) \
                         WHERE id = $1",
                        &[&s.id, &state_code(state), &at, &s.plugin_version],
                    )
                    .await
                    .map_err(|e| self.db("retry message", e))?;
                    counters.add(queue_id, Counter::Retried, 1);
                    counters.moved(queue_id, Some(MessageState::Leased), Some(state), 1);
                    self.notify_ready(&tx, &queue).await?;
                }
                Settlement::Dead { error, category } => {
                    self.dead_letter(
                        &tx,
                        s.id,
                        now,
                        error,
                        *category,
                        s.plugin_version.as_deref(),
                    )
                    .await?;
                    counters.add(queue_id, Counter::Dead, 1);
                    counters.moved(
                        queue_id,
                        Some(MessageState::Leased),
                        Some(MessageState::Dead),
                        1,
                    );
                    tracing::info!(id = s.id, queue = %queue, category = %category, "dead-lettered");
                }
                Settlement::Release => {
                    tx.execute(
                        "UPDATE messages SET state = 1, attempts = greatest(attempts - 1, 0), \
                         lease_expires_at = NULL, plugin_version = coalesce($2, plugin_version) \
                         WHERE id = $1",
                        &[&s.id, &s.plugin_version],
                    )
                    .await
                    .map_err(|e| self.db("release message", e))?;
                    counters.moved(
                        queue_id,
                        Some(MessageState::Leased),
                        Some(MessageState::Ready),
                        1,
                    );
                    self.notify_ready(&tx, &queue).await?;
                }
            }
            out.push(SettleResult::Applied);
        }
        self.flush_counters(&tx, &mut counters).await?;
        tx.commit().await.map_err(|e| self.db("commit", e))?;
        Ok(out)
    }

    /// Acks, in one statement, every ack whose lease is live at its attempt and whose message
    /// has no cancel request; returns the acked (id, attempt) pairs with their queue ids.
    async fn ack_batch(
        &self,
        tx: &impl GenericClient,
        settles: &[Settle],
        now: i64,
        delete: bool,
    ) -> StoreResult<HashMap<(MessageId, u32), i64>> {
        let acks: Vec<&Settle> = settles
            .iter()
            .filter(|s| s.settlement == Settlement::Ack)
            .collect();
        if acks.is_empty() {
            return Ok(HashMap::new());
        }
        let ids: Vec<i64> = acks.iter().map(|s| s.id).collect();
        let attempts: Vec<i32> = acks
            .iter()
            .map(|s| i32::try_from(s.attempt).unwrap_or(i32::MAX))
            .collect();
        let versions: Vec<Option<&str>> =
            acks.iter().map(|s| s.plugin_version.as_deref()).collect();
        // `state + 0`, not `state = 2`: the latter lets the planner reach the rows through the
        // lease index, which a prepared (generic) plan then scans whole for every id in the
        // batch, since its statistics think few messages are leased. Measured: 19 ms → 4.6 ms
        // for 250 acks with 250 leased, and it grows with every message in flight.
        let rows = if delete {
            tx.query(
                "DELETE FROM messages m USING unnest($1::BIGINT[], $2::INT[]) AS a(id, attempt) \
                 WHERE m.id = a.id AND m.attempts = a.attempt AND m.state + 0 = 2 \
                 AND NOT m.cancel_requested RETURNING m.id, m.attempts, m.queue_id",
                &[&ids, &attempts],
            )
            .await
        } else {
            tx.query(
                "UPDATE messages m SET state = 3, payload = NULL, finished_at = $4, \
                 lease_expires_at = NULL, plugin_version = coalesce(a.version, m.plugin_version) \
                 FROM unnest($1::BIGINT[], $2::INT[], $3::TEXT[]) AS a(id, attempt, version) \
                 WHERE m.id = a.id AND m.attempts = a.attempt AND m.state + 0 = 2 \
                 AND NOT m.cancel_requested RETURNING m.id, m.attempts, m.queue_id",
                &[&ids, &attempts, &versions, &now],
            )
            .await
        }
        .map_err(|e| self.db("ack messages", e))?;
        Ok(rows
            .iter()
            .map(|r| {
                let attempt: i32 = r.get(1);
                ((r.get(0), u32::try_from(attempt).unwrap_or(0)), r.get(2))
            })
            .collect())
    }
}

/// Where a retry goes: scheduled after a delay, else ready at once.
fn retry_target(now: i64, delay_ms: u64) -> (MessageState, i64) {
    let state = if delay_ms > 0 {
        MessageState::Scheduled
    } else {
        MessageState::Ready
    };
    (state, now.saturating_add(to_i64(delay_ms)))
}

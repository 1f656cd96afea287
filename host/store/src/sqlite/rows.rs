//! Conversions between rows and model types, and small helpers shared by reads and writes.

use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension, Row, params};

use crate::{StoreError, StoreResult};
use spool_model::{ErrorCategory, Message, MessageState, Queue, QueueConfig};

/// Attaches what the store was doing to a SQLite error.
pub(super) trait Ctx<T> {
    fn ctx(self, what: &str) -> StoreResult<T>;
}

impl<T> Ctx<T> for rusqlite::Result<T> {
    fn ctx(self, what: &str) -> StoreResult<T> {
        self.map_err(|e| db_error(what, e))
    }
}

pub(super) fn db_error(what: &str, e: rusqlite::Error) -> StoreError {
    tracing::error!(op = what, error = %e, "sqlite error");
    classify(format!("{what}: {e}"), &e)
}

/// Sorts a SQLite failure into the store's kinds: a full disk or database size cap
/// (`SQLITE_FULL`; SQLite reports a write that failed with `ENOSPC` this way too), an I/O error
/// of the file system, or anything else.
pub(super) fn classify(message: String, e: &rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DiskFull) => StoreError::StorageFull(message),
        Some(rusqlite::ErrorCode::SystemIoFailure) => StoreError::StorageIo(message),
        _ => StoreError::Database(message),
    }
}

/// The integer a state is stored as. The SQL literals elsewhere rely on these exact values.
pub(super) fn state_code(state: MessageState) -> i64 {
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

pub(super) fn state_from_code(code: i64) -> Option<MessageState> {
    MessageState::ALL
        .into_iter()
        .find(|s| state_code(*s) == code)
}

/// Reads a state column, failing the row (not panicking) on an unknown code.
pub(super) fn state_column(row: &Row<'_>, idx: usize) -> rusqlite::Result<MessageState> {
    let code: i64 = row.get(idx)?;
    state_from_code(code).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            idx,
            Type::Integer,
            format!("unknown message state code {code}").into(),
        )
    })
}

/// Saturating conversion for durations and limits that arrive as unsigned integers.
pub(super) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Headers are stored as a JSON array of `[name, value]` pairs, or NULL when there are none.
pub(super) fn encode_headers(headers: &[(String, String)]) -> StoreResult<Option<String>> {
    if headers.is_empty() {
        return Ok(None);
    }
    serde_json::to_string(headers)
        .map(Some)
        .map_err(|e| StoreError::Invalid(format!("headers cannot be encoded: {e}")))
}

pub(super) fn decode_headers(
    idx: usize,
    text: Option<String>,
) -> rusqlite::Result<Vec<(String, String)>> {
    match text {
        None => Ok(Vec::new()),
        Some(t) => serde_json::from_str(&t)
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, Box::new(e))),
    }
}

fn category_column(row: &Row<'_>, idx: usize) -> rusqlite::Result<Option<ErrorCategory>> {
    let text: Option<String> = row.get(idx)?;
    text.map(|t| {
        t.parse::<ErrorCategory>()
            .map_err(|e| rusqlite::Error::FromSqlConversionFailure(idx, Type::Text, e.into()))
    })
    .transpose()
}

/// The columns [`message_from_row`] reads, in order; `m` is `messages`, `q` is `queues`.
macro_rules! message_columns {
    () => {
        "m.id, q.name, m.state, m.priority, m.attempts, m.headers, m.topic, m.correlation_id, \
         m.idem_key, m.enqueued_at, m.available_at, m.expires_at, m.lease_expires_at, \
         m.finished_at, m.last_error, m.error_category, m.plugin_version, m.reviewed_at, m.payload, \
         m.producer, m.parent_id, m.chain_depth, m.route_id"
    };
}
pub(super) use message_columns;

pub(super) fn message_from_row(row: &Row<'_>) -> rusqlite::Result<Message> {
    let attempts: i64 = row.get(4)?;
    Ok(Message {
        id: row.get(0)?,
        queue: row.get(1)?,
        state: state_column(row, 2)?,
        priority: row.get(3)?,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        headers: decode_headers(5, row.get(5)?)?,
        topic: row.get(6)?,
        correlation_id: row.get(7)?,
        idempotency_key: row.get(8)?,
        enqueued_at: row.get(9)?,
        available_at: row.get(10)?,
        expires_at: row.get(11)?,
        lease_expires_at: row.get(12)?,
        finished_at: row.get(13)?,
        last_error: row.get(14)?,
        error_category: category_column(row, 15)?,
        plugin_version: row.get(16)?,
        reviewed_at: row.get(17)?,
        payload: row.get(18)?,
        producer: row.get(19)?,
        parent_id: row.get(20)?,
        depth: u32::try_from(row.get::<_, i64>(21)?).unwrap_or(u32::MAX),
        route_id: row.get(22)?,
    })
}

/// A queue row as the writer needs it: the integer id plus the decoded config.
#[derive(Debug, Clone)]
pub(super) struct QueueRow {
    pub id: i64,
    pub name: String,
    pub config: QueueConfig,
    pub created_at: i64,
}

impl QueueRow {
    pub fn into_queue(self) -> Queue {
        Queue {
            name: self.name,
            config: self.config,
            created_at: self.created_at,
        }
    }
}

pub(super) fn decode_config(queue: &str, json: &str) -> StoreResult<QueueConfig> {
    serde_json::from_str(json).map_err(|e| {
        StoreError::Database(format!(
            "stored config of queue {queue:?} is unreadable: {e}"
        ))
    })
}

pub(super) fn encode_config(config: &QueueConfig) -> StoreResult<String> {
    serde_json::to_string(config)
        .map_err(|e| StoreError::Database(format!("cannot encode queue config: {e}")))
}

pub(super) fn queue_by_name(conn: &Connection, name: &str) -> StoreResult<Option<QueueRow>> {
    let row = conn
        .prepare_cached("SELECT id, config, created_at FROM queues WHERE name = ?1")
        .ctx("prepare queue lookup")?
        .query_row(params![name], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
            ))
        })
        .optional()
        .ctx("look up queue")?;
    row.map(|(id, json, created_at)| {
        Ok(QueueRow {
            id,
            name: name.to_owned(),
            config: decode_config(name, &json)?,
            created_at,
        })
    })
    .transpose()
}

pub(super) fn require_queue(conn: &Connection, name: &str) -> StoreResult<QueueRow> {
    queue_by_name(conn, name)?.ok_or_else(|| StoreError::QueueNotFound(name.to_owned()))
}

pub(super) use crate::counters::{Counter, Counters};
pub(super) use crate::paging::{decode_cursor, page_limit};

/// Writes the deltas of `counters` into the queue rows, in the transaction that moved the
/// messages.
pub(super) fn flush_counters(counters: &mut Counters, conn: &Connection) -> StoreResult<()> {
    if counters.is_empty() {
        return Ok(());
    }
    let mut stmt = conn
        .prepare_cached(
            "UPDATE queues SET enqueued_total = enqueued_total + ?2, \
             acked_total = acked_total + ?3, retried_total = retried_total + ?4, \
             dead_total = dead_total + ?5, cancelled_total = cancelled_total + ?6, \
             expired_total = expired_total + ?7, scheduled_now = scheduled_now + ?8, \
             ready_now = ready_now + ?9, leased_now = leased_now + ?10, \
             dead_now = dead_now + ?11 WHERE id = ?1",
        )
        .ctx("prepare counter update")?;
    for (queue_id, d) in counters.drain() {
        stmt.execute(params![
            queue_id, d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7], d[8], d[9]
        ])
        .ctx("update queue counters")?;
    }
    Ok(())
}

/// Cuts `text` to at most `max` bytes on a character boundary, so one enormous error string
/// cannot bloat every row that stores it.
pub(super) fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

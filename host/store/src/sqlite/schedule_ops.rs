//! Schedules and their fires.
//!
//! # Exactly once, also with several hosts on one database
//!
//! A fire is written by [`fire_schedule`] in one transaction that
//! 1. compares the schedule's `generation` and `next_fire_at` with what the caller read when it
//!    planned the fire (compare-and-set), and writes nothing when either changed (`Stale`);
//! 2. inserts one `schedule_fires` row per fire instant, whose key `(schedule_id, fire_at)` is
//!    unique: an instant that is already there was fired before and is not written again;
//! 3. writes the fire's messages through the same path as a publish (`route_ops::deliver`);
//! 4. advances `next_fire_at`, `runs`, `last_fire_at` and `generation`.
//!
//! Every fire and every edit bumps `generation`, so of two schedulers that read the same due
//! schedule, the second to commit finds a generation it did not read and backs off; an edit
//! racing a fire either commits first (the fire is stale, and the scheduler plans again from
//! the new definition) or after (the edit recomputes the next fire from its own `now`). A crash
//! before the commit loses nothing: the schedule is still due. A crash after it fires nothing
//! twice: the advance committed with the messages. Nothing here depends on SQLite's single
//! writer: on PostgreSQL the same statements (a conditional `UPDATE ... WHERE generation = $n`
//! and a unique `(schedule_id, fire_at)` key) give the same guarantees under READ COMMITTED,
//! because the conditional update takes the row lock and re-checks its condition, and the unique
//! key refuses the second insert of an instant even between two transactions.
//!
//! Only the last [`FIRE_HISTORY`] fires of a schedule are kept (pruned in the transaction that
//! writes new ones); the compare-and-set on `next_fire_at`, not the history, is what keeps an
//! old instant from firing again.

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::route_ops::deliver;
use super::rows::{
    Counters, Ctx, decode_headers, encode_headers, flush_counters, require_queue, to_i64,
};
use super::writer::Tx;
pub(super) use crate::schedule_rules::FIRE_HISTORY;
use crate::schedule_rules::{
    apply_patch, check_fields, first_fire, next_fire, queue_to_check, target_columns, target_of,
    timing_columns, timing_of,
};
use crate::{StoreError, StoreResult};
use spool_model::{
    Delivery, Fire, FireOutcome, MessageId, Missed, NewSchedule, Schedule, ScheduleId,
    SchedulePatch, Target,
};

const SCHEDULE_COLUMNS: &str = "id, name, cron, every_ms, at_ms, timezone, target_kind, target, \
     headers, priority, start_at, end_at, max_runs, missed, paused, created_at, next_fire_at, \
     runs, last_fire_at, generation, payload";

fn conversion(idx: usize, what: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, what.into())
}

fn schedule_from_row(row: &Row<'_>) -> rusqlite::Result<Schedule> {
    let timing = timing_of(row.get(2)?, row.get(3)?, row.get(4)?).map_err(|e| conversion(2, e))?;
    let target = target_of(&row.get::<_, String>(6)?, row.get(7)?).map_err(|e| conversion(6, e))?;
    let missed: String = row.get(13)?;
    let unsigned = |v: Option<i64>| v.map(|v| u64::try_from(v).unwrap_or(0));
    Ok(Schedule {
        id: row.get(0)?,
        name: row.get(1)?,
        timing,
        timezone: row.get(5)?,
        target,
        headers: decode_headers(8, row.get(8)?)?,
        priority: row.get(9)?,
        start_at: row.get(10)?,
        end_at: row.get(11)?,
        max_runs: unsigned(row.get(12)?),
        missed: missed.parse::<Missed>().map_err(|e| conversion(13, e))?,
        paused: row.get(14)?,
        created_at: row.get(15)?,
        next_fire_at: row.get(16)?,
        runs: unsigned(row.get(17)?).unwrap_or(0),
        last_fire_at: row.get(18)?,
        generation: unsigned(row.get(19)?).unwrap_or(0),
        payload: row.get(20)?,
    })
}

fn schedule_by_id(conn: &Connection, id: ScheduleId) -> StoreResult<Option<Schedule>> {
    conn.prepare_cached(&format!(
        "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE id = ?1"
    ))
    .ctx("prepare schedule lookup")?
    .query_row(params![id], schedule_from_row)
    .optional()
    .ctx("look up schedule")
}

pub(super) fn get_schedule(conn: &Connection, id: ScheduleId) -> StoreResult<Schedule> {
    schedule_by_id(conn, id)?.ok_or(StoreError::ScheduleNotFound(id))
}

pub(super) fn list_schedules(conn: &Connection) -> StoreResult<Vec<Schedule>> {
    conn.prepare_cached(&format!(
        "SELECT {SCHEDULE_COLUMNS} FROM schedules ORDER BY id"
    ))
    .ctx("prepare schedule list")?
    .query_map([], schedule_from_row)
    .ctx("list schedules")?
    .collect::<rusqlite::Result<Vec<_>>>()
    .ctx("list schedules")
}

/// The earliest next fire of an unpaused schedule (served by the partial index `schedules_due`).
pub(super) fn next_schedule_due(conn: &Connection) -> StoreResult<Option<i64>> {
    conn.prepare_cached(
        "SELECT min(next_fire_at) FROM schedules WHERE paused = 0 AND next_fire_at IS NOT NULL",
    )
    .ctx("prepare next schedule due")?
    .query_row([], |r| r.get(0))
    .ctx("read next schedule due")
}

/// Unpaused schedules due at `now`, most overdue first.
pub(super) fn due_schedules(conn: &Connection, now: i64, limit: u32) -> StoreResult<Vec<Schedule>> {
    conn.prepare_cached(&format!(
        "SELECT {SCHEDULE_COLUMNS} FROM schedules \
         WHERE paused = 0 AND next_fire_at IS NOT NULL AND next_fire_at <= ?1 \
         ORDER BY next_fire_at, id LIMIT ?2"
    ))
    .ctx("prepare due schedules")?
    .query_map(params![now, limit], schedule_from_row)
    .ctx("read due schedules")?
    .collect::<rusqlite::Result<Vec<_>>>()
    .ctx("read due schedules")
}

fn fire_from_row(row: &Row<'_>) -> rusqlite::Result<Fire> {
    let ids: String = row.get(3)?;
    let message_ids: Vec<MessageId> =
        serde_json::from_str(&ids).map_err(|e| conversion(3, e.to_string()))?;
    let (fire_at, fired_at): (i64, i64) = (row.get(1)?, row.get(2)?);
    Ok(Fire {
        schedule_id: row.get(0)?,
        fire_at,
        fired_at,
        message_ids,
        lateness_ms: fired_at - fire_at,
        manual: row.get(4)?,
    })
}

/// The schedule's last `limit` fires, newest first.
pub(super) fn schedule_fires(
    conn: &Connection,
    id: ScheduleId,
    limit: u32,
) -> StoreResult<Vec<Fire>> {
    get_schedule(conn, id)?;
    conn.prepare_cached(
        "SELECT schedule_id, fire_at, fired_at, message_ids, manual FROM schedule_fires \
         WHERE schedule_id = ?1 ORDER BY fire_at DESC LIMIT ?2",
    )
    .ctx("prepare schedule fires")?
    .query_map(params![id, limit], fire_from_row)
    .ctx("read schedule fires")?
    .collect::<rusqlite::Result<Vec<_>>>()
    .ctx("read schedule fires")
}

/// A queue target must exist (`QueueNotFound`); a topic must be named.
fn check_target(conn: &Connection, target: &Target) -> StoreResult<()> {
    match queue_to_check(target)? {
        Some(q) => require_queue(conn, q).map(|_| ()),
        None => Ok(()),
    }
}

pub(super) fn create_schedule(
    tx: &mut Tx<'_>,
    new: NewSchedule,
    now: i64,
) -> StoreResult<Schedule> {
    let mut s = Schedule::new(0, now, new);
    check_fields(&s)?;
    check_target(tx.conn, &s.target)?;
    s.next_fire_at = Some(first_fire(&s, now)?);
    let (cron, every_ms, at_ms) = timing_columns(&s.timing);
    let (target_kind, target) = target_columns(&s.target);
    tx.conn
        .prepare_cached(
            "INSERT INTO schedules (name, cron, every_ms, at_ms, timezone, target_kind, target, \
             headers, priority, start_at, end_at, max_runs, missed, paused, created_at, \
             next_fire_at, runs, last_fire_at, generation, payload) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, 0, \
             NULL, 1, ?17)",
        )
        .ctx("prepare schedule insert")?
        .execute(params![
            s.name,
            cron,
            every_ms,
            at_ms,
            s.timezone,
            target_kind,
            target,
            encode_headers(&s.headers)?,
            s.priority,
            s.start_at,
            s.end_at,
            s.max_runs.map(to_i64),
            s.missed.as_str(),
            s.paused,
            s.created_at,
            s.next_fire_at,
            s.payload,
        ])
        .ctx("insert schedule")?;
    s.id = tx.conn.last_insert_rowid();
    tracing::info!(schedule = s.id, timing = ?s.timing, timezone = ?s.timezone,
        target = ?s.target, next_fire_at = ?s.next_fire_at, "schedule created");
    Ok(s)
}

/// Applies `patch`, recomputes the next fire from `now` (a schedule edited while due fires by
/// its new definition only) and bumps the generation, so a fire planned from the old definition
/// is stale.
pub(super) fn update_schedule(
    tx: &mut Tx<'_>,
    id: ScheduleId,
    patch: SchedulePatch,
    now: i64,
) -> StoreResult<Schedule> {
    let mut s = get_schedule(tx.conn, id)?;
    let target_changed = apply_patch(&mut s, patch);
    check_fields(&s)?;
    // A queue target is checked when it is set: a queue deleted since then does not block other
    // edits (its fires fail until the target is changed or the queue is back).
    if target_changed {
        check_target(tx.conn, &s.target)?;
    }
    s.next_fire_at = next_fire(&s, now)?;
    s.generation += 1;
    let (cron, every_ms, at_ms) = timing_columns(&s.timing);
    let (target_kind, target) = target_columns(&s.target);
    tx.conn
        .prepare_cached(
            "UPDATE schedules SET name = ?2, cron = ?3, every_ms = ?4, at_ms = ?5, \
             timezone = ?6, target_kind = ?7, target = ?8, headers = ?9, priority = ?10, \
             start_at = ?11, end_at = ?12, max_runs = ?13, missed = ?14, paused = ?15, \
             next_fire_at = ?16, generation = ?17, payload = ?18 WHERE id = ?1",
        )
        .ctx("prepare schedule update")?
        .execute(params![
            id,
            s.name,
            cron,
            every_ms,
            at_ms,
            s.timezone,
            target_kind,
            target,
            encode_headers(&s.headers)?,
            s.priority,
            s.start_at,
            s.end_at,
            s.max_runs.map(to_i64),
            s.missed.as_str(),
            s.paused,
            s.next_fire_at,
            to_i64(s.generation),
            s.payload,
        ])
        .ctx("update schedule")?;
    tracing::info!(schedule = id, generation = s.generation, next_fire_at = ?s.next_fire_at,
        paused = s.paused, "schedule updated");
    Ok(s)
}

/// Deletes the schedule and its fire history; returns it as it was.
pub(super) fn delete_schedule(tx: &mut Tx<'_>, id: ScheduleId) -> StoreResult<Schedule> {
    let s = get_schedule(tx.conn, id)?;
    tx.conn
        .prepare_cached("DELETE FROM schedule_fires WHERE schedule_id = ?1")
        .ctx("prepare schedule fires delete")?
        .execute(params![id])
        .ctx("delete schedule fires")?;
    tx.conn
        .prepare_cached("DELETE FROM schedules WHERE id = ?1")
        .ctx("prepare schedule delete")?
        .execute(params![id])
        .ctx("delete schedule")?;
    tracing::info!(schedule = id, "schedule deleted");
    Ok(s)
}

/// Records fire `fire_at` of schedule `id` and writes its deliveries, unless that instant is
/// already recorded (then `None`, and nothing is written).
fn record_fire(
    tx: &mut Tx<'_>,
    id: ScheduleId,
    fire_at: i64,
    deliveries: Vec<Delivery>,
    manual: bool,
    now: i64,
    counters: &mut Counters,
) -> StoreResult<Option<Fire>> {
    let inserted = tx
        .conn
        .prepare_cached(
            "INSERT INTO schedule_fires (schedule_id, fire_at, fired_at, message_ids, manual) \
             VALUES (?1, ?2, ?3, '[]', ?4) ON CONFLICT (schedule_id, fire_at) DO NOTHING",
        )
        .ctx("prepare fire insert")?
        .execute(params![id, fire_at, now, manual])
        .ctx("record fire")?;
    if inserted == 0 {
        tracing::info!(
            schedule = id,
            fire_at,
            "fire instant already recorded; not fired again"
        );
        return Ok(None);
    }
    let written = deliver(tx, deliveries, counters)?;
    let message_ids: Vec<MessageId> = written.iter().map(|e| e.id).collect();
    let ids = serde_json::to_string(&message_ids)
        .map_err(|e| StoreError::Database(format!("encode fire message ids: {e}")))?;
    tx.conn
        .prepare_cached(
            "UPDATE schedule_fires SET message_ids = ?3 WHERE schedule_id = ?1 AND fire_at = ?2",
        )
        .ctx("prepare fire ids")?
        .execute(params![id, fire_at, ids])
        .ctx("record fire messages")?;
    Ok(Some(Fire {
        schedule_id: id,
        fire_at,
        fired_at: now,
        message_ids,
        lateness_ms: now - fire_at,
        manual,
    }))
}

/// Keeps the newest [`FIRE_HISTORY`] fires of schedule `id`.
fn prune_fires(conn: &Connection, id: ScheduleId) -> StoreResult<()> {
    conn.prepare_cached(
        "DELETE FROM schedule_fires WHERE schedule_id = ?1 AND fire_at < (\
             SELECT fire_at FROM schedule_fires WHERE schedule_id = ?1 \
             ORDER BY fire_at DESC LIMIT 1 OFFSET ?2)",
    )
    .ctx("prepare fire pruning")?
    .execute(params![id, FIRE_HISTORY - 1])
    .ctx("prune fires")?;
    Ok(())
}

/// See the module documentation: compare-and-set, unique fire rows, deliveries and the advance
/// in one transaction.
pub(super) fn fire_schedule(
    tx: &mut Tx<'_>,
    id: ScheduleId,
    expected_generation: u64,
    expected_next_fire_at: i64,
    fires: Vec<(i64, Vec<Delivery>)>,
    next_fire_at: Option<i64>,
    now: i64,
) -> StoreResult<FireOutcome> {
    // The conditional update is the compare-and-set: it is the statement that takes the row
    // (a row lock on PostgreSQL) and re-checks both expectations. A paused schedule does not
    // fire from its calendar, whatever the caller read (`run now` is the way to fire it).
    let advanced = tx
        .conn
        .prepare_cached(
            "UPDATE schedules SET generation = generation + 1, next_fire_at = ?4 \
             WHERE id = ?1 AND generation = ?2 AND next_fire_at = ?3 AND paused = 0",
        )
        .ctx("prepare schedule advance")?
        .execute(params![
            id,
            to_i64(expected_generation),
            expected_next_fire_at,
            next_fire_at
        ])
        .ctx("advance schedule")?;
    if advanced == 0 {
        tracing::debug!(
            schedule = id,
            expected_generation,
            expected_next_fire_at,
            "schedule changed since it was read; fire is stale"
        );
        return Ok(FireOutcome::Stale);
    }
    let mut counters = Counters::default();
    let mut written = Vec::with_capacity(fires.len());
    for (fire_at, deliveries) in fires {
        if let Some(fire) = record_fire(tx, id, fire_at, deliveries, false, now, &mut counters)? {
            written.push(fire);
        }
    }
    flush_counters(&mut counters, tx.conn)?;
    if let Some(last) = written.iter().map(|f| f.fire_at).max() {
        tx.conn
            .prepare_cached(
                "UPDATE schedules SET runs = runs + ?2, \
                 last_fire_at = max(coalesce(last_fire_at, ?3), ?3) WHERE id = ?1",
            )
            .ctx("prepare schedule runs")?
            .execute(params![id, written.len() as i64, last])
            .ctx("count schedule runs")?;
        prune_fires(tx.conn, id)?;
    }
    let schedule = get_schedule(tx.conn, id)?;
    for f in &written {
        tracing::info!(
            schedule = id,
            fire_at = f.fire_at,
            lateness_ms = f.lateness_ms,
            messages = f.message_ids.len(),
            "schedule fired"
        );
    }
    Ok(FireOutcome::Fired {
        fires: written,
        schedule: Box::new(schedule),
    })
}

/// Fires schedule `id` once outside its calendar (`run now`), keyed by `fire_at` so a retried
/// request with the same key does not fire twice; `next_fire_at`, `runs` and the generation
/// are left alone, so the calendar's fires go on as planned. Returns the fire and whether it
/// was written now (`false`: that key had fired already, and the earlier fire is returned).
pub(super) fn run_schedule_now(
    tx: &mut Tx<'_>,
    id: ScheduleId,
    fire_at: i64,
    deliveries: Vec<Delivery>,
    now: i64,
) -> StoreResult<(Fire, bool)> {
    get_schedule(tx.conn, id)?;
    let mut counters = Counters::default();
    let fire = record_fire(tx, id, fire_at, deliveries, true, now, &mut counters)?;
    flush_counters(&mut counters, tx.conn)?;
    match fire {
        Some(fire) => {
            tx.conn
                .prepare_cached(
                    "UPDATE schedules SET last_fire_at = max(coalesce(last_fire_at, ?2), ?2) \
                     WHERE id = ?1",
                )
                .ctx("prepare schedule last fire")?
                .execute(params![id, fire_at])
                .ctx("record schedule last fire")?;
            prune_fires(tx.conn, id)?;
            tracing::info!(
                schedule = id,
                fire_at,
                messages = fire.message_ids.len(),
                "schedule run now"
            );
            Ok((fire, true))
        }
        None => {
            let earlier = tx
                .conn
                .prepare_cached(
                    "SELECT schedule_id, fire_at, fired_at, message_ids, manual \
                     FROM schedule_fires WHERE schedule_id = ?1 AND fire_at = ?2",
                )
                .ctx("prepare fire lookup")?
                .query_row(params![id, fire_at], fire_from_row)
                .ctx("read earlier fire")?;
            Ok((earlier, false))
        }
    }
}

//! Schedules and their fires on PostgreSQL. Mirrors `sqlite::schedule_ops` rule for rule (the
//! rules both backends share are in `crate::schedule_rules`); fired messages are written by
//! `deliver`, the path of a publish, so idempotency keys, counters and wake-ups behave alike.
//!
//! # One fire per instant, with several hosts on one database
//!
//! Every host may run the schedule timer, so two hosts can read the same due schedule and both
//! try to fire it. Each write to a schedule (fire, run now, edit, delete) therefore begins by
//! locking the schedule's row (`FOR UPDATE`), which serialises them per schedule across hosts:
//! 1. `fire_schedule` locks the row only while it still has the generation and `next_fire_at`
//!    the caller planned from, and is not paused. Under READ COMMITTED a host that waited for
//!    the lock re-checks those conditions against the row the holder committed; the holder's
//!    fire bumped the generation, so the waiter finds nothing to lock and returns `Stale`
//!    having written nothing (as SQLite's conditional update does).
//! 2. The `schedule_fires` primary key `(schedule_id, fire_at)` is the backstop: an instant
//!    recorded before (by a run now keyed on it, or by anything that slipped past the lock) is
//!    refused by `ON CONFLICT DO NOTHING` and its deliveries are not written.
//! 3. The messages, the fire rows and the advance commit together, so a host that dies midway
//!    leaves the schedule due for the next one, and a commit leaves nothing to repeat.
//!
//! Locking the row first (rather than checking and locking later) also keeps the order of
//! locks the same in every schedule write: the schedule row, then its fire rows, then messages
//! and counters. Two writers of one schedule cannot deadlock.

use deadpool_postgres::GenericClient;
use spool_model::{
    Delivery, Fire, FireOutcome, MessageId, Missed, NewSchedule, Schedule, ScheduleId,
    SchedulePatch, Target,
};

use super::PgStore;
use super::enqueue::to_i64;
use crate::counters::Counters;
use crate::schedule_rules::{
    FIRE_HISTORY, apply_patch, check_fields, first_fire, next_fire, queue_to_check, target_columns,
    target_of, timing_columns, timing_of,
};
use crate::{StoreError, StoreResult};

const SCHEDULE_COLUMNS: &str = "id, name, cron, every_ms, at_ms, timezone, target_kind, target, \
     headers, priority, start_at, end_at, max_runs, missed, paused, created_at, next_fire_at, \
     runs, last_fire_at, generation, payload";

const FIRE_COLUMNS: &str = "schedule_id, fire_at, fired_at, message_ids, manual";

fn unsigned(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn schedule_from_row(row: &tokio_postgres::Row) -> StoreResult<Schedule> {
    let id: ScheduleId = row.get(0);
    let unreadable = |what: String| {
        StoreError::Database(format!(
            "stored schedule {id} is unreadable ({what}); delete it and create it again"
        ))
    };
    let headers: Option<serde_json::Value> = row.get(8);
    let max_runs: Option<i64> = row.get(12);
    let missed: String = row.get(13);
    Ok(Schedule {
        id,
        name: row.get(1),
        timing: timing_of(row.get(2), row.get(3), row.get(4)).map_err(unreadable)?,
        timezone: row.get(5),
        target: target_of(row.get(6), row.get(7)).map_err(unreadable)?,
        headers: match headers {
            Some(v) => serde_json::from_value(v).map_err(|e| unreadable(e.to_string()))?,
            None => Vec::new(),
        },
        priority: row.get(9),
        start_at: row.get(10),
        end_at: row.get(11),
        max_runs: max_runs.map(unsigned),
        missed: missed.parse::<Missed>().map_err(unreadable)?,
        paused: row.get(14),
        created_at: row.get(15),
        next_fire_at: row.get(16),
        runs: unsigned(row.get(17)),
        last_fire_at: row.get(18),
        generation: unsigned(row.get(19)),
        payload: row.get(20),
    })
}

fn fire_from_row(row: &tokio_postgres::Row) -> StoreResult<Fire> {
    let (schedule_id, fire_at, fired_at): (ScheduleId, i64, i64) =
        (row.get(0), row.get(1), row.get(2));
    let message_ids: Vec<MessageId> = serde_json::from_value(row.get(3)).map_err(|e| {
        StoreError::Database(format!(
            "the message ids of fire {fire_at} of schedule {schedule_id} are unreadable: {e}"
        ))
    })?;
    Ok(Fire {
        schedule_id,
        fire_at,
        fired_at,
        message_ids,
        lateness_ms: fired_at - fire_at,
        manual: row.get(4),
    })
}

/// Headers as a JSON array of `[name, value]` pairs, or NULL when there are none (the form
/// messages use too).
fn encode_headers(headers: &[(String, String)]) -> StoreResult<Option<serde_json::Value>> {
    if headers.is_empty() {
        return Ok(None);
    }
    serde_json::to_value(headers)
        .map(Some)
        .map_err(|e| StoreError::Invalid(format!("headers cannot be encoded: {e}")))
}

/// One fire instant of a schedule, from its calendar or from `run now` (`manual`).
#[derive(Debug, Clone, Copy)]
struct Slot {
    schedule: ScheduleId,
    fire_at: i64,
    manual: bool,
}

impl Slot {
    fn calendar(schedule: ScheduleId, fire_at: i64) -> Slot {
        Slot {
            schedule,
            fire_at,
            manual: false,
        }
    }

    fn manual(schedule: ScheduleId, fire_at: i64) -> Slot {
        Slot {
            schedule,
            fire_at,
            manual: true,
        }
    }
}

impl PgStore {
    /// Schedule `id`, its row locked until the caller's transaction ends when `lock` is set.
    async fn schedule_in(
        &self,
        c: &impl GenericClient,
        id: ScheduleId,
        lock: bool,
    ) -> StoreResult<Schedule> {
        let sql = format!(
            "SELECT {SCHEDULE_COLUMNS} FROM schedules WHERE id = $1{}",
            if lock { " FOR UPDATE" } else { "" }
        );
        let row = c
            .query_opt(&sql, &[&id])
            .await
            .map_err(|e| self.db("look up schedule", e))?
            .ok_or(StoreError::ScheduleNotFound(id))?;
        schedule_from_row(&row)
    }

    /// A queue target must exist (`QueueNotFound`); a topic must be named.
    async fn check_target(&self, c: &impl GenericClient, target: &Target) -> StoreResult<()> {
        if let Some(queue) = queue_to_check(target)? {
            self.queue_id(c, queue).await?;
        }
        Ok(())
    }

    /// See `Store::create_schedule`.
    pub async fn create_schedule(&self, new: NewSchedule, now: i64) -> StoreResult<Schedule> {
        let mut s = Schedule::new(0, now, new);
        check_fields(&s)?;
        let conn = self.conn().await?;
        self.check_target(&conn, &s.target).await?;
        s.next_fire_at = Some(first_fire(&s, now)?);
        let (cron, every_ms, at_ms) = timing_columns(&s.timing);
        let (target_kind, target) = target_columns(&s.target);
        let max_runs = s.max_runs.map(to_i64);
        let row = conn
            .query_one(
                "INSERT INTO schedules (name, cron, every_ms, at_ms, timezone, target_kind, \
                 target, headers, priority, start_at, end_at, max_runs, missed, paused, \
                 created_at, next_fire_at, runs, last_fire_at, generation, payload) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, \
                 0, NULL, 1, $17) RETURNING id",
                &[
                    &s.name,
                    &cron,
                    &every_ms,
                    &at_ms,
                    &s.timezone,
                    &target_kind,
                    &target,
                    &encode_headers(&s.headers)?,
                    &s.priority,
                    &s.start_at,
                    &s.end_at,
                    &max_runs,
                    &s.missed.as_str(),
                    &s.paused,
                    &s.created_at,
                    &s.next_fire_at,
                    &s.payload,
                ],
            )
            .await
            .map_err(|e| self.db("insert schedule", e))?;
        s.id = row.get(0);
        tracing::info!(schedule = s.id, timing = ?s.timing, timezone = ?s.timezone,
            target = ?s.target, next_fire_at = ?s.next_fire_at, "schedule created");
        Ok(s)
    }

    /// See `Store::list_schedules`: by id.
    pub async fn list_schedules(&self) -> StoreResult<Vec<Schedule>> {
        let conn = self.conn().await?;
        conn.query(
            &format!("SELECT {SCHEDULE_COLUMNS} FROM schedules ORDER BY id"),
            &[],
        )
        .await
        .map_err(|e| self.db("list schedules", e))?
        .iter()
        .map(schedule_from_row)
        .collect()
    }

    /// See `Store::get_schedule`.
    pub async fn get_schedule(&self, id: ScheduleId) -> StoreResult<Schedule> {
        let conn = self.conn().await?;
        self.schedule_in(&conn, id, false).await
    }

    /// See `Store::update_schedule`: the patch applied to the locked row, the next fire
    /// recomputed from `now` and the generation bumped, so a fire planned from the old
    /// definition (on any host) is stale.
    pub async fn update_schedule(
        &self,
        id: ScheduleId,
        patch: SchedulePatch,
        now: i64,
    ) -> StoreResult<Schedule> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(|e| self.db("begin", e))?;
        let mut s = self.schedule_in(&tx, id, true).await?;
        let target_changed = apply_patch(&mut s, patch);
        check_fields(&s)?;
        // A queue target is checked when it is set: a queue deleted since then does not block
        // other edits (its fires fail until the target is changed or the queue is back).
        if target_changed {
            self.check_target(&tx, &s.target).await?;
        }
        s.next_fire_at = next_fire(&s, now)?;
        s.generation += 1;
        let (cron, every_ms, at_ms) = timing_columns(&s.timing);
        let (target_kind, target) = target_columns(&s.target);
        let max_runs = s.max_runs.map(to_i64);
        tx.execute(
            "UPDATE schedules SET name = $2, cron = $3, every_ms = $4, at_ms = $5, \
             timezone = $6, target_kind = $7, target = $8, headers = $9, priority = $10, \
             start_at = $11, end_at = $12, max_runs = $13, missed = $14, paused = $15, \
             next_fire_at = $16, generation = $17, payload = $18 WHERE id = $1",
            &[
                &id,
                &s.name,
                &cron,
                &every_ms,
                &at_ms,
                &s.timezone,
                &target_kind,
                &target,
                &encode_headers(&s.headers)?,
                &s.priority,
                &s.start_at,
                &s.end_at,
                &max_runs,
                &s.missed.as_str(),
                &s.paused,
                &s.next_fire_at,
                &to_i64(s.generation),
                &s.payload,
            ],
        )
        .await
        .map_err(|e| self.db("update schedule", e))?;
        tx.commit().await.map_err(|e| self.db("commit", e))?;
        tracing::info!(schedule = id, generation = s.generation, next_fire_at = ?s.next_fire_at,
            paused = s.paused, "schedule updated");
        Ok(s)
    }

    /// See `Store::delete_schedule`: the schedule and its fire history; returns it as it was.
    pub async fn delete_schedule(&self, id: ScheduleId) -> StoreResult<Schedule> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(|e| self.db("begin", e))?;
        // Locked, so a fire in flight on another host either commits first (and its fire rows
        // are deleted here) or waits and then finds no schedule (`Stale`).
        let s = self.schedule_in(&tx, id, true).await?;
        for sql in [
            "DELETE FROM schedule_fires WHERE schedule_id = $1",
            "DELETE FROM schedules WHERE id = $1",
        ] {
            tx.execute(sql, &[&id])
                .await
                .map_err(|e| self.db("delete schedule", e))?;
        }
        tx.commit().await.map_err(|e| self.db("commit", e))?;
        tracing::info!(schedule = id, "schedule deleted");
        Ok(s)
    }

    /// See `Store::schedule_fires`: the last `limit` fires, newest first.
    pub async fn schedule_fires(&self, id: ScheduleId, limit: u32) -> StoreResult<Vec<Fire>> {
        let conn = self.conn().await?;
        self.schedule_in(&conn, id, false).await?;
        conn.query(
            &format!(
                "SELECT {FIRE_COLUMNS} FROM schedule_fires WHERE schedule_id = $1 \
                 ORDER BY fire_at DESC LIMIT $2"
            ),
            &[&id, &i64::from(limit)],
        )
        .await
        .map_err(|e| self.db("read schedule fires", e))?
        .iter()
        .map(fire_from_row)
        .collect()
    }

    /// See `Store::next_schedule_due` (served by the partial index `schedules_due`).
    pub async fn next_schedule_due(&self) -> StoreResult<Option<i64>> {
        let conn = self.conn().await?;
        Ok(conn
            .query_one(
                "SELECT min(next_fire_at) FROM schedules \
                 WHERE NOT paused AND next_fire_at IS NOT NULL",
                &[],
            )
            .await
            .map_err(|e| self.db("read next schedule due", e))?
            .get(0))
    }

    /// See `Store::due_schedules`: unpaused schedules due at `now`, most overdue first.
    pub async fn due_schedules(&self, now: i64, limit: u32) -> StoreResult<Vec<Schedule>> {
        let conn = self.conn().await?;
        conn.query(
            &format!(
                "SELECT {SCHEDULE_COLUMNS} FROM schedules \
                 WHERE NOT paused AND next_fire_at IS NOT NULL AND next_fire_at <= $1 \
                 ORDER BY next_fire_at, id LIMIT $2"
            ),
            &[&now, &i64::from(limit)],
        )
        .await
        .map_err(|e| self.db("read due schedules", e))?
        .iter()
        .map(schedule_from_row)
        .collect()
    }

    /// Records `slot` and writes its deliveries, unless that instant is already recorded
    /// (then `None`, and nothing is written). The caller holds the schedule's row lock.
    async fn record_fire(
        &self,
        tx: &impl GenericClient,
        slot: Slot,
        deliveries: Vec<Delivery>,
        now: i64,
        counters: &mut Counters,
    ) -> StoreResult<Option<Fire>> {
        let Slot {
            schedule: id,
            fire_at,
            manual,
        } = slot;
        let inserted = tx
            .execute(
                "INSERT INTO schedule_fires (schedule_id, fire_at, fired_at, message_ids, manual) \
                 VALUES ($1, $2, $3, '[]', $4) ON CONFLICT (schedule_id, fire_at) DO NOTHING",
                &[&id, &fire_at, &now, &manual],
            )
            .await
            .map_err(|e| self.db("record fire", e))?;
        if inserted == 0 {
            tracing::info!(
                schedule = id,
                fire_at,
                "fire instant already recorded; not fired again"
            );
            return Ok(None);
        }
        let written = self.deliver(tx, deliveries, counters).await?;
        let message_ids: Vec<MessageId> = written.iter().map(|e| e.id).collect();
        let ids = serde_json::to_value(&message_ids)
            .map_err(|e| StoreError::Database(format!("encode fire message ids: {e}")))?;
        tx.execute(
            "UPDATE schedule_fires SET message_ids = $3 WHERE schedule_id = $1 AND fire_at = $2",
            &[&id, &fire_at, &ids],
        )
        .await
        .map_err(|e| self.db("record fire messages", e))?;
        Ok(Some(Fire {
            schedule_id: id,
            fire_at,
            fired_at: now,
            message_ids,
            lateness_ms: now - fire_at,
            manual,
        }))
    }

    /// Keeps the newest `FIRE_HISTORY` fires of schedule `id`.
    async fn prune_fires(&self, tx: &impl GenericClient, id: ScheduleId) -> StoreResult<()> {
        tx.execute(
            "DELETE FROM schedule_fires WHERE schedule_id = $1 AND fire_at < (\
                 SELECT fire_at FROM schedule_fires WHERE schedule_id = $1 \
                 ORDER BY fire_at DESC LIMIT 1 OFFSET $2)",
            &[&id, &(FIRE_HISTORY - 1)],
        )
        .await
        .map_err(|e| self.db("prune fires", e))?;
        Ok(())
    }

    /// See `Store::fire_schedule` and the module documentation: compare-and-set under the
    /// schedule's row lock, unique fire rows, deliveries and the advance in one transaction.
    pub async fn fire_schedule(
        &self,
        id: ScheduleId,
        expected_generation: u64,
        expected_next_fire_at: i64,
        fires: Vec<(i64, Vec<Delivery>)>,
        next_fire_at: Option<i64>,
        now: i64,
    ) -> StoreResult<FireOutcome> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(|e| self.db("begin", e))?;
        // The conditions are part of the locking statement, so a host that waited for another
        // host's fire re-checks them against what that fire committed. A paused schedule does
        // not fire from its calendar, whatever the caller read (`run now` is the way to fire
        // it); a deleted one is stale like a changed one.
        let current = tx
            .query_opt(
                "SELECT id FROM schedules WHERE id = $1 AND generation = $2 \
                 AND next_fire_at = $3 AND NOT paused FOR UPDATE",
                &[&id, &to_i64(expected_generation), &expected_next_fire_at],
            )
            .await
            .map_err(|e| self.db("lock schedule", e))?;
        if current.is_none() {
            tracing::debug!(
                schedule = id,
                expected_generation,
                expected_next_fire_at,
                "schedule changed since it was read; fire is stale"
            );
            return Ok(FireOutcome::Stale);
        }
        tx.execute(
            "UPDATE schedules SET generation = generation + 1, next_fire_at = $2 WHERE id = $1",
            &[&id, &next_fire_at],
        )
        .await
        .map_err(|e| self.db("advance schedule", e))?;
        let mut counters = Counters::default();
        let mut written = Vec::with_capacity(fires.len());
        for (fire_at, deliveries) in fires {
            if let Some(fire) = self
                .record_fire(
                    &tx,
                    Slot::calendar(id, fire_at),
                    deliveries,
                    now,
                    &mut counters,
                )
                .await?
            {
                written.push(fire);
            }
        }
        self.flush_counters(&tx, &mut counters).await?;
        if let Some(last) = written.iter().map(|f| f.fire_at).max() {
            tx.execute(
                "UPDATE schedules SET runs = runs + $2, last_fire_at = greatest(last_fire_at, $3) \
                 WHERE id = $1",
                &[&id, &(written.len() as i64), &last],
            )
            .await
            .map_err(|e| self.db("count schedule runs", e))?;
            self.prune_fires(&tx, id).await?;
        }
        let schedule = self.schedule_in(&tx, id, false).await?;
        tx.commit().await.map_err(|e| self.db("commit", e))?;
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

    /// See `Store::run_schedule_now`: one fire outside the calendar, keyed by `fire_at` so a
    /// retried request gets the earlier fire back; `next_fire_at`, `runs` and the generation
    /// stay, and a paused schedule runs too.
    pub async fn run_schedule_now(
        &self,
        id: ScheduleId,
        fire_at: i64,
        deliveries: Vec<Delivery>,
        now: i64,
    ) -> StoreResult<(Fire, bool)> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(|e| self.db("begin", e))?;
        // Locked, like a fire: a delete cannot slip in between the check and the fire row,
        // and no prune on another host can remove the earlier fire before it is read back.
        self.schedule_in(&tx, id, true).await?;
        let mut counters = Counters::default();
        let fire = self
            .record_fire(
                &tx,
                Slot::manual(id, fire_at),
                deliveries,
                now,
                &mut counters,
            )
            .await?;
        self.flush_counters(&tx, &mut counters).await?;
        let Some(fire) = fire else {
            let row = tx
                .query_one(
                    &format!(
                        "SELECT {FIRE_COLUMNS} FROM schedule_fires \
                         WHERE schedule_id = $1 AND fire_at = $2"
                    ),
                    &[&id, &fire_at],
                )
                .await
                .map_err(|e| self.db("read earlier fire", e))?;
            return Ok((fire_from_row(&row)?, false));
        };
        tx.execute(
            "UPDATE schedules SET last_fire_at = greatest(last_fire_at, $2) WHERE id = $1",
            &[&id, &fire_at],
        )
        .await
        .map_err(|e| self.db("record schedule last fire", e))?;
        self.prune_fires(&tx, id).await?;
        tx.commit().await.map_err(|e| self.db("commit", e))?;
        tracing::info!(
            schedule = id,
            fire_at,
            messages = fire.message_ids.len(),
            "schedule run now"
        );
        Ok((fire, true))
    }
}

//! Time-driven work: schedules — [`calendar`] says when a schedule fires, [`timer`] fires
//! them (one task sleeping until the earliest due fire) — and the maintenance loop (lease
//! recovery, TTL expiry, retention, keeping the database's write-ahead log bounded and its
//! planner statistics fresh), and the per-minute queue [`history`]. Delayed messages need no timer of their own: the store promotes
//! them when they fall due and tells idle workers when to look again.

/// When schedules fire and what they enqueue: plain logic, in the model crate so the store
/// can plan fires without the scheduler.
pub use spool_model::{calendar, fire};
pub mod history;
pub mod timer;

pub use timer::{Clock, ManualClock, Scheduler, SchedulerOptions, SchedulerStats, SystemClock};

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::model::{NewSchedule, Schedule, SchedulePatch};
use crate::store::Store;

/// A write-ahead log file larger than this after a round's checkpoint is truncated. The same
/// size the writer's `journal_size_limit` trims the file back to after a burst.
pub const WAL_LIMIT_BYTES: u64 = 64 * 1024 * 1024;

/// How often `PRAGMA optimize` runs (SQLite suggests every few hours for long-lived
/// connections; it is cheap when nothing changed, and the store runs it once at open).
pub const OPTIMIZE_EVERY: Duration = Duration::from_secs(3_600);

/// Runs `store.maintain()` and a checkpoint every `interval`, and `store.optimize()` every
/// [`OPTIMIZE_EVERY`], until `stop` is cancelled.
pub async fn run_maintenance(store: Arc<dyn Store>, interval: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_optimize = Instant::now();
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        match store.maintain().await {
            Ok(m) if m != Default::default() => tracing::info!(
                leases_recovered = m.leases_recovered,
                leases_dead = m.leases_dead,
                expired = m.expired,
                acked_purged = m.acked_purged,
                dead_purged = m.dead_purged,
                "maintenance"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "maintenance failed; will try again"),
        }
        match store.checkpoint(WAL_LIMIT_BYTES).await {
            Ok(c) => tracing::trace!(
                log_frames = c.log_frames,
                checkpointed_frames = c.checkpointed_frames,
                busy = c.busy,
                wal_bytes = c.wal_bytes,
                "checkpoint"
            ),
            Err(e) => tracing::warn!(error = %e, "checkpoint failed; will try again"),
        }
        if last_optimize.elapsed() >= OPTIMIZE_EVERY {
            last_optimize = Instant::now();
            if let Err(e) = store.optimize().await {
                tracing::warn!(error = %e, "PRAGMA optimize failed; will try again in an hour");
            }
        }
    }
}

/// Whether `wanted` (a `[[schedules]]` entry) says what `s` already is, so a restart with an
/// unchanged spool.toml leaves the schedule (and its next fire) alone.
pub fn same_definition(wanted: &NewSchedule, s: &Schedule) -> bool {
    *wanted == s.definition()
}

/// A patch that makes a schedule say exactly what `wanted` says.
pub fn replace_with(wanted: NewSchedule) -> SchedulePatch {
    SchedulePatch {
        name: Some(wanted.name),
        timing: Some(wanted.timing),
        timezone: Some(wanted.timezone),
        target: Some(wanted.target),
        payload: Some(wanted.payload),
        headers: Some(wanted.headers),
        priority: Some(wanted.priority),
        start_at: Some(wanted.start_at),
        end_at: Some(wanted.end_at),
        max_runs: Some(wanted.max_runs),
        missed: Some(wanted.missed),
        paused: Some(wanted.paused),
    }
}

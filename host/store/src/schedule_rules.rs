//! What a schedule may be and how it is stored, decided the same way by both backends: the
//! checks the calendar does not make, the next fire, applying a patch, and the mapping between
//! a definition and its columns. Nothing here touches a database.

use std::time::Duration;

use spool_model::calendar::Calendar;
use spool_model::{Schedule, SchedulePatch, Target, Timing};

use crate::{StoreError, StoreResult};

/// Fires kept per schedule.
pub const FIRE_HISTORY: i64 = 100;

/// Longest schedule label, in bytes.
pub const MAX_NAME: usize = 200;

/// The calendar of `s`, or why its definition cannot be used.
pub fn calendar(s: &Schedule) -> StoreResult<Calendar> {
    Calendar::of(s).map_err(StoreError::InvalidSchedule)
}

/// Checks what the calendar does not: the label and `max_runs`.
pub fn check_fields(s: &Schedule) -> StoreResult<()> {
    if let Some(name) = &s.name
        && name.len() > MAX_NAME
    {
        return Err(StoreError::Invalid(format!(
            "name is {} bytes long; use at most {MAX_NAME}",
            name.len()
        )));
    }
    if s.max_runs == Some(0) {
        return Err(StoreError::Invalid(
            "max_runs must be at least 1; leave it out for no limit".to_owned(),
        ));
    }
    Ok(())
}

/// The queue a target needs to exist (the caller looks it up in its database), or `None` for a
/// topic; an unnamed topic is refused here.
pub fn queue_to_check(target: &Target) -> StoreResult<Option<&str>> {
    match target {
        Target::Queue(q) => Ok(Some(q)),
        Target::Topic(t) if t.is_empty() => Err(StoreError::Invalid(
            "topic must not be empty; name the topic the schedule publishes to".to_owned(),
        )),
        Target::Topic(_) => Ok(None),
    }
}

/// The next fire after `now` as `s` defines it (`None` once `max_runs` is reached).
pub fn next_fire(s: &Schedule, now: i64) -> StoreResult<Option<i64>> {
    if s.runs_left() == Some(0) {
        return Ok(None);
    }
    Ok(calendar(s)?.next_after(now))
}

/// The first fire of a schedule being created at `now`; one that would never fire is refused.
pub fn first_fire(s: &Schedule, now: i64) -> StoreResult<i64> {
    next_fire(s, now)?.ok_or_else(|| {
        StoreError::Invalid(
            "the schedule would never fire: it has no fire instant after now (check at, cron, \
             start_at and end_at)"
                .to_owned(),
        )
    })
}

/// Applies `patch` to `s` (nothing is checked yet); returns whether the target changed, since
/// a queue target is checked only when it is set.
pub fn apply_patch(s: &mut Schedule, patch: SchedulePatch) -> bool {
    let SchedulePatch {
        name,
        timing,
        timezone,
        target,
        payload,
        headers,
        priority,
        start_at,
        end_at,
        max_runs,
        missed,
        paused,
    } = patch;
    let target_changed = target.is_some();
    if let Some(v) = name {
        s.name = v;
    }
    if let Some(v) = timing {
        s.timing = v;
    }
    if let Some(v) = timezone {
        s.timezone = v;
    }
    if let Some(v) = target {
        s.target = v;
    }
    if let Some(v) = payload {
        s.payload = v;
    }
    if let Some(v) = headers {
        s.headers = v;
    }
    if let Some(v) = priority {
        s.priority = v;
    }
    if let Some(v) = start_at {
        s.start_at = v;
    }
    if let Some(v) = end_at {
        s.end_at = v;
    }
    if let Some(v) = max_runs {
        s.max_runs = v;
    }
    if let Some(v) = missed {
        s.missed = v;
    }
    if let Some(v) = paused {
        s.paused = v;
    }
    target_changed
}

/// The `cron`, `every_ms` and `at_ms` columns: exactly one is set.
pub fn timing_columns(t: &Timing) -> (Option<&str>, Option<i64>, Option<i64>) {
    match t {
        Timing::Cron(c) => (Some(c.as_str()), None, None),
        // Validated to at most 366 days by the calendar.
        Timing::Every(d) => (None, Some(d.as_millis() as i64), None),
        Timing::At(at) => (None, None, Some(*at)),
    }
}

/// The timing stored in the `cron`, `every_ms` and `at_ms` columns; `Err` says why a stored
/// row cannot be read (each backend reports it in its own error type).
pub fn timing_of(
    cron: Option<String>,
    every_ms: Option<i64>,
    at_ms: Option<i64>,
) -> Result<Timing, String> {
    match (cron, every_ms, at_ms) {
        (Some(cron), _, _) => Ok(Timing::Cron(cron)),
        (None, Some(ms), _) => Ok(Timing::Every(Duration::from_millis(
            u64::try_from(ms).unwrap_or(0),
        ))),
        (None, None, Some(at)) => Ok(Timing::At(at)),
        (None, None, None) => Err("schedule without timing".to_owned()),
    }
}

/// The `target_kind` and `target` columns.
pub fn target_columns(t: &Target) -> (&'static str, &str) {
    match t {
        Target::Queue(q) => ("queue", q),
        Target::Topic(t) => ("topic", t),
    }
}

/// The target stored in the `target_kind` and `target` columns.
pub fn target_of(kind: &str, name: String) -> Result<Target, String> {
    match kind {
        "queue" => Ok(Target::Queue(name)),
        "topic" => Ok(Target::Topic(name)),
        other => Err(format!("unknown target kind {other:?}")),
    }
}

//! When a schedule fires: pure arithmetic over instants, no I/O and no clock (every function
//! takes the time it reasons about, so tests pin it).
//!
//! Instants are Unix milliseconds (UTC) everywhere in the interface; chrono and chrono-tz are
//! used inside only.
//!
//! # Cron, time zones and daylight saving
//!
//! A cron expression is evaluated in the *local* time of its zone, as the tz database defines
//! it: `0 30 9 * * *` in `Europe/Paris` fires at 09:30 on Paris clocks, whatever the offset.
//! The `cron` crate only enumerates wall-clock times here (it runs in UTC, which has no
//! transitions); mapping each wall-clock time to an instant is done by this module through
//! chrono-tz's `LocalResult`, because the crate's own handling of zones does not hold: it yields
//! both instants of an ambiguous local time and, iterating on from the second, steps back in
//! time. The rules are:
//!
//! - A local time that does not exist (skipped by a spring-forward, e.g. 02:30 in Paris on
//!   29 March 2026) is **skipped**: the schedule does not fire for it that day. Firing it at the
//!   shifted instant instead (03:30) would fire jobs at times nobody wrote, and a per-minute
//!   cron would fire the whole missing hour at once.
//! - A local time that exists twice (repeated by a fall-back, e.g. 02:30 in Paris on
//!   25 October 2026) fires **once**, at its first occurrence. So an hourly cron fires 23 times
//!   on a spring-forward day and 24 times on a 25-hour fall-back day; an interval
//!   ([`Timing::Every`]) is absolute time and fires every hour of both.
//!
//! Mapping each local time to its first occurrence is increasing in the local time, so fire
//! instants come out strictly increasing and `next_after` never goes back in time.
//!
//! Days of the week follow Unix cron: `0`–`7` with `0` and `7` Sunday, `1` Monday, or names
//! (`MON`–`SUN`). The `cron` crate numbers them `1`–`7` from Sunday, so `1-5` would silently
//! mean Sunday to Thursday; the field is translated to names before the crate sees it.
//! Day-of-month and day-of-week both restrict (a day must match both), as in the crate (Vixie
//! cron would fire on either). The crate knows the years 1970 to 2100: a cron has no fire after.
//!
//! # Missed fires
//!
//! [`plan_fires`] decides what to fire when a scheduler finds a schedule due (possibly long
//! after its fire time): see its documentation.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, LocalResult, NaiveDateTime, Offset, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;

pub use crate::{Missed, Timing};

/// The most missed fires a `fire-all` schedule catches up on at once (the most recent ones).
pub const MAX_CATCH_UP: usize = 100;

/// The shortest interval: a schedule is not a busy loop.
pub const MIN_EVERY: Duration = Duration::from_secs(1);
/// The longest interval (a leap year); longer periods are a cron's or an `at`'s job.
pub const MAX_EVERY: Duration = Duration::from_secs(366 * 24 * 3600);

/// A schedule definition that cannot be used; [`field`](CalendarError::field) names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CalendarError {
    #[error(
        "cron {expr:?} is not valid: {reason}; write 6 fields (second minute hour day month \
         weekday, e.g. \"0 */5 * * * *\") or 5 (minute hour day month weekday, e.g. \"0 9 * * 1-5\")"
    )]
    Cron { expr: String, reason: String },
    #[error(
        "timezone {0:?} is not an IANA time zone name; use one such as \"UTC\", \"Europe/Paris\" \
         or \"America/New_York\""
    )]
    Timezone(String),
    #[error(
        "every must be a whole number of milliseconds from 1s to 366 days, got {0:?}; use a cron \
         for longer periods"
    )]
    Every(Duration),
    #[error("end_at ({end_at}) must be after start_at ({start_at}); move end_at later or drop it")]
    EndAt { start_at: i64, end_at: i64 },
}

impl CalendarError {
    /// The definition field at fault, as the API names it.
    pub fn field(&self) -> &'static str {
        match self {
            CalendarError::Cron { .. } => "cron",
            CalendarError::Timezone(_) => "timezone",
            CalendarError::Every(_) => "every",
            CalendarError::EndAt { .. } => "end_at",
        }
    }
}

/// A validated schedule definition that answers when it fires. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Calendar {
    rule: Rule,
    start_at: Option<i64>,
    end_at: Option<i64>,
}

#[derive(Debug, Clone)]
enum Rule {
    Cron {
        schedule: Arc<cron::Schedule>,
        tz: Tz,
    },
    Every {
        anchor: i64,
        period: i64,
    },
    At(i64),
}

impl Calendar {
    /// Validates everything; errors name the field: a bad cron (`cron`), an unknown zone
    /// (`timezone`), an interval under 1 s or over 366 days (`every`), `end_at <= start_at`
    /// (`end_at`).
    ///
    /// Fires happen at instants `t` with `start_at <= t <= end_at`. An interval fires at
    /// `start_at + k·every` (k ≥ 0); without `start_at` it is anchored at the Unix epoch, so
    /// callers pass the creation time as `start_at` (the store does).
    pub fn new(
        timing: Timing,
        timezone: Option<&str>,
        start_at: Option<i64>,
        end_at: Option<i64>,
    ) -> Result<Calendar, CalendarError> {
        let tz = match timezone {
            None => Tz::UTC,
            Some(name) => {
                Tz::from_str(name).map_err(|_| CalendarError::Timezone(name.to_owned()))?
            }
        };
        if let (Some(start_at), Some(end_at)) = (start_at, end_at)
            && end_at <= start_at
        {
            return Err(CalendarError::EndAt { start_at, end_at });
        }
        let rule = match timing {
            Timing::Cron(expr) => Rule::Cron {
                schedule: Arc::new(parse_cron(&expr)?),
                tz,
            },
            Timing::Every(every) => {
                if every < MIN_EVERY || every > MAX_EVERY || every.subsec_nanos() % 1_000_000 != 0 {
                    return Err(CalendarError::Every(every));
                }
                Rule::Every {
                    anchor: start_at.unwrap_or(0),
                    // At most 366 days in ms: far inside i64.
                    period: every.as_millis() as i64,
                }
            }
            Timing::At(at) => Rule::At(at),
        };
        Ok(Calendar {
            rule,
            start_at,
            end_at,
        })
    }

    /// The calendar of a stored schedule: its interval anchored at
    /// [`Schedule::anchor`](crate::Schedule::anchor) (`start_at`, else the creation time).
    pub fn of(schedule: &crate::Schedule) -> Result<Calendar, CalendarError> {
        Calendar::new(
            schedule.timing.clone(),
            schedule.timezone.as_deref(),
            schedule.anchor(),
            schedule.end_at,
        )
    }

    /// The first fire instant strictly after `after` within `start_at..=end_at`; `None` when
    /// there is none (past `end_at`, a one-shot already past, a cron that never matches again).
    pub fn next_after(&self, after: i64) -> Option<i64> {
        // Strictly after `start_at - 1` is at or after `start_at`.
        let from = match self.start_at {
            Some(start) => after.max(start.saturating_sub(1)),
            None => after,
        };
        let next = match &self.rule {
            Rule::Cron { schedule, tz } => cron_next_after(schedule, *tz, from),
            Rule::Every { anchor, period } => every_next_after(*anchor, *period, from),
            Rule::At(at) => (*at > from).then_some(*at),
        }?;
        match self.end_at {
            Some(end) if next > end => None,
            _ => Some(next),
        }
    }

    /// The next `n` fire instants after `after`, ascending (fewer when the schedule ends).
    pub fn upcoming(&self, after: i64, n: usize) -> Vec<i64> {
        let mut out = Vec::with_capacity(n.min(MAX_CATCH_UP));
        let mut at = after;
        while out.len() < n {
            match self.next_after(at) {
                Some(next) => {
                    out.push(next);
                    at = next;
                }
                None => break,
            }
        }
        out
    }

    /// The last fire instant at or before `at` within `start_at..=end_at`, if any.
    pub fn last_at_or_before(&self, at: i64) -> Option<i64> {
        let to = match self.end_at {
            Some(end) => at.min(end),
            None => at,
        };
        let last = match &self.rule {
            Rule::Cron { schedule, tz } => cron_last_at_or_before(schedule, *tz, to),
            Rule::Every { anchor, period } => {
                (to >= *anchor).then(|| anchor + (to - anchor) / period * period)
            }
            Rule::At(t) => (*t <= to).then_some(*t),
        }?;
        match self.start_at {
            Some(start) if last < start => None,
            _ => Some(last),
        }
    }
}

/// What to fire for a schedule found due, and what comes next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirePlan {
    /// Fire instants to fire now, ascending (empty when every due instant is dropped).
    pub fires: Vec<i64>,
    /// The schedule's next fire instant after `now`; `None`: it is finished.
    pub next_fire_at: Option<i64>,
}

/// What to fire when the scheduler looks at a schedule whose next fire `due` is `<= now`.
///
/// Every fire instant in `[due, now]` is due (`due` itself is one: it is the stored next fire).
/// The newest is on time if `now - newest <= late_after`; the older ones, and a newest that is
/// later than that, are missed and follow `missed`:
/// - `Skip`: only the on-time one, if there is one;
/// - `FireOnce`: exactly one, the newest due instant, late or not;
/// - `FireAll`: all of them, at most [`MAX_CATCH_UP`] (the most recent ones).
///
/// `runs_left` (what `max_runs` leaves) keeps the oldest planned fires that fit, as if the
/// schedule had fired on time and stopped; the schedule is then finished (`next_fire_at` is
/// `None`), as it is when the calendar has no instant after `now`.
///
/// A `due` later than `now` plans nothing and keeps `due` as the next fire.
pub fn plan_fires(
    cal: &Calendar,
    due: i64,
    now: i64,
    late_after: i64,
    missed: Missed,
    runs_left: Option<u64>,
) -> FirePlan {
    if runs_left == Some(0) {
        return FirePlan {
            fires: Vec::new(),
            next_fire_at: None,
        };
    }
    if due > now {
        return FirePlan {
            fires: Vec::new(),
            next_fire_at: Some(due),
        };
    }
    let newest = cal
        .last_at_or_before(now)
        .filter(|t| *t > due)
        .unwrap_or(due);
    let on_time = now.saturating_sub(newest) <= late_after;
    let mut fires = match missed {
        Missed::Skip if on_time => vec![newest],
        Missed::Skip => Vec::new(),
        Missed::FireOnce => vec![newest],
        Missed::FireAll => {
            // Walked backwards from the newest so a long outage costs MAX_CATCH_UP steps, not
            // one per missed instant.
            let mut back = vec![newest];
            while back.len() < MAX_CATCH_UP {
                let last = back[back.len() - 1];
                match cal.last_at_or_before(last - 1) {
                    Some(t) if t > due => back.push(t),
                    _ => {
                        if last > due {
                            back.push(due);
                        }
                        break;
                    }
                }
            }
            back.reverse();
            back
        }
    };
    let mut finished = false;
    if let Some(left) = runs_left {
        let left = usize::try_from(left).unwrap_or(usize::MAX);
        if fires.len() >= left {
            fires.truncate(left);
            finished = true;
        }
    }
    FirePlan {
        fires,
        next_fire_at: if finished { None } else { cal.next_after(now) },
    }
}

fn every_next_after(anchor: i64, period: i64, after: i64) -> Option<i64> {
    if after < anchor {
        return Some(anchor);
    }
    let k = (after - anchor) / period + 1;
    k.checked_mul(period)?.checked_add(anchor)
}

/// Wall-clock time of instant `ms` at a fixed offset of `offset_secs`.
fn wall_clock(ms: i64, offset_secs: i32) -> Option<NaiveDateTime> {
    DateTime::from_timestamp_millis(ms)?
        .naive_utc()
        .checked_add_signed(TimeDelta::seconds(i64::from(offset_secs)))
}

fn offset_at(tz: Tz, ms: i64) -> Option<i32> {
    let utc = DateTime::from_timestamp_millis(ms)?.naive_utc();
    Some(tz.offset_from_utc_datetime(&utc).fix().local_minus_utc())
}

/// The instant wall-clock time `local` first occurs in `tz`; `None` if it does not exist.
fn first_occurrence(tz: Tz, local: &NaiveDateTime) -> Option<i64> {
    match tz.from_local_datetime(local) {
        LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => Some(t.timestamp_millis()),
        LocalResult::None => None,
    }
}

/// How many times the search restarts past a repeated hour before giving up; one is enough
/// for any real zone (a restart lands past the repetition).
const MAX_RESTARTS: usize = 4;

fn cron_next_after(schedule: &cron::Schedule, tz: Tz, after: i64) -> Option<i64> {
    // Wall-clock times after the local reading of `after`. Those at or before it first occur at
    // or before `after` (first occurrences increase with the wall-clock time), so none is lost.
    let mut from = wall_clock(after, offset_at(tz, after)?)?;
    for _ in 0..MAX_RESTARTS {
        let mut restart = None;
        for candidate in schedule.after(&Utc.from_utc_datetime(&from)) {
            let local = candidate.naive_utc();
            let Some((t, offset)) = (match tz.from_local_datetime(&local) {
                LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => {
                    Some((t.timestamp_millis(), t.offset().fix().local_minus_utc()))
                }
                // Skipped by a spring-forward: no fire for this wall-clock time.
                LocalResult::None => None,
            }) else {
                continue;
            };
            if t > after {
                return Some(t);
            }
            // `after` is in the second pass of a repeated hour and this wall-clock time already
            // fired in the first: so did every time up to `after`'s reading on the earlier
            // offset. Search on from there instead of walking the hour.
            if let Some(r) = wall_clock(after, offset).filter(|r| *r > from) {
                restart = Some(r);
                break;
            }
        }
        from = restart?;
    }
    None
}

fn cron_last_at_or_before(schedule: &cron::Schedule, tz: Tz, at: i64) -> Option<i64> {
    // After a fall-back the clock read more a moment ago than it reads now; a wall-clock time
    // up to that earlier reading may have first occurred before `at`. A day covers any
    // repetition the tz database has.
    let offset = offset_at(tz, at)?.max(offset_at(tz, at.checked_sub(86_400_000)?)?);
    // `prev_from` is strictly before; a fraction of a second past `upper` makes it inclusive.
    let upper = wall_clock(at, offset)?.checked_add_signed(TimeDelta::milliseconds(1))?;
    schedule
        .after(&Utc.from_utc_datetime(&upper))
        .rev()
        .filter_map(|c| first_occurrence(tz, &c.naive_utc()))
        .find(|t| *t <= at)
}

/// Parses a 6-field (with seconds) or 5-field cron, with Unix weekday numbers.
fn parse_cron(expr: &str) -> Result<cron::Schedule, CalendarError> {
    let invalid = |reason: String| CalendarError::Cron {
        expr: expr.to_owned(),
        reason,
    };
    let mut fields: Vec<String> = expr.split_whitespace().map(str::to_owned).collect();
    match fields.len() {
        5 => fields.insert(0, "0".to_owned()),
        6 => {}
        n => return Err(invalid(format!("it has {n} fields"))),
    }
    fields[5] = weekdays(&fields[5]).map_err(|e| invalid(format!("weekday field: {e}")))?;
    cron::Schedule::from_str(&fields.join(" ")).map_err(|e| invalid(e.to_string()))
}

const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// Rewrites a Unix weekday field (`0`–`7`, 0 and 7 Sunday, names, ranges, steps, lists) as a
/// list of day names, which the `cron` crate reads the same way Unix cron does.
fn weekdays(field: &str) -> Result<String, String> {
    let day = |s: &str| -> Result<usize, String> {
        if let Ok(n) = s.parse::<usize>() {
            return if n <= 7 {
                Ok(n)
            } else {
                Err(format!("{n} is not a day (0-7, 0 and 7 are Sunday)"))
            };
        }
        DAY_NAMES
            .iter()
            .position(|d| d.eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("{s:?} is not a day (0-7 or SUN-SAT)"))
    };
    let mut days = [false; 7];
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => match step.parse::<usize>() {
                Ok(s) if s > 0 => (range, Some(s)),
                _ => {
                    return Err(format!(
                        "step {step:?} in {item:?} is not a positive number"
                    ));
                }
            },
            None => (item, None),
        };
        let (lo, mut hi) = match range {
            "*" | "?" => (0, 6),
            _ => match range.split_once('-') {
                Some((a, b)) => (day(a)?, day(b)?),
                // `a/n` runs from `a` to the end of the week.
                None if step.is_some() => (day(range)?, 6),
                None => (day(range)?, day(range)?),
            },
        };
        // Sunday closes a range as 7 (`SAT-SUN`, `5-0`).
        if hi == 0 && lo > 0 {
            hi = 7;
        }
        if lo > hi {
            return Err(format!(
                "range {range:?} runs backwards; write it as a list, e.g. \"5-6,0-1\""
            ));
        }
        for d in (lo..=hi).step_by(step.unwrap_or(1)) {
            days[d % 7] = true;
        }
    }
    if days.iter().all(|d| *d) {
        return Ok("*".to_owned());
    }
    Ok(DAY_NAMES
        .iter()
        .zip(days)
        .filter(|(_, on)| *on)
        .map(|(name, _)| *name)
        .collect::<Vec<_>>()
        .join(","))
}

#[cfg(test)]
mod tests;

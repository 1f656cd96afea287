//! Schedules: messages that the host enqueues (or publishes) by itself at fire instants given by a
//! cron expression in a time zone, a fixed interval, or one instant (DESIGN §3 "Schedules").
//!
//! When a schedule fires is [`crate::calendar`]'s question; these are the plain
//! definitions the store keeps and the API shows.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::MessageId;

/// A schedule's id as the store assigns it.
pub type ScheduleId = i64;

/// When a schedule fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Timing {
    /// A cron expression evaluated in the schedule's time zone: 6 fields with seconds
    /// (`sec min hour day month weekday`) or 5 fields (seconds are 0).
    Cron(String),
    /// A fixed interval in absolute time, anchored at `start_at` (the creation time when unset).
    Every(Duration),
    /// One instant (Unix ms).
    At(i64),
}

/// What happens to fire instants that passed while no scheduler looked (the host was down, or
/// busy): see [`crate::calendar::plan_fires`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Missed {
    /// Only a fire that is on time fires; missed ones are dropped.
    Skip,
    /// However many were missed, the newest one fires once. The default: a schedule that was
    /// down over its fire time still does its job, without a burst.
    #[default]
    FireOnce,
    /// Every missed fire fires, at most `MAX_CATCH_UP` (the newest ones).
    FireAll,
}

impl Missed {
    pub fn as_str(self) -> &'static str {
        match self {
            Missed::Skip => "skip",
            Missed::FireOnce => "fire-once",
            Missed::FireAll => "fire-all",
        }
    }

    pub const ALL: [Missed; 3] = [Missed::Skip, Missed::FireOnce, Missed::FireAll];
}

impl std::str::FromStr for Missed {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Missed::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| {
                format!("unknown missed policy {s:?}; expected one of: skip, fire-once, fire-all")
            })
    }
}

/// Where a schedule's messages go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Enqueued into this queue (which must exist when the schedule is created).
    Queue(String),
    /// Published to this topic through the router.
    Topic(String),
}

/// A schedule to create, after the API has checked its shape.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSchedule {
    /// A label for people; not unique.
    pub name: Option<String>,
    pub timing: Timing,
    /// IANA zone the cron is evaluated in; `None` is UTC. Intervals and instants ignore it.
    pub timezone: Option<String>,
    pub target: Target,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
    /// The fired messages' priority; `None`: the default (0).
    pub priority: Option<i32>,
    /// No fire before this instant (Unix ms, inclusive).
    pub start_at: Option<i64>,
    /// No fire after this instant (Unix ms, inclusive).
    pub end_at: Option<i64>,
    /// The schedule ends after this many fires.
    pub max_runs: Option<u64>,
    pub missed: Missed,
    /// A paused schedule does not fire; its next fire instant is still kept up to date.
    pub paused: bool,
}

impl NewSchedule {
    /// A schedule of `timing` into `target` with everything else unset.
    pub fn new(timing: Timing, target: Target) -> NewSchedule {
        NewSchedule {
            name: None,
            timing,
            timezone: None,
            target,
            payload: Vec::new(),
            headers: Vec::new(),
            priority: None,
            start_at: None,
            end_at: None,
            max_runs: None,
            missed: Missed::default(),
            paused: false,
        }
    }
}

/// A stored schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub id: ScheduleId,
    pub created_at: i64,
    /// The next instant it fires; `None` once it is finished (past `end_at`, `max_runs`
    /// reached, a one-shot that fired). Kept while paused.
    pub next_fire_at: Option<i64>,
    /// How many calendar fires it has made (each fire instant counts once, however many
    /// messages it delivered; `run now` does not count, so it never uses up `max_runs`).
    pub runs: u64,
    /// The newest instant it fired for (a `run now` included).
    pub last_fire_at: Option<i64>,
    /// Goes up with every change of the definition and every fire: the fencing token of
    /// `Store::fire_schedule`'s compare-and-set.
    pub generation: u64,
    pub name: Option<String>,
    pub timing: Timing,
    pub timezone: Option<String>,
    pub target: Target,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
    pub priority: Option<i32>,
    pub start_at: Option<i64>,
    pub end_at: Option<i64>,
    pub max_runs: Option<u64>,
    pub missed: Missed,
    pub paused: bool,
}

impl Schedule {
    /// The stored form of `new`, before its first fire.
    pub fn new(id: ScheduleId, created_at: i64, new: NewSchedule) -> Schedule {
        Schedule {
            id,
            created_at,
            next_fire_at: None,
            runs: 0,
            last_fire_at: None,
            generation: 1,
            name: new.name,
            timing: new.timing,
            timezone: new.timezone,
            target: new.target,
            payload: new.payload,
            headers: new.headers,
            priority: new.priority,
            start_at: new.start_at,
            end_at: new.end_at,
            max_runs: new.max_runs,
            missed: new.missed,
            paused: new.paused,
        }
    }

    /// What the schedule says, without what firing it has changed.
    pub fn definition(&self) -> NewSchedule {
        NewSchedule {
            name: self.name.clone(),
            timing: self.timing.clone(),
            timezone: self.timezone.clone(),
            target: self.target.clone(),
            payload: self.payload.clone(),
            headers: self.headers.clone(),
            priority: self.priority,
            start_at: self.start_at,
            end_at: self.end_at,
            max_runs: self.max_runs,
            missed: self.missed,
            paused: self.paused,
        }
    }

    /// Fires left before `max_runs` ends it (`None`: no limit).
    pub fn runs_left(&self) -> Option<u64> {
        self.max_runs.map(|m| m.saturating_sub(self.runs))
    }

    /// Where an interval is anchored: `start_at`, else the creation time.
    pub fn anchor(&self) -> Option<i64> {
        match self.timing {
            Timing::Every(_) => Some(self.start_at.unwrap_or(self.created_at)),
            _ => self.start_at,
        }
    }
}

/// A change to a schedule: `None` leaves a field as it is; for the `Option<Option<_>>` fields
/// `Some(None)` clears it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SchedulePatch {
    pub name: Option<Option<String>>,
    pub timing: Option<Timing>,
    pub timezone: Option<Option<String>>,
    pub target: Option<Target>,
    pub payload: Option<Vec<u8>>,
    pub headers: Option<Vec<(String, String)>>,
    pub priority: Option<Option<i32>>,
    pub start_at: Option<Option<i64>>,
    pub end_at: Option<Option<i64>>,
    pub max_runs: Option<Option<u64>>,
    pub missed: Option<Missed>,
    pub paused: Option<bool>,
}

/// One fire instant of a schedule, as kept in its recent history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fire {
    pub schedule_id: ScheduleId,
    /// The instant the calendar gave (or the time of a `run now`), Unix ms.
    pub fire_at: i64,
    /// When the store committed it.
    pub fired_at: i64,
    /// The messages it wrote, one per delivery (an existing message when an idempotency key
    /// matched).
    pub message_ids: Vec<MessageId>,
    /// `fired_at - fire_at`: how late it fired.
    pub lateness_ms: i64,
    /// Fired by `run now`, outside the calendar.
    pub manual: bool,
}

/// What `Store::fire_schedule` did.
#[derive(Debug, Clone, PartialEq)]
pub enum FireOutcome {
    /// Committed: the fires written now (a fire instant already recorded is not repeated and
    /// not listed), and the schedule as it is after the advance.
    Fired {
        fires: Vec<Fire>,
        schedule: Box<Schedule>,
    },
    /// The schedule changed (edited, deleted, or fired by someone else) since it was read:
    /// nothing was written. Read it again and plan anew.
    Stale,
}

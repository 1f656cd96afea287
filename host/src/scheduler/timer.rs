//! The schedule timer: one task that sleeps until the earliest due fire of any schedule, fires
//! what is due, and sleeps again. Creating, changing or resuming a schedule wakes it, so an
//! earlier fire is never slept through; nothing scans every schedule per tick (the store answers
//! "earliest next fire" from an index).
//!
//! A fire is planned here ([`plan_fires`]: the `missed` policy after downtime), its messages
//! built ([`fire_message`]) and routed (for a topic, through the router and its filters), and
//! then written by [`Store::fire_schedule`] in **one transaction** with the schedule's advance,
//! as a compare-and-set on the schedule's generation and next fire. So a crash between the two
//! cannot happen (there is no "between"), an edit made while a fire was being planned wins
//! (the fire is stale and planned again from the new definition), and several hosts sharing one
//! database can all run this loop: one commits each fire, the others find it stale.
//!
//! A fire whose delivery fails (its queue was deleted, its topic has no route) is not advanced
//! over: the schedule stays due and is tried again after a growing pause, and the reason shows
//! as `last_error` in the API until a fire succeeds. Its missed instants then follow its policy.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::calendar::{Calendar, CalendarError, plan_fires};
use super::fire::fire_message;
use crate::model::{Delivery, Fire, FireOutcome, Schedule, ScheduleId, Target};
use crate::router::{RouteError, Router};
use crate::store::{Store, StoreError};

/// Where the timer reads the time: the system clock in a server, a hand-moved one in tests.
pub trait Clock: Send + Sync + 'static {
    /// Now, in Unix milliseconds.
    fn now_ms(&self) -> i64;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        crate::model::now_ms()
    }
}

/// A clock that only moves when told to (tests).
#[derive(Debug, Default)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(now_ms: i64) -> ManualClock {
        ManualClock(AtomicI64::new(now_ms))
    }

    pub fn set(&self, now_ms: i64) {
        self.0.store(now_ms, Ordering::SeqCst);
    }

    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// How the timer behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerOptions {
    /// A fire instant this much in the past is *missed* (the host was down or the schedule
    /// paused) and follows the schedule's `missed` policy; a later one is merely late.
    pub late_after: Duration,
    /// Due schedules fired per round before the timer looks again.
    pub batch: u32,
    /// The longest the timer sleeps without looking at the store, so a schedule created or
    /// resumed through another host sharing the database is found without a signal.
    pub rescan_every: Duration,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        SchedulerOptions {
            late_after: Duration::from_secs(60),
            batch: 256,
            rescan_every: Duration::from_secs(30),
        }
    }
}

/// The first pause after a fire that could not be delivered; it doubles up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(60);
/// After a store error, how long before the timer tries again.
const ERROR_PAUSE: Duration = Duration::from_secs(1);

/// What went wrong firing a schedule; the API shows it as the schedule's `last_error`.
#[derive(Debug, thiserror::Error)]
pub enum FireError {
    #[error("{0}")]
    Route(#[from] RouteError),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("the stored definition is not valid any more: {0}")]
    Definition(#[from] CalendarError),
}

/// A schedule whose fire could not be delivered, and when it is tried again.
#[derive(Debug, Clone)]
struct Failing {
    error: String,
    retry_at: i64,
    pause: Duration,
}

/// The schedule timer. Cheap to clone; every clone is the same timer.
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    router: Router,
    clock: Arc<dyn Clock>,
    options: SchedulerOptions,
    wake: Notify,
    failing: Mutex<HashMap<ScheduleId, Failing>>,
    fires: AtomicU64,
    stale: AtomicU64,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

/// Counters since the server started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedulerStats {
    /// Fire instants committed (by this host).
    pub fires: u64,
    /// Fires found changed (edited, or fired by another host) between planning and writing.
    pub stale: u64,
    /// Schedules whose last fire could not be delivered.
    pub failing: u64,
}

impl Scheduler {
    pub fn new(
        store: Arc<dyn Store>,
        router: Router,
        clock: Arc<dyn Clock>,
        options: SchedulerOptions,
    ) -> Scheduler {
        Scheduler {
            inner: Arc::new(Inner {
                store,
                router,
                clock,
                options,
                wake: Notify::new(),
                failing: Mutex::new(HashMap::new()),
                fires: AtomicU64::new(0),
                stale: AtomicU64::new(0),
            }),
        }
    }

    /// A timer on the system clock, as a server runs it.
    pub fn system(store: Arc<dyn Store>, router: Router, options: SchedulerOptions) -> Scheduler {
        Scheduler::new(store, router, Arc::new(SystemClock), options)
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    pub fn now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    /// Tells the timer that a schedule was created or changed, so it looks again at once.
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Why the last fire of `id` could not be delivered, while it keeps failing.
    pub fn last_error(&self, id: ScheduleId) -> Option<String> {
        self.failing().get(&id).map(|f| f.error.clone())
    }

    pub fn stats(&self) -> SchedulerStats {
        SchedulerStats {
            fires: self.inner.fires.load(Ordering::Relaxed),
            stale: self.inner.stale.load(Ordering::Relaxed),
            failing: self.failing().len() as u64,
        }
    }

    fn failing(&self) -> std::sync::MutexGuard<'_, HashMap<ScheduleId, Failing>> {
        self.inner.failing.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs the timer until `stop` is cancelled.
    pub async fn run(self, stop: CancellationToken) {
        loop {
            let wait = match self.tick().await {
                Ok(next) => {
                    let now = self.now_ms();
                    let longest = self.inner.options.rescan_every;
                    next.map_or(
                        longest,
                        |at| Duration::from_millis((at - now).max(0) as u64),
                    )
                    .min(longest)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "scheduler: cannot read due schedules; trying again");
                    ERROR_PAUSE
                }
            };
            if wait.is_zero() {
                // More was due than one round fires: go on, but let others run.
                tokio::task::yield_now().await;
                continue;
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = self.inner.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Fires every schedule due now (up to one batch) and returns when the timer should look
    /// again: the earliest next fire, or now when a full batch was due.
    pub async fn tick(&self) -> Result<Option<i64>, StoreError> {
        let now = self.now_ms();
        let due = self
            .inner
            .store
            .due_schedules(now, self.inner.options.batch)
            .await?;
        let full = due.len() >= self.inner.options.batch as usize;
        let mut retry_at: Option<i64> = None;
        for schedule in due {
            let id = schedule.id;
            if let Some(f) = self.failing().get(&id)
                && f.retry_at > now
            {
                retry_at = Some(retry_at.map_or(f.retry_at, |r| r.min(f.retry_at)));
                continue;
            }
            match self.fire_due(schedule, now).await {
                Ok(_) => {
                    self.failing().remove(&id);
                }
                Err(e) => {
                    let failing = self.note_failure(id, &e, now);
                    retry_at = Some(retry_at.map_or(failing, |r| r.min(failing)));
                }
            }
        }
        if full {
            return Ok(Some(now));
        }
        let waiting: Vec<ScheduleId> = self
            .failing()
            .iter()
            .filter(|(_, f)| f.retry_at > now)
            .map(|(id, _)| *id)
            .collect();
        if waiting.is_empty() {
            return self.inner.store.next_schedule_due().await;
        }
        // Schedules waiting out a retry pause stay due in the store, so the earliest next fire
        // is theirs: look past them (the store lists by next fire) for the earliest of the
        // others, and wake at that or at the end of the first pause, whichever comes first.
        let earliest = self
            .inner
            .store
            .due_schedules(i64::MAX, waiting.len() as u32 + 1)
            .await?
            .into_iter()
            .filter(|s| !waiting.contains(&s.id))
            .find_map(|s| s.next_fire_at);
        Ok(match (earliest, retry_at) {
            (Some(n), Some(r)) => Some(n.min(r)),
            (n, r) => n.or(r),
        })
    }

    fn note_failure(&self, id: ScheduleId, e: &FireError, now: i64) -> i64 {
        let mut failing = self.failing();
        let pause = failing
            .get(&id)
            .map_or(FIRST_RETRY, |f| (f.pause * 2).min(MAX_RETRY));
        let retry_at = now + pause.as_millis() as i64;
        tracing::warn!(schedule = id, error = %e, retry_in_ms = pause.as_millis() as u64, "scheduler: fire could not be delivered; will try again");
        failing.insert(
            id,
            Failing {
                error: e.to_string(),
                retry_at,
                pause,
            },
        );
        retry_at
    }

    /// Plans and writes the fires of one due schedule. A stale plan (the schedule changed
    /// meanwhile) is planned again from what the store holds now, a few times at most.
    async fn fire_due(&self, mut schedule: Schedule, now: i64) -> Result<Vec<Fire>, FireError> {
        for _ in 0..3 {
            let Some(due) = schedule.next_fire_at else {
                return Ok(Vec::new());
            };
            if schedule.paused || due > now {
                return Ok(Vec::new());
            }
            let calendar = Calendar::of(&schedule)?;
            let plan = plan_fires(
                &calendar,
                due,
                now,
                self.inner.options.late_after.as_millis() as i64,
                schedule.missed,
                schedule.runs_left(),
            );
            let mut fires = Vec::with_capacity(plan.fires.len());
            for at in &plan.fires {
                fires.push((*at, self.deliveries(&schedule, *at).await?));
            }
            let outcome = self
                .inner
                .store
                .fire_schedule(
                    schedule.id,
                    schedule.generation,
                    due,
                    fires,
                    plan.next_fire_at,
                    now,
                )
                .await?;
            match outcome {
                FireOutcome::Fired { fires, .. } => {
                    self.count(&schedule.target, &fires);
                    return Ok(fires);
                }
                FireOutcome::Stale => {
                    self.inner.stale.fetch_add(1, Ordering::Relaxed);
                    match self.inner.store.get_schedule(schedule.id).await {
                        Ok(s) => schedule = s,
                        // Deleted meanwhile: nothing to fire.
                        Err(StoreError::ScheduleNotFound(_)) => return Ok(Vec::new()),
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        Ok(Vec::new())
    }

    fn count(&self, target: &Target, fires: &[Fire]) {
        self.inner
            .fires
            .fetch_add(fires.len() as u64, Ordering::Relaxed);
        for f in fires {
            tracing::debug!(
                schedule = f.schedule_id,
                fire_at = f.fire_at,
                lateness_ms = f.lateness_ms,
                messages = f.message_ids.len(),
                "schedule fired"
            );
        }
        if matches!(target, Target::Topic(_)) {
            let deliveries: usize = fires.iter().map(|f| f.message_ids.len()).sum();
            self.inner.router.count_written(deliveries as u64, 0);
        }
    }

    /// The deliveries of one fire of `schedule` at `at`.
    async fn deliveries(&self, schedule: &Schedule, at: i64) -> Result<Vec<Delivery>, FireError> {
        let message = fire_message(schedule, at);
        Ok(match &schedule.target {
            Target::Queue(queue) => vec![Delivery {
                queue: queue.clone(),
                message,
                route: None,
                filter_error: None,
            }],
            Target::Topic(topic) => {
                self.inner
                    .router
                    .route(topic, vec![message])
                    .await?
                    .deliveries
            }
        })
    }

    /// Fires `id` once now, outside its calendar (`POST /v1/schedules/{id}/run`): its next fire
    /// stays as it was. Works on a paused or finished schedule too.
    pub async fn run_now(&self, id: ScheduleId) -> Result<Fire, FireError> {
        let now = self.now_ms();
        let schedule = self.inner.store.get_schedule(id).await?;
        let deliveries = self.deliveries(&schedule, now).await?;
        let (fire, _) = self
            .inner
            .store
            .run_schedule_now(id, now, deliveries, now)
            .await?;
        self.count(&schedule.target, std::slice::from_ref(&fire));
        Ok(fire)
    }
}

/// The calendar of a stored schedule (intervals anchored at `start_at`, else creation).
pub fn calendar_of(s: &Schedule) -> Result<Calendar, CalendarError> {
    Calendar::new(
        s.timing.clone(),
        s.timezone.as_deref(),
        s.anchor(),
        s.end_at,
    )
}

#[cfg(test)]
mod tests;

//! The timer against a real store, with a hand-moved clock: missed-fire policies after a
//! 10-minute gap, 1,000 schedules every second for a minute, edits while due, run now, a
//! missing queue, several timers on one database.

use std::collections::{BTreeSet, HashMap};

use tempfile::TempDir;

use super::*;
use crate::model::{Missed, NewSchedule, QueueConfigPatch, SchedulePatch, Timing};
use crate::plugins::PluginRegistry;
use crate::runtime::{Runtime, RuntimeOptions};
use crate::store::StoreOptions;
use crate::store::sqlite::SqliteStore;

/// 2026-12-01T00:00:00Z.
const T0: i64 = 1_796_083_200_000;
const SECOND: i64 = 1000;

struct Fixture {
    store: Arc<dyn Store>,
    clock: Arc<ManualClock>,
    scheduler: Scheduler,
    router: Router,
    _dir: TempDir,
}

async fn fixture(late_after: Duration) -> Fixture {
    let dir = TempDir::new().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&dir.path().join("spool.db"), StoreOptions::default()).unwrap());
    store
        .put_queue("jobs", &QueueConfigPatch::default())
        .await
        .unwrap();
    let runtime = Runtime::new(RuntimeOptions {
        cache_dir: dir.path().join("cache"),
        max_instances: 4,
        max_memory_mb: 64,
        ..RuntimeOptions::default()
    })
    .unwrap();
    let registry = Arc::new(PluginRegistry::new(store.clone(), runtime, HashMap::new()));
    let router = Router::new(store.clone(), registry, Default::default());
    let clock = Arc::new(ManualClock::new(T0));
    let scheduler = Scheduler::new(
        store.clone(),
        router.clone(),
        clock.clone(),
        SchedulerOptions {
            late_after,
            ..SchedulerOptions::default()
        },
    );
    Fixture {
        store,
        clock,
        scheduler,
        router,
        _dir: dir,
    }
}

fn every_second_cron(missed: Missed) -> NewSchedule {
    NewSchedule {
        missed,
        payload: b"{}".to_vec(),
        ..NewSchedule::new(
            Timing::Cron("* * * * * *".into()),
            Target::Queue("jobs".into()),
        )
    }
}

impl Fixture {
    /// Ticks until nothing more is due now (a round fires at most one batch).
    async fn fire_all_due(&self) {
        for _ in 0..1000 {
            match self.scheduler.tick().await.unwrap() {
                Some(next) if next <= self.clock.now_ms() => continue,
                _ => return,
            }
        }
        panic!("still due after 1,000 rounds");
    }

    /// The `spool-fire-at` instants of every message in `queue`, and how many messages there are.
    async fn fired(&self, queue: &str) -> (BTreeSet<String>, usize) {
        let page = self
            .store
            .list_messages(
                queue,
                &crate::store::MessageFilter {
                    state: None,
                    limit: 1000,
                    cursor: None,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert!(page.next_cursor.is_none(), "more than a page fired");
        let times: Vec<String> = page
            .items
            .iter()
            .map(|m| {
                m.headers
                    .iter()
                    .find(|(k, _)| k == "spool-fire-at")
                    .map(|(_, v)| v.clone())
                    .expect("a fired message has spool-fire-at")
            })
            .collect();
        let n = times.len();
        (times.into_iter().collect(), n)
    }
}

#[tokio::test]
async fn each_missed_policy_after_a_ten_minute_gap() {
    for (missed, want) in [
        (Missed::Skip, 0),
        (Missed::FireOnce, 1),
        (Missed::FireAll, 10),
    ] {
        let f = fixture(Duration::from_secs(10)).await;
        let mut new = every_second_cron(missed);
        // At second 0 of every minute.
        new.timing = Timing::Cron("0 * * * * *".into());
        let s = f.store.create_schedule(new, T0).await.unwrap();
        // On time at T0 + 1 min.
        f.clock.set(T0 + 60 * SECOND);
        f.fire_all_due().await;
        let (_, before) = f.fired("jobs").await;
        assert_eq!(before, 1, "{missed:?}: the on-time fire");
        // Down for ten minutes and a half: the ten instants since are all missed (the newest
        // is 30 s old, late_after is 10 s).
        f.clock.set(T0 + 60 * SECOND + 630 * SECOND);
        let now = f.clock.now_ms();
        f.fire_all_due().await;
        let (times, n) = f.fired("jobs").await;
        assert_eq!(times.len(), n, "{missed:?}: no instant twice");
        assert_eq!(n - before, want, "{missed:?}: fires for the gap");
        let after = f.store.get_schedule(s.id).await.unwrap();
        assert_eq!(
            after.next_fire_at,
            Some(T0 + 720 * SECOND),
            "{missed:?}: advanced to the next minute after now ({now})"
        );
    }
}

#[tokio::test]
async fn a_thousand_schedules_every_second_for_a_minute_lose_none_and_double_none() {
    let f = fixture(Duration::from_secs(60)).await;
    for i in 0..1000 {
        let mut s = NewSchedule::new(
            Timing::Every(Duration::from_secs(1)),
            Target::Queue("jobs".into()),
        );
        s.payload = format!("{{\"n\":{i}}}").into_bytes();
        s.start_at = Some(T0 + SECOND);
        f.store.create_schedule(s, T0).await.unwrap();
    }
    for second in 1..=60 {
        f.clock.set(T0 + second * SECOND);
        f.fire_all_due().await;
    }
    let stats = f.store.queue_stats("jobs").await.unwrap();
    assert_eq!(stats.enqueued, 60_000, "1,000 schedules × 60 fires");
    let schedules = f.store.list_schedules().await.unwrap();
    assert!(
        schedules.iter().all(|s| s.runs == 60),
        "each fired 60 times"
    );
    // No (schedule, instant) twice: the fires history has 60 distinct instants each (it keeps
    // at least the last 60).
    for s in schedules.iter().take(10) {
        let fires = f.store.schedule_fires(s.id, 100).await.unwrap();
        let distinct: BTreeSet<i64> = fires.iter().map(|x| x.fire_at).collect();
        assert_eq!(distinct.len(), fires.len());
    }
}

#[tokio::test]
async fn an_edit_while_due_fires_by_the_new_definition_only() {
    let f = fixture(Duration::from_secs(60)).await;
    let s = f
        .store
        .create_schedule(every_second_cron(Missed::FireAll), T0)
        .await
        .unwrap();
    // Due at T0 + 1 s; before the timer looks, the cron becomes "at second 30".
    f.clock.set(T0 + 5 * SECOND);
    let patch = SchedulePatch {
        timing: Some(Timing::Cron("30 * * * * *".into())),
        payload: Some(b"\"new\"".to_vec()),
        ..SchedulePatch::default()
    };
    let updated = f
        .store
        .update_schedule(s.id, patch, f.clock.now_ms())
        .await
        .unwrap();
    assert_eq!(updated.next_fire_at, Some(T0 + 30 * SECOND));
    f.fire_all_due().await;
    assert_eq!(
        f.fired("jobs").await.1,
        0,
        "the old definition's due fires are gone"
    );
    f.clock.set(T0 + 30 * SECOND);
    f.fire_all_due().await;
    let page = f
        .store
        .list_messages(
            "jobs",
            &crate::store::MessageFilter {
                state: None,
                limit: 10,
                cursor: None,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].payload.as_deref(), Some(&b"\"new\""[..]));
}

#[tokio::test]
async fn a_timer_with_a_stale_view_writes_nothing() {
    // Two timers on one database (as two hosts would be): each plans the same fire, one commits.
    let f = fixture(Duration::from_secs(60)).await;
    let other = Scheduler::new(
        f.store.clone(),
        f.router.clone(),
        f.clock.clone(),
        SchedulerOptions::default(),
    );
    f.store
        .create_schedule(every_second_cron(Missed::FireAll), T0)
        .await
        .unwrap();
    for second in 1..=20 {
        f.clock.set(T0 + second * SECOND);
        let (a, b) = tokio::join!(f.scheduler.tick(), other.tick());
        a.unwrap();
        b.unwrap();
    }
    let (times, n) = f.fired("jobs").await;
    assert_eq!(times.len(), n, "an instant fired twice");
    assert_eq!(n, 20);
}

#[tokio::test]
async fn run_now_fires_once_and_keeps_the_next_fire() {
    let f = fixture(Duration::from_secs(60)).await;
    let mut new = every_second_cron(Missed::Skip);
    new.timing = Timing::Cron("0 0 12 * * *".into());
    new.paused = true;
    let s = f.store.create_schedule(new, T0).await.unwrap();
    f.clock.set(T0 + 7 * SECOND);
    let fire = f.scheduler.run_now(s.id).await.unwrap();
    assert_eq!(fire.fire_at, T0 + 7 * SECOND);
    assert!(fire.manual);
    assert_eq!(fire.message_ids.len(), 1);
    let after = f.store.get_schedule(s.id).await.unwrap();
    assert_eq!(after.next_fire_at, s.next_fire_at);
    assert_eq!(after.runs, 0, "run now does not use up max_runs");
    assert_eq!(f.fired("jobs").await.1, 1);
}

#[tokio::test]
async fn a_fire_into_a_missing_queue_waits_and_says_why() {
    let f = fixture(Duration::from_secs(60)).await;
    f.store
        .put_queue("gone", &QueueConfigPatch::default())
        .await
        .unwrap();
    let mut new = every_second_cron(Missed::FireAll);
    new.target = Target::Queue("gone".into());
    let s = f.store.create_schedule(new, T0).await.unwrap();
    f.store.delete_queue("gone", true).await.unwrap();
    f.clock.set(T0 + 3 * SECOND);
    f.scheduler.tick().await.unwrap();
    let err = f.scheduler.last_error(s.id).expect("the failure is kept");
    assert!(err.contains("gone"), "{err}");
    let still = f.store.get_schedule(s.id).await.unwrap();
    assert_eq!(still.next_fire_at, s.next_fire_at, "not advanced over");
    // The queue comes back: the waiting instants fire (fire-all), once each.
    f.store
        .put_queue("gone", &QueueConfigPatch::default())
        .await
        .unwrap();
    f.clock.set(T0 + 10 * SECOND);
    f.fire_all_due().await;
    assert_eq!(f.scheduler.last_error(s.id), None);
    let (times, n) = f.fired("gone").await;
    assert_eq!(times.len(), n);
    assert_eq!(n, 10, "T0+1s .. T0+10s");
}

#[tokio::test]
async fn a_topic_schedule_is_routed() {
    let f = fixture(Duration::from_secs(60)).await;
    for q in ["a", "b"] {
        f.store
            .put_queue(q, &QueueConfigPatch::default())
            .await
            .unwrap();
        f.router
            .add_route(crate::model::NewRoute {
                pattern: "ops.*".into(),
                queue: q.into(),
                filter: None,
                headers: Vec::new(),
                limits: Default::default(),
            })
            .await
            .unwrap();
    }
    let mut new = every_second_cron(Missed::Skip);
    new.target = Target::Topic("ops.nightly".into());
    f.store.create_schedule(new, T0).await.unwrap();
    f.clock.set(T0 + SECOND);
    f.fire_all_due().await;
    assert_eq!(f.fired("a").await.1, 1);
    assert_eq!(f.fired("b").await.1, 1);
    assert_eq!(f.router.stats().published, 2);
}

#[tokio::test]
async fn a_failing_schedule_does_not_delay_the_next_fire_of_another() {
    let f = fixture(Duration::from_secs(60)).await;
    f.store
        .put_queue("gone", &QueueConfigPatch::default())
        .await
        .unwrap();
    let mut failing = every_second_cron(Missed::FireAll);
    failing.target = Target::Queue("gone".into());
    f.store.create_schedule(failing, T0).await.unwrap();
    f.store.delete_queue("gone", true).await.unwrap();
    let mut once = every_second_cron(Missed::FireAll);
    once.timing = Timing::At(T0 + 2500);
    f.store.create_schedule(once, T0).await.unwrap();

    f.clock.set(T0 + 2 * SECOND);
    // The failing one retries at T0 + 3 s; the one-shot is due before that.
    let next = f.scheduler.tick().await.unwrap();
    assert_eq!(next, Some(T0 + 2500));
    f.clock.set(T0 + 2500);
    f.scheduler.tick().await.unwrap();
    assert_eq!(f.fired("jobs").await.1, 1);
}

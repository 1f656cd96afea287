//! Schedules: definitions, validation, and fires that are written exactly once, with their
//! messages, in the transaction that advances the schedule. Time is passed in (`now`), never
//! read from the clock.

use std::time::Duration;

use super::*;
use crate::schedule_rules::FIRE_HISTORY;
use crate::{MessageFilter, StoreError, StoreResult};
use spool_model::calendar::{Calendar, MAX_CATCH_UP, plan_fires};
use spool_model::fire::fire_message;
use spool_model::{
    Delivery, Fire, FireOutcome, Message, Missed, NewSchedule, Schedule, SchedulePatch, Target,
    Timing,
};

/// 1 June 2026, 00:00:00 UTC.
const T: i64 = 1_780_272_000_000;
const SEC: i64 = 1_000;

fn every_second(queue: &str) -> NewSchedule {
    NewSchedule::new(
        Timing::Cron("* * * * * *".to_owned()),
        Target::Queue(queue.to_owned()),
    )
}

fn deliveries(s: &Schedule, fire_at: i64) -> Vec<Delivery> {
    let Target::Queue(queue) = &s.target else {
        panic!("these tests fire into queues");
    };
    vec![Delivery {
        queue: queue.clone(),
        message: fire_message(s, fire_at),
        route: None,
        filter_error: None,
    }]
}

/// What the scheduler does with a due schedule: plan, then fire with its expectations.
async fn fire_due(store: &dyn Store, s: &Schedule, now: i64, late_after: i64) -> FireOutcome {
    let due = s.next_fire_at.expect("a due schedule");
    let plan = plan_fires(
        &Calendar::of(s).unwrap(),
        due,
        now,
        late_after,
        s.missed,
        s.runs_left(),
    );
    let fires = plan.fires.iter().map(|t| (*t, deliveries(s, *t))).collect();
    store
        .fire_schedule(s.id, s.generation, due, fires, plan.next_fire_at, now)
        .await
        .unwrap()
}

fn fired(outcome: FireOutcome) -> (Vec<Fire>, Schedule) {
    match outcome {
        FireOutcome::Fired { fires, schedule } => (fires, *schedule),
        FireOutcome::Stale => panic!("expected a fire, got Stale"),
    }
}

async fn messages(store: &dyn Store, queue: &str) -> Vec<Message> {
    let filter = MessageFilter {
        limit: 1_000,
        ..MessageFilter::default()
    };
    store.list_messages(queue, &filter).await.unwrap().items
}

pub(super) async fn schedules_are_created_listed_updated_and_deleted(b: Backend) {
    let store = store_with(b, &["jobs"]).await;
    let mut new = NewSchedule::new(
        Timing::Cron("0 */5 * * * *".to_owned()),
        Target::Queue("jobs".to_owned()),
    );
    new.name = Some("five".to_owned());
    new.timezone = Some("Europe/Paris".to_owned());
    new.headers = vec![("kind".to_owned(), "tick".to_owned())];
    new.payload = b"{\"n\":1}".to_vec();
    new.priority = Some(2);
    new.max_runs = Some(10);
    new.missed = Missed::FireAll;
    let s = store.create_schedule(new.clone(), T + 1).await.unwrap();
    assert_eq!(s.next_fire_at, Some(T + 300 * SEC));
    assert_eq!((s.created_at, s.runs, s.generation), (T + 1, 0, 1));
    assert_eq!(s.name.as_deref(), Some("five"));
    assert_eq!(s.timing, new.timing);
    assert_eq!(
        (s.headers.clone(), s.payload.clone()),
        (new.headers, new.payload)
    );
    assert_eq!(store.get_schedule(s.id).await.unwrap(), s);
    assert_eq!(store.list_schedules().await.unwrap(), vec![s.clone()]);
    assert_eq!(
        store.next_schedule_due().await.unwrap(),
        Some(T + 300 * SEC)
    );

    let patch = SchedulePatch {
        timing: Some(Timing::Every(Duration::from_secs(60))),
        name: Some(None),
        paused: Some(true),
        ..SchedulePatch::default()
    };
    let u = store
        .update_schedule(s.id, patch, T + 10 * SEC)
        .await
        .unwrap();
    // An interval without start_at is anchored at the creation time.
    assert_eq!(u.next_fire_at, Some(T + 1 + 60 * SEC));
    assert_eq!((u.name.clone(), u.paused, u.generation), (None, true, 2));
    assert_eq!(store.get_schedule(s.id).await.unwrap(), u);
    // Paused: not due, and no reason to wake the scheduler.
    assert_eq!(store.next_schedule_due().await.unwrap(), None);
    assert!(
        store
            .due_schedules(T + 3_600 * SEC, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // Nor does it fire from its calendar, even for a caller that read it paused.
    let paused_fire = store
        .fire_schedule(
            u.id,
            u.generation,
            T + 1 + 60 * SEC,
            Vec::new(),
            None,
            T + 61 * SEC,
        )
        .await
        .unwrap();
    assert_eq!(paused_fire, FireOutcome::Stale);

    let resumed = SchedulePatch {
        paused: Some(false),
        ..SchedulePatch::default()
    };
    let r = store
        .update_schedule(s.id, resumed, T + 90 * SEC)
        .await
        .unwrap();
    assert_eq!(r.next_fire_at, Some(T + 1 + 120 * SEC));
    let due = store.due_schedules(T + 3_600 * SEC, 10).await.unwrap();
    assert_eq!(due.iter().map(|d| d.id).collect::<Vec<_>>(), vec![s.id]);
    assert!(
        store
            .due_schedules(T + 100 * SEC, 10)
            .await
            .unwrap()
            .is_empty()
    );

    assert_eq!(store.delete_schedule(s.id).await.unwrap().id, s.id);
    let err = store.get_schedule(s.id).await.unwrap_err();
    assert!(matches!(err, StoreError::ScheduleNotFound(id) if id == s.id));
    assert!(err.to_string().contains("spool schedule list"), "{err}");
    assert!(matches!(
        store.delete_schedule(s.id).await,
        Err(StoreError::ScheduleNotFound(_))
    ));
    assert!(store.list_schedules().await.unwrap().is_empty());
}

pub(super) async fn invalid_definitions_are_refused_and_name_the_field(b: Backend) {
    let store = store_with(b, &["jobs"]).await;
    let field = |r: StoreResult<Schedule>| match r {
        Err(StoreError::InvalidSchedule(e)) => e.field(),
        other => panic!("expected InvalidSchedule, got {other:?}"),
    };
    let mut bad = every_second("jobs");
    bad.timing = Timing::Cron("every day".to_owned());
    assert_eq!(field(store.create_schedule(bad, T).await), "cron");
    let mut bad = every_second("jobs");
    bad.timezone = Some("Europe/Atlantis".to_owned());
    assert_eq!(field(store.create_schedule(bad, T).await), "timezone");
    let mut bad = every_second("jobs");
    bad.timing = Timing::Every(Duration::from_millis(10));
    assert_eq!(field(store.create_schedule(bad, T).await), "every");
    let mut bad = every_second("jobs");
    (bad.start_at, bad.end_at) = (Some(T + 10), Some(T));
    assert_eq!(field(store.create_schedule(bad, T).await), "end_at");

    assert!(matches!(
        store.create_schedule(every_second("nope"), T).await,
        Err(StoreError::QueueNotFound(q)) if q == "nope"
    ));
    let mut zero = every_second("jobs");
    zero.max_runs = Some(0);
    let err = store.create_schedule(zero, T).await.unwrap_err();
    assert!(err.to_string().contains("max_runs"), "{err}");
    let past = NewSchedule::new(Timing::At(T - 1), Target::Queue("jobs".to_owned()));
    let err = store.create_schedule(past, T).await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err}");
    assert!(err.to_string().contains("never fire"), "{err}");
    assert!(store.list_schedules().await.unwrap().is_empty());

    // A refused edit changes nothing.
    let s = store
        .create_schedule(every_second("jobs"), T)
        .await
        .unwrap();
    let patch = SchedulePatch {
        timing: Some(Timing::Cron("0 0 25 * * *".to_owned())),
        ..SchedulePatch::default()
    };
    assert_eq!(field(store.update_schedule(s.id, patch, T).await), "cron");
    let retarget = SchedulePatch {
        target: Some(Target::Queue("nope".to_owned())),
        ..SchedulePatch::default()
    };
    assert!(matches!(
        store.update_schedule(s.id, retarget, T).await,
        Err(StoreError::QueueNotFound(_))
    ));
    assert_eq!(store.get_schedule(s.id).await.unwrap(), s);
    assert!(matches!(
        store
            .update_schedule(s.id + 1, SchedulePatch::default(), T)
            .await,
        Err(StoreError::ScheduleNotFound(_))
    ));
}

pub(super) async fn a_fire_is_written_once_and_a_second_attempt_is_stale(b: Backend) {
    let store = store_with(b, &["jobs"]).await;
    let s = store
        .create_schedule(every_second("jobs"), T)
        .await
        .unwrap();
    let due = s.next_fire_at.unwrap();
    assert_eq!(due, T + SEC);

    let (fires, after) = fired(fire_due(&*store, &s, due, 0).await);
    assert_eq!(fires.len(), 1);
    assert_eq!((fires[0].fire_at, fires[0].lateness_ms), (due, 0));
    assert_eq!(after.next_fire_at, Some(due + SEC));
    assert_eq!((after.runs, after.last_fire_at), (1, Some(due)));
    assert_eq!(after.generation, s.generation + 1);

    // Another host (or a retry) that read the same schedule fires with the same expectation.
    assert_eq!(fire_due(&*store, &s, due, 0).await, FireOutcome::Stale);
    let msgs = messages(&*store, "jobs").await;
    assert_eq!(msgs.len(), 1);
    assert_eq!(fires[0].message_ids, vec![msgs[0].id]);
    assert!(
        msgs[0]
            .headers
            .contains(&("spool-schedule-id".to_owned(), s.id.to_string()))
    );
    assert!(msgs[0].headers.contains(&(
        "spool-fire-at".to_owned(),
        "2026-06-01T00:00:01Z".to_owned()
    )));
    assert_eq!(store.get_schedule(s.id).await.unwrap(), after);
    // Written through the enqueue path: counted in the queue's stats.
    let stats = store.queue_stats("jobs").await.unwrap();
    assert_eq!((stats.enqueued, stats.ready), (1, 1));
}

pub(super) async fn a_recorded_fire_instant_is_never_written_again(b: Backend) {
    let store = store_with(b, &["jobs"]).await;
    let s = store
        .create_schedule(every_second("jobs"), T)
        .await
        .unwrap();
    let due = s.next_fire_at.unwrap();
    // The instant is recorded already (here by a run-now keyed on it); the compare-and-set
    // passes, but the unique fire row keeps the instant from firing twice.
    let (_, created) = store
        .run_schedule_now(s.id, due, deliveries(&s, due), due)
        .await
        .unwrap();
    assert!(created);
    let (fires, after) = fired(
        store
            .fire_schedule(
                s.id,
                s.generation,
                due,
                vec![(due, deliveries(&s, due))],
                Some(due + SEC),
                due,
            )
            .await
            .unwrap(),
    );
    assert!(fires.is_empty(), "{fires:?}");
    assert_eq!(messages(&*store, "jobs").await.len(), 1);
    // The schedule still advances past the instant.
    assert_eq!((after.next_fire_at, after.runs), (Some(due + SEC), 0));
}

pub(super) async fn an_edit_between_reading_and_firing_makes_the_fire_stale(b: Backend) {
    let store = store_with(b, &["jobs"]).await;
    let s = store
        .create_schedule(every_second("jobs"), T)
        .await
        .unwrap();
    let due = s.next_fire_at.unwrap();
    let patch = SchedulePatch {
        payload: Some(b"new".to_vec()),
        ..SchedulePatch::default()
    };
    // The edit is made while the schedule is due: the next fire is recomputed from its `now`.
    let edited = store.update_schedule(s.id, patch, due).await.unwrap();
    assert_eq!(edited.next_fire_at, Some(due + SEC));
    assert_eq!(fire_due(&*store, &s, due, 0).await, FireOutcome::Stale);
    assert!(messages(&*store, "jobs").await.is_empty());
    assert_eq!(store.get_schedule(s.id).await.unwrap(), edited);

    // Read again, the new definition fires.
    let (fires, _) = fired(fire_due(&*store, &edited, due + SEC, 0).await);
    assert_eq!(fires.len(), 1);
    let msgs = messages(&*store, "jobs").await;
    assert_eq!(msgs[0].payload.as_deref(), Some(b"new".as_slice()));
}

pub(super) async fn fire_all_catches_up_at_most_max_catch_up_fires(b: Backend) {
    let store = store_with(b, &["jobs"]).await;
    let mut new = every_second("jobs");
    new.missed = Missed::FireAll;
    let s = store.create_schedule(new, T).await.unwrap();
    // Ten minutes without a scheduler.
    let now = T + 600 * SEC;
    let (fires, after) = fired(fire_due(&*store, &s, now, 0).await);
    assert_eq!(fires.len(), MAX_CATCH_UP);
    assert_eq!(fires[0].fire_at, now - 99 * SEC);
    assert_eq!(fires[MAX_CATCH_UP - 1].fire_at, now);
    assert_eq!(fires[0].lateness_ms, 99 * SEC);
    assert_eq!(messages(&*store, "jobs").await.len(), MAX_CATCH_UP);
    assert_eq!(after.runs, MAX_CATCH_UP as u64);
    assert_eq!(after.next_fire_at, Some(now + SEC));
    let history = store.schedule_fires(s.id, 1_000).await.unwrap();
    assert_eq!(history.len(), MAX_CATCH_UP);
    assert_eq!(history[0].fire_at, now, "newest first");
}

pub(super) async fn skip_and_fire_once_after_an_outage(b: Backend) {
    let store = store_with(b, &["skip", "once"]).await;
    let mut skip = every_second("skip");
    skip.missed = Missed::Skip;
    let skip = store.create_schedule(skip, T).await.unwrap();
    let mut once = every_second("once");
    once.missed = Missed::FireOnce;
    let once = store.create_schedule(once, T).await.unwrap();
    // Half a second past the newest instant with a 100 ms tolerance: everything is late.
    let now = T + 600 * SEC + 500;

    let (fires, after) = fired(fire_due(&*store, &skip, now, 100).await);
    assert!(fires.is_empty());
    assert!(messages(&*store, "skip").await.is_empty());
    assert_eq!((after.runs, after.next_fire_at), (0, Some(T + 601 * SEC)));

    let (fires, after) = fired(fire_due(&*store, &once, now, 100).await);
    assert_eq!(
        fires.iter().map(|f| f.fire_at).collect::<Vec<_>>(),
        vec![T + 600 * SEC]
    );
    assert_eq!(fires[0].lateness_ms, 500);
    assert_eq!(messages(&*store, "once").await.len(), 1);
    assert_eq!((after.runs, after.next_fire_at), (1, Some(T + 601 * SEC)));
}

pub(super) async fn max_runs_ends_the_schedule(b: Backend) {
    let store = store_with(b, &["jobs"]).await;
    let mut new = every_second("jobs");
    new.max_runs = Some(3);
    new.missed = Missed::FireAll;
    let s = store.create_schedule(new, T).await.unwrap();
    let (fires, s) = fired(fire_due(&*store, &s, T + SEC, 0).await);
    assert_eq!(fires.len(), 1);
    // Five instants due, two runs left: the oldest two fire and the schedule ends.
    let (fires, s) = fired(fire_due(&*store, &s, T + 6 * SEC, 0).await);
    assert_eq!(
        fires.iter().map(|f| f.fire_at).collect::<Vec<_>>(),
        vec![T + 2 * SEC, T + 3 * SEC]
    );
    assert_eq!((s.runs, s.next_fire_at), (3, None));
    assert_eq!(messages(&*store, "jobs").await.len(), 3);
    assert!(
        store
            .due_schedules(T + 3_600 * SEC, 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.next_schedule_due().await.unwrap(), None);
    // An edit does not revive it while max_runs is reached.
    let renamed = SchedulePatch {
        name: Some(Some("done".to_owned())),
        ..SchedulePatch::default()
    };
    let s = store
        .update_schedule(s.id, renamed, T + 10 * SEC)
        .await
        .unwrap();
    assert_eq!(s.next_fire_at, None);
}

pub(super) async fn a_one_shot_ends_after_its_fire(b: Backend) {
    let store = store_with(b, &["jobs"]).await;
    let at = T + 42 * SEC;
    let new = NewSchedule::new(Timing::At(at), Target::Queue("jobs".to_owned()));
    let s = store.create_schedule(new, T).await.unwrap();
    assert_eq!(s.next_fire_at, Some(at));
    assert!(store.due_schedules(at - 1, 10).await.unwrap().is_empty());
    assert_eq!(store.due_schedules(at, 10).await.unwrap().len(), 1);
    let (fires, s) = fired(fire_due(&*store, &s, at + 5, 0).await);
    assert_eq!(fires.len(), 1);
    assert_eq!(
        (s.runs, s.next_fire_at, s.last_fire_at),
        (1, None, Some(at))
    );
    assert_eq!(store.next_schedule_due().await.unwrap(), None);
}

pub(super) async fn the_fire_history_keeps_the_newest_fires(b: Backend) {
    let store = store_with(b, &["jobs"]).await;
    let mut s = store
        .create_schedule(every_second("jobs"), T)
        .await
        .unwrap();
    let fires_made = FIRE_HISTORY + 5;
    for i in 1..=fires_made {
        s = fired(fire_due(&*store, &s, T + i * SEC, 0).await).1;
    }
    assert_eq!(s.runs, fires_made as u64);
    let history = store.schedule_fires(s.id, 1_000).await.unwrap();
    assert_eq!(history.len() as i64, FIRE_HISTORY);
    assert_eq!(history[0].fire_at, T + fires_made * SEC);
    assert_eq!(history.last().unwrap().fire_at, T + 6 * SEC);
    assert!(history.windows(2).all(|w| w[0].fire_at > w[1].fire_at));
    assert!(
        history
            .iter()
            .all(|f| f.message_ids.len() == 1 && !f.manual)
    );
    assert_eq!(store.schedule_fires(s.id, 3).await.unwrap().len(), 3);
    assert_eq!(messages(&*store, "jobs").await.len() as i64, fires_made);
}

pub(super) async fn a_failed_delivery_leaves_the_schedule_due(b: Backend) {
    let store = store_with(b, &["jobs"]).await;
    let s = store
        .create_schedule(every_second("jobs"), T)
        .await
        .unwrap();
    store.delete_queue("jobs", true).await.unwrap();
    let due = s.next_fire_at.unwrap();
    let err = store
        .fire_schedule(
            s.id,
            s.generation,
            due,
            vec![(due, deliveries(&s, due))],
            Some(due + SEC),
            due,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::QueueNotFound(_)), "{err}");
    // Nothing of the fire was committed: not the advance, not the fire row.
    assert_eq!(store.get_schedule(s.id).await.unwrap(), s);
    assert!(store.schedule_fires(s.id, 10).await.unwrap().is_empty());
    // Once the queue is back, the same fire goes through.
    store
        .put_queue("jobs", &QueueConfigPatch::default())
        .await
        .unwrap();
    let (fires, _) = fired(fire_due(&*store, &s, due, 0).await);
    assert_eq!(fires.len(), 1);
    assert_eq!(messages(&*store, "jobs").await.len(), 1);
}

pub(super) async fn run_now_fires_once_per_key_and_leaves_the_calendar_alone(b: Backend) {
    let store = store_with(b, &["jobs"]).await;
    let s = store
        .create_schedule(every_second("jobs"), T)
        .await
        .unwrap();
    let now = T + 250;
    let (fire, created) = store
        .run_schedule_now(s.id, now, deliveries(&s, now), now)
        .await
        .unwrap();
    assert!(created && fire.manual);
    // The request is retried with the same key: the first fire comes back, nothing is written.
    let (again, created) = store
        .run_schedule_now(s.id, now, deliveries(&s, now), now + 900)
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(again, fire);
    assert_eq!(messages(&*store, "jobs").await.len(), 1);
    let after = store.get_schedule(s.id).await.unwrap();
    assert_eq!(
        (after.next_fire_at, after.runs, after.generation),
        (s.next_fire_at, 0, s.generation)
    );
    assert_eq!(after.last_fire_at, Some(now));
    assert!(matches!(
        store.run_schedule_now(s.id + 1, now, Vec::new(), now).await,
        Err(StoreError::ScheduleNotFound(_))
    ));
}

pub(super) async fn a_long_name_is_refused_and_a_deleted_schedule_is_gone_everywhere(b: Backend) {
    let store = store_with(b, &["jobs"]).await;
    let mut long = every_second("jobs");
    long.name = Some("x".repeat(201));
    assert!(matches!(
        store.create_schedule(long, T).await,
        Err(StoreError::Invalid(_))
    ));
    let s = store
        .create_schedule(every_second("jobs"), T)
        .await
        .unwrap();
    store.delete_schedule(s.id).await.unwrap();
    assert!(matches!(
        store.schedule_fires(s.id, 10).await,
        Err(StoreError::ScheduleNotFound(_))
    ));
    // A deleted schedule's fire is stale, not an error: the timer just plans again.
    let due = s.next_fire_at.unwrap();
    assert_eq!(
        store
            .fire_schedule(
                s.id,
                s.generation,
                due,
                vec![(due, deliveries(&s, due))],
                None,
                due
            )
            .await
            .unwrap(),
        FireOutcome::Stale
    );
    assert!(messages(&*store, "jobs").await.is_empty());
}

pub(super) async fn a_paused_schedule_runs_now_and_its_fires_say_so(b: Backend) {
    let store = store_with(b, &["jobs"]).await;
    let s = store
        .create_schedule(every_second("jobs"), T)
        .await
        .unwrap();
    let due = s.next_fire_at.unwrap();
    let (_, advanced) = fired(fire_due(&*store, &s, due, 0).await);
    let pause = SchedulePatch {
        paused: Some(true),
        ..SchedulePatch::default()
    };
    let p = store.update_schedule(s.id, pause, due).await.unwrap();
    assert_eq!(p.generation, advanced.generation + 1);
    assert_eq!(
        fire_due(&*store, &p, due + SEC, 0).await,
        FireOutcome::Stale
    );
    let later = due + 5 * SEC;
    let (fire, created) = store
        .run_schedule_now(p.id, later, deliveries(&p, later), later)
        .await
        .unwrap();
    assert!(
        created && fire.manual && fire.message_ids.len() == 1,
        "{fire:?}"
    );
    let fires = store.schedule_fires(p.id, 10).await.unwrap();
    assert_eq!(
        fires
            .iter()
            .map(|f| (f.fire_at, f.manual))
            .collect::<Vec<_>>(),
        vec![(later, true), (due, false)]
    );
    let after = store.get_schedule(p.id).await.unwrap();
    assert_eq!(
        (after.paused, after.runs, after.last_fire_at),
        (true, 1, Some(later))
    );
    assert_eq!(messages(&*store, "jobs").await.len(), 2);
}

pub(super) async fn a_topic_schedule_publishes_through_its_routes(b: Backend) {
    let store = store_with(b, &["reports"]).await;
    let empty = NewSchedule::new(
        Timing::Cron("* * * * * *".to_owned()),
        Target::Topic(String::new()),
    );
    let err = store.create_schedule(empty, T).await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err}");
    assert!(err.to_string().contains("topic"), "{err}");

    let (route, _) = store
        .create_route(spool_model::NewRoute {
            pattern: "reports.*".into(),
            queue: "reports".into(),
            filter: None,
            headers: Vec::new(),
            limits: Default::default(),
        })
        .await
        .unwrap();
    let new = NewSchedule::new(
        Timing::Cron("* * * * * *".to_owned()),
        Target::Topic("reports.daily".to_owned()),
    );
    let s = store.create_schedule(new, T).await.unwrap();
    assert_eq!(s.target, Target::Topic("reports.daily".to_owned()));
    assert_eq!(store.get_schedule(s.id).await.unwrap(), s);
    // The timer routes a topic's message (here: the one matching route) and hands the store
    // the deliveries, as a publish does.
    let due = s.next_fire_at.unwrap();
    let delivery = Delivery {
        queue: "reports".into(),
        message: fire_message(&s, due),
        route: Some(route.id),
        filter_error: None,
    };
    let (fires, _) = fired(
        store
            .fire_schedule(
                s.id,
                s.generation,
                due,
                vec![(due, vec![delivery])],
                Some(due + SEC),
                due,
            )
            .await
            .unwrap(),
    );
    assert_eq!(fires.len(), 1);
    let msgs = messages(&*store, "reports").await;
    assert_eq!(fires[0].message_ids, vec![msgs[0].id]);
    assert_eq!(msgs[0].topic.as_deref(), Some("reports.daily"));
    assert_eq!(store.list_routes().await.unwrap()[0].delivered, 1);
    // A topic no route takes still fires (and advances), with no messages.
    let (fires, after) = fired(
        store
            .fire_schedule(
                s.id,
                s.generation + 1,
                due + SEC,
                vec![(due + SEC, Vec::new())],
                Some(due + 2 * SEC),
                due + SEC,
            )
            .await
            .unwrap(),
    );
    assert!(fires[0].message_ids.is_empty());
    assert_eq!(after.runs, 2);
}

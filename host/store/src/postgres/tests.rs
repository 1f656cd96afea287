//! What only PostgreSQL has: several hosts sharing one database (keys, claims, reserved ids,
//! quotas and schedule fires racing across hosts), wake-ups through LISTEN/NOTIFY, migrations
//! under an advisory lock, the password kept out of messages, counter shards. How the store
//! behaves through the `Store` trait is tested once for both backends, in `crate::behaviour`.

use super::*;
use crate::pg_cluster::PgCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_starting_together_migrate_once() {
    let cluster = PgCluster::start().expect("a private PostgreSQL");
    let url = cluster.create_database("spool").unwrap();
    let hosts: Vec<_> = (0..3)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { PgStore::connect(&url).await })
        })
        .collect();
    for host in hosts {
        host.await.unwrap().expect("every host connects");
    }
    assert_eq!(
        cluster
            .psql(
                "spool",
                "SELECT count(*) || ',' || max(version) FROM spool_schema"
            )
            .unwrap(),
        format!("1,{}", migrate::SCHEMA_VERSION)
    );
    // A newer schema is refused, naming what to do.
    cluster
        .psql("spool", "UPDATE spool_schema SET version = version + 1")
        .unwrap();
    let err = PgStore::connect(&url).await.unwrap_err().to_string();
    assert!(err.contains("newer than this build"), "{err}");
}

#[tokio::test]
async fn a_wrong_password_is_refused_without_showing_it() {
    let cluster = PgCluster::start().expect("a private PostgreSQL");
    cluster.create_database("spool").unwrap();
    cluster
        .psql("spool", "CREATE ROLE app LOGIN PASSWORD 'right-one'")
        .unwrap();
    // Trust authentication accepts any password, so refuse through a database that is missing
    // instead; the point is the message, which must not carry the password given.
    let url = format!(
        "postgres://app:wr0ng-s3cret@127.0.0.1:{}/nope",
        cluster.port()
    );
    let err = PgStore::connect(&url).await.unwrap_err().to_string();
    assert!(!err.contains("wr0ng-s3cret"), "{err}");
    assert!(err.contains("postgres://app:********@127.0.0.1"), "{err}");
}

#[tokio::test]
async fn counter_shards_add_up_in_stats() {
    use crate::counters::{Counter, Counters};
    use spool_model::MessageState;
    let cluster = PgCluster::start().expect("a private PostgreSQL");
    let store = PgStore::connect(&cluster.create_database("spool").unwrap())
        .await
        .unwrap();
    let patch: spool_model::QueueConfigPatch = serde_json::from_str("{}").unwrap();
    store.put_queue("q", &patch).await.unwrap();
    let id: i64 = cluster
        .psql("spool", "SELECT id FROM queues WHERE name = 'q'")
        .unwrap()
        .parse()
        .unwrap();
    // Twenty transactions on four connections held at once land in their connections'
    // shards; the stats are their sum.
    let mut conns = Vec::new();
    for _ in 0..4 {
        conns.push(store.conn().await.unwrap());
    }
    for _ in 0..5 {
        for conn in &mut conns {
            let tx = conn.transaction().await.unwrap();
            let mut c = Counters::default();
            c.add(id, Counter::Enqueued, 3);
            c.moved(id, None, Some(MessageState::Ready), 3);
            c.moved(id, Some(MessageState::Ready), Some(MessageState::Leased), 1);
            store.flush_counters(&tx, &mut c).await.unwrap();
            tx.commit().await.unwrap();
        }
    }
    drop(conns);
    let s = store.queue_stats("q").await.unwrap();
    assert_eq!((s.enqueued, s.ready, s.leased), (60, 40, 20), "{s:?}");
    let all = store.all_queue_stats().await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].1.enqueued, 60);
    let shards: i64 = cluster
        .psql("spool", "SELECT count(*) FROM queue_counters")
        .unwrap()
        .parse()
        .unwrap();
    assert!((2..=4).contains(&shards), "{shards} shard rows");
}

fn new_msg(payload: &str) -> spool_model::NewMessage {
    spool_model::NewMessage {
        payload: payload.as_bytes().to_vec(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_enqueueing_one_key_at_once_store_it_once() {
    let cluster = PgCluster::start().expect("a private PostgreSQL");
    let url = cluster.create_database("spool").unwrap();
    let (a, b) = (
        PgStore::connect(&url).await.unwrap(),
        PgStore::connect(&url).await.unwrap(),
    );
    let patch: spool_model::QueueConfigPatch = serde_json::from_str("{}").unwrap();
    a.put_queue("q", &patch).await.unwrap();
    for round in 0..20 {
        let key = format!("k{round}");
        let msg = |k: &str| spool_model::NewMessage {
            idempotency_key: Some(k.to_owned()),
            ..new_msg("x")
        };
        let (x, y) = tokio::join!(
            a.enqueue("q", vec![msg(&key)]),
            b.enqueue("q", vec![msg(&key)])
        );
        let (x, y) = (x.unwrap()[0], y.unwrap()[0]);
        assert_eq!(x.id, y.id, "round {round}: one message for the key");
        assert!(
            x.existing != y.existing,
            "round {round}: exactly one created it"
        );
    }
    assert_eq!(a.queue_stats("q").await.unwrap().enqueued, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_claiming_at_once_never_share_a_message() {
    let cluster = PgCluster::start().expect("a private PostgreSQL");
    let url = cluster.create_database("spool").unwrap();
    let hosts = [
        PgStore::connect(&url).await.unwrap(),
        PgStore::connect(&url).await.unwrap(),
        PgStore::connect(&url).await.unwrap(),
    ];
    let patch: spool_model::QueueConfigPatch = serde_json::from_str("{}").unwrap();
    hosts[0].put_queue("q", &patch).await.unwrap();
    hosts[0]
        .enqueue("q", (0..3000).map(|i| new_msg(&i.to_string())).collect())
        .await
        .unwrap();
    let claims = hosts.iter().map(|h| {
        let h = h.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for _ in 0..200 {
                let batch = h.claim("q", 25, 30_000).await.unwrap();
                if batch.messages.is_empty() {
                    break;
                }
                ids.extend(batch.messages.iter().map(|m| m.id));
            }
            ids
        })
    });
    let mut all = Vec::new();
    for c in claims {
        all.extend(c.await.unwrap());
    }
    let unique: std::collections::HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), 3000, "every message claimed");
    assert_eq!(unique.len(), 3000, "none twice");
    let s = hosts[1].queue_stats("q").await.unwrap();
    assert_eq!((s.ready, s.leased), (0, 3000), "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_extend_only_at_their_attempt_and_reserved_ids_are_never_reused() {
    let cluster = PgCluster::start().expect("a private PostgreSQL");
    let url = cluster.create_database("spool").unwrap();
    let (a, b) = (
        PgStore::connect(&url).await.unwrap(),
        PgStore::connect(&url).await.unwrap(),
    );
    let patch: spool_model::QueueConfigPatch = serde_json::from_str("{}").unwrap();
    a.put_queue("q", &patch).await.unwrap();
    a.enqueue("q", vec![new_msg("m")]).await.unwrap();
    let m = a.claim("q", 1, 1_000).await.unwrap().messages.remove(0);
    assert!(a.extend_lease(m.id, 1, 60_000).await.unwrap());
    assert!(
        !a.extend_lease(m.id, 2, 60_000).await.unwrap(),
        "another attempt's lease"
    );
    assert!(
        !a.extend_lease(m.id + 1000, 1, 60_000).await.unwrap(),
        "no such message"
    );

    // Reservations and inserts of two hosts at once: no id is given twice.
    let (ra, rb) = (a.clone(), b.clone());
    let reserve = |s: PgStore| {
        tokio::spawn(async move {
            let mut runs = Vec::new();
            for _ in 0..30 {
                let ids = s.reserve_ids(5).await.unwrap();
                assert_eq!(ids.len(), 5);
                runs.extend(ids);
            }
            runs
        })
    };
    let insert = tokio::spawn(async move {
        let mut ids = Vec::new();
        for _ in 0..30 {
            ids.extend(
                b.enqueue("q", vec![new_msg("x")])
                    .await
                    .unwrap()
                    .iter()
                    .map(|e| e.id),
            );
        }
        ids
    });
    let (ta, tb) = (reserve(ra), reserve(rb));
    let mut all = ta.await.unwrap();
    all.extend(tb.await.unwrap());
    all.extend(insert.await.unwrap());
    let unique: std::collections::HashSet<_> = all.iter().collect();
    assert_eq!(unique.len(), all.len(), "an id given twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_on_one_host_wakes_the_queue_on_another() {
    let cluster = PgCluster::start().expect("a private PostgreSQL");
    let url = cluster.create_database("spool").unwrap();
    let (a, b) = (
        PgStore::connect(&url).await.unwrap(),
        PgStore::connect(&url).await.unwrap(),
    );
    let patch: spool_model::QueueConfigPatch = serde_json::from_str("{}").unwrap();
    a.put_queue("q", &patch).await.unwrap();
    let woken = a.signals().get("q");
    // The listener's first connection wakes every queue once; take that permit first.
    tokio::time::timeout(std::time::Duration::from_secs(5), woken.notified())
        .await
        .ok();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let wait = woken.notified();
    b.enqueue("q", vec![new_msg("m")]).await.unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), wait)
        .await
        .expect("host a woken by host b's enqueue");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_is_shared_checked_and_quotas_hold_across_hosts() {
    let cluster = PgCluster::start().expect("a private PostgreSQL");
    let url = cluster.create_database("spool").unwrap();
    let (a, b) = (
        PgStore::connect(&url).await.unwrap(),
        PgStore::connect(&url).await.unwrap(),
    );
    a.kv_set("p", "k", b"v1".to_vec()).await.unwrap();
    assert_eq!(
        b.kv_get("p", "k").await.unwrap().as_deref(),
        Some(b"v1".as_slice())
    );
    b.kv_delete("p", "k").await.unwrap();
    assert_eq!(a.kv_get("p", "k").await.unwrap(), None);
    assert!(matches!(
        a.kv_set("p", "", vec![]).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        a.kv_set("p", "k", vec![0; 70_000]).await,
        Err(StoreError::Invalid(_))
    ));

    // Two hosts race for the last of 10 keys, 20 times over: the quota holds.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let s = if i % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            s.kv_set_within("q", &format!("k{i}"), vec![1], 10, 1_000)
                .await
        }));
    }
    let mut stored = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(()) => stored += 1,
            Err(StoreError::KvQuota(_)) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(stored, 10);
    assert_eq!(
        cluster
            .psql("spool", "SELECT count(*) FROM plugin_kv WHERE plugin = 'q'")
            .unwrap(),
        "10"
    );
    // Overwriting a held key still fits; a new one does not.
    let held = cluster
        .psql("spool", "SELECT min(key) FROM plugin_kv WHERE plugin = 'q'")
        .unwrap();
    a.kv_set_within("q", &held, vec![2], 10, 1_000)
        .await
        .unwrap();
    assert!(matches!(
        a.kv_set_within("q", "new", vec![2], 10, 1_000).await,
        Err(StoreError::KvQuota(_))
    ));
}

// --- schedules ------------------------------------------------------------------------------
// The rules of schedules are tested on both backends in `crate::behaviour::schedules`; here,
// the one thing SQLite cannot show: hosts racing to fire one instant.

/// 1 June 2026, 00:00:00 UTC (times are passed in; the clock is never read for schedules).
const SCHED_T: i64 = 1_780_272_000_000;
const SCHED_SEC: i64 = 1_000;

fn sched_every_second(queue: &str) -> spool_model::NewSchedule {
    spool_model::NewSchedule::new(
        spool_model::Timing::Cron("* * * * * *".to_owned()),
        spool_model::Target::Queue(queue.to_owned()),
    )
}

/// The deliveries the timer builds for a queue schedule's fire.
fn sched_deliveries(s: &spool_model::Schedule, fire_at: i64) -> Vec<spool_model::Delivery> {
    let spool_model::Target::Queue(queue) = &s.target else {
        panic!("a queue schedule expected");
    };
    vec![spool_model::Delivery {
        queue: queue.clone(),
        message: spool_model::fire::fire_message(s, fire_at),
        route: None,
        filter_error: None,
    }]
}

/// What the timer does with a due schedule: plan the fires, then fire with its expectations.
async fn sched_fire_due(
    store: &PgStore,
    s: &spool_model::Schedule,
    now: i64,
    late_after: i64,
) -> spool_model::FireOutcome {
    use spool_model::calendar::{Calendar, plan_fires};
    let due = s.next_fire_at.expect("a due schedule");
    let plan = plan_fires(
        &Calendar::of(s).unwrap(),
        due,
        now,
        late_after,
        s.missed,
        s.runs_left(),
    );
    let fires = plan
        .fires
        .iter()
        .map(|t| (*t, sched_deliveries(s, *t)))
        .collect();
    store
        .fire_schedule(s.id, s.generation, due, fires, plan.next_fire_at, now)
        .await
        .unwrap()
}

async fn sched_messages(store: &PgStore, queue: &str) -> Vec<spool_model::Message> {
    let filter = crate::MessageFilter {
        limit: 1_000,
        ..Default::default()
    };
    store.list_messages(queue, &filter).await.unwrap().items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_firing_one_instant_at_once_fire_it_once() {
    use spool_model::FireOutcome;
    use std::time::Duration;
    let sec = SCHED_SEC;
    let cluster = PgCluster::start().expect("a private PostgreSQL");
    let url = cluster.create_database("spool").unwrap();
    let mut hosts = Vec::new();
    for _ in 0..3 {
        hosts.push(PgStore::connect(&url).await.unwrap());
    }
    let patch: spool_model::QueueConfigPatch = serde_json::from_str("{}").unwrap();
    hosts[0].put_queue("jobs", &patch).await.unwrap();
    let mut s = hosts[0]
        .create_schedule(sched_every_second("jobs"), SCHED_T)
        .await
        .unwrap();
    // Host 1 only watches: the listener's first connection wakes every queue once, so that
    // permit is taken before the fires.
    let woken = hosts[1].signals().get("jobs");
    tokio::time::timeout(Duration::from_secs(5), woken.notified())
        .await
        .ok();
    tokio::time::sleep(Duration::from_millis(200)).await;
    const ROUNDS: i64 = 12;
    for round in 0..ROUNDS {
        let due = s.next_fire_at.unwrap();
        // Every host's timer reads the due schedule, then all fire it at the same moment.
        let start = std::sync::Arc::new(tokio::sync::Barrier::new(hosts.len()));
        let tasks: Vec<_> = hosts
            .iter()
            .enumerate()
            .map(|(i, host)| {
                let (host, start) = (host.clone(), start.clone());
                tokio::spawn(async move {
                    let read = host.due_schedules(due, 10).await.unwrap().remove(0);
                    start.wait().await;
                    // In every third round one host answers a `run now` keyed on the same
                    // instant instead: the fire row's key keeps that to one fire as well.
                    if round % 3 == 2 && i == 0 {
                        let (fire, created) = host
                            .run_schedule_now(read.id, due, sched_deliveries(&read, due), due)
                            .await
                            .unwrap();
                        return (created.then_some(fire), None);
                    }
                    let out = sched_fire_due(&host, &read, due, 0).await;
                    (None, Some(out))
                })
            })
            .collect();
        let results =
            tokio::time::timeout(Duration::from_secs(60), futures::future::join_all(tasks))
                .await
                .expect("the hosts finish (no deadlock)");
        let mut fires = Vec::new();
        let (mut fired, mut stale) = (0, 0);
        for r in results {
            let (manual, outcome) = r.unwrap();
            fires.extend(manual);
            match outcome {
                Some(FireOutcome::Fired { fires: f, schedule }) => {
                    fired += 1;
                    fires.extend(f);
                    s = *schedule;
                }
                Some(FireOutcome::Stale) => stale += 1,
                None => {}
            }
        }
        assert_eq!(
            fires.len(),
            1,
            "round {round}: one fire of {due}: {fires:?}"
        );
        assert_eq!(fires[0].fire_at, due);
        let fire_hosts = if round % 3 == 2 { 2 } else { 3 };
        assert_eq!(
            (fired, stale),
            (1, fire_hosts - 1),
            "round {round}: one host advanced"
        );
        assert_eq!(s.next_fire_at, Some(due + sec));
        let recorded = hosts[2].schedule_fires(s.id, 1).await.unwrap();
        assert_eq!(recorded[0].message_ids, fires[0].message_ids);
    }
    let msgs = sched_messages(&hosts[2], "jobs").await;
    assert_eq!(msgs.len() as i64, ROUNDS, "one message per instant");
    assert_eq!(
        hosts[2].schedule_fires(s.id, 1_000).await.unwrap().len() as i64,
        ROUNDS
    );
    let stats = hosts[1].queue_stats("jobs").await.unwrap();
    assert_eq!(
        (stats.enqueued, stats.ready),
        (ROUNDS as u64, ROUNDS as u64)
    );
    // Fires committed on other hosts woke this host's worker of the queue.
    tokio::time::timeout(Duration::from_secs(5), woken.notified())
        .await
        .expect("a fire notifies the queue's workers on every host");
}

//! `spool migrate` between real stores: a SQLite database built through the `Store` trait
//! (every message state, keys, a chunked plugin with versions and history, kv, config,
//! secrets, grants, routes, schedules with fires) is copied into a private PostgreSQL server,
//! and everything read back through the trait must be the same.

use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU32, Ordering};

use super::*;
use crate::pg_cluster::PgCluster;
use crate::sqlite::SqliteStore;
use crate::{DeadFilter, MessageFilter, Store, StoreOptions};
use spool_model::fire::fire_message;
use spool_model::{
    ConfigChange, Delivery, ErrorCategory, FilterLimits, Fire, Message, NewMessage, NewRoute,
    NewSchedule, PluginActivation, PluginSettings, PluginVersion, Queue, QueueConfigPatch,
    QueueStats, Route, Schedule, Settle, SettleResult, Settlement, Target, Timing,
};

static CLUSTER: LazyLock<Result<PgCluster, String>> = LazyLock::new(PgCluster::start_until_exit);
static DATABASES: AtomicU32 = AtomicU32::new(0);

/// A new, empty database on the private server.
async fn empty_database() -> DatabaseUrl {
    let name = format!("copy_{}", DATABASES.fetch_add(1, Ordering::Relaxed));
    let url = tokio::task::spawn_blocking(move || {
        CLUSTER
            .as_ref()
            .unwrap_or_else(|e| panic!("a private PostgreSQL: {e}"))
            .create_database(&name)
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("create a database: {e}"));
    DatabaseUrl::parse(&url).unwrap()
}

fn sha(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

fn patch(json: &str) -> QueueConfigPatch {
    serde_json::from_str(json).unwrap()
}

fn msg(payload: &str) -> NewMessage {
    NewMessage {
        payload: payload.as_bytes().to_vec(),
        ..NewMessage::default()
    }
}

fn settle(id: i64, attempt: u32, settlement: Settlement) -> Settle {
    Settle {
        id,
        attempt,
        settlement,
        plugin_version: Some("big@1".into()),
        outbox: Vec::new(),
    }
}

/// Two components over the 256 KiB from which SQLite stores them in pieces.
fn components() -> (Vec<u8>, Vec<u8>) {
    (
        (0..(600 << 10) + 17).map(|i| (i % 251) as u8).collect(),
        (0..(300 << 10) + 5).map(|i| (i % 241) as u8).collect(),
    )
}

/// Enqueues one message into `queue` and claims it (the only ready one), returning id and
/// attempt.
async fn enqueue_and_claim(s: &dyn Store, queue: &str, m: NewMessage) -> (i64, u32) {
    let id = s.enqueue(queue, vec![m]).await.unwrap()[0].id;
    let claimed = s.claim(queue, 1, 30_000).await.unwrap().messages;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].id, id, "the only ready message is claimed");
    (id, claimed[0].attempt)
}

/// What the source holds beyond what a snapshot shows.
struct Built {
    leased: (i64, u32),
    max_id: i64,
}

/// Fills a store with something of everything, through the trait.
async fn fill(s: &dyn Store, bulk: usize) -> Built {
    s.put_queue("jobs", &patch(r#"{"max_attempts": 3, "concurrency": 4}"#))
        .await
        .unwrap();
    s.put_queue("other", &patch(r#"{"strategy": "fifo"}"#))
        .await
        .unwrap();

    let (big1, big2) = components();
    s.put_plugin("big", "handler", &sha(1), big1, Some("alice"))
        .await
        .unwrap();
    s.put_plugin("big", "handler", &sha(2), big2, Some("bob"))
        .await
        .unwrap();
    s.activate_plugin("big", 1, Some("carol")).await.unwrap();
    s.put_plugin("filt", "filter", &sha(3), b"a small filter".to_vec(), None)
        .await
        .unwrap();
    s.kv_set("big", "counter", b"42".to_vec()).await.unwrap();
    s.kv_set("big", "bytes", vec![0, 1, 2, 255]).await.unwrap();
    s.kv_set("filt", "key", b"v".to_vec()).await.unwrap();
    let set = |key: &str, value: &str, secret: bool| ConfigChange {
        key: key.into(),
        value: Some(value.into()),
        secret,
    };
    s.update_plugin_config(
        "big",
        vec![set("region", "eu", false), set("api_key", "s3cr3t", true)],
    )
    .await
    .unwrap();
    s.put_plugin_grants(
        "big",
        serde_json::from_str(r#"{"kv_max_keys": 5}"#).unwrap(),
    )
    .await
    .unwrap();

    let (filtered, _) = s
        .create_route(NewRoute {
            pattern: "orders.*".into(),
            queue: "jobs".into(),
            filter: Some("filt".into()),
            headers: vec![("tier".into(), "gold".into())],
            limits: FilterLimits {
                timeout_ms: Some(50),
                ..FilterLimits::default()
            },
        })
        .await
        .unwrap();
    let (audit, _) = s
        .create_route(NewRoute {
            pattern: "audit.#".into(),
            queue: "other".into(),
            ..NewRoute::default()
        })
        .await
        .unwrap();
    assert!(filtered.id < audit.id);
    s.publish(vec![Delivery {
        queue: "other".into(),
        message: NewMessage {
            topic: Some("audit.login".into()),
            correlation_id: Some("corr-1".into()),
            ..msg("published")
        },
        route: Some(audit.id),
        filter_error: None,
    }])
    .await
    .unwrap();

    // A schedule with a calendar fire and a manual one.
    let now = now_ms();
    let mut new = NewSchedule::new(
        Timing::Cron("* * * * * *".into()),
        Target::Queue("jobs".into()),
    );
    new.name = Some("tick".into());
    new.payload = b"tick".to_vec();
    new.headers = vec![("from".into(), "cron".into())];
    new.priority = Some(2);
    let sched = s.create_schedule(new, now).await.unwrap();
    let due = sched.next_fire_at.unwrap();
    let deliveries = |at: i64| {
        vec![Delivery {
            queue: "jobs".into(),
            message: fire_message(&sched, at),
            route: None,
            filter_error: None,
        }]
    };
    let outcome = s
        .fire_schedule(
            sched.id,
            sched.generation,
            due,
            vec![(due, deliveries(due))],
            Some(due + 1_000),
            due,
        )
        .await
        .unwrap();
    assert!(matches!(outcome, spool_model::FireOutcome::Fired { .. }));
    s.run_schedule_now(sched.id, due + 500, deliveries(due + 500), due + 500)
        .await
        .unwrap();
    let mut paused = NewSchedule::new(
        Timing::Every(std::time::Duration::from_secs(90)),
        Target::Topic("audit.tick".into()),
    );
    paused.paused = true;
    paused.max_runs = Some(7);
    s.create_schedule(paused, now).await.unwrap();
    // Those fires left ready messages in `jobs`: out of the way of the claims below.
    for m in s
        .list_messages(
            "jobs",
            &MessageFilter {
                limit: 100,
                ..MessageFilter::default()
            },
        )
        .await
        .unwrap()
        .items
    {
        s.cancel(m.id).await.unwrap();
    }

    // A message in every state, one at a time so each claim takes the one just enqueued.
    let (acked, a) = enqueue_and_claim(s, "jobs", msg("acked")).await;
    let (dead, d) = enqueue_and_claim(s, "jobs", msg("dead")).await;
    let (reviewed, r) = enqueue_and_claim(s, "jobs", msg("reviewed")).await;
    let (retried, t) = enqueue_and_claim(s, "jobs", msg("retried")).await;
    let results = s
        .settle(vec![
            settle(acked, a, Settlement::Ack),
            settle(
                dead,
                d,
                Settlement::Dead {
                    error: "trapped".into(),
                    category: ErrorCategory::Trap,
                },
            ),
            settle(
                reviewed,
                r,
                Settlement::Dead {
                    error: "too slow".into(),
                    category: ErrorCategory::Timeout,
                },
            ),
            settle(
                retried,
                t,
                Settlement::Retry {
                    delay_ms: 3_600_000,
                    error: "later".into(),
                    category: ErrorCategory::Timeout,
                },
            ),
        ])
        .await
        .unwrap();
    assert!(results.iter().all(|r| *r == SettleResult::Applied));
    s.mark_reviewed(reviewed).await.unwrap();
    let leased = enqueue_and_claim(s, "jobs", msg("leased")).await;
    let (doomed, _) = enqueue_and_claim(s, "jobs", msg("cancel requested")).await;
    s.cancel(doomed).await.unwrap();
    s.enqueue(
        "jobs",
        vec![NewMessage {
            expires_at: Some(now_ms() - 1),
            ..msg("expired")
        }],
    )
    .await
    .unwrap();
    s.maintain().await.unwrap();
    let cancelled = s.enqueue("jobs", vec![msg("cancelled")]).await.unwrap()[0].id;
    s.cancel(cancelled).await.unwrap();
    s.enqueue(
        "jobs",
        vec![
            NewMessage {
                delay_ms: Some(3_600_000),
                ..msg("scheduled")
            },
            NewMessage {
                priority: 5,
                idempotency_key: Some("k1".into()),
                idempotency_scope: Some("tok".into()),
                producer: Some("tok".into()),
                headers: vec![("a".into(), "1".into()), ("b".into(), "two".into())],
                topic: Some("orders.eu".into()),
                correlation_id: Some("corr-2".into()),
                expires_at: Some(now_ms() + 3_600_000),
                ..msg("ready, with everything")
            },
        ],
    )
    .await
    .unwrap();

    let mut max_id = 0;
    for chunk in 0..bulk.div_ceil(500) {
        let n = 500.min(bulk - chunk * 500);
        let batch = (0..n)
            .map(|i| NewMessage {
                payload: format!(
                    "{{\"n\": {}, \"pad\": \"{}\"}}",
                    chunk * 500 + i,
                    "x".repeat(64)
                )
                .into_bytes(),
                ..NewMessage::default()
            })
            .collect();
        let ids = s.enqueue("other", batch).await.unwrap();
        max_id = max_id.max(ids.iter().map(|e| e.id).max().unwrap_or(0));
    }
    Built { leased, max_id }
}

/// Everything the trait shows of a store, in a comparable form.
#[derive(Debug, PartialEq)]
struct Snapshot {
    queues: Vec<Queue>,
    stats: Vec<(String, QueueStats)>,
    messages: Vec<Message>,
    dead: Vec<Message>,
    plugins: Vec<PluginVersion>,
    active: Vec<(String, PluginVersion, usize, u64)>,
    history: Vec<Vec<PluginActivation>>,
    kv: Vec<Option<Vec<u8>>>,
    settings: Vec<PluginSettings>,
    routes: Vec<Route>,
    schedules: Vec<Schedule>,
    fires: Vec<Vec<Fire>>,
}

async fn snapshot(s: &dyn Store) -> Snapshot {
    let queues = s.list_queues().await.unwrap();
    let stats = s
        .all_queue_stats()
        .await
        .unwrap()
        .into_iter()
        .map(|(name, mut st)| {
            // The age of the oldest ready message depends on when it is asked.
            st.oldest_ready_age_ms = st.oldest_ready_age_ms.map(|_| 0);
            (name, st)
        })
        .collect();
    let mut messages = Vec::new();
    for q in &queues {
        let mut cursor = None;
        loop {
            let page = s
                .list_messages(
                    &q.name,
                    &MessageFilter {
                        limit: 1_000,
                        cursor,
                        ..MessageFilter::default()
                    },
                )
                .await
                .unwrap();
            messages.extend(page.items);
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
    }
    let dead = s
        .list_dead(&DeadFilter {
            limit: 1_000,
            ..DeadFilter::default()
        })
        .await
        .unwrap()
        .items;
    let plugins = s.list_plugins().await.unwrap();
    let mut names: Vec<String> = plugins.iter().map(|p| p.name.clone()).collect();
    names.dedup();
    let mut active = Vec::new();
    let mut history = Vec::new();
    let mut settings = Vec::new();
    for name in &names {
        let (v, bytes) = s.active_plugin(name).await.unwrap();
        // The bytes themselves, summed, keep the snapshot's Debug output short.
        let sum = bytes.iter().map(|b| u64::from(*b)).sum();
        active.push((name.clone(), v, bytes.len(), sum));
        history.push(s.plugin_history(name).await.unwrap());
        settings.push(s.plugin_settings(name).await.unwrap());
    }
    let mut kv = Vec::new();
    for (plugin, key) in [
        ("big", "counter"),
        ("big", "bytes"),
        ("filt", "key"),
        ("big", "none"),
    ] {
        kv.push(s.kv_get(plugin, key).await.unwrap());
    }
    let routes = s.list_routes().await.unwrap();
    let schedules = s.list_schedules().await.unwrap();
    let mut fires = Vec::new();
    for sc in &schedules {
        fires.push(s.schedule_fires(sc.id, 100).await.unwrap());
    }
    Snapshot {
        queues,
        stats,
        messages,
        dead,
        plugins,
        active,
        history,
        kv,
        settings,
        routes,
        schedules,
        fires,
    }
}

/// A SQLite source built by [`fill`], closed, with its snapshot.
async fn source(dir: &Path, bulk: usize) -> (PathBuf, Snapshot, Built) {
    let db = dir.join("spool.db");
    let store = SqliteStore::open(&db, StoreOptions::default()).unwrap();
    let built = fill(&store, bulk).await;
    let snap = snapshot(&store).await;
    drop(store);
    (db, snap, built)
}

async fn copy(db: &Path, url: &DatabaseUrl, opts: &CopyOptions) -> Result<CopyReport, CopyError> {
    copy_sqlite_to_postgres(db, url, opts, &mut |_| {}).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_copies_everything_and_postgres_reads_it_back_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let (db, before, built) = source(dir.path(), 1_234).await;
    let mark = crate::sqlite::ids::read_mark(&crate::sqlite::ids::mark_path(&db))
        .unwrap()
        .expect("the SQLite store keeps an id mark");
    let url = empty_database().await;

    let mut seen = Vec::new();
    let report = copy_sqlite_to_postgres(&db, &url, &CopyOptions::default(), &mut |p| seen.push(p))
        .await
        .expect("the copy");
    assert!(!report.resumed);
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    let rows = |t: &str| report.tables.iter().find(|c| c.table == t).unwrap().rows;
    assert_eq!(rows("messages"), before.messages.len() as u64);
    assert_eq!(rows("plugins"), 3);
    assert_eq!(rows("schedule_fires"), 2);
    assert!(report.messages.contains(&StateCount {
        queue: "jobs".into(),
        state: "dead".into(),
        messages: 2,
    }));
    assert!(
        report.next_message_id > mark,
        "ids continue above the mark: {} <= {mark}",
        report.next_message_id
    );
    assert_eq!(seen.last(), Some(&Progress::Verifying));
    assert!(seen.contains(&Progress::Copied {
        table: "messages",
        done: rows("messages"),
        total: rows("messages"),
    }));

    let pg_store = PgStore::open(url.clone(), StoreOptions::default())
        .await
        .unwrap();
    let pg: &dyn Store = &pg_store;
    let after = snapshot(pg).await;
    assert_eq!(after, before);
    let states: std::collections::HashSet<_> = after.messages.iter().map(|m| m.state).collect();
    assert_eq!(
        states.len(),
        MessageState::ALL.len(),
        "every state: {states:?}"
    );
    let cancel_requested = after
        .messages
        .iter()
        .find(|m| m.payload.as_deref() == Some(b"cancel requested".as_slice()))
        .unwrap();
    assert_eq!(cancel_requested.state, MessageState::Leased);

    // Every version's bytes, the one in pieces included.
    let (big1, big2) = components();
    let client = PgStore::connect_one(&url).await.unwrap();
    for (version, want) in [(1, &big1), (2, &big2)] {
        let got: Vec<u8> = client
            .query_one(
                "SELECT wasm FROM plugins WHERE name = 'big' AND version = $1",
                &[&version],
            )
            .await
            .unwrap()
            .get(0);
        assert!(got == *want, "big version {version}: {} bytes", got.len());
    }

    // The copy goes on as if it had always been on PostgreSQL: the lease is still the one
    // handed out, an idempotency key is still taken, new ids are above every old one.
    let (leased, attempt) = built.leased;
    let applied = pg
        .settle(vec![settle(leased, attempt, Settlement::Ack)])
        .await
        .unwrap();
    assert_eq!(applied, vec![SettleResult::Applied]);
    let again = pg
        .enqueue(
            "jobs",
            vec![NewMessage {
                idempotency_key: Some("k1".into()),
                idempotency_scope: Some("tok".into()),
                ..msg("again")
            }],
        )
        .await
        .unwrap();
    assert!(again[0].existing, "the key is still taken");
    let new = pg.enqueue("jobs", vec![msg("new")]).await.unwrap()[0].id;
    assert!(new > built.max_id && new > mark, "{new}");
    let reserved = pg.reserve_ids(2).await.unwrap();
    assert!(reserved.iter().all(|id| *id > new), "{reserved:?}");
    let d = pg
        .put_plugin("big", "handler", &sha(4), b"v3".to_vec(), None)
        .await
        .unwrap();
    assert_eq!(d.version.version, 3);
    let (route, _) = pg
        .create_route(NewRoute {
            pattern: "new.*".into(),
            queue: "jobs".into(),
            ..NewRoute::default()
        })
        .await
        .unwrap();
    assert!(before.routes.iter().all(|r| r.id < route.id));
    let stats = pg.queue_stats("jobs").await.unwrap();
    let old = &before.stats.iter().find(|(n, _)| n == "jobs").unwrap().1;
    assert_eq!(stats.acked, old.acked + 1);
    assert_eq!(stats.leased, old.leased - 1);
    assert_eq!(stats.enqueued, old.enqueued + 1);

    // A second run has nothing to do, and says so.
    let err = copy(&db, &url, &CopyOptions::default()).await.unwrap_err();
    assert!(matches!(err, CopyError::AlreadyMigrated { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("nothing to do") && text.contains("verified at"),
        "{text}"
    );
    assert!(!text.contains("s3cr3t"), "{text}");

    // A database holding other data is refused, naming what it holds.
    let other = empty_database().await;
    let store = PgStore::open(other.clone(), StoreOptions::default())
        .await
        .unwrap();
    store.put_queue("elsewhere", &patch("{}")).await.unwrap();
    let err = copy(&db, &other, &CopyOptions::default())
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, CopyError::TargetNotEmpty { .. }), "{text}");
    assert!(
        text.contains("1 rows in queues") && text.contains("elsewhere"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_copy_resumes_where_it_stopped_and_hosts_wait_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let (db, before, _) = source(dir.path(), 2_500).await;
    let url = empty_database().await;
    let small = CopyOptions {
        batch_rows: 100,
        stop_after_batches: Some(15),
    };
    let mut seen = Vec::new();
    let err = copy_sqlite_to_postgres(&db, &url, &small, &mut |p| seen.push(p))
        .await
        .unwrap_err();
    assert!(
        matches!(err, CopyError::Stopped { batches: 15, ref table } if table == "messages"),
        "{err}"
    );
    let Some(Progress::Copied {
        table: "messages",
        done,
        total,
    }) = seen.last().cloned()
    else {
        panic!("{seen:?}");
    };
    assert!(done > 0 && done < total, "{done} of {total}");

    // A host refuses to start on a half-copied database.
    let refused = PgStore::open(url.clone(), StoreOptions::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("unfinished `spool migrate`") && refused.contains("spool.db"),
        "{refused}"
    );

    let mut resumed_at = None;
    let resume = CopyOptions {
        batch_rows: 100,
        stop_after_batches: None,
    };
    let report = copy_sqlite_to_postgres(&db, &url, &resume, &mut |p| {
        if resumed_at.is_none() {
            resumed_at = Some(p);
        }
    })
    .await
    .expect("the resumed copy");
    assert!(report.resumed);
    assert_eq!(
        resumed_at,
        Some(Progress::Copied {
            table: "messages",
            done: done + 100,
            total,
        }),
        "the resumed run starts after the last committed batch"
    );
    assert_eq!(report.messages_copied, total - done, "no row copied twice");
    let pg = PgStore::open(url.clone(), StoreOptions::default())
        .await
        .unwrap();
    assert_eq!(snapshot(&pg).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_changed_since_an_interrupted_copy_is_not_mixed_in() {
    let dir = tempfile::tempdir().unwrap();
    let (db, _, _) = source(dir.path(), 300).await;
    let url = empty_database().await;
    let small = CopyOptions {
        batch_rows: 50,
        stop_after_batches: Some(12),
    };
    assert!(matches!(
        copy(&db, &url, &small).await,
        Err(CopyError::Stopped { .. })
    ));
    let store = SqliteStore::open(&db, StoreOptions::default()).unwrap();
    store.enqueue("other", vec![msg("late")]).await.unwrap();
    drop(store);
    let err = copy(&db, &url, &CopyOptions::default()).await.unwrap_err();
    assert!(matches!(err, CopyError::SourceChanged { .. }), "{err}");
    assert!(
        err.to_string().contains("Drop the target database"),
        "{err}"
    );
}

#[tokio::test]
async fn what_is_not_a_current_spool_database_is_refused_before_any_copy() {
    let dir = tempfile::tempdir().unwrap();
    // Never reached: every refusal comes before the target is contacted.
    let url = DatabaseUrl::parse("postgres://nobody:pw@127.0.0.1:9/none").unwrap();
    let opts = CopyOptions::default();

    let missing = dir.path().join("missing.db");
    let err = copy(&missing, &url, &opts).await.unwrap_err();
    assert!(matches!(err, CopyError::NotFound(_)), "{err}");

    let text = dir.path().join("notes.txt");
    // Over one page: SQLite takes a shorter file for an empty database.
    std::fs::write(&text, "this is not a database\n".repeat(400)).unwrap();
    let err = copy(&text, &url, &opts).await.unwrap_err();
    assert!(
        matches!(err, CopyError::NotSpool { ref reason, .. } if reason.contains("not an SQLite")),
        "{err}"
    );

    let foreign = dir.path().join("foreign.db");
    rusqlite::Connection::open(&foreign)
        .unwrap()
        .execute_batch("CREATE TABLE birds (name TEXT)")
        .unwrap();
    let err = copy(&foreign, &url, &opts).await.unwrap_err();
    assert!(matches!(err, CopyError::NotSpool { .. }), "{err}");
    assert!(err.to_string().contains("birds"), "{err}");

    let old = dir.path().join("old.db");
    drop(SqliteStore::open(&old, StoreOptions::default()).unwrap());
    rusqlite::Connection::open(&old)
        .unwrap()
        .pragma_update(None, "user_version", 3)
        .unwrap();
    let err = copy(&old, &url, &opts).await.unwrap_err();
    assert!(
        matches!(err, CopyError::SchemaOutdated { found: 3, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("spool serve --db"), "{err}");

    // A server holds the file: its lock is taken.
    let busy = dir.path().join("busy.db");
    drop(SqliteStore::open(&busy, StoreOptions::default()).unwrap());
    let lock = std::fs::File::create(dir.path().join("busy.db.lock")).unwrap();
    lock.try_lock().unwrap();
    let err = copy(&busy, &url, &opts).await.unwrap_err();
    assert!(matches!(err, CopyError::SourceInUse { .. }), "{err}");
    assert!(err.to_string().contains("stop it first"), "{err}");
    drop(lock);
}

/// The copied columns are exactly those both schemas have, with the PostgreSQL types and
/// nullability [`TABLES`] says; what one side has alone is listed with its reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_copied_columns_match_both_schemas() {
    use std::collections::BTreeMap;
    let listed = |only: &[(&str, &str, &str)], table: &str| -> Option<BTreeSet<String>> {
        let mut cols = BTreeSet::new();
        let mut any = false;
        for (t, c, _) in only {
            if *t == table {
                any = true;
                cols.extend(c.split_whitespace().map(str::to_owned));
            }
        }
        any.then_some(cols)
    };
    let whole = |only: &[(&str, &str, &str)], table: &str| {
        listed(only, table).is_some_and(|c| c.contains("*"))
    };

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("schema.db");
    drop(SqliteStore::open(&db, StoreOptions::default()).unwrap());
    let conn = rusqlite::Connection::open(&db).unwrap();
    let mut sqlite: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for t in tables {
        let cols: BTreeSet<String> = conn
            .prepare(&format!("SELECT name FROM pragma_table_info('{t}')"))
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        sqlite.insert(t, cols);
    }

    let url = empty_database().await;
    let client = PgStore::connect_one(&url).await.unwrap();
    let mut postgres: BTreeMap<String, BTreeMap<String, (String, bool)>> = BTreeMap::new();
    for row in client
        .query(
            "SELECT table_name::text, column_name::text, data_type::text, is_nullable = 'YES' \
             FROM information_schema.columns WHERE table_schema = 'public'",
            &[],
        )
        .await
        .unwrap()
    {
        postgres
            .entry(row.get(0))
            .or_default()
            .insert(row.get(1), (row.get(2), row.get(3)));
    }

    for t in sqlite.keys() {
        assert!(
            TABLES.iter().any(|s| s.name == t) || whole(tables::SQLITE_ONLY, t),
            "SQLite table {t} is neither copied nor listed in SQLITE_ONLY"
        );
    }
    for t in postgres.keys() {
        assert!(
            TABLES.iter().any(|s| s.name == t) || whole(tables::POSTGRES_ONLY, t),
            "PostgreSQL table {t} is neither copied into nor listed in POSTGRES_ONLY"
        );
    }
    for table in TABLES {
        let spec: BTreeSet<String> = table.cols.iter().map(|c| c.name.to_owned()).collect();
        let mut sqlite_cols = sqlite[table.name].clone();
        sqlite_cols.retain(|c| {
            !listed(tables::SQLITE_ONLY, table.name).is_some_and(|only| only.contains(c))
        });
        assert_eq!(spec, sqlite_cols, "SQLite columns of {}", table.name);
        let pg = &postgres[table.name];
        let pg_cols: BTreeSet<String> = pg
            .keys()
            .filter(|c| {
                !listed(tables::POSTGRES_ONLY, table.name).is_some_and(|only| only.contains(*c))
            })
            .cloned()
            .collect();
        assert_eq!(spec, pg_cols, "PostgreSQL columns of {}", table.name);
        for col in table.cols {
            let (ty, null) = &pg[col.name];
            let want = match col.kind {
                tables::Kind::Int2 => "smallint",
                tables::Kind::Int4 => "integer",
                tables::Kind::Int8 => "bigint",
                tables::Kind::Bool => "boolean",
                tables::Kind::Text => "text",
                tables::Kind::Bytea | tables::Kind::Wasm => "bytea",
                tables::Kind::Jsonb => "jsonb",
            };
            assert_eq!(ty, want, "type of {}.{}", table.name, col.name);
            assert_eq!(
                *null, col.null,
                "nullability of {}.{}",
                table.name, col.name
            );
        }
        for key in table.key {
            assert!(table.cols.iter().any(|c| c.name == *key), "{key}");
        }
    }
}

/// Copy speed on this machine: `cargo test --release -p spool-store migrate_copy::tests::speed --
/// --ignored --nocapture`. Never asserts on time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement, run by hand"]
async fn speed() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("spool.db");
    let store = SqliteStore::open(&db, StoreOptions::default()).unwrap();
    store.put_queue("q", &patch("{}")).await.unwrap();
    let total = 200_000;
    for chunk in 0..total / 1_000 {
        let batch = (0..1_000)
            .map(|i| NewMessage {
                payload: format!(
                    "{{\"order\": {}, \"note\": \"{}\"}}",
                    chunk * 1_000 + i,
                    "x".repeat(200)
                )
                .into_bytes(),
                headers: vec![("tenant".into(), "acme".into())],
                ..NewMessage::default()
            })
            .collect();
        store.enqueue("q", batch).await.unwrap();
    }
    drop(store);
    let url = empty_database().await;
    let report = copy(&db, &url, &CopyOptions::default()).await.unwrap();
    eprintln!(
        "copied {} messages in {} ms ({:.0} messages/s; whole run {} ms)",
        report.messages_copied,
        report.messages_ms,
        report.messages_copied as f64 * 1_000.0 / report.messages_ms.max(1) as f64,
        report.duration_ms
    );
}

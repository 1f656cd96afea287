use std::collections::HashSet;
use std::time::Duration;

use tempfile::TempDir;

use super::*;
use spool_model::{ErrorCategory, Settlement, Strategy, now_ms};

fn open_in(dir: &TempDir, opts: StoreOptions) -> SqliteStore {
    SqliteStore::open(&dir.path().join("spool.db"), opts).expect("open store")
}

fn patch(json: &str) -> QueueConfigPatch {
    serde_json::from_str(json).expect("patch json")
}

/// A store with one queue `q` configured by `config` (a JSON patch).
async fn setup(config: &str) -> (TempDir, SqliteStore) {
    setup_with(config, StoreOptions::default()).await
}

async fn setup_with(config: &str, opts: StoreOptions) -> (TempDir, SqliteStore) {
    let dir = TempDir::new().unwrap();
    let store = open_in(&dir, opts);
    store.put_queue("q", &patch(config)).await.unwrap();
    (dir, store)
}

fn msg(payload: &str) -> NewMessage {
    NewMessage {
        payload: payload.as_bytes().to_vec(),
        ..NewMessage::default()
    }
}

fn prio(payload: &str, priority: i32) -> NewMessage {
    NewMessage {
        priority,
        ..msg(payload)
    }
}

fn keyed(payload: &str, key: &str, supersede: bool) -> NewMessage {
    NewMessage {
        idempotency_key: Some(key.to_owned()),
        supersede,
        ..msg(payload)
    }
}

async fn enqueue_one(store: &SqliteStore, m: NewMessage) -> MessageId {
    store.enqueue("q", vec![m]).await.unwrap()[0].id
}

async fn claim_payloads(store: &SqliteStore, max: u32) -> Vec<String> {
    store
        .claim("q", max, 30_000)
        .await
        .unwrap()
        .messages
        .into_iter()
        .map(|c| String::from_utf8(c.payload).unwrap())
        .collect()
}

fn settle(id: MessageId, attempt: u32, settlement: Settlement) -> Settle {
    Settle {
        id,
        attempt,
        settlement,
        plugin_version: None,
        outbox: Vec::new(),
    }
}

async fn state_of(store: &SqliteStore, id: MessageId) -> MessageState {
    store.get_message(id).await.unwrap().state
}

// --- open / migrations -----------------------------------------------------------------------

#[tokio::test]
async fn migrations_are_idempotent_on_reopen_and_data_survives() {
    let dir = TempDir::new().unwrap();
    let id = {
        let store = open_in(&dir, StoreOptions::default());
        store.put_queue("q", &patch("{}")).await.unwrap();
        enqueue_one(&store, msg("kept")).await
    };
    // The drop above joined the writer; reopening applies no migration twice.
    let store = open_in(&dir, StoreOptions::default());
    let m = store.get_message(id).await.unwrap();
    assert_eq!(m.payload.as_deref(), Some(&b"kept"[..]));
    assert_eq!(m.state, MessageState::Ready);
    let conn = Connection::open(dir.path().join("spool.db")).unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, schema::SCHEMA_VERSION as i64);
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let dir = TempDir::new().unwrap();
    drop(open_in(&dir, StoreOptions::default()));
    let conn = Connection::open(dir.path().join("spool.db")).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = SqliteStore::open(&dir.path().join("spool.db"), StoreOptions::default())
        .expect_err("newer schema must be refused");
    let text = err.to_string();
    assert!(text.contains("99") && text.contains("newer"), "{text}");
}

#[tokio::test]
async fn the_breaker_migration_completes_stored_configs_and_keeps_their_values() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("spool.db");
    drop(open_in(&dir, StoreOptions::default()));
    {
        let store = open_in(&dir, StoreOptions::default());
        store
            .put_queue("q", &patch(r#"{"concurrency": 3}"#))
            .await
            .unwrap();
    }
    // As an older Spool stored it: no breaker keys.
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(
        "UPDATE queues SET config = json_remove(config, '$.breaker_failures', \
         '$.breaker_cooldown_ms', '$.breaker_max_cooldown_ms'); \
         DROP TABLE plugin_config; DROP TABLE plugin_grants; DROP TABLE plugin_chunks;",
    )
    .unwrap();
    // The breaker's migration and the two after it (plugin config, plugin chunks) run again.
    conn.pragma_update(None, "user_version", schema::SCHEMA_VERSION as i64 - 3)
        .unwrap();
    drop(conn);
    let store = open_in(&dir, StoreOptions::default());
    let q = store.get_queue("q").await.unwrap();
    assert_eq!(q.config.concurrency, 3);
    assert_eq!(q.config.breaker_failures, 0, "off, as before");
    let conn = Connection::open(&path).unwrap();
    let stored: String = conn
        .query_row("SELECT config FROM queues WHERE name = 'q'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(stored.contains("\"breaker_cooldown_ms\":5000"), "{stored}");
}

// --- queues ----------------------------------------------------------------------------------

#[tokio::test]
async fn put_queue_creates_then_patches_and_validates() {
    let dir = TempDir::new().unwrap();
    let store = open_in(&dir, StoreOptions::default());
    let (q, created) = store
        .put_queue("orders", &patch(r#"{"concurrency": 8}"#))
        .await
        .unwrap();
    assert!(created);
    assert_eq!(q.config.concurrency, 8);
    assert_eq!(q.config.max_attempts, 5);

    let (q, created) = store
        .put_queue("orders", &patch(r#"{"strategy": "lifo"}"#))
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(q.config.concurrency, 8, "unnamed fields are kept");
    assert_eq!(q.config.strategy, Strategy::Lifo);
    assert_eq!(store.get_queue("orders").await.unwrap().config, q.config);

    let err = store
        .put_queue("orders", &patch(r#"{"concurrency": 0}"#))
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Invalid(ref m) if m.contains("concurrency")),
        "{err}"
    );
    assert!(matches!(
        store.put_queue("bad/name", &patch("{}")).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.get_queue("nope").await,
        Err(StoreError::QueueNotFound(n)) if n == "nope"
    ));
    store.put_queue("alpha", &patch("{}")).await.unwrap();
    let names: Vec<String> = store
        .list_queues()
        .await
        .unwrap()
        .into_iter()
        .map(|q| q.name)
        .collect();
    assert_eq!(names, vec!["alpha", "orders"]);
}

// --- enqueue ---------------------------------------------------------------------------------

#[tokio::test]
async fn concurrent_single_enqueues_are_group_committed_with_distinct_ids() {
    let (_dir, store) = setup("{}").await;
    let mut tasks = Vec::new();
    for t in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..300 {
                let r = store
                    .enqueue("q", vec![msg(&format!("{t}-{i}"))])
                    .await
                    .unwrap();
                assert!(!r[0].existing);
                ids.push(r[0].id);
            }
            ids
        }));
    }
    let mut all = HashSet::new();
    for t in tasks {
        for id in t.await.unwrap() {
            assert!(all.insert(id), "duplicate id {id}");
        }
    }
    assert_eq!(all.len(), 4_800);
    let stats = store.queue_stats("q").await.unwrap();
    assert_eq!(stats.enqueued, 4_800);
    assert_eq!(stats.ready, 4_800);
}

#[tokio::test]
async fn a_batch_with_one_invalid_message_stores_nothing() {
    let (_dir, store) = setup("{}").await;
    let batch = vec![msg("a"), keyed("b", &"k".repeat(300), false), msg("c")];
    let err = store.enqueue("q", batch).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Invalid(ref m) if m.contains("idempotency_key")),
        "{err}"
    );
    let stats = store.queue_stats("q").await.unwrap();
    assert_eq!((stats.enqueued, stats.ready), (0, 0));
    let page = store
        .list_messages("q", &MessageFilter::default())
        .await
        .unwrap();
    assert!(page.items.is_empty());
    // The writer is fine afterwards, and a concurrent valid write in the same batch is kept.
    let (a, b) = tokio::join!(
        store.enqueue("q", vec![msg("ok")]),
        store.enqueue("q", vec![msg("x"), keyed("y", "", false)])
    );
    assert_eq!(a.unwrap().len(), 1);
    assert!(b.is_err());
    assert_eq!(store.queue_stats("q").await.unwrap().ready, 1);
}

#[tokio::test]
async fn large_batches_return_ids_in_order_with_keys_mixed_in() {
    let (_dir, store) = setup("{}").await;
    let existing = store
        .enqueue("q", vec![keyed("old", "k7", false)])
        .await
        .unwrap()[0]
        .id;
    // 101 messages cross several multi-row INSERT chunks; keyed ones split the chunks and one of
    // them (k7) is a duplicate of a stored message, another (k50) of an earlier one in the batch.
    let batch: Vec<NewMessage> = (0..101)
        .map(|i| match i {
            7 => keyed("dup-of-old", "k7", false),
            40 => keyed("m40", "k50", false),
            50 => keyed("dup-of-40", "k50", false),
            _ => msg(&format!("m{i}")),
        })
        .collect();
    let out = store.enqueue("q", batch).await.unwrap();
    assert_eq!(out.len(), 101);
    assert_eq!(
        out[7],
        Enqueued {
            id: existing,
            existing: true
        }
    );
    assert_eq!(
        out[50],
        Enqueued {
            id: out[40].id,
            existing: true
        }
    );
    for (i, e) in out.iter().enumerate() {
        if i == 7 || i == 50 {
            continue;
        }
        assert!(!e.existing, "{i}");
        let m = store.get_message(e.id).await.unwrap();
        assert_eq!(m.payload, Some(format!("m{i}").into_bytes()), "message {i}");
    }
    let fresh: HashSet<MessageId> = out.iter().filter(|e| !e.existing).map(|e| e.id).collect();
    assert_eq!(fresh.len(), 99);
    assert_eq!(store.queue_stats("q").await.unwrap().enqueued, 100);
}

#[tokio::test]
async fn enqueue_into_unknown_queue_fails() {
    let (_dir, store) = setup("{}").await;
    assert!(matches!(
        store.enqueue("missing", vec![msg("a")]).await,
        Err(StoreError::QueueNotFound(q)) if q == "missing"
    ));
    assert!(matches!(
        store.claim("missing", 1, 1_000).await,
        Err(StoreError::QueueNotFound(_))
    ));
}

#[tokio::test]
async fn enqueue_stores_all_fields() {
    let (_dir, store) = setup(r#"{"default_ttl_ms": 60000}"#).await;
    let before = now_ms();
    let id = enqueue_one(
        &store,
        NewMessage {
            payload: b"body".to_vec(),
            priority: 7,
            headers: vec![("a".into(), "1".into()), ("b".into(), "2".into())],
            topic: Some("orders.created".into()),
            correlation_id: Some("corr".into()),
            idempotency_key: Some("key-1".into()),
            ..NewMessage::default()
        },
    )
    .await;
    let m = store.get_message(id).await.unwrap();
    assert_eq!(m.queue, "q");
    assert_eq!(m.priority, 7);
    assert_eq!(
        m.headers,
        vec![("a".into(), "1".into()), ("b".into(), "2".into())]
    );
    assert_eq!(m.topic.as_deref(), Some("orders.created"));
    assert_eq!(m.correlation_id.as_deref(), Some("corr"));
    assert_eq!(m.idempotency_key.as_deref(), Some("key-1"));
    assert_eq!(m.attempts, 0);
    let ttl_end = m.expires_at.expect("default ttl applied");
    assert!(ttl_end >= before + 60_000 && ttl_end <= now_ms() + 60_000);

    let c = store.claim("q", 1, 5_000).await.unwrap().messages.remove(0);
    assert_eq!(c.id, id);
    assert_eq!(c.attempt, 1);
    assert_eq!(c.payload, b"body");
    assert_eq!(c.headers.len(), 2);
    assert_eq!(c.topic.as_deref(), Some("orders.created"));
    assert_eq!(c.correlation_id.as_deref(), Some("corr"));
    assert_eq!(c.enqueued_at, m.enqueued_at);
    assert!(c.lease_expires_at >= before + 5_000);
    let m = store.get_message(id).await.unwrap();
    assert_eq!(m.state, MessageState::Leased);
    assert_eq!(m.lease_expires_at, Some(c.lease_expires_at));
}

// --- ordering --------------------------------------------------------------------------------

#[tokio::test]
async fn priority_order_is_priority_then_fifo() {
    let (_dir, store) = setup("{}").await;
    store
        .enqueue(
            "q",
            vec![
                prio("low1", 0),
                prio("high1", 5),
                prio("low2", 0),
                prio("high2", 5),
                prio("neg", -3),
            ],
        )
        .await
        .unwrap();
    assert_eq!(
        claim_payloads(&store, 3).await,
        vec!["high1", "high2", "low1"]
    );
    assert_eq!(claim_payloads(&store, 10).await, vec!["low2", "neg"]);
}

#[tokio::test]
async fn fifo_and_lifo_ignore_priority() {
    let (_dir, store) = setup(r#"{"strategy": "fifo"}"#).await;
    store
        .enqueue("q", vec![prio("a", 0), prio("b", 9), prio("c", 0)])
        .await
        .unwrap();
    assert_eq!(claim_payloads(&store, 10).await, vec!["a", "b", "c"]);

    store
        .put_queue("q", &patch(r#"{"strategy": "lifo"}"#))
        .await
        .unwrap();
    store
        .enqueue("q", vec![prio("a", 0), prio("b", 9), prio("c", 0)])
        .await
        .unwrap();
    assert_eq!(claim_payloads(&store, 2).await, vec!["c", "b"]);
    assert_eq!(claim_payloads(&store, 2).await, vec!["a"]);
}

#[tokio::test]
async fn weighted_random_hands_out_everything_exactly_once() {
    let (_dir, store) = setup(r#"{"strategy": "weighted-random"}"#).await;
    let batch: Vec<NewMessage> = (0..300).map(|i| prio(&i.to_string(), i % 4)).collect();
    store.enqueue("q", batch).await.unwrap();
    let mut seen = HashSet::new();
    for _ in 0..100 {
        let got = claim_payloads(&store, 7).await;
        if got.is_empty() {
            break;
        }
        for p in got {
            assert!(seen.insert(p.clone()), "{p} handed out twice");
        }
    }
    let expected: HashSet<String> = (0..300).map(|i| i.to_string()).collect();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn weighted_random_favours_higher_priority() {
    let (_dir, store) = setup(r#"{"strategy": "weighted-random"}"#).await;
    let batch: Vec<NewMessage> = (0..100)
        .map(|i| {
            if i % 2 == 0 {
                prio("hi", 20)
            } else {
                prio("lo", 0)
            }
        })
        .collect();
    store.enqueue("q", batch).await.unwrap();
    let first = claim_payloads(&store, 20).await;
    let hi = first.iter().filter(|p| *p == "hi").count();
    // Weight 21 vs 1: drawing fewer than 14 of 20 high ones is practically impossible.
    assert!(hi >= 14, "only {hi} of 20 were high priority");
}

// --- delays, TTL -----------------------------------------------------------------------------

#[tokio::test]
async fn scheduled_messages_become_ready_when_due() {
    let (_dir, store) = setup("{}").await;
    let due = now_ms() + 150;
    let later = enqueue_one(
        &store,
        NewMessage {
            available_at: Some(due),
            ..msg("later")
        },
    )
    .await;
    let past = enqueue_one(
        &store,
        NewMessage {
            available_at: Some(now_ms() - 1_000),
            ..msg("past")
        },
    )
    .await;
    assert_eq!(state_of(&store, later).await, MessageState::Scheduled);
    assert_eq!(state_of(&store, past).await, MessageState::Ready);
    let stats = store.queue_stats("q").await.unwrap();
    assert_eq!((stats.scheduled, stats.ready), (1, 1));

    assert_eq!(claim_payloads(&store, 10).await, vec!["past"]);
    let empty = store.claim("q", 10, 1_000).await.unwrap();
    assert!(empty.messages.is_empty());
    assert_eq!(empty.next_due_at, Some(due));

    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(claim_payloads(&store, 10).await, vec!["later"]);
    let none = store.claim("q", 10, 1_000).await.unwrap();
    assert_eq!(none.next_due_at, None);
}

#[tokio::test]
async fn ttl_expires_unstarted_messages() {
    let (_dir, store) = setup("{}").await;
    let gone = enqueue_one(
        &store,
        NewMessage {
            expires_at: Some(now_ms() - 1),
            idempotency_key: Some("k".into()),
            ..msg("gone")
        },
    )
    .await;
    let stays = enqueue_one(
        &store,
        NewMessage {
            expires_at: Some(now_ms() + 60_000),
            ..msg("stays")
        },
    )
    .await;
    assert_eq!(claim_payloads(&store, 10).await, vec!["stays"]);
    let m = store.get_message(gone).await.unwrap();
    assert_eq!(m.state, MessageState::Expired);
    assert_eq!(m.idempotency_key, None, "the key is freed");
    assert!(m.finished_at.is_some());
    assert_eq!(state_of(&store, stays).await, MessageState::Leased);
    assert_eq!(store.queue_stats("q").await.unwrap().expired, 1);
    // The freed key makes a new message.
    let again = store
        .enqueue("q", vec![keyed("new", "k", false)])
        .await
        .unwrap();
    assert!(!again[0].existing);
    assert_ne!(again[0].id, gone);

    // maintain() expires across queues without a claim.
    store.put_queue("other", &patch("{}")).await.unwrap();
    store
        .enqueue(
            "other",
            vec![NewMessage {
                expires_at: Some(now_ms() - 1),
                ..msg("x")
            }],
        )
        .await
        .unwrap();
    let report = store.maintain().await.unwrap();
    assert_eq!(report.expired, 1);
    assert_eq!(store.queue_stats("other").await.unwrap().expired, 1);
}

#[tokio::test]
async fn ttl_does_not_expire_a_started_message_and_final_keys_stay_taken() {
    let (_dir, store) = setup("{}").await;
    let id = enqueue_one(
        &store,
        NewMessage {
            expires_at: Some(now_ms() + 100),
            idempotency_key: Some("once".into()),
            ..msg("m")
        },
    )
    .await;
    let c = store
        .claim("q", 1, 10_000)
        .await
        .unwrap()
        .messages
        .remove(0);
    let retry = Settlement::Retry {
        delay_ms: 0,
        error: "again".into(),
        category: ErrorCategory::Handler,
    };
    store
        .settle(vec![settle(id, c.attempt, retry)])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let c = store
        .claim("q", 1, 10_000)
        .await
        .unwrap()
        .messages
        .remove(0);
    assert_eq!(
        (c.id, c.attempt),
        (id, 2),
        "a retried message is not expired"
    );
    store
        .settle(vec![settle(id, 2, Settlement::Ack)])
        .await
        .unwrap();
    // An acked message keeps its key for the retention window: a supersede returns it as is.
    let again = store
        .enqueue("q", vec![keyed("replacement", "once", true)])
        .await
        .unwrap()[0];
    assert_eq!(again, Enqueued { id, existing: true });
    let m = store.get_message(id).await.unwrap();
    assert_eq!((m.state, m.payload), (MessageState::Acked, None));
    assert_eq!(store.queue_stats("q").await.unwrap().expired, 0);
}

// --- idempotency -----------------------------------------------------------------------------

#[tokio::test]
async fn idempotency_keys_deduplicate_and_supersede() {
    let (_dir, store) = setup("{}").await;
    let first = store
        .enqueue("q", vec![keyed("v1", "k", false)])
        .await
        .unwrap()[0];
    assert!(!first.existing);
    let dup = store
        .enqueue("q", vec![keyed("v2", "k", false)])
        .await
        .unwrap()[0];
    assert_eq!(
        dup,
        Enqueued {
            id: first.id,
            existing: true
        }
    );
    let m = store.get_message(first.id).await.unwrap();
    assert_eq!(
        m.payload.as_deref(),
        Some(&b"v1"[..]),
        "a plain duplicate changes nothing"
    );

    // Within one batch, in order: the second sees the first.
    let batch = store
        .enqueue("q", vec![keyed("a", "b1", false), keyed("a2", "b1", false)])
        .await
        .unwrap();
    assert!(!batch[0].existing && batch[1].existing);
    assert_eq!(batch[0].id, batch[1].id);

    // Supersede replaces a ready message, and may schedule it.
    let due = now_ms() + 60_000;
    let sup = store
        .enqueue(
            "q",
            vec![NewMessage {
                priority: 3,
                available_at: Some(due),
                headers: vec![("h".into(), "v".into())],
                ..keyed("v3", "k", true)
            }],
        )
        .await
        .unwrap()[0];
    assert_eq!(
        sup,
        Enqueued {
            id: first.id,
            existing: true
        }
    );
    let m = store.get_message(first.id).await.unwrap();
    assert_eq!(m.payload.as_deref(), Some(&b"v3"[..]));
    assert_eq!(m.priority, 3);
    assert_eq!(m.state, MessageState::Scheduled);
    assert_eq!(m.available_at, due);
    assert_eq!(m.headers, vec![("h".into(), "v".into())]);
    assert_eq!(store.queue_stats("q").await.unwrap().enqueued, 2);

    // A leased message is returned unchanged.
    let leased = store
        .enqueue("q", vec![keyed("L", "lk", false)])
        .await
        .unwrap()[0]
        .id;
    store
        .put_queue("q", &patch(r#"{"strategy": "lifo"}"#))
        .await
        .unwrap();
    let claimed = store.claim("q", 1, 10_000).await.unwrap().messages;
    assert_eq!(claimed[0].id, leased);
    let r = store
        .enqueue("q", vec![keyed("L2", "lk", true)])
        .await
        .unwrap()[0];
    assert_eq!(
        r,
        Enqueued {
            id: leased,
            existing: true
        }
    );
    assert_eq!(
        store.get_message(leased).await.unwrap().payload.as_deref(),
        Some(&b"L"[..])
    );

    // Cancelling frees the key.
    let c = store
        .enqueue("q", vec![keyed("c", "ck", false)])
        .await
        .unwrap()[0]
        .id;
    store.cancel(c).await.unwrap();
    let fresh = store
        .enqueue("q", vec![keyed("c2", "ck", false)])
        .await
        .unwrap()[0];
    assert!(!fresh.existing);
    assert_ne!(fresh.id, c);
}

#[tokio::test]
async fn idempotency_keys_are_scoped_per_producer() {
    let (_dir, store) = setup("{}").await;
    let scoped = |payload: &str, scope: Option<&str>, supersede: bool| NewMessage {
        idempotency_scope: scope.map(str::to_owned),
        ..keyed(payload, "k", supersede)
    };
    let p2 = enqueue_one(&store, scoped("p2", Some("p2"), false)).await;
    // Another producer with the same key gets its own message, and superseding touches only it.
    let p1 = store
        .enqueue("q", vec![scoped("p1", Some("p1"), false)])
        .await
        .unwrap()[0];
    assert!(!p1.existing);
    assert_ne!(p1.id, p2);
    let sup = store
        .enqueue("q", vec![scoped("p1-new", Some("p1"), true)])
        .await
        .unwrap()[0];
    assert_eq!(
        sup,
        Enqueued {
            id: p1.id,
            existing: true
        }
    );
    let payload = |id| {
        let store = &store;
        async move { store.get_message(id).await.unwrap().payload.unwrap() }
    };
    assert_eq!(payload(p2).await, b"p2");
    assert_eq!(payload(p1.id).await, b"p1-new");
    // The shared scope (admin, no tokens) is a third one, shared by everyone in it.
    let shared = enqueue_one(&store, scoped("s", None, false)).await;
    assert!(shared != p2 && shared != p1.id);
    let again = store
        .enqueue("q", vec![scoped("s2", None, true)])
        .await
        .unwrap()[0];
    assert_eq!(
        again,
        Enqueued {
            id: shared,
            existing: true
        }
    );
    assert_eq!(
        payload(p2).await,
        b"p2",
        "a shared-scope supersede leaves producers alone"
    );
    // Cancelling frees the key in its own scope only.
    store.cancel(p2).await.unwrap();
    let fresh = enqueue_one(&store, scoped("p2b", Some("p2"), false)).await;
    assert_ne!(fresh, p2);
    let kept = store
        .enqueue("q", vec![scoped("x", Some("p1"), false)])
        .await
        .unwrap()[0];
    assert_eq!(
        kept,
        Enqueued {
            id: p1.id,
            existing: true
        }
    );
}

// --- cancel ----------------------------------------------------------------------------------

#[tokio::test]
async fn cancel_in_each_state() {
    let (_dir, store) = setup("{}").await;
    let scheduled = enqueue_one(
        &store,
        NewMessage {
            available_at: Some(now_ms() + 60_000),
            ..msg("s")
        },
    )
    .await;
    assert_eq!(
        store.cancel(scheduled).await.unwrap(),
        MessageState::Cancelled
    );
    assert_eq!(state_of(&store, scheduled).await, MessageState::Cancelled);

    let ready = enqueue_one(&store, msg("r")).await;
    assert_eq!(store.cancel(ready).await.unwrap(), MessageState::Cancelled);
    assert!(matches!(
        store.cancel(ready).await,
        Err(StoreError::InvalidState { id, state: MessageState::Cancelled, action: "cancel" }) if id == ready
    ));

    let leased = enqueue_one(&store, msg("l")).await;
    let c = store
        .claim("q", 1, 10_000)
        .await
        .unwrap()
        .messages
        .remove(0);
    assert_eq!(c.id, leased);
    assert_eq!(store.cancel(leased).await.unwrap(), MessageState::Leased);
    assert_eq!(state_of(&store, leased).await, MessageState::Leased);
    let r = store
        .settle(vec![settle(leased, c.attempt, Settlement::Ack)])
        .await
        .unwrap();
    assert_eq!(r, vec![SettleResult::Cancelled]);
    assert_eq!(state_of(&store, leased).await, MessageState::Cancelled);

    let acked = enqueue_one(&store, msg("a")).await;
    let c = store
        .claim("q", 1, 10_000)
        .await
        .unwrap()
        .messages
        .remove(0);
    store
        .settle(vec![settle(acked, c.attempt, Settlement::Ack)])
        .await
        .unwrap();
    assert!(matches!(
        store.cancel(acked).await,
        Err(StoreError::InvalidState {
            state: MessageState::Acked,
            ..
        })
    ));
    assert!(matches!(
        store.cancel(999_999).await,
        Err(StoreError::MessageNotFound(999_999))
    ));
    assert_eq!(store.queue_stats("q").await.unwrap().cancelled, 3);
}

// --- requeue ---------------------------------------------------------------------------------

#[tokio::test]
async fn requeue_makes_delayed_and_backing_off_messages_ready() {
    let (_dir, store) = setup("{}").await;
    let delayed = enqueue_one(
        &store,
        NewMessage {
            available_at: Some(now_ms() + 3_600_000),
            ..msg("delayed")
        },
    )
    .await;
    let failing = enqueue_one(&store, msg("failing")).await;
    let c = store
        .claim("q", 1, 10_000)
        .await
        .unwrap()
        .messages
        .remove(0);
    assert_eq!(c.id, failing);
    let backoff = Settlement::Retry {
        delay_ms: 3_600_000,
        error: "down".into(),
        category: ErrorCategory::Handler,
    };
    store
        .settle(vec![settle(failing, c.attempt, backoff)])
        .await
        .unwrap();
    let stats = store.queue_stats("q").await.unwrap();
    assert_eq!((stats.scheduled, stats.ready), (2, 0));
    // Nothing is due for an hour: a claim finds nothing before the requeue.
    assert!(
        store
            .claim("q", 10, 10_000)
            .await
            .unwrap()
            .messages
            .is_empty()
    );

    let signal = store.signals().get("q");
    store.requeue(delayed).await.unwrap();
    // The permit the requeue left wakes a worker that starts waiting only now.
    tokio::time::timeout(Duration::from_secs(5), signal.notified())
        .await
        .expect("requeue wakes the queue");
    store.requeue(failing).await.unwrap();
    let stats = store.queue_stats("q").await.unwrap();
    assert_eq!((stats.scheduled, stats.ready), (0, 2));
    let m = store.get_message(failing).await.unwrap();
    assert_eq!((m.state, m.attempts), (MessageState::Ready, 1));
    assert_eq!(m.last_error.as_deref(), Some("down"));

    let mut claimed: Vec<_> = store
        .claim("q", 10, 10_000)
        .await
        .unwrap()
        .messages
        .into_iter()
        .map(|c| (c.id, c.attempt))
        .collect();
    claimed.sort_unstable();
    assert_eq!(claimed, vec![(delayed, 1), (failing, 2)]);
    let stats = store.queue_stats("q").await.unwrap();
    assert_eq!((stats.scheduled, stats.ready, stats.leased), (0, 0, 2));
}

#[tokio::test]
async fn requeue_refuses_other_states_and_changes_nothing() {
    let (_dir, store) = setup("{}").await;
    let leased = enqueue_one(&store, msg("l")).await;
    assert_eq!(
        store.claim("q", 1, 10_000).await.unwrap().messages[0].id,
        leased
    );
    let ready = enqueue_one(&store, msg("r")).await;
    let cancelled = enqueue_one(&store, msg("c")).await;
    store.cancel(cancelled).await.unwrap();
    let depths = |s: QueueStats| (s.scheduled, s.ready, s.leased, s.cancelled);
    let before = depths(store.queue_stats("q").await.unwrap());
    for (id, state) in [
        (leased, MessageState::Leased),
        (ready, MessageState::Ready),
        (cancelled, MessageState::Cancelled),
    ] {
        assert!(
            matches!(
                store.requeue(id).await,
                Err(StoreError::InvalidState { id: i, state: s, .. }) if i == id && s == state
            ),
            "requeue of a {state} message"
        );
    }
    assert!(matches!(
        store.requeue(999_999).await,
        Err(StoreError::MessageNotFound(999_999))
    ));
    assert_eq!(depths(store.queue_stats("q").await.unwrap()), before);
}

// --- settle ----------------------------------------------------------------------------------

#[tokio::test]
async fn settle_is_fenced_by_attempt() {
    let (_dir, store) = setup("{}").await;
    let id = enqueue_one(&store, msg("m")).await;
    let c = store
        .claim("q", 1, 10_000)
        .await
        .unwrap()
        .messages
        .remove(0);
    assert_eq!(c.attempt, 1);
    let r = store
        .settle(vec![
            settle(id, 7, Settlement::Ack),
            settle(424_242, 1, Settlement::Ack),
            settle(id, 1, Settlement::Ack),
            settle(id, 1, Settlement::Ack),
        ])
        .await
        .unwrap();
    assert_eq!(
        r,
        vec![
            SettleResult::LeaseLost,
            SettleResult::LeaseLost,
            SettleResult::Applied,
            SettleResult::LeaseLost
        ]
    );
    assert!(!store.extend_lease(id, 1, 10_000).await.unwrap());
    assert_eq!(store.queue_stats("q").await.unwrap().acked, 1);
}

#[tokio::test]
async fn ack_keeps_a_payload_free_record_with_plugin_version() {
    let (_dir, store) = setup("{}").await;
    let id = enqueue_one(&store, msg("m")).await;
    let c = store
        .claim("q", 1, 10_000)
        .await
        .unwrap()
        .messages
        .remove(0);
    let mut s = settle(id, c.attempt, Settlement::Ack);
    s.plugin_version = Some("echo@3".into());
    assert_eq!(
        store.settle(vec![s]).await.unwrap(),
        vec![SettleResult::Applied]
    );
    let m = store.get_message(id).await.unwrap();
    assert_eq!(m.state, MessageState::Acked);
    assert_eq!(m.payload, None);
    assert!(m.finished_at.is_some());
    assert_eq!(m.lease_expires_at, None);
    assert_eq!(m.plugin_version.as_deref(), Some("echo@3"));
    let stats = store.queue_stats("q").await.unwrap();
    assert_eq!((stats.acked, stats.leased, stats.ready), (1, 0, 0));
}

#[tokio::test]
async fn zero_acked_retention_deletes_on_ack() {
    let opts = StoreOptions {
        acked_retention_ms: 0,
        ..StoreOptions::default()
    };
    let (_dir, store) = setup_with("{}", opts).await;
    let id = enqueue_one(&store, msg("m")).await;
    let c = store
        .claim("q", 1, 10_000)
        .await
        .unwrap()
        .messages
        .remove(0);
    store
        .settle(vec![settle(id, c.attempt, Settlement::Ack)])
        .await
        .unwrap();
    assert!(matches!(
        store.get_message(id).await,
        Err(StoreError::MessageNotFound(_))
    ));
    assert_eq!(store.queue_stats("q").await.unwrap().acked, 1);
    // Ids are never reused after a delete.
    let next = enqueue_one(&store, msg("n")).await;
    assert!(next > id);
}

#[tokio::test]
async fn retry_dead_and_release_move_messages_and_count() {
    let (_dir, store) = setup("{}").await;
    let id = enqueue_one(&store, msg("m")).await;

    let c = store
        .claim("q", 1, 10_000)
        .await
        .unwrap()
        .messages
        .remove(0);
    let retry = Settlement::Retry {
        delay_ms: 0,
        error: "boom".into(),
        category: ErrorCategory::Handler,
    };
    store
        .settle(vec![settle(id, c.attempt, retry)])
        .await
        .unwrap();
    let m = store.get_message(id).await.unwrap();
    assert_eq!((m.state, m.attempts), (MessageState::Ready, 1));
    assert_eq!(m.last_error.as_deref(), Some("boom"));
    assert_eq!(m.error_category, Some(ErrorCategory::Handler));

    let c = store
        .claim("q", 1, 10_000)
        .await
        .unwrap()
        .messages
        .remove(0);
    assert_eq!(c.attempt, 2);
    let delayed = Settlement::Retry {
        delay_ms: 60_000,
        error: "later".into(),
        category: ErrorCategory::Timeout,
    };
    store.settle(vec![settle(id, 2, delayed)]).await.unwrap();
    let m = store.get_message(id).await.unwrap();
    assert_eq!(m.state, MessageState::Scheduled);
    assert!(m.available_at >= now_ms() + 59_000);
    let empty = store.claim("q", 1, 10_000).await.unwrap();
    assert!(empty.messages.is_empty());
    assert_eq!(empty.next_due_at, Some(m.available_at));

    // Release gives the attempt back.
    let other = enqueue_one(&store, msg("o")).await;
    let c = store
        .claim("q", 1, 10_000)
        .await
        .unwrap()
        .messages
        .remove(0);
    assert_eq!((c.id, c.attempt), (other, 1));
    store
        .settle(vec![settle(other, 1, Settlement::Release)])
        .await
        .unwrap();
    let m = store.get_message(other).await.unwrap();
    assert_eq!(
        (m.state, m.attempts, m.lease_expires_at),
        (MessageState::Ready, 0, None)
    );

    let c = store
        .claim("q", 1, 10_000)
        .await
        .unwrap()
        .messages
        .remove(0);
    assert_eq!(c.attempt, 1);
    let dead = Settlement::Dead {
        error: "fatal".into(),
        category: ErrorCategory::Trap,
    };
    store.settle(vec![settle(other, 1, dead)]).await.unwrap();
    let m = store.get_message(other).await.unwrap();
    assert_eq!(m.state, MessageState::Dead);
    assert_eq!(m.error_category, Some(ErrorCategory::Trap));
    assert!(m.finished_at.is_some());

    let stats = store.queue_stats("q").await.unwrap();
    assert_eq!(stats.retried, 2);
    assert_eq!(stats.dead, 1);
    assert_eq!(stats.dlq_depth, 1);
    assert_eq!(stats.scheduled, 1);
    assert_eq!(stats.enqueued, 2);
}

#[tokio::test]
async fn extend_lease_is_fenced() {
    let (_dir, store) = setup("{}").await;
    let id = enqueue_one(&store, msg("m")).await;
    let c = store.claim("q", 1, 1_000).await.unwrap().messages.remove(0);
    assert!(store.extend_lease(id, c.attempt, 60_000).await.unwrap());
    let m = store.get_message(id).await.unwrap();
    assert!(m.lease_expires_at.unwrap() >= now_ms() + 59_000);
    assert!(!store.extend_lease(id, c.attempt + 1, 60_000).await.unwrap());
}

// --- maintenance -----------------------------------------------------------------------------

#[tokio::test]
async fn maintain_recovers_expired_leases() {
    let (_dir, store) = setup(r#"{"max_attempts": 2}"#).await;
    let id = enqueue_one(&store, msg("m")).await;
    let cancelled = enqueue_one(&store, msg("c")).await;
    let first = store.claim("q", 2, 250).await.unwrap().messages;
    assert_eq!(first.len(), 2);
    store.cancel(cancelled).await.unwrap();
    let before = store.maintain().await.unwrap();
    assert_eq!(before.leases_recovered, 0, "leases not yet expired");

    tokio::time::sleep(Duration::from_millis(350)).await;
    let report = store.maintain().await.unwrap();
    assert_eq!(report.leases_recovered, 1);
    assert_eq!(state_of(&store, cancelled).await, MessageState::Cancelled);
    let m = store.get_message(id).await.unwrap();
    assert_eq!((m.state, m.attempts), (MessageState::Ready, 1));
    assert_eq!(m.error_category, Some(ErrorCategory::LeaseExpired));
    // A late settle of the lost lease is ignored once it is re-claimed.
    let c = store.claim("q", 1, 250).await.unwrap().messages.remove(0);
    assert_eq!(c.attempt, 2);
    assert_eq!(
        store
            .settle(vec![settle(id, 1, Settlement::Ack)])
            .await
            .unwrap(),
        vec![SettleResult::LeaseLost]
    );

    tokio::time::sleep(Duration::from_millis(350)).await;
    let report = store.maintain().await.unwrap();
    assert_eq!((report.leases_recovered, report.leases_dead), (0, 1));
    let m = store.get_message(id).await.unwrap();
    assert_eq!(m.state, MessageState::Dead);
    assert_eq!(m.error_category, Some(ErrorCategory::LeaseExpired));
    assert_eq!(
        m.last_error.as_deref(),
        Some("lease expired 2 times (handler host died or stalled)")
    );
    let stats = store.queue_stats("q").await.unwrap();
    assert_eq!((stats.dead, stats.cancelled, stats.leased), (1, 1, 0));
}

#[tokio::test]
async fn maintain_applies_retention_windows() {
    let opts = StoreOptions {
        acked_retention_ms: 250,
        dead_retention_ms: 250,
        sync_full: true,
        ..StoreOptions::default()
    };
    let (_dir, store) = setup_with("{}", opts).await;
    let acked = enqueue_one(&store, msg("a")).await;
    let dead = enqueue_one(&store, msg("d")).await;
    let unreviewed = enqueue_one(&store, msg("u")).await;
    let claimed = store.claim("q", 3, 10_000).await.unwrap().messages;
    assert_eq!(claimed.len(), 3);
    let dl = || Settlement::Dead {
        error: "x".into(),
        category: ErrorCategory::Handler,
    };
    store
        .settle(vec![
            settle(acked, 1, Settlement::Ack),
            settle(dead, 1, dl()),
            settle(unreviewed, 1, dl()),
        ])
        .await
        .unwrap();
    store.mark_reviewed(dead).await.unwrap();
    let early = store.maintain().await.unwrap();
    assert_eq!((early.acked_purged, early.dead_purged), (0, 0));
    tokio::time::sleep(Duration::from_millis(350)).await;
    let report = store.maintain().await.unwrap();
    assert_eq!((report.acked_purged, report.dead_purged), (1, 1));
    assert!(store.get_message(acked).await.is_err());
    assert!(store.get_message(dead).await.is_err());
    assert_eq!(state_of(&store, unreviewed).await, MessageState::Dead);
}

// --- dead-letter queue -----------------------------------------------------------------------

#[tokio::test]
async fn dlq_list_filter_paginate_replay_review_purge() {
    let (_dir, store) = setup("{}").await;
    store.put_queue("other", &patch("{}")).await.unwrap();
    let mut dead = Vec::new();
    for i in 0..5 {
        let category = if i % 2 == 0 {
            ErrorCategory::Trap
        } else {
            ErrorCategory::Fuel
        };
        let id = enqueue_one(&store, msg(&format!("d{i}"))).await;
        let c = store
            .claim("q", 1, 10_000)
            .await
            .unwrap()
            .messages
            .remove(0);
        let s = Settlement::Dead {
            error: format!("err {i}"),
            category,
        };
        store
            .settle(vec![settle(c.id, c.attempt, s)])
            .await
            .unwrap();
        dead.push(id);
    }
    let other_id = store.enqueue("other", vec![msg("o")]).await.unwrap()[0].id;
    let c = store
        .claim("other", 1, 10_000)
        .await
        .unwrap()
        .messages
        .remove(0);
    let s = Settlement::Dead {
        error: "e".into(),
        category: ErrorCategory::Trap,
    };
    store
        .settle(vec![settle(c.id, c.attempt, s)])
        .await
        .unwrap();

    // Pagination over everything, two at a time.
    let mut ids = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list_dead(&DeadFilter {
                limit: 2,
                cursor: cursor.clone(),
                ..DeadFilter::default()
            })
            .await
            .unwrap();
        ids.extend(page.items.iter().map(|m| m.id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let mut expected = dead.clone();
    expected.push(other_id);
    assert_eq!(ids, expected);

    let by_queue = store
        .list_dead(&DeadFilter {
            queue: Some("q".into()),
            category: Some(ErrorCategory::Trap),
            ..DeadFilter::default()
        })
        .await
        .unwrap();
    let got: Vec<MessageId> = by_queue.items.iter().map(|m| m.id).collect();
    assert_eq!(got, vec![dead[0], dead[2], dead[4]]);
    assert_eq!(by_queue.items[0].last_error.as_deref(), Some("err 0"));
    assert!(matches!(
        store
            .list_dead(&DeadFilter {
                queue: Some("nope".into()),
                ..DeadFilter::default()
            })
            .await,
        Err(StoreError::QueueNotFound(_))
    ));

    store.mark_reviewed(dead[1]).await.unwrap();
    let reviewed = store
        .list_dead(&DeadFilter {
            reviewed: Some(true),
            ..DeadFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(reviewed.items.len(), 1);
    assert_eq!(reviewed.items[0].id, dead[1]);
    assert!(reviewed.items[0].reviewed_at.is_some());
    let unreviewed = store
        .list_dead(&DeadFilter {
            reviewed: Some(false),
            ..DeadFilter::default()
        })
        .await
        .unwrap();
    assert_eq!(unreviewed.items.len(), 5);

    store.replay_dead(dead[1]).await.unwrap();
    let m = store.get_message(dead[1]).await.unwrap();
    assert_eq!(
        (m.state, m.attempts, m.reviewed_at),
        (MessageState::Ready, 0, None)
    );
    let c = store
        .claim("q", 1, 10_000)
        .await
        .unwrap()
        .messages
        .remove(0);
    assert_eq!((c.id, c.attempt), (dead[1], 1));
    assert_eq!(c.payload, b"d1");

    store.purge_dead(dead[0]).await.unwrap();
    assert!(matches!(
        store.get_message(dead[0]).await,
        Err(StoreError::MessageNotFound(_))
    ));
    // Non-dead ids are not dead letters.
    for id in [dead[0], dead[1], 987_654] {
        assert!(
            matches!(store.replay_dead(id).await, Err(StoreError::DeadLetterNotFound(x)) if x == id)
        );
        assert!(matches!(
            store.mark_reviewed(id).await,
            Err(StoreError::DeadLetterNotFound(_))
        ));
        assert!(matches!(
            store.purge_dead(id).await,
            Err(StoreError::DeadLetterNotFound(_))
        ));
    }
    assert_eq!(store.queue_stats("q").await.unwrap().dlq_depth, 3);
    assert!(matches!(
        store
            .list_dead(&DeadFilter {
                cursor: Some("not-a-cursor".into()),
                ..DeadFilter::default()
            })
            .await,
        Err(StoreError::InvalidCursor(_))
    ));
}

// --- listing ---------------------------------------------------------------------------------

#[tokio::test]
async fn list_messages_pages_exactly_once_while_inserting() {
    let (_dir, store) = setup("{}").await;
    store.put_queue("noise", &patch("{}")).await.unwrap();
    let mut expected = Vec::new();
    for i in 0..25 {
        expected.push(enqueue_one(&store, msg(&format!("m{i}"))).await);
        store.enqueue("noise", vec![msg("n")]).await.unwrap();
    }
    // Some in other states, so the per-state merge is exercised.
    store.claim("q", 3, 10_000).await.unwrap();
    store.cancel(expected[10]).await.unwrap();

    let mut seen = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = store
            .list_messages(
                "q",
                &MessageFilter {
                    limit: 4,
                    cursor: cursor.clone(),
                    ..MessageFilter::default()
                },
            )
            .await
            .unwrap();
        pages += 1;
        assert!(page.items.len() <= 4);
        seen.extend(page.items.iter().map(|m| m.id));
        if pages <= 3 {
            // Producers keep adding while someone pages through.
            for _ in 0..2 {
                expected.push(enqueue_one(&store, msg("late")).await);
            }
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let unique: HashSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "no item twice");
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "ascending ids");
    assert_eq!(
        seen, expected,
        "every item, including those added meanwhile"
    );

    let leased = store
        .list_messages(
            "q",
            &MessageFilter {
                state: Some(MessageState::Leased),
                ..MessageFilter::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(
        leased.items.iter().map(|m| m.id).collect::<Vec<_>>(),
        expected[..3].to_vec()
    );
    assert!(matches!(
        store
            .list_messages(
                "q",
                &MessageFilter {
                    cursor: Some("zz".into()),
                    ..MessageFilter::default()
                }
            )
            .await,
        Err(StoreError::InvalidCursor(_))
    ));
    assert!(matches!(
        store.list_messages("nope", &MessageFilter::default()).await,
        Err(StoreError::QueueNotFound(_))
    ));
}

// --- paused queues and signals ---------------------------------------------------------------

#[tokio::test]
async fn paused_queue_hands_out_nothing_and_signals_fire() {
    let (_dir, store) = setup(r#"{"paused": true}"#).await;
    let signal = store.signals().get("q");
    enqueue_one(&store, msg("m")).await;
    tokio::time::timeout(Duration::from_secs(2), signal.notified())
        .await
        .expect("enqueue signals the queue");
    assert!(
        store
            .claim("q", 10, 1_000)
            .await
            .unwrap()
            .messages
            .is_empty()
    );
    store
        .put_queue("q", &patch(r#"{"paused": false}"#))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(2), signal.notified())
        .await
        .expect("unpausing signals the queue");
    assert_eq!(claim_payloads(&store, 10).await, vec!["m"]);
}

// --- queue deletion -------------------------------------------------------------------------

#[tokio::test]
async fn delete_queue_refuses_live_messages_unless_forced() {
    let (_dir, store) = setup("{}").await;
    let leased = enqueue_one(&store, keyed("leased", "k", false)).await;
    let dead = enqueue_one(&store, msg("dead")).await;
    let mut claimed = store.claim("q", 2, 30_000).await.unwrap().messages;
    let d = claimed.pop().unwrap();
    let c = claimed.pop().unwrap();
    assert_eq!((c.id, d.id), (leased, dead));
    enqueue_one(&store, msg("ready")).await;
    enqueue_one(
        &store,
        NewMessage {
            delay_ms: Some(60_000),
            ..msg("scheduled")
        },
    )
    .await;
    let fail = Settlement::Dead {
        error: "x".into(),
        category: ErrorCategory::Trap,
    };
    store
        .settle(vec![settle(dead, d.attempt, fail)])
        .await
        .unwrap();

    let before = store.queue_stats("q").await.unwrap();
    let err = store.delete_queue("q", false).await.unwrap_err();
    match &err {
        StoreError::QueueNotEmpty {
            queue,
            scheduled,
            ready,
            leased,
        } => {
            assert_eq!(queue, "q");
            assert_eq!((*scheduled, *ready, *leased), (1, 1, 1));
        }
        other => panic!("expected QueueNotEmpty, got {other:?}"),
    }
    assert!(err.to_string().contains("--force"), "{err}");
    let after = store.queue_stats("q").await.unwrap();
    let depths = |s: &QueueStats| (s.scheduled, s.ready, s.leased, s.dlq_depth, s.enqueued);
    assert_eq!(
        depths(&after),
        depths(&before),
        "a refused delete changes nothing"
    );

    let deleted = store.delete_queue("q", true).await.unwrap();
    assert_eq!(
        (
            deleted.scheduled,
            deleted.ready,
            deleted.leased,
            deleted.dead,
            deleted.total()
        ),
        (1, 1, 1, 1, 4)
    );
    assert!(matches!(
        store.get_queue("q").await,
        Err(StoreError::QueueNotFound(_))
    ));
    assert!(matches!(
        store.get_message(dead).await,
        Err(StoreError::MessageNotFound(_))
    ));
    assert!(
        store
            .list_dead(&DeadFilter::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    // The worker still running the leased message finds it gone: a lost lease, a no-op.
    assert!(!store.extend_lease(leased, c.attempt, 30_000).await.unwrap());
    assert_eq!(
        store
            .settle(vec![settle(leased, c.attempt, Settlement::Ack)])
            .await
            .unwrap(),
        vec![SettleResult::LeaseLost]
    );
    assert!(matches!(
        store.delete_queue("q", true).await,
        Err(StoreError::QueueNotFound(_))
    ));

    // A queue created again under the name starts empty: no totals, the key is free.
    store.put_queue("q", &patch("{}")).await.unwrap();
    let stats = store.queue_stats("q").await.unwrap();
    assert_eq!((stats.enqueued, stats.dead, stats.dlq_depth), (0, 0, 0));
    let fresh = store
        .enqueue("q", vec![keyed("new", "k", false)])
        .await
        .unwrap();
    assert!(
        !fresh[0].existing,
        "the deleted message's idempotency key is free"
    );
    assert_ne!(fresh[0].id, leased, "ids are never reused");
}

#[tokio::test]
async fn delete_queue_without_live_messages_reports_the_records_it_removes() {
    let (_dir, store) = setup("{}").await;
    store.put_queue("other", &patch("{}")).await.unwrap();
    let kept = store.enqueue("other", vec![msg("stays")]).await.unwrap()[0].id;
    let id = enqueue_one(&store, msg("done")).await;
    let c = store
        .claim("q", 1, 30_000)
        .await
        .unwrap()
        .messages
        .remove(0);
    store
        .settle(vec![settle(id, c.attempt, Settlement::Ack)])
        .await
        .unwrap();
    let cancelled = enqueue_one(&store, msg("cancelled")).await;
    store.cancel(cancelled).await.unwrap();

    let deleted = store.delete_queue("q", false).await.unwrap();
    assert_eq!(
        (deleted.acked, deleted.cancelled, deleted.total()),
        (1, 1, 2)
    );
    assert_eq!(
        state_of(&store, kept).await,
        MessageState::Ready,
        "other queues untouched"
    );
    let names: Vec<String> = store
        .list_queues()
        .await
        .unwrap()
        .into_iter()
        .map(|q| q.name)
        .collect();
    assert_eq!(names, vec!["other"]);
}

#[tokio::test]
async fn a_requested_retry_records_no_error_and_keeps_the_last_real_one() {
    let (_dir, store) = setup("{}").await;
    let id = enqueue_one(&store, msg("m")).await;
    let c = store
        .claim("q", 1, 30_000)
        .await
        .unwrap()
        .messages
        .remove(0);
    let again = Settlement::RetryRequested { delay_ms: 0 };
    store
        .settle(vec![settle(id, c.attempt, again.clone())])
        .await
        .unwrap();
    let m = store.get_message(id).await.unwrap();
    assert_eq!((m.state, m.attempts), (MessageState::Ready, 1));
    assert_eq!((m.last_error, m.error_category), (None, None));
    assert_eq!(store.queue_stats("q").await.unwrap().retried, 1);

    let c = store
        .claim("q", 1, 30_000)
        .await
        .unwrap()
        .messages
        .remove(0);
    let trap = Settlement::Retry {
        delay_ms: 0,
        error: "trapped".into(),
        category: ErrorCategory::Trap,
    };
    store
        .settle(vec![settle(id, c.attempt, trap)])
        .await
        .unwrap();
    let c = store
        .claim("q", 1, 30_000)
        .await
        .unwrap()
        .messages
        .remove(0);
    let later = Settlement::RetryRequested { delay_ms: 60_000 };
    store
        .settle(vec![settle(id, c.attempt, later)])
        .await
        .unwrap();
    let m = store.get_message(id).await.unwrap();
    assert_eq!(m.state, MessageState::Scheduled);
    assert_eq!(
        m.last_error.as_deref(),
        Some("trapped"),
        "the last real failure stays"
    );
    assert_eq!(store.queue_stats("q").await.unwrap().retried, 3);
}

// --- plugins and kv --------------------------------------------------------------------------

fn sha(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

#[tokio::test]
async fn plugin_versions_activation_and_rollback() {
    let dir = TempDir::new().unwrap();
    let store = open_in(&dir, StoreOptions::default());
    assert!(matches!(
        store.active_plugin("echo").await,
        Err(StoreError::PluginNotFound(_))
    ));
    assert!(matches!(
        store.rollback_plugin("echo", None).await,
        Err(StoreError::PluginNotFound(_))
    ));
    let v1 = store
        .put_plugin("echo", "handler", &sha(1), b"wasm-1".to_vec(), None)
        .await
        .unwrap()
        .version;
    assert_eq!((v1.version, v1.active, v1.size), (1, true, 6));
    assert!(matches!(
        store.rollback_plugin("echo", None).await,
        Err(StoreError::NoPreviousVersion(_))
    ));
    let same = store
        .put_plugin("echo", "handler", &sha(1), b"wasm-1".to_vec(), None)
        .await
        .unwrap();
    assert!(!same.new_version);
    assert_eq!(
        same.version, v1,
        "same bytes as the active version: unchanged"
    );
    let v2 = store
        .put_plugin("echo", "handler", &sha(2), b"wasm-2".to_vec(), None)
        .await
        .unwrap()
        .version;
    assert_eq!(v2.version, 2);
    let (active, bytes) = store.active_plugin("echo").await.unwrap();
    assert_eq!((active.version, bytes), (2, b"wasm-2".to_vec()));

    let back = store.rollback_plugin("echo", None).await.unwrap();
    assert_eq!((back.version, back.sha256.clone()), (1, sha(1)));
    let (active, bytes) = store.active_plugin("echo").await.unwrap();
    assert_eq!((active.version, bytes), (1, b"wasm-1".to_vec()));

    let v3 = store
        .put_plugin("echo", "handler", &sha(3), b"wasm-3".to_vec(), None)
        .await
        .unwrap()
        .version;
    assert_eq!(v3.version, 3, "versions only grow");
    store
        .put_plugin("filter-a", "filter", &sha(4), b"f".to_vec(), None)
        .await
        .unwrap();
    let list: Vec<(String, u32, bool)> = store
        .list_plugins()
        .await
        .unwrap()
        .into_iter()
        .map(|p| (p.name, p.version, p.active))
        .collect();
    assert_eq!(
        list,
        vec![
            ("echo".into(), 1, false),
            ("echo".into(), 2, false),
            ("echo".into(), 3, true),
            ("filter-a".into(), 1, true)
        ]
    );
    assert!(matches!(
        store
            .put_plugin("bad name", "handler", &sha(5), b"x".to_vec(), None)
            .await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.put_plugin("echo", "handler", "abc", b"x".to_vec(), None).await,
        Err(StoreError::Invalid(m)) if m.contains("sha256")
    ));
}

/// The actions and actors of `name`'s history, oldest first.
async fn history(
    store: &SqliteStore,
    name: &str,
) -> Vec<(String, Option<String>, Option<u32>, u32)> {
    store
        .plugin_history(name)
        .await
        .unwrap()
        .into_iter()
        .map(|h| {
            (
                h.action.as_str().to_owned(),
                h.actor,
                h.from_version,
                h.to_version,
            )
        })
        .collect()
}

#[tokio::test]
async fn same_bytes_reactivate_their_version_and_any_version_can_be_activated() {
    let dir = TempDir::new().unwrap();
    let store = open_in(&dir, StoreOptions::default());
    let put = |sha_n: u8, actor: Option<&'static str>| {
        let store = store.clone();
        async move {
            store
                .put_plugin("p", "handler", &sha(sha_n), vec![sha_n], actor)
                .await
                .unwrap()
        }
    };
    assert!(put(1, Some("ci")).await.new_version);
    assert!(put(2, Some("ci")).await.new_version);
    let again = put(1, None).await;
    assert!(!again.new_version, "the bytes of version 1: no copy");
    assert_eq!((again.version.version, again.version.active), (1, true));
    let (active, bytes) = store.active_plugin("p").await.unwrap();
    assert_eq!((active.version, bytes), (1, vec![1]));
    assert_eq!(
        store.list_plugins().await.unwrap().len(),
        2,
        "nothing was copied"
    );

    let v = store.activate_plugin("p", 2, Some("ops")).await.unwrap();
    assert_eq!((v.version, v.active), (2, true));
    assert_eq!(store.active_plugin("p").await.unwrap().0.version, 2);
    let same = store.activate_plugin("p", 2, Some("ops")).await.unwrap();
    assert_eq!(
        same.version, 2,
        "activating the active version changes nothing"
    );
    assert!(matches!(
        store.activate_plugin("p", 9, None).await,
        Err(StoreError::PluginVersionNotFound { version: 9, .. })
    ));
    assert!(matches!(
        store.activate_plugin("nope", 1, None).await,
        Err(StoreError::PluginNotFound(_))
    ));
    store.rollback_plugin("p", Some("ops")).await.unwrap();

    let d = |a: &str, who: Option<&str>, from: Option<u32>, to: u32| {
        (a.to_owned(), who.map(str::to_owned), from, to)
    };
    assert_eq!(
        history(&store, "p").await,
        vec![
            d("deploy", Some("ci"), None, 1),
            d("deploy", Some("ci"), Some(1), 2),
            d("deploy", None, Some(2), 1),
            d("activate", Some("ops"), Some(1), 2),
            d("rollback", Some("ops"), Some(2), 1),
        ]
    );
    let first = &store.plugin_history("p").await.unwrap()[0];
    assert!((now_ms() - first.at).abs() < 60_000, "{first:?}");
    assert!(matches!(
        store.plugin_history("nope").await,
        Err(StoreError::PluginNotFound(_))
    ));
}

#[tokio::test]
async fn a_queue_handler_must_be_a_handler_plugin() {
    let dir = TempDir::new().unwrap();
    let store = open_in(&dir, StoreOptions::default());
    store
        .put_plugin("f", "filter", &sha(1), b"f".to_vec(), None)
        .await
        .unwrap();
    let err = store
        .put_queue("q", &patch(r#"{"handler": "f"}"#))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::WrongWorld(m) if m.contains("filter") && m.contains("\"f\"")),
        "{err}"
    );
    assert!(
        matches!(
            store.get_queue("q").await,
            Err(StoreError::QueueNotFound(_))
        ),
        "a refused PUT creates nothing"
    );
    // Not deployed yet: allowed (deploy-later), and the later deploy is checked instead.
    store
        .put_queue("q", &patch(r#"{"handler": "later"}"#))
        .await
        .unwrap();
    let err = store
        .put_plugin("later", "filter", &sha(2), b"l".to_vec(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::WrongWorld(m) if m.contains("queue(s) q")),
        "{err}"
    );
    assert!(
        store
            .list_plugins()
            .await
            .unwrap()
            .iter()
            .all(|p| p.name != "later")
    );

    // A plugin with a filter version 1 and a handler version 2, used by the queue: neither a
    // rollback nor an activation may bring the filter back.
    store
        .put_queue("q", &patch(r#"{"handler": null}"#))
        .await
        .unwrap();
    store
        .put_plugin("h", "filter", &sha(3), b"h1".to_vec(), None)
        .await
        .unwrap();
    store
        .put_plugin("h", "handler", &sha(4), b"h2".to_vec(), None)
        .await
        .unwrap();
    store
        .put_queue("q", &patch(r#"{"handler": "h"}"#))
        .await
        .unwrap();
    for result in [
        store.rollback_plugin("h", None).await,
        store.activate_plugin("h", 1, None).await,
        store
            .put_plugin("h", "filter", &sha(3), b"h1".to_vec(), None)
            .await
            .map(|d| d.version),
    ] {
        assert!(
            matches!(&result, Err(StoreError::WrongWorld(_))),
            "{result:?}"
        );
    }
    assert_eq!(store.active_plugin("h").await.unwrap().0.version, 2);
    assert_eq!(
        history(&store, "h").await.len(),
        2,
        "refusals record nothing"
    );
}

#[tokio::test]
async fn a_plugin_in_use_is_not_deleted_and_a_deleted_one_leaves_nothing() {
    let dir = TempDir::new().unwrap();
    let store = open_in(&dir, StoreOptions::default());
    for n in 1..=2 {
        store
            .put_plugin("p", "handler", &sha(n), vec![n], None)
            .await
            .unwrap();
    }
    store.kv_set("p", "count", b"7".to_vec()).await.unwrap();
    store.kv_set("other", "count", b"1".to_vec()).await.unwrap();
    store
        .put_queue("a", &patch(r#"{"handler": "p"}"#))
        .await
        .unwrap();
    store
        .put_queue("b", &patch(r#"{"handler": "p"}"#))
        .await
        .unwrap();
    let err = store.delete_plugin("p").await.unwrap_err();
    assert!(
        matches!(&err, StoreError::PluginInUse { queues, .. } if queues == &["a", "b"]),
        "{err}"
    );
    assert!(err.to_string().contains("a, b"), "{err}");
    assert_eq!(store.active_plugin("p").await.unwrap().0.version, 2);

    store
        .put_queue("a", &patch(r#"{"handler": null}"#))
        .await
        .unwrap();
    store.delete_queue("b", false).await.unwrap();
    let deleted = store.delete_plugin("p").await.unwrap();
    assert_eq!((deleted.versions, deleted.kv_entries), (2, 1));
    assert!(matches!(
        store.active_plugin("p").await,
        Err(StoreError::PluginNotFound(_))
    ));
    assert!(store.list_plugins().await.unwrap().is_empty());
    assert_eq!(store.kv_get("p", "count").await.unwrap(), None);
    assert_eq!(
        store.kv_get("other", "count").await.unwrap(),
        Some(b"1".to_vec()),
        "other plugins' data stays"
    );
    assert!(matches!(
        store.delete_plugin("p").await,
        Err(StoreError::PluginNotFound(_))
    ));
    // Deployed again, it starts over: version 1, a fresh history.
    let again = store
        .put_plugin("p", "handler", &sha(2), vec![2], None)
        .await
        .unwrap();
    assert_eq!((again.version.version, again.new_version), (1, true));
    assert_eq!(history(&store, "p").await.len(), 1);
}

#[tokio::test]
async fn kv_round_trip_and_limits() {
    let dir = TempDir::new().unwrap();
    let store = open_in(&dir, StoreOptions::default());
    assert_eq!(store.kv_get("p", "k").await.unwrap(), None);
    store.kv_set("p", "k", b"v1".to_vec()).await.unwrap();
    store.kv_set("p", "k", b"v2".to_vec()).await.unwrap();
    store.kv_set("other", "k", b"o".to_vec()).await.unwrap();
    assert_eq!(store.kv_get("p", "k").await.unwrap(), Some(b"v2".to_vec()));
    assert_eq!(
        store.kv_get("other", "k").await.unwrap(),
        Some(b"o".to_vec())
    );
    store.kv_delete("p", "k").await.unwrap();
    assert_eq!(store.kv_get("p", "k").await.unwrap(), None);

    let max_key = "k".repeat(256);
    store
        .kv_set("p", &max_key, vec![7; 64 * 1024])
        .await
        .unwrap();
    assert_eq!(
        store.kv_get("p", &max_key).await.unwrap().unwrap().len(),
        65_536
    );
    let err = store
        .kv_set("p", &"k".repeat(257), b"v".to_vec())
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Invalid(ref m) if m.contains("256")),
        "{err}"
    );
    let err = store
        .kv_set("p", "k", vec![0; 64 * 1024 + 1])
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Invalid(ref m) if m.contains("65536")),
        "{err}"
    );
    assert!(matches!(
        store.kv_get("p", "").await,
        Err(StoreError::Invalid(_))
    ));
}

// --- plumbing --------------------------------------------------------------------------------

#[tokio::test]
async fn ping_answers_and_debug_names_the_file() {
    let dir = TempDir::new().unwrap();
    let store = open_in(&dir, StoreOptions::default());
    store.ping().await.unwrap();
    assert!(format!("{store:?}").contains("spool.db"));
}

#[test]
fn cursors_round_trip_and_reject_garbage() {
    for id in [0, 1, 255, i64::MAX] {
        assert_eq!(
            crate::paging::decode_cursor(Some(&crate::paging::encode_cursor(id))).unwrap(),
            id
        );
    }
    assert_eq!(rows::decode_cursor(None).unwrap(), 0);
    for bad in [
        "",
        "12",
        "ffffffffffffffff",
        "000000000000000g",
        "+00000000000001",
    ] {
        assert!(
            matches!(
                rows::decode_cursor(Some(bad)),
                Err(StoreError::InvalidCursor(_))
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn state_codes_match_the_sql_literals() {
    // The SQL spells states as literals; this pins the mapping they rely on.
    let codes: Vec<i64> = MessageState::ALL
        .iter()
        .map(|s| rows::state_code(*s))
        .collect();
    assert_eq!(codes, vec![0, 1, 2, 3, 4, 5, 6]);
    for s in MessageState::ALL {
        assert_eq!(rows::state_from_code(rows::state_code(s)), Some(s));
    }
    assert_eq!(rows::state_from_code(7), None);
}

#[tokio::test]
async fn claim_and_stats_queries_use_their_indexes() {
    let dir = TempDir::new().unwrap();
    drop(open_in(&dir, StoreOptions::default()));
    let conn = Connection::open(dir.path().join("spool.db")).unwrap();
    let plan = |sql: &str| -> String {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows: Vec<String> = stmt
            .query_map(
                rusqlite::params_from_iter(std::iter::repeat_n(1i64, stmt.parameter_count())),
                |r| r.get::<_, String>(3),
            )
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        rows.join(" | ")
    };
    let p = plan(
        "SELECT id FROM messages WHERE queue_id = 1 AND state = 1 ORDER BY priority DESC, id LIMIT 10",
    );
    assert!(
        p.contains("messages_ready_by_priority") && !p.contains("TEMP B-TREE"),
        "{p}"
    );
    let p =
        plan("SELECT id FROM messages WHERE queue_id = 1 AND state = 1 ORDER BY id DESC LIMIT 10");
    assert!(
        p.contains("messages_by_state") && !p.contains("TEMP B-TREE"),
        "{p}"
    );
    let p = plan("SELECT id FROM messages WHERE queue_id = 1 AND state = 0 AND available_at <= 5");
    assert!(p.contains("messages_scheduled_due"), "{p}");
    let p = plan(
        "SELECT id FROM messages WHERE queue_id = 1 AND state < 2 AND attempts = 0 \
         AND expires_at IS NOT NULL AND expires_at <= 5",
    );
    assert!(p.contains("messages_ttl"), "{p}");
    // Expiry runs once per source state (for the depth counters) and must still take the TTL
    // index, not walk every ready row of the queue.
    for state in [0, 1] {
        let p = plan(&format!(
            "SELECT id FROM messages WHERE queue_id = 1 AND state < 2 AND state = {state} \
             AND attempts = 0 AND expires_at IS NOT NULL AND expires_at <= 5"
        ));
        assert!(p.contains("messages_ttl"), "{p}");
    }
    let p = plan("SELECT count(*) FROM messages WHERE queue_id = 1 AND state = ?1");
    assert!(p.contains("COVERING INDEX messages_by_state"), "{p}");
    let p = plan("SELECT id FROM messages WHERE state = 2 AND lease_expires_at <= 5");
    assert!(p.contains("messages_lease"), "{p}");
}

#[tokio::test]
async fn settle_with_explicit_sql_error_fails_only_that_caller() {
    // A job failing on the database (not on validation) rolls back to its savepoint only.
    let (_dir, store) = setup("{}").await;
    let a = store.clone();
    let bad = store.write("test", |tx| -> StoreResult<()> {
        tx.conn
            .execute(
                "INSERT INTO queues (id, name, config, created_at) VALUES (1, 'dup', '{}', 0)",
                [],
            )
            .map_err(|e| rows::db_error("insert duplicate", e))?;
        Ok(())
    });
    let good = a.enqueue("q", vec![msg("kept")]);
    let (bad, good) = tokio::join!(bad, good);
    assert!(matches!(bad, Err(StoreError::Database(_))));
    assert_eq!(good.unwrap().len(), 1);
    assert!(store.get_queue("dup").await.is_err());
    assert_eq!(store.queue_stats("q").await.unwrap().ready, 1);
}

// --- depth counters --------------------------------------------------------------------------

/// Counts each queue's rows per waiting state the slow way, for comparison with the counters.
fn counted_depths(path: &std::path::Path, queue: &str) -> [u64; 4] {
    let conn = Connection::open(path).unwrap();
    let mut out = [0u64; 4];
    for (slot, state) in [0, 1, 2, 4].into_iter().enumerate() {
        out[slot] = conn
            .query_row(
                "SELECT count(*) FROM messages m JOIN queues q ON q.id = m.queue_id \
                 WHERE q.name = ?1 AND m.state = ?2",
                rusqlite::params![queue, state],
                |r| r.get::<_, i64>(0),
            )
            .unwrap() as u64;
    }
    out
}

#[tokio::test]
async fn depth_counters_match_the_rows_through_every_transition() {
    use rand::{Rng, SeedableRng};

    let opts = StoreOptions {
        acked_retention_ms: 0,
        dead_retention_ms: 0,
        ..StoreOptions::default()
    };
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("spool.db");
    let store = SqliteStore::open(&path, opts).unwrap();
    let queues = ["a", "b"];
    for q in queues {
        store
            .put_queue(q, &patch(r#"{"max_attempts": 2}"#))
            .await
            .unwrap();
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut leased: Vec<(MessageId, u32)> = Vec::new();
    let mut ids: Vec<MessageId> = Vec::new();
    let mut ops_seen = HashSet::new();

    for step in 0..600 {
        let q = queues[rng.random_range(0..queues.len())];
        let op = rng.random_range(0..10);
        ops_seen.insert(op);
        match op {
            0 | 1 => {
                let batch = (0..rng.random_range(1..6))
                    .map(|i| NewMessage {
                        delay_ms: rng.random_bool(0.3).then(|| rng.random_range(0..20)),
                        ttl_ms: rng.random_bool(0.2).then(|| rng.random_range(1..20)),
                        idempotency_key: rng
                            .random_bool(0.3)
                            .then(|| format!("k{}", rng.random_range(0..8))),
                        supersede: rng.random_bool(0.5),
                        ..msg(&format!("{step}-{i}"))
                    })
                    .collect();
                for e in store.enqueue(q, batch).await.unwrap() {
                    ids.push(e.id);
                }
            }
            2 | 3 => {
                let lease = if rng.random_bool(0.2) { 1 } else { 60_000 };
                let batch = store.claim(q, rng.random_range(1..5), lease).await.unwrap();
                leased.extend(batch.messages.iter().map(|c| (c.id, c.attempt)));
            }
            4 | 5 if !leased.is_empty() => {
                let n = rng.random_range(1..=leased.len().min(4));
                let settles = leased
                    .drain(..n)
                    .map(|(id, attempt)| {
                        let settlement = match rng.random_range(0..5) {
                            0 | 1 => Settlement::Ack,
                            2 => Settlement::Retry {
                                delay_ms: rng.random_range(0..2) * 5,
                                error: "e".into(),
                                category: ErrorCategory::Trap,
                            },
                            3 if rng.random_bool(0.5) => Settlement::RetryRequested {
                                delay_ms: rng.random_range(0..2) * 5,
                            },
                            3 => Settlement::Dead {
                                error: "d".into(),
                                category: ErrorCategory::Handler,
                            },
                            _ => Settlement::Release,
                        };
                        settle(id, attempt, settlement)
                    })
                    .collect();
                store.settle(settles).await.unwrap();
            }
            6 if !ids.is_empty() => {
                let id = ids[rng.random_range(0..ids.len())];
                let _ = store.cancel(id).await;
            }
            7 => {
                store.maintain().await.unwrap();
            }
            8 => {
                let dead = store
                    .list_dead(&DeadFilter {
                        queue: Some(q.to_owned()),
                        limit: 10,
                        ..DeadFilter::default()
                    })
                    .await
                    .unwrap();
                for m in dead.items {
                    match rng.random_range(0..3) {
                        0 => store.replay_dead(m.id).await.unwrap(),
                        1 => store.purge_dead(m.id).await.unwrap(),
                        _ => store.mark_reviewed(m.id).await.unwrap(),
                    }
                }
            }
            _ => {
                let filter = DeadFilter {
                    queue: Some(q.to_owned()),
                    limit: 3,
                    ..DeadFilter::default()
                };
                if rng.random_bool(0.5) {
                    store.replay_dead_matching(&filter).await.unwrap();
                } else {
                    store.purge_dead_matching(&filter).await.unwrap();
                }
            }
        }
        if step % 7 == 0 {
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        for q in queues {
            let s = store.queue_stats(q).await.unwrap();
            assert_eq!(
                [s.scheduled, s.ready, s.leased, s.dlq_depth],
                counted_depths(&path, q),
                "queue {q} after step {step} (op {op})"
            );
        }
    }
    assert!(
        ops_seen.len() >= 9,
        "every kind of operation ran: {ops_seen:?}"
    );
    let all = store.all_queue_stats().await.unwrap();
    assert_eq!(
        all.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        ["a", "b"]
    );
    for (name, s) in &all {
        // The oldest ready age is read against the clock, so it may differ by a millisecond.
        let one = store.queue_stats(name).await.unwrap();
        assert_eq!(
            QueueStats {
                oldest_ready_age_ms: None,
                ..s.clone()
            },
            QueueStats {
                oldest_ready_age_ms: None,
                ..one.clone()
            }
        );
        match (s.oldest_ready_age_ms, one.oldest_ready_age_ms) {
            (Some(a), Some(b)) => assert!(a.abs_diff(b) < 1_000, "{s:?} vs {one:?}"),
            (a, b) => assert_eq!(a, b),
        }
    }
}

#[tokio::test]
async fn the_depth_migration_counts_existing_rows() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("spool.db");
    {
        let store = SqliteStore::open(&path, StoreOptions::default()).unwrap();
        store.put_queue("q", &patch("{}")).await.unwrap();
        store
            .enqueue("q", vec![msg("1"), msg("2"), msg("3")])
            .await
            .unwrap();
        store.claim("q", 1, 60_000).await.unwrap();
    }
    // Back to the schema before the counters existed, as a database of an older Spool.
    let conn = Connection::open(&path).unwrap();
    for column in ["scheduled_now", "ready_now", "leased_now", "dead_now"] {
        conn.execute_batch(&format!("ALTER TABLE queues DROP COLUMN {column}"))
            .unwrap();
    }
    // The counters were followed by five migrations: routes, schedules, the breaker's settings
    // (which only rewrite configs), plugin config and grants, then plugin chunks.
    conn.execute_batch(
        "DROP TABLE plugin_chunks; DROP TABLE plugin_config; DROP TABLE plugin_grants; \
         DROP TABLE schedule_fires; DROP TABLE schedules; \
         DROP TABLE routes; DROP INDEX messages_by_correlation; \
         ALTER TABLE messages DROP COLUMN parent_id; \
         ALTER TABLE messages DROP COLUMN chain_depth; \
         ALTER TABLE messages DROP COLUMN route_id;",
    )
    .unwrap();
    // Back to before the depth migration: it and the five after it (routes, schedules, the
    // breaker's settings, plugin config, plugin chunks) run again.
    conn.pragma_update(None, "user_version", schema::SCHEMA_VERSION as i64 - 6)
        .unwrap();
    drop(conn);
    let store = SqliteStore::open(&path, StoreOptions::default()).unwrap();
    let s = store.queue_stats("q").await.unwrap();
    assert_eq!((s.ready, s.leased, s.scheduled, s.dlq_depth), (2, 1, 0, 0));
}

#[tokio::test]
async fn a_full_database_refuses_writes_as_storage_full_and_keeps_what_it_had() {
    let opts = StoreOptions {
        max_size_bytes: Some(1 << 20),
        ..StoreOptions::default()
    };
    let (_dir, store) = setup_with("{}", opts).await;
    assert_eq!(store.write_failure().await, None);
    let big = "x".repeat(64 * 1024);
    let mut kept = Vec::new();
    let mut refused = None;
    // 1 MiB holds fewer than 16 such messages.
    for _ in 0..64 {
        match store.enqueue("q", vec![msg(&big)]).await {
            Ok(e) => kept.push(e[0].id),
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let err = refused.expect("the cap was reached");
    assert!(matches!(err, StoreError::StorageFull(_)), "{err:?}");
    let failure = store
        .write_failure()
        .await
        .expect("writes are failing, and the probe agrees");
    assert!(failure.full, "{failure:?}");
    // Reads go on, and everything accepted before is there.
    for id in kept {
        store.get_message(id).await.unwrap();
    }
    // The readiness probe (run by each `write_failure` call) does not call the store writable
    // again while the cap leaves no headroom.
    assert!(store.write_failure().await.is_some());
}

// --- backup, checkpoint, sizes -----------------------------------------------------------------

fn leftovers(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".partial-"))
        .collect()
}

#[tokio::test]
async fn backup_is_a_store_that_opens_with_the_same_messages() {
    let (dir, store) = setup("{}").await;
    let ids: Vec<_> = store
        .enqueue("q", (0..50).map(|i| msg(&format!("m{i}"))).collect())
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    store.claim("q", 5, 30_000).await.unwrap();
    assert_eq!(store.db_stats().await.unwrap().last_backup_at_ms, None);

    let target = dir.path().join("copy.db");
    let report = store.backup(target.clone()).await.unwrap();
    assert_eq!(report.path, target);
    assert_eq!(report.bytes, std::fs::metadata(&target).unwrap().len());
    assert!(
        leftovers(dir.path()).is_empty(),
        "{:?}",
        leftovers(dir.path())
    );
    // Written after the copy: not in it.
    store.enqueue("q", vec![msg("later")]).await.unwrap();

    let copy = SqliteStore::open(&target, StoreOptions::default()).unwrap();
    let stats = copy.queue_stats("q").await.unwrap();
    assert_eq!((stats.ready, stats.leased, stats.enqueued), (45, 5, 50));
    let page = copy
        .list_messages(
            "q",
            &MessageFilter {
                limit: 100,
                ..MessageFilter::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(page.items.iter().map(|m| m.id).collect::<Vec<_>>(), ids);
    drop(copy);

    // Never an overwrite, and a refused backup leaves nothing behind.
    let before = std::fs::read(&target).unwrap();
    assert!(matches!(
        store.backup(target.clone()).await,
        Err(StoreError::TargetExists(p)) if p == target
    ));
    assert_eq!(std::fs::read(&target).unwrap(), before);
    assert!(leftovers(dir.path()).is_empty());

    let at = store.db_stats().await.unwrap().last_backup_at_ms;
    assert_eq!(at, Some(report.taken_at_ms));
    drop(store);
    let reopened = open_in(&dir, StoreOptions::default());
    assert_eq!(reopened.db_stats().await.unwrap().last_backup_at_ms, at);
}

#[tokio::test]
async fn a_failed_backup_leaves_no_file() {
    let (dir, store) = setup("{}").await;
    store.enqueue("q", vec![msg("m")]).await.unwrap();
    let missing = dir.path().join("no-such-dir").join("copy.db");
    assert!(matches!(
        store.backup(missing.clone()).await,
        Err(StoreError::BackupFailed(_))
    ));
    assert!(!missing.exists());
    assert!(leftovers(dir.path()).is_empty());
    assert_eq!(store.db_stats().await.unwrap().last_backup_at_ms, None);
}

#[tokio::test]
async fn db_stats_report_the_file_sizes() {
    let (dir, store) = setup("{}").await;
    store
        .enqueue("q", (0..200).map(|_| msg(&"x".repeat(2_000))).collect())
        .await
        .unwrap();
    let s = store.db_stats().await.unwrap();
    let wal = std::fs::metadata(dir.path().join("spool.db-wal"))
        .unwrap()
        .len();
    assert_eq!(s.wal_bytes, wal);
    assert!(s.page_size >= 512, "{s:?}");
    // 200 payloads of 2 KB live in the database (or its log, counted in its pages).
    assert!(s.size_bytes >= 400_000, "{s:?}");
}

#[tokio::test]
async fn checkpoint_truncates_an_oversized_log_once_readers_let_it() {
    const LIMIT: u64 = 256 * 1024;
    let (dir, store) = setup("{}").await;
    let wal = || std::fs::metadata(dir.path().join("spool.db-wal")).map_or(0, |m| m.len());
    let fill = || async {
        for _ in 0..4 {
            store
                .enqueue("q", (0..100).map(|_| msg(&"x".repeat(4_000))).collect())
                .await
                .unwrap();
        }
    };

    // A reader that keeps an old snapshot: no checkpoint may pass it, so the log only grows.
    let reader = rusqlite::Connection::open(dir.path().join("spool.db")).unwrap();
    reader.execute_batch("BEGIN").unwrap();
    let _: i64 = reader
        .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
        .unwrap();
    fill().await;
    assert!(wal() > LIMIT, "the log holds the writes: {}", wal());
    let held = store.checkpoint(LIMIT).await.unwrap();
    assert!(held.busy && !held.truncated, "{held:?}");
    assert!(held.wal_bytes > LIMIT, "{held:?}");

    reader.execute_batch("COMMIT").unwrap();
    drop(reader);
    let freed = store.checkpoint(LIMIT).await.unwrap();
    assert!(freed.truncated && !freed.busy, "{freed:?}");
    assert_eq!((freed.wal_bytes, wal()), (0, 0));

    // Under the limit a round only copies the log back, leaving the file for reuse.
    fill().await;
    let passive = store.checkpoint(u64::MAX).await.unwrap();
    assert!(!passive.truncated && !passive.busy, "{passive:?}");
    assert_eq!(
        passive.checkpointed_frames, passive.log_frames,
        "{passive:?}"
    );
    assert!(wal() > 0);
    // Everything written is still there.
    assert_eq!(store.queue_stats("q").await.unwrap().ready, 800);
}

#[tokio::test]
async fn the_log_is_copied_into_the_database_beside_the_writer() {
    let (dir, store) = setup("{}").await;
    let db = || std::fs::metadata(dir.path().join("spool.db")).map_or(0, |m| m.len());
    let before = db();
    store
        .enqueue("q", (0..100).map(|_| msg(&"x".repeat(4_000))).collect())
        .await
        .unwrap();
    // The writer never checkpoints (`wal_autocheckpoint = 0`) and nothing else runs one here:
    // only the checkpoint thread can grow the database file by the 400 KB written.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while db() < before + 400_000 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        db() >= before + 400_000,
        "the database file grew from {before} to {} bytes only",
        db()
    );
    assert_eq!(store.queue_stats("q").await.unwrap().ready, 100);
}

#[tokio::test]
async fn optimize_runs_on_a_live_store() {
    let (_dir, store) = setup("{}").await;
    store.enqueue("q", vec![msg("m")]).await.unwrap();
    store.optimize().await.unwrap();
    assert_eq!(claim_payloads(&store, 1).await, vec!["m"]);
}

#[tokio::test]
async fn kv_quotas_count_keys_and_bytes() {
    let dir = TempDir::new().unwrap();
    let store = open_in(&dir, StoreOptions::default());
    store
        .kv_set_within("p", "a", vec![0; 10], 2, 100)
        .await
        .unwrap();
    store
        .kv_set_within("p", "b", vec![0; 10], 2, 100)
        .await
        .unwrap();
    // Overwriting an existing key does not count it twice.
    store
        .kv_set_within("p", "b", vec![0; 20], 2, 100)
        .await
        .unwrap();
    let err = store
        .kv_set_within("p", "c", vec![0; 1], 2, 100)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::KvQuota(m) if m.contains("kv_max_keys")),
        "{err}"
    );
    let err = store
        .kv_set_within("p", "b", vec![0; 90], 2, 100)
        .await
        .unwrap_err();
    assert!(err.to_string().starts_with("kv quota:") && err.to_string().contains("kv_max_bytes"));
    // Another plugin has its own quota; the refused sets changed nothing.
    store
        .kv_set_within("q", "c", vec![0; 1], 2, 100)
        .await
        .unwrap();
    assert_eq!(store.kv_get("p", "b").await.unwrap().unwrap().len(), 20);
}

#[tokio::test]
async fn a_large_plugin_is_stored_in_pieces_shared_repaired_and_cleaned_up() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("spool.db");
    let store = open_in(&dir, StoreOptions::default());
    // Three pieces, the last one short.
    let wasm: Vec<u8> = (0..(2 * plugin_chunks::CHUNK_BYTES + 12_345))
        .map(|i| (i % 251) as u8)
        .collect();
    let chunks = |conn: &Connection| -> i64 {
        conn.query_row("SELECT count(*) FROM plugin_chunks", [], |r| r.get(0))
            .unwrap()
    };
    for name in ["big", "big-too"] {
        let d = store
            .put_plugin(name, "handler", &sha(7), wasm.clone(), None)
            .await
            .unwrap();
        assert!(d.new_version);
        assert_eq!(d.version.size, wasm.len() as u64);
        assert_eq!(store.active_plugin(name).await.unwrap().1, wasm);
    }
    let conn = Connection::open(&path).unwrap();
    assert_eq!(chunks(&conn), 3, "one set of pieces for both plugins");
    let inline: i64 = conn
        .query_row("SELECT sum(length(wasm)) FROM plugins", [], |r| r.get(0))
        .unwrap();
    assert_eq!(inline, 0, "the version rows keep no copy");

    // A damaged piece: the bytes no longer match; uploading them again repairs the version.
    conn.execute("UPDATE plugin_chunks SET bytes = x'00' WHERE seq = 1", [])
        .unwrap();
    assert_ne!(store.active_plugin("big").await.unwrap().1, wasm);
    let again = store
        .put_plugin("big", "handler", &sha(7), wasm.clone(), None)
        .await
        .unwrap();
    assert!(!again.new_version);
    assert_eq!(store.active_plugin("big").await.unwrap().1, wasm);

    // Deleting one user keeps the pieces; deleting the last removes them.
    store.delete_plugin("big").await.unwrap();
    assert_eq!(store.active_plugin("big-too").await.unwrap().1, wasm);
    assert_eq!(chunks(&conn), 3);
    store.delete_plugin("big-too").await.unwrap();
    assert_eq!(chunks(&conn), 0);

    // Pieces of an upload that never finished go after an hour, not before.
    conn.execute(
        "INSERT INTO plugin_chunks (sha256, seq, bytes, created_at) VALUES \
         ('a', 0, x'01', 0), ('b', 0, x'01', ?1)",
        [spool_model::now_ms()],
    )
    .unwrap();
    store.maintain().await.unwrap();
    let left: Vec<String> = conn
        .prepare("SELECT sha256 FROM plugin_chunks")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(left, vec!["b".to_owned()]);
}

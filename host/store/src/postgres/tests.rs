use super::*;
use crate::pg_cluster::PgCluster;
use spool_model::now_ms;

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
async fn queues_are_created_patched_and_listed() {
    let cluster = PgCluster::start().expect("a private PostgreSQL");
    let store = PgStore::connect(&cluster.create_database("spool").unwrap())
        .await
        .unwrap();
    let patch =
        |json: &str| -> spool_model::QueueConfigPatch { serde_json::from_str(json).unwrap() };
    let (q, created) = store
        .put_queue("orders", &patch(r#"{"max_attempts": 7}"#))
        .await
        .unwrap();
    assert!(created);
    assert_eq!(q.config.max_attempts, 7);
    let (q, created) = store
        .put_queue("orders", &patch(r#"{"paused": true}"#))
        .await
        .unwrap();
    assert!(!created);
    assert!(
        q.config.paused && q.config.max_attempts == 7,
        "patches add up: {q:?}"
    );
    assert_eq!(
        store.get_queue("orders").await.unwrap().config.max_attempts,
        7
    );
    store.put_queue("audit", &patch("{}")).await.unwrap();
    let names: Vec<String> = store
        .list_queues()
        .await
        .unwrap()
        .into_iter()
        .map(|q| q.name)
        .collect();
    assert_eq!(names, ["audit", "orders"]);
    assert!(matches!(
        store.get_queue("nope").await,
        Err(StoreError::QueueNotFound(_))
    ));
    assert!(matches!(
        store.put_queue("bad name!", &patch("{}")).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(
        store
            .put_queue("orders", &patch(r#"{"max_attempts": 0}"#))
            .await
            .is_err()
    );
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
    // Twenty transactions land in random shards; the stats are their sum.
    for _ in 0..20 {
        let mut conn = store.conn().await.unwrap();
        let tx = conn.transaction().await.unwrap();
        let mut c = Counters::default();
        c.add(id, Counter::Enqueued, 3);
        c.moved(id, None, Some(MessageState::Ready), 3);
        c.moved(id, Some(MessageState::Ready), Some(MessageState::Leased), 1);
        store.flush_counters(&tx, &mut c).await.unwrap();
        tx.commit().await.unwrap();
    }
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
    assert!(
        shards > 1 && shards <= i64::from(counters::SHARDS),
        "{shards} shard rows"
    );
}

fn new_msg(payload: &str) -> spool_model::NewMessage {
    spool_model::NewMessage {
        payload: payload.as_bytes().to_vec(),
        ..Default::default()
    }
}

#[tokio::test]
async fn enqueue_keeps_order_keys_supersede_delays_and_counts() {
    let cluster = PgCluster::start().expect("a private PostgreSQL");
    let store = PgStore::connect(&cluster.create_database("spool").unwrap())
        .await
        .unwrap();
    let patch: spool_model::QueueConfigPatch = serde_json::from_str("{}").unwrap();
    store.put_queue("q", &patch).await.unwrap();

    let ids = store
        .enqueue("q", (0..5).map(|i| new_msg(&format!("m{i}"))).collect())
        .await
        .unwrap();
    assert!(
        ids.windows(2).all(|w| w[0].id < w[1].id),
        "ids in order: {ids:?}"
    );
    assert!(ids.iter().all(|e| !e.existing));

    let keyed = |p: &str, supersede: bool| spool_model::NewMessage {
        idempotency_key: Some("k".into()),
        supersede,
        ..new_msg(p)
    };
    let first = store.enqueue("q", vec![keyed("a", false)]).await.unwrap()[0];
    let again = store
        .enqueue("q", vec![keyed("b", false), keyed("c", true)])
        .await
        .unwrap();
    assert!(
        again.iter().all(|e| e.existing && e.id == first.id),
        "{again:?}"
    );
    assert_eq!(
        cluster
            .psql(
                "spool",
                &format!(
                    "SELECT convert_from(payload, 'UTF8') FROM messages WHERE id = {}",
                    first.id
                )
            )
            .unwrap(),
        "c",
        "the superseding message's payload"
    );

    let delayed = spool_model::NewMessage {
        delay_ms: Some(60_000),
        ..new_msg("later")
    };
    store.enqueue("q", vec![delayed]).await.unwrap();
    let s = store.queue_stats("q").await.unwrap();
    assert_eq!((s.enqueued, s.ready, s.scheduled), (7, 6, 1), "{s:?}");
    assert!(matches!(
        store.enqueue("nope", vec![new_msg("x")]).await,
        Err(StoreError::QueueNotFound(_))
    ));
    let long_key = spool_model::NewMessage {
        idempotency_key: Some("k".repeat(300)),
        ..new_msg("x")
    };
    assert!(matches!(
        store.enqueue("q", vec![long_key]).await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(
        store.queue_stats("q").await.unwrap().enqueued,
        7,
        "a refused batch stores nothing"
    );
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

#[tokio::test]
async fn claims_follow_the_strategy_and_promote_due_messages() {
    let cluster = PgCluster::start().expect("a private PostgreSQL");
    let store = PgStore::connect(&cluster.create_database("spool").unwrap())
        .await
        .unwrap();
    let patch =
        |json: &str| -> spool_model::QueueConfigPatch { serde_json::from_str(json).unwrap() };
    store.put_queue("p", &patch("{}")).await.unwrap();
    let prio = |p: &str, priority: i32| spool_model::NewMessage {
        priority,
        ..new_msg(p)
    };
    store
        .enqueue(
            "p",
            vec![
                prio("low", 0),
                prio("high", 5),
                prio("mid", 1),
                prio("low2", 0),
            ],
        )
        .await
        .unwrap();
    let got = store.claim("p", 3, 30_000).await.unwrap();
    let payloads: Vec<String> = got
        .messages
        .iter()
        .map(|m| String::from_utf8(m.payload.clone()).unwrap())
        .collect();
    assert_eq!(payloads, ["high", "mid", "low"]);
    assert!(
        got.messages
            .iter()
            .all(|m| m.attempt == 1 && m.queue == "p")
    );
    let s = store.queue_stats("p").await.unwrap();
    assert_eq!((s.ready, s.leased), (1, 3), "{s:?}");

    store
        .put_queue("l", &patch(r#"{"strategy": "lifo"}"#))
        .await
        .unwrap();
    store
        .enqueue("l", vec![new_msg("a"), new_msg("b"), new_msg("c")])
        .await
        .unwrap();
    let got = store.claim("l", 2, 30_000).await.unwrap();
    let payloads: Vec<&[u8]> = got.messages.iter().map(|m| m.payload.as_slice()).collect();
    assert_eq!(payloads, [b"c".as_slice(), b"b".as_slice()]);

    // A delayed message: nothing to claim yet, and when to look again; then promoted.
    store.put_queue("d", &patch("{}")).await.unwrap();
    let soon = now_ms() + 300;
    store
        .enqueue(
            "d",
            vec![spool_model::NewMessage {
                available_at: Some(soon),
                ..new_msg("later")
            }],
        )
        .await
        .unwrap();
    let none = store.claim("d", 10, 30_000).await.unwrap();
    assert!(none.messages.is_empty());
    assert_eq!(none.next_due_at, Some(soon));
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(
        store.claim("d", 10, 30_000).await.unwrap().messages.len(),
        1
    );

    // A paused queue hands out nothing.
    store
        .put_queue("p", &patch(r#"{"paused": true}"#))
        .await
        .unwrap();
    assert!(
        store
            .claim("p", 10, 30_000)
            .await
            .unwrap()
            .messages
            .is_empty()
    );

    store
        .put_queue("w", &patch(r#"{"strategy": "weighted-random"}"#))
        .await
        .unwrap();
    store
        .enqueue("w", (0..10).map(|i| prio("w", i)).collect())
        .await
        .unwrap();
    assert_eq!(store.claim("w", 4, 30_000).await.unwrap().messages.len(), 4);
    assert_eq!(store.queue_stats("w").await.unwrap().leased, 4);
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
                let ids = s.reserve_id_list(5).await.unwrap();
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

fn settle_of(id: i64, attempt: u32, settlement: spool_model::Settlement) -> spool_model::Settle {
    spool_model::Settle {
        id,
        attempt,
        settlement,
        plugin_version: Some("h@1".into()),
        outbox: Vec::new(),
    }
}

#[tokio::test]
async fn settles_ack_retry_dead_release_and_ignore_lost_leases() {
    use spool_model::{ErrorCategory, MessageState, SettleResult, Settlement};
    let cluster = PgCluster::start().expect("a private PostgreSQL");
    let store = PgStore::connect(&cluster.create_database("spool").unwrap())
        .await
        .unwrap();
    let patch: spool_model::QueueConfigPatch = serde_json::from_str("{}").unwrap();
    store.put_queue("q", &patch).await.unwrap();
    store.put_queue("out", &patch).await.unwrap();
    store
        .enqueue("q", (0..5).map(|i| new_msg(&i.to_string())).collect())
        .await
        .unwrap();
    let m: Vec<_> = store.claim("q", 5, 30_000).await.unwrap().messages;
    let state = |id: i64| {
        let code: i16 = cluster
            .psql(
                "spool",
                &format!("SELECT state FROM messages WHERE id = {id}"),
            )
            .unwrap()
            .parse()
            .unwrap();
        code
    };
    let mut ack_with_outbox = settle_of(m[0].id, 1, Settlement::Ack);
    ack_with_outbox.outbox = vec![spool_model::Delivery {
        queue: "out".into(),
        message: new_msg("published"),
        route: None,
        filter_error: None,
    }];
    let results = store
        .settle(
            vec![
                ack_with_outbox,
                settle_of(
                    m[1].id,
                    1,
                    Settlement::Retry {
                        delay_ms: 60_000,
                        error: "boom".into(),
                        category: ErrorCategory::Trap,
                    },
                ),
                settle_of(
                    m[2].id,
                    1,
                    Settlement::Dead {
                        error: "bad".into(),
                        category: ErrorCategory::Handler,
                    },
                ),
                settle_of(m[3].id, 1, Settlement::Release),
                settle_of(m[4].id, 7, Settlement::Ack),
            ],
            false,
        )
        .await
        .unwrap();
    assert_eq!(
        results,
        [
            SettleResult::Applied,
            SettleResult::Applied,
            SettleResult::Applied,
            SettleResult::Applied,
            SettleResult::LeaseLost
        ]
    );
    assert_eq!(
        state(m[0].id),
        super::enqueue::state_code(MessageState::Acked)
    );
    assert_eq!(
        state(m[1].id),
        super::enqueue::state_code(MessageState::Scheduled)
    );
    assert_eq!(
        state(m[2].id),
        super::enqueue::state_code(MessageState::Dead)
    );
    assert_eq!(
        state(m[3].id),
        super::enqueue::state_code(MessageState::Ready)
    );
    assert_eq!(
        state(m[4].id),
        super::enqueue::state_code(MessageState::Leased),
        "a lost lease changes nothing"
    );
    let s = store.queue_stats("q").await.unwrap();
    assert_eq!(
        (
            s.acked,
            s.retried,
            s.dead,
            s.dlq_depth,
            s.ready,
            s.scheduled,
            s.leased
        ),
        (1, 1, 1, 1, 1, 1, 1),
        "{s:?}"
    );
    assert_eq!(
        store.queue_stats("out").await.unwrap().ready,
        1,
        "the outbox committed with the ack"
    );
    // A second ack of the same delivery finds the lease gone; the released message's attempt
    // was given back.
    assert_eq!(
        store
            .settle(vec![settle_of(m[0].id, 1, Settlement::Ack)], false)
            .await
            .unwrap(),
        [SettleResult::LeaseLost]
    );
    let again = store.claim("q", 5, 30_000).await.unwrap().messages;
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].id, again[0].attempt), (m[3].id, 1));
    // Deleting acks (no retention).
    assert_eq!(
        store
            .settle(vec![settle_of(m[3].id, 1, Settlement::Ack)], true)
            .await
            .unwrap(),
        [SettleResult::Applied]
    );
    assert_eq!(
        cluster
            .psql(
                "spool",
                &format!("SELECT count(*) FROM messages WHERE id = {}", m[3].id)
            )
            .unwrap(),
        "0"
    );
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

#[tokio::test]
async fn messages_read_cancel_and_requeue() {
    use spool_model::{MessageState, SettleResult, Settlement};
    let cluster = PgCluster::start().expect("a private PostgreSQL");
    let store = PgStore::connect(&cluster.create_database("spool").unwrap())
        .await
        .unwrap();
    let patch: spool_model::QueueConfigPatch = serde_json::from_str("{}").unwrap();
    store.put_queue("q", &patch).await.unwrap();
    let full = spool_model::NewMessage {
        headers: vec![("k".into(), "v".into())],
        topic: Some("t.x".into()),
        idempotency_key: Some("key".into()),
        priority: 3,
        ..new_msg("body")
    };
    let id = store.enqueue("q", vec![full]).await.unwrap()[0].id;
    let m = store.get_message(id).await.unwrap();
    assert_eq!(
        (m.queue.as_str(), m.state, m.priority),
        ("q", MessageState::Ready, 3)
    );
    assert_eq!(m.headers, [("k".to_owned(), "v".to_owned())]);
    assert_eq!(
        (
            m.topic.as_deref(),
            m.idempotency_key.as_deref(),
            m.payload.as_deref()
        ),
        (Some("t.x"), Some("key"), Some(b"body".as_slice()))
    );
    assert!(matches!(
        store.get_message(id + 99).await,
        Err(StoreError::MessageNotFound(_))
    ));

    assert!(
        matches!(
            store.requeue(id).await,
            Err(StoreError::InvalidState { .. })
        ),
        "ready already"
    );
    assert_eq!(store.cancel(id).await.unwrap(), MessageState::Cancelled);
    assert!(
        store
            .get_message(id)
            .await
            .unwrap()
            .idempotency_key
            .is_none(),
        "the key is free again"
    );
    assert!(matches!(
        store.cancel(id).await,
        Err(StoreError::InvalidState { .. })
    ));

    // A leased message is cancelled when its handler returns.
    let id = store.enqueue("q", vec![new_msg("leased")]).await.unwrap()[0].id;
    let c = store
        .claim("q", 1, 30_000)
        .await
        .unwrap()
        .messages
        .remove(0);
    assert_eq!(store.cancel(id).await.unwrap(), MessageState::Leased);
    assert_eq!(
        store
            .settle(vec![settle_of(c.id, c.attempt, Settlement::Ack)], false)
            .await
            .unwrap(),
        [SettleResult::Cancelled]
    );
    assert_eq!(
        store.get_message(id).await.unwrap().state,
        MessageState::Cancelled
    );

    // A delayed message made ready at once.
    let id = store
        .enqueue(
            "q",
            vec![spool_model::NewMessage {
                delay_ms: Some(600_000),
                ..new_msg("later")
            }],
        )
        .await
        .unwrap()[0]
        .id;
    store.requeue(id).await.unwrap();
    assert_eq!(
        store.get_message(id).await.unwrap().state,
        MessageState::Ready
    );
    let s = store.queue_stats("q").await.unwrap();
    assert_eq!(
        (s.cancelled, s.ready, s.scheduled, s.leased),
        (2, 1, 0, 0),
        "{s:?}"
    );
}

#[tokio::test]
async fn lists_page_and_the_dlq_replays_marks_and_purges() {
    use spool_model::{ErrorCategory, MessageState, Settlement};
    let cluster = PgCluster::start().expect("a private PostgreSQL");
    let store = PgStore::connect(&cluster.create_database("spool").unwrap())
        .await
        .unwrap();
    let patch: spool_model::QueueConfigPatch = serde_json::from_str("{}").unwrap();
    store.put_queue("q", &patch).await.unwrap();
    store
        .enqueue("q", (0..5).map(|i| new_msg(&i.to_string())).collect())
        .await
        .unwrap();
    let first = store
        .list_messages(
            "q",
            &crate::MessageFilter {
                state: None,
                limit: 3,
                cursor: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(first.items.len(), 3);
    let rest = store
        .list_messages(
            "q",
            &crate::MessageFilter {
                state: None,
                limit: 3,
                cursor: first.next_cursor.clone(),
            },
        )
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 2);
    assert!(rest.next_cursor.is_none());
    assert!(first.items[2].id < rest.items[0].id);

    // Dead-letter all five.
    let claimed = store.claim("q", 5, 30_000).await.unwrap().messages;
    let dead = claimed
        .iter()
        .map(|c| {
            settle_of(
                c.id,
                c.attempt,
                Settlement::Dead {
                    error: "bad".into(),
                    category: ErrorCategory::Handler,
                },
            )
        })
        .collect();
    store.settle(dead, false).await.unwrap();
    let all = crate::DeadFilter {
        queue: Some("q".into()),
        limit: 100,
        ..Default::default()
    };
    assert_eq!(store.list_dead(&all).await.unwrap().items.len(), 5);
    let ids: Vec<i64> = claimed.iter().map(|c| c.id).collect();

    store.mark_reviewed(ids[0]).await.unwrap();
    let reviewed = crate::DeadFilter {
        reviewed: Some(true),
        ..all.clone()
    };
    assert_eq!(store.list_dead(&reviewed).await.unwrap().items.len(), 1);
    store.replay_dead(ids[0]).await.unwrap();
    assert_eq!(
        store.get_message(ids[0]).await.unwrap().state,
        MessageState::Ready
    );
    assert!(matches!(
        store.replay_dead(ids[0]).await,
        Err(StoreError::DeadLetterNotFound(_))
    ));
    store.purge_dead(ids[1]).await.unwrap();
    let two = crate::DeadFilter {
        limit: 2,
        ..all.clone()
    };
    assert_eq!(
        store.replay_dead_matching(&two).await.unwrap(),
        [ids[2], ids[3]]
    );
    assert_eq!(store.purge_dead_matching(&all).await.unwrap(), 1);
    let s = store.queue_stats("q").await.unwrap();
    assert_eq!((s.ready, s.dlq_depth), (3, 0), "{s:?}");
    assert!(matches!(
        store
            .list_dead(&crate::DeadFilter {
                queue: Some("nope".into()),
                ..Default::default()
            })
            .await,
        Err(StoreError::QueueNotFound(_))
    ));
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

#[tokio::test]
async fn plugin_config_secrets_and_grants_round_trip() {
    let cluster = PgCluster::start().expect("a private PostgreSQL");
    let store = PgStore::connect(&cluster.create_database("spool").unwrap())
        .await
        .unwrap();
    let set = |key: &str, value: Option<&str>, secret: bool| spool_model::ConfigChange {
        key: key.into(),
        value: value.map(Into::into),
        secret,
    };
    let s = store
        .update_plugin_config(
            "p",
            vec![
                set("region", Some("eu"), false),
                set("api_key", Some("s3cr3t"), true),
            ],
        )
        .await
        .unwrap();
    assert_eq!(s.values.get("region").map(String::as_str), Some("eu"));
    assert_eq!(s.secrets.get("api_key").map(String::as_str), Some("s3cr3t"));
    let s = store
        .update_plugin_config("p", vec![set("region", None, false)])
        .await
        .unwrap();
    assert!(s.values.is_empty() && s.secrets.len() == 1, "{s:?}");
    let bad = store
        .update_plugin_config("p", vec![set("", Some("x"), false)])
        .await;
    assert!(matches!(bad, Err(StoreError::Invalid(_))));

    let grants: spool_model::PluginGrants = serde_json::from_str(r#"{"kv_max_keys": 5}"#).unwrap();
    let s = store.put_plugin_grants("p", grants.clone()).await.unwrap();
    assert_eq!(s.grants, grants);
    let s = store
        .put_plugin_grants("p", Default::default())
        .await
        .unwrap();
    assert_eq!(s.grants, spool_model::PluginGrants::default());
    assert_eq!(store.plugin_settings("p").await.unwrap().secrets.len(), 1);
}

#[tokio::test]
async fn routes_are_created_once_listed_deleted_and_hold_their_queue() {
    let cluster = PgCluster::start().expect("a private PostgreSQL");
    let store = PgStore::connect(&cluster.create_database("spool").unwrap())
        .await
        .unwrap();
    let patch: spool_model::QueueConfigPatch = serde_json::from_str("{}").unwrap();
    store.put_queue("orders", &patch).await.unwrap();
    let new_route = |pattern: &str| spool_model::NewRoute {
        pattern: pattern.into(),
        queue: "orders".into(),
        filter: None,
        headers: vec![("tier".into(), "gold".into())],
        limits: Default::default(),
    };
    let (r, created) = store.create_route(new_route("orders.#")).await.unwrap();
    assert!(created);
    assert_eq!(
        (r.pattern.as_str(), r.queue.as_str()),
        ("orders.#", "orders")
    );
    let (same, created) = store.create_route(new_route("orders.#")).await.unwrap();
    assert!(
        !created && same.id == r.id,
        "an identical route is found, not doubled"
    );
    store.create_route(new_route("orders.*")).await.unwrap();
    assert_eq!(store.list_routes().await.unwrap().len(), 2);
    let missing_filter = spool_model::NewRoute {
        filter: Some("nope".into()),
        ..new_route("x")
    };
    assert!(matches!(
        store.create_route(missing_filter).await,
        Err(StoreError::PluginNotFound(_))
    ));

    // Deliveries through a route count for it.
    let d = spool_model::Delivery {
        queue: "orders".into(),
        message: new_msg("m"),
        route: Some(r.id),
        filter_error: None,
    };
    store.publish(vec![d]).await.unwrap();
    assert_eq!(store.list_routes().await.unwrap()[0].delivered, 1);

    // A queue with messages and routes is kept unless forced.
    assert!(matches!(
        store.delete_queue("orders", false).await,
        Err(StoreError::QueueNotEmpty { .. })
    ));
    let c = store
        .claim("orders", 1, 30_000)
        .await
        .unwrap()
        .messages
        .remove(0);
    store
        .settle(
            vec![settle_of(c.id, c.attempt, spool_model::Settlement::Ack)],
            false,
        )
        .await
        .unwrap();
    assert!(matches!(
        store.delete_queue("orders", false).await,
        Err(StoreError::QueueHasRoutes { .. })
    ));
    assert_eq!(store.delete_route(r.id).await.unwrap().id, r.id);
    let deleted = store.delete_queue("orders", true).await.unwrap();
    assert_eq!((deleted.acked, deleted.routes), (1, 1), "{deleted:?}");
    assert!(store.list_routes().await.unwrap().is_empty());
    assert!(matches!(
        store.get_queue("orders").await,
        Err(StoreError::QueueNotFound(_))
    ));
}

#[tokio::test]
async fn a_trace_follows_the_correlation_id() {
    let cluster = PgCluster::start().expect("a private PostgreSQL");
    let store = PgStore::connect(&cluster.create_database("spool").unwrap())
        .await
        .unwrap();
    let patch: spool_model::QueueConfigPatch = serde_json::from_str("{}").unwrap();
    store.put_queue("a", &patch).await.unwrap();
    store.put_queue("b", &patch).await.unwrap();
    let root = store.enqueue("a", vec![new_msg("root")]).await.unwrap()[0].id;
    let child = spool_model::NewMessage {
        correlation_id: Some(root.to_string()),
        parent_id: Some(root),
        topic: Some("t".into()),
        ..new_msg("child")
    };
    let child = store.enqueue("b", vec![child]).await.unwrap()[0].id;
    let (correlation, entries) = store.trace(child).await.unwrap();
    assert_eq!(correlation, root.to_string());
    let got: Vec<(i64, Option<i64>, &str)> = entries
        .iter()
        .map(|e| (e.id, e.parent_id, e.queue.as_str()))
        .collect();
    assert_eq!(got, [(root, None, "a"), (child, Some(root), "b")]);
    assert!(matches!(
        store.trace(child + 100).await,
        Err(StoreError::MessageNotFound(_))
    ));
}

// --- schedules ------------------------------------------------------------------------------
// The rules of `sqlite::schedule_tests`, on PostgreSQL, and the one thing SQLite cannot show:
// hosts racing to fire one instant.

/// 1 June 2026, 00:00:00 UTC (times are passed in; the clock is never read for schedules).
const SCHED_T: i64 = 1_780_272_000_000;
const SCHED_SEC: i64 = 1_000;

async fn sched_store(cluster: &PgCluster, queues: &[&str]) -> PgStore {
    let store = PgStore::connect(&cluster.create_database("spool").unwrap())
        .await
        .unwrap();
    let patch: spool_model::QueueConfigPatch = serde_json::from_str("{}").unwrap();
    for q in queues {
        store.put_queue(q, &patch).await.unwrap();
    }
    store
}

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

fn sched_fired(
    outcome: spool_model::FireOutcome,
) -> (Vec<spool_model::Fire>, spool_model::Schedule) {
    match outcome {
        spool_model::FireOutcome::Fired { fires, schedule } => (fires, *schedule),
        spool_model::FireOutcome::Stale => panic!("expected a fire, got Stale"),
    }
}

async fn sched_messages(store: &PgStore, queue: &str) -> Vec<spool_model::Message> {
    let filter = crate::MessageFilter {
        limit: 1_000,
        ..Default::default()
    };
    store.list_messages(queue, &filter).await.unwrap().items
}

#[tokio::test]
async fn schedules_are_created_listed_updated_deleted_and_checked() {
    use spool_model::{FireOutcome, Missed, NewSchedule, SchedulePatch, Target, Timing};
    use std::time::Duration;
    let (t, sec) = (SCHED_T, SCHED_SEC);
    let cluster = PgCluster::start().expect("a private PostgreSQL");
    let store = sched_store(&cluster, &["jobs"]).await;
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
    let s = store.create_schedule(new.clone(), t + 1).await.unwrap();
    assert_eq!(s.next_fire_at, Some(t + 300 * sec));
    assert_eq!((s.created_at, s.runs, s.generation), (t + 1, 0, 1));
    assert_eq!(s.name.as_deref(), Some("five"));
    assert_eq!(s.timing, new.timing);
    assert_eq!(
        (s.headers.clone(), s.payload.clone()),
        (new.headers, new.payload)
    );
    // Every column round-trips through PostgreSQL's types.
    assert_eq!(store.get_schedule(s.id).await.unwrap(), s);
    assert_eq!(store.list_schedules().await.unwrap(), vec![s.clone()]);
    assert_eq!(
        store.next_schedule_due().await.unwrap(),
        Some(t + 300 * sec)
    );

    let patch = SchedulePatch {
        timing: Some(Timing::Every(Duration::from_secs(60))),
        name: Some(None),
        paused: Some(true),
        ..SchedulePatch::default()
    };
    let u = store
        .update_schedule(s.id, patch, t + 10 * sec)
        .await
        .unwrap();
    // An interval without start_at is anchored at the creation time.
    assert_eq!(u.next_fire_at, Some(t + 1 + 60 * sec));
    assert_eq!((u.name.clone(), u.paused, u.generation), (None, true, 2));
    assert_eq!(store.get_schedule(s.id).await.unwrap(), u);
    // Paused: not due, no reason to wake a timer, and no fire from the calendar even for a
    // caller that read it paused.
    assert_eq!(store.next_schedule_due().await.unwrap(), None);
    assert!(
        store
            .due_schedules(t + 3_600 * sec, 10)
            .await
            .unwrap()
            .is_empty()
    );
    let paused_fire = store
        .fire_schedule(
            u.id,
            u.generation,
            t + 1 + 60 * sec,
            Vec::new(),
            None,
            t + 61 * sec,
        )
        .await
        .unwrap();
    assert_eq!(paused_fire, FireOutcome::Stale);

    let resumed = SchedulePatch {
        paused: Some(false),
        ..SchedulePatch::default()
    };
    let r = store
        .update_schedule(s.id, resumed, t + 90 * sec)
        .await
        .unwrap();
    assert_eq!(r.next_fire_at, Some(t + 1 + 120 * sec));
    let due = store.due_schedules(t + 3_600 * sec, 10).await.unwrap();
    assert_eq!(due.iter().map(|d| d.id).collect::<Vec<_>>(), vec![s.id]);
    assert!(
        store
            .due_schedules(t + 100 * sec, 10)
            .await
            .unwrap()
            .is_empty()
    );

    // Validation, as SQLite gives it: the calendar names the field.
    let field = |r: StoreResult<spool_model::Schedule>| match r {
        Err(StoreError::InvalidSchedule(e)) => e.field(),
        other => panic!("expected InvalidSchedule, got {other:?}"),
    };
    let mut bad = sched_every_second("jobs");
    bad.timing = Timing::Cron("every day".to_owned());
    assert_eq!(field(store.create_schedule(bad, t).await), "cron");
    let mut bad = sched_every_second("jobs");
    bad.timezone = Some("Europe/Atlantis".to_owned());
    assert_eq!(field(store.create_schedule(bad, t).await), "timezone");
    let mut bad = sched_every_second("jobs");
    bad.timing = Timing::Every(Duration::from_millis(10));
    assert_eq!(field(store.create_schedule(bad, t).await), "every");
    let mut bad = sched_every_second("jobs");
    (bad.start_at, bad.end_at) = (Some(t + 10), Some(t));
    assert_eq!(field(store.create_schedule(bad, t).await), "end_at");
    assert!(matches!(
        store.create_schedule(sched_every_second("nope"), t).await,
        Err(StoreError::QueueNotFound(q)) if q == "nope"
    ));
    let mut zero = sched_every_second("jobs");
    zero.max_runs = Some(0);
    let err = store.create_schedule(zero, t).await.unwrap_err();
    assert!(err.to_string().contains("max_runs"), "{err}");
    let mut long = sched_every_second("jobs");
    long.name = Some("x".repeat(201));
    assert!(matches!(
        store.create_schedule(long, t).await,
        Err(StoreError::Invalid(_))
    ));
    let past = NewSchedule::new(Timing::At(t - 1), Target::Queue("jobs".to_owned()));
    let err = store.create_schedule(past, t).await.unwrap_err();
    assert!(matches!(err, StoreError::Invalid(_)), "{err}");
    assert!(err.to_string().contains("never fire"), "{err}");
    // A refused edit changes nothing.
    let patch = SchedulePatch {
        timing: Some(Timing::Cron("0 0 25 * * *".to_owned())),
        ..SchedulePatch::default()
    };
    assert_eq!(field(store.update_schedule(s.id, patch, t).await), "cron");
    let retarget = SchedulePatch {
        target: Some(Target::Queue("nope".to_owned())),
        ..SchedulePatch::default()
    };
    assert!(matches!(
        store.update_schedule(s.id, retarget, t).await,
        Err(StoreError::QueueNotFound(_))
    ));
    assert_eq!(store.get_schedule(s.id).await.unwrap(), r);
    assert_eq!(store.list_schedules().await.unwrap().len(), 1);
    assert!(matches!(
        store
            .update_schedule(s.id + 100, SchedulePatch::default(), t)
            .await,
        Err(StoreError::ScheduleNotFound(_))
    ));

    assert_eq!(store.delete_schedule(s.id).await.unwrap().id, s.id);
    let err = store.get_schedule(s.id).await.unwrap_err();
    assert!(matches!(err, StoreError::ScheduleNotFound(id) if id == s.id));
    assert!(err.to_string().contains("spool schedule list"), "{err}");
    assert!(matches!(
        store.delete_schedule(s.id).await,
        Err(StoreError::ScheduleNotFound(_))
    ));
    assert!(matches!(
        store.schedule_fires(s.id, 10).await,
        Err(StoreError::ScheduleNotFound(_))
    ));
    assert!(store.list_schedules().await.unwrap().is_empty());
    // A deleted schedule's fire is stale, not an error: the timer just plans again.
    assert_eq!(
        store
            .fire_schedule(s.id, r.generation, t + 1 + 120 * sec, Vec::new(), None, t)
            .await
            .unwrap(),
        FireOutcome::Stale
    );
}

#[tokio::test]
async fn schedule_fires_are_written_once_listed_newest_first_and_pruned() {
    use crate::schedule_rules::FIRE_HISTORY;
    use spool_model::calendar::MAX_CATCH_UP;
    use spool_model::{FireOutcome, Missed, SchedulePatch};
    let (t, sec) = (SCHED_T, SCHED_SEC);
    let cluster = PgCluster::start().expect("a private PostgreSQL");
    let store = sched_store(&cluster, &["jobs", "catchup", "skip", "once", "few"]).await;

    // One fire, then the same plan again (a retry, or another host that read the same row).
    let s = store
        .create_schedule(sched_every_second("jobs"), t)
        .await
        .unwrap();
    let due = s.next_fire_at.unwrap();
    assert_eq!(due, t + sec);
    let (fires, after) = sched_fired(sched_fire_due(&store, &s, due, 0).await);
    assert_eq!(fires.len(), 1);
    assert_eq!((fires[0].fire_at, fires[0].lateness_ms), (due, 0));
    assert_eq!(after.next_fire_at, Some(due + sec));
    assert_eq!((after.runs, after.last_fire_at), (1, Some(due)));
    assert_eq!(after.generation, s.generation + 1);
    assert_eq!(sched_fire_due(&store, &s, due, 0).await, FireOutcome::Stale);
    let msgs = sched_messages(&store, "jobs").await;
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

    // An edit between reading and firing makes the fire stale; read again, the new
    // definition fires.
    let patch = SchedulePatch {
        payload: Some(b"new".to_vec()),
        ..SchedulePatch::default()
    };
    let edited = store.update_schedule(s.id, patch, due + sec).await.unwrap();
    assert_eq!(edited.next_fire_at, Some(due + 2 * sec));
    assert_eq!(
        sched_fire_due(&store, &after, due + sec, 0).await,
        FireOutcome::Stale
    );
    let (fires, mut s) = sched_fired(sched_fire_due(&store, &edited, due + 2 * sec, 0).await);
    assert_eq!(fires.len(), 1);
    let msgs = sched_messages(&store, "jobs").await;
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[1].payload.as_deref(), Some(b"new".as_slice()));

    // The history keeps the newest FIRE_HISTORY fires, newest first.
    let start = due + 2 * sec;
    let more = FIRE_HISTORY + 5;
    for i in 1..=more {
        s = sched_fired(sched_fire_due(&store, &s, start + i * sec, 0).await).1;
    }
    assert_eq!(s.runs, 2 + more as u64);
    let history = store.schedule_fires(s.id, 1_000).await.unwrap();
    assert_eq!(history.len() as i64, FIRE_HISTORY);
    assert_eq!(history[0].fire_at, start + more * sec);
    assert_eq!(history.last().unwrap().fire_at, start + 6 * sec);
    assert!(history.windows(2).all(|w| w[0].fire_at > w[1].fire_at));
    assert!(
        history
            .iter()
            .all(|f| f.message_ids.len() == 1 && !f.manual)
    );
    assert_eq!(store.schedule_fires(s.id, 3).await.unwrap().len(), 3);
    assert_eq!(sched_messages(&store, "jobs").await.len() as i64, 2 + more);

    // Fire-all after ten minutes down catches up at most MAX_CATCH_UP instants.
    let mut new = sched_every_second("catchup");
    new.missed = Missed::FireAll;
    let c = store.create_schedule(new, t).await.unwrap();
    let now = t + 600 * sec;
    let (fires, after) = sched_fired(sched_fire_due(&store, &c, now, 0).await);
    assert_eq!(fires.len(), MAX_CATCH_UP);
    assert_eq!(fires[0].fire_at, now - 99 * sec);
    assert_eq!(fires[0].lateness_ms, 99 * sec);
    assert_eq!(after.runs, MAX_CATCH_UP as u64);
    assert_eq!(after.next_fire_at, Some(now + sec));
    assert_eq!(sched_messages(&store, "catchup").await.len(), MAX_CATCH_UP);
    assert_eq!(
        store.schedule_fires(c.id, 1_000).await.unwrap()[0].fire_at,
        now
    );

    // Skip and fire-once after an outage.
    let mut skip = sched_every_second("skip");
    skip.missed = Missed::Skip;
    let skip = store.create_schedule(skip, t).await.unwrap();
    let mut once = sched_every_second("once");
    once.missed = Missed::FireOnce;
    let once = store.create_schedule(once, t).await.unwrap();
    let now = t + 600 * sec + 500;
    let (fires, after) = sched_fired(sched_fire_due(&store, &skip, now, 100).await);
    assert!(fires.is_empty());
    assert!(sched_messages(&store, "skip").await.is_empty());
    assert_eq!((after.runs, after.next_fire_at), (0, Some(t + 601 * sec)));
    let (fires, after) = sched_fired(sched_fire_due(&store, &once, now, 100).await);
    assert_eq!(
        fires.iter().map(|f| f.fire_at).collect::<Vec<_>>(),
        vec![t + 600 * sec]
    );
    assert_eq!(fires[0].lateness_ms, 500);
    assert_eq!((after.runs, after.next_fire_at), (1, Some(t + 601 * sec)));

    // max_runs ends the schedule, and an edit does not revive it.
    let mut new = sched_every_second("few");
    new.max_runs = Some(3);
    new.missed = Missed::FireAll;
    let f = store.create_schedule(new, t).await.unwrap();
    let (_, f) = sched_fired(sched_fire_due(&store, &f, t + sec, 0).await);
    let (fires, f) = sched_fired(sched_fire_due(&store, &f, t + 6 * sec, 0).await);
    assert_eq!(
        fires.iter().map(|f| f.fire_at).collect::<Vec<_>>(),
        vec![t + 2 * sec, t + 3 * sec]
    );
    assert_eq!((f.runs, f.next_fire_at), (3, None));
    let renamed = SchedulePatch {
        name: Some(Some("done".to_owned())),
        ..SchedulePatch::default()
    };
    let f = store
        .update_schedule(f.id, renamed, t + 10 * sec)
        .await
        .unwrap();
    assert_eq!(f.next_fire_at, None);
    let due_ids: Vec<_> = store
        .due_schedules(t + 3_600 * sec, 10)
        .await
        .unwrap()
        .iter()
        .map(|d| d.id)
        .collect();
    assert!(!due_ids.contains(&f.id), "{due_ids:?}");
}

#[tokio::test]
async fn schedule_deliveries_fail_whole_one_shots_end_and_run_now_is_keyed() {
    use spool_model::{FireOutcome, NewSchedule, SchedulePatch, Target, Timing};
    let (t, sec) = (SCHED_T, SCHED_SEC);
    let cluster = PgCluster::start().expect("a private PostgreSQL");
    let store = sched_store(&cluster, &["jobs"]).await;

    // A failed delivery (the queue is gone) writes nothing: the schedule stays due.
    let s = store
        .create_schedule(sched_every_second("jobs"), t)
        .await
        .unwrap();
    store.delete_queue("jobs", true).await.unwrap();
    let due = s.next_fire_at.unwrap();
    let err = store
        .fire_schedule(
            s.id,
            s.generation,
            due,
            vec![(due, sched_deliveries(&s, due))],
            Some(due + sec),
            due,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::QueueNotFound(_)), "{err}");
    assert_eq!(store.get_schedule(s.id).await.unwrap(), s);
    assert!(store.schedule_fires(s.id, 10).await.unwrap().is_empty());
    let patch: spool_model::QueueConfigPatch = serde_json::from_str("{}").unwrap();
    store.put_queue("jobs", &patch).await.unwrap();

    // Run now: once per key, the calendar left alone, a retry gets the first fire back.
    let now = t + 250;
    let (fire, created) = store
        .run_schedule_now(s.id, now, sched_deliveries(&s, now), now)
        .await
        .unwrap();
    assert!(created && fire.manual);
    let (again, created) = store
        .run_schedule_now(s.id, now, sched_deliveries(&s, now), now + 900)
        .await
        .unwrap();
    assert!(!created);
    assert_eq!(again, fire);
    assert_eq!(sched_messages(&store, "jobs").await.len(), 1);
    let after = store.get_schedule(s.id).await.unwrap();
    assert_eq!(
        (after.next_fire_at, after.runs, after.generation),
        (s.next_fire_at, 0, s.generation)
    );
    assert_eq!(after.last_fire_at, Some(now));
    assert!(matches!(
        store
            .run_schedule_now(s.id + 100, now, Vec::new(), now)
            .await,
        Err(StoreError::ScheduleNotFound(_))
    ));

    // A run now keyed on a calendar instant takes its place: the calendar's fire of it is
    // skipped (the fire row is there), yet the schedule advances past it.
    store
        .run_schedule_now(s.id, due, sched_deliveries(&s, due), due)
        .await
        .unwrap();
    let (fires, advanced) = sched_fired(
        store
            .fire_schedule(
                s.id,
                s.generation,
                due,
                vec![(due, sched_deliveries(&s, due))],
                Some(due + sec),
                due,
            )
            .await
            .unwrap(),
    );
    assert!(fires.is_empty(), "{fires:?}");
    assert_eq!((advanced.next_fire_at, advanced.runs), (Some(due + sec), 0));
    assert_eq!(sched_messages(&store, "jobs").await.len(), 2);

    // A paused schedule does not fire from its calendar, but runs now.
    let pause = SchedulePatch {
        paused: Some(true),
        ..SchedulePatch::default()
    };
    let p = store.update_schedule(s.id, pause, due).await.unwrap();
    assert_eq!(
        sched_fire_due(&store, &p, due + sec, 0).await,
        FireOutcome::Stale
    );
    let later = due + 5 * sec;
    let (fire, created) = store
        .run_schedule_now(p.id, later, sched_deliveries(&p, later), later)
        .await
        .unwrap();
    assert!(created && fire.message_ids.len() == 1);
    let fires = store.schedule_fires(p.id, 10).await.unwrap();
    assert_eq!(
        fires
            .iter()
            .map(|f| (f.fire_at, f.manual))
            .collect::<Vec<_>>(),
        vec![(later, true), (due, true), (now, true)]
    );

    // A one-shot is due at its instant, fires once and ends.
    let at = t + 42 * sec;
    let new = NewSchedule::new(Timing::At(at), Target::Queue("jobs".to_owned()));
    let o = store.create_schedule(new, t).await.unwrap();
    assert_eq!(o.next_fire_at, Some(at));
    assert!(store.due_schedules(at - 1, 10).await.unwrap().is_empty());
    assert_eq!(store.due_schedules(at, 10).await.unwrap().len(), 1);
    let (fires, o) = sched_fired(sched_fire_due(&store, &o, at + 5, 0).await);
    assert_eq!(fires.len(), 1);
    assert_eq!(
        (o.runs, o.next_fire_at, o.last_fire_at),
        (1, None, Some(at))
    );
    // Only the paused schedule is left with a next fire, and paused ones do not count.
    assert_eq!(store.next_schedule_due().await.unwrap(), None);
}

#[tokio::test]
async fn a_topic_schedule_publishes_through_its_routes() {
    use spool_model::{NewSchedule, Target, Timing};
    let (t, sec) = (SCHED_T, SCHED_SEC);
    let cluster = PgCluster::start().expect("a private PostgreSQL");
    let store = sched_store(&cluster, &["reports"]).await;
    let empty = NewSchedule::new(
        Timing::Cron("* * * * * *".to_owned()),
        Target::Topic(String::new()),
    );
    let err = store.create_schedule(empty, t).await.unwrap_err();
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
    let s = store.create_schedule(new, t).await.unwrap();
    assert_eq!(s.target, Target::Topic("reports.daily".to_owned()));
    assert_eq!(store.get_schedule(s.id).await.unwrap(), s);
    // The timer routes a topic's message (here: the one matching route) and hands the store
    // the deliveries, as a publish does.
    let due = s.next_fire_at.unwrap();
    let delivery = spool_model::Delivery {
        queue: "reports".into(),
        message: spool_model::fire::fire_message(&s, due),
        route: Some(route.id),
        filter_error: None,
    };
    let (fires, _) = sched_fired(
        store
            .fire_schedule(
                s.id,
                s.generation,
                due,
                vec![(due, vec![delivery])],
                Some(due + sec),
                due,
            )
            .await
            .unwrap(),
    );
    assert_eq!(fires.len(), 1);
    let msgs = sched_messages(&store, "reports").await;
    assert_eq!(fires[0].message_ids, vec![msgs[0].id]);
    assert_eq!(msgs[0].topic.as_deref(), Some("reports.daily"));
    assert_eq!(store.list_routes().await.unwrap()[0].delivered, 1);
    // A topic no route takes still fires (and advances), with no messages.
    let (fires, after) = sched_fired(
        store
            .fire_schedule(
                s.id,
                s.generation + 1,
                due + sec,
                vec![(due + sec, Vec::new())],
                Some(due + 2 * sec),
                due + sec,
            )
            .await
            .unwrap(),
    );
    assert!(fires[0].message_ids.is_empty());
    assert_eq!(after.runs, 2);
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

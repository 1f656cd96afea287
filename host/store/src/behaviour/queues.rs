//! Queues and their messages: creation and configuration, enqueue, the order of claims,
//! delays, listing, pausing, deletion and the depth counters.

use std::collections::HashSet;
use std::time::Duration;

use super::*;
use crate::{DeadFilter, MessageFilter, StoreError};
use spool_model::{
    Enqueued, ErrorCategory, NewSchedule, QueueStats, SettleResult, Strategy, now_ms,
};

pub(super) async fn put_queue_creates_then_patches_and_validates(b: Backend) {
    let store = open(b, StoreOptions::default()).await;
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

pub(super) async fn concurrent_single_enqueues_get_distinct_ids_and_all_count(b: Backend) {
    // SQLite commits them in groups; PostgreSQL takes them on many connections at once.
    let store = setup(b, "{}").await;
    let mut tasks = Vec::new();
    for t in 0..16 {
        let store = store.shared();
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

pub(super) async fn a_batch_with_one_invalid_message_stores_nothing(b: Backend) {
    let store = setup(b, "{}").await;
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

pub(super) async fn large_batches_return_ids_in_order_with_keys_mixed_in(b: Backend) {
    let store = setup(b, "{}").await;
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

pub(super) async fn enqueue_into_unknown_queue_fails(b: Backend) {
    let store = setup(b, "{}").await;
    assert!(matches!(
        store.enqueue("missing", vec![msg("a")]).await,
        Err(StoreError::QueueNotFound(q)) if q == "missing"
    ));
    assert!(matches!(
        store.claim("missing", 1, 1_000).await,
        Err(StoreError::QueueNotFound(_))
    ));
}

pub(super) async fn enqueue_stores_all_fields(b: Backend) {
    let store = setup(b, r#"{"default_ttl_ms": 60000}"#).await;
    let before = now_ms();
    let id = enqueue_one(
        &*store,
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

/// A batch without idempotency keys goes in as one statement on PostgreSQL: every field of
/// every message must still land where one-by-one inserts put it.
pub(super) async fn a_batch_without_keys_stores_every_field_of_every_message(b: Backend) {
    let store = setup(b, r#"{"default_ttl_ms": 60000}"#).await;
    let parent = enqueue_one(&*store, msg("parent")).await;
    let reserved = store.reserve_ids(1).await.unwrap()[0];
    let before = now_ms();
    let batch = vec![
        NewMessage {
            payload: b"first".to_vec(),
            priority: 3,
            headers: vec![("h".into(), "1".into())],
            topic: Some("t.one".into()),
            correlation_id: Some("c1".into()),
            producer: Some("p1".into()),
            ..NewMessage::default()
        },
        NewMessage {
            payload: b"later".to_vec(),
            delay_ms: Some(60_000),
            ttl_ms: Some(5_000),
            ..NewMessage::default()
        },
        NewMessage {
            payload: b"child".to_vec(),
            id: Some(reserved),
            parent_id: Some(parent),
            depth: 2,
            idempotency_scope: Some("scope".into()),
            ..NewMessage::default()
        },
        msg("last"),
    ];
    let ids: Vec<MessageId> = store
        .enqueue("q", batch)
        .await
        .unwrap()
        .into_iter()
        .map(|e| {
            assert!(!e.existing);
            e.id
        })
        .collect();
    assert_eq!(ids[2], reserved);
    assert!(ids[0] < ids[1] && ids[1] < ids[3], "{ids:?}");

    let first = store.get_message(ids[0]).await.unwrap();
    assert_eq!(first.state, MessageState::Ready);
    assert_eq!(first.payload.as_deref(), Some(&b"first"[..]));
    assert_eq!(first.priority, 3);
    assert_eq!(first.headers, vec![("h".into(), "1".into())]);
    assert_eq!(first.topic.as_deref(), Some("t.one"));
    assert_eq!(first.correlation_id.as_deref(), Some("c1"));
    assert_eq!(first.producer.as_deref(), Some("p1"));
    let ttl_end = first.expires_at.expect("the queue's default TTL");
    assert!(ttl_end >= before + 60_000 && ttl_end <= now_ms() + 60_000);

    let later = store.get_message(ids[1]).await.unwrap();
    assert_eq!(later.state, MessageState::Scheduled);
    assert!(later.available_at >= before + 60_000);
    assert_eq!(later.expires_at, Some(later.available_at + 5_000));
    assert!(later.headers.is_empty() && later.topic.is_none());

    let child = store.get_message(ids[2]).await.unwrap();
    assert_eq!(child.parent_id, Some(parent));
    assert_eq!(child.depth, 2);
    assert_eq!(child.idempotency_key, None);

    let stats = store.queue_stats("q").await.unwrap();
    assert_eq!((stats.ready, stats.scheduled, stats.enqueued), (4, 1, 5));
    // FIFO among equal priorities follows the ids: the batch's order.
    assert_eq!(
        claim_payloads(&*store, 4).await,
        ["first", "parent", "child", "last"]
    );
}

pub(super) async fn priority_order_is_priority_then_fifo(b: Backend) {
    let store = setup(b, "{}").await;
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
        claim_payloads(&*store, 3).await,
        vec!["high1", "high2", "low1"]
    );
    assert_eq!(claim_payloads(&*store, 10).await, vec!["low2", "neg"]);
}

pub(super) async fn fifo_and_lifo_ignore_priority(b: Backend) {
    let store = setup(b, r#"{"strategy": "fifo"}"#).await;
    store
        .enqueue("q", vec![prio("a", 0), prio("b", 9), prio("c", 0)])
        .await
        .unwrap();
    assert_eq!(claim_payloads(&*store, 10).await, vec!["a", "b", "c"]);

    store
        .put_queue("q", &patch(r#"{"strategy": "lifo"}"#))
        .await
        .unwrap();
    store
        .enqueue("q", vec![prio("a", 0), prio("b", 9), prio("c", 0)])
        .await
        .unwrap();
    assert_eq!(claim_payloads(&*store, 2).await, vec!["c", "b"]);
    assert_eq!(claim_payloads(&*store, 2).await, vec!["a"]);
}

pub(super) async fn weighted_random_hands_out_everything_exactly_once(b: Backend) {
    let store = setup(b, r#"{"strategy": "weighted-random"}"#).await;
    let batch: Vec<NewMessage> = (0..300).map(|i| prio(&i.to_string(), i % 4)).collect();
    store.enqueue("q", batch).await.unwrap();
    let mut seen = HashSet::new();
    for _ in 0..100 {
        let got = claim_payloads(&*store, 7).await;
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

pub(super) async fn weighted_random_favours_higher_priority(b: Backend) {
    let store = setup(b, r#"{"strategy": "weighted-random"}"#).await;
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
    let first = claim_payloads(&*store, 20).await;
    let hi = first.iter().filter(|p| *p == "hi").count();
    // Weight 21 vs 1: drawing fewer than 14 of 20 high ones is practically impossible.
    assert!(hi >= 14, "only {hi} of 20 were high priority");
}

pub(super) async fn scheduled_messages_become_ready_when_due(b: Backend) {
    let store = setup(b, "{}").await;
    let due = now_ms() + 150;
    let later = enqueue_one(
        &*store,
        NewMessage {
            available_at: Some(due),
            ..msg("later")
        },
    )
    .await;
    let past = enqueue_one(
        &*store,
        NewMessage {
            available_at: Some(now_ms() - 1_000),
            ..msg("past")
        },
    )
    .await;
    assert_eq!(state_of(&*store, later).await, MessageState::Scheduled);
    assert_eq!(state_of(&*store, past).await, MessageState::Ready);
    let stats = store.queue_stats("q").await.unwrap();
    assert_eq!((stats.scheduled, stats.ready), (1, 1));

    assert_eq!(claim_payloads(&*store, 10).await, vec!["past"]);
    let empty = store.claim("q", 10, 1_000).await.unwrap();
    assert!(empty.messages.is_empty());
    assert_eq!(empty.next_due_at, Some(due));

    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(claim_payloads(&*store, 10).await, vec!["later"]);
    let none = store.claim("q", 10, 1_000).await.unwrap();
    assert_eq!(none.next_due_at, None);
}

pub(super) async fn list_messages_finds_an_idempotency_key_in_every_scope(b: Backend) {
    let store = setup(b, "{}").await;
    store.put_queue("other", &patch("{}")).await.unwrap();
    let keyed = |key: &str, scope: Option<&str>| NewMessage {
        idempotency_key: Some(key.to_owned()),
        idempotency_scope: scope.map(str::to_owned),
        ..msg(key)
    };
    let admin = enqueue_one(&*store, keyed("order-7", None)).await;
    let shop = enqueue_one(&*store, keyed("order-7", Some("shop"))).await;
    enqueue_one(&*store, keyed("order-8", None)).await;
    enqueue_one(&*store, msg("unkeyed")).await;
    store
        .enqueue("other", vec![keyed("order-7", None)])
        .await
        .unwrap();
    let s = &*store;
    assert_eq!(search(s, "order-7", None).await, [admin, shop]);
    assert_eq!(
        search(s, "order-7", Some(MessageState::Ready)).await,
        [admin, shop]
    );
    assert!(
        search(s, "order-7", Some(MessageState::Dead))
            .await
            .is_empty()
    );
    assert!(search(s, "order-9", None).await.is_empty());
}

async fn search(store: &dyn Store, key: &str, state: Option<MessageState>) -> Vec<MessageId> {
    let filter = MessageFilter {
        state,
        idempotency_key: Some(key.to_owned()),
        ..MessageFilter::default()
    };
    let page = store.list_messages("q", &filter).await.unwrap();
    page.items.iter().map(|m| m.id).collect()
}

pub(super) async fn list_messages_pages_exactly_once_while_inserting(b: Backend) {
    let store = setup(b, "{}").await;
    store.put_queue("noise", &patch("{}")).await.unwrap();
    let mut expected = Vec::new();
    for i in 0..25 {
        expected.push(enqueue_one(&*store, msg(&format!("m{i}"))).await);
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
                expected.push(enqueue_one(&*store, msg("late")).await);
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

pub(super) async fn paused_queue_hands_out_nothing_and_signals_fire(b: Backend) {
    let store = setup(b, r#"{"paused": true}"#).await;
    let signal = store.signals().get("q");
    enqueue_one(&*store, msg("m")).await;
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
    assert_eq!(claim_payloads(&*store, 10).await, vec!["m"]);
}

pub(super) async fn delete_queue_refuses_live_messages_unless_forced(b: Backend) {
    let store = setup(b, "{}").await;
    let leased = enqueue_one(&*store, keyed("leased", "k", false)).await;
    let dead = enqueue_one(&*store, msg("dead")).await;
    let mut claimed = store.claim("q", 2, 30_000).await.unwrap().messages;
    let d = claimed.pop().unwrap();
    let c = claimed.pop().unwrap();
    assert_eq!((c.id, d.id), (leased, dead));
    enqueue_one(&*store, msg("ready")).await;
    enqueue_one(
        &*store,
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

pub(super) async fn delete_queue_without_live_messages_reports_the_records_it_removes(b: Backend) {
    let store = setup(b, "{}").await;
    store.put_queue("other", &patch("{}")).await.unwrap();
    let kept = store.enqueue("other", vec![msg("stays")]).await.unwrap()[0].id;
    let id = enqueue_one(&*store, msg("done")).await;
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
    let cancelled = enqueue_one(&*store, msg("cancelled")).await;
    store.cancel(cancelled).await.unwrap();

    let deleted = store.delete_queue("q", false).await.unwrap();
    assert_eq!(
        (deleted.acked, deleted.cancelled, deleted.total()),
        (1, 1, 2)
    );
    assert_eq!(
        state_of(&*store, kept).await,
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

pub(super) async fn depth_counters_match_the_listings_through_every_transition(b: Backend) {
    let store = open(b, depth_walk_options()).await;
    depth_walk(&*store, None).await;
}

/// The options of [`depth_walk`]'s store: finished messages are deleted at once, so the
/// deletions are walked through too.
pub(crate) fn depth_walk_options() -> StoreOptions {
    StoreOptions {
        acked_retention_ms: 0,
        dead_retention_ms: 0,
        ..StoreOptions::default()
    }
}

/// How many messages of `queue` the listings show scheduled, ready, leased and dead: the
/// depths counted row by row, through the trait.
async fn listed_depths(store: &dyn Store, queue: &str) -> [u64; 4] {
    let mut out = [0u64; 4];
    let states = [
        MessageState::Scheduled,
        MessageState::Ready,
        MessageState::Leased,
    ];
    for (slot, state) in states.into_iter().enumerate() {
        let mut cursor = None;
        loop {
            let filter = MessageFilter {
                state: Some(state),
                limit: 500,
                cursor,
                ..Default::default()
            };
            let page = store.list_messages(queue, &filter).await.unwrap();
            assert!(page.items.iter().all(|m| m.state == state), "{state}");
            out[slot] += page.items.len() as u64;
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
    }
    let mut cursor = None;
    loop {
        let filter = DeadFilter {
            queue: Some(queue.to_owned()),
            limit: 500,
            cursor,
            ..DeadFilter::default()
        };
        let page = store.list_dead(&filter).await.unwrap();
        out[3] += page.items.len() as u64;
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    out
}

/// A backend's own count of a queue's scheduled, ready, leased and dead rows.
pub(crate) type CountRows<'a> = &'a dyn Fn(&str) -> [u64; 4];

/// 600 random operations of every kind on two queues (a store opened with
/// [`depth_walk_options`]); after each, every queue's depth counters must equal its listings
/// and, when given, `rows` (a backend's own count of its rows).
pub(crate) async fn depth_walk(store: &dyn Store, rows: Option<CountRows<'_>>) {
    use rand::{Rng, SeedableRng};

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
            let counters = [s.scheduled, s.ready, s.leased, s.dlq_depth];
            assert_eq!(
                counters,
                listed_depths(store, q).await,
                "queue {q} after step {step} (op {op})"
            );
            if let Some(rows) = rows {
                assert_eq!(counters, rows(q), "queue {q} after step {step} (op {op})");
            }
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

pub(super) async fn ping_answers(b: Backend) {
    let store = open(b, StoreOptions::default()).await;
    store.ping().await.unwrap();
}

pub(super) async fn optimize_runs_on_a_live_store(b: Backend) {
    let store = setup(b, "{}").await;
    store.enqueue("q", vec![msg("m")]).await.unwrap();
    store.optimize().await.unwrap();
    assert_eq!(claim_payloads(&*store, 1).await, vec!["m"]);
}

pub(super) async fn every_change_that_may_make_a_message_ready_wakes_its_queue(b: Backend) {
    use futures::FutureExt;
    use spool_model::{Delivery, Target, Timing};

    let store = setup(b, "{}").await;
    store.put_queue("other", &patch("{}")).await.unwrap();
    let signal = store.signals().get("q");
    let delivery = |payload: &str| Delivery {
        queue: "q".into(),
        message: msg(payload),
        route: None,
        filter_error: None,
    };
    // Waits for the wake-up `what` caused, then takes one that may still be pending, so the
    // next check sees only its own: PostgreSQL's listener also wakes every queue once when it
    // starts listening.
    let woken = |what: &'static str| {
        let signal = signal.clone();
        async move {
            tokio::time::timeout(Duration::from_secs(5), signal.notified())
                .await
                .unwrap_or_else(|_| panic!("{what} did not wake the queue"));
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = signal.notified().now_or_never();
        }
    };
    let claim_all = |lease_ms: u64| {
        let store = &store;
        async move { store.claim("q", 10, lease_ms).await.unwrap().messages }
    };
    let settle_all = |claimed: Vec<spool_model::Claimed>, settlement: Settlement| {
        let store = &store;
        async move {
            let settles = claimed
                .iter()
                .map(|c| settle(c.id, c.attempt, settlement.clone()))
                .collect();
            store.settle(settles).await.unwrap()
        }
    };

    enqueue_one(&*store, msg("a")).await;
    woken("an enqueue").await;
    store.publish(vec![delivery("b")]).await.unwrap();
    woken("a publish").await;
    let retry = Settlement::Retry {
        delay_ms: 0,
        error: "e".into(),
        category: ErrorCategory::Handler,
    };
    settle_all(claim_all(30_000).await, retry).await;
    woken("a retry").await;
    let requested = Settlement::RetryRequested { delay_ms: 0 };
    settle_all(claim_all(30_000).await, requested).await;
    woken("a requested retry").await;
    settle_all(claim_all(30_000).await, Settlement::Release).await;
    woken("a release").await;

    let mut claimed = claim_all(30_000).await;
    assert_eq!(claimed.len(), 2);
    let first = claimed.remove(0);
    let mut ack = settle(first.id, first.attempt, Settlement::Ack);
    ack.outbox = vec![delivery("child")];
    let dead = || Settlement::Dead {
        error: "d".into(),
        category: ErrorCategory::Handler,
    };
    let second = settle(claimed[0].id, claimed[0].attempt, dead());
    store.settle(vec![ack, second]).await.unwrap();
    woken("an outbox").await;
    settle_all(claim_all(30_000).await, dead()).await;
    let dead_letters = store.list_dead(&DeadFilter::default()).await.unwrap().items;
    assert_eq!(dead_letters.len(), 2);
    store.replay_dead(dead_letters[0].id).await.unwrap();
    woken("a replay").await;
    let matching = DeadFilter {
        queue: Some("q".into()),
        limit: 10,
        ..DeadFilter::default()
    };
    store.replay_dead_matching(&matching).await.unwrap();
    woken("a replay by filter").await;

    assert_eq!(claim_all(150).await.len(), 2);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(store.maintain().await.unwrap().leases_recovered, 2);
    woken("a lease recovery").await;
    settle_all(claim_all(30_000).await, Settlement::Ack).await;

    let delayed = enqueue_one(
        &*store,
        NewMessage {
            delay_ms: Some(3_600_000),
            ..msg("delayed")
        },
    )
    .await;
    woken("a delayed enqueue").await;
    store.requeue(delayed).await.unwrap();
    woken("a requeue").await;
    settle_all(claim_all(30_000).await, Settlement::Ack).await;

    store
        .put_queue("q", &patch(r#"{"paused": true}"#))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let _ = signal.notified().now_or_never();
    store
        .put_queue("q", &patch(r#"{"paused": false}"#))
        .await
        .unwrap();
    woken("a resume").await;

    let failed = Delivery {
        queue: "other".into(),
        filter_error: Some("filter f@1 trapped".into()),
        ..delivery("filtered")
    };
    let failed = store.publish(vec![failed]).await.unwrap()[0].id;
    store
        .replace_dead(failed, vec![delivery("routed again")])
        .await
        .unwrap();
    woken("a dead letter routed again").await;

    let now = now_ms();
    let s = store
        .create_schedule(
            NewSchedule::new(
                Timing::Every(Duration::from_secs(3_600)),
                Target::Queue("q".into()),
            ),
            now,
        )
        .await
        .unwrap();
    let fire = Delivery {
        message: spool_model::fire::fire_message(&s, now),
        ..delivery("")
    };
    store
        .run_schedule_now(s.id, now, vec![fire], now)
        .await
        .unwrap();
    woken("a schedule's fire").await;
}

pub(super) async fn history_keeps_the_last_sample_of_each_minute_for_a_week(b: Backend) {
    let store = setup(b, "{}").await;
    store.put_queue("other", &patch("{}")).await.unwrap();
    let m0 = spool_model::minute_of(now_ms()) - 120_000;
    store.enqueue("q", vec![msg("a"), msg("b")]).await.unwrap();
    assert_eq!(store.record_history(m0, 0).await.unwrap(), 2, "both queues");
    // A later sample of the same minute replaces the earlier one.
    store.enqueue("q", vec![msg("c")]).await.unwrap();
    store.record_history(m0, 0).await.unwrap();
    let c = store
        .claim("q", 1, 30_000)
        .await
        .unwrap()
        .messages
        .remove(0);
    store
        .settle(vec![settle(c.id, c.attempt, Settlement::Ack)])
        .await
        .unwrap();
    store.record_history(m0 + 60_000, 0).await.unwrap();

    let h = store.queue_history("q", 0).await.unwrap();
    assert_eq!(h.len(), 2, "{h:?}");
    assert_eq!(
        (h[0].minute, h[0].ready, h[0].enqueued, h[0].acked),
        (m0, 3, 3, 0)
    );
    assert_eq!(
        (h[1].minute, h[1].ready, h[1].enqueued, h[1].acked),
        (m0 + 60_000, 2, 3, 1)
    );
    assert!(h[1].oldest_ready_age_ms.is_some());
    assert_eq!(store.queue_history("q", m0 + 1).await.unwrap().len(), 1);
    let other = store.queue_history("other", 0).await.unwrap();
    assert_eq!(other.len(), 2);
    assert_eq!(other[1].enqueued, 0);

    // Points before `forget_before` go.
    store
        .record_history(m0 + 120_000, m0 + 60_000)
        .await
        .unwrap();
    let minutes: Vec<i64> = store
        .queue_history("q", 0)
        .await
        .unwrap()
        .iter()
        .map(|p| p.minute)
        .collect();
    assert_eq!(minutes, [m0 + 60_000, m0 + 120_000]);

    assert!(matches!(
        store.queue_history("nope", 0).await,
        Err(StoreError::QueueNotFound(_))
    ));
    // A deleted queue's history goes with it: a new queue of the name starts empty.
    store.delete_queue("other", true).await.unwrap();
    store.put_queue("other", &patch("{}")).await.unwrap();
    assert!(store.queue_history("other", 0).await.unwrap().is_empty());
}

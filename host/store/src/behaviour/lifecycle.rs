//! A message's life: TTLs, idempotency keys, cancel, requeue, settles fenced by attempt,
//! leases and their recovery, and the retention of finished messages.

use std::time::Duration;

use super::*;
use crate::StoreError;
use spool_model::{Delivery, Enqueued, ErrorCategory, QueueStats, SettleResult, now_ms};

pub(super) async fn ttl_expires_unstarted_messages(b: Backend) {
    let store = setup(b, "{}").await;
    let gone = enqueue_one(
        &*store,
        NewMessage {
            expires_at: Some(now_ms() - 1),
            idempotency_key: Some("k".into()),
            ..msg("gone")
        },
    )
    .await;
    let stays = enqueue_one(
        &*store,
        NewMessage {
            expires_at: Some(now_ms() + 60_000),
            ..msg("stays")
        },
    )
    .await;
    assert_eq!(claim_payloads(&*store, 10).await, vec!["stays"]);
    let m = store.get_message(gone).await.unwrap();
    assert_eq!(m.state, MessageState::Expired);
    assert_eq!(m.idempotency_key, None, "the key is freed");
    assert!(m.finished_at.is_some());
    assert_eq!(state_of(&*store, stays).await, MessageState::Leased);
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

pub(super) async fn ttl_does_not_expire_a_started_message_and_final_keys_stay_taken(b: Backend) {
    let store = setup(b, "{}").await;
    let id = enqueue_one(
        &*store,
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

pub(super) async fn idempotency_keys_deduplicate_and_supersede(b: Backend) {
    let store = setup(b, "{}").await;
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

pub(super) async fn idempotency_keys_are_scoped_per_producer(b: Backend) {
    let store = setup(b, "{}").await;
    let scoped = |payload: &str, scope: Option<&str>, supersede: bool| NewMessage {
        idempotency_scope: scope.map(str::to_owned),
        ..keyed(payload, "k", supersede)
    };
    let p2 = enqueue_one(&*store, scoped("p2", Some("p2"), false)).await;
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
        let store = &*store;
        async move { store.get_message(id).await.unwrap().payload.unwrap() }
    };
    assert_eq!(payload(p2).await, b"p2");
    assert_eq!(payload(p1.id).await, b"p1-new");
    // The shared scope (admin, no tokens) is a third one, shared by everyone in it.
    let shared = enqueue_one(&*store, scoped("s", None, false)).await;
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
    let fresh = enqueue_one(&*store, scoped("p2b", Some("p2"), false)).await;
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

pub(super) async fn cancel_in_each_state(b: Backend) {
    let store = setup(b, "{}").await;
    let scheduled = enqueue_one(
        &*store,
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
    assert_eq!(state_of(&*store, scheduled).await, MessageState::Cancelled);

    let ready = enqueue_one(&*store, msg("r")).await;
    assert_eq!(store.cancel(ready).await.unwrap(), MessageState::Cancelled);
    assert!(matches!(
        store.cancel(ready).await,
        Err(StoreError::InvalidState { id, state: MessageState::Cancelled, action: "cancel" }) if id == ready
    ));

    let leased = enqueue_one(&*store, msg("l")).await;
    let c = store
        .claim("q", 1, 10_000)
        .await
        .unwrap()
        .messages
        .remove(0);
    assert_eq!(c.id, leased);
    assert_eq!(store.cancel(leased).await.unwrap(), MessageState::Leased);
    assert_eq!(state_of(&*store, leased).await, MessageState::Leased);
    let r = store
        .settle(vec![settle(leased, c.attempt, Settlement::Ack)])
        .await
        .unwrap();
    assert_eq!(r, vec![SettleResult::Cancelled]);
    assert_eq!(state_of(&*store, leased).await, MessageState::Cancelled);

    let acked = enqueue_one(&*store, msg("a")).await;
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

pub(super) async fn requeue_makes_delayed_and_backing_off_messages_ready(b: Backend) {
    let store = setup(b, "{}").await;
    let delayed = enqueue_one(
        &*store,
        NewMessage {
            available_at: Some(now_ms() + 3_600_000),
            ..msg("delayed")
        },
    )
    .await;
    let failing = enqueue_one(&*store, msg("failing")).await;
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

pub(super) async fn requeue_refuses_other_states_and_changes_nothing(b: Backend) {
    let store = setup(b, "{}").await;
    let leased = enqueue_one(&*store, msg("l")).await;
    assert_eq!(
        store.claim("q", 1, 10_000).await.unwrap().messages[0].id,
        leased
    );
    let ready = enqueue_one(&*store, msg("r")).await;
    let cancelled = enqueue_one(&*store, msg("c")).await;
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

pub(super) async fn settle_is_fenced_by_attempt(b: Backend) {
    let store = setup(b, "{}").await;
    let id = enqueue_one(&*store, msg("m")).await;
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

pub(super) async fn ack_keeps_a_payload_free_record_with_plugin_version(b: Backend) {
    let store = setup(b, "{}").await;
    let id = enqueue_one(&*store, msg("m")).await;
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

pub(super) async fn zero_acked_retention_deletes_on_ack(b: Backend) {
    let opts = StoreOptions {
        acked_retention_ms: 0,
        ..StoreOptions::default()
    };
    let store = setup_with(b, "{}", opts).await;
    let id = enqueue_one(&*store, msg("m")).await;
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
    let next = enqueue_one(&*store, msg("n")).await;
    assert!(next > id);
}

pub(super) async fn retry_dead_and_release_move_messages_and_count(b: Backend) {
    let store = setup(b, "{}").await;
    let id = enqueue_one(&*store, msg("m")).await;

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
    let other = enqueue_one(&*store, msg("o")).await;
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

pub(super) async fn extend_lease_is_fenced(b: Backend) {
    let store = setup(b, "{}").await;
    let id = enqueue_one(&*store, msg("m")).await;
    let c = store.claim("q", 1, 1_000).await.unwrap().messages.remove(0);
    assert!(store.extend_lease(id, c.attempt, 60_000).await.unwrap());
    let m = store.get_message(id).await.unwrap();
    assert!(m.lease_expires_at.unwrap() >= now_ms() + 59_000);
    assert!(!store.extend_lease(id, c.attempt + 1, 60_000).await.unwrap());
}

pub(super) async fn maintain_recovers_expired_leases(b: Backend) {
    let store = setup(b, r#"{"max_attempts": 2}"#).await;
    let id = enqueue_one(&*store, msg("m")).await;
    let cancelled = enqueue_one(&*store, msg("c")).await;
    let first = store.claim("q", 2, 250).await.unwrap().messages;
    assert_eq!(first.len(), 2);
    store.cancel(cancelled).await.unwrap();
    let before = store.maintain().await.unwrap();
    assert_eq!(before.leases_recovered, 0, "leases not yet expired");

    tokio::time::sleep(Duration::from_millis(350)).await;
    let report = store.maintain().await.unwrap();
    assert_eq!(report.leases_recovered, 1);
    assert_eq!(state_of(&*store, cancelled).await, MessageState::Cancelled);
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

pub(super) async fn maintain_applies_retention_windows(b: Backend) {
    let opts = StoreOptions {
        acked_retention_ms: 250,
        dead_retention_ms: 250,
        sync_full: true,
        ..StoreOptions::default()
    };
    let store = setup_with(b, "{}", opts).await;
    let acked = enqueue_one(&*store, msg("a")).await;
    let dead = enqueue_one(&*store, msg("d")).await;
    let unreviewed = enqueue_one(&*store, msg("u")).await;
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
    assert_eq!(state_of(&*store, unreviewed).await, MessageState::Dead);
}

pub(super) async fn a_requested_retry_records_no_error_and_keeps_the_last_real_one(b: Backend) {
    let store = setup(b, "{}").await;
    let id = enqueue_one(&*store, msg("m")).await;
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

pub(super) async fn one_settle_batch_applies_each_kind_independently(b: Backend) {
    let store = store_with(b, &["q", "out"]).await;
    store
        .enqueue("q", (0..5).map(|i| msg(&i.to_string())).collect())
        .await
        .unwrap();
    let m = store.claim("q", 5, 30_000).await.unwrap().messages;
    assert_eq!(m.len(), 5);
    let mut ack_with_outbox = settle(m[0].id, 1, Settlement::Ack);
    ack_with_outbox.outbox = vec![Delivery {
        queue: "out".into(),
        message: msg("published"),
        route: None,
        filter_error: None,
    }];
    let retry = Settlement::Retry {
        delay_ms: 60_000,
        error: "boom".into(),
        category: ErrorCategory::Trap,
    };
    let dead = Settlement::Dead {
        error: "bad".into(),
        category: ErrorCategory::Handler,
    };
    let results = store
        .settle(vec![
            ack_with_outbox,
            settle(m[1].id, 1, retry),
            settle(m[2].id, 1, dead),
            settle(m[3].id, 1, Settlement::Release),
            settle(m[4].id, 7, Settlement::Ack),
        ])
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
    let expected = [
        MessageState::Acked,
        MessageState::Scheduled,
        MessageState::Dead,
        MessageState::Ready,
        // A lost lease changes nothing.
        MessageState::Leased,
    ];
    for (c, state) in m.iter().zip(expected) {
        assert_eq!(state_of(&*store, c.id).await, state, "message {}", c.id);
    }
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
            .settle(vec![settle(m[0].id, 1, Settlement::Ack)])
            .await
            .unwrap(),
        [SettleResult::LeaseLost]
    );
    let again = store.claim("q", 5, 30_000).await.unwrap().messages;
    assert_eq!(again.len(), 1);
    assert_eq!((again[0].id, again[0].attempt), (m[3].id, 1));
}

// --- rules DESIGN §3 leaves open, pinned for both backends (see `sqlite/mod.rs`) ------------------

pub(super) async fn a_ttl_counts_from_when_the_message_becomes_deliverable(b: Backend) {
    let store = setup(b, "{}").await;
    let before = now_ms();
    let delayed = enqueue_one(
        &*store,
        NewMessage {
            delay_ms: Some(60_000),
            ttl_ms: Some(1_000),
            ..msg("d")
        },
    )
    .await;
    let m = store.get_message(delayed).await.unwrap();
    assert_eq!(m.state, MessageState::Scheduled);
    assert!(m.available_at >= before + 60_000, "{m:?}");
    // A TTL shorter than the delay would otherwise always expire the message unseen.
    assert_eq!(m.expires_at, Some(m.available_at + 1_000));

    // An explicit time and deadline win over a delay and a TTL.
    let at = now_ms() + 120_000;
    let explicit = enqueue_one(
        &*store,
        NewMessage {
            available_at: Some(at),
            delay_ms: Some(1),
            expires_at: Some(at + 5_000),
            ttl_ms: Some(1),
            ..msg("e")
        },
    )
    .await;
    let m = store.get_message(explicit).await.unwrap();
    assert_eq!((m.available_at, m.expires_at), (at, Some(at + 5_000)));

    // A supersede brings its own deadline, none included.
    let id = enqueue_one(
        &*store,
        NewMessage {
            ttl_ms: Some(60_000),
            ..keyed("v1", "k", false)
        },
    )
    .await;
    assert!(store.get_message(id).await.unwrap().expires_at.is_some());
    let again = store
        .enqueue("q", vec![keyed("v2", "k", true)])
        .await
        .unwrap()[0];
    assert_eq!(again, Enqueued { id, existing: true });
    let m = store.get_message(id).await.unwrap();
    assert_eq!(
        (m.payload.as_deref(), m.expires_at),
        (Some(&b"v2"[..]), None)
    );
}

pub(super) async fn a_released_message_can_expire_but_a_recovered_lease_cannot(b: Backend) {
    let store = setup(b, "{}").await;
    let ttl = |payload: &str| NewMessage {
        ttl_ms: Some(300),
        ..msg(payload)
    };
    let released = enqueue_one(&*store, ttl("released")).await;
    let recovered = enqueue_one(&*store, ttl("recovered")).await;
    let claimed = store.claim("q", 2, 200).await.unwrap().messages;
    assert_eq!(claimed.len(), 2);
    // A release gives the attempt back: the message counts as never started.
    store
        .settle(vec![settle(released, 1, Settlement::Release)])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(450)).await;
    let report = store.maintain().await.unwrap();
    assert_eq!((report.leases_recovered, report.expired), (1, 1));
    let m = store.get_message(released).await.unwrap();
    assert_eq!(m.state, MessageState::Expired);
    // A recovered lease was started: its TTL no longer applies.
    let m = store.get_message(recovered).await.unwrap();
    assert_eq!((m.state, m.attempts), (MessageState::Ready, 1));
    assert_eq!(
        m.last_error.as_deref(),
        Some("lease expired (handler host died or stalled)")
    );
    let c = store
        .claim("q", 10, 30_000)
        .await
        .unwrap()
        .messages
        .into_iter()
        .map(|c| (c.id, c.attempt))
        .collect::<Vec<_>>();
    assert_eq!(c, [(recovered, 2)]);
    let s = store.queue_stats("q").await.unwrap();
    assert_eq!((s.expired, s.leased, s.ready), (1, 1, 0), "{s:?}");
}

pub(super) async fn replay_clears_the_ttl_and_counts_lease_expiries_afresh(b: Backend) {
    let store = setup(b, r#"{"max_attempts": 1}"#).await;
    let id = enqueue_one(
        &*store,
        NewMessage {
            ttl_ms: Some(60_000),
            ..msg("m")
        },
    )
    .await;
    let expire_lease = || async {
        let c = store.claim("q", 1, 150).await.unwrap().messages;
        assert_eq!(c.len(), 1);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let report = store.maintain().await.unwrap();
        assert_eq!(report.leases_dead, 1, "{report:?}");
        let m = store.get_message(id).await.unwrap();
        assert_eq!(m.state, MessageState::Dead);
        assert_eq!(m.error_category, Some(ErrorCategory::LeaseExpired));
        assert_eq!(
            m.last_error.as_deref(),
            Some("lease expired 1 times (handler host died or stalled)"),
            "the count starts again after a replay"
        );
    };
    expire_lease().await;
    store.replay_dead(id).await.unwrap();
    let m = store.get_message(id).await.unwrap();
    assert_eq!(
        (m.state, m.attempts, m.expires_at, m.finished_at),
        (MessageState::Ready, 0, None, None)
    );
    expire_lease().await;
}

pub(super) async fn a_dead_letter_keeps_its_idempotency_key_until_purged(b: Backend) {
    let store = setup(b, "{}").await;
    let id = enqueue_one(&*store, keyed("v1", "k", false)).await;
    let c = store.claim("q", 1, 30_000).await.unwrap().messages;
    let dead = Settlement::Dead {
        error: "x".into(),
        category: ErrorCategory::Handler,
    };
    store
        .settle(vec![settle(id, c[0].attempt, dead)])
        .await
        .unwrap();
    // A dead letter is still the message for its key, and a supersede does not revive it.
    let again = store
        .enqueue("q", vec![keyed("v2", "k", true)])
        .await
        .unwrap()[0];
    assert_eq!(again, Enqueued { id, existing: true });
    let m = store.get_message(id).await.unwrap();
    assert_eq!(
        (m.state, m.payload.as_deref(), m.idempotency_key.as_deref()),
        (MessageState::Dead, Some(&b"v1"[..]), Some("k"))
    );
    // Replayed, it is live again under the key: a supersede replaces it.
    store.replay_dead(id).await.unwrap();
    store
        .enqueue("q", vec![keyed("v3", "k", true)])
        .await
        .unwrap();
    let m = store.get_message(id).await.unwrap();
    assert_eq!(
        (m.state, m.payload.as_deref()),
        (MessageState::Ready, Some(&b"v3"[..]))
    );
    // Purged, the key is free.
    let c = store.claim("q", 1, 30_000).await.unwrap().messages;
    let dead = Settlement::Dead {
        error: "x".into(),
        category: ErrorCategory::Handler,
    };
    store
        .settle(vec![settle(id, c[0].attempt, dead)])
        .await
        .unwrap();
    store.purge_dead(id).await.unwrap();
    let fresh = store
        .enqueue("q", vec![keyed("v4", "k", false)])
        .await
        .unwrap()[0];
    assert!(!fresh.existing && fresh.id > id, "{fresh:?}");
}

pub(super) async fn a_cancel_requested_during_a_lease_wins_over_any_settlement(b: Backend) {
    let store = setup(b, "{}").await;
    let settlements = [
        Settlement::Ack,
        Settlement::Retry {
            delay_ms: 0,
            error: "e".into(),
            category: ErrorCategory::Handler,
        },
        Settlement::RetryRequested { delay_ms: 0 },
        Settlement::Dead {
            error: "d".into(),
            category: ErrorCategory::Trap,
        },
        Settlement::Release,
    ];
    for (i, settlement) in settlements.into_iter().enumerate() {
        let key = format!("k{i}");
        let id = enqueue_one(&*store, keyed("m", &key, false)).await;
        let c = store.claim("q", 1, 30_000).await.unwrap().messages;
        assert_eq!(c[0].id, id);
        assert_eq!(store.cancel(id).await.unwrap(), MessageState::Leased);
        let mut s = settle(id, c[0].attempt, settlement.clone());
        s.plugin_version = Some("h@2".into());
        assert_eq!(
            store.settle(vec![s]).await.unwrap(),
            [SettleResult::Cancelled],
            "{settlement:?}"
        );
        let m = store.get_message(id).await.unwrap();
        assert_eq!(m.state, MessageState::Cancelled, "{settlement:?}");
        assert_eq!(m.plugin_version.as_deref(), Some("h@2"));
        assert!(
            m.finished_at.is_some() && m.lease_expires_at.is_none(),
            "{m:?}"
        );
        // The key is free again.
        let fresh = store
            .enqueue("q", vec![keyed("n", &key, false)])
            .await
            .unwrap()[0];
        assert!(!fresh.existing, "{settlement:?}");
        store.cancel(fresh.id).await.unwrap();
    }
    let s = store.queue_stats("q").await.unwrap();
    assert_eq!(
        (s.cancelled, s.acked, s.retried, s.dead),
        (10, 0, 0, 0),
        "{s:?}"
    );
    assert_eq!((s.ready, s.leased, s.scheduled, s.dlq_depth), (0, 0, 0, 0));
}

pub(super) async fn errors_are_cut_to_8_kib_and_plugin_versions_are_kept(b: Backend) {
    let store = setup(b, "{}").await;
    let id = enqueue_one(&*store, msg("m")).await;
    // 3-byte characters: 8 KiB falls inside one, and the cut must not split it.
    let long = "€".repeat(4_000);
    let c = store.claim("q", 1, 30_000).await.unwrap().messages;
    let mut retry = settle(
        id,
        c[0].attempt,
        Settlement::Retry {
            delay_ms: 0,
            error: long.clone(),
            category: ErrorCategory::Handler,
        },
    );
    retry.plugin_version = Some("h@1".into());
    store.settle(vec![retry]).await.unwrap();
    let m = store.get_message(id).await.unwrap();
    let error = m.last_error.unwrap();
    assert_eq!(
        error.len(),
        8_190,
        "the longest whole-character prefix of 8,192 bytes"
    );
    assert!(long.starts_with(&error));
    assert_eq!(m.plugin_version.as_deref(), Some("h@1"));
    // A settle without a version leaves the one recorded.
    let c = store.claim("q", 1, 30_000).await.unwrap().messages;
    store
        .settle(vec![settle(id, c[0].attempt, Settlement::Ack)])
        .await
        .unwrap();
    let m = store.get_message(id).await.unwrap();
    assert_eq!(
        (m.state, m.plugin_version.as_deref()),
        (MessageState::Acked, Some("h@1"))
    );
}

pub(super) async fn extend_lease_needs_a_live_lease(b: Backend) {
    let store = setup(b, "{}").await;
    let ready = enqueue_one(&*store, msg("r")).await;
    assert!(!store.extend_lease(ready, 0, 60_000).await.unwrap());
    assert!(!store.extend_lease(ready, 1, 60_000).await.unwrap());
    assert!(!store.extend_lease(999_999, 1, 60_000).await.unwrap());
    let c = store.claim("q", 1, 30_000).await.unwrap().messages;
    store
        .settle(vec![settle(ready, c[0].attempt, Settlement::Ack)])
        .await
        .unwrap();
    assert!(
        !store
            .extend_lease(ready, c[0].attempt, 60_000)
            .await
            .unwrap()
    );
    assert_eq!(state_of(&*store, ready).await, MessageState::Acked);
    assert_eq!(
        store.get_message(ready).await.unwrap().lease_expires_at,
        None
    );
}

pub(super) async fn the_oldest_ready_age_counts_from_the_enqueue(b: Backend) {
    let store = setup(b, "{}").await;
    assert_eq!(
        store.queue_stats("q").await.unwrap().oldest_ready_age_ms,
        None
    );
    // Not ready: not counted.
    enqueue_one(
        &*store,
        NewMessage {
            delay_ms: Some(60_000),
            ..msg("later")
        },
    )
    .await;
    assert_eq!(
        store.queue_stats("q").await.unwrap().oldest_ready_age_ms,
        None
    );
    let before = now_ms();
    let id = enqueue_one(&*store, msg("now")).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let age = store.queue_stats("q").await.unwrap().oldest_ready_age_ms;
    let waited = (now_ms() - before) as u64;
    assert!(
        age.is_some_and(|a| (200..=waited).contains(&a)),
        "{age:?} after {waited} ms"
    );
    let (_, all) = store.all_queue_stats().await.unwrap().remove(0);
    assert!(all.oldest_ready_age_ms.is_some_and(|a| a >= 200), "{all:?}");
    assert_eq!(claim_payloads(&*store, 10).await, ["now"]);
    assert_eq!(state_of(&*store, id).await, MessageState::Leased);
    assert_eq!(
        store.queue_stats("q").await.unwrap().oldest_ready_age_ms,
        None
    );
}

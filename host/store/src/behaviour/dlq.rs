//! The dead-letter queue: listing with filters and pages, replay, review and purge.

use super::*;
use crate::{DeadFilter, StoreError};
use spool_model::ErrorCategory;

pub(super) async fn dlq_list_filter_paginate_replay_review_purge(b: Backend) {
    let store = setup(b, "{}").await;
    store.put_queue("other", &patch("{}")).await.unwrap();
    let mut dead = Vec::new();
    for i in 0..5 {
        let category = if i % 2 == 0 {
            ErrorCategory::Trap
        } else {
            ErrorCategory::Fuel
        };
        let id = enqueue_one(&*store, msg(&format!("d{i}"))).await;
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

pub(super) async fn dead_letters_matching_a_filter_are_replayed_and_purged_oldest_first(
    b: Backend,
) {
    let store = setup(b, "{}").await;
    store
        .enqueue("q", (0..5).map(|i| msg(&i.to_string())).collect())
        .await
        .unwrap();
    let claimed = store.claim("q", 5, 30_000).await.unwrap().messages;
    let dead = claimed
        .iter()
        .map(|c| {
            let s = Settlement::Dead {
                error: "bad".into(),
                category: ErrorCategory::Handler,
            };
            settle(c.id, c.attempt, s)
        })
        .collect();
    store.settle(dead).await.unwrap();
    let all = DeadFilter {
        queue: Some("q".into()),
        limit: 100,
        ..DeadFilter::default()
    };
    assert_eq!(store.list_dead(&all).await.unwrap().items.len(), 5);
    let ids: Vec<MessageId> = claimed.iter().map(|c| c.id).collect();

    store.mark_reviewed(ids[0]).await.unwrap();
    let reviewed = DeadFilter {
        reviewed: Some(true),
        ..all.clone()
    };
    assert_eq!(store.list_dead(&reviewed).await.unwrap().items.len(), 1);
    store.replay_dead(ids[0]).await.unwrap();
    assert_eq!(state_of(&*store, ids[0]).await, MessageState::Ready);
    assert!(matches!(
        store.replay_dead(ids[0]).await,
        Err(StoreError::DeadLetterNotFound(_))
    ));
    store.purge_dead(ids[1]).await.unwrap();
    // By filter: the oldest `limit` that match, in one go.
    let two = DeadFilter {
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
            .list_dead(&DeadFilter {
                queue: Some("nope".into()),
                ..DeadFilter::default()
            })
            .await,
        Err(StoreError::QueueNotFound(_))
    ));
}

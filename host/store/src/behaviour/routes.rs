//! Routes, publishes, the outbox of an ack, reserved ids and traces.

use super::*;
use crate::StoreError;
use spool_model::{Delivery, ErrorCategory, FilterLimits, NewRoute, RouteId, SettleResult};

fn route(pattern: &str, queue: &str) -> NewRoute {
    NewRoute {
        pattern: pattern.to_owned(),
        queue: queue.to_owned(),
        ..NewRoute::default()
    }
}
fn delivery(queue: &str, payload: &str, route: Option<RouteId>) -> Delivery {
    Delivery {
        queue: queue.to_owned(),
        message: NewMessage {
            payload: payload.as_bytes().to_vec(),
            topic: Some("t".to_owned()),
            ..NewMessage::default()
        },
        route,
        filter_error: None,
    }
}
pub(super) async fn routes_are_created_once_listed_and_deleted(b: Backend) {
    let store = store_with(b, &["a"]).await;
    let mut new = route("orders.#", "a");
    new.headers = vec![("z".into(), "1".into()), ("a".into(), "2".into())];
    new.limits = FilterLimits {
        timeout_ms: Some(50),
        ..FilterLimits::default()
    };
    let (r, created) = store.create_route(new.clone()).await.unwrap();
    assert!(created);
    assert_eq!(
        r.headers,
        vec![("a".into(), "2".into()), ("z".into(), "1".into())]
    );
    assert_eq!(r.limits.timeout_ms, Some(50));
    let (again, created) = store.create_route(new).await.unwrap();
    assert!(!created, "an identical route is found, not duplicated");
    assert_eq!(again.id, r.id);
    let (other, created) = store.create_route(route("orders.#", "a")).await.unwrap();
    assert!(created, "different headers and limits make another route");
    assert_ne!(other.id, r.id);
    assert_eq!(store.list_routes().await.unwrap().len(), 2);
    assert_eq!(store.delete_route(r.id).await.unwrap().id, r.id);
    assert!(matches!(
        store.delete_route(r.id).await,
        Err(StoreError::RouteNotFound(_))
    ));
    assert_eq!(store.list_routes().await.unwrap().len(), 1);
}

pub(super) async fn a_route_needs_its_queue_and_a_filter_world_plugin(b: Backend) {
    let store = store_with(b, &["a"]).await;
    assert!(matches!(
        store.create_route(route("x", "missing")).await,
        Err(StoreError::QueueNotFound(_))
    ));
    let mut filtered = route("x", "a");
    filtered.filter = Some("nope".into());
    assert!(matches!(
        store.create_route(filtered.clone()).await,
        Err(StoreError::PluginNotFound(_))
    ));
    let sha = "a".repeat(64);
    store
        .put_plugin("nope", "handler", &sha, b"\0asm".to_vec(), None)
        .await
        .unwrap();
    let err = store.create_route(filtered.clone()).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::WrongWorld(m) if m.contains("not a filter")),
        "{err}"
    );
    let sha = "b".repeat(64);
    store
        .put_plugin("f", "filter", &sha, b"\0asm1".to_vec(), None)
        .await
        .unwrap();
    filtered.filter = Some("f".into());
    let (r, _) = store.create_route(filtered).await.unwrap();
    // The filter cannot become a handler, nor be deleted, while the route uses it.
    let sha = "c".repeat(64);
    let err = store
        .put_plugin("f", "handler", &sha, b"\0asm2".to_vec(), None)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::WrongWorld(_)), "{err}");
    let err = store.delete_plugin("f").await.unwrap_err();
    assert!(
        matches!(&err, StoreError::PluginInUse { routes, .. } if routes == &[r.id]),
        "{err}"
    );
    // Nor can the route's queue go without `force`, which takes the route along.
    let err = store.delete_queue("a", false).await.unwrap_err();
    assert!(matches!(err, StoreError::QueueHasRoutes { .. }), "{err}");
    let deleted = store.delete_queue("a", true).await.unwrap();
    assert_eq!(deleted.routes, 1);
    assert!(store.list_routes().await.unwrap().is_empty());
    store.delete_plugin("f").await.unwrap();
}

pub(super) async fn a_publish_writes_every_delivery_or_none_and_counts_per_route(b: Backend) {
    let store = store_with(b, &["a", "b"]).await;
    let (ra, _) = store.create_route(route("t", "a")).await.unwrap();
    let (rb, _) = store.create_route(route("t", "b")).await.unwrap();
    let out = store
        .publish(vec![
            delivery("a", "1", Some(ra.id)),
            delivery("b", "1", Some(rb.id)),
            delivery("a", "2", Some(ra.id)),
        ])
        .await
        .unwrap();
    assert_eq!(out.len(), 3);
    let queues: Vec<String> =
        futures::future::join_all(out.iter().map(|e| store.get_message(e.id)))
            .await
            .into_iter()
            .map(|m| m.unwrap().queue)
            .collect();
    assert_eq!(
        queues,
        ["a", "b", "a"],
        "entries come back in the caller's order"
    );
    let a = store.get_message(out[2].id).await.unwrap();
    assert_eq!(a.payload.as_deref(), Some(&b"2"[..]));
    assert_eq!(a.route_id, Some(ra.id));
    let routes = store.list_routes().await.unwrap();
    assert_eq!(
        routes.iter().map(|r| r.delivered).collect::<Vec<_>>(),
        [2, 1]
    );

    // One delivery to a missing queue fails them all.
    let err = store
        .publish(vec![delivery("a", "3", None), delivery("gone", "3", None)])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::QueueNotFound(_)));
    assert_eq!(store.queue_stats("a").await.unwrap().ready, 2);
}

pub(super) async fn a_failed_filter_delivery_is_a_dead_letter_that_can_be_routed_again(b: Backend) {
    let store = store_with(b, &["a", "b"]).await;
    let mut d = delivery("a", "x", None);
    d.filter_error = Some("filter f@1 trapped".into());
    let id = store.publish(vec![d]).await.unwrap()[0].id;
    let m = store.get_message(id).await.unwrap();
    assert_eq!(m.state, MessageState::Dead);
    assert_eq!(m.error_category, Some(ErrorCategory::Filter));
    assert_eq!(m.payload.as_deref(), Some(&b"x"[..]));
    let stats = store.queue_stats("a").await.unwrap();
    assert_eq!((stats.ready, stats.dlq_depth), (0, 1));

    let out = store
        .replace_dead(id, vec![delivery("b", "x", None)])
        .await
        .unwrap();
    assert!(matches!(
        store.get_message(id).await,
        Err(StoreError::MessageNotFound(_))
    ));
    assert_eq!(store.get_message(out[0].id).await.unwrap().queue, "b");
    assert_eq!(store.queue_stats("a").await.unwrap().dlq_depth, 0);
    assert!(matches!(
        store.replace_dead(id, vec![]).await,
        Err(StoreError::DeadLetterNotFound(_))
    ));
}

pub(super) async fn the_outbox_commits_with_an_ack_and_never_otherwise(b: Backend) {
    let store = store_with(b, &["q", "out"]).await;
    store
        .enqueue("q", vec![NewMessage::default(), NewMessage::default()])
        .await
        .unwrap();
    let claimed = store.claim("q", 2, 30_000).await.unwrap().messages;
    let ids = store.reserve_ids(2).await.unwrap();
    assert_eq!(ids.len(), 2);
    let (first, second) = (ids[0], ids[1]);
    assert!(first < second, "reserved ids increase: {ids:?}");
    if b == Backend::Sqlite {
        // SQLite has one writer and reserves a consecutive run. Hosts sharing a PostgreSQL
        // database draw from one sequence at once, so the trait promises increasing ids only.
        assert_eq!(second, first + 1, "SQLite reserves a consecutive run");
    }
    let outbox = |id: MessageId, parent: MessageId| {
        let mut d = delivery("out", "child", None);
        d.message.id = Some(id);
        d.message.parent_id = Some(parent);
        d.message.depth = 1;
        d.message.correlation_id = Some(parent.to_string());
        vec![d]
    };
    let settled = store
        .settle(vec![
            Settle {
                id: claimed[0].id,
                attempt: claimed[0].attempt,
                settlement: Settlement::Ack,
                plugin_version: Some("h@1".into()),
                outbox: outbox(first, claimed[0].id),
            },
            Settle {
                id: claimed[1].id,
                attempt: claimed[1].attempt,
                settlement: Settlement::RetryRequested { delay_ms: 0 },
                plugin_version: None,
                outbox: outbox(second, claimed[1].id),
            },
        ])
        .await
        .unwrap();
    assert_eq!(settled, [SettleResult::Applied, SettleResult::Applied]);
    let child = store.get_message(first).await.unwrap();
    assert_eq!(
        (child.queue.as_str(), child.parent_id, child.depth),
        ("out", Some(claimed[0].id), 1)
    );
    assert!(matches!(
        store.get_message(second).await,
        Err(StoreError::MessageNotFound(_))
    ));
    assert_eq!(store.queue_stats("out").await.unwrap().ready, 1);

    // A stale ack (lease lost) writes nothing either.
    let again = store.claim("q", 1, 30_000).await.unwrap().messages;
    let stale = store
        .settle(vec![Settle {
            id: again[0].id,
            attempt: again[0].attempt - 1,
            settlement: Settlement::Ack,
            plugin_version: None,
            outbox: outbox(second, again[0].id),
        }])
        .await
        .unwrap();
    assert_eq!(stale, [SettleResult::LeaseLost]);
    assert_eq!(store.queue_stats("out").await.unwrap().ready, 1);

    // Reserved ids are never handed out again.
    let next = store
        .enqueue("q", vec![NewMessage::default()])
        .await
        .unwrap()[0]
        .id;
    assert!(next > second);
}

pub(super) async fn a_trace_is_the_whole_correlation_tree(b: Backend) {
    let store = store_with(b, &["q", "out"]).await;
    let root = store
        .enqueue("q", vec![NewMessage::default()])
        .await
        .unwrap()[0]
        .id;
    let child = |parent: MessageId| {
        let mut d = delivery("out", "c", None);
        d.message.parent_id = Some(parent);
        d.message.correlation_id = Some(root.to_string());
        d
    };
    let kids = store.publish(vec![child(root), child(root)]).await.unwrap();
    let grandchild = store.publish(vec![child(kids[0].id)]).await.unwrap()[0].id;
    let unrelated = store
        .enqueue("q", vec![NewMessage::default()])
        .await
        .unwrap()[0]
        .id;
    for id in [root, kids[1].id, grandchild] {
        let (correlation, entries) = store.trace(id).await.unwrap();
        assert_eq!(correlation, root.to_string());
        let ids: Vec<MessageId> = entries.iter().map(|e| e.id).collect();
        assert_eq!(ids, [root, kids[0].id, kids[1].id, grandchild]);
        assert_eq!(entries[3].parent_id, Some(kids[0].id));
    }
    let (_, alone) = store.trace(unrelated).await.unwrap();
    assert_eq!(alone.len(), 1);
    assert!(matches!(
        store.trace(999_999).await,
        Err(StoreError::MessageNotFound(_))
    ));
}

pub(super) async fn a_queue_keeps_its_messages_and_routes_unless_forced(b: Backend) {
    let store = store_with(b, &["orders"]).await;
    let (r, _) = store
        .create_route(route("orders.#", "orders"))
        .await
        .unwrap();
    let (other, _) = store
        .create_route(route("orders.*", "orders"))
        .await
        .unwrap();
    store
        .publish(vec![delivery("orders", "m", Some(r.id))])
        .await
        .unwrap();
    assert_eq!(store.list_routes().await.unwrap()[0].delivered, 1);

    // Live messages are what a delete without `force` names first; then the routes.
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
        .settle(vec![Settle {
            id: c.id,
            attempt: c.attempt,
            settlement: Settlement::Ack,
            plugin_version: None,
            outbox: Vec::new(),
        }])
        .await
        .unwrap();
    let err = store.delete_queue("orders", false).await.unwrap_err();
    assert!(
        matches!(&err, StoreError::QueueHasRoutes { queue, routes }
            if queue == "orders" && routes == &[r.id, other.id]),
        "{err}"
    );
    assert_eq!(store.delete_route(r.id).await.unwrap().id, r.id);
    let deleted = store.delete_queue("orders", true).await.unwrap();
    assert_eq!((deleted.acked, deleted.routes), (1, 1), "{deleted:?}");
    assert!(store.list_routes().await.unwrap().is_empty());
    assert!(matches!(
        store.get_queue("orders").await,
        Err(StoreError::QueueNotFound(_))
    ));
}

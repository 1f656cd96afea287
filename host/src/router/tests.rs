//! The router against a real store and real filter plugins.

use std::collections::HashMap;
use std::sync::Arc;

use tempfile::TempDir;

use super::*;
use crate::model::{FilterLimits, QueueConfigPatch};
use crate::runtime::testutil::plugin_wasm;
use crate::runtime::{Runtime, RuntimeOptions};
use crate::store::StoreOptions;
use crate::store::sqlite::SqliteStore;

struct Fixture {
    router: Router,
    store: Arc<dyn Store>,
    _dir: TempDir,
}

async fn fixture(queues: &[&str], options: RouterOptions) -> Fixture {
    let dir = TempDir::new().unwrap();
    let store: Arc<dyn Store> =
        Arc::new(SqliteStore::open(&dir.path().join("spool.db"), StoreOptions::default()).unwrap());
    for q in queues {
        store
            .put_queue(q, &QueueConfigPatch::default())
            .await
            .unwrap();
    }
    let runtime = Runtime::new(RuntimeOptions {
        cache_dir: dir.path().join("cache"),
        max_instances: 8,
        max_memory_mb: 64,
        ..RuntimeOptions::default()
    })
    .unwrap();
    let registry = Arc::new(PluginRegistry::new(store.clone(), runtime, HashMap::new()));
    registry
        .deploy("route-all", plugin_wasm("route_all"), None)
        .await
        .unwrap();
    registry
        .deploy("misbehave", plugin_wasm("misbehave"), None)
        .await
        .unwrap();
    Fixture {
        router: Router::new(store.clone(), registry, options),
        store,
        _dir: dir,
    }
}

fn msg(payload: &str) -> NewMessage {
    NewMessage {
        payload: payload.as_bytes().to_vec(),
        ..NewMessage::default()
    }
}

fn route(pattern: &str, queue: &str) -> NewRoute {
    NewRoute {
        pattern: pattern.to_owned(),
        queue: queue.to_owned(),
        ..NewRoute::default()
    }
}

fn queues(published: &[Published]) -> Vec<&str> {
    published.iter().map(|p| p.queue.as_str()).collect()
}

#[tokio::test]
async fn fan_out_follows_patterns_and_headers_and_each_queue_gets_a_message_once() {
    let f = fixture(&["all", "eu", "paid", "vip"], RouterOptions::default()).await;
    f.router.add_route(route("orders.#", "all")).await.unwrap();
    f.router
        .add_route(route("orders.eu.*", "eu"))
        .await
        .unwrap();
    f.router.add_route(route("#.paid", "paid")).await.unwrap();
    // A second route to `all` must not deliver twice.
    f.router.add_route(route("*.eu.#", "all")).await.unwrap();
    let mut vip = route("orders.#", "vip");
    vip.headers = vec![("tier".into(), "gold".into())];
    f.router.add_route(vip).await.unwrap();

    let p = f
        .router
        .publish("orders.eu.paid", vec![msg("1")])
        .await
        .unwrap();
    assert_eq!(queues(&p), ["all", "eu", "paid"]);
    let mut gold = msg("2");
    gold.headers = vec![("Tier".into(), "gold".into())];
    let p = f.router.publish("orders", vec![gold]).await.unwrap();
    assert_eq!(queues(&p), ["all", "vip"]);
    let routes = f.router.routes().await.unwrap();
    let delivered: Vec<u64> = routes.iter().map(|r| r.delivered).collect();
    assert_eq!(delivered, [2, 1, 1, 0, 1]);
}

#[tokio::test]
async fn unroutable_messages_are_refused_or_kept_and_the_implicit_route_can_be_off() {
    let f = fixture(&["orders"], RouterOptions::default()).await;
    // No route: the queue named like the topic.
    let p = f.router.publish("orders", vec![msg("1")]).await.unwrap();
    assert_eq!(queues(&p), ["orders"]);
    let err = f
        .router
        .publish("nowhere", vec![msg("1"), msg("2")])
        .await
        .unwrap_err();
    assert!(matches!(err, RouteError::NoRoute { .. }), "{err}");
    assert_eq!(
        f.router.stats().unroutable,
        1,
        "a refused publish counts once"
    );

    let f = fixture(
        &["orders", "lost"],
        RouterOptions {
            implicit_routes: false,
            unroutable_queue: Some("lost".into()),
            ..RouterOptions::default()
        },
    )
    .await;
    let p = f
        .router
        .publish("orders", vec![msg("1"), msg("2")])
        .await
        .unwrap();
    assert_eq!(queues(&p), ["lost", "lost"]);
    assert_eq!(f.router.stats().unroutable, 2);
}

#[tokio::test]
async fn reach_names_the_matching_routes_and_the_fallback_without_writing() {
    let f = fixture(&["all", "eu", "orders.eu"], RouterOptions::default()).await;
    f.router.add_route(route("orders.#", "all")).await.unwrap();
    f.router.add_route(route("*.eu", "eu")).await.unwrap();
    let reach = f.router.reach("orders.eu").await.unwrap();
    let found: Vec<&str> = reach.routes.iter().map(|r| r.queue.as_str()).collect();
    assert_eq!(found, ["all", "eu"]);
    assert_eq!(reach.otherwise, Otherwise::Implicit("orders.eu".into()));
    let reach = f.router.reach("billing").await.unwrap();
    assert!(reach.routes.is_empty());
    assert_eq!(reach.otherwise, Otherwise::Refused);
    assert!(matches!(
        f.router.reach("orders.*").await,
        Err(RouteError::InvalidTopic(_))
    ));
    assert_eq!(f.store.queue_stats("all").await.unwrap().ready, 0);
    assert_eq!(f.router.stats().unroutable, 0, "asking is not publishing");

    let f = fixture(
        &["lost"],
        RouterOptions {
            unroutable_queue: Some("lost".into()),
            ..RouterOptions::default()
        },
    )
    .await;
    let reach = f.router.reach("billing").await.unwrap();
    assert_eq!(reach.otherwise, Otherwise::Unroutable("lost".into()));
}

#[tokio::test]
async fn routes_are_checked_before_they_are_stored() {
    let f = fixture(&["q"], RouterOptions::default()).await;
    for bad in ["", "a..b", "a*", "#b", "a b"] {
        let err = f.router.add_route(route(bad, "q")).await.unwrap_err();
        assert!(matches!(err, RouteError::InvalidRoute(_)), "{bad:?}: {err}");
    }
    let err = f.router.add_route(route("a", "missing")).await.unwrap_err();
    assert!(
        matches!(err, RouteError::Store(StoreError::QueueNotFound(_))),
        "{err}"
    );
    let mut handler_as_filter = route("a", "q");
    handler_as_filter.filter = Some("misbehave".into());
    let err = f.router.add_route(handler_as_filter).await.unwrap_err();
    assert!(
        matches!(err, RouteError::Store(StoreError::WrongWorld(_))),
        "{err}"
    );
    let mut limits_without_filter = route("a", "q");
    limits_without_filter.limits = FilterLimits {
        fuel: Some(10),
        ..FilterLimits::default()
    };
    assert!(f.router.add_route(limits_without_filter).await.is_err());
    assert!(f.router.routes().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_filter_decides_and_a_failing_filter_dead_letters_the_delivery() {
    let f = fixture(&["q"], RouterOptions::default()).await;
    let mut filtered = route("q", "q");
    filtered.filter = Some("route-all".into());
    let (r, _) = f.router.add_route(filtered).await.unwrap();
    // route-all sends each message to the queue named like its topic.
    let p = f.router.publish("q", vec![msg("{}")]).await.unwrap();
    assert_eq!(queues(&p), ["q"]);
    assert!(!p[0].dead);
    let stats = f.router.stats();
    assert_eq!(
        stats.filters["route-all"].decisions.values().sum::<u64>(),
        1
    );

    // A filter that is given no fuel fails: the delivery is a dead letter, nothing is lost.
    f.router.delete_route(r.id).await.unwrap();
    let mut starved = route("q", "q");
    starved.filter = Some("route-all".into());
    starved.limits.fuel = Some(1);
    f.router.add_route(starved).await.unwrap();
    let p = f.router.publish("q", vec![msg("{}")]).await.unwrap();
    assert!(p[0].dead);
    let m = f.store.get_message(p[0].id).await.unwrap();
    assert_eq!(m.state, MessageState::Dead);
    assert_eq!(m.error_category, Some(ErrorCategory::Filter));
    assert!(m.last_error.unwrap().contains("fuel"));
    assert_eq!(f.router.stats().filters["route-all"].errors["fuel"], 1);

    // Replay without the filter: back to its queue, ready.
    let replayed = f.router.replay(p[0].id, true).await.unwrap();
    assert_eq!(replayed[0].id, p[0].id);
    assert_eq!(
        f.store.get_message(p[0].id).await.unwrap().state,
        MessageState::Ready
    );
}

#[tokio::test]
async fn a_chain_deeper_than_the_limit_is_refused() {
    let f = fixture(&["q"], RouterOptions::default()).await;
    let mut deep = msg("x");
    deep.depth = 17;
    let err = f.router.resolve_chained("q", deep).await.unwrap_err();
    assert!(
        matches!(err, RouteError::ChainTooDeep { limit: 16, .. }),
        "{err}"
    );
    let mut ok = msg("x");
    ok.depth = 16;
    let r = f.router.resolve_chained("q", ok).await.unwrap();
    assert_eq!(r.deliveries.len(), 1);
}

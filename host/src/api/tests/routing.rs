//! Routes, publishing to topics, traces and the replay of a filter's dead letters, through the
//! HTTP API.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use serde_json::{Value, json};

use super::{TestApi, assert_error, error_message};
use crate::auth::{Role, TokenEntry, Tokens, hash_token};
use crate::runtime::testutil::plugin_wasm;

impl TestApi {
    async fn deploy_filter(&self, name: &str) {
        self.state
            .registry
            .deploy(name, plugin_wasm("route_all"), None)
            .await
            .unwrap();
    }

    async fn add_route(&self, body: Value) -> super::Reply {
        self.post_json("/v1/routes", body).await
    }

    async fn publish(&self, topic: &str, body: Value) -> super::Reply {
        self.post_json(&format!("/v1/topics/{topic}/messages"), body)
            .await
    }

    async fn delete(&self, uri: &str) -> super::Reply {
        self.call(Method::DELETE, uri, Body::empty()).await
    }
}

#[tokio::test]
async fn routes_are_created_found_listed_and_deleted() {
    let api = TestApi::new().await;
    api.create_queue("billing").await;
    api.deploy_filter("pick").await;

    let body = json!({"pattern": "orders.*.paid", "queue": "billing", "filter": "pick",
        "headers": {"region": "eu"}, "timeout_ms": 500, "fuel": 1000000, "memory_mb": 16});
    let r = api.add_route(body.clone()).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    let id = r.json["id"].as_str().unwrap().to_owned();
    assert_eq!(r.json["pattern"], "orders.*.paid");
    assert_eq!(r.json["queue"], "billing");
    assert_eq!(r.json["filter"], "pick");
    assert_eq!(r.json["headers"], json!({"region": "eu"}));
    assert_eq!(
        (&r.json["timeout_ms"], &r.json["fuel"], &r.json["memory_mb"]),
        (&json!(500), &json!(1000000), &json!(16))
    );
    assert_eq!(r.json["delivered"], 0);
    assert!(r.json["created_at"].as_str().unwrap().ends_with('Z'));

    // The same route again is found, not doubled.
    let again = api.add_route(body).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.json);
    assert_eq!(again.json["id"], id.as_str());

    let plain = api
        .add_route(json!({"pattern": "orders.#", "queue": "billing"}))
        .await;
    assert_eq!(plain.status, StatusCode::CREATED, "{}", plain.json);
    assert!(plain.json.get("filter").is_none());
    assert_eq!(plain.json["headers"], json!({}));

    let list = api.get("/v1/routes").await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(list.json["routes"].as_array().unwrap().len(), 2);
    assert_eq!(list.json["routes"][0]["id"], id.as_str());
    assert_eq!(list.json["unroutable_total"], 0);
    assert_eq!(list.json["published_total"], 0);

    let one = api.get(&format!("/v1/routes/{id}")).await;
    assert_eq!(one.status, StatusCode::OK);
    assert_eq!(one.json, list.json["routes"][0]);

    let gone = api.delete(&format!("/v1/routes/{id}")).await;
    assert_eq!(gone.status, StatusCode::OK, "{}", gone.json);
    assert_eq!(gone.json["id"], id.as_str());
    assert_error(
        &api.get(&format!("/v1/routes/{id}")).await,
        StatusCode::NOT_FOUND,
        "route_not_found",
    );
    assert_error(
        &api.delete(&format!("/v1/routes/{id}")).await,
        StatusCode::NOT_FOUND,
        "route_not_found",
    );
    assert_error(
        &api.get("/v1/routes/01").await,
        StatusCode::BAD_REQUEST,
        "invalid_id",
    );
    assert_eq!(
        api.get("/v1/routes").await.json["routes"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn bad_routes_are_refused_naming_what_is_wrong() {
    let api = TestApi::new().await;
    api.create_queue("q").await;
    api.deploy_filter("pick").await;
    api.state
        .registry
        .deploy("echo", super::echo_wasm(), None)
        .await
        .unwrap();
    for (body, words) in [
        (json!({"pattern": "a..b", "queue": "q"}), "pattern"),
        (json!({"pattern": "a.b*", "queue": "q"}), "pattern"),
        (json!({"pattern": "a", "queue": "nope"}), "queue \"nope\""),
        (
            json!({"pattern": "a", "queue": "q", "filter": "ghost"}),
            "ghost",
        ),
        (
            json!({"pattern": "a", "queue": "q", "filter": "echo"}),
            "filter",
        ),
        (json!({"pattern": "a", "queue": "q", "fuel": 10}), "filter"),
        (
            json!({"pattern": "a", "queue": "q", "filter": "pick", "timeout_ms": 0}),
            "timeout_ms",
        ),
        (
            json!({"pattern": "a", "queue": "q", "filter": "pick", "memory_mb": 5000}),
            "memory_mb",
        ),
        (
            json!({"pattern": "a", "queue": "q", "headers": {"bad name": "x"}}),
            "header",
        ),
        (json!({"pattern": "a", "queue": "q", "extra": 1}), "extra"),
        (json!({"queue": "q"}), "pattern"),
    ] {
        let r = api.add_route(body.clone()).await;
        assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
        assert!(error_message(&r).contains(words), "{body}: {}", r.json);
    }
    assert_error(
        &api.call(Method::POST, "/v1/routes", "{").await,
        StatusCode::BAD_REQUEST,
        "invalid_json",
    );
    assert!(api.store.list_routes().await.unwrap().is_empty());
}

#[tokio::test]
async fn publish_fans_out_and_counts() {
    let api = TestApi::new().await;
    for q in ["all", "eu", "plain"] {
        api.create_queue(q).await;
    }
    api.add_route(json!({"pattern": "orders.#", "queue": "all"}))
        .await;
    api.add_route(json!({"pattern": "orders.eu.*", "queue": "eu", "headers": {"vip": "yes"}}))
        .await;

    let r = api
        .publish(
            "orders.eu.new",
            json!({"payload": {"n": 1}, "headers": {"vip": "yes"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.json);
    let queues: Vec<&str> = r.json["deliveries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["queue"].as_str().unwrap())
        .collect();
    assert_eq!(queues, ["all", "eu"]);
    assert_eq!(r.json["ids"].as_array().unwrap().len(), 2);
    assert_eq!(r.json["ids"][0], r.json["deliveries"][0]["id"]);
    assert_eq!(r.json["deliveries"][0]["dead"], false);
    let id = r.json["ids"][1].as_str().unwrap();
    let m = api.get(&format!("/v1/messages/{id}")).await;
    assert_eq!(m.json["topic"], "orders.eu.new");
    assert_eq!(m.json["queue"], "eu");

    // A batch: the header condition decides per message.
    let batch = json!({"messages": [{"payload": 1}, {"payload": 2, "headers": {"vip": "yes"}}]});
    let r = api.publish("orders.eu.x", batch).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.json);
    assert_eq!(r.json["ids"].as_array().unwrap().len(), 3);

    let r = api
        .publish(
            "orders.eu.new",
            json!({"payload": 1, "headers": {"vip": "no"}}),
        )
        .await;
    assert_eq!(r.json["ids"].as_array().unwrap().len(), 1);
    assert_eq!(r.json["deliveries"][0]["queue"], "all");
    // No route matches, but a queue has the topic's name; then neither.
    let r = api.publish("plain", json!({"payload": 1})).await;
    assert_eq!(r.json["deliveries"][0]["queue"], "plain");
    let r = api.publish("nothing.here", json!({"payload": 1})).await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "no_route");

    let list = api.get("/v1/routes").await;
    assert_eq!(list.json["published_total"], 7);
    // The refused publish counts as unroutable too.
    assert_eq!(list.json["unroutable_total"], 1);
    assert_eq!(list.json["routes"][0]["delivered"], 4);
    assert_eq!(list.json["routes"][1]["delivered"], 2);

    // Idempotency keys work per queue.
    let keyed = json!({"payload": 1, "idempotency_key": "k"});
    let first = api.publish("orders.x", keyed.clone()).await;
    let second = api.publish("orders.x", keyed).await;
    assert_eq!(second.json["ids"], first.json["ids"]);
    assert_eq!(second.json["deliveries"][0]["existing"], true);
}

#[tokio::test]
async fn publish_rejections_store_nothing() {
    let api = TestApi::new().await;
    api.create_queue("q").await;
    api.add_route(json!({"pattern": "t.#", "queue": "q"})).await;
    for topic in ["t..x", "t.*", "t.%23", "t.a%20b"] {
        let r = api.publish(topic, json!({"payload": 1})).await;
        assert_error(&r, StatusCode::BAD_REQUEST, "invalid_topic");
    }
    let r = api
        .publish("t.x", json!({"payload": 1, "topic": "t.y"}))
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
    assert!(error_message(&r).contains("topic"), "{}", r.json);
    let r = api.publish("t.x", json!({"payload": 1, "nope": 1})).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
    let r = api
        .publish(
            "t.x",
            json!({"messages": [{"payload": 1}, {"delay_ms": -1, "payload": 1}]}),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
    assert!(error_message(&r).contains("messages[1]"), "{}", r.json);
    // Same body limits as enqueue.
    let big = "x".repeat(api.state.limits.max_payload_bytes + 1);
    let r = api.publish("t.x", json!({"payload": big})).await;
    assert_error(&r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    assert_eq!(api.enqueued_total("q").await, 0);
    // Same payload as enqueue accepts, same answer.
    let r = api
        .publish("t.x", json!({"payload": "é", "topic": "t.x"}))
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.json);
}

#[tokio::test]
async fn a_failed_filter_dead_letter_replays_through_its_route() {
    let api = TestApi::new().await;
    api.create_queue("q").await;
    api.deploy_filter("pick").await;
    let r = api
        .add_route(json!({"pattern": "q", "queue": "q", "filter": "pick", "fuel": 1}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    let route = r.json["id"].as_str().unwrap().to_owned();
    let r = api.publish("q", json!({"payload": {"a": 1}})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.json);
    assert_eq!(r.json["deliveries"][0]["dead"], true);
    let dead = r.json["ids"][0].as_str().unwrap().to_owned();
    let m = api.get(&format!("/v1/messages/{dead}")).await;
    assert_eq!(m.json["state"], "dead");
    assert_eq!(m.json["error_category"], "filter");

    // The filter fails again: 422, the dead letter stays.
    let r = api
        .post_json(&format!("/v1/dlq/{dead}/replay"), Value::Null)
        .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "filter_failed");
    assert_error(
        &api.post_json(
            &format!("/v1/dlq/{dead}/replay?skip_filter=maybe"),
            Value::Null,
        )
        .await,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );

    // With enough fuel it decides (route-all delivers to the queue named like the topic): the
    // dead letter is back in place.
    api.delete(&format!("/v1/routes/{route}")).await;
    api.add_route(json!({"pattern": "q", "queue": "q", "filter": "pick"}))
        .await;
    // The dead letter's route is gone, so it replays as it is.
    let r = api
        .post_json(&format!("/v1/dlq/{dead}/replay"), Value::Null)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json["state"], "ready");
    assert_eq!(r.json["replaced"], false);
    assert_eq!(r.json["deliveries"][0]["id"], dead.as_str());

    // skip_filter puts it back without running anything.
    api.add_route(json!({"pattern": "s", "queue": "q", "filter": "pick", "fuel": 1}))
        .await;
    let r = api.publish("s", json!({"payload": 2})).await;
    let dead = r.json["ids"][0].as_str().unwrap().to_owned();
    let r = api
        .post_json(
            &format!("/v1/dlq/{dead}/replay?skip_filter=true"),
            Value::Null,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json["state"], "ready");
    assert_eq!(r.json["id"], dead.as_str());

    // Filter errors are counted for /metrics: both publishes' and the failed replay's.
    let stats = api.state.dispatcher.router().stats();
    assert_eq!(stats.filters["pick"].errors["fuel"], 3);
}

#[tokio::test]
async fn trace_follows_a_publish() {
    let api = TestApi::new().await;
    api.create_queue("a").await;
    api.create_queue("b").await;
    api.add_route(json!({"pattern": "t", "queue": "a"})).await;
    api.add_route(json!({"pattern": "t", "queue": "b"})).await;
    let r = api
        .publish("t", json!({"payload": 1, "correlation_id": "c-1"}))
        .await;
    let id = r.json["ids"][0].as_str().unwrap();
    let t = api.get(&format!("/v1/messages/{id}/trace")).await;
    assert_eq!(t.status, StatusCode::OK, "{}", t.json);
    assert_eq!(t.json["correlation_id"], "c-1");
    let messages = t.json["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["id"], id);
    assert_eq!(messages[0]["queue"], "a");
    assert_eq!(messages[0]["topic"], "t");
    assert_eq!(messages[0]["state"], "ready");
    assert!(messages[0]["parent_id"].is_null());
    assert!(messages[0]["enqueued_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(messages[1]["queue"], "b");

    assert_error(
        &api.get("/v1/messages/999/trace").await,
        StatusCode::NOT_FOUND,
        "message_not_found",
    );
    assert_error(
        &api.get("/v1/messages/x/trace").await,
        StatusCode::BAD_REQUEST,
        "invalid_id",
    );
}

#[tokio::test]
async fn deleting_a_routed_queue_needs_force_and_takes_the_routes() {
    let api = TestApi::new().await;
    api.create_queue("q").await;
    api.create_queue("other").await;
    api.deploy_filter("pick").await;
    api.add_route(json!({"pattern": "x.#", "queue": "q", "filter": "pick"}))
        .await;
    api.add_route(json!({"pattern": "y", "queue": "other", "filter": "pick"}))
        .await;
    let r = api.delete("/v1/queues/q").await;
    assert_error(&r, StatusCode::CONFLICT, "queue_has_routes");
    let r = api.delete("/v1/plugins/pick").await;
    assert_error(&r, StatusCode::CONFLICT, "plugin_in_use");
    assert!(error_message(&r).contains("route"), "{}", r.json);

    let r = api.delete("/v1/queues/q?force=true").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json["deleted"]["routes"], 1);
    assert_eq!(
        api.get("/v1/routes").await.json["routes"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // The router forgot the route with its queue: nothing matches x.a now.
    let r = api.publish("x.a", json!({"payload": 1})).await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "no_route");
}

/// The implicit route to a queue stops when the queue is deleted.
#[tokio::test]
async fn an_implicit_route_ends_with_its_queue() {
    let api = TestApi::new().await;
    api.create_queue("t").await;
    let r = api.publish("t", json!({"payload": 1})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.json);
    api.delete("/v1/queues/t?force=true").await;
    let r = api.publish("t", json!({"payload": 1})).await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "no_route");
}

// --- roles ----------------------------------------------------------------------------------

async fn as_role(api: &TestApi, token: &str, method: Method, uri: &str, body: Value) -> StatusCode {
    let tokens = Tokens::new(vec![
        TokenEntry::new("ops", Role::Admin, &hash_token("a")).unwrap(),
        TokenEntry::new("shop", Role::Producer, &hash_token("p")).unwrap(),
        TokenEntry::new("other", Role::Producer, &hash_token("o")).unwrap(),
        TokenEntry::new("dash", Role::Reader, &hash_token("r")).unwrap(),
    ]);
    let app = super::router(super::AppState {
        auth: Arc::new(tokens),
        backup_dir: None,
        ..api.state.clone()
    });
    let body = if body.is_null() {
        Body::empty()
    } else {
        Body::from(body.to_string())
    };
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .unwrap();
    tower::ServiceExt::oneshot(app, req).await.unwrap().status()
}

#[tokio::test]
async fn who_may_route_publish_and_trace() {
    let api = TestApi::new().await;
    api.create_queue("q").await;
    let route = json!({"pattern": "t.#", "queue": "q"});
    let r = api.add_route(route.clone()).await;
    let id = r.json["id"].as_str().unwrap().to_owned();
    let msg = json!({"payload": 1});

    // Creating routes: admin only (an identical one answers 200).
    assert_eq!(
        as_role(&api, "a", Method::POST, "/v1/routes", route.clone()).await,
        StatusCode::OK
    );
    for t in ["p", "r"] {
        assert_eq!(
            as_role(&api, t, Method::POST, "/v1/routes", route.clone()).await,
            StatusCode::FORBIDDEN
        );
    }
    // Reading routes: admin and reader.
    for uri in ["/v1/routes".to_owned(), format!("/v1/routes/{id}")] {
        for (t, want) in [
            ("a", StatusCode::OK),
            ("r", StatusCode::OK),
            ("p", StatusCode::FORBIDDEN),
        ] {
            assert_eq!(
                as_role(&api, t, Method::GET, &uri, Value::Null).await,
                want,
                "{t} {uri}"
            );
        }
    }
    // Publishing: admin and producer.
    for (t, want) in [
        ("a", StatusCode::ACCEPTED),
        ("p", StatusCode::ACCEPTED),
        ("r", StatusCode::FORBIDDEN),
    ] {
        let status = as_role(
            &api,
            t,
            Method::POST,
            "/v1/topics/t.x/messages",
            msg.clone(),
        )
        .await;
        assert_eq!(status, want, "{t}");
    }
    let shop_id = api
        .store
        .list_messages(
            "q",
            &crate::store::MessageFilter {
                state: None,
                limit: 10,
                cursor: None,
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .items
        .into_iter()
        .find(|m| m.producer.as_deref() == Some("shop"))
        .unwrap()
        .id;
    // Tracing: like reading a message; a producer only its own.
    let trace = format!("/v1/messages/{shop_id}/trace");
    for (t, want) in [
        ("a", StatusCode::OK),
        ("r", StatusCode::OK),
        ("p", StatusCode::OK),
        ("o", StatusCode::FORBIDDEN),
    ] {
        assert_eq!(
            as_role(&api, t, Method::GET, &trace, Value::Null).await,
            want,
            "{t}"
        );
    }
    // Deleting routes: admin only.
    for t in ["p", "r"] {
        assert_eq!(
            as_role(
                &api,
                t,
                Method::DELETE,
                &format!("/v1/routes/{id}"),
                Value::Null
            )
            .await,
            StatusCode::FORBIDDEN
        );
    }
    assert_eq!(
        as_role(
            &api,
            "a",
            Method::DELETE,
            &format!("/v1/routes/{id}"),
            Value::Null
        )
        .await,
        StatusCode::OK
    );
}

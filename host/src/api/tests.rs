//! The API driven through `router(state)` against a real SQLite store in a temp dir.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use tower::ServiceExt as _;

use super::{ApiLimits, AppState, router};
use crate::dispatch::Dispatcher;
use crate::model::{ErrorCategory, Settle, Settlement};
use crate::plugins::PluginRegistry;
use crate::runtime::{Runtime, RuntimeOptions};
use crate::store::sqlite::SqliteStore;
use crate::store::{Store, StoreOptions};

struct TestApi {
    app: axum::Router,
    state: AppState,
    store: Arc<dyn Store>,
    // Dropped last: the database lives here.
    _dir: tempfile::TempDir,
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    json: Value,
}

impl TestApi {
    async fn new() -> Self {
        Self::with_limits(ApiLimits::default()).await
    }

    async fn with_limits(limits: ApiLimits) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            SqliteStore::open(&dir.path().join("spool.db"), StoreOptions::default()).unwrap(),
        );
        let runtime = Runtime::new(RuntimeOptions {
            cache_dir: dir.path().join("cache"),
            max_instances: 4,
            max_memory_mb: 64,
            ..RuntimeOptions::default()
        })
        .unwrap();
        let registry = Arc::new(PluginRegistry::new(store.clone(), runtime, HashMap::new()));
        let dispatcher = Dispatcher::new(
            store.clone(),
            registry.clone(),
            crate::router::Router::new(store.clone(), registry.clone(), Default::default()),
        )
        .unwrap();
        let scheduler = crate::scheduler::Scheduler::system(
            store.clone(),
            dispatcher.router().clone(),
            Default::default(),
        );
        let state = AppState {
            store: store.clone(),
            registry,
            dispatcher,
            limits,
            auth: Default::default(),
            backup_dir: None,
            metrics: Default::default(),
            scheduler,
        };
        TestApi {
            app: router(state.clone()),
            state,
            store,
            _dir: dir,
        }
    }

    async fn send(&self, req: Request<Body>) -> Reply {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let json = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!(
                    "{status}: body is not JSON ({e}): {:?}",
                    String::from_utf8_lossy(&bytes)
                )
            })
        };
        Reply {
            status,
            headers,
            json,
        }
    }

    async fn call(&self, method: Method, uri: &str, body: impl Into<Body>) -> Reply {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/json")
            .body(body.into())
            .unwrap();
        self.send(req).await
    }

    async fn get(&self, uri: &str) -> Reply {
        self.call(Method::GET, uri, Body::empty()).await
    }

    async fn post_json(&self, uri: &str, v: Value) -> Reply {
        self.call(Method::POST, uri, v.to_string()).await
    }

    async fn put_json(&self, uri: &str, v: Value) -> Reply {
        self.call(Method::PUT, uri, v.to_string()).await
    }

    async fn create_queue(&self, name: &str) {
        let r = self
            .put_json(&format!("/v1/queues/{name}"), json!({}))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    }

    async fn enqueue(&self, queue: &str, body: Value) -> Reply {
        self.post_json(&format!("/v1/queues/{queue}/messages"), body)
            .await
    }

    async fn enqueued_total(&self, queue: &str) -> u64 {
        self.store.queue_stats(queue).await.unwrap().enqueued
    }

    /// Enqueues one message and moves it to the DLQ through the store, as a worker would.
    async fn dead_letter(&self, queue: &str, category: ErrorCategory) -> String {
        let r = self.enqueue(queue, json!({"payload": "doomed"})).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.json);
        let id: i64 = r.json["ids"][0].as_str().unwrap().parse().unwrap();
        let batch = self.store.claim(queue, 10, 30_000).await.unwrap();
        let claimed = batch.messages.iter().find(|m| m.id == id).unwrap();
        self.store
            .settle(vec![Settle {
                id,
                attempt: claimed.attempt,
                settlement: Settlement::Dead {
                    error: "boom".into(),
                    category,
                },
                plugin_version: Some("echo@1".into()),
                outbox: Vec::new(),
            }])
            .await
            .unwrap();
        id.to_string()
    }
}

/// Every error must have the documented shape; returns the code.
fn error_code(r: &Reply) -> &str {
    let code = r.json["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error body: {}", r.json));
    let message = r.json["error"]["message"].as_str().unwrap();
    assert!(!message.is_empty());
    code
}

fn error_message(r: &Reply) -> &str {
    r.json["error"]["message"].as_str().unwrap()
}

fn assert_error(r: &Reply, status: StatusCode, code: &str) {
    assert_eq!(r.status, status, "{}", r.json);
    assert_eq!(error_code(r), code, "{}", r.json);
    assert_eq!(
        r.headers[header::CONTENT_TYPE],
        "application/json",
        "{}",
        r.json
    );
}

// --- health and routing ---------------------------------------------------------------------

#[tokio::test]
async fn health_endpoints_answer() {
    let api = TestApi::new().await;
    let r = api.get("/healthz").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json, json!({"status": "ok"}));
    let r = api.get("/readyz").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["status"], "ok");
}

#[tokio::test]
async fn unknown_routes_and_methods_are_json_errors() {
    let api = TestApi::new().await;
    assert_error(&api.get("/nope").await, StatusCode::NOT_FOUND, "not_found");
    assert_error(
        &api.get("/v1/queues/a/b/c").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );

    let r = api.call(Method::DELETE, "/v1/queues", Body::empty()).await;
    assert_error(&r, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    assert!(r.headers.contains_key(header::ALLOW));
    let r = api.call(Method::POST, "/v1/plugins/x", Body::empty()).await;
    assert_error(&r, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
}

#[tokio::test]
async fn serve_answers_until_shutdown() {
    let api = TestApi::new().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(super::serve(listener, api.state.clone(), async {
        let _ = stopped.await;
    }));
    let resp = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let resp = reqwest::get(format!("http://{addr}/v1/nope"))
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

// --- queues ---------------------------------------------------------------------------------

#[tokio::test]
async fn queue_create_update_get_list() {
    let api = TestApi::new().await;
    let r = api
        .put_json(
            "/v1/queues/orders",
            json!({"concurrency": 8, "strategy": "fifo"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    assert_eq!(r.json["name"], "orders");
    assert_eq!(r.json["config"]["concurrency"], 8);
    assert_eq!(r.json["config"]["strategy"], "fifo");
    for field in [
        "scheduled",
        "ready",
        "leased",
        "acked",
        "dead",
        "cancelled",
        "expired",
        "retried",
        "enqueued",
        "dlq_depth",
    ] {
        assert_eq!(r.json["stats"][field], 0, "stats.{field}: {}", r.json);
    }
    assert!(r.json["created_at"].is_string());

    // A second PUT changes only what it names.
    let r = api
        .put_json(
            "/v1/queues/orders",
            json!({"max_attempts": 3, "paused": true}),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json["config"]["concurrency"], 8);
    assert_eq!(r.json["config"]["max_attempts"], 3);
    assert_eq!(r.json["config"]["paused"], true);

    // An empty body is "create with defaults" (and a no-op update).
    let r = api
        .call(Method::PUT, "/v1/queues/empty", Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);

    let r = api.get("/v1/queues/orders").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json["config"]["max_attempts"], 3);
    assert_eq!(r.json["stats"]["ready"], 0);

    let r = api.get("/v1/queues").await;
    assert_eq!(r.status, StatusCode::OK);
    let names: Vec<&str> = r.json["queues"]
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"orders") && names.contains(&"empty"),
        "{names:?}"
    );
    assert!(r.json["queues"][0]["config"].is_object());
    assert!(r.json["queues"][0]["stats"].is_object());
}

#[tokio::test]
async fn queue_put_rejections_change_nothing() {
    let api = TestApi::new().await;
    api.put_json("/v1/queues/q", json!({"concurrency": 2}))
        .await;

    let r = api
        .put_json("/v1/queues/q", json!({"concurrency": 0}))
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_config");
    assert!(error_message(&r).contains("concurrency"), "{}", r.json);

    let r = api.put_json("/v1/queues/q", json!({"concurency": 3})).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_config");
    assert!(error_message(&r).contains("concurency"), "{}", r.json);

    let r = api
        .put_json("/v1/queues/q", json!({"lease_ms": "long"}))
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_config");
    assert!(error_message(&r).contains("lease_ms"), "{}", r.json);

    let r = api
        .put_json(
            "/v1/queues/q",
            json!({"strategy": "random", "concurrency": 5}),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_config");

    let r = api.call(Method::PUT, "/v1/queues/q", "{not json").await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_json");

    let r = api.put_json("/v1/queues/bad%20name", json!({})).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_name");

    let r = api.get("/v1/queues/q").await;
    assert_eq!(r.json["config"]["concurrency"], 2, "{}", r.json);
    assert_eq!(r.json["config"]["strategy"], "priority");

    // A rejected create creates nothing.
    let r = api
        .put_json("/v1/queues/new", json!({"max_attempts": 0}))
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_config");
    assert_error(
        &api.get("/v1/queues/new").await,
        StatusCode::NOT_FOUND,
        "queue_not_found",
    );
}

// --- enqueue --------------------------------------------------------------------------------

/// JSON Schema's `integer` is any number without a fraction, so `5.0` and `5e3` are integers in
/// every body; `1.5` is refused with the usual 400 naming the field.
#[tokio::test]
async fn integer_fields_take_whole_floats() {
    let api = TestApi::new().await;
    let r = api
        .call(
            Method::PUT,
            "/v1/queues/q",
            r#"{"concurrency": 8.0, "backoff_base_ms": 2e3, "default_ttl_ms": 60000.0}"#,
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    assert_eq!(r.json["config"]["concurrency"], 8);
    assert_eq!(r.json["config"]["backoff_base_ms"], 2000);
    assert_eq!(r.json["config"]["default_ttl_ms"], 60000);

    let body = r#"{"payload": 1, "priority": -3.0, "delay_ms": 0.0, "ttl_ms": 1e4}"#;
    let r = api.call(Method::POST, "/v1/queues/q/messages", body).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.json);
    let m = api
        .get(&format!(
            "/v1/messages/{}",
            r.json["ids"][0].as_str().unwrap()
        ))
        .await;
    assert_eq!(m.json["priority"], -3, "{}", m.json);

    let r = api
        .put_json("/v1/queues/q", json!({"concurrency": 2.5}))
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_config");
    assert!(
        error_message(&r).contains("concurrency: invalid type: floating point `2.5`"),
        "{}",
        r.json
    );
    let body = r#"{"messages": [{"payload": 1}, {"payload": 2, "ttl_ms": 0.5}]}"#;
    let r = api.call(Method::POST, "/v1/queues/q/messages", body).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
    assert!(
        error_message(&r).contains("messages[1].ttl_ms"),
        "{}",
        r.json
    );
    let r = api.post_json("/v1/dlq/purge", json!({"limit": 10.0})).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
}

#[tokio::test]
async fn enqueue_one_and_read_it_back() {
    let api = TestApi::new().await;
    api.create_queue("q").await;
    // Raw text, not `json!`, which would sort the payload's keys before sending.
    let body = r#"{
        "payload": { "b": 1, "a": [true, null] },
        "priority": 7,
        "ttl_ms": 60000,
        "headers": {"x-trace": "abc"},
        "topic": "orders.created",
        "correlation_id": "c-1"
    }"#;
    let r = api.call(Method::POST, "/v1/queues/q/messages", body).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.json);
    let ids = r.json["ids"].as_array().unwrap();
    assert_eq!(ids.len(), 1);
    let id = ids[0].as_str().unwrap();
    assert!(id.parse::<i64>().is_ok());
    assert_eq!(r.json["existing"], json!([false]));

    let m = api.get(&format!("/v1/messages/{id}")).await;
    assert_eq!(m.status, StatusCode::OK, "{}", m.json);
    assert_eq!(m.json["id"], id);
    assert_eq!(m.json["queue"], "q");
    assert_eq!(m.json["state"], "ready");
    assert_eq!(m.json["attempts"], 0);
    assert_eq!(m.json["priority"], 7);
    assert_eq!(m.json["payload"], json!({"b": 1, "a": [true, null]}));
    assert_eq!(m.json["headers"], json!({"x-trace": "abc"}));
    assert_eq!(m.json["topic"], "orders.created");
    assert_eq!(m.json["correlation_id"], "c-1");
    assert!(m.json["enqueued_at"].as_str().unwrap().ends_with('Z'));
    let enq = m.json["enqueued_at_ms"].as_i64().unwrap();
    let exp = m.json["expires_at_ms"].as_i64().unwrap();
    assert!((59_000..=61_000).contains(&(exp - enq)), "{}", m.json);
    assert!(m.json.get("last_error").is_none());

    // The stored bytes keep the producer's key order, compacted.
    let stored = api
        .store
        .get_message(id.parse().unwrap())
        .await
        .unwrap()
        .payload
        .unwrap();
    assert_eq!(stored, br#"{"b":1,"a":[true,null]}"#.to_vec());
}

#[tokio::test]
async fn enqueue_raw_bytes_delays_and_schedules() {
    let api = TestApi::new().await;
    api.create_queue("q").await;
    let r = api
        .enqueue(
            "q",
            json!({"payload_base64": "AAEC/w==", "delay_ms": 60_000}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.json);
    let id = r.json["ids"][0].as_str().unwrap().to_owned();
    let m = api.get(&format!("/v1/messages/{id}")).await;
    assert_eq!(m.json["payload_base64"], "AAEC/w==");
    assert!(m.json.get("payload").is_none());
    assert_eq!(m.json["state"], "scheduled");
    let delay =
        m.json["available_at_ms"].as_i64().unwrap() - m.json["enqueued_at_ms"].as_i64().unwrap();
    assert!((59_000..=61_000).contains(&delay), "{}", m.json);

    let r = api
        .enqueue(
            "q",
            json!({"payload": 1, "deliver_at": "2999-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.json);
    let m = api
        .get(&format!(
            "/v1/messages/{}",
            r.json["ids"][0].as_str().unwrap()
        ))
        .await;
    assert_eq!(m.json["state"], "scheduled");
    assert_eq!(m.json["available_at"], "2999-01-01T00:00:00Z");

    // A JSON null payload is a payload.
    let r = api.enqueue("q", json!({"payload": null})).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.json);
}

#[tokio::test]
async fn enqueue_batch_is_all_or_nothing() {
    let api = TestApi::new().await;
    api.create_queue("q").await;
    let r = api
        .enqueue(
            "q",
            json!({"messages": [{"payload": 1}, {"payload": 2, "priority": 5}, {"payload_base64": "AA=="}]}),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.json);
    assert_eq!(r.json["ids"].as_array().unwrap().len(), 3);
    assert_eq!(api.enqueued_total("q").await, 3);

    let r = api
        .enqueue(
            "q",
            json!({"messages": [{"payload": 1}, {"payload": 2, "delay_ms": -5}]}),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
    assert!(
        error_message(&r).contains("messages[1].delay_ms"),
        "{}",
        r.json
    );

    let r = api
        .enqueue(
            "q",
            json!({"messages": [{"payload": 1}, {"payload": 2, "priority": "high"}]}),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
    assert!(
        error_message(&r).contains("messages[1].priority"),
        "{}",
        r.json
    );

    let r = api.enqueue("q", json!({"messages": null})).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
    assert!(error_message(&r).contains("messages"), "{}", r.json);

    let r = api.enqueue("q", json!({"messages": []})).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");

    let r = api
        .enqueue("q", json!({"messages": [{"payload": 1}], "payload": 2}))
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");

    assert_eq!(api.enqueued_total("q").await, 3);
}

#[tokio::test]
async fn enqueue_limits() {
    let api = TestApi::with_limits(ApiLimits {
        max_payload_bytes: 100,
        max_batch: 3,
        max_body_bytes: 2_000,
        max_plugin_bytes: 1_000,
        ..ApiLimits::default()
    })
    .await;
    api.create_queue("q").await;

    let r = api.enqueue("q", json!({"payload": "x".repeat(200)})).await;
    assert_error(&r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");

    let four: Vec<Value> = (0..4).map(|i| json!({"payload": i})).collect();
    let r = api.enqueue("q", json!({ "messages": four })).await;
    assert_error(&r, StatusCode::PAYLOAD_TOO_LARGE, "batch_too_large");
    assert!(error_message(&r).contains('3'), "{}", r.json);

    let r = api
        .enqueue("q", json!({"payload": "x".repeat(5_000)}))
        .await;
    assert_error(&r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");

    let r = api
        .call(Method::PUT, "/v1/plugins/big", vec![0u8; 5_000])
        .await;
    assert_error(&r, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");

    assert_eq!(api.enqueued_total("q").await, 0);
}

#[tokio::test]
async fn enqueue_rejections_store_nothing() {
    let api = TestApi::new().await;
    api.create_queue("q").await;
    let cases: Vec<(&str, &str, &str)> = vec![
        (
            r#"{"payload": 1, "colour": "red"}"#,
            "invalid_request",
            "colour",
        ),
        (
            r#"{"payload": 1, "priority": 1.5}"#,
            "invalid_request",
            "priority",
        ),
        (
            r#"{"payload": 1, "headers": {"a": 1}}"#,
            "invalid_request",
            "headers",
        ),
        (r#"{"payload": 1,"#, "invalid_json", "JSON"),
        (r#"[1, 2]"#, "invalid_request", "invalid type"),
        ("", "invalid_request", "empty"),
        (r#"{"priority": 1}"#, "invalid_request", "payload"),
        (
            r#"{"payload": 1, "payload_base64": "AA=="}"#,
            "invalid_request",
            "payload_base64",
        ),
        (
            r#"{"payload_base64": "***"}"#,
            "invalid_request",
            "payload_base64",
        ),
        (
            r#"{"payload": 1, "delay_ms": 10, "deliver_at": "2030-01-01T00:00:00Z"}"#,
            "invalid_request",
            "deliver_at",
        ),
        (
            r#"{"payload": 1, "delay_ms": -1}"#,
            "invalid_request",
            "delay_ms",
        ),
        (
            r#"{"payload": 1, "deliver_at": "tomorrow"}"#,
            "invalid_request",
            "deliver_at",
        ),
        (
            r#"{"payload": 1, "ttl_ms": 0}"#,
            "invalid_request",
            "ttl_ms",
        ),
        (
            r#"{"payload": 1, "headers": {"": "v"}}"#,
            "invalid_request",
            "headers",
        ),
        (
            r#"{"payload": 1, "idempotency_key": ""}"#,
            "invalid_request",
            "idempotency_key",
        ),
        (
            r#"{"payload": 1, "supersede": true}"#,
            "invalid_request",
            "supersede",
        ),
        (
            r#"{"payload": 1, "topic": "a b"}"#,
            "invalid_request",
            "topic",
        ),
    ];
    for (body, code, needle) in cases {
        let r = api.call(Method::POST, "/v1/queues/q/messages", body).await;
        assert_error(&r, StatusCode::BAD_REQUEST, code);
        assert!(
            error_message(&r).contains(needle),
            "{body}: message should mention {needle:?}: {}",
            r.json
        );
    }

    let many: serde_json::Map<String, Value> =
        (0..100).map(|i| (format!("h{i}"), json!("v"))).collect();
    let r = api
        .enqueue("q", json!({"payload": 1, "headers": many}))
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
    let r = api
        .enqueue(
            "q",
            json!({"payload": 1, "headers": {"h": "v".repeat(10_000)}}),
        )
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");

    assert_eq!(api.enqueued_total("q").await, 0);

    let r = api.enqueue("missing", json!({"payload": 1})).await;
    assert_error(&r, StatusCode::NOT_FOUND, "queue_not_found");
    assert!(
        error_message(&r).contains("PUT /v1/queues/missing"),
        "{}",
        r.json
    );

    let r = api.enqueue("bad!name", json!({"payload": 1})).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_name");
}

#[tokio::test]
async fn idempotency_key_header_and_field() {
    let api = TestApi::new().await;
    api.create_queue("q").await;
    let with_header = |key: &str, body: Value| {
        Request::builder()
            .method(Method::POST)
            .uri("/v1/queues/q/messages")
            .header("idempotency-key", key)
            .body(Body::from(body.to_string()))
            .unwrap()
    };
    let first = api.send(with_header("k1", json!({"payload": 1}))).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.json);
    let again = api.send(with_header("k1", json!({"payload": 2}))).await;
    assert_eq!(again.json["ids"], first.json["ids"]);
    assert_eq!(again.json["existing"], json!([true]));
    let by_field = api
        .enqueue("q", json!({"payload": 3, "idempotency_key": "k1"}))
        .await;
    assert_eq!(by_field.json["ids"], first.json["ids"]);
    let m = api
        .get(&format!(
            "/v1/messages/{}",
            first.json["ids"][0].as_str().unwrap()
        ))
        .await;
    assert_eq!(m.json["idempotency_key"], "k1");
    assert_eq!(m.json["payload"], 1);

    let r = api
        .send(with_header(
            "k2",
            json!({"payload": 1, "idempotency_key": "k3"}),
        ))
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
    let r = api
        .send(with_header("k2", json!({"messages": [{"payload": 1}]})))
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
    assert_eq!(api.enqueued_total("q").await, 1);
}

// --- messages -------------------------------------------------------------------------------

#[tokio::test]
async fn get_and_cancel_messages() {
    let api = TestApi::new().await;
    api.create_queue("q").await;
    assert_error(
        &api.get("/v1/messages/abc").await,
        StatusCode::BAD_REQUEST,
        "invalid_id",
    );
    assert_error(
        &api.get("/v1/messages/-3").await,
        StatusCode::BAD_REQUEST,
        "invalid_id",
    );
    assert_error(
        &api.get("/v1/messages/999999").await,
        StatusCode::NOT_FOUND,
        "message_not_found",
    );

    let r = api.enqueue("q", json!({"payload": "x"})).await;
    let id = r.json["ids"][0].as_str().unwrap().to_owned();
    let r = api
        .call(Method::DELETE, &format!("/v1/messages/{id}"), Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json, json!({"id": id, "state": "cancelled"}));
    let m = api.get(&format!("/v1/messages/{id}")).await;
    assert_eq!(m.json["state"], "cancelled");

    let r = api
        .call(Method::DELETE, &format!("/v1/messages/{id}"), Body::empty())
        .await;
    assert_error(&r, StatusCode::CONFLICT, "invalid_state");
    let r = api
        .call(Method::DELETE, "/v1/messages/999999", Body::empty())
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "message_not_found");

    // A message a handler holds is cancelled when it settles; until then it stays leased.
    let r = api.enqueue("q", json!({"payload": "y"})).await;
    let id = r.json["ids"][0].as_str().unwrap().to_owned();
    let claimed = api.store.claim("q", 10, 30_000).await.unwrap();
    assert_eq!(claimed.messages.len(), 1);
    let r = api
        .call(Method::DELETE, &format!("/v1/messages/{id}"), Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json, json!({"id": id, "state": "leased"}));
}

#[tokio::test]
async fn list_queue_messages_paginates_and_filters() {
    let api = TestApi::new().await;
    api.create_queue("q").await;
    let five: Vec<Value> = (0..5).map(|i| json!({"payload": i})).collect();
    api.enqueue("q", json!({ "messages": five })).await;
    api.enqueue("q", json!({"payload": "later", "delay_ms": 600_000}))
        .await;

    let mut seen = Vec::new();
    let mut uri = "/v1/queues/q/messages?state=ready&limit=2".to_owned();
    loop {
        let r = api.get(&uri).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.json);
        let items = r.json["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        for m in items {
            assert_eq!(m["state"], "ready");
            seen.push(m["payload"].clone());
        }
        match r.json.get("next_cursor").and_then(Value::as_str) {
            Some(c) => uri = format!("/v1/queues/q/messages?state=ready&limit=2&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, (0..5).map(|i| json!(i)).collect::<Vec<_>>());

    let r = api.get("/v1/queues/q/messages").await;
    assert_eq!(r.json["items"].as_array().unwrap().len(), 6);
    let r = api.get("/v1/queues/q/messages?state=scheduled").await;
    assert_eq!(r.json["items"].as_array().unwrap().len(), 1);

    let r = api.get("/v1/queues/q/messages?state=sleeping").await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
    assert!(error_message(&r).contains("scheduled"), "{}", r.json);
    for bad in ["limit=0", "limit=1001", "limit=x", "colour=red"] {
        let r = api.get(&format!("/v1/queues/q/messages?{bad}")).await;
        assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
    }
    let r = api.get("/v1/queues/q/messages?cursor=garbage").await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_cursor");
    let r = api.get("/v1/queues/nope/messages").await;
    assert_error(&r, StatusCode::NOT_FOUND, "queue_not_found");
}

// --- dead-letter queue ----------------------------------------------------------------------

#[tokio::test]
async fn dlq_list_review_replay_purge() {
    let api = TestApi::new().await;
    api.create_queue("q").await;
    api.create_queue("other").await;
    let a = api.dead_letter("q", ErrorCategory::Trap).await;
    let b = api.dead_letter("q", ErrorCategory::Fuel).await;
    let c = api.dead_letter("other", ErrorCategory::Trap).await;

    let r = api.get("/v1/dlq").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json["items"].as_array().unwrap().len(), 3);
    let item = r.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == a.as_str())
        .unwrap();
    assert_eq!(item["queue"], "q");
    assert_eq!(item["error_category"], "trap");
    assert_eq!(item["error"], "boom");
    assert_eq!(item["attempts"], 1);
    assert_eq!(item["reviewed"], false);
    assert_eq!(item["plugin_version"], "echo@1");
    assert!(item["dead_at"].is_string());

    let r = api.get("/v1/dlq?queue=q&category=trap").await;
    let ids: Vec<&str> = r.json["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![a.as_str()]);
    let r = api.get("/v1/dlq?limit=1").await;
    assert_eq!(r.json["items"].as_array().unwrap().len(), 1);
    assert!(r.json["next_cursor"].is_string(), "{}", r.json);

    let r = api.get("/v1/dlq?category=cosmic-rays").await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_request");
    assert!(error_message(&r).contains("lease-expired"), "{}", r.json);

    let r = api
        .post_json(&format!("/v1/dlq/{b}/reviewed"), json!({}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let r = api.get("/v1/dlq?category=fuel").await;
    assert_eq!(r.json["items"][0]["reviewed"], true);

    let r = api
        .call(Method::POST, &format!("/v1/dlq/{a}/replay"), Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    // The fields of before, and where the message is now.
    assert_eq!(
        (&r.json["id"], &r.json["state"]),
        (&json!(a), &json!("ready"))
    );
    assert_eq!(r.json["replaced"], false);
    assert_eq!(
        r.json["deliveries"],
        json!([{"queue": "q", "id": a, "existing": true, "dead": false}])
    );
    let m = api.get(&format!("/v1/messages/{a}")).await;
    assert_eq!(m.json["state"], "ready");
    assert_eq!(m.json["attempts"], 0);

    let r = api
        .call(Method::DELETE, &format!("/v1/dlq/{c}"), Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let r = api.get("/v1/dlq").await;
    assert_eq!(r.json["items"].as_array().unwrap().len(), 1, "{}", r.json);

    for (method, uri) in [
        (Method::POST, format!("/v1/dlq/{a}/replay")),
        (Method::POST, "/v1/dlq/424242/reviewed".to_owned()),
        (Method::DELETE, format!("/v1/dlq/{c}")),
    ] {
        let r = api.call(method, &uri, Body::empty()).await;
        assert_error(&r, StatusCode::NOT_FOUND, "dead_letter_not_found");
    }
    let r = api
        .call(Method::POST, "/v1/dlq/x/replay", Body::empty())
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_id");
}

// --- plugins --------------------------------------------------------------------------------

fn echo_wasm() -> Vec<u8> {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/wasm32-wasip2/release/echo.wasm");
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build it with `cargo build --release --target wasm32-wasip2 -p echo`",
            path.display()
        )
    })
}

#[tokio::test]
async fn plugin_deploy_list_rollback() {
    let api = TestApi::new().await;
    let wasm = echo_wasm();

    let r = api
        .call(Method::PUT, "/v1/plugins/echo", wasm.clone())
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    assert_eq!(r.json["name"], "echo");
    assert_eq!(r.json["version"], 1);
    assert_eq!(r.json["world"], "handler");
    assert_eq!(r.json["sha256"].as_str().unwrap().len(), 64);

    let r = api
        .call(Method::POST, "/v1/plugins/echo/rollback", Body::empty())
        .await;
    assert_error(&r, StatusCode::CONFLICT, "no_previous_version");

    // A second, different upload: the same component with a trailing custom section.
    let mut v2 = wasm.clone();
    v2.extend_from_slice(&[0x00, 0x04, 0x03, b'a', b'b', b'c']);
    let r = api.call(Method::PUT, "/v1/plugins/echo", v2).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    assert_eq!(r.json["version"], 2);

    let r = api.get("/v1/plugins").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let p = &r.json["plugins"][0];
    assert_eq!(p["name"], "echo");
    assert_eq!(p["active_version"], 2);
    assert_eq!(p["versions"].as_array().unwrap().len(), 2);
    for field in ["version", "sha256", "world", "size", "created_at", "active"] {
        assert!(p["versions"][0].get(field).is_some(), "{field}: {p}");
    }

    let r = api
        .call(Method::POST, "/v1/plugins/echo/rollback", Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json["version"], 1);
    assert_eq!(r.json["active"], true);
    let r = api.get("/v1/plugins").await;
    assert_eq!(r.json["plugins"][0]["active_version"], 1);

    let r = api
        .call(Method::POST, "/v1/plugins/ghost/rollback", Body::empty())
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "plugin_not_found");
}

#[tokio::test]
async fn plugin_rejections_store_nothing() {
    let api = TestApi::new().await;
    let r = api.call(Method::PUT, "/v1/plugins/p", Body::empty()).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_plugin");

    let r = api
        .call(Method::PUT, "/v1/plugins/p", "not wasm at all")
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_plugin");

    // A core module (not a component).
    let core = vec![0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];
    let r = api.call(Method::PUT, "/v1/plugins/p", core).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_plugin");

    // An empty component: valid, but it exports neither world.
    let empty_component = vec![0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];
    let r = api
        .call(Method::PUT, "/v1/plugins/p", empty_component)
        .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "wrong_world");

    let r = api
        .call(Method::PUT, "/v1/plugins/bad!name", echo_wasm())
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_name");

    let r = api.get("/v1/plugins").await;
    assert_eq!(r.json, json!({"plugins": []}));
}

/// `GET /openapi.json` against the routes it describes.
mod dashboard;
mod openapi;
mod routing;

//! Bad input is refused with a clear 4xx JSON error (`{"error": {"code", "message"}}`) whose code
//! is stable, and a refused request stores nothing.

use std::time::Duration;

use spool_tests::{EMPTY_COMPONENT, EMPTY_CORE_MODULE, Method, TestHost, Value, json, plugin_path};

/// The plugin list entry named `name`, if any.
async fn plugin_entry(host: &TestHost, name: &str) -> Option<Value> {
    let list = host.get("/v1/plugins").await.expect(200, "list plugins");
    let plugins = list["plugins"]
        .as_array()
        .unwrap_or_else(|| panic!("GET /v1/plugins has a `plugins` array: {list}"));
    plugins.iter().find(|p| p["name"] == name).cloned()
}

async fn post_raw(host: &TestHost, path: &str, body: &str) -> spool_tests::Reply {
    host.call_raw(
        Method::POST,
        path,
        "application/json",
        body.as_bytes().to_vec(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_enqueue_is_refused_and_stores_nothing() {
    let host = TestHost::start();
    host.put_queue("q", json!({"paused": true})).await;
    let path = "/v1/queues/q/messages";

    let c1 = post_raw(&host, path, r#"{"payload": "#)
        .await
        .expect_error(400, "truncated JSON");
    let c2 = post_raw(&host, path, "this is not json")
        .await
        .expect_error(400, "not JSON at all");
    assert_eq!(c1, c2, "the same kind of error has the same code");

    post_raw(&host, path, r#"{"payload": 1, "priority": "high"}"#)
        .await
        .expect_client_error("priority of the wrong type");
    post_raw(&host, path, r#"{"payload": 1, "delay_ms": -5}"#)
        .await
        .expect_client_error("negative delay");
    // One bad entry rejects the whole batch: nothing of it is stored.
    post_raw(
        &host,
        path,
        r#"{"messages": [{"payload": "fine"}, {"payload": 2, "priority": "high"}]}"#,
    )
    .await
    .expect_client_error("a batch with one bad entry");

    let stats = host.stats("q").await;
    assert_eq!(
        stats.enqueued, 0,
        "refused requests store nothing: {stats:?}"
    );
    assert_eq!(stats.ready + stats.scheduled, 0, "{stats:?}");
    assert!(host.healthy().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_queue_configs_are_refused() {
    let host = TestHost::start();
    let c = host
        .call_raw(
            Method::PUT,
            "/v1/queues/newq",
            "application/json",
            b"{\"concurrency\": ".to_vec(),
        )
        .await
        .expect_error(400, "truncated queue config");
    eprintln!("malformed queue config: {c}");
    host.put("/v1/queues/newq", &json!({"concurency": 2}))
        .await
        .expect_client_error("a misspelled config field");
    let reply = host
        .put("/v1/queues/newq", &json!({"concurrency": 0}))
        .await;
    assert!(
        reply.text.contains("concurrency"),
        "the error names the bad field: {}",
        reply.text
    );
    reply.expect_client_error("concurrency 0");
    let code = host
        .get("/v1/queues/newq")
        .await
        .expect_error(404, "a queue whose creation was refused");
    assert_eq!(code, "queue_not_found");

    host.put("/v1/queues/bad*name", &json!({}))
        .await
        .expect_client_error("an invalid queue name");

    // A refused update leaves the existing config alone.
    host.put_queue("keep", json!({"concurrency": 3, "max_attempts": 7}))
        .await;
    host.put(
        "/v1/queues/keep",
        &json!({"max_attempts": 2, "lease_ms": 0}),
    )
    .await
    .expect_client_error("an update with one invalid field");
    let q = host.queue("keep").await;
    assert_eq!(q["config"]["max_attempts"], 7, "{q}");
    assert_eq!(q["config"]["concurrency"], 3, "{q}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_queue_is_404() {
    let host = TestHost::start();
    let code = host
        .post("/v1/queues/ghost/messages", &json!({"payload": 1}))
        .await
        .expect_error(404, "enqueue to a queue never created");
    assert_eq!(code, "queue_not_found");
    let code = host
        .post(
            "/v1/queues/ghost/messages",
            &json!({"messages": [{"payload": 1}]}),
        )
        .await
        .expect_error(404, "batch enqueue to a queue never created");
    assert_eq!(code, "queue_not_found");
    let code = host
        .get("/v1/queues/ghost")
        .await
        .expect_error(404, "get a queue never created");
    assert_eq!(code, "queue_not_found");
    let list = host.get("/v1/queues").await.expect(200, "list queues");
    assert!(
        !list.to_string().contains("ghost"),
        "enqueueing to an unknown queue must not create it: {list}"
    );
}

/// Uploads that are not a handler component are refused before anything is stored, and a refused
/// upload over an existing plugin leaves the active version serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_plugin_uploads_are_refused() {
    let host = TestHost::start();
    // No reference filter plugin exists yet, so "a component of the wrong world" is the smallest
    // valid component: it exports nothing, so it implements neither `handler` nor `filter`.
    let cases: [(&str, &[u8]); 4] = [
        ("not wasm at all", b"#!/bin/sh\necho this is not wasm\n"),
        ("an empty body", b""),
        ("a core module, not a component", EMPTY_CORE_MODULE),
        ("a component of no Spool world", EMPTY_COMPONENT),
    ];
    for (what, bytes) in cases {
        let code = host
            .call_raw(
                Method::PUT,
                "/v1/plugins/junk",
                "application/wasm",
                bytes.to_vec(),
            )
            .await
            .expect_client_error(what);
        eprintln!("upload of {what}: {code}");
        assert!(
            plugin_entry(&host, "junk").await.is_none(),
            "a refused upload ({what}) stores no plugin"
        );
    }

    // Over a working plugin: the refused upload does not replace it.
    host.deploy("echo", &plugin_path("echo")).await;
    host.call_raw(
        Method::PUT,
        "/v1/plugins/echo",
        "application/wasm",
        EMPTY_COMPONENT.to_vec(),
    )
    .await
    .expect_client_error("a wrong-world upload over echo");
    let echo = plugin_entry(&host, "echo").await.expect("echo is listed");
    assert_eq!(echo["active_version"], 1, "echo v1 stays active: {echo}");
    assert_eq!(
        echo["versions"].as_array().map(Vec::len),
        Some(1),
        "no version was added: {echo}"
    );
    host.put_queue("still-works", json!({"handler": "echo"}))
        .await;
    let id = host.enqueue_one("still-works", json!("hi")).await;
    host.wait_state(&id, "acked", Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_payload_is_413() {
    let host = TestHost::start();
    host.put_queue("big", json!({"paused": true})).await;
    let big = "x".repeat(1024 * 1024 + 1024);
    let code = host
        .post("/v1/queues/big/messages", &json!({"payload": big}))
        .await
        .expect_error(413, "a payload over 1 MiB");
    let code2 = host
        .post(
            "/v1/queues/big/messages",
            &json!({"messages": [{"payload": "small"}, {"payload": big}]}),
        )
        .await
        .expect_error(413, "a batch with one payload over 1 MiB");
    assert_eq!(code, code2, "the same kind of error has the same code");
    let stats = host.stats("big").await;
    assert_eq!(
        stats.enqueued, 0,
        "nothing of a refused request is stored: {stats:?}"
    );

    // Just under the limit is fine.
    let fits = "y".repeat(900 * 1024);
    host.enqueue("big", json!({"payload": fits})).await;
    let stats = host.stats("big").await;
    assert_eq!(stats.enqueued, 1, "{stats:?}");
    assert!(host.healthy().await);
}

//! Plugins written in Python (componentize-py) and JavaScript (componentize-js) with the guest
//! SDKs of `guest-sdk/python` and `guest-sdk/js`: each handler's payload-driven outcomes (ack,
//! retry with a delay, dead-letter, publish, kv, config) through a real server, 1,000 messages
//! acked, and the JavaScript filter on a route. `scripts/build.sh` builds the components into
//! `target/lang-plugins/`.

use std::time::{Duration, Instant};

use spool_tests::{TestHost, Value, json, lang_plugin_path};

/// Interpreted guests burn far more fuel than Rust (Python ~0.4M, JavaScript ~1.6M per call
/// here) and keep a larger heap; a warm instance per worker saves the ~1-3 ms instantiation of
/// an interpreter per message.
fn interpreted_queue(handler: &str) -> Value {
    json!({
        "handler": handler,
        "instance_mode": "reuse",
        "fuel": 200_000_000u64,
        "memory_mb": 256,
        "timeout_ms": 10_000,
        "concurrency": 2,
        "max_attempts": 3,
        "backoff_base_ms": 10,
        "backoff_max_ms": 50,
    })
}

/// A host whose spool.toml gives `plugin` config values. (Test hosts share one compiled-code
/// cache, so only the first run pays the ~30 s compile of an 18 MB Python component.)
fn host_for(plugin: &str) -> TestHost {
    TestHost::options()
        .config(format!(
            "[plugins.{plugin}.config]\ngreeting = \"hello from spool.toml\"\ntag = \"t-7\"\n"
        ))
        .start()
}

/// The one message in `queue` (a queue without a handler), with its payload.
async fn only_message(host: &TestHost, queue: &str) -> Value {
    let stats = host
        .wait_stats(
            queue,
            "one published message",
            Duration::from_secs(30),
            |s| s.ready >= 1,
        )
        .await;
    assert_eq!(stats.enqueued, 1, "{queue}: {stats:?}");
    let list = host
        .get(&format!("/v1/queues/{queue}/messages"))
        .await
        .expect(200, "list messages");
    let items = list["items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 1, "{list}");
    host.get_message(items[0]["id"].as_str().unwrap_or_default())
        .await
}

/// Every outcome of `plugin` (py-handler or js-handler), deployed with the CLI.
async fn handler_outcomes(plugin: &str) {
    let host = host_for(plugin);
    let wasm = lang_plugin_path(plugin);
    host.cli(["plugin", "deploy", plugin, &wasm.display().to_string()])
        .expect_success("deploy with the CLI");
    host.put_queue("jobs", interpreted_queue(plugin)).await;
    for out in ["out-publish", "out-kv", "out-config"] {
        host.put_queue(out, json!({})).await;
    }

    // Ack.
    let id = host.enqueue_one("jobs", json!({"hello": "world"})).await;
    let m = host.wait_until_final(&id, Duration::from_secs(90)).await;
    assert_eq!(m["state"], "acked", "{m}");
    assert_eq!(m["attempts"], 1, "{m}");

    // Retry with a delay: the second attempt comes no sooner than the delay, then acks.
    let started = Instant::now();
    let id = host
        .enqueue_one(
            "jobs",
            json!({"do": "retry", "delay_ms": 1500, "once": true}),
        )
        .await;
    let m = host.wait_until_final(&id, Duration::from_secs(30)).await;
    assert_eq!(m["state"], "acked", "{m}");
    assert_eq!(m["attempts"], 2, "{m}");
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "the retry waited its delay: acked after {:?}",
        started.elapsed()
    );

    // Dead-letter with the handler's reason.
    let id = host
        .enqueue_one(
            "jobs",
            json!({"do": "dead-letter", "reason": "order 7 is malformed"}),
        )
        .await;
    let m = host.wait_state(&id, "dead", Duration::from_secs(30)).await;
    assert_eq!(m["attempts"], 1, "dead-letter needs no retries: {m}");
    let dlq = host
        .get("/v1/dlq?queue=jobs")
        .await
        .expect(200, "list the DLQ");
    let item = dlq["items"]
        .as_array()
        .and_then(|items| items.iter().find(|i| i["id"] == id.as_str()))
        .unwrap_or_else(|| panic!("{id} in the DLQ: {dlq}"))
        .clone();
    assert!(
        item["error"]
            .as_str()
            .is_some_and(|e| e.contains("order 7 is malformed")),
        "{item}"
    );

    // Publish: through the implicit route to the queue named like the topic.
    let id = host
        .enqueue_one(
            "jobs",
            json!({"do": "publish", "topic": "out-publish", "body": {"n": 1}}),
        )
        .await;
    assert_eq!(
        host.wait_until_final(&id, Duration::from_secs(30)).await["state"],
        "acked"
    );
    let m = only_message(&host, "out-publish").await;
    assert_eq!(m["payload"], json!({"n": 1}), "{m}");
    assert_eq!(m["headers"]["from"], plugin, "{m}");
    assert_eq!(m["correlation_id"], id.as_str(), "{m}");

    // Key-value: a counter kept across messages (and warm instances).
    for _ in 0..3 {
        let id = host.enqueue_one("jobs", json!({"do": "kv"})).await;
        host.wait_state(&id, "acked", Duration::from_secs(30)).await;
    }
    let id = host
        .enqueue_one("jobs", json!({"do": "kv", "topic": "out-kv"}))
        .await;
    host.wait_state(&id, "acked", Duration::from_secs(30)).await;
    let m = only_message(&host, "out-kv").await;
    assert_eq!(m["payload"], json!({"count": 4}), "{m}");

    // Config from spool.toml's [plugins.NAME.config].
    let id = host
        .enqueue_one(
            "jobs",
            json!({"do": "config", "key": "greeting", "topic": "out-config"}),
        )
        .await;
    host.wait_state(&id, "acked", Duration::from_secs(30)).await;
    let m = only_message(&host, "out-config").await;
    assert_eq!(
        m["payload"],
        json!({"key": "greeting", "value": "hello from spool.toml"}),
        "{m}"
    );

    // 1,000 messages, all acked.
    let before = host.stats("jobs").await.acked;
    let messages: Vec<Value> = (0..1000)
        .map(|i| json!({"payload": {"n": i, "text": "some order"}}))
        .collect();
    let started = Instant::now();
    let ids = host.enqueue("jobs", json!({ "messages": messages })).await;
    assert_eq!(ids.len(), 1000);
    let stats = host
        .wait_stats(
            "jobs",
            "1,000 messages acked",
            Duration::from_secs(120),
            |s| s.acked >= before + 1000 && s.live() == 0,
        )
        .await;
    let elapsed = started.elapsed();
    assert_eq!(stats.acked, before + 1000, "{stats:?}");
    assert_eq!(
        stats.dead, 1,
        "only the dead-letter request is dead: {stats:?}"
    );
    eprintln!(
        "{plugin}: 1,000 messages acked in {:.2} s ({:.0} msgs/s, reuse, concurrency 2)",
        elapsed.as_secs_f64(),
        1000.0 / elapsed.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_handler_acks_retries_dead_letters_publishes_and_keeps_state() {
    handler_outcomes("py-handler").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_handler_acks_retries_dead_letters_publishes_and_keeps_state() {
    handler_outcomes("js-handler").await;
}

/// `POST /v1/topics/{topic}/messages` with `body`; the deliveries' queues, sorted, and the
/// deliveries.
async fn publish(host: &TestHost, topic: &str, payload: Value) -> (Vec<String>, Vec<Value>) {
    let resp = host
        .post(
            &format!("/v1/topics/{topic}/messages"),
            &json!({ "payload": payload }),
        )
        .await
        .expect(202, &format!("publish to {topic}"));
    let deliveries = resp["deliveries"].as_array().cloned().unwrap_or_default();
    let mut queues: Vec<String> = deliveries
        .iter()
        .map(|d| d["queue"].as_str().unwrap_or_default().to_owned())
        .collect();
    queues.sort();
    (queues, deliveries)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_filter_delivers_drops_redirects_and_transforms() {
    let host = host_for("js-filter");
    let wasm = lang_plugin_path("js-filter");
    // The CLI waits longer than the test client's 30 s while the server compiles a fresh
    // 12 MB component on a busy machine.
    host.cli(["plugin", "deploy", "js-filter", &wasm.display().to_string()])
        .expect_success("deploy with the CLI");
    for q in ["orders", "audit", "review"] {
        host.put_queue(q, json!({})).await;
    }
    host.post(
        "/v1/routes",
        &json!({
            "pattern": "orders.#",
            "queue": "orders",
            "filter": "js-filter",
            "timeout_ms": 5000,
            "fuel": 200_000_000u64,
            "memory_mb": 128,
        }),
    )
    .await
    .expect_ok("create a route with the JavaScript filter");

    let (queues, _) = publish(&host, "orders.created", json!({"id": 1})).await;
    assert_eq!(queues, ["orders"], "no decision: the route's queue");

    let (queues, _) = publish(&host, "orders.created", json!({"route": "drop"})).await;
    assert!(queues.is_empty(), "dropped: {queues:?}");

    let (queues, _) = publish(
        &host,
        "orders.created",
        json!({"route": "to", "queues": ["audit", "review"]}),
    )
    .await;
    assert_eq!(queues, ["audit", "review"]);

    let (queues, deliveries) = publish(
        &host,
        "orders.created",
        json!({"route": "transform", "queues": ["review"]}),
    )
    .await;
    assert_eq!(queues, ["review"]);
    let m = host
        .get_message(deliveries[0]["id"].as_str().unwrap_or_default())
        .await;
    assert_eq!(
        m["payload"],
        json!({"original": {"route": "transform", "queues": ["review"]}, "tag": "t-7"}),
        "{m}"
    );
    assert_eq!(m["headers"]["filtered-by"], "js-filter", "{m}");
}

//! Plugins written in Python (componentize-py) and JavaScript (componentize-js) with the guest
//! SDKs of `guest-sdk/python` and `guest-sdk/js`: each handler's payload-driven outcomes (ack,
//! retry with a delay, dead-letter, publish, kv, config) through a real server, 1,000 messages
//! acked, and the JavaScript filter on a route. `scripts/build.sh` builds the components into
//! `target/lang-plugins/`.

use std::time::{Duration, Instant};

use spool_tests::{TestHost, Value, json, lang_plugin_path};

/// Interpreted guests burn far more fuel than Rust (Python ~0.4M, JavaScript ~1.6M per call
/// here) and keep a larger heap; a warm instance per worker saves the ~0.4-0.7 ms instantiation of
/// an interpreter per message.
fn interpreted_queue(handler: &str, instance_mode: &str) -> Value {
    json!({
        "handler": handler,
        "instance_mode": instance_mode,
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

/// Every outcome of `plugin` (py-handler or js-handler), deployed with the CLI, in instances
/// of `instance_mode`.
async fn handler_outcomes(plugin: &str, instance_mode: &str) {
    let host = host_for(plugin);
    let wasm = lang_plugin_path(plugin);
    host.cli(["plugin", "deploy", plugin, &wasm.display().to_string()])
        .expect_success("deploy with the CLI");
    host.put_queue("jobs", interpreted_queue(plugin, instance_mode))
        .await;
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
        "{plugin}: 1,000 messages acked in {:.2} s ({:.0} msgs/s, {instance_mode}, concurrency 2)",
        elapsed.as_secs_f64(),
        1000.0 / elapsed.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_handler_acks_retries_dead_letters_publishes_and_keeps_state() {
    handler_outcomes("py-handler", "reuse").await;
}

/// A fresh instance per message: the flattened Python component (one core module instead of
/// componentize-py's dynamically linked dozen) does everything the original does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_handler_in_fresh_instances_does_the_same() {
    handler_outcomes("py-handler", "fresh").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn javascript_handler_acks_retries_dead_letters_publishes_and_keeps_state() {
    handler_outcomes("js-handler", "reuse").await;
}

/// The server compiles componentize-py's dynamically linked component flattened into one core
/// module (so its instances start about twice as fast); run through `spool plugin run`, the
/// flattened component reports exactly what the original does, message by message, and a
/// trap's backtrace still names the functions.
#[test]
fn python_component_flattens_into_one_core_module_that_behaves_the_same() {
    let original = std::fs::read(lang_plugin_path("py-handler")).expect("read py-handler.wasm");
    let flat = spool_runtime::flatten::flatten(&original)
        .expect("flatten py-handler")
        .expect("py-handler is dynamically linked");
    let modules = |w: &[u8]| spool_runtime::flatten::core_modules(w).expect("count modules");
    assert!(
        modules(&original) >= 8,
        "componentize-py links a dozen modules"
    );
    // One module with all the code, plus the shim and fixup wit-component ties lowered
    // imports with.
    assert_eq!(modules(&flat), 3);
    assert_eq!(
        spool_runtime::flatten::flatten(&flat).expect("flatten again"),
        None,
        "nothing left to flatten"
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let flat_path = dir.path().join("py-flat.wasm");
    std::fs::write(&flat_path, &flat).expect("write the flattened component");
    let messages = dir.path().join("messages.jsonl");
    std::fs::write(
        &messages,
        [
            json!({"payload": {"do": "kv", "topic": "t"}}),
            json!({"payload": {"do": "kv"}}),
            json!({"payload": {"do": "retry", "delay_ms": 50}}),
            json!({"payload": {"do": "dead-letter", "reason": "bad"}}),
            json!({"payload": {"do": "publish", "topic": "x", "body": {"a": [1, 2], "s": "héllo"}}}),
            json!({"payload": "not an object"}),
            json!({"payload": {"do": "raise"}}),
        ]
        .iter()
        .map(|m| format!("{m}\n"))
        .collect::<String>(),
    )
    .expect("write messages");
    // The reports (a JSON array, one per message), keeping what the plugin did and dropping
    // what differs between two builds of the same code: time, fuel, memory, the trap's text.
    let run = |wasm: &std::path::Path, extra: &[&str]| -> (Vec<Value>, String) {
        let wasm = wasm.display().to_string();
        let messages = messages.display().to_string();
        let mut args = vec!["plugin", "run", &wasm, "--messages", &messages];
        args.extend(["--fuel", "2000000000", "--memory-mb", "256", "--json"]);
        args.extend(extra);
        let out = spool_tests::run_cli(None, &[], None, &args);
        let reports: Vec<Value> = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("plugin run --json: {e}: {}\n{}", out.stdout, out.stderr));
        let trap = reports
            .iter()
            .find_map(|r| r["outcome"]["result"]["message"].as_str())
            .unwrap_or_default()
            .to_owned();
        let kept = reports
            .iter()
            .map(|r| {
                let mut outcome = r["outcome"].clone();
                if outcome["kind"] == "failed" {
                    outcome["result"] = r["outcome"]["result"]["category"].clone();
                }
                json!([r["world"], outcome, r["logs"], r["publishes"], r["kv"]])
            })
            .collect();
        (kept, trap)
    };
    // `--no-flatten` runs the component as componentize-py built it.
    let (before, _) = run(&lang_plugin_path("py-handler"), &["--no-flatten"]);
    let (after, trap) = run(&flat_path, &[]);
    assert_eq!(before.len(), 7, "{before:?}");
    assert_eq!(before, after);
    assert_eq!(after[6][1]["result"], "trap", "{after:?}");
    assert!(
        trap.contains("libc.so!abort"),
        "the backtrace names functions: {trap}"
    );
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

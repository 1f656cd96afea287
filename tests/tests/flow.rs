use std::collections::HashSet;
use std::time::Duration;

use spool_tests::json;

use crate::host_with;

/// 1,000 messages enqueued over HTTP as a mix of single requests and batches all reach `echo`
/// and are acked exactly once; the queue's stats agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_messages_reach_echo_and_are_all_acked() {
    let host = host_with(&["echo"]).await;
    let created = host
        .put_queue("work", json!({"handler": "echo", "concurrency": 8}))
        .await;
    assert_eq!(
        created["name"], "work",
        "PUT answers with the queue: {created}"
    );
    assert_eq!(created["config"]["handler"], "echo", "{created}");
    assert_eq!(created["config"]["concurrency"], 8, "{created}");

    let mut ids = Vec::new();
    // 100 single requests...
    for i in 0..100 {
        let got = host
            .enqueue("work", json!({"payload": {"n": i, "kind": "single"}}))
            .await;
        assert_eq!(got.len(), 1, "single enqueue returns one id: {got:?}");
        ids.extend(got);
    }
    // ...and 900 more in batches of different sizes.
    let mut n = 100;
    for size in [1, 49, 150, 300, 400] {
        let messages: Vec<_> = (n..n + size)
            .map(|i| json!({"payload": {"n": i, "kind": "batch"}}))
            .collect();
        let got = host.enqueue("work", json!({ "messages": messages })).await;
        assert_eq!(got.len(), size, "a batch of {size} returns {size} ids");
        ids.extend(got);
        n += size;
    }
    assert_eq!(ids.len(), 1000);
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), 1000, "every enqueued message got its own id");

    let stats = host
        .wait_stats(
            "work",
            "all 1000 messages acked",
            Duration::from_secs(90),
            |s| s.acked >= 1000 && s.live() == 0,
        )
        .await;
    assert_eq!(stats.acked, 1000, "acked exactly once each: {stats:?}");
    assert_eq!(stats.enqueued, 1000, "{stats:?}");
    assert_eq!(stats.ready, 0, "{stats:?}");
    assert_eq!(stats.leased, 0, "{stats:?}");
    assert_eq!(stats.scheduled, 0, "{stats:?}");
    assert_eq!(stats.dead, 0, "{stats:?}");
    assert_eq!(stats.dlq_depth, 0, "{stats:?}");
    assert_eq!(stats.retried, 0, "{stats:?}");

    for id in &ids {
        let m = host.get_message(id).await;
        assert_eq!(m["id"], id.as_str(), "{m}");
        assert_eq!(m["queue"], "work", "{m}");
        assert_eq!(m["state"], "acked", "message {id}: {m}");
        assert_eq!(m["attempts"], 1, "echo acks on the first attempt: {m}");
        let plugin = m["plugin_version"].as_str().unwrap_or_default();
        assert!(
            plugin.starts_with("echo"),
            "plugin_version names the handler that acked it: {m}"
        );
    }
    assert!(host.healthy().await);
}

/// With `instance_mode = "reuse"` workers keep warm instances: ordinary messages are acked, a
/// trapping message fails alone (its instance is discarded) and later messages still flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reuse_mode_handles_messages_and_isolates_traps() {
    let host = host_with(&["misbehave"]).await;
    host.put_queue(
        "warm",
        json!({"handler": "misbehave", "instance_mode": "reuse", "concurrency": 4,
               "max_attempts": 1, "fuel": 50_000_000}),
    )
    .await;
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for i in 0..200 {
        if i % 40 == 7 {
            bad.push(host.enqueue_one("warm", json!({"do": "trap"})).await);
        } else {
            good.push(host.enqueue_one("warm", json!({"do": "ack", "n": i})).await);
        }
    }
    let stats = host
        .wait_stats(
            "warm",
            "every message settled",
            Duration::from_secs(60),
            |s| s.acked + s.dead >= 200,
        )
        .await;
    assert_eq!(stats.acked, good.len() as u64, "{stats:?}");
    assert_eq!(stats.dead, bad.len() as u64, "{stats:?}");
    for id in &bad {
        let m = host.get_message(id).await;
        assert_eq!(m["state"], "dead", "{m}");
        assert_eq!(m["error_category"], "trap", "{m}");
    }
    for id in &good {
        assert_eq!(host.state(id).await, "acked", "message {id}");
    }
}

/// Appends a top-level `spool-settings` custom section, as `spool plugin build` does.
fn with_settings(mut wasm: Vec<u8>, json: &str) -> Vec<u8> {
    fn leb(out: &mut Vec<u8>, mut n: usize) {
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
    let name = b"spool-settings";
    let mut content = Vec::new();
    leb(&mut content, name.len());
    content.extend_from_slice(name);
    content.extend_from_slice(json.as_bytes());
    wasm.push(0);
    leb(&mut wasm, content.len());
    wasm.extend_from_slice(&content);
    wasm
}

/// The reasons `{"do":"instance-calls"}` dead-letters with: `instance call N`, N counting the
/// calls the instance that ran it had handled.
async fn instance_calls(host: &spool_tests::TestHost, queue: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(
            host.enqueue_one(queue, json!({"do": "instance-calls"}))
                .await,
        );
    }
    let mut reasons = Vec::new();
    for id in &ids {
        let m = host.wait_state(id, "dead", Duration::from_secs(30)).await;
        reasons.push(m["last_error"].as_str().unwrap_or_default().to_owned());
    }
    reasons
}

/// A queue's `instance_mode` defaults to `plugin`: the handler's own `spool-settings` section
/// decides (fresh when it declares nothing), and a queue setting overrides it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_mode_plugin_follows_what_the_handler_declares() {
    let host = host_with(&[]).await;
    let wasm = std::fs::read(spool_tests::plugin_path("misbehave")).unwrap();
    let declared = with_settings(wasm.clone(), r#"{"instance_mode":"reuse"}"#);
    for (name, bytes) in [("plain", wasm), ("declares-reuse", declared)] {
        let reply = host
            .call_raw(
                spool_tests::Method::PUT,
                &format!("/v1/plugins/{name}"),
                "application/wasm",
                bytes,
            )
            .await;
        reply.expect(201, "deploy");
    }
    let queue = |handler: &str, mode: Option<&str>| {
        let mut c = json!({"handler": handler, "concurrency": 1, "max_attempts": 1});
        if let Some(mode) = mode {
            c["instance_mode"] = json!(mode);
        }
        c
    };
    let q = host.put_queue("plain", queue("plain", None)).await;
    assert_eq!(q["config"]["instance_mode"], "plugin", "the default: {q}");
    host.put_queue("declared", queue("declares-reuse", None))
        .await;
    host.put_queue("overridden", queue("declares-reuse", Some("fresh")))
        .await;

    let fresh = vec!["instance call 1".to_owned(); 3];
    assert_eq!(instance_calls(&host, "plain", 3).await, fresh);
    assert_eq!(instance_calls(&host, "overridden", 3).await, fresh);
    let warm = instance_calls(&host, "declared", 3).await;
    assert_eq!(
        warm,
        ["instance call 1", "instance call 2", "instance call 3"],
        "one worker keeps one warm instance"
    );

    // A section Spool cannot read is refused at deploy, naming the section.
    let bad = with_settings(
        std::fs::read(spool_tests::plugin_path("misbehave")).unwrap(),
        r#"{"instance_mode":"warm"}"#,
    );
    let reply = host
        .call_raw(
            spool_tests::Method::PUT,
            "/v1/plugins/bad",
            "application/wasm",
            bad,
        )
        .await;
    let message = reply.json["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        reply.expect_error(400, "unreadable settings"),
        "invalid_plugin"
    );
    assert!(message.contains("spool-settings"), "{message}");
}

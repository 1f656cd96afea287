//! Managing what a server holds: deleting queues (refused while they hold live messages unless
//! forced) and plugins (refused while a queue uses them), activating plugin versions by number
//! with an activation history, refusing a non-handler plugin as a queue's handler, and a
//! handler's own `retry` counted as its outcome rather than as an error.

use std::time::Duration;

use sha2::{Digest, Sha256};
use spool_tests::{Method, TestHost, Value, json, plugin_path, run_cli, wait_until};

use crate::host_with;

const WAIT: Duration = Duration::from_secs(30);

/// `sample{labels} value` of the `/metrics` text, or `None` when the series is not there.
async fn metric(host: &TestHost, series: &str) -> Option<f64> {
    let reply = host.get("/metrics").await;
    assert_eq!(reply.status.as_u16(), 200, "GET /metrics: {}", reply.text);
    reply
        .text
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn bytes(name: &str) -> Vec<u8> {
    let path = plugin_path(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

async fn upload(host: &TestHost, name: &str, plugin: &str) -> spool_tests::Reply {
    host.call_raw(
        Method::PUT,
        &format!("/v1/plugins/{name}"),
        "application/wasm",
        bytes(plugin),
    )
    .await
}

// --- item 10: deleting queues and plugins ------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_with_live_messages_is_deleted_only_when_forced() {
    let host = host_with(&["echo"]).await;
    host.put_queue("old", json!({"handler": "echo", "paused": true}))
        .await;
    host.put_queue("other", json!({"paused": true})).await;
    let keyed = host
        .enqueue(
            "old",
            json!({"messages": [{"payload": 1, "idempotency_key": "k"}, {"payload": 2},
                                {"payload": 3, "delay_ms": 600000}]}),
        )
        .await;
    let kept = host.enqueue_one("other", json!("stays")).await;

    let code = host
        .delete("/v1/queues/old")
        .await
        .expect_error(409, "delete a queue holding live messages");
    assert_eq!(code, "queue_not_empty");
    let code = host
        .delete("/v1/queues/old?force=yes")
        .await
        .expect_error(400, "force must be a boolean");
    assert_eq!(code, "invalid_request");
    let q = host.queue("old").await;
    assert_eq!(
        (
            q["stats"]["ready"].as_u64(),
            q["stats"]["scheduled"].as_u64()
        ),
        (Some(2), Some(1)),
        "a refused delete changes nothing: {q}"
    );

    let out = host
        .delete("/v1/queues/old?force=true")
        .await
        .expect(200, "forced delete");
    assert_eq!(out["name"], "old", "{out}");
    assert_eq!(out["forced"], true, "{out}");
    let d = &out["deleted"];
    assert_eq!(
        (
            d["ready"].as_u64(),
            d["scheduled"].as_u64(),
            d["total"].as_u64()
        ),
        (Some(2), Some(1), Some(3)),
        "it says what it deleted: {out}"
    );
    host.get("/v1/queues/old")
        .await
        .expect_error(404, "the queue is gone");
    host.get(&format!("/v1/messages/{}", keyed[0]))
        .await
        .expect_error(404, "its messages are gone");
    host.delete("/v1/queues/old")
        .await
        .expect_error(404, "deleting it again");
    assert_eq!(
        host.state(&kept).await,
        "ready",
        "other queues are untouched"
    );

    // Created again, the queue starts empty: its old key is free, its totals are zero, and its
    // messages are handled.
    host.put_queue("old", json!({"handler": "echo"})).await;
    let again = host
        .enqueue("old", json!({"payload": 1, "idempotency_key": "k"}))
        .await;
    assert_ne!(again[0], keyed[0], "a new message, not the deleted one");
    host.wait_state(&again[0], "acked", WAIT).await;
    let stats = host.stats("old").await;
    assert_eq!((stats.enqueued, stats.acked), (1, 1), "{stats:?}");
}

/// A forced delete while a handler runs: the handler finishes, its ack changes nothing, and the
/// queue created again under the name is consumed by a fresh claimer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_deleting_a_queue_mid_delivery_discards_the_running_outcome() {
    let host = host_with(&["misbehave"]).await;
    host.put_queue("busy", json!({"handler": "misbehave", "concurrency": 1}))
        .await;
    let running = host
        .enqueue_one("busy", json!({"do": "sleep-ms", "ms": 1500}))
        .await;
    host.wait_state(&running, "leased", WAIT).await;
    host.delete("/v1/queues/busy")
        .await
        .expect_error(409, "a leased message is live");
    let out = host
        .delete("/v1/queues/busy?force=true")
        .await
        .expect(200, "forced delete mid-delivery");
    assert_eq!(out["deleted"]["leased"], 1, "{out}");

    host.put_queue("busy", json!({"handler": "misbehave", "concurrency": 1}))
        .await;
    // Long enough for the deleted message's handler to finish and settle into nothing.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let fresh = host.enqueue_one("busy", json!({"do": "ack"})).await;
    host.wait_state(&fresh, "acked", WAIT).await;
    let stats = host.stats("busy").await;
    assert_eq!(
        (stats.acked, stats.enqueued),
        (1, 1),
        "the deleted message's ack counted nowhere: {stats:?}"
    );
    host.get(&format!("/v1/messages/{running}"))
        .await
        .expect_error(404, "the deleted message stays deleted");
    assert!(host.healthy().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_is_deleted_only_when_no_queue_uses_it() {
    let host = host_with(&[]).await;
    upload(&host, "counter", "misbehave")
        .await
        .expect(201, "deploy");
    host.put_queue("kv", json!({"handler": "counter"})).await;
    let id = host.enqueue_one("kv", json!({"do": "kv"})).await;
    host.wait_state(&id, "acked", WAIT).await;

    let reply = host.delete("/v1/plugins/counter").await;
    assert!(
        reply.text.contains("kv"),
        "the refusal names the queue: {}",
        reply.text
    );
    assert_eq!(
        reply.expect_error(409, "delete a plugin in use"),
        "plugin_in_use"
    );
    host.get("/v1/plugins/counter")
        .await
        .expect(200, "still deployed");

    host.put_queue("kv", json!({"handler": null})).await;
    let out = host
        .delete("/v1/plugins/counter")
        .await
        .expect(200, "delete an unused plugin");
    assert_eq!(
        (
            out["versions_deleted"].as_u64(),
            out["kv_entries_deleted"].as_u64()
        ),
        (Some(1), Some(1)),
        "{out}"
    );
    host.get("/v1/plugins/counter")
        .await
        .expect_error(404, "gone");
    let list = host.get("/v1/plugins").await.expect(200, "list");
    assert_eq!(list["plugins"], json!([]), "{list}");
    host.delete("/v1/plugins/counter")
        .await
        .expect_error(404, "deleting it again");

    // Deployed again it starts over at version 1, and a handler set to it runs it.
    let v = upload(&host, "counter", "misbehave")
        .await
        .expect(201, "deploy again");
    assert_eq!(v["version"], 1, "{v}");
    host.put_queue("kv", json!({"handler": "counter"})).await;
    let id = host.enqueue_one("kv", json!({"do": "kv"})).await;
    host.wait_state(&id, "acked", WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_deletes_queues_and_plugins() {
    let host = host_with(&["echo"]).await;
    host.put_queue("q", json!({"paused": true})).await;
    host.enqueue("q", json!({"messages": [{"payload": 1}, {"payload": 2}]}))
        .await;

    let out = host.cli(["queue", "delete", "q"]);
    out.expect_failure("queue delete without --force");
    assert!(
        out.stderr.contains("queue_not_empty") && out.stderr.contains("--force"),
        "{}",
        out.stderr
    );
    let out = host.cli(["queue", "delete", "q", "--force"]);
    out.expect_success("queue delete --force");
    assert!(
        out.stdout
            .contains("deleted queue q and its 2 messages (2 ready)"),
        "{}",
        out.stdout
    );
    host.get("/v1/queues/q").await.expect_error(404, "gone");

    host.put_queue("uses", json!({"handler": "echo", "paused": true}))
        .await;
    let out = host.cli(["plugin", "delete", "echo"]);
    out.expect_failure("plugin delete while a queue uses it");
    assert!(out.stderr.contains("uses"), "{}", out.stderr);
    host.cli(["queue", "delete", "uses"])
        .expect_success("delete the empty queue");
    let out = host.cli(["plugin", "delete", "echo", "--json"]);
    out.expect_success("plugin delete");
    let json: Value = serde_json::from_str(&out.stdout).expect("--json prints JSON");
    assert_eq!(json["versions_deleted"], 1, "{json}");
}

// --- item 11: plugin versions ------------------------------------------------------------------

const ADMIN: &str = "manage-admin-secret";
const READER: &str = "manage-reader-secret";

fn digest(token: &str) -> String {
    format!("{:x}", Sha256::digest(token.as_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_versions_are_activated_by_number_and_recorded() {
    let host = TestHost::options()
        .config(format!(
            "[[auth.tokens]]\nname = \"ops\"\nrole = \"admin\"\nsha256 = \"{}\"\n\n\
             [[auth.tokens]]\nname = \"dash\"\nrole = \"reader\"\nsha256 = \"{}\"\n",
            digest(ADMIN),
            digest(READER)
        ))
        .token(ADMIN)
        .start();
    let v1 = upload(&host, "p", "echo").await.expect(201, "deploy v1");
    assert_eq!(
        (v1["version"].as_u64(), v1["new_version"].as_bool()),
        (Some(1), Some(true))
    );
    upload(&host, "p", "misbehave")
        .await
        .expect(201, "deploy v2");
    let again = upload(&host, "p", "echo")
        .await
        .expect(201, "re-upload v1's bytes");
    assert_eq!(
        (again["version"].as_u64(), again["new_version"].as_bool()),
        (Some(1), Some(false)),
        "the bytes of version 1 activate version 1, no copy: {again}"
    );
    let p = host
        .get("/v1/plugins/p")
        .await
        .expect(200, "GET one plugin");
    assert_eq!(p["active_version"], 1, "{p}");
    assert_eq!(p["versions"].as_array().map(Vec::len), Some(2), "{p}");

    // Queue q runs the active version: misbehave (v2) dead-letters on request, echo (v1) acks.
    host.put_queue("q", json!({"handler": "p", "max_attempts": 1}))
        .await;
    let reject = json!({"do": "dead-letter", "reason": "v2 says no"});
    let id = host.enqueue_one("q", reject.clone()).await;
    let m = host.wait_until_final(&id, WAIT).await;
    assert_eq!(
        (m["state"].as_str(), m["plugin_version"].as_str()),
        (Some("acked"), Some("p@1")),
        "{m}"
    );

    let activated = host
        .post("/v1/plugins/p/versions/2/activate", &json!({}))
        .await
        .expect(200, "activate version 2");
    assert_eq!(
        (activated["version"].as_u64(), activated["active"].as_bool()),
        (Some(2), Some(true))
    );
    let id = host.enqueue_one("q", reject.clone()).await;
    let m = host.wait_until_final(&id, WAIT).await;
    assert_eq!(
        (m["state"].as_str(), m["plugin_version"].as_str()),
        (Some("dead"), Some("p@2")),
        "{m}"
    );

    let code = host
        .post("/v1/plugins/p/versions/7/activate", &json!({}))
        .await
        .expect_error(404, "no version 7");
    assert_eq!(code, "plugin_version_not_found");
    host.post("/v1/plugins/p/versions/x/activate", &json!({}))
        .await
        .expect_error(400, "not a number");
    host.post("/v1/plugins/ghost/versions/1/activate", &json!({}))
        .await
        .expect_error(404, "no such plugin");
    host.call_as(
        Some(READER),
        Method::POST,
        "/v1/plugins/p/versions/1/activate",
        None,
    )
    .await
    .expect_error(403, "a reader may not activate");
    host.call_as(Some(READER), Method::GET, "/v1/plugins/p", None)
        .await
        .expect(200, "a reader may read a plugin");
    host.call_as(Some(READER), Method::DELETE, "/v1/plugins/p", None)
        .await
        .expect_error(403, "a reader may not delete");

    host.post("/v1/plugins/p/rollback", &json!({}))
        .await
        .expect(200, "roll back to version 1");

    // The CLI activates and shows the history.
    let cli = |args: &[&str]| run_cli(Some(host.url()), &[("SPOOL_TOKEN", ADMIN)], None, args);
    cli(&["plugin", "activate", "p", "2"]).expect_success("spool plugin activate");
    let show = cli(&["plugin", "show", "p"]);
    show.expect_success("spool plugin show");
    assert!(
        show.stdout.contains("activate")
            && show.stdout.contains("ops")
            && show.stdout.contains("1 -> 2"),
        "{}",
        show.stdout
    );

    let p = host
        .get("/v1/plugins/p")
        .await
        .expect(200, "GET one plugin");
    assert_eq!(p["active_version"], 2, "{p}");
    let history: Vec<(String, Value, Value, String)> = p["history"]
        .as_array()
        .expect("history array")
        .iter()
        .map(|h| {
            assert!(h["at_ms"].as_i64().is_some() && h["at"].is_string(), "{h}");
            (
                h["action"].as_str().unwrap_or_default().to_owned(),
                h["from_version"].clone(),
                h["to_version"].clone(),
                h["actor"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let row = |a: &str, from: Value, to: u64| (a.to_owned(), from, json!(to), "ops".to_owned());
    assert_eq!(
        history,
        vec![
            row("deploy", Value::Null, 1),
            row("deploy", json!(1), 2),
            row("deploy", json!(2), 1),
            row("activate", json!(1), 2),
            row("rollback", json!(2), 1),
            row("activate", json!(1), 2),
        ],
        "{p}"
    );
}

// --- item 12: a queue's handler must be a handler ----------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_plugin_is_refused_as_a_queue_handler() {
    let host = host_with(&["echo"]).await;
    let f = upload(&host, "router", "route_all")
        .await
        .expect(201, "deploy a filter");
    assert_eq!(f["world"], "filter", "{f}");

    let reply = host
        .put("/v1/queues/q", &json!({"handler": "router"}))
        .await;
    assert!(
        reply.text.contains("filter"),
        "names the plugin's world: {}",
        reply.text
    );
    assert_eq!(
        reply.expect_error(400, "a filter as handler"),
        "world_mismatch"
    );
    host.get("/v1/queues/q")
        .await
        .expect_error(404, "a refused PUT creates nothing");
    let out = host.cli(["queue", "create", "q", "--handler", "router"]);
    out.expect_failure("the CLI is refused too");
    assert!(out.stderr.contains("filter"), "{}", out.stderr);

    // A handler not deployed yet is fine; deploying a filter under its name is not.
    host.put_queue("q", json!({"handler": "later"})).await;
    let reply = upload(&host, "later", "route_all").await;
    assert!(
        reply.text.contains("queue(s) q"),
        "names the queue: {}",
        reply.text
    );
    assert_eq!(
        reply.expect_error(400, "deploy a filter a queue uses"),
        "world_mismatch"
    );
    host.get("/v1/plugins/later")
        .await
        .expect_error(404, "nothing stored");

    // Rollback, activation and re-upload may not bring a filter version back either.
    upload(&host, "mixed", "route_all")
        .await
        .expect(201, "v1 filter");
    upload(&host, "mixed", "echo")
        .await
        .expect(201, "v2 handler");
    host.put_queue("q", json!({"handler": "mixed"})).await;
    for (what, reply) in [
        (
            "rollback",
            host.post("/v1/plugins/mixed/rollback", &json!({})).await,
        ),
        (
            "activate",
            host.post("/v1/plugins/mixed/versions/1/activate", &json!({}))
                .await,
        ),
        ("re-upload", upload(&host, "mixed", "route_all").await),
    ] {
        assert_eq!(reply.expect_error(400, what), "world_mismatch", "{what}");
    }
    let p = host.get("/v1/plugins/mixed").await.expect(200, "plugin");
    assert_eq!(p["active_version"], 2, "{p}");
    let id = host.enqueue_one("q", json!("hi")).await;
    host.wait_state(&id, "acked", WAIT).await;
}

// --- item 13: a handler's retry is not an error ------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_retry_is_its_own_outcome_not_an_error() {
    let host = host_with(&["misbehave", "echo"]).await;
    host.put_queue("again", json!({"handler": "misbehave", "max_attempts": 5}))
        .await;
    let id = host
        .enqueue_one("again", json!({"do": "retry", "delay_ms": 3000}))
        .await;
    let m = wait_until("the handler's retry to be settled", WAIT, || async {
        let m = host.get_message(&id).await;
        if m["attempts"].as_u64() >= Some(1) && m["state"] == "scheduled" {
            Ok(m)
        } else {
            Err(m.to_string())
        }
    })
    .await;
    assert!(
        m.get("last_error").is_none_or(Value::is_null)
            && m.get("error_category").is_none_or(Value::is_null),
        "a retry the handler chose is not an error: {m}"
    );
    let q = host.queue("again").await;
    assert_eq!(q["stats"]["errors"], json!({}), "{q}");
    assert!(
        q["stats"]["retried"].as_u64() >= Some(1),
        "still counted as a retry: {q}"
    );
    let plugins = host.get("/v1/plugins").await.expect(200, "plugins");
    let misbehave = plugins["plugins"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == "misbehave"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(misbehave["errors"], json!({}), "{plugins}");
    let outcome = r#"spool_deliveries_total{queue="again",outcome="handler-retry"}"#;
    assert!(metric(&host, outcome).await >= Some(1.0), "{outcome}");
    let error = r#"spool_queue_errors_total{queue="again",category="handler"}"#;
    assert_eq!(metric(&host, error).await, Some(0.0), "{error}");

    // Handled by another handler next time, the acked message carries no error either.
    host.put_queue("again", json!({"handler": "echo"})).await;
    let m = host.wait_state(&id, "acked", WAIT).await;
    assert!(
        m.get("last_error").is_none_or(Value::is_null),
        "an acked message keeps no 'asked to retry' error: {m}"
    );

    // Retries that use up every attempt still dead-letter as the handler's doing.
    host.put_queue("spent", json!({"handler": "misbehave", "max_attempts": 2}))
        .await;
    let id = host
        .enqueue_one("spent", json!({"do": "retry", "delay_ms": 10}))
        .await;
    let m = host.wait_state(&id, "dead", WAIT).await;
    assert_eq!(m["error_category"], "handler", "{m}");
    assert!(
        m["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("all 2 attempts")),
        "{m}"
    );
}

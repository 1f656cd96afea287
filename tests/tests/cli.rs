//! The `spool` CLI driven as a person or a script would: help that teaches, every client
//! command against a live host (tables and `--json`), bulk enqueue from a file, the DLQ
//! workflow, tokens and the errors a server with tokens gives, `plugin run` without a server,
//! and clear errors when no server is listening or an argument is wrong.

use std::collections::HashSet;
use std::net::TcpListener;
use std::time::Duration;

use sha2::{Digest, Sha256};
use spool_tests::{
    CliOutput, EMPTY_CORE_MODULE, TestHost, Value, json, plugin_path, run_cli, spool_cli,
};

use crate::host_with;

#[test]
fn help_exits_zero_and_lists_the_commands() {
    let out = spool_cli(None, ["--help"]);
    out.expect_success("spool --help");
    for cmd in [
        "serve", "enqueue", "queue", "dlq", "plugin", "bench", "status", "metrics", "token",
    ] {
        assert!(
            out.stdout.contains(cmd),
            "`spool --help` lists `{cmd}`:\n{}",
            out.stdout
        );
    }
    let out = spool_cli(None, ["enqueue", "--help"]);
    out.expect_success("spool enqueue --help");
    for flag in [
        "--priority",
        "--delay",
        "--ttl",
        "--key",
        "--header",
        "--server",
        "--token",
        "--json",
        "--file",
        "--batch",
    ] {
        assert!(
            out.stdout.contains(flag),
            "`spool enqueue --help` documents {flag}:\n{}",
            out.stdout
        );
    }
    // Each group's long help shows example invocations.
    for group in [
        "enqueue", "queue", "message", "dlq", "plugin", "status", "metrics", "token",
    ] {
        let out = spool_cli(None, [group, "--help"]);
        out.expect_success(&format!("spool {group} --help"));
        assert!(
            out.stdout.contains("Examples:") && out.stdout.contains(&format!("spool {group}")),
            "`spool {group} --help` shows examples:\n{}",
            out.stdout
        );
    }
    // The token's value never shows in help, even when it is set in the environment.
    let out = run_cli(
        None,
        &[("SPOOL_TOKEN", "spool_secret_in_env")],
        None,
        &["queue", "list", "--help"],
    );
    out.expect_success("spool queue list --help with SPOOL_TOKEN set");
    assert!(
        out.stdout.contains("SPOOL_TOKEN") && !out.stdout.contains("spool_secret_in_env"),
        "help names SPOOL_TOKEN but hides its value:\n{}",
        out.stdout
    );
}

fn trimmed(s: &str) -> String {
    s.trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_commands_round_trip() {
    let host = TestHost::start();
    let echo = plugin_path("echo");

    // plugin deploy prints name, version and the file's sha256.
    let out = host.cli(["plugin", "deploy", "echo", echo.to_str().unwrap()]);
    out.expect_success("spool plugin deploy");
    let digest: String = Sha256::digest(std::fs::read(&echo).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert!(
        out.stdout.contains("echo") && out.stdout.contains(&digest),
        "deploy output names the plugin and its sha256 {digest}:\n{}",
        out.stdout
    );

    // queue create with flags maps onto the config fields.
    host.cli([
        "queue",
        "create",
        "cq",
        "--handler",
        "echo",
        "--concurrency",
        "2",
        "--max-attempts",
        "3",
        "--backoff-base",
        "2s",
        "--backoff-max",
        "1m",
        "--lease",
        "45s",
        "--timeout",
        "4s",
        "--fuel",
        "500000000",
        "--memory-mb",
        "32",
    ])
    .expect_success("spool queue create");
    let q = host.queue("cq").await;
    let c = &q["config"];
    assert_eq!(c["handler"], "echo", "{q}");
    assert_eq!(c["concurrency"], 2, "{q}");
    assert_eq!(c["max_attempts"], 3, "{q}");
    assert_eq!(c["backoff_base_ms"], 2000, "{q}");
    assert_eq!(c["backoff_max_ms"], 60_000, "{q}");
    assert_eq!(c["lease_ms"], 45_000, "{q}");
    assert_eq!(c["timeout_ms"], 4000, "{q}");
    assert_eq!(c["fuel"], 500_000_000u64, "{q}");
    assert_eq!(c["memory_mb"], 32, "{q}");
    assert_eq!(c["paused"], false, "{q}");

    // queue set changes only what it names.
    host.cli(["queue", "set", "cq", "--concurrency", "5"])
        .expect_success("spool queue set");
    let q = host.queue("cq").await;
    assert_eq!(q["config"]["concurrency"], 5, "{q}");
    assert_eq!(
        q["config"]["max_attempts"], 3,
        "PUT semantics keep the rest: {q}"
    );
    assert_eq!(q["config"]["handler"], "echo", "{q}");

    // enqueue prints the id; the flags reach the message.
    let out = host.cli([
        "enqueue",
        "cq",
        r#"{"order": 1}"#,
        "--priority",
        "7",
        "--header",
        "tenant=acme",
    ]);
    out.expect_success("spool enqueue");
    let id = trimmed(&out.stdout);
    assert!(
        !id.is_empty() && !id.contains(char::is_whitespace),
        "enqueue prints just the id, got {:?}",
        out.stdout
    );
    let m = host.wait_state(&id, "acked", Duration::from_secs(30)).await;
    assert_eq!(m["queue"], "cq", "{m}");
    assert_eq!(m["priority"], 7, "{m}");

    let first = host.cli(["enqueue", "cq", "{}", "--key", "k-1", "--delay", "1h"]);
    first.expect_success("spool enqueue --key --delay");
    let again = host.cli(["enqueue", "cq", "{}", "--key", "k-1", "--delay", "1h"]);
    again.expect_success("spool enqueue --key (again)");
    assert_eq!(
        trimmed(&first.stdout),
        trimmed(&again.stdout),
        "same idempotency key, same id"
    );
    let delayed = host.get_message(&trimmed(&first.stdout)).await;
    assert_eq!(delayed["state"], "scheduled", "--delay 1h: {delayed}");
    let found = host.cli(["queue", "messages", "cq", "--key", "k-1", "--json"]);
    found.expect_success("spool queue messages --key");
    let found: Value = serde_json::from_str(&found.stdout).unwrap();
    assert_eq!(
        found["items"].as_array().map(|items| items.len()),
        Some(1),
        "--key finds the one message: {found}"
    );
    assert_eq!(found["items"][0]["id"], delayed["id"]);

    let ttl = host.cli(["enqueue", "cq", "{}", "--ttl", "1m", "--delay", "1h"]);
    ttl.expect_success("spool enqueue --ttl");

    // queue stats --json is machine-readable and agrees with the API.
    let out = host.cli(["queue", "stats", "cq", "--json"]);
    out.expect_success("spool queue stats --json");
    let v: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("queue stats --json prints JSON ({e}):\n{}", out.stdout));
    let stats = if v.get("stats").is_some() {
        &v["stats"]
    } else {
        &v
    };
    assert_eq!(stats["acked"], 1, "{v}");
    assert_eq!(stats["scheduled"], 2, "{v}");
    host.cli(["queue", "stats", "cq"])
        .expect_success("spool queue stats");

    let out = host.cli(["queue", "list"]);
    out.expect_success("spool queue list");
    assert!(
        out.stdout.contains("cq"),
        "queue list shows cq:\n{}",
        out.stdout
    );

    // --server wins over SPOOL_SERVER.
    let out = spool_cli(
        Some(&closed_port_url()),
        ["queue", "list", "--server", host.url()],
    );
    out.expect_success("queue list with --server overriding SPOOL_SERVER");
    assert!(out.stdout.contains("cq"), "{}", out.stdout);

    // Client errors from the server come through as a non-zero exit with the reason.
    let out = host.cli(["enqueue", "nope", "{}"]);
    out.expect_failure("enqueue to an unknown queue");
    let all = format!("{}{}", out.stdout, out.stderr).to_lowercase();
    assert!(
        all.contains("queue_not_found") || all.contains("not found"),
        "the error says the queue does not exist:\n{all}"
    );
    let out = host.cli(["enqueue", "cq", "{not json"]);
    out.expect_failure("enqueue with a payload that is not JSON");
}

#[test]
fn plugin_run_works_without_a_server() {
    // Point at a closed port to prove no server is involved.
    let nowhere = closed_port_url();
    let echo = plugin_path("echo");
    let misbehave = plugin_path("misbehave");

    let out = spool_cli(
        Some(&nowhere),
        [
            "plugin",
            "run",
            echo.to_str().unwrap(),
            "--payload",
            r#"{"hello": "world"}"#,
        ],
    );
    out.expect_success("plugin run echo");
    assert!(
        out.stdout.to_lowercase().contains("ack"),
        "the outcome is shown:\n{}",
        out.stdout
    );

    let out = spool_cli(
        Some(&nowhere),
        [
            "plugin",
            "run",
            misbehave.to_str().unwrap(),
            "--payload",
            r#"{"do": "dead-letter", "reason": "refused by test"}"#,
        ],
    );
    out.expect_success("plugin run returning dead-letter still ran");
    assert!(
        out.stdout.to_lowercase().contains("dead") && out.stdout.contains("refused by test"),
        "the dead-letter outcome and its reason are shown:\n{}",
        out.stdout
    );

    let out = spool_cli(
        Some(&nowhere),
        [
            "plugin",
            "run",
            misbehave.to_str().unwrap(),
            "--payload",
            r#"{"do": "retry"}"#,
            "--json",
        ],
    );
    out.expect_success("plugin run --json");
    let v: Value = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("plugin run --json prints JSON ({e}):\n{}", out.stdout));
    assert!(
        v.to_string().to_lowercase().contains("retry"),
        "the JSON names the retry outcome: {v}"
    );

    // Several messages from a JSON Lines file: a report each, and a non-zero exit because one
    // of them trapped.
    let dir = tempfile::tempdir().unwrap();
    let messages = dir.path().join("messages.jsonl");
    std::fs::write(
        &messages,
        concat!(
            r#"{"payload": {"do": "ack"}}"#,
            "\n",
            r#"{"payload": {"do": "retry", "delay_ms": 250}, "attempt": 2}"#,
            "\n",
            r#"{"payload": {"do": "trap"}}"#,
            "\n"
        ),
    )
    .unwrap();
    let out = spool_cli(
        Some(&nowhere),
        [
            "plugin",
            "run",
            misbehave.to_str().unwrap(),
            "--messages",
            messages.to_str().unwrap(),
        ],
    );
    out.expect_failure("plugin run --messages with a trapping message");
    for shown in [
        "--- message 3",
        "outcome: ack",
        "retry after 250 ms",
        "FAILED (trap)",
        "peak memory",
    ] {
        assert!(out.stdout.contains(shown), "{shown:?} in:\n{}", out.stdout);
    }
    assert!(
        out.stderr.contains("1 of 3 message(s) failed"),
        "{}",
        out.stderr
    );

    let missing = dir.path().join("missing.wasm");
    let out = spool_cli(
        Some(&nowhere),
        [
            "plugin",
            "run",
            missing.to_str().unwrap(),
            "--payload",
            "{}",
        ],
    );
    out.expect_failure("plugin run on a missing file");
    assert!(
        out.stderr.contains("missing.wasm"),
        "the error names the file:\n{}",
        out.stderr
    );

    let module = dir.path().join("module.wasm");
    std::fs::write(&module, EMPTY_CORE_MODULE).unwrap();
    let out = spool_cli(
        Some(&nowhere),
        ["plugin", "run", module.to_str().unwrap(), "--payload", "{}"],
    );
    out.expect_failure("plugin run on a core module");
    assert!(!out.stderr.trim().is_empty(), "an error is printed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_run_takes_a_queues_limits_and_shares_kv_between_messages() {
    let host = TestHost::start();
    host.put_queue(
        "tight",
        json!({"fuel": 2_000_000u64, "memory_mb": 32, "timeout_ms": 4000}),
    )
    .await;
    let misbehave = plugin_path("misbehave");
    let wasm = misbehave.to_str().unwrap();

    // The queue's fuel stops the loop, as it would a delivery; the source is said on stderr.
    let out = host.cli([
        "plugin",
        "run",
        wasm,
        "--payload",
        r#"{"do": "loop"}"#,
        "--limits-from",
        "tight",
        "--json",
    ]);
    out.expect_success("plugin run --limits-from reports the failed call");
    let report = json_of(&out, "plugin run --limits-from --json");
    assert_eq!(report["outcome"]["result"]["category"], "fuel", "{report}");
    assert!(
        out.stderr.contains("limits of queue tight")
            && out.stderr.contains("fuel 2000000")
            && out.stderr.contains("memory 32 MiB"),
        "{}",
        out.stderr
    );

    // A queue that does not exist, and limits given twice, are errors that change nothing.
    let out = host.cli([
        "plugin",
        "run",
        wasm,
        "--payload",
        "{}",
        "--limits-from",
        "nope",
    ]);
    out.expect_failure("plugin run --limits-from an unknown queue");
    assert!(out.stderr.contains("--limits-from nope"), "{}", out.stderr);
    let out = host.cli([
        "plugin",
        "run",
        wasm,
        "--payload",
        "{}",
        "--limits-from",
        "tight",
        "--fuel",
        "5",
    ]);
    out.expect_failure("--limits-from with --fuel");
    assert!(out.stderr.contains("cannot be used with"), "{}", out.stderr);

    // Messages of one run share a key-value store: the counter climbs.
    let out = run_cli(
        None,
        &[],
        Some(b"{\"payload\": {\"do\": \"kv\"}}\n{\"payload\": {\"do\": \"kv\"}}\n"),
        &["plugin", "run", wasm, "--messages", "-"],
    );
    out.expect_success("two kv messages");
    assert!(out.stdout.contains("count is now 2"), "{}", out.stdout);
}

#[test]
fn unreachable_server_is_reported() {
    let nowhere = closed_port_url();
    for args in [
        vec!["enqueue", "q", "{}"],
        vec!["queue", "list"],
        vec!["queue", "stats", "q"],
        vec!["queue", "messages", "q", "--all"],
        vec!["message", "get", "1"],
        vec!["dlq", "list"],
        vec!["dlq", "replay", "--all"],
        vec!["plugin", "list"],
        vec!["status"],
        vec!["metrics"],
    ] {
        let out = spool_cli(Some(&nowhere), &args);
        out.expect_failure(&format!("spool {args:?} with nothing listening"));
        assert!(
            out.stderr
                .contains(&format!("server not reachable at {nowhere}"))
                && out.stderr.contains("spool serve"),
            "`spool {args:?}` says the server at {nowhere} is not reachable:\n{}",
            out.stderr
        );
    }
}

/// A URL on 127.0.0.1 where nothing listens (a port the OS just handed out and took back).
fn closed_port_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}")
}

/// Parses a command's `--json` output, showing it when it is not JSON.
#[track_caller]
fn json_of(out: &CliOutput, what: &str) -> Value {
    out.expect_success(what);
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("{what} prints JSON ({e}):\n{}", out.stdout))
}

fn items(v: &Value) -> Vec<Value> {
    v["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items array in {v}"))
        .clone()
}

fn ids_of(v: &Value) -> Vec<String> {
    items(v)
        .iter()
        .map(|m| m["id"].as_str().expect("string id").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_commands_print_tables_and_json() {
    let host = host_with(&["echo"]).await;

    let out = host.cli(["queue", "create", "held", "--paused", "--lease", "45s"]);
    out.expect_success("queue create --paused");
    assert!(
        out.stdout.contains("paused") && out.stdout.contains("45s"),
        "create shows the resulting config with human durations:\n{}",
        out.stdout
    );
    let v = json_of(
        &host.cli(["queue", "get", "held", "--json"]),
        "queue get --json",
    );
    assert_eq!(v["name"], "held", "{v}");
    assert_eq!(v["config"]["lease_ms"], 45_000, "{v}");
    assert_eq!(v["config"]["paused"], true, "{v}");

    // 120 waiting messages (the queue is paused and has no handler).
    let batch: Vec<Value> = (0..120).map(|i| json!({"payload": {"n": i}})).collect();
    let enqueued = host.enqueue("held", json!({ "messages": batch })).await;

    let out = host.cli(["queue", "get", "held"]);
    out.expect_success("queue get");
    for part in ["config", "lease", "45s", "ready", "120", "totals"] {
        assert!(
            out.stdout.contains(part),
            "queue get shows {part}:\n{}",
            out.stdout
        );
    }
    let out = host.cli(["queue", "stats", "held"]);
    out.expect_success("queue stats");
    assert!(
        out.stdout
            .lines()
            .any(|l| l.split_whitespace().eq(["ready", "120"])),
        "queue stats shows ready 120:\n{}",
        out.stdout
    );

    let out = host.cli(["queue", "list"]);
    out.expect_success("queue list");
    let header = out.stdout.lines().next().unwrap_or_default();
    assert!(
        header.starts_with("NAME") && header.contains("READY"),
        "{}",
        out.stdout
    );
    let row = out
        .stdout
        .lines()
        .find(|l| l.starts_with("held "))
        .unwrap_or_else(|| panic!("a row for held:\n{}", out.stdout));
    assert!(row.contains("paused") && row.contains("120"), "{row}");
    let v = json_of(&host.cli(["queue", "list", "--json"]), "queue list --json");
    assert!(
        v["queues"]
            .as_array()
            .unwrap()
            .iter()
            .any(|q| q["name"] == "held"),
        "{v}"
    );

    // Pagination: one page with a cursor to the next, then every page with --all.
    let out = host.cli(["queue", "messages", "held", "--limit", "50"]);
    out.expect_success("queue messages --limit 50");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("PAYLOAD"),
        "{}",
        out.stdout
    );
    assert_eq!(
        lines.iter().filter(|l| l.contains("ready")).count(),
        50,
        "{}",
        out.stdout
    );
    let cursor = lines
        .iter()
        .find_map(|l| l.strip_prefix("more: --cursor "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("the table says how to get the next page:\n{}", out.stdout));
    let page2 = json_of(
        &host.cli([
            "queue", "messages", "held", "--limit", "50", "--cursor", cursor, "--json",
        ]),
        "queue messages --cursor --json",
    );
    assert_eq!(items(&page2).len(), 50, "{page2}");
    assert_eq!(
        ids_of(&page2)[0],
        enqueued[50],
        "page 2 starts after page 1"
    );
    assert!(page2["next_cursor"].is_string(), "{page2}");

    let all = json_of(
        &host.cli([
            "queue", "messages", "held", "--state", "ready", "--limit", "50", "--all", "--json",
        ]),
        "queue messages --all --json",
    );
    assert_eq!(
        ids_of(&all),
        enqueued,
        "--all returns every message once, in order"
    );
    assert!(all.get("next_cursor").is_none(), "{all}");
    let out = host.cli(["queue", "peek", "held", "--all"]);
    out.expect_success("queue peek --all");
    assert!(!out.stdout.contains("more:"), "{}", out.stdout);
    assert_eq!(
        out.stdout.lines().count(),
        121,
        "header and 120 rows:\n{}",
        out.stdout
    );
    let out = host.cli(["queue", "messages", "held", "--state", "dead"]);
    out.expect_success("queue messages --state dead");
    assert!(out.stdout.contains("no messages"), "{}", out.stdout);

    // Pause and resume, as text and as JSON.
    let out = host.cli(["queue", "resume", "held"]);
    out.expect_success("queue resume");
    assert!(out.stdout.contains("resumed"), "{}", out.stdout);
    assert_eq!(host.queue("held").await["config"]["paused"], false);
    let v = json_of(
        &host.cli(["queue", "pause", "held", "--json"]),
        "queue pause --json",
    );
    assert_eq!(v["config"]["paused"], true, "{v}");
    assert_eq!(host.queue("held").await["config"]["paused"], true);

    // queue set with the newer settings.
    host.cli([
        "queue",
        "set",
        "held",
        "--strategy",
        "fifo",
        "--instance-mode",
        "reuse",
        "--default-ttl",
        "10m",
    ])
    .expect_success("queue set --strategy --instance-mode --default-ttl");
    let c = host.queue("held").await["config"].clone();
    assert_eq!(
        (&c["strategy"], &c["instance_mode"], &c["default_ttl_ms"]),
        (&json!("fifo"), &json!("reuse"), &json!(600_000)),
        "{c}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_get_and_cancel() {
    let host = TestHost::start();
    host.put_queue("q", json!({})).await;
    let out = host.cli([
        "enqueue",
        "q",
        r#"{"order": 42}"#,
        "--delay",
        "1h",
        "--header",
        "tenant=acme",
        "--topic",
        "orders.created",
    ]);
    out.expect_success("enqueue --delay --topic");
    let id = out.stdout.trim().to_owned();

    let out = host.cli(["message", "get", &id]);
    out.expect_success("message get");
    for part in [
        "scheduled",
        "tenant",
        "acme",
        "\"order\": 42",
        "orders.created",
        "(in ",
    ] {
        assert!(
            out.stdout.contains(part),
            "message get shows {part:?}:\n{}",
            out.stdout
        );
    }
    let v = json_of(
        &host.cli(["message", "get", &id, "--json"]),
        "message get --json",
    );
    assert_eq!(
        (&v["id"], &v["state"]),
        (&json!(id), &json!("scheduled")),
        "{v}"
    );

    let out = host.cli(["message", "cancel", &id]);
    out.expect_success("message cancel");
    assert!(out.stdout.contains("cancelled"), "{}", out.stdout);
    assert_eq!(host.state(&id).await, "cancelled");

    let other = host.enqueue_one("q", json!(1)).await;
    let v = json_of(
        &host.cli(["message", "cancel", &other, "--json"]),
        "message cancel --json",
    );
    assert_eq!(v["state"], "cancelled", "{v}");

    let out = host.cli(["message", "get", "999999"]);
    out.expect_failure("message get of an unknown id");
    assert!(
        out.stderr.contains("HTTP 404") && out.stderr.contains("message_not_found"),
        "the server's code and status are shown:\n{}",
        out.stderr
    );
}

/// `n` messages in `queue` that dead-letter on their first attempt, and their ids.
async fn dead_letters(host: &TestHost, queue: &str, n: usize) -> Vec<String> {
    host.put_queue(
        queue,
        json!({"handler": "misbehave", "max_attempts": 1, "concurrency": 4}),
    )
    .await;
    let mut ids = Vec::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let messages: Vec<Value> = chunk
            .iter()
            .map(|i| json!({"payload": {"do": "dead-letter", "reason": format!("refused {i}")}}))
            .collect();
        ids.extend(host.enqueue(queue, json!({ "messages": messages })).await);
    }
    host.wait_stats(queue, "every message dead", Duration::from_secs(90), |s| {
        s.dlq_depth == n as u64
    })
    .await;
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_list_review_replay_and_purge_one() {
    let host = host_with(&["misbehave"]).await;
    let ids = dead_letters(&host, "dq", 4).await;

    let out = host.cli(["dlq", "list", "--queue", "dq"]);
    out.expect_success("dlq list --queue");
    assert!(out.stdout.starts_with("ID"), "{}", out.stdout);
    for i in 0..4 {
        assert!(
            out.stdout.contains(&format!("refused {i}")),
            "dlq list shows the whole error:\n{}",
            out.stdout
        );
    }
    assert!(
        out.stdout.contains("handler"),
        "the category: {}",
        out.stdout
    );
    let v = json_of(
        &host.cli(["dlq", "list", "--queue", "dq", "--json"]),
        "dlq list --json",
    );
    assert_eq!(ids_of(&v), ids, "{v}");
    let v = json_of(
        &host.cli(["dlq", "list", "--category", "trap", "--json"]),
        "dlq list --category --json",
    );
    assert!(items(&v).is_empty(), "{v}");
    let out = host.cli(["dlq", "list", "--category", "trap"]);
    out.expect_success("dlq list --category trap");
    assert!(out.stdout.contains("no dead letters"), "{}", out.stdout);

    // Review one; the reviewed filter finds it (and only it).
    let out = host.cli(["dlq", "reviewed", &ids[0]]);
    out.expect_success("dlq reviewed");
    assert!(out.stdout.contains("reviewed"), "{}", out.stdout);
    let v = json_of(
        &host.cli(["dlq", "list", "--reviewed", "--json"]),
        "dlq list --reviewed",
    );
    assert_eq!(ids_of(&v), vec![ids[0].clone()], "{v}");
    let v = json_of(
        &host.cli([
            "dlq",
            "list",
            "--reviewed",
            "false",
            "--limit",
            "2",
            "--all",
            "--json",
        ]),
        "dlq list --reviewed false --all",
    );
    assert_eq!(ids_of(&v), ids[1..].to_vec(), "{v}");

    // Replay one into the paused queue: it waits there, ready, attempts reset.
    host.cli(["queue", "pause", "dq"])
        .expect_success("queue pause");
    let out = host.cli(["dlq", "replay", &ids[1]]);
    out.expect_success("dlq replay ID");
    assert!(out.stdout.contains("back in its queue"), "{}", out.stdout);
    let m = host.get_message(&ids[1]).await;
    assert_eq!(
        (&m["state"], &m["attempts"]),
        (&json!("ready"), &json!(0)),
        "{m}"
    );
    let v = json_of(
        &host.cli(["dlq", "replay", &ids[2], "--json"]),
        "dlq replay --json",
    );
    assert_eq!(v["state"], "ready", "{v}");

    // Purge one: it is gone.
    let out = host.cli(["dlq", "purge", &ids[3]]);
    out.expect_success("dlq purge ID");
    assert!(out.stdout.contains("deleted"), "{}", out.stdout);
    host.get(&format!("/v1/messages/{}", ids[3]))
        .await
        .expect_error(404, "a purged dead letter is gone");
    let v = json_of(
        &host.cli(["dlq", "purge", &ids[0], "--json"]),
        "dlq purge --json",
    );
    assert_eq!(v["deleted"], true, "{v}");
    assert_eq!(host.stats("dq").await.dlq_depth, 0);
}

/// Bulk replay and purge through `POST /v1/dlq/replay` and `/v1/dlq/purge`, more than one
/// request's worth (the CLI asks for 500 at a time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dlq_bulk_replay_and_purge() {
    let host = host_with(&["misbehave"]).await;
    let n = 1_100;
    let ids = dead_letters(&host, "bulk", n).await;
    let other = dead_letters(&host, "other", 3).await;
    host.cli(["queue", "pause", "bulk"])
        .expect_success("queue pause");

    let v = json_of(
        &host.cli(["dlq", "replay", "--all", "--queue", "bulk", "--json"]),
        "dlq replay --all --json",
    );
    assert_eq!(v["replayed"], n, "{v}");
    let replayed: HashSet<&str> = v["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap())
        .collect();
    assert_eq!(
        replayed,
        ids.iter().map(String::as_str).collect(),
        "every one, once"
    );
    let s = host.stats("bulk").await;
    assert_eq!((s.ready, s.dlq_depth), (n as u64, 0), "{s:?}");
    assert_eq!(
        host.stats("other").await.dlq_depth,
        3,
        "other queues untouched"
    );

    // Nothing left to replay there.
    let out = host.cli(["dlq", "replay", "--all", "--queue", "bulk"]);
    out.expect_success("dlq replay --all with nothing to do");
    assert!(out.stdout.contains("nothing replayed"), "{}", out.stdout);

    // Let them die again, then purge by filter.
    host.cli(["queue", "resume", "bulk"])
        .expect_success("queue resume");
    host.wait_stats("bulk", "all dead again", Duration::from_secs(90), |s| {
        s.dlq_depth == n as u64
    })
    .await;
    host.cli(["queue", "pause", "bulk"])
        .expect_success("queue pause");

    // Off a terminal, purge --all needs --yes and deletes nothing without it.
    let out = host.cli(["dlq", "purge", "--all", "--queue", "bulk"]);
    out.expect_failure("dlq purge --all without --yes off a terminal");
    assert!(out.stderr.contains("--yes"), "{}", out.stderr);
    assert_eq!(host.stats("bulk").await.dlq_depth, n as u64);

    // Reviewed only: none are, so none go.
    let v = json_of(
        &host.cli(["dlq", "purge", "--all", "--reviewed", "--yes", "--json"]),
        "dlq purge --all --reviewed",
    );
    assert_eq!(v["purged"], 0, "{v}");

    let out = host.cli(["dlq", "purge", "--all", "--queue", "bulk", "--yes"]);
    out.expect_success("dlq purge --all --queue --yes");
    assert!(
        out.stdout.contains(&format!("deleted {n} dead letters")),
        "{}",
        out.stdout
    );
    assert_eq!(host.stats("bulk").await.dlq_depth, 0);
    let left = json_of(&host.cli(["dlq", "list", "--json"]), "dlq list --json");
    assert_eq!(
        ids_of(&left),
        other,
        "only the other queue's dead letters are left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_deploy_list_and_rollback() {
    let host = TestHost::start();
    let echo = plugin_path("echo");
    let misbehave = plugin_path("misbehave");
    host.cli(["plugin", "deploy", "p", echo.to_str().unwrap()])
        .expect_success("deploy v1");
    let v = json_of(
        &host.cli([
            "plugin",
            "deploy",
            "p",
            misbehave.to_str().unwrap(),
            "--json",
        ]),
        "deploy v2 --json",
    );
    assert_eq!((&v["name"], &v["version"]), (&json!("p"), &json!(2)), "{v}");

    let out = host.cli(["plugin", "list"]);
    out.expect_success("plugin list");
    let rows: Vec<Vec<&str>> = out
        .stdout
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 2, "{}", out.stdout);
    assert_eq!(&rows[1][..3], ["p", "2", "*"], "{}", out.stdout);
    assert_eq!(
        &rows[0][..3],
        ["p", "1", "handler"],
        "v1 is not active:\n{}",
        out.stdout
    );

    let out = host.cli(["plugin", "rollback", "p"]);
    out.expect_success("plugin rollback");
    assert!(out.stdout.contains("version 1"), "{}", out.stdout);
    let v = json_of(
        &host.cli(["plugin", "list", "--json"]),
        "plugin list --json",
    );
    assert_eq!(v["plugins"][0]["active_version"], 1, "{v}");
    assert_eq!(
        v["plugins"][0]["versions"].as_array().unwrap().len(),
        2,
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_metrics() {
    let host = host_with(&["echo"]).await;
    host.put_queue("m", json!({"handler": "echo"})).await;
    let id = host.enqueue_one("m", json!(1)).await;
    host.wait_state(&id, "acked", Duration::from_secs(30)).await;

    let out = host.cli(["status"]);
    out.expect_success("status");
    for line in ["health  ok", "ready   ok", host.url()] {
        assert!(
            out.stdout.contains(line),
            "status shows {line:?}:\n{}",
            out.stdout
        );
    }
    let v = json_of(&host.cli(["status", "--json"]), "status --json");
    assert_eq!(v["healthz"]["status"], "ok", "{v}");
    assert_eq!(v["readyz"]["status"], "ok", "{v}");

    let out = host.cli(["metrics"]);
    out.expect_success("metrics");
    assert!(
        out.stdout.contains("# TYPE ") && out.stdout.contains("queue=\"m\""),
        "metrics prints the Prometheus text with the queue's series:\n{}",
        out.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_enqueue_from_a_file() {
    let host = TestHost::start();
    host.put_queue("bulk", json!({"paused": true})).await;
    let dir = tempfile::tempdir().unwrap();

    // 2,500 message objects (and a blank line, which is skipped): five batches of 500.
    let mut text = String::new();
    for i in 0..2_500 {
        text.push_str(&json!({"payload": {"n": i}, "priority": i % 3}).to_string());
        text.push('\n');
        if i == 1_000 {
            text.push('\n');
        }
    }
    let file = dir.path().join("messages.jsonl");
    std::fs::write(&file, &text).unwrap();
    let out = host.cli(["enqueue", "bulk", "--file", file.to_str().unwrap()]);
    out.expect_success("enqueue --file");
    assert!(
        out.stdout.contains("enqueued 2500 messages"),
        "it says how many were enqueued:\n{}",
        out.stdout
    );
    let s = host.stats("bulk").await;
    assert_eq!((s.enqueued, s.ready), (2_500, 2_500), "{s:?}");

    // From standard input with --json and a small batch: every id, each line's fields kept.
    let lines: String = (0..10)
        .map(|i| {
            format!(
                "{}\n",
                json!({"payload": {"n": i}, "priority": 9, "headers": {"l": i.to_string()}})
            )
        })
        .collect();
    let out = run_cli(
        Some(host.url()),
        &[],
        Some(lines.as_bytes()),
        &["enqueue", "bulk", "--file", "-", "--batch", "3", "--json"],
    );
    let v = json_of(&out, "enqueue --file - --json");
    assert_eq!(v["enqueued"], 10, "{v}");
    let ids: Vec<String> = v["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 10, "{v}");
    let m = host.get_message(&ids[7]).await;
    assert_eq!(m["priority"], 9, "{m}");
    assert_eq!(m["payload"], json!({"n": 7}), "{m}");
    assert_eq!(m["headers"]["l"], "7", "{m}");

    // A line the server refuses: its batch is not stored, earlier batches are, and the error
    // names the line.
    let mut bad = String::new();
    for i in 1..=12 {
        if i == 8 {
            bad.push_str("{\"payload\": 8, \"bogus\": true}\n");
        } else {
            bad.push_str(&format!("{}\n", json!({"payload": i})));
        }
    }
    let bad_file = dir.path().join("bad.jsonl");
    std::fs::write(&bad_file, &bad).unwrap();
    host.put_queue("partial", json!({"paused": true})).await;
    let out = host.cli([
        "enqueue",
        "partial",
        "--file",
        bad_file.to_str().unwrap(),
        "--batch",
        "5",
    ]);
    out.expect_failure("enqueue --file with a refused line");
    for part in [
        "lines 6-10",
        "line 8",
        "5 messages from lines 1-5 were already stored",
        "tail -n +6",
    ] {
        assert!(
            out.stderr.contains(part),
            "the error says {part:?}:\n{}",
            out.stderr
        );
    }
    assert_eq!(
        host.stats("partial").await.enqueued,
        5,
        "only the first batch"
    );

    // A line that is not a message object fails before it is sent.
    let out = run_cli(
        Some(host.url()),
        &[],
        Some(b"{\"payload\": 1}\n42\n"),
        &["enqueue", "partial", "--file", "-"],
    );
    out.expect_failure("enqueue --file with a bare payload line");
    assert!(
        out.stderr.contains("line 2") && out.stderr.contains("{\"payload\": ...}"),
        "{}",
        out.stderr
    );
    assert_eq!(
        host.stats("partial").await.enqueued,
        5,
        "nothing more stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_made_locally_and_errors_say_what_to_do() {
    let nowhere = closed_port_url();
    // `token new` prints the token once and the entry for spool.toml; no server involved.
    let mut tokens = Vec::new();
    let mut toml = String::new();
    for (name, role) in [("ops", "admin"), ("shop", "producer"), ("dash", "reader")] {
        let v = json_of(
            &spool_cli(
                Some(&nowhere),
                ["token", "new", "--name", name, "--role", role, "--json"],
            ),
            "token new --json",
        );
        let token = v["token"].as_str().unwrap().to_owned();
        let digest = format!("{:x}", Sha256::digest(token.as_bytes()));
        assert_eq!(v["sha256"], digest, "{v}");
        assert!(token.starts_with("spool_") && token.len() > 40, "{token}");
        toml.push_str(v["toml"].as_str().unwrap());
        toml.push('\n');
        // `token hash` agrees, from an argument and from standard input.
        let out = spool_cli(None, ["token", "hash", &token]);
        out.expect_success("token hash TOKEN");
        assert_eq!(out.stdout.trim(), digest);
        let out = run_cli(
            None,
            &[],
            Some(format!("{token}\n").as_bytes()),
            &["token", "hash"],
        );
        out.expect_success("token hash < stdin");
        assert_eq!(out.stdout.trim(), digest);
        tokens.push(token);
    }
    let out = spool_cli(None, ["token", "new", "--name", "x", "--role", "producer"]);
    out.expect_success("token new");
    for part in [
        "spool_",
        "[[auth.tokens]]",
        "name = \"x\"",
        "role = \"producer\"",
        "sha256 = \"",
    ] {
        assert!(out.stdout.contains(part), "{part:?} in:\n{}", out.stdout);
    }
    let [admin, producer, reader] = [&tokens[0], &tokens[1], &tokens[2]];

    // A server configured with exactly what `token new` printed.
    let host = TestHost::options()
        .config(toml)
        .token(admin.clone())
        .start();
    let url = host.url().to_owned();
    let cli = |token: Option<&str>, args: &[&str]| match token {
        Some(t) => run_cli(Some(&url), &[("SPOOL_TOKEN", t)], None, args),
        None => run_cli(Some(&url), &[], None, args),
    };

    let out = cli(None, &["queue", "list"]);
    out.expect_failure("no token");
    assert!(
        out.stderr.contains("requires a token")
            && out.stderr.contains("--token")
            && out.stderr.contains("SPOOL_TOKEN"),
        "{}",
        out.stderr
    );
    let out = cli(Some("spool_not_a_real_token"), &["queue", "list"]);
    out.expect_failure("a wrong token");
    assert!(
        out.stderr.contains("did not accept the token"),
        "{}",
        out.stderr
    );

    // Admin (via --token) may create; reader may list but not create; producer may enqueue.
    let out = run_cli(
        Some(&url),
        &[],
        None,
        &["queue", "create", "q", "--token", admin],
    );
    out.expect_success("admin creates a queue with --token");
    cli(Some(reader), &["queue", "list"]).expect_success("reader lists queues");
    let out = cli(Some(reader), &["queue", "create", "q2"]);
    out.expect_failure("reader creates a queue");
    assert!(
        out.stderr.contains("role may not do this")
            && out.stderr.contains("reader")
            && out.stderr.contains("HTTP 403"),
        "{}",
        out.stderr
    );
    let out = cli(Some(producer), &["enqueue", "q", "{\"x\": 1}"]);
    out.expect_success("producer enqueues");
    let id = out.stdout.trim().to_owned();
    assert_eq!(host.state(&id).await, "ready");

    // The probes stay public.
    cli(None, &["status"]).expect_success("status needs no token");
}

#[test]
fn invalid_arguments_are_refused_with_a_pointer_to_help() {
    let nowhere = closed_port_url();
    for (args, says) in [
        (vec!["queue", "messages", "q", "--state", "nope"], "nope"),
        (vec!["queue", "messages", "q", "--limit", "0"], "--limit"),
        (
            vec!["enqueue", "q", "--file", "f.jsonl", "--batch", "5000"],
            "--batch",
        ),
        (vec!["enqueue", "q", "{}", "--file", "f.jsonl"], "--file"),
        (vec!["dlq", "purge"], "--all"),
        (vec!["dlq", "replay", "7", "--queue", "q"], "--queue"),
        (vec!["dlq", "list", "--category", "oops"], "oops"),
        (vec!["token", "new", "--role", "root"], "root"),
        (vec!["queue", "frobnicate"], "frobnicate"),
    ] {
        let out = spool_cli(Some(&nowhere), &args);
        out.expect_failure(&format!("spool {args:?}"));
        assert_eq!(out.status.code(), Some(2), "usage errors exit 2: {args:?}");
        assert!(
            out.stderr.contains(says) && out.stderr.contains("--help"),
            "`spool {args:?}` names {says:?} and points to --help:\n{}",
            out.stderr
        );
    }
    // Values the server would take but the CLI can check first.
    let out = spool_cli(Some("localhost:7700"), ["queue", "list"]);
    out.expect_failure("a server without a scheme");
    assert!(out.stderr.contains("http://"), "{}", out.stderr);
    let out = spool_cli(Some(&nowhere), ["queue", "set", "q", "--lease", "soon"]);
    out.expect_failure("a bad duration");
    assert!(out.stderr.contains("--lease"), "{}", out.stderr);
}

/// Serves `answers` to one connection each, in order, on loopback: `(status line, body)`. Each
/// accept and read is bounded in time, so a CLI that never connects fails the test instead of
/// hanging it.
fn fake_server(answers: Vec<(&'static str, String)>) -> (String, std::thread::JoinHandle<()>) {
    use std::io::{Read, Write};
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    listener.set_nonblocking(true).expect("nonblocking");
    let thread = std::thread::spawn(move || {
        for (status, body) in answers {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            let mut stream = loop {
                match listener.accept() {
                    Ok((stream, _)) => break stream,
                    Err(_) if std::time::Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(e) => panic!("the CLI never connected: {e}"),
                }
            };
            stream.set_nonblocking(false).expect("blocking");
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .expect("read timeout");
            // The request head; GETs have no body.
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && head.len() < 64 * 1024 {
                match stream.read(&mut byte) {
                    Ok(1) => head.push(byte[0]),
                    _ => break,
                }
            }
            let answer = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(answer.as_bytes());
        }
    });
    (url, thread)
}

/// An answer the CLI cannot parse (as an older server could send for a payload stored before
/// enqueue checked them) is shown raw with an error and a non-zero exit, never as nothing.
#[test]
fn unreadable_answers_are_shown_raw_and_fail() {
    let message = r#"{"id":"1","queue":"q","state":"ready","payload":"\ud800"}"#.to_owned();
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    let page = format!(r#"{{"items":[{{"id":"1","state":"ready","payload":{deep}}}]}}"#);
    let (url, server) = fake_server(vec![
        ("200 OK", message.clone()),
        ("200 OK", message.clone()),
        ("200 OK", page.clone()),
    ]);
    for (args, raw) in [
        (vec!["message", "get", "1"], &message),
        (vec!["message", "get", "1", "--json"], &message),
        (vec!["queue", "messages", "q"], &page),
    ] {
        let out = spool_cli(Some(&url), &args);
        out.expect_failure(&args.join(" "));
        assert!(
            out.stderr.contains("not JSON this CLI can read") && out.stderr.contains(raw.as_str()),
            "{args:?}: the error shows the raw answer:\n{}",
            out.stderr
        );
        assert!(!out.stdout.contains("no messages match"), "{}", out.stdout);
    }
    server.join().expect("fake server");
}

/// `spool queue create --help` names the value each setting takes on a new queue, and those are
/// exactly what the server gives a queue created without flags.
#[tokio::test]
async fn queue_create_help_shows_the_defaults_a_new_queue_gets() {
    let out = spool_cli(None, ["queue", "create", "--help"]);
    out.expect_success("spool queue create --help");
    // clap wraps long lines; join them so each flag's text is one string.
    let help = out.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
    let default_of = |flag: &str| -> String {
        let at = help
            .find(&format!("--{flag} "))
            .unwrap_or_else(|| panic!("--{flag} is in the help:\n{}", out.stdout));
        let rest = &help[at..];
        let start = rest
            .find("[new queues: ")
            .unwrap_or_else(|| panic!("--{flag} shows its default:\n{}", out.stdout))
            + "[new queues: ".len();
        rest[start..start + rest[start..].find(']').unwrap()].to_owned()
    };

    let host = TestHost::start();
    let config = host.put_queue("fresh-defaults", json!({})).await["config"].clone();
    let ms = |field: &str| config[field].as_u64().unwrap();
    let duration = |text: String| -> u64 {
        let mut total = 0;
        for part in text.split_whitespace() {
            let (n, unit) = part.split_at(part.find(|c: char| !c.is_ascii_digit()).unwrap());
            let n: u64 = n.parse().unwrap();
            total += n * match unit {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                other => panic!("unexpected unit {other} in {text}"),
            };
        }
        total
    };
    for (flag, field) in [
        ("concurrency", "concurrency"),
        ("max-attempts", "max_attempts"),
        ("fuel", "fuel"),
        ("memory-mb", "memory_mb"),
    ] {
        assert_eq!(default_of(flag), config[field].to_string(), "--{flag}");
    }
    for (flag, field) in [
        ("backoff-base", "backoff_base_ms"),
        ("backoff-max", "backoff_max_ms"),
        ("lease", "lease_ms"),
        ("timeout", "timeout_ms"),
    ] {
        assert_eq!(duration(default_of(flag)), ms(field), "--{flag}");
    }
    for (flag, field) in [("strategy", "strategy"), ("instance-mode", "instance_mode")] {
        assert_eq!(
            default_of(flag),
            config[field].as_str().unwrap(),
            "--{flag}"
        );
    }
    assert_eq!(default_of("paused"), config["paused"].to_string());
    assert!(config["handler"].is_null());
    assert_eq!(default_of("handler"), "none");
    assert!(config["default_ttl_ms"].is_null());
    assert_eq!(default_of("default-ttl"), "none");
}

/// Appends a custom section of `size` bytes (ignored by every runtime) to a component, to make
/// a large but valid upload.
fn pad_component(wasm: &mut Vec<u8>, size: usize) {
    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let name = b"padding";
    let mut content = Vec::with_capacity(size + 16);
    leb(name.len(), &mut content);
    content.extend_from_slice(name);
    content.resize(content.len() + size, 0);
    wasm.push(0);
    leb(content.len(), wasm);
    wasm.extend_from_slice(&content);
}

/// A large `plugin deploy` on a terminal shows the upload and the server's work as a progress
/// bar; without a terminal (a script) nothing but the result is printed.
#[test]
fn plugin_deploy_shows_progress_on_a_terminal_only() {
    let host = TestHost::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.wasm");
    let mut wasm = std::fs::read(plugin_path("echo")).unwrap();
    pad_component(&mut wasm, 24 << 20);
    std::fs::write(&file, &wasm).unwrap();

    // `script` gives the CLI a pseudo-terminal, as a person's shell would.
    let command = format!(
        "{} plugin deploy big {} --server {}",
        spool_tests::spool_bin().display(),
        file.display(),
        host.url()
    );
    let out = std::process::Command::new("timeout")
        .args(["60", "script", "-q", "-e", "-c", &command, "/dev/null"])
        .env("TERM", "xterm")
        .env_remove("SPOOL_TOKEN")
        .env_remove("SPOOL_SERVER")
        .output()
        .expect("run script(1)");
    let text = String::from_utf8_lossy(&out.stdout);
    // indicatif shows sizes like "26.43 MiB".
    let total = format!("/{:.2} MiB", wasm.len() as f64 / f64::from(1 << 20));
    assert!(out.status.success(), "deploy on a terminal failed:\n{text}");
    assert!(text.contains("deployed big version 1"), "{text}");
    assert!(
        text.contains(&total) && text.contains("the server is compiling and checking it"),
        "the terminal shows a progress bar of the upload:\n{text}"
    );

    let plain = host.cli(["plugin", "deploy", "big2", file.to_str().unwrap()]);
    plain.expect_success("plugin deploy without a terminal");
    assert!(
        plain.stdout.contains("deployed big2 version 1"),
        "{}",
        plain.stdout
    );
    assert!(
        !plain.stderr.contains("MiB"),
        "no progress bar for a script:\n{}",
        plain.stderr
    );
}

/// The binary users run is the release build without its debug line tables (kept for
/// `--profile profiling`): it once weighed 182 MB, nearly all of it line tables.
#[test]
fn the_release_binary_ships_without_debug_info() {
    let size = std::fs::metadata(spool_tests::spool_bin()).unwrap().len();
    assert!(
        size < 80 << 20,
        "target/release/spool is {} MiB; the release profile should strip debug info \
         (strip = \"debuginfo\" in Cargo.toml)",
        size >> 20
    );
}

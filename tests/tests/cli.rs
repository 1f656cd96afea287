//! The `spool` CLI: help, the client commands against a live host, `plugin run` without a
//! server, and a clear error when no server is listening.

use std::net::TcpListener;
use std::time::Duration;

use sha2::{Digest, Sha256};
use spool_tests::{EMPTY_CORE_MODULE, TestHost, Value, plugin_path, spool_cli};

#[test]
fn help_exits_zero_and_lists_the_commands() {
    let out = spool_cli(None, ["--help"]);
    out.expect_success("spool --help");
    for cmd in ["serve", "enqueue", "queue", "dlq", "plugin"] {
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
    ] {
        assert!(
            out.stdout.contains(flag),
            "`spool enqueue --help` documents {flag}:\n{}",
            out.stdout
        );
    }
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

    let dir = tempfile::tempdir().unwrap();
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

#[test]
fn unreachable_server_is_reported() {
    let nowhere = closed_port_url();
    for args in [
        vec!["enqueue", "q", "{}"],
        vec!["queue", "list"],
        vec!["queue", "stats", "q"],
    ] {
        let out = spool_cli(Some(&nowhere), &args);
        out.expect_failure(&format!("spool {args:?} with nothing listening"));
        let err = out.stderr.to_lowercase();
        assert!(
            err.contains(&nowhere.trim_start_matches("http://").to_lowercase())
                || err.contains("reach")
                || err.contains("connect"),
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

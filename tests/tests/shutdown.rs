//! Graceful shutdown: on SIGTERM the host stops claiming, lets in-flight handlers finish (bounded
//! by `--drain-timeout`), gives the rest back, and exits 0; nothing is lost across a restart.

use std::time::Duration;

use spool_tests::{TestHost, json, plugin_path};

const MESSAGES: u64 = 20;

async fn busy_host(drain: &str, sleep_ms: u64) -> (TestHost, Vec<String>) {
    let host = TestHost::options()
        .args(["--drain-timeout", drain, "--maintenance-interval", "200ms"])
        .start();
    host.deploy("misbehave", &plugin_path("misbehave")).await;
    host.put_queue(
        "drain",
        // `sleep-ms` busy-waits, which burns fuel: give it plenty, and a timeout well above it.
        json!({"handler": "misbehave", "concurrency": 4, "lease_ms": 2000, "max_attempts": 10,
               "fuel": 1_000_000_000_000_000u64, "timeout_ms": 60_000}),
    )
    .await;
    let messages: Vec<_> = (0..MESSAGES)
        .map(|n| json!({"payload": {"do": "sleep-ms", "ms": sleep_ms, "n": n}}))
        .collect();
    let ids = host.enqueue("drain", json!({ "messages": messages })).await;
    host.wait_stats(
        "drain",
        "handlers to be running",
        Duration::from_secs(30),
        |s| s.leased > 0,
    )
    .await;
    (host, ids)
}

async fn all_acked_after_restart(host: &mut TestHost, ids: &[String]) -> Vec<u64> {
    host.restart();
    let stats = host
        .wait_stats(
            "drain",
            "every message to be acked after the restart",
            Duration::from_secs(60),
            |s| s.acked >= MESSAGES && s.live() == 0,
        )
        .await;
    assert_eq!(stats.acked, MESSAGES, "{stats:?}");
    assert_eq!(stats.dead, 0, "{stats:?}");
    let mut attempts = Vec::new();
    for id in ids {
        let m = host.get_message(id).await;
        assert_eq!(m["state"], "acked", "message {id}: {m}");
        attempts.push(m["attempts"].as_u64().unwrap_or(0));
    }
    attempts
}

/// Handlers shorter than the drain timeout finish during the drain: every message is acked on
/// its first attempt (claimed-but-unstarted messages are given back without counting one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_handlers_and_exits_zero() {
    let (mut host, ids) = busy_host("10s", 700).await;
    let status = host.stop(Duration::from_secs(15));
    assert!(
        status.success(),
        "spool serve should exit 0 after SIGTERM, got {status}\n{}",
        host.log_tail(40)
    );
    let attempts = all_acked_after_restart(&mut host, &ids).await;
    assert!(
        attempts.iter().all(|&a| a == 1),
        "a graceful drain lets running handlers finish and releases unstarted claims, so no \
         message needs a second attempt; attempts per message: {attempts:?}"
    );
}

/// Handlers longer than the drain timeout do not hold the shutdown up: the host exits 0 soon
/// after the drain timeout and the unfinished messages are delivered again after the restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_timeout_bounds_the_shutdown() {
    let (mut host, ids) = busy_host("1s", 4000).await;
    let status = host.stop(Duration::from_secs(8));
    assert!(
        status.success(),
        "spool serve should exit 0 after the drain timeout, got {status}\n{}",
        host.log_tail(40)
    );
    all_acked_after_restart(&mut host, &ids).await;
}

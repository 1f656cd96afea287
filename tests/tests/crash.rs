//! Crash consistency: SIGKILL the host while messages are in flight, restart it on the same
//! database, and count every message afterwards.

use std::time::Duration;

use spool_tests::{Stats, TestHost, json, plugin_path};

const TOTAL: usize = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_mid_flight_loses_nothing_and_acks_nothing_twice() {
    let mut host = TestHost::options()
        .args(["--maintenance-interval", "200ms"])
        .start();
    host.deploy("misbehave", &plugin_path("misbehave")).await;
    // Not paused while filling: 2,000 handlers of 20 ms each at concurrency 16 take seconds,
    // far longer than the enqueue, so the kill still lands mid-flight.
    host.put_queue(
        "crashy",
        json!({
            "handler": "misbehave",
            "concurrency": 16,
            "lease_ms": 1500,
            "max_attempts": 10,
            "backoff_base_ms": 10,
            "backoff_max_ms": 100,
        }),
    )
    .await;
    let mut ids = Vec::with_capacity(TOTAL);
    for chunk in 0..TOTAL / 250 {
        let messages: Vec<_> = (0..250)
            .map(|i| json!({"payload": {"do": "sleep-ms", "ms": 20, "n": chunk * 250 + i}}))
            .collect();
        ids.extend(
            host.enqueue("crashy", json!({ "messages": messages }))
                .await,
        );
    }
    assert_eq!(ids.len(), TOTAL);

    // Kill once a good part is done but plenty is still leased or waiting.
    let before: Stats = host
        .wait_stats(
            "crashy",
            "some messages to be acked before the kill",
            Duration::from_secs(60),
            |s| s.acked >= 200,
        )
        .await;
    host.kill9();
    assert!(
        (before.acked as usize) < TOTAL,
        "the kill should land mid-flight, but everything was already acked: {before:?}"
    );
    // With ready work left, the 16 workers were busy: some messages were leased at the kill.
    let leased_at_kill = before.leased > 0 && before.ready > 0;

    host.restart();
    let stats = host
        .wait_stats(
            "crashy",
            "every message to be acked after the restart",
            Duration::from_secs(90),
            |s| s.acked >= TOTAL as u64 && s.live() == 0,
        )
        .await;
    assert_eq!(
        stats.acked, TOTAL as u64,
        "no message acked twice: {stats:?}"
    );
    assert_eq!(stats.enqueued, TOTAL as u64, "{stats:?}");
    assert_eq!(stats.dead, 0, "{stats:?}");
    assert_eq!(stats.live(), 0, "{stats:?}");

    let mut redelivered = 0;
    for id in &ids {
        let m = host.get_message(id).await;
        assert_eq!(m["state"], "acked", "message {id} after the crash: {m}");
        if m["attempts"].as_u64().unwrap_or(0) >= 2 {
            redelivered += 1;
        }
    }
    if leased_at_kill {
        assert!(
            redelivered > 0,
            "messages leased at the kill ({before:?}) must be redelivered after their lease \
             expired, but every message shows attempts == 1"
        );
    }
    eprintln!("crash test: {redelivered} message(s) redelivered; stats before kill {before:?}");
    assert!(host.healthy().await);
}

/// An enqueue the host answered 202 is durable: SIGKILL right after the last answer, restart,
/// and every id is there, waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_after_enqueue_keeps_every_accepted_message() {
    let mut host = TestHost::start();
    // No handler: nothing consumes, so every message must be found `ready` afterwards.
    host.put_queue("durable", json!({})).await;
    let mut ids = Vec::new();
    for batch in 0..10 {
        let messages: Vec<_> = (0..50)
            .map(|i| json!({"payload": {"batch": batch, "i": i}}))
            .collect();
        ids.extend(
            host.enqueue("durable", json!({ "messages": messages }))
                .await,
        );
        ids.push(host.enqueue_one("durable", json!({"single": batch})).await);
    }
    host.kill9();
    host.restart();
    let stats = host.stats("durable").await;
    assert_eq!(stats.enqueued, ids.len() as u64, "{stats:?}");
    assert_eq!(stats.ready, ids.len() as u64, "{stats:?}");
    for id in &ids {
        assert_eq!(host.state(id).await, "ready", "message {id} after SIGKILL");
    }
}

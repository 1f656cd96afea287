//! Messages a host has leased but not started never lose their lease: when handlers turn slow,
//! what waits in the host's prefetch buffer goes back to the queue before its lease ends, and
//! that costs no attempt.

use std::time::Duration;

use spool_tests::{TestHost, json};

use crate::deploy_all;

/// Fast messages first, so the host measures quick handlers and prefetches deeply ...
const FAST: u64 = 100;
/// ... then slow ones that, run one by one, take several leases to get through.
const SLOW: u64 = 16;
const SLOW_MS: u64 = 250;
const LEASE_MS: u64 = 1_000;

#[tokio::test]
async fn prefetched_messages_are_released_before_their_lease_ends_without_spending_an_attempt() {
    // Frequent maintenance, so an expired lease would be recovered (and noticed) quickly.
    let host = TestHost::options()
        .args(["--maintenance-interval", "100ms"])
        .start();
    deploy_all(&host, &["misbehave"]).await;
    host.put_queue(
        "slow",
        json!({
            "handler": "misbehave",
            "concurrency": 1,
            "lease_ms": LEASE_MS,
            "timeout_ms": 10_000,
            "max_attempts": 5,
            "strategy": "fifo",
            "paused": true,
        }),
    )
    .await;
    let fast = (0..FAST).map(|n| json!({"payload": {"n": n}}));
    let slow = (0..SLOW).map(|n| json!({"payload": {"do": "sleep-ms", "ms": SLOW_MS, "n": n}}));
    let ids = host
        .enqueue(
            "slow",
            json!({ "messages": fast.chain(slow).collect::<Vec<_>>() }),
        )
        .await;
    host.put_queue("slow", json!({"paused": false})).await;

    let stats = host
        .wait_stats(
            "slow",
            "every message to be handled",
            Duration::from_secs(90),
            |s| s.live() == 0,
        )
        .await;
    assert_eq!(
        (stats.acked, stats.dead, stats.retried),
        (FAST + SLOW, 0, 0),
        "every message acked on its first attempt: {stats:?}"
    );
    for id in &ids {
        let m = host.get_message(id).await;
        assert_eq!(m["state"], "acked", "{m}");
        assert_eq!(m["attempts"], 1, "a release must not spend an attempt: {m}");
    }
    let log = host.log_tail(2_000);
    assert!(
        !log.contains("lease was lost"),
        "no handler ran a message whose lease had expired:\n{log}"
    );
}

//! Every `misbehave` mode fails only its own message: it lands in the DLQ (after the configured
//! attempts) with the right error category, while ordinary messages in the same queue keep
//! flowing and the host stays healthy.

use std::time::Duration;

use spool_tests::{TestHost, Value, json, plugin_path};

use crate::host_with;

/// Ordinary messages sent alongside each bad one.
const ORDINARY: u64 = 20;

struct Case {
    queue: &'static str,
    /// Queue settings on top of `handler: misbehave` (small limits keep the tests fast).
    config: Value,
    bad: Value,
    category: &'static str,
    attempts: u64,
    /// Text the recorded error must contain, if the mode lets the test choose it.
    error_contains: Option<&'static str>,
}

/// Runs one case on a fresh host and returns the host and the bad message's id for extra checks.
async fn run(case: Case) -> (TestHost, String) {
    let host = host_with(&["misbehave"]).await;
    let mut config = case.config.clone();
    config["handler"] = json!("misbehave");
    config["concurrency"] = json!(4);
    host.put_queue(case.queue, config).await;

    let bad = host.enqueue_one(case.queue, case.bad.clone()).await;
    let ordinary: Vec<Value> = (0..ORDINARY)
        .map(|i| json!({"payload": {"do": "ack", "n": i}}))
        .collect();
    let ok_ids = host
        .enqueue(case.queue, json!({ "messages": ordinary }))
        .await;

    let m = host.wait_state(&bad, "dead", Duration::from_secs(60)).await;
    assert_eq!(
        m["error_category"], case.category,
        "{} should dead-letter with category {}: {m}",
        case.bad, case.category
    );
    assert_eq!(
        m["attempts"], case.attempts,
        "{} should be delivered {} time(s): {m}",
        case.bad, case.attempts
    );
    let error = m["last_error"].as_str().unwrap_or_default();
    assert!(
        !error.is_empty(),
        "a dead message records its last error: {m}"
    );
    if let Some(want) = case.error_contains {
        assert!(
            error.contains(want),
            "last_error should contain {want:?}: {m}"
        );
    }
    assert!(
        m["plugin_version"]
            .as_str()
            .is_some_and(|p| p.starts_with("misbehave")),
        "the failure names the plugin version: {m}"
    );

    // The other messages in the same queue were not held up or harmed.
    let stats = host
        .wait_stats(
            case.queue,
            "the ordinary messages to be acked",
            Duration::from_secs(60),
            |s| s.acked >= ORDINARY && s.live() == 0,
        )
        .await;
    assert_eq!(stats.acked, ORDINARY, "{stats:?}");
    assert_eq!(stats.dead, 1, "{stats:?}");
    assert_eq!(stats.dlq_depth, 1, "{stats:?}");
    assert_eq!(stats.retried, case.attempts - 1, "{stats:?}");
    assert_eq!(stats.enqueued, ORDINARY + 1, "{stats:?}");
    for id in &ok_ids {
        assert_eq!(host.state(id).await, "acked", "ordinary message {id}");
    }

    // The DLQ lists it under its queue and category, and not under another category.
    let dlq = host
        .get(&format!(
            "/v1/dlq?queue={}&category={}",
            case.queue, case.category
        ))
        .await
        .expect(200, "list the DLQ");
    let items = dlq["items"].as_array().expect("`items` array");
    let item = items
        .iter()
        .find(|i| i["id"] == bad.as_str())
        .unwrap_or_else(|| panic!("dead message {bad} missing from the DLQ: {dlq}"));
    assert_eq!(item["queue"], case.queue, "{item}");
    assert_eq!(item["error_category"], case.category, "{item}");
    assert_eq!(item["attempts"], case.attempts, "{item}");
    assert!(
        item["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{item}"
    );
    let other = if case.category == "handler" {
        "trap"
    } else {
        "handler"
    };
    let dlq = host
        .get(&format!("/v1/dlq?queue={}&category={other}", case.queue))
        .await
        .expect(200, "list the DLQ by another category");
    assert!(
        !dlq["items"]
            .as_array()
            .expect("`items` array")
            .iter()
            .any(|i| i["id"] == bad.as_str()),
        "the category filter excludes {bad}: {dlq}"
    );

    // The host and the queue's workers are still fine afterwards.
    assert!(host.healthy().await, "healthz after {}", case.bad);
    let after = host.enqueue_one(case.queue, json!({"do": "ack"})).await;
    host.wait_state(&after, "acked", Duration::from_secs(30))
        .await;
    (host, bad)
}

/// Backoff small enough that two attempts take milliseconds.
fn fast_retries(max_attempts: u32) -> Value {
    json!({"max_attempts": max_attempts, "backoff_base_ms": 10, "backoff_max_ms": 100})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trap_is_retried_then_dead_lettered_as_trap() {
    run(Case {
        queue: "traps",
        config: fast_retries(2),
        bad: json!({"do": "trap"}),
        category: "trap",
        attempts: 2,
        error_contains: None,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinite_loop_runs_out_of_fuel() {
    let mut config = fast_retries(2);
    // Plenty for an ordinary message, gone in milliseconds for a loop; the generous timeout
    // makes sure fuel, not the clock, stops it.
    config["fuel"] = json!(20_000_000u64);
    config["timeout_ms"] = json!(30_000);
    run(Case {
        queue: "loops",
        config,
        bad: json!({"do": "loop"}),
        category: "fuel",
        attempts: 2,
        error_contains: None,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinite_loop_with_huge_fuel_times_out() {
    let mut config = fast_retries(2);
    config["fuel"] = json!(1_000_000_000_000_000u64);
    config["timeout_ms"] = json!(300);
    run(Case {
        queue: "slow",
        config,
        bad: json!({"do": "loop"}),
        category: "timeout",
        attempts: 2,
        error_contains: None,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbounded_allocation_hits_the_memory_limit() {
    let mut config = fast_retries(2);
    config["memory_mb"] = json!(16);
    run(Case {
        queue: "hogs",
        config,
        bad: json!({"do": "alloc"}),
        category: "memory",
        attempts: 2,
        error_contains: None,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_outcome_goes_to_the_dlq_at_once() {
    run(Case {
        queue: "rejects",
        config: fast_retries(5),
        bad: json!({"do": "dead-letter", "reason": "order 42 is malformed"}),
        category: "handler",
        attempts: 1,
        error_contains: Some("order 42 is malformed"),
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_outcome_counts_retries_then_dead_letters() {
    run(Case {
        queue: "retries",
        config: fast_retries(3),
        bad: json!({"do": "retry", "delay_ms": 20}),
        category: "handler",
        attempts: 3,
        error_contains: None,
    })
    .await;
}

/// A dead message replayed after a fixed version of its handler plugin is deployed goes back to
/// `ready`, starts again from attempt 1, is acked by the new version, and leaves the DLQ.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_from_the_dlq_after_deploying_a_fix() {
    let (host, bad) = run(Case {
        queue: "replays",
        config: fast_retries(2),
        bad: json!({"do": "trap"}),
        category: "trap",
        attempts: 2,
        error_contains: None,
    })
    .await;
    // The "fix": version 2 of `misbehave` is the echo component, which acks everything.
    let v2 = host.deploy("misbehave", &plugin_path("echo")).await;
    assert_eq!(v2["version"], 2, "a new upload is a new version: {v2}");
    host.post(&format!("/v1/dlq/{bad}/replay"), &json!({}))
        .await
        .expect_ok("replay a dead message");
    let m = host
        .wait_state(&bad, "acked", Duration::from_secs(30))
        .await;
    assert_eq!(m["attempts"], 1, "replay resets the attempt count: {m}");
    assert_eq!(
        m["plugin_version"], "misbehave@2",
        "the new version handled it: {m}"
    );
    let stats = host.stats("replays").await;
    assert_eq!(
        stats.dlq_depth, 0,
        "replayed message left the DLQ: {stats:?}"
    );
    let dlq = host
        .get("/v1/dlq?queue=replays")
        .await
        .expect(200, "list the DLQ");
    assert!(
        !dlq["items"]
            .as_array()
            .expect("`items` array")
            .iter()
            .any(|i| i["id"] == bad.as_str()),
        "{dlq}"
    );
}

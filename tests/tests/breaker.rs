//! A queue's circuit breaker under controlled failures from `misbehave`: it opens after K
//! consecutive traps (stats, `/metrics`, the log, `spool queue stats`), spends no attempt while
//! open, closes by hand and on a successful half-open probe, and a failed probe reopens it
//! with a doubled cool-down up to the cap.

use std::time::Duration;

use serde_json::Value;
use spool_tests::{TestHost, json, wait_until};

use crate::deploy_all;

/// Consecutive failures that open the breaker.
const K: u64 = 3;
/// Every wait is bounded by this.
const WAIT: Duration = Duration::from_secs(20);

fn trap() -> Value {
    json!({"payload": {"do": "trap"}})
}

fn ok(n: u64) -> Value {
    json!({"payload": {"n": n}})
}

/// Polls the queue's `stats.breaker` until `done` holds; returns it.
async fn wait_breaker(host: &TestHost, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let done = &done;
    wait_until(what, WAIT, move || async move {
        let b = host.queue("svc").await["stats"]["breaker"].clone();
        if done(&b) { Ok(b) } else { Err(b.to_string()) }
    })
    .await
}

async fn metrics_text(host: &TestHost) -> String {
    let resp = reqwest::get(format!("{}/metrics", host.url()))
        .await
        .expect("GET /metrics");
    assert_eq!(resp.status().as_u16(), 200);
    resp.text().await.expect("read /metrics")
}

#[tokio::test]
async fn the_breaker_opens_spends_no_attempts_half_opens_and_closes() {
    let host = TestHost::start();
    deploy_all(&host, &["misbehave"]).await;
    // One worker and FIFO order make the sequence of outcomes exact; one attempt sends each
    // trapped message straight to the DLQ, so only the messages a test adds are ever probed.
    // A long first cool-down keeps the breaker open while the test looks at it.
    let q = host
        .put_queue(
            "svc",
            json!({
                "handler": "misbehave",
                "concurrency": 1,
                "strategy": "fifo",
                "max_attempts": 1,
                "paused": true,
                "breaker_failures": K,
                "breaker_cooldown_ms": 60_000,
                "breaker_max_cooldown_ms": 60_000,
            }),
        )
        .await;
    assert_eq!(q["config"]["breaker_failures"], K, "{q}");
    assert_eq!(q["stats"]["breaker"]["state"], "closed", "{q}");
    assert_eq!(q["stats"]["breaker"]["enabled"], true, "{q}");

    // K traps, then a good message queued behind them.
    let traps = host
        .enqueue(
            "svc",
            json!({"messages": (0..K).map(|_| trap()).collect::<Vec<_>>()}),
        )
        .await;
    let good = host.enqueue_one("svc", json!({"n": 0})).await;
    host.put_queue("svc", json!({"paused": false})).await;

    let b = wait_breaker(&host, "the breaker to open", |b| b["state"] == "open").await;
    assert_eq!(b["consecutive_failures"], K, "{b}");
    assert_eq!(b["times_opened"], 1, "{b}");
    assert_eq!(b["last_error_category"], "trap", "{b}");
    assert_eq!(b["cooldown_ms"], 60_000, "{b}");
    assert!(
        b["opened_at"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{b}"
    );
    let retry_at = b["retry_at_ms"].as_i64().expect("retry_at_ms while open");
    assert_eq!(
        retry_at - b["opened_at_ms"].as_i64().unwrap(),
        60_000,
        "{b}"
    );
    for id in &traps {
        let m = host.wait_state(id, "dead", WAIT).await;
        assert_eq!(m["error_category"], "trap", "{m}");
    }

    // While open nothing is claimed: the good message keeps its attempts (0) however long
    // it waits, even if it had been prefetched.
    for _ in 0..8 {
        let m = host.get_message(&good).await;
        assert_eq!(
            (m["state"].as_str(), m["attempts"].as_u64()),
            (Some("ready"), Some(0)),
            "no attempt is spent while the breaker is open: {m}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let text = metrics_text(&host).await;
    for want in [
        r#"spool_queue_breaker_open{queue="svc"} 1"#,
        r#"spool_queue_breaker_opened_total{queue="svc"} 1"#,
    ] {
        assert!(
            text.lines().any(|l| l == want),
            "missing {want:?} in\n{text}"
        );
    }
    let out = host.cli(["queue", "stats", "svc"]);
    out.expect_success("queue stats");
    assert!(
        out.stdout.contains("circuit breaker on this server") && out.stdout.contains("open"),
        "{}",
        out.stdout
    );
    let log = host.log_tail(400);
    assert!(
        log.lines()
            .any(|l| l.contains("circuit breaker open") && l.contains("svc")),
        "a warning when it opens:\n{log}"
    );

    // A manual reset closes it at once and the waiting message is handled, on its first
    // attempt.
    let out = host.cli(["queue", "reset-breaker", "svc"]);
    out.expect_success("queue reset-breaker");
    assert!(out.stdout.contains("closed"), "{}", out.stdout);
    let m = host.wait_state(&good, "acked", WAIT).await;
    assert_eq!(m["attempts"], 1, "{m}");
    let b = host.queue("svc").await["stats"]["breaker"].clone();
    assert_eq!(
        (&b["state"], &b["consecutive_failures"]),
        (&json!("closed"), &json!(0)),
        "{b}"
    );

    // Short cool-downs now: 300 ms doubling to 600 ms.
    host.put_queue(
        "svc",
        json!({"breaker_cooldown_ms": 300, "breaker_max_cooldown_ms": 600}),
    )
    .await;
    host.enqueue(
        "svc",
        json!({"messages": (0..K).map(|_| trap()).collect::<Vec<_>>()}),
    )
    .await;
    wait_breaker(&host, "the breaker to open a second time", |b| {
        b["times_opened"] == 2
    })
    .await;
    // The probe after the cool-down traps too: open again for twice as long, not longer than
    // the cap.
    let probe = host.enqueue_one("svc", json!({"do": "trap"})).await;
    let b = wait_breaker(&host, "the failed probe to reopen the breaker", |b| {
        b["times_opened"] == 3
    })
    .await;
    assert_eq!(b["cooldown_ms"], 600, "doubled: {b}");
    assert_eq!(host.get_message(&probe).await["attempts"], 1);
    let probe2 = host.enqueue_one("svc", json!({"do": "trap"})).await;
    let b = wait_breaker(&host, "a second failed probe", |b| b["times_opened"] == 4).await;
    assert_eq!(b["cooldown_ms"], 600, "capped: {b}");
    assert_eq!(host.get_message(&probe2).await["attempts"], 1);

    // A good probe closes it, and the cool-down starts over.
    let ids = host
        .enqueue("svc", json!({"messages": [ok(1), ok(2), ok(3)]}))
        .await;
    for id in &ids {
        let m = host.wait_state(id, "acked", WAIT).await;
        assert_eq!(m["attempts"], 1, "{m}");
    }
    let b = wait_breaker(&host, "the breaker to close", |b| b["state"] == "closed").await;
    assert_eq!(b["cooldown_ms"], 300, "{b}");
    assert_eq!(b["consecutive_failures"], 0, "{b}");
    assert!(b.get("retry_at").is_none(), "{b}");
    let text = metrics_text(&host).await;
    assert!(
        text.lines()
            .any(|l| l == r#"spool_queue_breaker_open{queue="svc"} 0"#),
        "{text}"
    );
}

#[tokio::test]
async fn handler_decisions_do_not_open_the_breaker_and_reset_needs_a_queue() {
    let host = TestHost::start();
    deploy_all(&host, &["misbehave"]).await;
    host.put_queue(
        "svc",
        json!({"handler": "misbehave", "concurrency": 1, "max_attempts": 1,
               "breaker_failures": 2, "breaker_cooldown_ms": 60_000}),
    )
    .await;
    // A handler's own retry (out of attempts) and dead-letter are decisions, not failures.
    let decided = host
        .enqueue(
            "svc",
            json!({"messages": [
                {"payload": {"do": "retry"}},
                {"payload": {"do": "dead-letter", "reason": "bad order"}},
                {"payload": {"do": "retry"}},
                {"payload": {"do": "dead-letter", "reason": "bad order"}},
            ]}),
        )
        .await;
    for id in &decided {
        host.wait_state(id, "dead", WAIT).await;
    }
    let b = host.queue("svc").await["stats"]["breaker"].clone();
    assert_eq!(
        (&b["state"], &b["consecutive_failures"], &b["times_opened"]),
        (&json!("closed"), &json!(0), &json!(0)),
        "{b}"
    );

    host.post("/v1/queues/nope/breaker/reset", &json!({}))
        .await
        .expect_error(404, "reset of an unknown queue");
    for (body, what) in [
        (
            json!({"breaker_max_cooldown_ms": 5}),
            "a cap below the minimum",
        ),
        (
            json!({"breaker_cooldown_ms": 2000, "breaker_max_cooldown_ms": 1000}),
            "a cap below the first cool-down",
        ),
        (json!({"breaker_failures": -1}), "a negative threshold"),
    ] {
        let err = host.put("/v1/queues/svc", &body).await.expect(400, what);
        assert_eq!(err["error"]["code"], "invalid_config", "{what}: {err}");
        let message = err["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("breaker_"), "{what}: {err}");
    }
    // Resetting a closed breaker is harmless.
    let b = host
        .post("/v1/queues/svc/breaker/reset", &json!({}))
        .await
        .expect(200, "reset");
    assert_eq!(b["state"], "closed", "{b}");
}

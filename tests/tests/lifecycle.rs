//! The message lifecycle of DESIGN §3, observed through the HTTP API: priorities, delays,
//! idempotency keys, supersede, TTL expiry, cancel, backoff timing and late plugin deploys.

use std::time::Duration;

use spool_tests::{TestHost, Value, json, now_ms, plugin_path};

use crate::deploy_all;

/// A host whose maintenance (TTL expiry, lease recovery) runs often enough for short tests.
async fn host_with(plugins: &[&str]) -> TestHost {
    let host = TestHost::options()
        .args(["--maintenance-interval", "200ms"])
        .start();
    deploy_all(&host, plugins).await;
    host
}

fn int(m: &Value, field: &str) -> i64 {
    m[field]
        .as_i64()
        .unwrap_or_else(|| panic!("message field {field:?} should be an integer: {m}"))
}

/// A paused queue accepts messages but hands none out until it is resumed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_queue_holds_messages_until_resumed() {
    let host = host_with(&["echo"]).await;
    host.put_queue("hold", json!({"handler": "echo", "paused": true}))
        .await;
    let ids = host
        .enqueue(
            "hold",
            json!({"messages": [{"payload": 1}, {"payload": 2}, {"payload": 3}]}),
        )
        .await;
    // Give a (wrong) dispatcher time to take them; they must still be waiting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stats = host.stats("hold").await;
    assert_eq!(
        stats.ready, 3,
        "a paused queue keeps its messages ready: {stats:?}"
    );
    assert_eq!(
        stats.acked, 0,
        "a paused queue hands nothing out: {stats:?}"
    );

    let q = host.put_queue("hold", json!({"paused": false})).await;
    assert_eq!(q["config"]["paused"], false, "{q}");
    assert_eq!(
        q["config"]["handler"], "echo",
        "PUT changes only what it names: {q}"
    );
    host.wait_stats(
        "hold",
        "all 3 acked after resuming",
        Duration::from_secs(30),
        |s| s.acked >= 3,
    )
    .await;
    for id in &ids {
        assert_eq!(host.state(id).await, "acked");
    }
}

/// Changing a queue's handler with PUT takes effect for the messages that follow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_change_takes_effect() {
    let host = host_with(&["echo", "misbehave"]).await;
    host.put_queue("switch", json!({"handler": "echo", "max_attempts": 1}))
        .await;
    let before = host
        .enqueue_one("switch", json!({"do": "dead-letter", "reason": "switched"}))
        .await;
    let m = host
        .wait_state(&before, "acked", Duration::from_secs(30))
        .await;
    assert_eq!(m["plugin_version"], "echo@1", "{m}");

    host.put_queue("switch", json!({"handler": "misbehave"}))
        .await;
    let after = host
        .enqueue_one("switch", json!({"do": "dead-letter", "reason": "switched"}))
        .await;
    let m = host.wait_until_final(&after, Duration::from_secs(30)).await;
    assert_eq!(m["state"], "dead", "the new handler (misbehave) ran: {m}");
    assert_eq!(m["plugin_version"], "misbehave@1", "{m}");
}

/// With concurrency 1, messages waiting behind a busy handler are handed out highest priority
/// first and FIFO within a priority (the default `priority` strategy).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn higher_priority_is_handled_first() {
    let host = host_with(&["misbehave"]).await;
    host.put_queue(
        "prio",
        json!({"handler": "misbehave", "concurrency": 1, "fuel": 1_000_000_000_000u64,
               "timeout_ms": 30_000}),
    )
    .await;
    // Occupy the only worker so that everything below is enqueued before any of it is claimed.
    let blocker = host
        .enqueue_one("prio", json!({"do": "sleep-ms", "ms": 1500}))
        .await;
    host.wait_state(&blocker, "leased", Duration::from_secs(30))
        .await;
    // Each handler call takes a few milliseconds so `finished_at_ms` strictly orders them.
    let priorities: Vec<i64> = (0..30).map(|i| (i * 7 % 5) - 1).collect();
    let messages: Vec<Value> = priorities
        .iter()
        .enumerate()
        .map(|(i, p)| json!({"payload": {"do": "sleep-ms", "ms": 5, "i": i}, "priority": p}))
        .collect();
    let ids = host.enqueue("prio", json!({ "messages": messages })).await;
    assert_eq!(
        host.state(&blocker).await,
        "leased",
        "the blocker must still be running once all 30 are enqueued (else the test proves \
         nothing)"
    );

    host.wait_stats("prio", "all 31 acked", Duration::from_secs(60), |s| {
        s.acked >= 31
    })
    .await;
    let mut done = Vec::new();
    for (i, (p, id)) in priorities.iter().zip(&ids).enumerate() {
        let m = host.get_message(id).await;
        assert_eq!(m["state"], "acked", "{m}");
        assert_eq!(m["priority"], *p, "{m}");
        done.push((int(&m, "finished_at_ms"), *p, i));
    }
    // Settlements are committed in batches, so two messages handled back to back can share a
    // `finished_at_ms`; within such a tie the order is not observable, so it is not judged.
    done.sort_by_key(|&(t, p, i)| (t, -p, i));
    let order: Vec<(i64, usize)> = done.iter().map(|&(_, p, i)| (p, i)).collect();
    let mut want = order.clone();
    want.sort_by_key(|&(p, i)| (-p, i));
    assert_eq!(
        order, want,
        "handling order (priority, enqueue index) by finished_at_ms should be priority \
         descending, FIFO within a priority"
    );
}

/// `delay_ms` keeps a message `scheduled` until its time; a later undelayed message overtakes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_message_is_scheduled_until_due() {
    let host = host_with(&["echo"]).await;
    host.put_queue("later", json!({"handler": "echo"})).await;
    let delay = 1500;
    let delayed = host
        .enqueue("later", json!({"payload": {"n": 1}, "delay_ms": delay}))
        .await
        .remove(0);
    let m = host.get_message(&delayed).await;
    assert_eq!(m["state"], "scheduled", "{m}");
    assert!(
        int(&m, "available_at_ms") >= int(&m, "enqueued_at_ms") + delay,
        "available_at_ms is at least enqueued_at_ms + delay_ms: {m}"
    );
    let stats = host.stats("later").await;
    assert_eq!(stats.scheduled, 1, "{stats:?}");

    let prompt = host.enqueue_one("later", json!({"n": 2})).await;
    let p = host
        .wait_state(&prompt, "acked", Duration::from_secs(30))
        .await;
    let m = host
        .wait_state(&delayed, "acked", Duration::from_secs(30))
        .await;
    assert!(
        int(&m, "finished_at_ms") >= int(&m, "enqueued_at_ms") + delay,
        "a delayed message is handled only after its delay: {m}"
    );
    assert!(
        int(&p, "finished_at_ms") < int(&m, "finished_at_ms"),
        "the undelayed message, enqueued later, is handled first: {p} vs {m}"
    );
}

/// The same idempotency key returns the same id and stores one message, in separate requests and
/// within one batch; a different key makes a new message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_deduplicates() {
    let host = host_with(&[]).await;
    host.put_queue("idem", json!({"paused": true})).await;
    let a = host
        .enqueue("idem", json!({"payload": 1, "idempotency_key": "order-1"}))
        .await;
    let b = host
        .enqueue("idem", json!({"payload": 2, "idempotency_key": "order-1"}))
        .await;
    assert_eq!(a, b, "same key, same id");
    let batch = host
        .enqueue(
            "idem",
            json!({"messages": [
                {"payload": 3, "idempotency_key": "order-2"},
                {"payload": 4, "idempotency_key": "order-2"},
                {"payload": 5, "idempotency_key": "order-1"},
            ]}),
        )
        .await;
    assert_eq!(batch.len(), 3, "one id per batch entry: {batch:?}");
    assert_eq!(batch[0], batch[1], "same key within a batch, same id");
    assert_eq!(batch[2], a[0], "a key from an earlier request, same id");
    assert_ne!(batch[0], a[0], "different keys, different messages");
    let stats = host.stats("idem").await;
    assert_eq!(stats.ready, 2, "two distinct keys, two messages: {stats:?}");
    assert_eq!(
        stats.enqueued, 2,
        "duplicates are not counted as enqueued: {stats:?}"
    );
}

/// `supersede` with an existing key replaces the not-yet-leased message's payload in place: the
/// handler sees only the new payload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn supersede_replaces_the_pending_payload() {
    let host = host_with(&["misbehave"]).await;
    host.put_queue("sup", json!({"handler": "misbehave", "max_attempts": 1}))
        .await;
    // The old payload would dead-letter; the new one acks. Which one ran shows in the end state.
    // The delay keeps the first version waiting (not leased) while it is superseded.
    let old = host
        .enqueue(
            "sup",
            json!({"payload": {"do": "dead-letter", "reason": "stale payload ran"},
                   "idempotency_key": "cfg", "delay_ms": 1500}),
        )
        .await;
    let new = host
        .enqueue(
            "sup",
            json!({"payload": {"do": "ack", "v": 2}, "idempotency_key": "cfg", "supersede": true}),
        )
        .await;
    assert_eq!(old, new, "supersede keeps the message id");
    let stats = host.stats("sup").await;
    assert_eq!(stats.enqueued, 1, "still one message: {stats:?}");

    let m = host
        .wait_until_final(&old[0], Duration::from_secs(30))
        .await;
    assert_eq!(
        m["state"], "acked",
        "the superseding payload was handled: {m}"
    );
    assert_eq!(m["attempts"], 1, "{m}");
}

/// A message whose TTL passes before any handler starts it becomes `expired`, is counted, and is
/// never handled; a message without a TTL in the same queue stays ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_expires_unstarted_messages() {
    let host = host_with(&["echo"]).await;
    host.put_queue("ttl", json!({"handler": "echo", "paused": true}))
        .await;
    let short = host
        .enqueue("ttl", json!({"payload": "short", "ttl_ms": 300}))
        .await
        .remove(0);
    let forever = host.enqueue_one("ttl", json!("forever")).await;
    let m = host
        .wait_state(&short, "expired", Duration::from_secs(30))
        .await;
    assert_eq!(
        m["attempts"], 0,
        "an expired message was never handled: {m}"
    );
    let stats = host.stats("ttl").await;
    assert_eq!(stats.expired, 1, "{stats:?}");
    assert_eq!(stats.ready, 1, "{stats:?}");
    assert_eq!(host.state(&forever).await, "ready");

    host.put_queue("ttl", json!({"paused": false})).await;
    host.wait_state(&forever, "acked", Duration::from_secs(30))
        .await;
    assert_eq!(host.state(&short).await, "expired", "expired stays expired");
    let stats = host.stats("ttl").await;
    assert_eq!(stats.acked, 1, "{stats:?}");
    assert_eq!(stats.expired, 1, "{stats:?}");
}

/// A ready message can be cancelled; an acked one cannot (409); unknown ids are 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_ready_but_not_acked() {
    let host = host_with(&["echo"]).await;
    host.put_queue("cancel", json!({"handler": "echo", "paused": true}))
        .await;
    let id = host.enqueue_one("cancel", json!({"n": 1})).await;
    host.delete(&format!("/v1/messages/{id}"))
        .await
        .expect_ok("cancel a ready message");
    let m = host.get_message(&id).await;
    assert_eq!(m["state"], "cancelled", "{m}");
    let stats = host.stats("cancel").await;
    assert_eq!(stats.cancelled, 1, "{stats:?}");
    assert_eq!(stats.ready, 0, "{stats:?}");

    // Scheduled messages can be cancelled too.
    let later = host
        .enqueue("cancel", json!({"payload": 3, "delay_ms": 3_600_000}))
        .await
        .remove(0);
    host.delete(&format!("/v1/messages/{later}"))
        .await
        .expect_ok("cancel a scheduled message");
    assert_eq!(host.state(&later).await, "cancelled");

    // An acked message cannot be cancelled.
    host.put_queue("done", json!({"handler": "echo"})).await;
    let done = host.enqueue_one("done", json!({"n": 2})).await;
    host.wait_state(&done, "acked", Duration::from_secs(30))
        .await;
    let code = host
        .delete(&format!("/v1/messages/{done}"))
        .await
        .expect_error(409, "cancel an acked message");
    assert_eq!(
        host.state(&done).await,
        "acked",
        "a refused cancel changes nothing"
    );
    eprintln!("cancel of an acked message: code {code}");

    host.delete("/v1/messages/999999999")
        .await
        .expect_error(404, "cancel an unknown message");
    host.get("/v1/messages/999999999")
        .await
        .expect_error(404, "get an unknown message");

    // A cancelled message is never handled, even once its queue runs.
    host.put_queue("cancel", json!({"paused": false})).await;
    let next = host.enqueue_one("cancel", json!({"n": 4})).await;
    host.wait_state(&next, "acked", Duration::from_secs(30))
        .await;
    assert_eq!(host.state(&id).await, "cancelled");
    assert_eq!(host.state(&later).await, "cancelled");
}

/// Retries wait `min(backoff_max, base * 2^(attempt-1))` plus at most 10% jitter. Measured from
/// the message's own timestamps: each retry's `available_at_ms` is at least the delay after the
/// previous one (the handler could not have failed earlier), and at most delay * 1.1 after the
/// moment the test saw it (the handler had failed by then).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_backoff_grows_exponentially() {
    let host = host_with(&["misbehave"]).await;
    let base = 300i64;
    host.put_queue(
        "backoff",
        json!({"handler": "misbehave", "max_attempts": 4, "backoff_base_ms": base,
               "backoff_max_ms": 60_000}),
    )
    .await;
    let id = host.enqueue_one("backoff", json!({"do": "retry"})).await;
    // The first attempt cannot start before the message was enqueued (and `enqueued_at_ms`,
    // unlike `available_at_ms`, does not move when the message is retried).
    let mut prev_available = int(&host.get_message(&id).await, "enqueued_at_ms");

    for attempt in 1..=3i64 {
        let delay = base << (attempt - 1);
        // Wait for the settle of this attempt: the message is waiting again with `attempts`
        // == attempt.
        let (m, seen_at) = spool_tests::wait_until(
            &format!("retry #{attempt} of {id} to be scheduled"),
            Duration::from_secs(30),
            || async {
                let m = host.get_message(&id).await;
                let waiting = matches!(m["state"].as_str(), Some("scheduled" | "ready"));
                if waiting && m["attempts"] == attempt {
                    Ok((m, now_ms()))
                } else {
                    Err(m.to_string())
                }
            },
        )
        .await;
        let available = int(&m, "available_at_ms");
        assert!(
            available - prev_available >= delay,
            "attempt {attempt}: retry must wait at least {delay} ms after the attempt started \
             (available_at {available}, previous available_at {prev_available}): {m}"
        );
        // `seen_at` is after the settle, so the delay actually chosen is at most this.
        let max = delay + delay / 10 + 1;
        assert!(
            available - seen_at <= max,
            "attempt {attempt}: retry delay must be at most {max} ms (base * 2^(attempt-1) + 10% \
             jitter), but available_at {available} is {} ms after it was observed: {m}",
            available - seen_at
        );
        prev_available = available;
    }
    let m = host.wait_state(&id, "dead", Duration::from_secs(30)).await;
    assert_eq!(m["attempts"], 4, "{m}");
    assert_eq!(m["error_category"], "handler", "{m}");
    let stats = host.stats("backoff").await;
    assert_eq!(stats.retried, 3, "{stats:?}");
    assert_eq!(stats.dead, 1, "{stats:?}");
}

/// A handler's own retry delay is honoured instead of the queue's backoff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_chosen_retry_delay_is_honoured() {
    let host = host_with(&["misbehave"]).await;
    host.put_queue(
        "own-delay",
        json!({"handler": "misbehave", "max_attempts": 2, "backoff_base_ms": 1,
               "backoff_max_ms": 10}),
    )
    .await;
    let delay = 1000i64;
    let id = host
        .enqueue_one("own-delay", json!({"do": "retry", "delay_ms": delay}))
        .await;
    let start = int(&host.get_message(&id).await, "enqueued_at_ms");
    let m = spool_tests::wait_until(
        "the handler's retry to be scheduled",
        Duration::from_secs(30),
        || async {
            let m = host.get_message(&id).await;
            if m["attempts"] == 1 && matches!(m["state"].as_str(), Some("scheduled" | "ready")) {
                Ok(m)
            } else {
                Err(m.to_string())
            }
        },
    )
    .await;
    assert!(
        int(&m, "available_at_ms") - start >= delay,
        "the retry waits the handler's {delay} ms, not the queue's 1 ms backoff: {m}"
    );
    host.wait_state(&id, "dead", Duration::from_secs(30)).await;
}

/// Messages of a queue whose handler is not deployed yet wait (they are not dead-lettered), and
/// are handled once the plugin is deployed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_wait_for_a_late_deploy() {
    let host = host_with(&[]).await;
    host.put_queue("early", json!({"handler": "late"})).await;
    let ids = host
        .enqueue(
            "early",
            json!({"messages": [{"payload": 1}, {"payload": 2}, {"payload": 3}]}),
        )
        .await;
    // Give a (wrong) dispatcher time to dead-letter them; they must still be waiting.
    tokio::time::sleep(Duration::from_millis(800)).await;
    for id in &ids {
        let m = host.get_message(id).await;
        assert_eq!(m["state"], "ready", "no handler deployed yet: {m}");
        assert_eq!(m["attempts"], 0, "{m}");
    }
    host.deploy("late", &plugin_path("echo")).await;
    host.wait_stats("early", "all 3 acked", Duration::from_secs(30), |s| {
        s.acked >= 3
    })
    .await;
    for id in &ids {
        assert_eq!(host.state(id).await, "acked");
    }
}

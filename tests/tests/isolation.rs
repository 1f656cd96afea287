//! A queue whose plugins burn CPU hurts only its own messages: while one queue runs endless
//! loops on every one of its workers, the API still answers and another queue still drains.
//!
//! The waits are generous (ten times and more what this host needs on a loaded 2-core machine)
//! so a slow or busy machine does not fail them. A host whose plugin calls share the API's
//! threads misses the enqueue bound by far (its 50 enqueues took 15-25 s); its drain, about 15
//! times slower than here, still fits the drain bound, which only guards against starvation:
//! `spool bench --scenarios noisy` measures the slowdown.

use std::time::{Duration, Instant};

use spool_tests::json;

use crate::host_with;

/// Workers of the looping queue, each held by a loop for the whole test.
const LOOPERS: u64 = 8;
/// Single-message enqueues sent one after the other while the loops run.
const ENQUEUES: u64 = 50;
/// How long those enqueues may take together: 200 ms each on average.
const ENQUEUE_LIMIT: Duration = Duration::from_secs(10);
/// Messages another queue must drain through echo while the loops run.
const DRAINED: u64 = 2_000;
const DRAIN_LIMIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn endless_loops_in_one_queue_do_not_starve_the_api_or_other_queues() {
    let host = host_with(&["echo", "misbehave"]).await;
    host.put_queue(
        "spin",
        json!({
            "handler": "misbehave",
            "concurrency": LOOPERS,
            // Nothing stops these loops during the test: not the timeout, not fuel.
            "timeout_ms": 600_000,
            "fuel": u64::MAX / 2,
            "max_attempts": 1,
        }),
    )
    .await;
    let loops: Vec<_> = (0..LOOPERS)
        .map(|n| json!({"payload": {"do": "loop", "n": n}}))
        .collect();
    host.enqueue("spin", json!({ "messages": loops })).await;
    host.wait_stats(
        "spin",
        "every looping message to be leased",
        Duration::from_secs(30),
        |s| s.leased == LOOPERS,
    )
    .await;

    // The API: single enqueues into a queue without a handler, one after the other.
    host.put_queue("inbox", json!({})).await;
    let started = Instant::now();
    let enqueues = async {
        for n in 0..ENQUEUES {
            host.enqueue_one("inbox", json!({ "n": n })).await;
        }
    };
    assert!(
        tokio::time::timeout(ENQUEUE_LIMIT, enqueues).await.is_ok(),
        "{ENQUEUES} single enqueues did not finish within {ENQUEUE_LIMIT:?} while queue `spin` \
         ran {LOOPERS} endless loops: plugin calls are starving the API"
    );
    let inbox = host.stats("inbox").await;
    assert_eq!(inbox.ready, ENQUEUES, "{inbox:?}");

    // Another queue: a batch drained through echo by one worker.
    host.put_queue("work", json!({"handler": "echo", "concurrency": 1}))
        .await;
    let batch: Vec<_> = (0..DRAINED).map(|n| json!({"payload": {"n": n}})).collect();
    for chunk in batch.chunks(500) {
        host.enqueue("work", json!({ "messages": chunk })).await;
    }
    let work = host
        .wait_stats(
            "work",
            "queue `work` to drain through echo next to the looping queue",
            DRAIN_LIMIT,
            |s| s.acked == DRAINED,
        )
        .await;
    assert_eq!((work.dead, work.retried), (0, 0), "{work:?}");

    // The loops were running all along: none was stopped, they still hold their workers.
    let spin = host.stats("spin").await;
    assert_eq!((spin.leased, spin.dead), (LOOPERS, 0), "{spin:?}");
    assert!(host.healthy().await, "the host stays healthy");
    eprintln!(
        "enqueues and drain next to {LOOPERS} loops took {:?}",
        started.elapsed()
    );
}

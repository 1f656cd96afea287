//! The operator's surface beyond single messages: bulk DLQ replay and purge by filter, the
//! limits every request passes (each answers its 4xx and stores nothing), and cursor pagination
//! that returns every message exactly once while new ones keep arriving.

use std::collections::BTreeSet;
use std::time::Duration;

use spool_tests::{Method, TestHost, Value, json};

use crate::host_with;

/// Enqueues `n` messages that dead-letter on their first attempt and waits for all of them.
async fn dead_letters(host: &TestHost, queue: &str, n: usize) -> Vec<String> {
    host.put_queue(
        queue,
        json!({"handler": "misbehave", "max_attempts": 1, "concurrency": 4}),
    )
    .await;
    let messages: Vec<Value> = (0..n)
        .map(|i| json!({"payload": {"do": "dead-letter", "reason": format!("bad {i}")}}))
        .collect();
    let ids = host.enqueue(queue, json!({ "messages": messages })).await;
    host.wait_stats(queue, "every message dead", Duration::from_secs(60), |s| {
        s.dead == n as u64 && s.dlq_depth == n as u64
    })
    .await;
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_replay_and_purge_by_filter() {
    let host = host_with(&["misbehave"]).await;
    let a = dead_letters(&host, "a", 12).await;
    let b = dead_letters(&host, "b", 5).await;
    // Pause `a` so replayed messages stay ready and can be counted.
    host.put_queue("a", json!({"paused": true})).await;

    // Filter by queue and a limit: the oldest 10 of `a`, nothing of `b`.
    let r = host
        .post("/v1/dlq/replay", &json!({"queue": "a", "limit": 10}))
        .await
        .expect(200, "bulk replay");
    assert_eq!(r["replayed"], 10, "{r}");
    let replayed: Vec<&str> = r["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let oldest: Vec<&str> = a.iter().take(10).map(String::as_str).collect();
    assert_eq!(replayed, oldest, "oldest first");
    let s = host.stats("a").await;
    assert_eq!((s.ready, s.dlq_depth), (10, 2), "{s:?}");
    assert_eq!(host.stats("b").await.dlq_depth, 5, "other queues untouched");

    // A category that matches nothing replays nothing.
    let r = host
        .post(
            "/v1/dlq/replay",
            &json!({"queue": "a", "category": "timeout"}),
        )
        .await
        .expect(200, "replay with a category");
    assert_eq!(r["replayed"], 0, "{r}");

    // Bad filters are refused and change nothing.
    for body in [
        json!({"limit": 0}),
        json!({"limit": 10_001}),
        json!({"category": "nope"}),
        json!({"queue": "no such/queue"}),
        json!({"unknown": 1}),
    ] {
        host.post("/v1/dlq/replay", &body)
            .await
            .expect_error(400, &format!("bulk replay with {body}"));
    }
    host.post("/v1/dlq/replay", &json!({"queue": "missing"}))
        .await
        .expect_error(404, "bulk replay of an unknown queue");
    assert_eq!(host.stats("a").await.dlq_depth, 2);

    // Purge only reviewed entries of `b`: mark two reviewed first.
    for id in &b[..2] {
        host.post(&format!("/v1/dlq/{id}/reviewed"), &json!({}))
            .await
            .expect(200, "mark reviewed");
    }
    let r = host
        .post("/v1/dlq/purge", &json!({"queue": "b", "reviewed": true}))
        .await
        .expect(200, "purge reviewed");
    assert_eq!(r["purged"], 2, "{r}");
    assert_eq!(host.stats("b").await.dlq_depth, 3);
    host.get(&format!("/v1/messages/{}", b[0]))
        .await
        .expect_error(404, "a purged dead letter is gone");

    // Everything left, across queues.
    let r = host
        .post("/v1/dlq/purge", &json!({}))
        .await
        .expect(200, "purge all");
    assert_eq!(r["purged"], 5, "{r}");
    let list = host.get("/v1/dlq").await.expect(200, "dlq list");
    assert_eq!(list["items"], json!([]), "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_answer_their_4xx_and_store_nothing() {
    let host = TestHost::options()
        .config("[limits]\nmax_batch = 10\nmax_payload_bytes = 1000\n")
        .start();
    host.put_queue("q", json!({"paused": true})).await;
    let path = "/v1/queues/q/messages";

    // Batch larger than max_batch.
    let batch: Vec<Value> = (0..11).map(|i| json!({"payload": i})).collect();
    let code = host
        .post(path, &json!({"messages": batch}))
        .await
        .expect_error(413, "batch over the limit");
    assert_eq!(code, "batch_too_large");

    // One payload over max_payload_bytes inside an otherwise fine batch.
    let big = "x".repeat(2_000);
    host.post(
        path,
        &json!({"messages": [{"payload": 1}, {"payload": big}]}),
    )
    .await
    .expect_error(413, "payload over the limit");

    // Too many headers.
    let mut req_headers = Vec::new();
    for i in 0..80 {
        req_headers.push((format!("x-filler-{i}"), "1".to_owned()));
    }
    let reply = host
        .call_with_headers(
            Method::POST,
            path,
            &req_headers,
            Some(&json!({"payload": 1})),
        )
        .await;
    assert_eq!(reply.status.as_u16(), 431, "{}", reply.text);
    assert_eq!(reply.json["error"]["code"], "headers_too_large");

    // Headers too large in total.
    let huge = vec![("x-huge".to_owned(), "y".repeat(20_000))];
    let reply = host
        .call_with_headers(Method::POST, path, &huge, Some(&json!({"payload": 1})))
        .await;
    assert_eq!(reply.status.as_u16(), 431, "{}", reply.text);

    let s = host.stats("q").await;
    assert_eq!(s.enqueued, 0, "nothing was stored: {s:?}");
    let list = host.get("/v1/queues/q/messages").await.expect(200, "list");
    assert_eq!(list["items"], json!([]));

    // The limits still let a proper request through.
    host.post(
        path,
        &json!({"messages": (0..10).map(|i| json!({"payload": i})).collect::<Vec<_>>()}),
    )
    .await
    .expect(202, "a batch at the limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pagination_returns_each_message_once_while_more_arrive() {
    let host = TestHost::start();
    host.put_queue("p", json!({"paused": true})).await;
    let mut expected: BTreeSet<String> = BTreeSet::new();
    for chunk in 0..5 {
        let messages: Vec<Value> = (0..40)
            .map(|i| json!({"payload": {"chunk": chunk, "i": i}}))
            .collect();
        expected.extend(host.enqueue("p", json!({ "messages": messages })).await);
    }

    let mut seen: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut added = 0;
    // Bounded: 200 messages to start plus 10 per page added, 7 per page.
    for page in 0..200 {
        let path = match &cursor {
            Some(c) => format!("/v1/queues/p/messages?limit=7&cursor={c}"),
            None => "/v1/queues/p/messages?limit=7".to_owned(),
        };
        let reply = host.get(&path).await.expect(200, "page");
        for item in reply["items"].as_array().expect("items") {
            seen.push(item["id"].as_str().expect("id").to_owned());
        }
        // New messages arrive between pages, for the first 20 pages.
        if page < 20 {
            let ids = host
                .enqueue(
                    "p",
                    json!({"messages": (0..10).map(|i| json!({"payload": i})).collect::<Vec<_>>()}),
                )
                .await;
            added += ids.len();
            expected.extend(ids);
        }
        match reply["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(added, 200);
    let unique: BTreeSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "no message was returned twice");
    assert_eq!(unique, expected, "every message was returned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_key_returns_the_original_ids() {
    let host = TestHost::start();
    host.put_queue("i", json!({"paused": true})).await;
    let first = host
        .call_with_headers(
            Method::POST,
            "/v1/queues/i/messages",
            &[("Idempotency-Key".to_owned(), "order-42".to_owned())],
            Some(&json!({"payload": {"order": 42}})),
        )
        .await
        .expect(202, "first send");
    let again = host
        .call_with_headers(
            Method::POST,
            "/v1/queues/i/messages",
            &[("Idempotency-Key".to_owned(), "order-42".to_owned())],
            Some(&json!({"payload": {"order": 42}})),
        )
        .await
        .expect(202, "retried send");
    assert_eq!(
        first["ids"], again["ids"],
        "the retry names the original message"
    );
    assert_eq!(host.stats("i").await.enqueued, 1);

    // Batches carry a key per message; a retried batch returns the same ids in order.
    let body = json!({"messages": [
        {"payload": 1, "idempotency_key": "k1"},
        {"payload": 2, "idempotency_key": "k2"}
    ]});
    let a = host
        .post("/v1/queues/i/messages", &body)
        .await
        .expect(202, "batch");
    let b = host
        .post("/v1/queues/i/messages", &body)
        .await
        .expect(202, "batch again");
    assert_eq!(a["ids"], b["ids"]);
    assert_eq!(host.stats("i").await.enqueued, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let host = TestHost::options()
        .config("[limits]\nheader_read_timeout = \"1s\"\n")
        .start();
    let addr = host.url().trim_start_matches("http://").to_owned();
    let mut slow = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: spool\r\n")
        .await
        .expect("send half a request head");

    // The server closes the connection (possibly after a 408); the bound is far above the
    // configured second so only a server that never closes it fails.
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(20), slow.read_to_end(&mut buf)).await;
    assert!(
        closed.is_ok(),
        "the half-sent request was still open after 20 s"
    );
    assert!(host.healthy().await, "other clients are served meanwhile");
}

//! Bad input is refused with a clear 4xx JSON error (`{"error": {"code", "message"}}`) whose code
//! is stable, and a refused request stores nothing.

use std::time::Duration;

use spool_tests::{EMPTY_COMPONENT, EMPTY_CORE_MODULE, Method, TestHost, Value, json, plugin_path};

/// The plugin list entry named `name`, if any.
async fn plugin_entry(host: &TestHost, name: &str) -> Option<Value> {
    let list = host.get("/v1/plugins").await.expect(200, "list plugins");
    let plugins = list["plugins"]
        .as_array()
        .unwrap_or_else(|| panic!("GET /v1/plugins has a `plugins` array: {list}"));
    plugins.iter().find(|p| p["name"] == name).cloned()
}

async fn post_raw(host: &TestHost, path: &str, body: &str) -> spool_tests::Reply {
    host.call_raw(
        Method::POST,
        path,
        "application/json",
        body.as_bytes().to_vec(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_enqueue_is_refused_and_stores_nothing() {
    let host = TestHost::start();
    host.put_queue("q", json!({"paused": true})).await;
    let path = "/v1/queues/q/messages";

    let c1 = post_raw(&host, path, r#"{"payload": "#)
        .await
        .expect_error(400, "truncated JSON");
    let c2 = post_raw(&host, path, "this is not json")
        .await
        .expect_error(400, "not JSON at all");
    assert_eq!(c1, c2, "the same kind of error has the same code");

    post_raw(&host, path, r#"{"payload": 1, "priority": "high"}"#)
        .await
        .expect_client_error("priority of the wrong type");
    post_raw(&host, path, r#"{"payload": 1, "delay_ms": -5}"#)
        .await
        .expect_client_error("negative delay");
    // One bad entry rejects the whole batch: nothing of it is stored.
    post_raw(
        &host,
        path,
        r#"{"messages": [{"payload": "fine"}, {"payload": 2, "priority": "high"}]}"#,
    )
    .await
    .expect_client_error("a batch with one bad entry");

    let stats = host.stats("q").await;
    assert_eq!(
        stats.enqueued, 0,
        "refused requests store nothing: {stats:?}"
    );
    assert_eq!(stats.ready + stats.scheduled, 0, "{stats:?}");
    assert!(host.healthy().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_queue_configs_are_refused() {
    let host = TestHost::start();
    let c = host
        .call_raw(
            Method::PUT,
            "/v1/queues/newq",
            "application/json",
            b"{\"concurrency\": ".to_vec(),
        )
        .await
        .expect_error(400, "truncated queue config");
    eprintln!("malformed queue config: {c}");
    host.put("/v1/queues/newq", &json!({"concurency": 2}))
        .await
        .expect_client_error("a misspelled config field");
    let reply = host
        .put("/v1/queues/newq", &json!({"concurrency": 0}))
        .await;
    assert!(
        reply.text.contains("concurrency"),
        "the error names the bad field: {}",
        reply.text
    );
    reply.expect_client_error("concurrency 0");
    let code = host
        .get("/v1/queues/newq")
        .await
        .expect_error(404, "a queue whose creation was refused");
    assert_eq!(code, "queue_not_found");

    host.put("/v1/queues/bad*name", &json!({}))
        .await
        .expect_client_error("an invalid queue name");

    // A refused update leaves the existing config alone.
    host.put_queue("keep", json!({"concurrency": 3, "max_attempts": 7}))
        .await;
    host.put(
        "/v1/queues/keep",
        &json!({"max_attempts": 2, "lease_ms": 0}),
    )
    .await
    .expect_client_error("an update with one invalid field");
    let q = host.queue("keep").await;
    assert_eq!(q["config"]["max_attempts"], 7, "{q}");
    assert_eq!(q["config"]["concurrency"], 3, "{q}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_queue_is_404() {
    let host = TestHost::start();
    let code = host
        .post("/v1/queues/ghost/messages", &json!({"payload": 1}))
        .await
        .expect_error(404, "enqueue to a queue never created");
    assert_eq!(code, "queue_not_found");
    let code = host
        .post(
            "/v1/queues/ghost/messages",
            &json!({"messages": [{"payload": 1}]}),
        )
        .await
        .expect_error(404, "batch enqueue to a queue never created");
    assert_eq!(code, "queue_not_found");
    let code = host
        .get("/v1/queues/ghost")
        .await
        .expect_error(404, "get a queue never created");
    assert_eq!(code, "queue_not_found");
    let list = host.get("/v1/queues").await.expect(200, "list queues");
    assert!(
        !list.to_string().contains("ghost"),
        "enqueueing to an unknown queue must not create it: {list}"
    );
}

/// Uploads that are not a handler component are refused before anything is stored, and a refused
/// upload over an existing plugin leaves the active version serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_plugin_uploads_are_refused() {
    let host = TestHost::start();
    // No reference filter plugin exists yet, so "a component of the wrong world" is the smallest
    // valid component: it exports nothing, so it implements neither `handler` nor `filter`.
    let cases: [(&str, &[u8]); 4] = [
        ("not wasm at all", b"#!/bin/sh\necho this is not wasm\n"),
        ("an empty body", b""),
        ("a core module, not a component", EMPTY_CORE_MODULE),
        ("a component of no Spool world", EMPTY_COMPONENT),
    ];
    for (what, bytes) in cases {
        let code = host
            .call_raw(
                Method::PUT,
                "/v1/plugins/junk",
                "application/wasm",
                bytes.to_vec(),
            )
            .await
            .expect_client_error(what);
        eprintln!("upload of {what}: {code}");
        assert!(
            plugin_entry(&host, "junk").await.is_none(),
            "a refused upload ({what}) stores no plugin"
        );
    }

    // Over a working plugin: the refused upload does not replace it.
    host.deploy("echo", &plugin_path("echo")).await;
    host.call_raw(
        Method::PUT,
        "/v1/plugins/echo",
        "application/wasm",
        EMPTY_COMPONENT.to_vec(),
    )
    .await
    .expect_client_error("a wrong-world upload over echo");
    let echo = plugin_entry(&host, "echo").await.expect("echo is listed");
    assert_eq!(echo["active_version"], 1, "echo v1 stays active: {echo}");
    assert_eq!(
        echo["versions"].as_array().map(Vec::len),
        Some(1),
        "no version was added: {echo}"
    );
    host.put_queue("still-works", json!({"handler": "echo"}))
        .await;
    let id = host.enqueue_one("still-works", json!("hi")).await;
    host.wait_state(&id, "acked", Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_payload_is_413() {
    let host = TestHost::start();
    host.put_queue("big", json!({"paused": true})).await;
    let big = "x".repeat(1024 * 1024 + 1024);
    let code = host
        .post("/v1/queues/big/messages", &json!({"payload": big}))
        .await
        .expect_error(413, "a payload over 1 MiB");
    let code2 = host
        .post(
            "/v1/queues/big/messages",
            &json!({"messages": [{"payload": "small"}, {"payload": big}]}),
        )
        .await
        .expect_error(413, "a batch with one payload over 1 MiB");
    assert_eq!(code, code2, "the same kind of error has the same code");
    let stats = host.stats("big").await;
    assert_eq!(
        stats.enqueued, 0,
        "nothing of a refused request is stored: {stats:?}"
    );

    // Just under the limit is fine.
    let fits = "y".repeat(900 * 1024);
    host.enqueue("big", json!({"payload": fits})).await;
    let stats = host.stats("big").await;
    assert_eq!(stats.enqueued, 1, "{stats:?}");
    assert!(host.healthy().await);
}

/// A request head sent as is, asking the server to close the connection after answering.
fn head(request_line: &str, headers: &[&str]) -> Vec<u8> {
    let mut text = format!("{request_line}\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for h in headers {
        text.push_str(h);
        text.push_str("\r\n");
    }
    text.push_str("\r\n");
    text.into_bytes()
}

const RAW_TIMEOUT: Duration = Duration::from_secs(10);

/// A body announced larger than the route takes is refused on the header, at once, without
/// waiting for (or reading) the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announced_oversized_bodies_are_refused_at_once() {
    let host = TestHost::start();
    host.put_queue("q", json!({"paused": true})).await;
    let cases = [
        // Far over every limit.
        (
            "POST /v1/queues/q/messages HTTP/1.1",
            "Content-Length: 99999999999",
        ),
        // Just over enqueue's own limit ([limits] max_body_bytes, 16 MiB).
        (
            "POST /v1/queues/q/messages HTTP/1.1",
            "Content-Length: 16777217",
        ),
        // A queue config is small: 64 KiB.
        ("PUT /v1/queues/q HTTP/1.1", "Content-Length: 65537"),
        // Plugin uploads take 64 MiB.
        ("PUT /v1/plugins/big HTTP/1.1", "Content-Length: 67108865"),
    ];
    for (line, length) in cases {
        let reply = spool_tests::raw_http(
            host.url(),
            &head(line, &[length, "Content-Type: application/json"]),
            RAW_TIMEOUT,
        );
        let code = reply.expect_error(413, &format!("{line} with {length}"));
        assert_eq!(code, "payload_too_large");
        assert!(
            reply.elapsed < Duration::from_secs(5),
            "{line}: refused at once, not after the request timeout: {:?}",
            reply.elapsed
        );
    }
    // Within the route's limit, the announcement alone is no reason to refuse: enqueue's 16 MiB
    // is over the small-body limit but fine for enqueue.
    let body = format!(r#"{{"payload": "{}"}}"#, "x".repeat(100 * 1024));
    host.call_raw(
        Method::POST,
        "/v1/queues/q/messages",
        "application/json",
        body.into_bytes(),
    )
    .await
    .expect(202, "a 100 KiB enqueue");
    assert_eq!(host.stats("q").await.enqueued, 1);
    assert!(plugin_entry(&host, "big").await.is_none());
}

/// Requests hyper refuses before the API sees them still get the JSON error shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_level_refusals_are_json() {
    let host = TestHost::start();
    let many: Vec<String> = (0..10_000).map(|i| format!("x-h{i}: v")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let reply = spool_tests::raw_http(
        host.url(),
        &head("GET /v1/queues HTTP/1.1", &many),
        RAW_TIMEOUT,
    );
    assert_eq!(
        reply.expect_error(431, "10,000 headers"),
        "headers_too_large"
    );

    let reply = spool_tests::raw_http(host.url(), b"NOT A REQUEST LINE\r\n\r\n", RAW_TIMEOUT);
    reply.expect_error(400, "a bad request line");

    let uri = format!("GET /v1/queues/{} HTTP/1.1", "a".repeat(100 * 1024));
    let reply = spool_tests::raw_http(host.url(), &head(&uri, &[]), RAW_TIMEOUT);
    assert_eq!(reply.expect_error(414, "a 100 KB URI"), "uri_too_long");
    assert!(host.healthy().await);
}

/// `.` and `..` are not names; ids are spelled one way only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_names_and_odd_ids_are_refused() {
    let host = TestHost::start();
    // Sent raw: HTTP clients resolve `.`, `..` and their escapes away before sending.
    for (path, methods) in [
        ("/v1/queues/%2E", ["PUT", "GET"]),
        ("/v1/queues/%2E%2E", ["PUT", "GET"]),
        ("/v1/queues/%2e%2e/messages", ["POST", "GET"]),
    ] {
        for method in methods {
            let reply = spool_tests::raw_http(
                host.url(),
                &head(&format!("{method} {path} HTTP/1.1"), &["Content-Length: 0"]),
                RAW_TIMEOUT,
            );
            assert_eq!(
                reply.expect_error(400, &format!("{method} {path}")),
                "invalid_name"
            );
        }
    }
    let list = host.get("/v1/queues").await.expect(200, "list queues");
    assert_eq!(list["queues"], json!([]), "nothing was created: {list}");

    host.put_queue("q", json!({"paused": true})).await;
    let id = host.enqueue_one("q", json!(1)).await;
    assert_eq!(id, "1");
    for odd in ["01", "+1", "001", "1.0"] {
        let code = host
            .get(&format!("/v1/messages/{odd}"))
            .await
            .expect_error(400, &format!("message id {odd:?}"));
        assert_eq!(code, "invalid_id");
        host.delete(&format!("/v1/messages/{odd}"))
            .await
            .expect_error(400, &format!("cancel {odd:?}"));
    }
    assert_eq!(host.state("1").await, "ready", "nothing was cancelled");
}

/// Message header values, like names, are one line of text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_header_values_with_line_breaks_are_refused() {
    let host = TestHost::start();
    host.put_queue("q", json!({"paused": true})).await;
    for value in ["a\r\nx-injected: 1", "a\nb", "a\rb", "nul\u{0}"] {
        let reply = host
            .post(
                "/v1/queues/q/messages",
                &json!({"payload": 1, "headers": {"h": value}}),
            )
            .await;
        assert!(
            reply.text.contains("headers"),
            "names the field: {}",
            reply.text
        );
        reply.expect_error(400, &format!("header value {value:?}"));
    }
    host.post(
        "/v1/queues/q/messages",
        &json!({"messages": [{"payload": 1}, {"payload": 2, "headers": {"ok": "x\ny"}}]}),
    )
    .await
    .expect_error(400, "a batch with one bad header value");
    assert_eq!(host.stats("q").await.enqueued, 0, "nothing stored");
}

/// JSON endpoints take JSON: a declared non-JSON media type is 415, none at all is fine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_endpoints_refuse_other_media_types() {
    let host = TestHost::start();
    host.put_queue("q", json!({"paused": true})).await;
    let config = host.queue("q").await["config"].clone();
    for content_type in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/xml",
    ] {
        let code = host
            .call_raw(
                Method::POST,
                "/v1/queues/q/messages",
                content_type,
                br#"{"payload": 1}"#.to_vec(),
            )
            .await
            .expect_error(415, content_type);
        assert_eq!(code, "unsupported_media_type");
        host.call_raw(
            Method::PUT,
            "/v1/queues/q",
            content_type,
            br#"{"concurrency": 2}"#.to_vec(),
        )
        .await
        .expect_error(415, &format!("queue config as {content_type}"));
    }
    assert_eq!(host.stats("q").await.enqueued, 0);
    assert_eq!(
        host.queue("q").await["config"],
        config,
        "the config is unchanged"
    );
    // No Content-Type at all: taken as JSON.
    let body = br#"{"payload": 1}"#;
    let mut request = head(
        "POST /v1/queues/q/messages HTTP/1.1",
        &[&format!("Content-Length: {}", body.len())],
    );
    request.extend_from_slice(body);
    let reply = spool_tests::raw_http(host.url(), &request, RAW_TIMEOUT);
    assert_eq!(reply.status, 202, "{}", reply.body);
    host.call_raw(
        Method::POST,
        "/v1/queues/q/messages",
        "application/json; charset=utf-8",
        body.to_vec(),
    )
    .await
    .expect(202, "JSON with a charset");
}

/// Payloads no JSON parser can read back are refused at enqueue, naming the message; bytes sent
/// as base64 are shown as base64, even when they look like such JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_that_cannot_be_read_back_are_refused() {
    let host = TestHost::start();
    host.put_queue("q", json!({"paused": true})).await;
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    for (body, field) in [
        (r#"{"payload": "\ud800"}"#.to_owned(), "payload"),
        (r#"{"payload": {"n": 1e400}}"#.to_owned(), "payload"),
        (format!(r#"{{"payload": {deep}}}"#), "payload"),
        (
            format!(r#"{{"messages": [{{"payload": 1}}, {{"payload": {deep}}}]}}"#),
            "messages[1].payload",
        ),
    ] {
        let reply = post_raw(&host, "/v1/queues/q/messages", &body).await;
        let message = reply.json["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(message.starts_with(field), "{field:?} named in {message:?}");
        reply.expect_error(400, &format!("payload refused at {field}"));
    }
    assert_eq!(host.stats("q").await.enqueued, 0, "nothing stored");

    // The same text as raw bytes is stored and shown as base64, so every reader can read it.
    // base64 of the 8 bytes `"\ud800"`.
    let b64 = "Ilx1ZDgwMCI=";
    let id = host
        .enqueue("q", json!({"payload_base64": b64}))
        .await
        .remove(0);
    let m = host.get_message(&id).await;
    assert_eq!(m["payload_base64"], b64, "{m}");
    assert!(m.get("payload").is_none(), "{m}");
    let out = host.cli(["message", "get", &id]);
    out.expect_success("spool message get");
    assert!(out.stdout.contains(b64), "{}", out.stdout);
    let out = host.cli(["queue", "messages", "q"]);
    out.expect_success("spool queue messages");
    assert!(!out.stdout.contains("no messages match"), "{}", out.stdout);
}

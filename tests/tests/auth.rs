//! Bearer-token authentication and roles: every role against every class of endpoint, over real
//! HTTP; refusals change nothing; a server without tokens refuses a non-loopback address.

use std::process::Command;
use std::time::Duration;

use sha2::{Digest, Sha256};
use spool_tests::{Method, TestHost, Value, json, plugin_path, spool_bin};

const ADMIN: &str = "admin-secret-1";
const PRODUCER: &str = "producer-secret-1";
const READER: &str = "reader-secret-1";

fn digest(token: &str) -> String {
    format!("{:x}", Sha256::digest(token.as_bytes()))
}

fn auth_config() -> String {
    let mut toml = String::new();
    for (name, role, token) in [
        ("ops", "admin", ADMIN),
        ("shop", "producer", PRODUCER),
        ("dash", "reader", READER),
    ] {
        toml.push_str(&format!(
            "[[auth.tokens]]\nname = \"{name}\"\nrole = \"{role}\"\nsha256 = \"{}\"\n\n",
            digest(token)
        ));
    }
    toml
}

fn secured_host() -> TestHost {
    TestHost::options()
        .config(auth_config())
        .token(ADMIN)
        .start()
}

/// One row of the matrix: a request and the status each caller gets.
struct Case {
    method: Method,
    path: String,
    body: Option<Value>,
    admin: u16,
    producer: u16,
    reader: u16,
}

fn case(method: Method, path: &str, body: Option<Value>, expect: [u16; 3]) -> Case {
    Case {
        method,
        path: path.to_owned(),
        body,
        admin: expect[0],
        producer: expect[1],
        reader: expect[2],
    }
}

async fn enqueued_total(host: &TestHost, queue: &str) -> u64 {
    let q = host
        .get(&format!("/v1/queues/{queue}"))
        .await
        .expect(200, "queue stats");
    q["stats"]["enqueued"].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_against_every_endpoint_class() {
    let host = secured_host();
    host.put_queue("q", json!({"paused": true})).await;
    let admin_msg = host.enqueue_one("q", json!({"by": "admin"})).await;
    let own = host
        .call_as(
            Some(PRODUCER),
            Method::POST,
            "/v1/queues/q/messages",
            Some(&json!({"payload": {"by": "producer"}})),
        )
        .await
        .expect(202, "producer enqueues");
    let own_id = own["ids"][0].as_str().unwrap().to_owned();

    // Statuses in the order admin, producer, reader. Admin-only writes come last so the reads
    // above them see the state the setup made.
    let cases = vec![
        case(
            Method::POST,
            "/v1/queues/q/messages",
            Some(json!({"payload": 1})),
            [202, 202, 403],
        ),
        case(
            Method::POST,
            "/v1/queues/q/messages",
            Some(json!({"messages": [{"payload": 1}, {"payload": 2}]})),
            [202, 202, 403],
        ),
        case(
            Method::GET,
            &format!("/v1/messages/{own_id}"),
            None,
            [200, 200, 200],
        ),
        case(
            Method::GET,
            &format!("/v1/messages/{admin_msg}"),
            None,
            [200, 403, 200],
        ),
        case(Method::GET, "/v1/queues", None, [200, 403, 200]),
        case(Method::GET, "/v1/queues/q", None, [200, 403, 200]),
        case(
            Method::GET,
            "/v1/queues/q/messages?limit=5",
            None,
            [200, 403, 200],
        ),
        case(Method::GET, "/v1/plugins", None, [200, 403, 200]),
        case(Method::GET, "/v1/dlq", None, [200, 403, 200]),
        case(Method::GET, "/metrics", None, [200, 403, 200]),
        case(
            Method::PUT,
            "/v1/queues/q",
            Some(json!({"concurrency": 2})),
            [200, 403, 403],
        ),
        case(
            Method::POST,
            "/v1/dlq/replay",
            Some(json!({"queue": "q"})),
            [200, 403, 403],
        ),
        case(
            Method::POST,
            "/v1/dlq/purge",
            Some(json!({"queue": "q"})),
            [200, 403, 403],
        ),
        case(
            Method::POST,
            "/v1/plugins/none/rollback",
            None,
            [404, 403, 403],
        ),
        case(
            Method::DELETE,
            &format!("/v1/messages/{admin_msg}"),
            None,
            [200, 403, 403],
        ),
        case(Method::DELETE, "/v1/dlq/999999", None, [404, 403, 403]),
    ];

    for c in &cases {
        let what = format!("{} {}", c.method, c.path);
        // Refusals first, so an allowed call by another role cannot hide a change.
        let before = enqueued_total(&host, "q").await;
        for (token, want, role) in [
            (None, 401, "no token"),
            (Some("not-a-token"), 401, "a wrong token"),
            (Some(PRODUCER), c.producer, "producer"),
            (Some(READER), c.reader, "reader"),
        ] {
            if want < 400 {
                continue;
            }
            let reply = host
                .call_as(token, c.method.clone(), &c.path, c.body.as_ref())
                .await;
            let code = reply.expect_error(want, &format!("{what} as {role}"));
            let expected_code = if want == 401 {
                "unauthorized"
            } else {
                "forbidden"
            };
            if want == 401 || want == 403 {
                assert_eq!(code, expected_code, "{what} as {role}");
            }
        }
        assert_eq!(
            enqueued_total(&host, "q").await,
            before,
            "{what}: refused calls stored nothing"
        );
        for (token, want, role) in [
            (ADMIN, c.admin, "admin"),
            (PRODUCER, c.producer, "producer"),
            (READER, c.reader, "reader"),
        ] {
            if want >= 400 && want != 404 {
                continue;
            }
            let reply = host
                .call_as(Some(token), c.method.clone(), &c.path, c.body.as_ref())
                .await;
            assert_eq!(
                reply.status.as_u16(),
                want,
                "{what} as {role}: {}",
                reply.text
            );
        }
    }

    // The plugin upload endpoint takes raw bytes.
    let wasm = std::fs::read(plugin_path("echo")).expect("read echo.wasm");
    for (token, want) in [(None, 401), (Some(PRODUCER), 403), (Some(READER), 403)] {
        let reply = host
            .call_raw_as(
                token,
                Method::PUT,
                "/v1/plugins/echo",
                "application/wasm",
                wasm.clone(),
            )
            .await;
        assert_eq!(
            reply.status.as_u16(),
            want,
            "deploy as {token:?}: {}",
            reply.text
        );
    }
    let plugins = host.get("/v1/plugins").await.expect(200, "plugins");
    assert_eq!(
        plugins["plugins"],
        json!([]),
        "refused uploads stored nothing"
    );
    host.deploy("echo", &plugin_path("echo")).await;

    // Probes and the dashboard's assets answer without a token; the assets hold no data.
    for path in ["/healthz", "/readyz", "/ui/", "/ui/app.js"] {
        let reply = host.call_as(None, Method::GET, path, None).await;
        assert_eq!(reply.status.as_u16(), 200, "{path} without a token");
    }
    // Every role may ask who it is; the dashboard shows what that role may do.
    for (token, name, role) in [
        (ADMIN, "ops", "admin"),
        (PRODUCER, "shop", "producer"),
        (READER, "dash", "reader"),
    ] {
        let me = host
            .call_as(Some(token), Method::GET, "/v1/whoami", None)
            .await
            .expect(200, "whoami");
        assert_eq!(
            me,
            json!({"tokens_required": true, "name": name, "role": role})
        );
    }
    host.call_as(None, Method::GET, "/v1/whoami", None)
        .await
        .expect_error(401, "whoami without a token");

    // The producer's own message records who sent it.
    let m = host.get_message(&own_id).await;
    assert_eq!(m["producer"], "shop", "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unauthorized_answers_say_how_to_authenticate() {
    let host = secured_host();
    let reply = host.call_as(None, Method::GET, "/v1/queues", None).await;
    assert_eq!(reply.status.as_u16(), 401);
    let message = reply.json["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("Bearer"), "{message}");
    assert!(message.contains("SPOOL_TOKEN"), "{message}");

    let reply = host
        .call_as(Some("wrong"), Method::GET, "/v1/queues", None)
        .await;
    assert_eq!(reply.status.as_u16(), 401);
    let message = reply.json["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("not valid"), "{message}");
}

#[test]
fn non_loopback_without_tokens_is_refused() {
    let out = Command::new(spool_bin())
        .args(["serve", "--listen", "0.0.0.0:0", "--db"])
        .arg(std::env::temp_dir().join("spool-refused-never-created.db"))
        .output()
        .expect("run spool serve");
    assert!(!out.status.success(), "serve must refuse");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("auth.tokens") && stderr.contains("127.0.0.1"),
        "the refusal says what to do: {stderr}"
    );
}

const PRODUCER_2: &str = "producer-secret-2";

/// Two producers, an admin: `shop` and `shop2` are producers.
fn two_producers_host() -> TestHost {
    let mut toml = auth_config();
    toml.push_str(&format!(
        "[[auth.tokens]]\nname = \"shop2\"\nrole = \"producer\"\nsha256 = \"{}\"\n",
        digest(PRODUCER_2)
    ));
    TestHost::options().config(toml).token(ADMIN).start()
}

async fn enqueue_as(host: &TestHost, token: &str, body: Value) -> (String, bool) {
    let reply = host
        .call_as(
            Some(token),
            Method::POST,
            "/v1/queues/q/messages",
            Some(&body),
        )
        .await
        .expect(202, "enqueue");
    (
        reply["ids"][0].as_str().unwrap_or_default().to_owned(),
        reply["existing"][0].as_bool().unwrap_or_default(),
    )
}

/// Idempotency keys belong to their producer: the same key from two producers makes two
/// messages, and superseding never reaches another producer's message. Admin tokens share one
/// scope (like a server without tokens).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_are_scoped_per_producer() {
    let host = two_producers_host();
    host.put_queue("q", json!({"paused": true})).await;
    let key = json!("order-7");
    let (p2, _) = enqueue_as(
        &host,
        PRODUCER_2,
        json!({"payload": "p2", "idempotency_key": key}),
    )
    .await;
    let (p1, existing) = enqueue_as(
        &host,
        PRODUCER,
        json!({"payload": "p1", "idempotency_key": key}),
    )
    .await;
    assert_ne!(p1, p2, "another producer's key does not reveal its message");
    assert!(!existing);
    let (sup, existing) = enqueue_as(
        &host,
        PRODUCER,
        json!({"payload": "p1-new", "idempotency_key": key, "supersede": true}),
    )
    .await;
    assert_eq!(
        (sup.as_str(), existing),
        (p1.as_str(), true),
        "supersede hits its own message"
    );
    assert_eq!(
        host.get_message(&p2).await["payload"],
        "p2",
        "p2's message is untouched"
    );
    assert_eq!(host.get_message(&p1).await["payload"], "p1-new");
    // The header form of the key is scoped the same way.
    let reply = host
        .call_raw_as(
            Some(PRODUCER_2),
            Method::POST,
            "/v1/queues/q/messages",
            "application/json",
            br#"{"payload": "again"}"#.to_vec(),
        )
        .await;
    reply.expect(202, "without a key");
    let headers = [("Idempotency-Key".to_owned(), "order-7".to_owned())];
    let reply = host
        .call_with_headers(
            Method::POST,
            "/v1/queues/q/messages",
            &headers,
            Some(&json!({"payload": "admin"})),
        )
        .await
        .expect(202, "admin with the key");
    let admin = reply["ids"][0].as_str().unwrap_or_default().to_owned();
    assert!(
        admin != p1 && admin != p2,
        "admins have their own, shared scope"
    );
    let (again, existing) = enqueue_as(
        &host,
        ADMIN,
        json!({"payload": "admin-2", "idempotency_key": key, "supersede": true}),
    )
    .await;
    assert_eq!((again.as_str(), existing), (admin.as_str(), true));
    assert_eq!(host.get_message(&p2).await["payload"], "p2");
    assert_eq!(host.get_message(&p1).await["payload"], "p1-new");
    assert_eq!(host.get_message(&admin).await["payload"], "admin-2");
}

/// A body announced over the route's limit is refused on the header whoever sends it; two
/// Authorization headers are ambiguous and refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn announced_oversized_bodies_and_two_tokens_are_refused() {
    let host = secured_host();
    host.put_queue("q", json!({"paused": true})).await;
    for auth in [None, Some(PRODUCER)] {
        let mut request = String::from(
            "POST /v1/queues/q/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
             Content-Length: 99999999999\r\nContent-Type: application/json\r\n",
        );
        if let Some(token) = auth {
            request.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        request.push_str("\r\n");
        let reply = spool_tests::raw_http(host.url(), request.as_bytes(), Duration::from_secs(10));
        assert_eq!(
            reply.expect_error(413, &format!("token {auth:?}")),
            "payload_too_large"
        );
        assert!(
            reply.elapsed < Duration::from_secs(5),
            "{:?}",
            reply.elapsed
        );
    }
    let request = format!(
        "GET /v1/queues HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
         Authorization: Bearer {READER}\r\nAuthorization: Bearer {ADMIN}\r\n\r\n"
    );
    let reply = spool_tests::raw_http(host.url(), request.as_bytes(), Duration::from_secs(10));
    reply.expect_error(400, "two Authorization headers");
    assert!(reply.body.contains("Authorization"), "{}", reply.body);
}

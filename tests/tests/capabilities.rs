//! Capabilities, denied by default and granted per plugin: outbound HTTP against a loopback
//! server (granted host works; another host, and a plugin without the grant, are refused), and
//! secrets that reach the plugin but never the API, the log or the metrics.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use spool_tests::{TestHost, plugin_path};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A loopback HTTP server answering 200 to everything; returns its port and the request heads
/// it received.
async fn loopback_server() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let record = record.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                record
                    .lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&head).to_lowercase());
                let _ = conn
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    (port, seen)
}

const SECRET: &str = "s3cr3t-Value-4f9a2c";

#[tokio::test]
async fn outbound_http_and_secrets_are_granted_per_plugin() {
    let host = TestHost::start();
    let (port, seen) = loopback_server().await;
    let wasm = std::fs::read(plugin_path("fetch")).unwrap();

    // Without a grant, a component importing wasi:http is refused at deploy, naming the
    // import and the grant that would allow it.
    let reply = host
        .call_raw(
            Method::PUT,
            "/v1/plugins/fetch",
            "application/wasm",
            wasm.clone(),
        )
        .await;
    let text = reply.text.clone();
    assert_eq!(
        reply.expect_error(400, "deploy without grant"),
        "capability_not_granted"
    );
    assert!(
        text.contains("wasi:http/") && text.contains("allowed_outbound_hosts"),
        "{text}"
    );
    assert!(
        host.get("/v1/plugins").await.expect_ok("list")["plugins"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // A bad allow-list entry is refused with the syntax.
    let err = host
        .put(
            "/v1/plugins/fetch/grants",
            &json!({"allowed_outbound_hosts": ["127.0.0.1"]}),
        )
        .await
        .expect_error(400, "bad grant");
    assert_eq!(err, "invalid_request");

    // Grant the loopback server (by IP and port only), set the secret through the CLI.
    host.put(
        "/v1/plugins/fetch/grants",
        &json!({"allowed_outbound_hosts": [format!("http://127.0.0.1:{port}")]}),
    )
    .await
    .expect_ok("grant");
    let out = host.cli([
        "plugin",
        "config",
        "set",
        "fetch",
        "mode=test",
        "--secret",
        &format!("api_key={SECRET}"),
    ]);
    out.expect_success("config set");
    assert!(
        !out.stdout.contains(SECRET) && out.stdout.contains("api_key"),
        "{}",
        out.stdout
    );

    host.deploy("fetch", &plugin_path("fetch")).await;
    host.put_queue("calls", json!({"handler": "fetch", "max_attempts": 1}))
        .await;

    // Granted host: 200, acked; the plugin read the secret through config().
    let ok = host
        .enqueue_one(
            "calls",
            json!({"url": format!("http://127.0.0.1:{port}/hook")}),
        )
        .await;
    let m = host.wait_until_final(&ok, Duration::from_secs(20)).await;
    assert_eq!(m["state"], "acked", "{m}");
    let heads = seen.lock().unwrap().clone();
    assert_eq!(heads.len(), 1, "{heads:?}");
    assert!(
        heads[0].contains(&format!("x-api-key: {}", SECRET.to_lowercase())),
        "{heads:?}"
    );

    // Another host (same server, other name) and another port: denied inside the plugin.
    for url in [
        format!("http://localhost:{port}/hook"),
        format!("http://127.0.0.1:{}/hook", port.wrapping_add(1)),
    ] {
        let id = host.enqueue_one("calls", json!({ "url": url })).await;
        let m = host.wait_until_final(&id, Duration::from_secs(20)).await;
        assert_eq!(m["state"], "dead", "{m}");
        let error = m["last_error"].as_str().unwrap_or_default();
        assert!(error.contains("HttpRequestDenied"), "{url}: {m}");
    }
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "denied requests never left the host"
    );

    // The secret is listed by name only, and appears in no API answer, metrics or log.
    let config = host
        .get("/v1/plugins/fetch/config")
        .await
        .expect_ok("get config");
    assert_eq!(config["secrets"], json!(["api_key"]), "{config}");
    assert_eq!(config["values"]["mode"], "test");
    let shown = host.cli(["plugin", "config", "show", "fetch"]);
    shown.expect_success("config show");
    assert!(!shown.stdout.contains(SECRET), "{}", shown.stdout);
    for path in [
        "/v1/plugins/fetch/config",
        "/v1/plugins/fetch/grants",
        "/v1/plugins",
        "/v1/plugins/fetch",
        "/v1/queues",
        "/v1/queues/calls",
        "/v1/queues/calls/messages",
        "/v1/dlq",
        "/metrics",
        "/openapi.json",
    ] {
        let reply = host.get(path).await;
        assert!(!reply.text.contains(SECRET), "{path} shows the secret");
    }
    let log = std::fs::read_to_string(host.log_path()).unwrap();
    assert!(!log.contains(SECRET), "the log shows the secret");
    assert!(
        log.contains("outbound HTTP request denied"),
        "denials are logged"
    );
}

#[tokio::test]
async fn kv_quota_exceeded_reaches_the_guest() {
    let host = TestHost::start();
    host.put("/v1/plugins/counter/grants", &json!({"kv_max_keys": 0}))
        .await
        .expect_ok("grant a zero quota");
    host.deploy("counter", &plugin_path("misbehave")).await;
    host.put_queue("count", json!({"handler": "counter", "max_attempts": 1}))
        .await;
    // misbehave's `kv` mode retries when kv-set fails; with one attempt it lands dead.
    let id = host.enqueue_one("count", json!({"do": "kv"})).await;
    let m = host.wait_until_final(&id, Duration::from_secs(20)).await;
    assert_eq!(m["state"], "dead", "{m}");
    let log = std::fs::read_to_string(host.log_path()).unwrap();
    assert!(
        log.contains("kv failed: kv quota:") && log.contains("kv_max_keys"),
        "the guest saw the quota error"
    );
    // Raising the grant lets the same plugin write.
    host.put("/v1/plugins/counter/grants", &json!({"kv_max_keys": 10}))
        .await
        .expect_ok("raise the quota");
    let id = host.enqueue_one("count", json!({"do": "kv"})).await;
    let m = host.wait_until_final(&id, Duration::from_secs(20)).await;
    assert_eq!(m["state"], "acked", "{m}");
}

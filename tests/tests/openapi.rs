//! `GET /openapi.json` from a real server that has tokens: it needs none, and it describes the
//! token the other endpoints ask for.

use sha2::{Digest, Sha256};
use spool_tests::{Method, TestHost, Value, json};

const ADMIN: &str = "openapi-admin-secret";

fn secured_host() -> TestHost {
    let digest = format!("{:x}", Sha256::digest(ADMIN.as_bytes()));
    TestHost::options()
        .config(format!(
            "[[auth.tokens]]\nname = \"ops\"\nrole = \"admin\"\nsha256 = \"{digest}\"\n"
        ))
        .token(ADMIN)
        .start()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_is_served_without_a_token() {
    let host = secured_host();
    // The server does ask for tokens elsewhere.
    host.call_as(None, Method::GET, "/v1/queues", None)
        .await
        .expect_error(401, "GET /v1/queues without a token");

    let reply = host.call_as(None, Method::GET, "/openapi.json", None).await;
    let doc = reply.expect(200, "GET /openapi.json without a token");
    let version = doc["openapi"].as_str().unwrap_or_default();
    assert!(version.starts_with("3.1."), "openapi version: {version:?}");
    assert_eq!(doc["info"]["title"], "Spool admin API");

    let paths = doc["paths"].as_object().expect("a paths object");
    for path in [
        "/v1/queues/{queue}/messages",
        "/v1/messages/{id}",
        "/v1/plugins/{name}",
        "/v1/dlq",
        "/metrics",
        "/openapi.json",
    ] {
        assert!(paths.contains_key(path), "{path} is not documented");
    }
    // What the document says about tokens is what this server does.
    assert_eq!(
        doc["paths"]["/openapi.json"]["get"]["security"],
        Value::Array(vec![])
    );
    let enqueue = &doc["paths"]["/v1/queues/{queue}/messages"]["post"];
    assert_eq!(
        enqueue["security"][0]["bearer"],
        json!(["admin", "producer"])
    );
    assert!(
        enqueue["responses"]["401"].is_object(),
        "{}",
        enqueue["responses"]
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );

    // Served as JSON, the same document each time.
    let resp = reqwest::get(format!("{}/openapi.json", host.url()))
        .await
        .expect("GET /openapi.json");
    assert_eq!(resp.status().as_u16(), 200);
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert_eq!(content_type, "application/json");
    let again: Value = resp.json().await.expect("JSON");
    assert_eq!(again, doc);
}

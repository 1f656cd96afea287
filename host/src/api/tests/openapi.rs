//! `GET /openapi.json` against the router that serves it: the document is OpenAPI 3.1, names
//! every endpoint, routes every operation it names, and describes the answers handlers give.

use std::collections::{BTreeMap, BTreeSet};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};
use tower::ServiceExt as _;

use super::{TestApi, echo_wasm};
use crate::api::dto::MAX_LIMIT;
use crate::api::openapi::{ROLES, sample_path};
use crate::auth;
use crate::model::ErrorCategory;

/// Every endpoint of DESIGN §7 that `router()` serves, by hand. The §7 endpoints not served yet
/// (schedules, backup) are left out: the document describes what exists.
const ENDPOINTS: &[(&str, &str)] = &[
    ("POST", "/v1/queues/{queue}/messages"),
    ("GET", "/v1/queues/{queue}/messages"),
    ("GET", "/v1/queues"),
    ("GET", "/v1/queues/{queue}"),
    ("PUT", "/v1/queues/{queue}"),
    ("DELETE", "/v1/queues/{queue}"),
    ("POST", "/v1/queues/{queue}/breaker/reset"),
    ("GET", "/v1/messages/{id}"),
    ("DELETE", "/v1/messages/{id}"),
    ("GET", "/v1/messages/{id}/trace"),
    ("POST", "/v1/topics/{topic}/messages"),
    ("GET", "/v1/routes"),
    ("POST", "/v1/routes"),
    ("GET", "/v1/routes/{id}"),
    ("DELETE", "/v1/routes/{id}"),
    ("PUT", "/v1/plugins/{name}"),
    ("GET", "/v1/plugins"),
    ("POST", "/v1/plugins/{name}/rollback"),
    ("GET", "/v1/plugins/{name}"),
    ("DELETE", "/v1/plugins/{name}"),
    ("POST", "/v1/plugins/{name}/versions/{version}/activate"),
    ("GET", "/v1/dlq"),
    ("POST", "/v1/dlq/replay"),
    ("POST", "/v1/dlq/purge"),
    ("POST", "/v1/dlq/{id}/replay"),
    ("POST", "/v1/dlq/{id}/reviewed"),
    ("DELETE", "/v1/dlq/{id}"),
    ("GET", "/metrics"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/openapi.json"),
    ("POST", "/v1/admin/check"),
];

const METHODS: [&str; 5] = ["GET", "PUT", "POST", "DELETE", "PATCH"];

struct Raw {
    status: StatusCode,
    content_type: String,
    body: Vec<u8>,
}

impl Raw {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{}: not JSON ({e}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

async fn raw(api: &TestApi, method: &str, uri: &str, body: Vec<u8>) -> Raw {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::from(body))
        .unwrap();
    let resp = api.app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let content_type = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = resp
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec();
    Raw {
        status,
        content_type,
        body,
    }
}

async fn document(api: &TestApi) -> Value {
    let r = raw(api, "GET", "/openapi.json", Vec::new()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.content_type, "application/json");
    r.json()
}

/// Every `(METHOD, path)` the document describes.
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            let method = method.to_uppercase();
            if METHODS.contains(&method.as_str()) || method == "HEAD" || method == "OPTIONS" {
                out.insert((method, path.clone()));
            }
        }
    }
    out
}

/// Follows a local `$ref` (`#/components/...`).
fn resolve<'a>(doc: &'a Value, reference: &str) -> Option<&'a Value> {
    doc.pointer(reference.strip_prefix('#')?)
}

/// `v` itself, or what its `$ref` points at.
fn deref<'a>(doc: &'a Value, v: &'a Value) -> &'a Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => resolve(doc, r).unwrap_or_else(|| panic!("dangling $ref {r}")),
        None => v,
    }
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("$ref", Value::String(r)) => out.push(r.clone()),
                    _ => collect_refs(value, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| collect_refs(i, out)),
        _ => {}
    }
}

#[tokio::test]
async fn openapi_is_valid_and_covers_every_endpoint() {
    let api = TestApi::new().await;
    let doc = document(&api).await;

    // (a) OpenAPI 3.1 JSON. (utoipa cannot read its own "any value" schema `{}` back, so the
    // structure is checked here rather than by deserializing into its model.)
    let version = doc["openapi"].as_str().expect("an `openapi` version");
    assert!(version.starts_with("3.1."), "{version}");
    assert_eq!(doc["info"]["title"], "Spool admin API");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    assert!(doc["components"]["schemas"].is_object());
    for (path, item) in doc["paths"].as_object().expect("paths") {
        assert!(path.starts_with('/'), "{path}");
        serde_json::from_value::<utoipa::openapi::path::PathItem>(item.clone())
            .unwrap_or_else(|e| panic!("{path} is not an OpenAPI path item: {e}"));
        for (method, op) in item.as_object().unwrap() {
            let responses = op["responses"].as_object();
            assert!(responses.is_some_and(|r| !r.is_empty()), "{method} {path}");
        }
    }

    // (b) The hand-made list is documented.
    let documented = operations(&doc);
    for (method, path) in ENDPOINTS {
        assert!(
            documented.contains(&(method.to_string(), path.to_string())),
            "{method} {path} is not in /openapi.json"
        );
    }

    // (c) Every documented operation is routed, and every other method on a documented path is
    // refused with 405: routing and documentation agree both ways.
    let paths: BTreeSet<&String> = documented.iter().map(|(_, p)| p).collect();
    for path in paths {
        let uri = sample_path(path);
        assert!(!uri.contains('{'), "{uri}");
        for method in METHODS {
            let r = raw(&api, method, &uri, Vec::new()).await;
            let code = serde_json::from_slice::<Value>(&r.body)
                .ok()
                .and_then(|v| v["error"]["code"].as_str().map(str::to_owned));
            if documented.contains(&(method.to_owned(), path.clone())) {
                assert_ne!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{method} {uri}");
                assert!(
                    !(r.status == StatusCode::NOT_FOUND && code.as_deref() == Some("not_found")),
                    "{method} {uri} is documented but not routed"
                );
            } else {
                assert_eq!(
                    r.status,
                    StatusCode::METHOD_NOT_ALLOWED,
                    "{method} {uri} is routed but not documented: {code:?}"
                );
            }
        }
    }

    // (d) Every reference resolves inside the document.
    let mut refs = Vec::new();
    collect_refs(&doc, &mut refs);
    assert!(!refs.is_empty());
    for r in &refs {
        assert!(r.starts_with("#/components/"), "{r}");
        assert!(resolve(&doc, r).is_some(), "dangling $ref {r}");
    }
}

/// The document as a server with tokens serves it.
async fn secured_document(api: &TestApi) -> Value {
    let tokens = auth::Tokens::new(vec![
        auth::TokenEntry::new("ops", auth::Role::Admin, &auth::hash_token("a")).unwrap(),
    ]);
    let state = super::AppState {
        auth: std::sync::Arc::new(tokens),
        backup_dir: None,
        ..api.state.clone()
    };
    let req = Request::builder()
        .uri("/openapi.json")
        .body(Body::empty())
        .unwrap();
    let resp = super::router(state).oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&body).unwrap()
}

/// On a server without tokens nothing needs one, and the document says so: no security
/// requirement, no 401 or 403.
#[tokio::test]
async fn openapi_without_tokens_asks_for_none() {
    let api = TestApi::new().await;
    let doc = document(&api).await;
    for (method, path) in operations(&doc) {
        let op = &doc["paths"][&path][method.to_lowercase()];
        assert_eq!(op["security"], json!([]), "{method} {path}");
        let responses = op["responses"].as_object().unwrap();
        assert!(
            !responses.contains_key("401") && !responses.contains_key("403"),
            "{method} {path}"
        );
    }
    let secured = secured_document(&api).await;
    assert_ne!(
        secured["paths"]["/v1/queues"]["get"]["security"],
        json!([]),
        "with tokens, operations need one"
    );
}

/// The constraints the handlers enforce are in the document: name and id shapes in paths, an
/// enqueued message's required payload and bounds, a queue config's ranges, 415 for JSON bodies.
#[tokio::test]
async fn openapi_is_as_strict_as_the_handlers() {
    let api = TestApi::new().await;
    let doc = document(&api).await;
    let param = |path: &str, method: &str, name: &str| {
        doc["paths"][path][method]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{method} {path} has {name}"))["schema"]
            .clone()
    };
    for (path, method, name) in [
        ("/v1/queues/{queue}", "put", "queue"),
        ("/v1/queues/{queue}/messages", "post", "queue"),
        ("/v1/plugins/{name}", "put", "name"),
    ] {
        let schema = param(path, method, name);
        assert_eq!(
            schema["pattern"],
            crate::api::openapi::NAME_PATTERN,
            "{path}"
        );
        assert_eq!(schema["maxLength"], 128, "{path}");
    }
    let topic = param("/v1/topics/{topic}/messages", "post", "topic");
    assert_eq!(topic["pattern"], crate::api::openapi::TOPIC_PATTERN);
    assert_eq!(topic["maxLength"], 128);
    let r = &doc["components"]["schemas"]["RouteIn"];
    assert_eq!(
        r["properties"]["pattern"]["pattern"],
        crate::api::openapi::ROUTE_PATTERN
    );
    assert_eq!(r["required"], json!(["pattern", "queue"]), "{r}");
    assert_eq!(r["properties"]["memory_mb"]["maximum"], 4096);
    assert_eq!(r["allOf"][0]["then"]["required"], json!(["filter"]), "{r}");
    for (path, method) in [
        ("/v1/messages/{id}", "get"),
        ("/v1/messages/{id}/trace", "get"),
        ("/v1/routes/{id}", "get"),
        ("/v1/routes/{id}", "delete"),
        ("/v1/dlq/{id}/replay", "post"),
    ] {
        assert_eq!(
            param(path, method, "id")["pattern"],
            crate::api::openapi::ID_PATTERN
        );
    }
    let m = &doc["components"]["schemas"]["MessageIn"];
    let exactly_one = &m["allOf"][0]["oneOf"];
    assert_eq!(exactly_one[0]["required"], json!(["payload"]), "{m}");
    assert_eq!(exactly_one[1]["required"], json!(["payload_base64"]), "{m}");
    assert_eq!(m["properties"]["priority"]["maximum"], i32::MAX);
    assert_eq!(
        m["properties"]["delay_ms"]["maximum"],
        crate::api::dto::limits::MAX_DELAY_MS
    );
    assert_eq!(m["properties"]["headers"]["maxProperties"], 64);
    assert_eq!(
        doc["components"]["schemas"]["BatchIn"]["properties"]["messages"]["maxItems"],
        api.state.limits.max_batch
    );
    let q = &doc["components"]["schemas"]["QueueConfigPatch"]["properties"];
    assert_eq!(q["concurrency"]["minimum"], 1);
    assert_eq!(q["lease_ms"]["minimum"], crate::model::limits::MIN_LEASE_MS);
    for (path, method) in [
        ("/v1/queues/{queue}/messages", "post"),
        ("/v1/queues/{queue}", "put"),
    ] {
        assert!(
            doc["paths"][path][method]["responses"].get("415").is_some(),
            "{method} {path} documents 415"
        );
    }
    assert!(
        doc["paths"]["/v1/queues"]["get"]["responses"]
            .get("415")
            .is_none()
    );
}

#[tokio::test]
async fn openapi_operations_are_complete() {
    let api = TestApi::new().await;
    let doc = secured_document(&api).await;
    let tags: BTreeSet<&str> = doc["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    let bearer = &doc["components"]["securitySchemes"]["bearer"];
    assert_eq!(
        (&bearer["type"], &bearer["scheme"]),
        (&json!("http"), &json!("bearer"))
    );

    let mut ids = BTreeSet::new();
    for (method, path) in operations(&doc) {
        let op = &doc["paths"][&path][method.to_lowercase()];
        let what = format!("{method} {path}");
        let id = op["operationId"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}"));
        assert!(
            ids.insert(id.to_owned()),
            "{what}: operationId {id} is taken"
        );
        assert!(
            op["summary"].as_str().is_some_and(|s| !s.is_empty()),
            "{what}"
        );
        let op_tags = op["tags"].as_array().unwrap_or_else(|| panic!("{what}"));
        assert!(
            op_tags.iter().all(|t| tags.contains(t.as_str().unwrap())),
            "{what}: {op_tags:?} not among {tags:?}"
        );

        // Security follows the middleware: public paths need nothing, the rest a bearer token
        // with exactly the roles `authorize` lets through.
        let security = op["security"]
            .as_array()
            .unwrap_or_else(|| panic!("{what}"));
        let responses = op["responses"].as_object().unwrap();
        if auth::is_public(&path) {
            assert!(security.is_empty(), "{what}: {security:?}");
        } else {
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            let roles: Vec<&str> = ROLES
                .into_iter()
                .filter(|r| auth::authorize(*r, &method, &sample_path(&path)).is_ok())
                .map(auth::Role::as_str)
                .collect();
            assert_eq!(security, &vec![json!({"bearer": roles})], "{what}");
            assert!(responses.contains_key("401"), "{what}");
        }

        // Every success has a body schema; every error is the one error shape.
        assert!(
            responses.keys().any(|s| s.starts_with('2')),
            "{what}: no success response"
        );
        for (status, response) in responses {
            let response = deref(&doc, response);
            let content = response["content"]
                .as_object()
                .unwrap_or_else(|| panic!("{what} {status}: no content"));
            if status.starts_with('4') || status.starts_with('5') {
                assert_eq!(
                    content["application/json"]["schema"],
                    json!({"$ref": "#/components/schemas/ErrorBody"}),
                    "{what} {status}"
                );
                assert!(
                    response["description"]
                        .as_str()
                        .is_some_and(|d| d.contains('`'))
                );
            } else {
                assert!(
                    content.values().all(|c| c.get("schema").is_some()),
                    "{what}"
                );
            }
        }
    }

    // Limits in the schemas are the ones the code enforces.
    let list = &doc["paths"]["/v1/dlq"]["get"]["parameters"];
    let limit = list
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .unwrap();
    assert_eq!(limit["schema"]["anyOf"][0]["maximum"], MAX_LIMIT);
    assert_eq!(
        doc["components"]["schemas"]["DeadBulkBody"]["properties"]["limit"]["maximum"],
        crate::api::dlq::MAX_BULK
    );
}

// --- schemas against real answers -------------------------------------------------------------

/// The properties and required names of an object schema, through `$ref`s and `allOf` (which
/// is how `#[serde(flatten)]` is described).
fn object_shape(doc: &Value, schema: &Value) -> (BTreeMap<String, Value>, BTreeSet<String>) {
    let schema = deref(doc, schema);
    let mut properties = BTreeMap::new();
    let mut required = BTreeSet::new();
    if let Some(parts) = schema["allOf"].as_array() {
        for part in parts {
            let (p, r) = object_shape(doc, part);
            properties.extend(p);
            required.extend(r);
        }
    }
    if let Some(p) = schema["properties"].as_object() {
        properties.extend(p.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    if let Some(r) = schema["required"].as_array() {
        required.extend(r.iter().map(|n| n.as_str().unwrap().to_owned()));
    }
    (properties, required)
}

fn type_matches(ty: &str, v: &Value) -> bool {
    match ty {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "string" => v.is_string(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        other => panic!("unexpected schema type {other}"),
    }
}

/// Checks `v` against `schema` strictly: an object may hold only the properties its schema
/// names, so a field a handler sends but the document leaves out is an error too.
fn conforms(doc: &Value, schema: &Value, v: &Value, at: &str) -> Result<(), String> {
    let schema = deref(doc, schema);
    if let Some(branches) = schema["oneOf"].as_array() {
        return if branches.iter().any(|b| conforms(doc, b, v, at).is_ok()) {
            Ok(())
        } else {
            Err(format!("{at}: {v} matches no branch of {schema}"))
        };
    }
    match &schema["type"] {
        Value::String(ty) if !type_matches(ty, v) => {
            return Err(format!("{at}: {v} is not {ty}"));
        }
        Value::Array(types) if !types.iter().any(|t| type_matches(t.as_str().unwrap(), v)) => {
            return Err(format!("{at}: {v} is none of {types:?}"));
        }
        _ => {}
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(v)
    {
        return Err(format!("{at}: {v} is not one of {allowed:?}"));
    }
    match v {
        Value::Array(items) => {
            if let Some(item) = schema.get("items") {
                for (i, x) in items.iter().enumerate() {
                    conforms(doc, item, x, &format!("{at}[{i}]"))?;
                }
            }
        }
        // A schema without properties (`{}`, a free-form `object`) takes any object, unless
        // it describes a map by its values.
        Value::Object(map)
            if schema.get("properties").is_some()
                || schema.get("allOf").is_some()
                || schema.get("additionalProperties").is_some() =>
        {
            let (properties, required) = object_shape(doc, schema);
            for name in &required {
                if !map.contains_key(name) {
                    return Err(format!("{at}: required {name} is missing from {v}"));
                }
            }
            for (key, value) in map {
                let at = format!("{at}.{key}");
                match (properties.get(key), schema.get("additionalProperties")) {
                    (Some(s), _) => conforms(doc, s, value, &at)?,
                    (None, Some(s)) if s.is_object() => conforms(doc, s, value, &at)?,
                    _ => return Err(format!("{at} is not in the schema")),
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// Sends a request and checks the answer against the schema documented for its status.
async fn check(api: &TestApi, doc: &Value, method: &str, uri: &str, body: Vec<u8>) -> Value {
    let path = documented_path(doc, uri);
    let r = raw(api, method, uri, body).await;
    let what = format!("{method} {uri} -> {}", r.status);
    let response = &doc["paths"][&path][method.to_lowercase()]["responses"][r.status.as_str()];
    assert!(!response.is_null(), "{what}: status not documented");
    let response = deref(doc, response);
    let schema = &response["content"]["application/json"]["schema"];
    assert!(!schema.is_null(), "{what}: no JSON schema");
    let json = r.json();
    if let Err(e) = conforms(doc, schema, &json, "body") {
        panic!("{what}: {e}");
    }
    json
}

/// The documented path template that `uri` (without query) fills.
fn documented_path(doc: &Value, uri: &str) -> String {
    let uri = uri.split('?').next().unwrap();
    let want: Vec<&str> = uri.split('/').collect();
    let mut matches: Vec<&String> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .filter(|p| {
            let segments: Vec<&str> = p.split('/').collect();
            segments.len() == want.len()
                && segments
                    .iter()
                    .zip(&want)
                    .all(|(s, w)| s == w || s.starts_with('{'))
        })
        .collect();
    // A literal segment wins over a parameter (`/v1/dlq/replay` over `/v1/dlq/{id}`).
    matches.sort_by_key(|p| p.matches('{').count());
    matches
        .first()
        .map(|p| (*p).clone())
        .unwrap_or_else(|| panic!("{uri} is not documented"))
}

#[tokio::test]
async fn answers_match_their_documented_schemas() {
    let api = TestApi::new().await;
    let doc = document(&api).await;
    let json = |v: Value| v.to_string().into_bytes();

    for probe in ["/healthz", "/readyz"] {
        check(&api, &doc, "GET", probe, Vec::new()).await;
    }

    // Queues: created (201), changed (200), read, listed.
    check(&api, &doc, "PUT", "/v1/queues/q", Vec::new()).await;
    let body = json(json!({"handler": null, "concurrency": 2, "default_ttl_ms": 60000}));
    check(&api, &doc, "PUT", "/v1/queues/q", body).await;
    check(&api, &doc, "GET", "/v1/queues/q", Vec::new()).await;
    check(&api, &doc, "GET", "/v1/queues", Vec::new()).await;

    // Messages with every optional field set, one raw, a batch.
    let full = json!({"payload": {"n": 1}, "priority": 3, "delay_ms": 60000,
        "idempotency_key": "k1", "ttl_ms": 5000, "headers": {"h": "v"}, "topic": "t.x",
        "correlation_id": "c1"});
    let out = check(&api, &doc, "POST", "/v1/queues/q/messages", json(full)).await;
    let id = out["ids"][0].as_str().unwrap().to_owned();
    let raw_bytes = json!({"payload_base64": "AAEC"});
    check(&api, &doc, "POST", "/v1/queues/q/messages", json(raw_bytes)).await;
    let batch = json!({"messages": [{"payload": null}, {"payload": [1, 2]}]});
    check(&api, &doc, "POST", "/v1/queues/q/messages", json(batch)).await;
    check(&api, &doc, "GET", &format!("/v1/messages/{id}"), Vec::new()).await;
    check(
        &api,
        &doc,
        "GET",
        "/v1/queues/q/messages?limit=2",
        Vec::new(),
    )
    .await;
    check(
        &api,
        &doc,
        "DELETE",
        &format!("/v1/messages/{id}"),
        Vec::new(),
    )
    .await;
    check(&api, &doc, "GET", &format!("/v1/messages/{id}"), Vec::new()).await;

    // Dead letters, one by one and in bulk.
    let a = api.dead_letter("q", ErrorCategory::Trap).await;
    let b = api.dead_letter("q", ErrorCategory::Fuel).await;
    check(&api, &doc, "GET", "/v1/dlq?queue=q", Vec::new()).await;
    check(
        &api,
        &doc,
        "POST",
        &format!("/v1/dlq/{a}/reviewed"),
        Vec::new(),
    )
    .await;
    check(&api, &doc, "GET", &format!("/v1/messages/{a}"), Vec::new()).await;
    check(
        &api,
        &doc,
        "POST",
        &format!("/v1/dlq/{a}/replay"),
        Vec::new(),
    )
    .await;
    check(&api, &doc, "DELETE", &format!("/v1/dlq/{b}"), Vec::new()).await;
    api.dead_letter("q", ErrorCategory::Timeout).await;
    let filter = json(json!({"queue": "q", "category": "timeout", "limit": 5}));
    check(&api, &doc, "POST", "/v1/dlq/replay", filter).await;
    check(&api, &doc, "POST", "/v1/dlq/purge", Vec::new()).await;

    // Routes, publishing through them, a trace; then their errors.
    let route = json(json!({"pattern": "t.#", "queue": "q", "headers": {"h": "v"}}));
    let out = check(&api, &doc, "POST", "/v1/routes", route.clone()).await;
    let route_id = out["id"].as_str().unwrap().to_owned();
    check(&api, &doc, "POST", "/v1/routes", route).await;
    check(&api, &doc, "GET", "/v1/routes", Vec::new()).await;
    check(
        &api,
        &doc,
        "GET",
        &format!("/v1/routes/{route_id}"),
        Vec::new(),
    )
    .await;
    let msg = json(json!({"payload": 1, "headers": {"h": "v"}, "correlation_id": "c"}));
    let out = check(&api, &doc, "POST", "/v1/topics/t.a/messages", msg).await;
    let published = out["ids"][0].as_str().unwrap().to_owned();
    let trace = format!("/v1/messages/{published}/trace");
    check(&api, &doc, "GET", &trace, Vec::new()).await;
    let c = api.dead_letter("q", ErrorCategory::Trap).await;
    let replay = format!("/v1/dlq/{c}/replay?skip_filter=true");
    check(&api, &doc, "POST", &replay, Vec::new()).await;
    check(
        &api,
        &doc,
        "POST",
        "/v1/topics/none/messages",
        json(json!({"payload": 1})),
    )
    .await;
    check(
        &api,
        &doc,
        "POST",
        "/v1/topics/a..b/messages",
        json(json!({"payload": 1})),
    )
    .await;
    let bad = json(json!({"pattern": "t.#", "queue": "ghost"}));
    check(&api, &doc, "POST", "/v1/routes", bad).await;
    check(&api, &doc, "DELETE", "/v1/queues/q?force=false", Vec::new()).await;
    check(
        &api,
        &doc,
        "DELETE",
        &format!("/v1/routes/{route_id}"),
        Vec::new(),
    )
    .await;
    check(
        &api,
        &doc,
        "GET",
        &format!("/v1/routes/{route_id}"),
        Vec::new(),
    )
    .await;
    check(&api, &doc, "GET", "/v1/messages/999/trace", Vec::new()).await;

    // Plugins: two versions, a rollback; the queue's stats now have live figures to show.
    let wasm = echo_wasm();
    check(&api, &doc, "PUT", "/v1/plugins/echo", wasm.clone()).await;
    let mut v2 = wasm;
    v2.extend_from_slice(&[0x00, 0x04, 0x03, b'a', b'b', b'c']);
    check(&api, &doc, "PUT", "/v1/plugins/echo", v2).await;
    check(&api, &doc, "GET", "/v1/plugins", Vec::new()).await;
    check(&api, &doc, "POST", "/v1/plugins/echo/rollback", Vec::new()).await;
    check(&api, &doc, "PUT", "/v1/plugins/echo", echo_wasm()).await;
    let activate = "/v1/plugins/echo/versions/2/activate";
    check(&api, &doc, "POST", activate, Vec::new()).await;
    check(&api, &doc, "GET", "/v1/plugins/echo", Vec::new()).await;
    let reset = "/v1/queues/q/breaker/reset";
    check(&api, &doc, "POST", reset, Vec::new()).await;

    // Deletions: refused while in use or holding messages, then done.
    check(
        &api,
        &doc,
        "PUT",
        "/v1/queues/uses",
        json(json!({"handler": "echo"})),
    )
    .await;
    check(&api, &doc, "DELETE", "/v1/plugins/echo", Vec::new()).await;
    check(&api, &doc, "DELETE", "/v1/queues/q", Vec::new()).await;
    check(&api, &doc, "DELETE", "/v1/queues/q?force=true", Vec::new()).await;
    check(&api, &doc, "DELETE", "/v1/queues/uses", Vec::new()).await;
    check(&api, &doc, "DELETE", "/v1/plugins/echo", Vec::new()).await;

    // Integrity checks, quick and full.
    check(&api, &doc, "POST", "/v1/admin/check", Vec::new()).await;
    check(
        &api,
        &doc,
        "POST",
        "/v1/admin/check",
        json(json!({"full": true})),
    )
    .await;
    check(&api, &doc, "GET", "/readyz", Vec::new()).await;

    // Errors are the documented shape under their documented statuses.
    check(&api, &doc, "GET", "/v1/queues/nope", Vec::new()).await;
    check(&api, &doc, "GET", "/v1/messages/abc", Vec::new()).await;
    check(&api, &doc, "POST", "/v1/queues/q/messages", b"{".to_vec()).await;
    check(
        &api,
        &doc,
        "DELETE",
        &format!("/v1/messages/{id}"),
        Vec::new(),
    )
    .await;
    check(&api, &doc, "POST", "/v1/plugins/ghost/rollback", Vec::new()).await;
    check(&api, &doc, "GET", "/v1/plugins/ghost", Vec::new()).await;
    check(&api, &doc, "DELETE", "/v1/plugins/ghost", Vec::new()).await;
    let missing = "/v1/plugins/ghost/versions/1/activate";
    check(&api, &doc, "POST", missing, Vec::new()).await;
    check(&api, &doc, "DELETE", "/v1/queues/ghost", Vec::new()).await;
    let reset = "/v1/queues/ghost/breaker/reset";
    check(&api, &doc, "POST", reset, Vec::new()).await;
    check(&api, &doc, "PUT", "/v1/plugins/p", b"not wasm".to_vec()).await;

    // `/metrics` is text, in the documented content type.
    let r = raw(&api, "GET", "/metrics", Vec::new()).await;
    assert_eq!(r.status, StatusCode::OK);
    let documented = doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
        .as_object()
        .unwrap();
    assert!(
        documented.contains_key(&r.content_type),
        "{}",
        r.content_type
    );
}

#[test]
fn validator_refuses_undocumented_fields() {
    let doc = json!({"components": {"schemas": {"A": {"type": "object", "required": ["x"],
        "properties": {"x": {"type": "integer"}, "y": {"type": ["string", "null"]}}}}}});
    let schema = json!({"$ref": "#/components/schemas/A"});
    assert!(conforms(&doc, &schema, &json!({"x": 1, "y": null}), "b").is_ok());
    assert!(conforms(&doc, &schema, &json!({"x": 1, "z": 2}), "b").is_err());
    assert!(conforms(&doc, &schema, &json!({"y": "s"}), "b").is_err());
    assert!(conforms(&doc, &schema, &json!({"x": "1"}), "b").is_err());
}

//! What the dashboard needs of the API: who the caller is, which routes a topic reaches, a
//! search by idempotency key, and the embedded assets.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt as _;
use serde_json::json;
use tower::ServiceExt as _;

use super::{TestApi, assert_error};

#[tokio::test]
async fn whoami_without_tokens_is_the_local_admin() {
    let api = TestApi::new().await;
    let r = api.get("/v1/whoami").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.json,
        json!({"tokens_required": false, "name": null, "role": "admin"})
    );
}

#[tokio::test]
async fn a_topic_reaches_its_matching_routes_and_then_the_fallback() {
    let api = TestApi::new().await;
    api.create_queue("all").await;
    api.create_queue("orders.eu").await;
    let r = api
        .post_json(
            "/v1/routes",
            json!({"pattern": "orders.#", "queue": "all",
                                         "headers": {"region": "eu"}}),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);

    let r = api.get("/v1/topics/orders.eu/routes").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    assert_eq!(r.json["topic"], "orders.eu");
    assert_eq!(r.json["routes"].as_array().unwrap().len(), 1);
    assert_eq!(r.json["routes"][0]["queue"], "all");
    assert_eq!(r.json["routes"][0]["headers"], json!({"region": "eu"}));
    assert_eq!(
        r.json["otherwise"],
        json!({"outcome": "implicit", "queue": "orders.eu"})
    );

    let r = api.get("/v1/topics/billing/routes").await;
    assert_eq!(r.json["routes"], json!([]));
    assert_eq!(r.json["otherwise"], json!({"outcome": "refused"}));

    let r = api.get("/v1/topics/orders.*/routes").await;
    assert_error(&r, StatusCode::BAD_REQUEST, "invalid_topic");
    assert_eq!(
        api.enqueued_total("all").await,
        0,
        "asking publishes nothing"
    );
}

#[tokio::test]
async fn messages_are_found_by_idempotency_key() {
    let api = TestApi::new().await;
    api.create_queue("q").await;
    let keyed = api
        .enqueue("q", json!({"payload": 1, "idempotency_key": "order-42"}))
        .await;
    api.enqueue("q", json!({"payload": 2, "idempotency_key": "order-43"}))
        .await;
    api.enqueue("q", json!({"payload": 3})).await;
    let id = keyed.json["ids"][0].clone();

    let r = api
        .get("/v1/queues/q/messages?idempotency_key=order-42")
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.json);
    let items = r.json["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], id);
    assert_eq!(items[0]["idempotency_key"], "order-42");

    let r = api
        .get("/v1/queues/q/messages?idempotency_key=order-42&state=dead")
        .await;
    assert_eq!(r.json["items"], json!([]));
    let r = api.get("/v1/queues/q/messages?idempotency_key=nope").await;
    assert_eq!(r.json["items"], json!([]));
    // Empty means not given, as for every query parameter.
    let r = api.get("/v1/queues/q/messages?idempotency_key=").await;
    assert_eq!(r.json["items"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn the_dashboard_is_served_with_a_strict_content_security_policy() {
    let api = TestApi::new().await;
    for (path, kind) in [
        ("/ui/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
        ("/ui/uplot.min.js", "text/javascript"),
    ] {
        let req = Request::builder().uri(path).body(Body::empty()).unwrap();
        let resp = api.app.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let headers = resp.headers();
        assert!(
            headers[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with(kind),
            "{path}"
        );
        let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(!body.is_empty(), "{path}");
    }
    let req = Request::builder().uri("/ui").body(Body::empty()).unwrap();
    let resp = api.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(resp.headers()[header::LOCATION], "/ui/");
    let req = Request::builder()
        .uri("/ui/secret.txt")
        .body(Body::empty())
        .unwrap();
    let resp = api.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let req = Request::builder()
        .method(Method::POST)
        .uri("/ui/app.js")
        .body(Body::empty())
        .unwrap();
    let resp = api.app.clone().oneshot(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
}

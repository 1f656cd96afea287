//! Middleware every request passes before its handler: authentication and authorization
//! (see [`crate::auth`]), and the limits that do not belong to one endpoint (header count and
//! size, and how long a request may run).

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;

use super::ApiLimits;
use super::error::ApiError;
use crate::auth::{self, Principal, Tokens};

/// Most request headers accepted.
pub const MAX_HEADER_COUNT: usize = 64;
/// Largest total size of the request headers (names and values).
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// Most bytes of a refused request's body read and thrown away, so the client gets to read the
/// refusal (closing a socket with unread data resets it, and the client sees only a broken
/// pipe). A larger body gets the refusal with `Connection: close` instead.
const MAX_DRAIN_BYTES: usize = 64 * 1024 * 1024;

/// Authenticates the bearer token and checks the role may make this request; handlers find
/// the [`Principal`] in the request's extensions.
pub async fn authenticate(
    State(tokens): State<Arc<Tokens>>,
    mut req: Request,
    next: Next,
) -> Response {
    match principal(&tokens, &req) {
        Ok(principal) => {
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
        Err(refusal) => {
            let mut response = refusal.into_response();
            if response.status() == StatusCode::UNAUTHORIZED {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"spool\""),
                );
            }
            // The request timeout (the `limit` layer, outside this one) bounds the drain; a
            // body announced larger than the drain would read is not waited for at all.
            let drained = match announced_length(&req) {
                Some(n) if n > MAX_DRAIN_BYTES as u64 => false,
                _ => drain(req.into_body(), MAX_DRAIN_BYTES).await,
            };
            if !drained {
                close_after(&mut response);
            }
            response
        }
    }
}

/// Who `req` comes from, or why it may not proceed.
fn principal(tokens: &Tokens, req: &Request) -> Result<Principal, ApiError> {
    let path = req.uri().path();
    // Two credentials are ambiguous: whichever one a proxy or the server picked, the other
    // party might have picked the other.
    if req
        .headers()
        .get_all(header::AUTHORIZATION)
        .iter()
        .nth(1)
        .is_some()
    {
        return Err(ApiError::invalid(
            "the request has more than one Authorization header; send exactly one \
             (`Authorization: Bearer <token>`)",
        ));
    }
    if tokens.is_empty() {
        return Ok(Principal::local_admin());
    }
    if auth::is_public(path) {
        return Ok(Principal {
            name: None,
            role: auth::Role::Reader,
        });
    }
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Err(unauthorized(
            "this server requires a token: send `Authorization: Bearer <token>` \
             (with the CLI: --token or SPOOL_TOKEN)",
        ));
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let Some(token) = token else {
        return Err(unauthorized(
            "the Authorization header must be `Bearer <token>`",
        ));
    };
    let Some(principal) = tokens.authenticate(token) else {
        return Err(unauthorized(
            "the token is not valid on this server; check --token / SPOOL_TOKEN \
             and the [[auth.tokens]] of its spool.toml",
        ));
    };
    auth::authorize(principal.role, req.method(), path)
        .map_err(|message| ApiError::new(StatusCode::FORBIDDEN, "forbidden", message))?;
    Ok(principal)
}

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

/// Reads and discards `body`; false if it was larger than `max` or broke off.
async fn drain(body: axum::body::Body, max: usize) -> bool {
    let mut stream = body.into_data_stream();
    let mut seen = 0usize;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(bytes) => {
                seen = seen.saturating_add(bytes.len());
                if seen > max {
                    return false;
                }
            }
            Err(_) => return false,
        }
    }
    true
}

/// Marks `response` as the connection's last: used when the request body was not read.
fn close_after(response: &mut Response) {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
}

/// A refusal sent before the request body was read (the header limits): the connection is
/// closed after it.
fn refused(error: ApiError) -> Response {
    let mut response = error.into_response();
    close_after(&mut response);
    response
}

/// Refuses oversized header sets with 431 and bodies announced larger than the route takes
/// with 413, before authentication and without reading anything, and answers 503 for a
/// request still running after `request_timeout` (its handler is dropped; store operations
/// already sent complete on their own).
pub async fn limit(State(limits): State<ApiLimits>, req: Request, next: Next) -> Response {
    let timeout = limits.request_timeout;
    let headers = req.headers();
    if headers.len() > MAX_HEADER_COUNT {
        return refused(ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!(
                "the request has {} headers; at most {MAX_HEADER_COUNT} are accepted",
                headers.len()
            ),
        ));
    }
    let bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if bytes > MAX_HEADER_BYTES {
        return refused(ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!(
                "the request headers are {bytes} bytes; at most {MAX_HEADER_BYTES} are accepted"
            ),
        ));
    }
    // The router matched the route before this layer runs (it wraps each route), so the
    // route's own limit applies. Waiting for a body that will be refused anyway would hold the
    // connection until the request timeout.
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(MatchedPath::as_str);
    let max = limits.body_limit(req.method(), route);
    if let Some(announced) = announced_length(&req)
        && announced > max as u64
    {
        return refused(ApiError::too_large(format!(
            "the request announces a body of {announced} bytes (Content-Length); this endpoint \
             accepts at most {max}: send less data per request (split batches, or raise the \
             server's [limits])"
        )));
    }
    match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "request_timeout",
            format!(
                "the request took longer than {}s and was abandoned; retry later \
                 (the limit is [limits] request_timeout)",
                timeout.as_secs_f64()
            ),
        )
        .into_response(),
    }
}

/// The body length the request announces, if it announces one that parses.
fn announced_length(req: &Request) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use axum::Router;
    use axum::body::Body;
    use axum::http::Request as HttpRequest;
    use axum::middleware::from_fn_with_state;
    use axum::routing::get;
    use tower::ServiceExt;

    use std::time::Duration;

    use super::*;
    use crate::auth::{Role, TokenEntry, hash_token};

    fn app(tokens: Tokens, timeout: Duration) -> Router {
        Router::new()
            .route("/v1/queues", get(|| async { "ok" }).post(|| async { "ok" }))
            .route("/healthz", get(|| async { "ok" }))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "late"
                }),
            )
            .layer(from_fn_with_state(Arc::new(tokens), authenticate))
            .layer(from_fn_with_state(
                ApiLimits {
                    request_timeout: timeout,
                    ..ApiLimits::default()
                },
                limit,
            ))
    }

    fn tokens() -> Tokens {
        Tokens::new(vec![
            TokenEntry::new("ops", Role::Admin, &hash_token("a")).unwrap(),
            TokenEntry::new("dash", Role::Reader, &hash_token("r")).unwrap(),
        ])
    }

    async fn status(app: &Router, method: &str, path: &str, auth: Option<&str>) -> u16 {
        let mut req = HttpRequest::builder().method(method).uri(path);
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = app
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        resp.status().as_u16()
    }

    #[tokio::test]
    async fn bearer_tokens_and_roles() {
        let app = app(tokens(), Duration::from_secs(5));
        assert_eq!(status(&app, "GET", "/v1/queues", None).await, 401);
        assert_eq!(
            status(&app, "GET", "/v1/queues", Some("Basic YTph")).await,
            401
        );
        assert_eq!(
            status(&app, "GET", "/v1/queues", Some("Bearer x")).await,
            401
        );
        assert_eq!(
            status(&app, "GET", "/v1/queues", Some("Bearer a")).await,
            200
        );
        assert_eq!(
            status(&app, "GET", "/v1/queues", Some("bearer r")).await,
            200
        );
        assert_eq!(
            status(&app, "POST", "/v1/queues", Some("Bearer r")).await,
            403
        );
        assert_eq!(
            status(&app, "POST", "/v1/queues", Some("Bearer a")).await,
            200
        );
        assert_eq!(status(&app, "GET", "/healthz", None).await, 200);
    }

    #[tokio::test]
    async fn two_authorization_headers_are_refused() {
        for tokens in [tokens(), Tokens::default()] {
            let req = HttpRequest::builder()
                .uri("/v1/queues")
                .header("authorization", "Bearer a")
                .header("authorization", "Bearer r")
                .body(Body::empty())
                .unwrap();
            let resp = app(tokens, Duration::from_secs(5))
                .oneshot(req)
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        }
    }

    #[tokio::test]
    async fn without_tokens_everything_is_open() {
        let app = app(Tokens::default(), Duration::from_secs(5));
        assert_eq!(status(&app, "POST", "/v1/queues", None).await, 200);
    }

    #[tokio::test]
    async fn header_limits_and_timeout() {
        let app = app(Tokens::default(), Duration::from_millis(50));
        let mut req = HttpRequest::builder().uri("/v1/queues");
        for i in 0..=MAX_HEADER_COUNT {
            req = req.header(format!("x-h{i}"), "1");
        }
        let resp = app
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);

        let req = HttpRequest::builder()
            .uri("/v1/queues")
            .header("x-big", "v".repeat(MAX_HEADER_BYTES + 1))
            .body(Body::empty())
            .unwrap();
        let resp = app.clone().oneshot(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);

        assert_eq!(status(&app, "GET", "/slow", None).await, 503);
    }
}

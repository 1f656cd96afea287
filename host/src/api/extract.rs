//! Extractors whose rejections are [`ApiError`]s, so a malformed request gets the same JSON error
//! shape as every other failure instead of axum's plain-text bodies.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Path parameters (`axum::extract::Path` with JSON rejections).
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// Query parameters (`axum::extract::Query` with JSON rejections).
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// The raw body, limited by the route's `DefaultBodyLimit`; exceeding it is a JSON 413.
#[derive(Debug)]
pub struct ApiBytes(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for ApiBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Ok(ApiBytes(Bytes::from_request(req, state).await?))
    }
}

/// A JSON body. Unlike `axum::Json` it does not insist on a `Content-Type` header: the admin API
/// only speaks JSON, and `curl -d` without `-H` should just work.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let ApiBytes(body) = ApiBytes::from_request(req, state).await?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::invalid(
                "the request body is empty; send a JSON object",
            ));
        }
        parse_json(&body).map(ApiJson)
    }
}

/// Deserializes `bytes`, naming the offending field (as a path like `messages[2].priority`) in
/// the error.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    axum::Json::<T>::from_bytes(bytes)
        .map(|axum::Json(v)| v)
        .map_err(ApiError::from)
}

//! Extractors whose rejections are [`ApiError`]s, so a malformed request gets the same JSON error
//! shape as every other failure instead of axum's plain-text bodies.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{HeaderMap, StatusCode, header};
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

/// The raw body of a JSON endpoint: like [`ApiBytes`], after checking that the request does not
/// declare another media type. A missing `Content-Type` is taken as JSON (the admin API only
/// speaks JSON); a declared one must be `application/json` or `application/<something>+json`,
/// else 415 `unsupported_media_type` — `curl -d` declares a form, so it needs
/// `-H 'content-type: application/json'` (or `curl --json`).
#[derive(Debug)]
pub struct ApiJsonBytes(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for ApiJsonBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        check_json_content_type(req.headers())?;
        let ApiBytes(body) = ApiBytes::from_request(req, state).await?;
        Ok(ApiJsonBytes(body))
    }
}

/// Refuses a declared `Content-Type` that is not JSON; see [`ApiJsonBytes`].
pub fn check_json_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let mut values = headers.get_all(header::CONTENT_TYPE).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return if headers.contains_key(header::CONTENT_TYPE) {
            Err(unsupported("more than one Content-Type header"))
        } else {
            Ok(())
        };
    };
    let essence = value
        .to_str()
        .ok()
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let is_json = essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|sub| sub.ends_with("+json"));
    if is_json {
        Ok(())
    } else {
        Err(unsupported(&format!("Content-Type {value:?}")))
    }
}

fn unsupported(what: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        format!(
            "this endpoint takes a JSON body, but the request declares {what}: send \
             `Content-Type: application/json` or none (with curl: \
             -H 'content-type: application/json', or --json instead of -d)"
        ),
    )
}

/// A JSON body (see [`ApiJsonBytes`] for the `Content-Type` it accepts).
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let ApiJsonBytes(body) = ApiJsonBytes::from_request(req, state).await?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::invalid(
                "the request body is empty; send a JSON object",
            ));
        }
        // serde reads a struct from an array too (`[null, null]` fills fields by position):
        // every JSON body of this API is an object, so anything else is refused here.
        if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::invalid("the request body must be a JSON object"));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn with(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::CONTENT_TYPE, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn json_endpoints_take_json_or_no_content_type() {
        for ok in [
            &[][..],
            &["application/json"],
            &["Application/JSON; charset=utf-8"],
            &["application/merge-patch+json"],
        ] {
            assert!(check_json_content_type(&with(ok)).is_ok(), "{ok:?}");
        }
        for bad in [
            &["application/x-www-form-urlencoded"][..],
            &["text/plain"],
            &["application/jsonx"],
            &["multipart/form-data; boundary=x"],
            &["application/json", "text/plain"],
        ] {
            let e = check_json_content_type(&with(bad)).unwrap_err();
            assert_eq!(e.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{bad:?}");
            assert!(e.message.contains("application/json"), "{}", e.message);
        }
    }
}

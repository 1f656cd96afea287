//! The one error type of the API and its JSON shape, `{"error": {"code", "message"}}`.
//!
//! Every failure a client can see goes through [`ApiError`], including axum's own extractor
//! rejections, so no plain-text body ever leaves the server. Codes are stable identifiers that
//! scripts may match on; messages are for people and say what to do next.

use std::error::Error as _;

use axum::Json;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::plugins::RegistryError;
use crate::router::RouteError;
use crate::store::StoreError;

/// An HTTP error response: status, stable code and a human message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{status} {code}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds for a `Retry-After` header: the condition is expected to pass by itself.
    pub retry_after: Option<u32>,
}

/// `Retry-After` of a write refused because the database cannot be written: long enough not to
/// hammer a full disk, short enough to notice soon after space is freed.
pub const STORAGE_RETRY_AFTER_SECS: u32 = 5;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// Adds a `Retry-After` header of `secs` seconds.
    pub fn retry_after(mut self, secs: u32) -> Self {
        self.retry_after = Some(secs);
        self
    }

    /// A malformed request: the message should name the offending field.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }

    fn internal(context: &str, err: &dyn std::fmt::Display) -> Self {
        // The detail goes to the log only: database errors can expose paths and SQL.
        tracing::error!(error = %err, "{context}");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal server error; the details are in the server log",
        )
    }
}

/// The body of every error response. The OpenAPI document uses this type, so what it
/// describes is what [`ApiError`] sends.
#[derive(Debug, Serialize, ToSchema)]
#[schema(example = json!({"error": {"code": "queue_not_found", "message":
    "queue \"orders\" does not exist; create it with `PUT /v1/queues/orders` or `spool queue create orders`"}}))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable identifier scripts may match on, e.g. `queue_not_found`.
    pub code: &'static str,
    /// What went wrong and what to do next, for people.
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        let message = err.to_string();
        match err {
            StoreError::QueueNotFound(_) => {
                Self::new(StatusCode::NOT_FOUND, "queue_not_found", message)
            }
            StoreError::MessageNotFound(_) => {
                Self::new(StatusCode::NOT_FOUND, "message_not_found", message)
            }
            StoreError::PluginNotFound(_) => {
                Self::new(StatusCode::NOT_FOUND, "plugin_not_found", message)
            }
            StoreError::DeadLetterNotFound(_) => {
                Self::new(StatusCode::NOT_FOUND, "dead_letter_not_found", message)
            }
            StoreError::InvalidState { .. } => {
                Self::new(StatusCode::CONFLICT, "invalid_state", message)
            }
            StoreError::NoPreviousVersion(_) => {
                Self::new(StatusCode::CONFLICT, "no_previous_version", message)
            }
            StoreError::PluginVersionNotFound { .. } => {
                Self::new(StatusCode::NOT_FOUND, "plugin_version_not_found", message)
            }
            StoreError::QueueNotEmpty { .. } => {
                Self::new(StatusCode::CONFLICT, "queue_not_empty", message)
            }
            StoreError::PluginInUse { .. } => {
                Self::new(StatusCode::CONFLICT, "plugin_in_use", message)
            }
            StoreError::QueueHasRoutes { .. } => {
                Self::new(StatusCode::CONFLICT, "queue_has_routes", message)
            }
            StoreError::UploadInterrupted(_) => {
                Self::new(StatusCode::CONFLICT, "upload_interrupted", message)
            }
            StoreError::NotForThisStore(_) => {
                Self::new(StatusCode::CONFLICT, "not_for_this_store", message)
            }
            StoreError::TargetExists(_) => {
                Self::new(StatusCode::CONFLICT, "already_exists", message)
            }
            StoreError::BackupFailed(_) => {
                tracing::warn!(error = %message, "backup failed");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "backup_failed", message)
            }
            StoreError::RouteNotFound(_) => {
                Self::new(StatusCode::NOT_FOUND, "route_not_found", message)
            }
            StoreError::ScheduleNotFound(_) => {
                Self::new(StatusCode::NOT_FOUND, "schedule_not_found", message)
            }
            StoreError::InvalidSchedule(e) => Self::invalid(format!("{}: {e}", e.field())),
            StoreError::WrongWorld(_) => {
                Self::new(StatusCode::BAD_REQUEST, "world_mismatch", message)
            }
            StoreError::Invalid(_) => Self::invalid(message),
            StoreError::InvalidCursor(_) => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_cursor", message)
            }
            StoreError::StorageFull(_) => {
                tracing::warn!(error = %message, "write refused: the database is full");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_full",
                    "the server's database is full (disk space or [store] max_size_bytes), so \
                     nothing was written; retry after Retry-After seconds. Operators: free disk \
                     space next to the database; writes resume by themselves",
                )
                .retry_after(STORAGE_RETRY_AFTER_SECS)
            }
            StoreError::StorageIo(_) => {
                tracing::warn!(error = %message, "write refused: the database cannot be written");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_unavailable",
                    "the server cannot write its database (an I/O error), so nothing was \
                     written; retry after Retry-After seconds. Operators: see the server log",
                )
                .retry_after(STORAGE_RETRY_AFTER_SECS)
            }
            StoreError::Closed => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the server is shutting down; retry shortly",
            ),
            other => Self::internal("store operation failed", &other),
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(err: RegistryError) -> Self {
        let message = err.to_string();
        match err {
            RegistryError::NotFound(_) => {
                Self::new(StatusCode::NOT_FOUND, "plugin_not_found", message)
            }
            RegistryError::InvalidName(_) => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_name", message)
            }
            RegistryError::InvalidComponent(_) => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_plugin", message)
            }
            RegistryError::WrongWorld(_) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "wrong_world", message)
            }
            RegistryError::NotGranted(_) => {
                Self::new(StatusCode::BAD_REQUEST, "capability_not_granted", message)
            }
            RegistryError::InvalidGrant(_) => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
            }
            RegistryError::Store(store) => store.into(),
            other => Self::internal("plugin registry operation failed", &other),
        }
    }
}

impl From<RouteError> for ApiError {
    fn from(err: RouteError) -> Self {
        let message = err.to_string();
        match err {
            RouteError::InvalidTopic(_) => {
                Self::new(StatusCode::BAD_REQUEST, "invalid_topic", message)
            }
            RouteError::InvalidRoute(_) => Self::invalid(message),
            RouteError::NoRoute { .. } => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "no_route", message)
            }
            RouteError::ChainTooDeep { .. } => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "chain_too_deep", message)
            }
            RouteError::FilterFailed(_) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "filter_failed", message)
            }
            RouteError::Store(store) => store.into(),
        }
    }
}

/// Body-buffering failures: the only one a client causes is exceeding the route's size limit.
impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::too_large(
                "the request body is larger than this endpoint accepts; send less data per request \
                 (split batches, or raise the server's limit)",
            )
        } else {
            Self::new(
                rejection.status(),
                "invalid_body",
                format!("could not read the request body: {}", rejection.body_text()),
            )
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        // The source is serde_path_to_error's error, whose text starts with the field path
        // (e.g. `messages[2].priority: invalid type ...`), which is what the user needs.
        let detail = rejection
            .source()
            .map(|s| s.to_string())
            .unwrap_or_else(|| rejection.body_text());
        match rejection {
            JsonRejection::JsonDataError(_) => {
                Self::invalid(format!("invalid request body: {detail}"))
            }
            JsonRejection::JsonSyntaxError(_) => Self::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("the request body is not valid JSON: {detail}"),
            ),
            JsonRejection::BytesRejection(b) => b.into(),
            other => Self::invalid(other.body_text()),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::invalid(format!("invalid path: {}", rejection.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        let detail = rejection
            .source()
            .map(|s| s.to_string())
            .unwrap_or_else(|| rejection.body_text());
        Self::invalid(format!("invalid query string: {detail}"))
    }
}

/// Answer for routes that do not exist.
pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "no such endpoint: {}; the admin API lives under /v1",
            uri.path()
        ),
    )
}

/// Answer for known routes called with a method they do not support. axum still adds the
/// `Allow` header listing the methods that would work.
pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{method} is not supported on {}; the Allow header lists the methods that are",
            uri.path()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_side_failures_do_not_leak_details() {
        let e = ApiError::from(StoreError::Database("disk I/O at /var/lib/x.db".into()));
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(e.code, "internal");
        assert!(!e.message.contains("/var/lib"), "{}", e.message);

        let e = ApiError::from(StoreError::Closed);
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.code, "unavailable");
    }

    #[test]
    fn a_full_database_asks_to_retry_later() {
        let e = ApiError::from(StoreError::StorageFull(
            "commit: database or disk is full".into(),
        ));
        assert_eq!(
            (e.status, e.code, e.retry_after),
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_full",
                Some(STORAGE_RETRY_AFTER_SECS)
            )
        );
        let response = e.into_response();
        assert_eq!(
            response.headers()[axum::http::header::RETRY_AFTER],
            STORAGE_RETRY_AFTER_SECS.to_string()
        );
        let e = ApiError::from(StoreError::StorageIo("disk I/O error".into()));
        assert_eq!(
            (e.status, e.code),
            (StatusCode::SERVICE_UNAVAILABLE, "storage_unavailable")
        );
    }
}

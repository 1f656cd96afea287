//! Liveness and readiness probes.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::dto::{IntegrityOut, rfc3339};
use super::error::{ApiError, ErrorBody, ErrorDetail};
use super::openapi::tags;
use crate::store::{CheckOutcome, StoreError};

/// What a probe answers when all is well.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatusOut {
    /// Always `ok`.
    #[schema(example = "ok")]
    pub status: &'static str,
}

const OK: StatusOut = StatusOut { status: "ok" };

/// `GET /healthz`: the process is up and serving HTTP.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = tags::HEALTH,
    operation_id = "healthz",
    summary = "Liveness: the process is up",
    description = "Answers as long as the server serves HTTP, whatever the state of its store. \
                   Needs no token.",
    responses((status = 200, description = "The process is up.", body = StatusOut)),
)]
pub async fn healthz() -> Json<StatusOut> {
    Json(OK)
}

/// What `/readyz` reports besides its status: what a load balancer ignores and an operator
/// reads.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyDetail {
    pub storage: StorageOut,
    /// The last integrity check of the database file (at start, or `POST /v1/admin/check`);
    /// `null` when none ran (`[store] startup_check = "off"`).
    pub integrity: Option<IntegrityOut>,
    /// Queues whose messages wait because their handler plugin is missing, is not a handler or
    /// cannot be loaded (paused and handler-less queues are left out: that is on purpose).
    pub queues_waiting: Vec<QueueWaitingOut>,
}

/// Whether writes to the database succeed.
#[derive(Debug, Serialize, ToSchema)]
pub struct StorageOut {
    pub writable: bool,
    /// Why not: `full` (the disk or `[store] max_size_bytes`) or `io` (an I/O error).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<&'static str>,
    /// Since when writes fail (Unix ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failing_since_ms: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QueueWaitingOut {
    pub queue: String,
    /// `plugin_missing`, `not_a_handler` or `plugin_unloadable`.
    pub cause: &'static str,
    pub reason: String,
}

/// `/readyz` when ready.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReadyOut {
    /// Always `ok`.
    #[schema(example = "ok")]
    pub status: &'static str,
    pub detail: ReadyDetail,
}

/// `/readyz` when not ready: the usual error body ([`ErrorBody`], as the OpenAPI document
/// says), plus `status` and the same detail as when ready.
#[derive(Debug, Serialize, ToSchema)]
pub struct NotReadyOut {
    pub error: ErrorDetail,
    /// Always `not_ready`.
    #[schema(example = "not_ready")]
    pub status: &'static str,
    pub detail: ReadyDetail,
}

/// `GET /readyz`: the store answers and can be written, its file passed its last integrity
/// check, and the plugin runtime runs, so requests can succeed. 503 otherwise (and while
/// shutting down), so a load balancer takes this host out of rotation.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = tags::HEALTH,
    operation_id = "readyz",
    summary = "Readiness: the store answers and can be written, and the plugin runtime runs",
    description = "200 when the store answers and accepts writes, the database file passed its \
                   last integrity check and the plugin runtime runs, so requests can succeed; \
                   503 otherwise (also while shutting down), so a load balancer takes this host \
                   out of rotation. While writes fail, each call makes one small write to learn \
                   whether they work again, so readiness returns by itself once space is freed. \
                   `detail` reports storage, the last integrity check and queues waiting for \
                   their plugin. Needs no token.",
    responses(
        (status = 200, description = "Ready.", body = ReadyOut),
        (status = 503, description = "`storage_full`: the database cannot grow (disk full or \
                                      `[store] max_size_bytes`), with `Retry-After`; \
                                      `storage_unavailable`: writes fail with I/O errors; \
                                      `database_damaged`: the last integrity check found \
                                      damage; `not_ready`: the store is not answering or the \
                                      plugin runtime stopped (see the server log); \
                                      `shutting_down`: the server is draining; \
                                      `request_timeout`: the check took too long. Besides \
                                      `error`, the body has `status` (`not_ready`) and the \
                                      same `detail` as a 200.",
         body = ErrorBody),
    ),
)]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let write_failure = state.store.write_failure().await;
    let last_check = state.store.last_check();
    let detail = ReadyDetail {
        storage: StorageOut {
            writable: write_failure.is_none(),
            cause: write_failure
                .as_ref()
                .map(|f| if f.full { "full" } else { "io" }),
            failing_since_ms: write_failure.as_ref().map(|f| f.since_ms),
        },
        integrity: last_check.clone().map(IntegrityOut::new),
        queues_waiting: state
            .dispatcher
            .all_waiting()
            .into_iter()
            .filter(|(_, w)| w.cause.is_fault())
            .map(|(queue, w)| QueueWaitingOut {
                queue,
                cause: w.cause.as_str(),
                reason: w.reason,
            })
            .collect(),
    };
    let not_ready = |error: ApiError, detail| {
        let retry_after = error.retry_after;
        let body = NotReadyOut {
            error: ErrorDetail {
                code: error.code,
                message: error.message,
            },
            status: "not_ready",
            detail,
        };
        let mut response = (error.status, Json(body)).into_response();
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        response
    };
    if !state.registry.runtime().is_up() {
        tracing::error!("readiness check failed: the plugin runtime's epoch ticker has stopped");
        return not_ready(
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "the plugin runtime is not running; see the server log",
            ),
            detail,
        );
    }
    if state.dispatcher.is_stopping() {
        return not_ready(
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the server is shutting down and no longer takes work",
            ),
            detail,
        );
    }
    if let Err(e) = state.store.ping().await {
        tracing::warn!(error = %e, "readiness check failed");
        return not_ready(
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "the store is not answering; see the server log",
            ),
            detail,
        );
    }
    if let Some(f) = &write_failure {
        let e = if f.full {
            StoreError::StorageFull(f.message.clone())
        } else {
            StoreError::StorageIo(f.message.clone())
        };
        return not_ready(ApiError::from(e), detail);
    }
    if let Some(r) = last_check.filter(|r| r.outcome == CheckOutcome::Damaged) {
        return not_ready(
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_damaged",
                format!(
                    "the integrity check of {} found the database damaged; restore a backup \
                     (see `detail.integrity` and docs/CLI.md, `spool check`)",
                    rfc3339(r.checked_at_ms)
                ),
            ),
            detail,
        );
    }
    Json(ReadyOut {
        status: "ok",
        detail,
    })
    .into_response()
}

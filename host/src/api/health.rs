//! Liveness and readiness probes.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::openapi::tags;

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

/// `GET /readyz`: the store answers and the plugin runtime runs, so requests can succeed. 503
/// otherwise (and while shutting down), so a load balancer takes this host out of rotation.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = tags::HEALTH,
    operation_id = "readyz",
    summary = "Readiness: the store answers and the plugin runtime runs",
    description = "200 when the store answers and the plugin runtime runs, so requests can \
                   succeed; 503 otherwise (also while shutting down), so a load balancer takes \
                   this host out of rotation. Needs no token.",
    responses(
        (status = 200, description = "The store answers.", body = StatusOut),
        (status = 503, description = "`not_ready`: the store is not answering or the plugin \
                                      runtime stopped (see the server log); `shutting_down`: the \
                                      server is draining; `request_timeout`: the check took too \
                                      long.",
         body = ErrorBody),
    ),
)]
pub async fn readyz(State(state): State<AppState>) -> Result<Json<StatusOut>, ApiError> {
    if !state.registry.runtime().is_up() {
        tracing::error!("readiness check failed: the plugin runtime's epoch ticker has stopped");
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not_ready",
            "the plugin runtime is not running; see the server log",
        ));
    }
    if state.dispatcher.is_stopping() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "the server is shutting down and no longer takes work",
        ));
    }
    match state.store.ping().await {
        Ok(()) => Ok(Json(OK)),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not_ready",
                "the store is not answering; see the server log",
            ))
        }
    }
}

//! `GET /metrics`: the Prometheus exposition (docs/METRICS.md).

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ApiError;
use crate::metrics::CONTENT_TYPE;

/// `GET /metrics`: the store's figures of every queue, read now, then this server's live
/// families, in the OpenMetrics text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = super::openapi::tags::METRICS,
    operation_id = "metrics",
    summary = "Prometheus metrics",
    description = "The store's figures of every queue, read now, and this server's delivery \
                   metrics, in the OpenMetrics text format (docs/METRICS.md).",
    responses(
        (status = 200, description = "The exposition.", body = String, content_type = CONTENT_TYPE),
    ),
)]
pub async fn metrics_handler(State(state): State<AppState>) -> Result<Response, ApiError> {
    let snapshot = state.store.all_queue_stats().await?;
    let body = state.metrics.encode(&snapshot).map_err(|e| {
        tracing::error!(error = %e, "cannot encode the metrics");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "cannot encode the metrics; the details are in the server log",
        )
    })?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response())
}

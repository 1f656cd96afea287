//! `GET /metrics`: the Prometheus exposition (docs/METRICS.md).

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::ApiError;
use crate::metrics::{CONTENT_TYPE, Health, Routing};

/// `GET /metrics`: the store's figures of every queue, read now, then this server's live
/// families, in the OpenMetrics text format.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = super::openapi::tags::METRICS,
    operation_id = "metrics",
    summary = "Prometheus metrics",
    description = "The store's figures of every queue, read now, the server's health \
                   (storage writable, last integrity check, queues waiting for their plugin, \
                   circuit breakers), the \
                   database's size, write-ahead log size, free pages and last backup, \
                   each route's deliveries, and this server's publish, filter and delivery \
                   metrics, in the OpenMetrics text format \
                   (docs/METRICS.md).",
    responses(
        (status = 200, description = "The exposition.", body = String, content_type = CONTENT_TYPE),
    ),
)]
pub async fn metrics_handler(State(state): State<AppState>) -> Result<Response, ApiError> {
    let snapshot = state.store.all_queue_stats().await?;
    let health = Health {
        writable: state.store.write_failure().await.is_none(),
        integrity: state
            .store
            .last_check()
            .map(|r| (r.level.as_str(), r.outcome.as_str(), r.checked_at_ms)),
        waiting: state
            .dispatcher
            .all_waiting()
            .into_iter()
            .map(|(q, w)| (q, w.cause.as_str()))
            .collect(),
        breakers: state
            .dispatcher
            .all_breakers()
            .into_iter()
            .filter(|(_, b)| b.threshold > 0)
            .map(|(q, b)| (q, b.state.gauge(), b.times_opened))
            .collect(),
        // Sizes are worth a scrape without them rather than no scrape.
        database: match state.store.db_stats().await {
            Ok(db) => Some(db),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the database's size for /metrics");
                None
            }
        },
    };
    let router = state.dispatcher.router();
    let routing = Routing {
        routes: router.routes().await?,
        stats: router.stats(),
    };
    let body = state
        .metrics
        .encode_scrape(&snapshot, &health, &routing, &state.scheduler.stats())
        .map_err(|e| {
            tracing::error!(error = %e, "cannot encode the metrics");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "cannot encode the metrics; the details are in the server log",
            )
        })?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response())
}

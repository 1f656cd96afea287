//! Queue configuration and statistics.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use super::AppState;
use super::dto::{QueueOut, QueuesOut};
use super::error::ApiError;
use super::extract::{ApiBytes, ApiPath, parse_json};
use super::messages::check_queue_name;
use crate::model::{QueueConfig, QueueConfigPatch};
use crate::store::StoreError;

/// `GET /v1/queues`.
pub async fn list(State(state): State<AppState>) -> Result<Json<QueuesOut>, ApiError> {
    let queues = state.store.list_queues().await?;
    let mut out = Vec::with_capacity(queues.len());
    for q in queues {
        let stats = state.store.queue_stats(&q.name).await?;
        out.push(QueueOut::new(q, stats));
    }
    Ok(Json(QueuesOut { queues: out }))
}

/// `GET /v1/queues/{queue}`.
pub async fn get(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<QueueOut>, ApiError> {
    check_queue_name(&name)?;
    let queue = state.store.get_queue(&name).await?;
    let stats = state.store.queue_stats(&name).await?;
    Ok(Json(QueueOut::new(queue, stats)))
}

/// `PUT /v1/queues/{queue}`: creates the queue (201) or changes the fields the body names (200).
/// An empty body creates a queue with the defaults.
pub async fn put(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiBytes(body): ApiBytes,
) -> Result<(StatusCode, Json<QueueOut>), ApiError> {
    check_queue_name(&name)?;
    let patch: QueueConfigPatch = if body.iter().all(u8::is_ascii_whitespace) {
        QueueConfigPatch::default()
    } else {
        parse_json(&body).map_err(|e| {
            if e.code == "invalid_request" {
                invalid_config(e.message)
            } else {
                e
            }
        })?
    };

    // Validate against the current config first so the error names the field; the store checks
    // again inside its transaction, which settles any race with a concurrent PUT.
    let current = match state.store.get_queue(&name).await {
        Ok(q) => q.config,
        Err(StoreError::QueueNotFound(_)) => QueueConfig::default(),
        Err(e) => return Err(e.into()),
    };
    current.patched(&patch).map_err(invalid_config)?;

    let (queue, created) = state
        .store
        .put_queue(&name, &patch)
        .await
        .map_err(|e| match e {
            StoreError::Invalid(m) => invalid_config(m),
            other => other.into(),
        })?;
    state.dispatcher.queue_changed(&queue.name, &queue.config);
    let stats = state.store.queue_stats(&name).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(QueueOut::new(queue, stats))))
}

fn invalid_config(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_config", message)
}

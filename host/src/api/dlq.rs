//! The dead-letter queue: list, replay, mark reviewed, purge.

use axum::Json;
use axum::extract::State;
use serde::Serialize;

use super::AppState;
use super::dto::{
    DeadListQuery, DeadOut, MessageStateOut, PageOut, non_empty, parse_id, parse_limit,
};
use super::error::ApiError;
use super::extract::{ApiPath, ApiQuery};
use super::messages::check_queue_name;
use crate::model::{ErrorCategory, MessageState};
use crate::store::DeadFilter;

/// `GET /v1/dlq?queue=&category=&reviewed=&limit=&cursor=`.
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<DeadListQuery>,
) -> Result<Json<PageOut<DeadOut>>, ApiError> {
    let queue = non_empty(q.queue);
    if let Some(name) = &queue {
        check_queue_name(name)?;
    }
    let category = non_empty(q.category)
        .map(|c| c.parse::<ErrorCategory>())
        .transpose()
        .map_err(|e| ApiError::invalid(format!("category: {e}")))?;
    let reviewed = match non_empty(q.reviewed).as_deref() {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "reviewed must be true or false, got {other:?}"
            )));
        }
    };
    let filter = DeadFilter {
        queue,
        category,
        reviewed,
        limit: parse_limit(q.limit.as_deref())?,
        cursor: non_empty(q.cursor),
    };
    let page = state.store.list_dead(&filter).await?;
    Ok(Json(PageOut {
        items: page.items.into_iter().map(DeadOut::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// `POST /v1/dlq/{id}/replay`: back to `ready` with its attempts reset.
pub async fn replay(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<MessageStateOut>, ApiError> {
    let id = parse_id(&id)?;
    state.store.replay_dead(id).await?;
    Ok(Json(MessageStateOut {
        id: id.to_string(),
        state: MessageState::Ready,
    }))
}

#[derive(Debug, Serialize)]
pub struct ReviewedOut {
    id: String,
    reviewed: bool,
}

/// `POST /v1/dlq/{id}/reviewed`.
pub async fn reviewed(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ReviewedOut>, ApiError> {
    let id = parse_id(&id)?;
    state.store.mark_reviewed(id).await?;
    Ok(Json(ReviewedOut {
        id: id.to_string(),
        reviewed: true,
    }))
}

#[derive(Debug, Serialize)]
pub struct PurgedOut {
    id: String,
    deleted: bool,
}

/// `DELETE /v1/dlq/{id}`: removes the dead letter for good.
pub async fn purge(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<PurgedOut>, ApiError> {
    let id = parse_id(&id)?;
    state.store.purge_dead(id).await?;
    Ok(Json(PurgedOut {
        id: id.to_string(),
        deleted: true,
    }))
}

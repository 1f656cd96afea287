//! Producing, inspecting, listing and cancelling messages.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};

use super::AppState;
use super::dto::{
    EnqueueBody, EnqueueOut, MessageListQuery, MessageOut, MessageStateOut, PageOut, non_empty,
    parse_id, parse_limit,
};
use super::error::ApiError;
use super::extract::{ApiBytes, ApiPath, ApiQuery};
use crate::model::{MessageState, NewMessage, validate_name};
use crate::store::MessageFilter;

const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// Checks a queue name from the path before it reaches the store.
pub(super) fn check_queue_name(name: &str) -> Result<(), ApiError> {
    validate_name("queue", name)
        .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, "invalid_name", m))
}

/// `POST /v1/queues/{queue}/messages`: one message or a batch, all or nothing.
pub async fn enqueue(
    State(state): State<AppState>,
    ApiPath(queue): ApiPath<String>,
    headers: HeaderMap,
    ApiBytes(body): ApiBytes,
) -> Result<(StatusCode, Json<EnqueueOut>), ApiError> {
    check_queue_name(&queue)?;
    let header_key = match headers.get(IDEMPOTENCY_HEADER) {
        None => None,
        Some(v) => Some(v.to_str().map_err(|_| {
            ApiError::invalid("the Idempotency-Key header must be visible ASCII text")
        })?),
    };
    let limits = &state.limits;
    let messages: Vec<NewMessage> = match EnqueueBody::parse(&body)? {
        EnqueueBody::One(m) => vec![m.into_new("", limits.max_payload_bytes, header_key)?],
        EnqueueBody::Batch(batch) => {
            if header_key.is_some() {
                return Err(ApiError::invalid(
                    "the Idempotency-Key header applies to a single message; \
                     in a batch, set idempotency_key on each message",
                ));
            }
            if batch.is_empty() || batch.len() > limits.max_batch {
                return Err(ApiError::invalid(format!(
                    "messages must hold 1 to {} messages, got {}; split larger batches",
                    limits.max_batch,
                    batch.len()
                )));
            }
            batch
                .into_iter()
                .enumerate()
                .map(|(i, m)| {
                    m.into_new(&format!("messages[{i}]."), limits.max_payload_bytes, None)
                })
                .collect::<Result<_, _>>()?
        }
    };
    let enqueued = state.store.enqueue(&queue, messages).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(EnqueueOut {
            ids: enqueued.iter().map(|e| e.id.to_string()).collect(),
            existing: enqueued.iter().map(|e| e.existing).collect(),
        }),
    ))
}

/// `GET /v1/messages/{id}`.
pub async fn get(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<MessageOut>, ApiError> {
    let id = parse_id(&id)?;
    Ok(Json(state.store.get_message(id).await?.into()))
}

/// `DELETE /v1/messages/{id}`: cancels now, or on settle when a handler holds the message (the
/// answer's `state` is then still `leased`).
pub async fn cancel(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<MessageStateOut>, ApiError> {
    let id = parse_id(&id)?;
    let new_state = state.store.cancel(id).await?;
    Ok(Json(MessageStateOut {
        id: id.to_string(),
        state: new_state,
    }))
}

/// `GET /v1/queues/{queue}/messages?state=&limit=&cursor=`.
pub async fn list(
    State(state): State<AppState>,
    ApiPath(queue): ApiPath<String>,
    ApiQuery(q): ApiQuery<MessageListQuery>,
) -> Result<Json<PageOut<MessageOut>>, ApiError> {
    check_queue_name(&queue)?;
    let filter = MessageFilter {
        state: non_empty(q.state)
            .map(|s| s.parse::<MessageState>())
            .transpose()
            .map_err(|e| ApiError::invalid(format!("state: {e}")))?,
        limit: parse_limit(q.limit.as_deref())?,
        cursor: non_empty(q.cursor),
    };
    let page = state.store.list_messages(&queue, &filter).await?;
    Ok(Json(PageOut {
        items: page.items.into_iter().map(MessageOut::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

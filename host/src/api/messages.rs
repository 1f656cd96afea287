//! Producing, inspecting, listing, cancelling and requeueing messages.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};

use super::dto::{
    EnqueueBody, EnqueueOut, MessageListQuery, MessageOut, MessageStateOut, PageOut, TraceEntryOut,
    TraceOut, non_empty, parse_id, parse_limit,
};
use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJsonBytes, ApiPath, ApiQuery};
use super::openapi::tags;
use super::{ApiLimits, AppState};
use crate::auth::{Principal, Role};
use crate::model::{Message, MessageState, NewMessage, validate_name};
use crate::store::MessageFilter;

const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// Checks a queue name from the path before it reaches the store.
pub(super) fn check_queue_name(name: &str) -> Result<(), ApiError> {
    validate_name("queue", name)
        .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, "invalid_name", m))
}

/// `POST /v1/queues/{queue}/messages`: one message or a batch, all or nothing.
#[utoipa::path(
    post,
    path = "/v1/queues/{queue}/messages",
    tag = tags::MESSAGES,
    operation_id = "enqueue",
    summary = "Enqueue one message or a batch",
    description = "Stores `{\"payload\", ...}` as one message or `{\"messages\": [...]}` as a \
                   batch, all or nothing, and answers with their ids. A message whose \
                   idempotency key is still live is not stored again: its existing id comes back \
                   with `existing: true`. Keys are per producer token: another producer's key \
                   never finds (or supersedes) its message; admin tokens share one scope.\n\n\
                   The `Idempotency-Key` request header may carry a single message's key instead \
                   of `idempotency_key` (not in a batch; when both are sent they must be equal). \
                   It is described here rather than as a parameter because that rule ties it to \
                   the body.",
    params(("queue" = String, Path, description = "The queue's name.")),
    request_body(content = EnqueueBody, content_type = "application/json",
                 description = "One message, or `{\"messages\": [...]}`."),
    responses(
        (status = 202, description = "Stored (or found by idempotency key); one id per message.",
         body = EnqueueOut),
        (status = 400, description = "`invalid_json`: the body is not JSON; `invalid_request`: a \
                                      field is wrong (the message names it); `invalid_name`: the \
                                      queue name is not valid.", body = ErrorBody),
        (status = 404, description = "`queue_not_found`: create the queue first.",
         body = ErrorBody),
        (status = 413, description = "`payload_too_large`: a payload or the whole body is over \
                                      its limit; `batch_too_large`: more messages than \
                                      `[limits] max_batch`.", body = ErrorBody),
    ),
)]
pub async fn enqueue(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(queue): ApiPath<String>,
    headers: HeaderMap,
    ApiJsonBytes(body): ApiJsonBytes,
) -> Result<(StatusCode, Json<EnqueueOut>), ApiError> {
    check_queue_name(&queue)?;
    let messages = messages_from_body(&state.limits, &principal, &headers, &body)?;
    let enqueued = state.store.enqueue(&queue, messages).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(EnqueueOut {
            ids: enqueued.iter().map(|e| e.id.to_string()).collect(),
            existing: enqueued.iter().map(|e| e.existing).collect(),
        }),
    ))
}

/// The messages of an enqueue or publish body (one message or `{"messages": [...]}`, with the
/// `Idempotency-Key` header for a single one), checked and stamped with the producer: a
/// producer's idempotency keys are its own; admin tokens and token-less servers share one scope
/// (they may act on any message anyway).
pub(super) fn messages_from_body(
    limits: &ApiLimits,
    principal: &Principal,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Vec<NewMessage>, ApiError> {
    let header_key = match headers.get(IDEMPOTENCY_HEADER) {
        None => None,
        Some(v) => Some(v.to_str().map_err(|_| {
            ApiError::invalid("the Idempotency-Key header must be visible ASCII text")
        })?),
    };
    let mut messages: Vec<NewMessage> = match EnqueueBody::parse(body)? {
        EnqueueBody::One(m) => vec![m.into_new("", limits.max_payload_bytes, header_key)?],
        EnqueueBody::Batch(batch) => {
            if header_key.is_some() {
                return Err(ApiError::invalid(
                    "the Idempotency-Key header applies to a single message; \
                     in a batch, set idempotency_key on each message",
                ));
            }
            if batch.is_empty() {
                return Err(ApiError::invalid(
                    "messages is empty; send at least one message",
                ));
            }
            if batch.len() > limits.max_batch {
                return Err(ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "batch_too_large",
                    format!(
                        "messages holds {} messages; at most {} are accepted per request \
                         ([limits] max_batch): split the batch",
                        batch.len(),
                        limits.max_batch
                    ),
                ));
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
    // A producer's idempotency keys are its own; admin tokens and token-less servers share one
    // scope (they may act on any message anyway).
    let scope = match principal.role {
        Role::Producer => principal.name.clone(),
        Role::Admin | Role::Reader => None,
    };
    for m in &mut messages {
        m.producer.clone_from(&principal.name);
        m.idempotency_scope.clone_from(&scope);
    }
    Ok(messages)
}

/// `GET /v1/messages/{id}`. A producer token sees only the messages it enqueued.
#[utoipa::path(
    get,
    path = "/v1/messages/{id}",
    tag = tags::MESSAGES,
    operation_id = "get_message",
    summary = "One message",
    description = "The message with its state, attempts, last error and payload (dropped once \
                   acked). A producer token sees only the messages it enqueued.",
    params(("id" = String, Path, description = "The message's id.")),
    responses(
        (status = 200, description = "The message.", body = MessageOut),
        (status = 400, description = "`invalid_id`: ids are positive decimal integers.",
         body = ErrorBody),
        (status = 403, description = "`forbidden`: a producer token asked for a message it did not \
                                      enqueue.", body = ErrorBody),
        (status = 404, description = "`message_not_found`: no such message (acked messages are \
                                      removed after their retention window).", body = ErrorBody),
    ),
)]
pub async fn get(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<MessageOut>, ApiError> {
    let id = parse_id(&id)?;
    let message = state.store.get_message(id).await?;
    check_owner(&principal, &message)?;
    Ok(Json(message.into()))
}

/// A producer token may only read the messages it enqueued.
fn check_owner(principal: &Principal, message: &Message) -> Result<(), ApiError> {
    if principal.role == Role::Producer && message.producer != principal.name {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "message {} was not enqueued with this token; a producer token may only read \
                 the messages it enqueued",
                message.id
            ),
        ));
    }
    Ok(())
}

/// `GET /v1/messages/{id}/trace`: the message's correlation tree.
#[utoipa::path(
    get,
    path = "/v1/messages/{id}/trace",
    tag = tags::MESSAGES,
    operation_id = "trace_message",
    summary = "A message's chain",
    description = "Every message that shares the message's correlation id, oldest first (at \
                   most 10,000), with the message that started the chain: what a publish fanned \
                   out to and what handlers published in turn. `parent_id` is the message whose \
                   handler published it (`null` for a message a producer sent). A producer \
                   token may trace only a message it enqueued.",
    params(("id" = String, Path, description = "The message's id.")),
    responses(
        (status = 200, description = "The chain.", body = TraceOut),
        (status = 400, description = "`invalid_id`: ids are positive decimal integers.",
         body = ErrorBody),
        (status = 403, description = "`forbidden`: a producer token asked about a message it did \
                                      not enqueue.", body = ErrorBody),
        (status = 404, description = "`message_not_found`: no such message (acked messages are \
                                      removed after their retention window).", body = ErrorBody),
    ),
)]
pub async fn trace(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<TraceOut>, ApiError> {
    let id = parse_id(&id)?;
    if principal.role == Role::Producer {
        let message = state.store.get_message(id).await?;
        check_owner(&principal, &message)?;
    }
    let (correlation_id, entries) = state.store.trace(id).await?;
    Ok(Json(TraceOut {
        correlation_id,
        messages: entries.into_iter().map(TraceEntryOut::from).collect(),
    }))
}

/// `DELETE /v1/messages/{id}`: cancels now, or on settle when a handler holds the message (the
/// answer's `state` is then still `leased`).
#[utoipa::path(
    delete,
    path = "/v1/messages/{id}",
    tag = tags::MESSAGES,
    operation_id = "cancel_message",
    summary = "Cancel a message",
    description = "A `scheduled` or `ready` message becomes `cancelled` now; a `leased` one when \
                   its handler returns (the answer's `state` is then still `leased`).",
    params(("id" = String, Path, description = "The message's id.")),
    responses(
        (status = 200, description = "Cancelled, or to be cancelled on settle.",
         body = MessageStateOut),
        (status = 400, description = "`invalid_id`: ids are positive decimal integers.",
         body = ErrorBody),
        (status = 404, description = "`message_not_found`: no such message.", body = ErrorBody),
        (status = 409, description = "`invalid_state`: the message is already acked, dead, \
                                      cancelled or expired.", body = ErrorBody),
    ),
)]
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

/// `POST /v1/messages/{id}/requeue`: a delayed or backing-off message becomes ready now.
#[utoipa::path(
    post,
    path = "/v1/messages/{id}/requeue",
    tag = tags::MESSAGES,
    operation_id = "requeue_message",
    summary = "Make a waiting message ready now",
    description = "A `scheduled` message, delayed (`delay_ms`, `deliver_at`) or a retry waiting \
                   for its backoff, becomes `ready` at once and the queue's idle workers are \
                   woken. Its attempts, last error and TTL stay as they are. Like cancel, this \
                   needs an admin token.",
    params(("id" = String, Path, description = "The message's id.")),
    responses(
        (status = 200, description = "The message, now `ready` (or already leased by a worker \
                                      that woke for it).", body = MessageOut),
        (status = 400, description = "`invalid_id`: ids are positive decimal integers.",
         body = ErrorBody),
        (status = 404, description = "`message_not_found`: no such message.", body = ErrorBody),
        (status = 409, description = "`invalid_state`: the message is not `scheduled` (it is \
                                      ready already, leased or finished).", body = ErrorBody),
    ),
)]
pub async fn requeue(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<MessageOut>, ApiError> {
    let id = parse_id(&id)?;
    state.store.requeue(id).await?;
    Ok(Json(state.store.get_message(id).await?.into()))
}

/// `GET /v1/queues/{queue}/messages?state=&limit=&cursor=`.
#[utoipa::path(
    get,
    path = "/v1/queues/{queue}/messages",
    tag = tags::MESSAGES,
    operation_id = "list_messages",
    summary = "List a queue's messages",
    description = "A page of the queue's messages, oldest first, optionally in one state only \
                   or with one idempotency key only.",
    params(("queue" = String, Path, description = "The queue's name."), MessageListQuery),
    responses(
        (status = 200, description = "A page of messages.", body = PageOut<MessageOut>),
        (status = 400, description = "`invalid_request`: a query parameter is wrong (the message \
                                      names it); `invalid_cursor`: not a `next_cursor` of this \
                                      list; `invalid_name`: the queue name is not valid.",
         body = ErrorBody),
        (status = 404, description = "`queue_not_found`: no such queue.", body = ErrorBody),
    ),
)]
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
        // A key that could never have been accepted simply finds nothing.
        idempotency_key: non_empty(q.idempotency_key),
    };
    let page = state.store.list_messages(&queue, &filter).await?;
    Ok(Json(PageOut {
        items: page.items.into_iter().map(MessageOut::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

//! The dead-letter queue: list, replay, mark reviewed, purge.

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::dto::{DeadBulkBody, DeadListQuery, DeadOut, PageOut, non_empty, parse_id, parse_limit};
use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJsonBytes, ApiPath, ApiQuery, parse_json};
use super::messages::check_queue_name;
use super::openapi::tags;
use super::topics::DeliveryOut;
use crate::model::{ErrorCategory, MessageState};
use crate::store::DeadFilter;

/// `GET /v1/dlq?queue=&category=&reviewed=&limit=&cursor=`.
#[utoipa::path(
    get,
    path = "/v1/dlq",
    tag = tags::DLQ,
    operation_id = "list_dead_letters",
    summary = "List dead letters",
    description = "A page of dead letters, oldest first, optionally of one queue, one error \
                   category, reviewed or not.",
    params(DeadListQuery),
    responses(
        (status = 200, description = "A page of dead letters.", body = PageOut<DeadOut>),
        (status = 400, description = "`invalid_request`: a query parameter is wrong (the message \
                                      names it); `invalid_cursor`: not a `next_cursor` of this \
                                      list; `invalid_name`: the queue name is not valid.",
         body = ErrorBody),
        (status = 404, description = "`queue_not_found`: the `queue` filter names no queue.",
         body = ErrorBody),
    ),
)]
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

/// `POST /v1/dlq/{id}/replay?skip_filter=`: back to `ready` with its attempts reset, or, for a
/// delivery whose route's filter failed, through that filter again.
#[utoipa::path(
    post,
    path = "/v1/dlq/{id}/replay",
    tag = tags::DLQ,
    operation_id = "replay_dead_letter",
    summary = "Replay a dead letter",
    description = "Puts the message back to `ready` with its attempts reset. A dead letter of \
                   category `filter` (its route's filter failed on it) runs the route's filter \
                   again instead, unless `skip_filter=true`: the dead letter is then replaced by \
                   the deliveries the filter decides (`replaced: true`, no `state`), or put back \
                   as it is when the filter delivers to the route's own queue. Takes no body.",
    params(("id" = String, Path, description = "The dead letter's (message's) id."),
           ReplayQuery),
    responses(
        (status = 200, description = "The message is ready again, or was routed again.",
         body = ReplayOut),
        (status = 400, description = "`invalid_id`: ids are positive decimal integers; \
                                      `invalid_request`: `skip_filter` is not true or false.",
         body = ErrorBody),
        (status = 404, description = "`dead_letter_not_found`: no dead letter with this id; \
                                      `queue_not_found`: the filter sent it to a queue that was \
                                      deleted meanwhile.", body = ErrorBody),
        (status = 422, description = "`filter_failed`: the route's filter failed again; the dead \
                                      letter is unchanged (replay with `skip_filter=true` to \
                                      put it back without the filter).", body = ErrorBody),
    ),
)]
pub async fn replay(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<ReplayQuery>,
) -> Result<Json<ReplayOut>, ApiError> {
    let id = parse_id(&id)?;
    let skip_filter = match non_empty(q.skip_filter).as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "skip_filter must be true or false, got {other:?}"
            )));
        }
    };
    let published = state.dispatcher.router().replay(id, skip_filter).await?;
    // The router answers with the dead letter itself when it went back to its queue.
    let in_place = matches!(published.as_slice(), [p] if p.id == id && !p.dead);
    Ok(Json(ReplayOut {
        id: id.to_string(),
        state: in_place.then_some(MessageState::Ready),
        replaced: !in_place,
        deliveries: published.into_iter().map(DeliveryOut::from).collect(),
    }))
}

/// `?skip_filter=` of `POST /v1/dlq/{id}/replay`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReplayQuery {
    /// `true`: put a `filter` dead letter back to its queue as it is, without running the
    /// route's filter again.
    #[param(value_type = Option<bool>)]
    pub skip_filter: Option<String>,
}

/// What `POST /v1/dlq/{id}/replay` did.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayOut {
    /// The dead letter's id.
    pub id: String,
    /// `ready`: the dead letter is ready again. Absent when it was replaced.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<MessageState>)]
    pub state: Option<MessageState>,
    /// The filter ran again and its decision replaced the dead letter by `deliveries` (none
    /// when it dropped the message).
    pub replaced: bool,
    /// Where the message is now: the dead letter itself, or the new deliveries.
    pub deliveries: Vec<DeliveryOut>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReviewedOut {
    id: String,
    /// Always `true`.
    reviewed: bool,
}

/// Most dead letters one bulk call replays or purges; more take several calls.
pub(super) const MAX_BULK: u32 = 10_000;
const DEFAULT_BULK: u32 = 1_000;

fn bulk_filter(body: &[u8]) -> Result<DeadFilter, ApiError> {
    let b: DeadBulkBody = if body.iter().all(u8::is_ascii_whitespace) {
        DeadBulkBody::default()
    } else {
        parse_json(body)?
    };
    let queue = non_empty(b.queue);
    if let Some(name) = &queue {
        check_queue_name(name)?;
    }
    let category = non_empty(b.category)
        .map(|c| c.parse::<ErrorCategory>())
        .transpose()
        .map_err(|e| ApiError::invalid(format!("category: {e}")))?;
    let limit = b.limit.unwrap_or(DEFAULT_BULK);
    if !(1..=MAX_BULK).contains(&limit) {
        return Err(ApiError::invalid(format!(
            "limit must be between 1 and {MAX_BULK}, got {limit}; repeat the call for more"
        )));
    }
    Ok(DeadFilter {
        queue,
        category,
        reviewed: b.reviewed,
        limit,
        cursor: None,
    })
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReplayedOut {
    /// How many dead letters are ready again.
    replayed: usize,
    /// Their ids, oldest first.
    ids: Vec<String>,
}

/// `POST /v1/dlq/replay` with `{"queue"?, "category"?, "reviewed"?, "limit"?}`: replays the
/// oldest matching dead letters (all of them atomically) and returns their ids.
#[utoipa::path(
    post,
    path = "/v1/dlq/replay",
    tag = tags::DLQ,
    operation_id = "replay_dead_letters",
    summary = "Replay matching dead letters",
    description = "Replays the oldest dead letters the filter selects, up to `limit`, all at \
                   once, and returns their ids. An empty body selects the oldest 1,000 of every \
                   queue; repeat the call for more.",
    request_body(content = Option<DeadBulkBody>, content_type = "application/json",
                 description = "Which dead letters; every field is optional."),
    responses(
        (status = 200, description = "The replayed messages.", body = ReplayedOut),
        (status = 400, description = "`invalid_request`: a field is wrong (the message names \
                                      it); `invalid_json`: the body is not JSON; \
                                      `invalid_name`: the queue name is not valid.",
         body = ErrorBody),
        (status = 404, description = "`queue_not_found`: the `queue` filter names no queue.",
         body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is larger than a filter can \
                                      be.", body = ErrorBody),
    ),
)]
pub async fn replay_matching(
    State(state): State<AppState>,
    ApiJsonBytes(body): ApiJsonBytes,
) -> Result<Json<ReplayedOut>, ApiError> {
    let filter = bulk_filter(&body)?;
    let ids = state.store.replay_dead_matching(&filter).await?;
    Ok(Json(ReplayedOut {
        replayed: ids.len(),
        ids: ids.iter().map(ToString::to_string).collect(),
    }))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PurgedManyOut {
    /// How many dead letters were deleted.
    purged: u64,
}

/// `POST /v1/dlq/purge` with the same filter: deletes the oldest matching dead letters.
#[utoipa::path(
    post,
    path = "/v1/dlq/purge",
    tag = tags::DLQ,
    operation_id = "purge_dead_letters",
    summary = "Purge matching dead letters",
    description = "Deletes the oldest dead letters the filter selects, up to `limit`, for good. \
                   An empty body selects the oldest 1,000 of every queue.",
    request_body(content = Option<DeadBulkBody>, content_type = "application/json",
                 description = "Which dead letters; every field is optional."),
    responses(
        (status = 200, description = "How many were deleted.", body = PurgedManyOut),
        (status = 400, description = "`invalid_request`: a field is wrong (the message names \
                                      it); `invalid_json`: the body is not JSON; \
                                      `invalid_name`: the queue name is not valid.",
         body = ErrorBody),
        (status = 404, description = "`queue_not_found`: the `queue` filter names no queue.",
         body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is larger than a filter can \
                                      be.", body = ErrorBody),
    ),
)]
pub async fn purge_matching(
    State(state): State<AppState>,
    ApiJsonBytes(body): ApiJsonBytes,
) -> Result<Json<PurgedManyOut>, ApiError> {
    let filter = bulk_filter(&body)?;
    let purged = state.store.purge_dead_matching(&filter).await?;
    Ok(Json(PurgedManyOut { purged }))
}

/// `POST /v1/dlq/{id}/reviewed`.
#[utoipa::path(
    post,
    path = "/v1/dlq/{id}/reviewed",
    tag = tags::DLQ,
    operation_id = "mark_dead_letter_reviewed",
    summary = "Mark a dead letter reviewed",
    description = "Reviewed dead letters are deleted after the server's dead-letter retention. \
                   Takes no body.",
    params(("id" = String, Path, description = "The dead letter's (message's) id.")),
    responses(
        (status = 200, description = "Marked reviewed.", body = ReviewedOut),
        (status = 400, description = "`invalid_id`: ids are positive decimal integers.",
         body = ErrorBody),
        (status = 404, description = "`dead_letter_not_found`: no dead letter with this id.",
         body = ErrorBody),
    ),
)]
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

#[derive(Debug, Serialize, ToSchema)]
pub struct PurgedOut {
    id: String,
    /// Always `true`.
    deleted: bool,
}

/// `DELETE /v1/dlq/{id}`: removes the dead letter for good.
#[utoipa::path(
    delete,
    path = "/v1/dlq/{id}",
    tag = tags::DLQ,
    operation_id = "purge_dead_letter",
    summary = "Purge a dead letter",
    description = "Deletes the dead letter for good.",
    params(("id" = String, Path, description = "The dead letter's (message's) id.")),
    responses(
        (status = 200, description = "Deleted.", body = PurgedOut),
        (status = 400, description = "`invalid_id`: ids are positive decimal integers.",
         body = ErrorBody),
        (status = 404, description = "`dead_letter_not_found`: no dead letter with this id.",
         body = ErrorBody),
    ),
)]
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

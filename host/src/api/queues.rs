//! Queue configuration and statistics.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use super::AppState;
use super::dto::{
    BreakerOut, ConsumerOut, DeleteQueueQuery, HistoryOut, HistoryQuery, QueueDeletedOut, QueueOut,
    QueuesOut, non_empty,
};
use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJsonBytes, ApiPath, ApiQuery, parse_json};
use super::messages::check_queue_name;
use super::openapi::tags;
use crate::model::{QueueConfig, QueueConfigPatch};
use crate::store::StoreError;

/// `GET /v1/queues`.
#[utoipa::path(
    get,
    path = "/v1/queues",
    tag = tags::QUEUES,
    operation_id = "list_queues",
    summary = "All queues with their config and stats",
    description = "Every queue with its configuration, the store's figures and this server's \
                   live ones (see `GET /v1/queues/{queue}`).",
    responses((status = 200, description = "The queues, by name.", body = QueuesOut)),
)]
pub async fn list(State(state): State<AppState>) -> Result<Json<QueuesOut>, ApiError> {
    let queues = state.store.list_queues().await?;
    let mut stats: std::collections::HashMap<_, _> =
        state.store.all_queue_stats().await?.into_iter().collect();
    let mut out = Vec::with_capacity(queues.len());
    for q in queues {
        // A queue created between the two reads has no messages yet.
        let stats = stats.remove(&q.name).unwrap_or_default();
        let live = state.metrics.queue_stats(&q.name);
        let mut q = QueueOut::new(q, stats, live);
        q.consumer = ConsumerOut::of(state.dispatcher.waiting(&q.name));
        q.stats.breaker = BreakerOut::of(state.dispatcher.breaker(&q.name), &q.config);
        out.push(q);
    }
    Ok(Json(QueuesOut { queues: out }))
}

/// `GET /v1/queues/{queue}`.
#[utoipa::path(
    get,
    path = "/v1/queues/{queue}",
    tag = tags::QUEUES,
    operation_id = "get_queue",
    summary = "One queue's config and stats",
    description = "The configuration and the statistics: depths by state now, totals since the \
                   queue was created, and this server's live figures since it started \
                   (in-flight handlers, wait and handler time percentiles, errors by category); \
                   `consumer` says whether this server hands its messages to the handler now, \
                   or why they wait (no attempts are spent while they do).",
    params(("queue" = String, Path, description = "The queue's name.")),
    responses(
        (status = 200, description = "The queue.", body = QueueOut),
        (status = 400, description = "`invalid_name`: the queue name is not valid.",
         body = ErrorBody),
        (status = 404, description = "`queue_not_found`: no such queue.", body = ErrorBody),
    ),
)]
pub async fn get(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<QueueOut>, ApiError> {
    check_queue_name(&name)?;
    let queue = state.store.get_queue(&name).await?;
    let stats = state.store.queue_stats(&name).await?;
    let live = state.metrics.queue_stats(&name);
    let mut out = QueueOut::new(queue, stats, live);
    out.consumer = ConsumerOut::of(state.dispatcher.waiting(&name));
    out.stats.breaker = BreakerOut::of(state.dispatcher.breaker(&name), &out.config);
    Ok(Json(out))
}

/// `PUT /v1/queues/{queue}`: creates the queue (201) or changes the fields the body names (200).
/// An empty body creates a queue with the defaults.
#[utoipa::path(
    put,
    path = "/v1/queues/{queue}",
    tag = tags::QUEUES,
    operation_id = "put_queue",
    summary = "Create a queue or change its config",
    description = "Creates the queue (201) or changes only the fields the body names (200). An \
                   empty body creates a queue with the defaults. `handler` and `default_ttl_ms` \
                   are cleared with `null`. Queue names are 1 to 128 characters of \
                   `A-Z a-z 0-9 . _ -`.",
    params(("queue" = String, Path, description = "The queue's name.")),
    request_body(content = Option<QueueConfigPatch>, content_type = "application/json",
                 description = "The fields to set; the others keep their value (or default)."),
    responses(
        (status = 200, description = "Changed.", body = QueueOut),
        (status = 201, description = "Created.", body = QueueOut),
        (status = 400, description = "`invalid_config`: a field is unknown, of the wrong type or \
                                      out of range (the message names it); `invalid_json`: the \
                                      body is not JSON; `invalid_name`: the queue name is not \
                                      valid; `world_mismatch`: `handler` names a deployed \
                                      plugin that is not a handler (e.g. a filter; the message \
                                      names its world). A handler not deployed yet is \
                                      accepted.", body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is larger than a queue config can be.",
         body = ErrorBody),
    ),
)]
pub async fn put(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiJsonBytes(body): ApiJsonBytes,
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
    let live = state.metrics.queue_stats(&name);
    let mut out = QueueOut::new(queue, stats, live);
    out.stats.breaker = BreakerOut::of(state.dispatcher.breaker(&name), &out.config);
    Ok((status, Json(out)))
}

/// The most minutes of history kept and served: a week.
pub const HISTORY_MINUTES: u32 = 7 * 24 * 60;

/// `GET /v1/queues/{queue}/history`: the queue's depths and totals minute by minute.
#[utoipa::path(
    get,
    path = "/v1/queues/{queue}/history",
    tag = tags::QUEUES,
    operation_id = "queue_history",
    summary = "A queue's depths and totals, minute by minute",
    description = "One point per minute, oldest first: the depths (scheduled, ready, leased, \
                   DLQ), the totals since the queue was created (enqueued, acked, retried, dead, \
                   cancelled, expired) and the oldest ready message's age, as last sampled in \
                   that minute. Rates are the differences between consecutive points. Servers \
                   sample every 10 s and keep a week; the history is in the database, so it \
                   survives restarts and is the same through every host of a shared one.",
    params(
        ("queue" = String, Path, description = "The queue's name."),
        HistoryQuery,
    ),
    responses(
        (status = 200, description = "The points.", body = HistoryOut),
        (status = 400, description = "`invalid_name` or `invalid_request`: the queue name or `minutes` \
         is not valid.", body = ErrorBody),
        (status = 404, description = "`queue_not_found`: no such queue.", body = ErrorBody),
    ),
)]
pub async fn history(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> Result<Json<HistoryOut>, ApiError> {
    check_queue_name(&name)?;
    let minutes = match q.minutes.as_deref() {
        None => 60,
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|m| (1..=HISTORY_MINUTES).contains(m))
            .ok_or_else(|| {
                ApiError::invalid(format!(
                    "minutes must be a whole number from 1 to {HISTORY_MINUTES}, got {text:?}"
                ))
            })?,
    };
    let now = crate::model::now_ms();
    let since = crate::model::minute_of(now) - i64::from(minutes - 1) * 60_000;
    let points = state.store.queue_history(&name, since).await?;
    Ok(Json(HistoryOut {
        queue: name,
        points,
    }))
}

/// `POST /v1/queues/{queue}/breaker/reset`: closes the queue's circuit breaker on this server.
#[utoipa::path(
    post,
    path = "/v1/queues/{queue}/breaker/reset",
    tag = tags::QUEUES,
    operation_id = "reset_queue_breaker",
    summary = "Close a queue's circuit breaker",
    description = "Closes this server's circuit breaker of the queue at once: its consecutive \
                   failures and its cool-down start over, and the queue is claimed from again \
                   (unless paused). Closing a closed breaker changes nothing. Answers the \
                   breaker as it is now. Each server has its own breaker, in memory; this \
                   resets the one of the server that answers.",
    params(("queue" = String, Path, description = "The queue's name.")),
    responses(
        (status = 200, description = "The breaker, closed.", body = BreakerOut),
        (status = 400, description = "`invalid_name`: the queue name is not valid.",
         body = ErrorBody),
        (status = 404, description = "`queue_not_found`: no such queue.", body = ErrorBody),
    ),
)]
pub async fn reset_breaker(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<BreakerOut>, ApiError> {
    check_queue_name(&name)?;
    let queue = state.store.get_queue(&name).await?;
    let snapshot = state.dispatcher.reset_breaker(&name);
    Ok(Json(BreakerOut::of(snapshot, &queue.config)))
}

/// `DELETE /v1/queues/{queue}?force=`: the queue with everything it holds.
#[utoipa::path(
    delete,
    path = "/v1/queues/{queue}",
    tag = tags::QUEUES,
    operation_id = "delete_queue",
    summary = "Delete a queue",
    description = "Deletes the queue, its configuration, its totals and every message it holds \
                   in any state (acked records, its dead letters, idempotency keys), and reports \
                   how many messages it deleted in each state. Refused while the queue holds \
                   live (scheduled, ready or leased) messages, unless `force=true`: then those \
                   are deleted too. Handlers already running on a deleted message finish, but \
                   their outcome is discarded (as for a lost lease); nothing more is claimed \
                   from the queue. Refused while routes deliver to the queue, unless \
                   `force=true`: then those routes are deleted with it (`deleted.routes`).",
    params(("queue" = String, Path, description = "The queue's name."), DeleteQueueQuery),
    responses(
        (status = 200, description = "Deleted; what was removed.", body = QueueDeletedOut),
        (status = 400, description = "`invalid_name`: the queue name is not valid; \
                                      `invalid_request`: `force` is not true or false.",
         body = ErrorBody),
        (status = 404, description = "`queue_not_found`: no such queue.", body = ErrorBody),
        (status = 409, description = "`queue_not_empty`: it holds live messages (the message \
                                      counts them); `queue_has_routes`: routes deliver to it \
                                      (the message names them); nothing was deleted.",
         body = ErrorBody),
    ),
)]
pub async fn delete(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiQuery(q): ApiQuery<DeleteQueueQuery>,
) -> Result<Json<QueueDeletedOut>, ApiError> {
    check_queue_name(&name)?;
    let force = match non_empty(q.force).as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "force must be true or false, got {other:?}"
            )));
        }
    };
    let deleted = state.store.delete_queue(&name, force).await?;
    // After the commit: the claimer stops, and settles of what its workers still run find
    // their messages gone (lost lease, a no-op).
    state.dispatcher.queue_deleted(&name);
    // The router must stop delivering there: the queue may have been an implicit route's
    // target, and a forced delete took the routes to it along.
    let router = state.dispatcher.router();
    router.forget_queues();
    if deleted.routes > 0 {
        router.reload().await?;
    }
    Ok(Json(QueueDeletedOut::new(name, force, deleted)))
}

fn invalid_config(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "invalid_config", message)
}

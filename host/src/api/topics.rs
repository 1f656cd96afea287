//! Publishing to a topic through the router.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::dto::EnqueueBody;
use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJsonBytes, ApiPath};
use super::messages::messages_from_body;
use super::openapi::tags;
use super::routes::RouteOut;
use crate::auth::Principal;
use crate::router::{Otherwise, Published};

/// One message the router wrote into one queue.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryOut {
    pub queue: String,
    pub id: String,
    /// An idempotency key found a live message in that queue: `id` is that message.
    pub existing: bool,
    /// The route's filter failed on this message: it is a dead letter of `queue` (category
    /// `filter`); replaying it runs the filter again.
    pub dead: bool,
}

impl From<Published> for DeliveryOut {
    fn from(p: Published) -> Self {
        DeliveryOut {
            queue: p.queue,
            id: p.id.to_string(),
            existing: p.existing,
            dead: p.dead,
        }
    }
}

/// What `POST /v1/topics/{topic}/messages` wrote.
#[derive(Debug, Serialize, ToSchema)]
pub struct PublishOut {
    /// One id per delivery (a message fanned out to three queues has three), in the order of
    /// `deliveries`.
    pub ids: Vec<String>,
    /// Where each message went: per message sent, its deliveries in route order.
    pub deliveries: Vec<DeliveryOut>,
}

/// `POST /v1/topics/{topic}/messages`: one message or a batch, routed, all or nothing.
#[utoipa::path(
    post,
    path = "/v1/topics/{topic}/messages",
    tag = tags::ROUTES,
    operation_id = "publish",
    summary = "Publish to a topic",
    description = "Takes the body of enqueue (one message or `{\"messages\": [...]}`) and \
                   routes each message: every route whose pattern matches the topic and whose \
                   header conditions hold delivers it to its queue (each queue once), through \
                   the route's filter if it has one. A message no route matches goes to the \
                   queue named like the topic if there is one, else to `[router] \
                   unroutable_queue`, else the publish is refused with nothing stored. All \
                   deliveries are written in one transaction. A failing filter never loses a \
                   message: that delivery is stored as a dead letter (`dead: true`).\n\n\
                   Idempotency keys and the `Idempotency-Key` header work as for enqueue, per \
                   queue delivered to. A message's `topic` field, if sent, must be the topic of \
                   the path.",
    params(("topic" = String, Path, description = "Dot-separated words of `A-Z a-z 0-9 _ -` \
                                                    (no wildcards).")),
    request_body(content = EnqueueBody, content_type = "application/json",
                 description = "One message, or `{\"messages\": [...]}`."),
    responses(
        (status = 202, description = "Stored; one id per delivery.", body = PublishOut),
        (status = 400, description = "`invalid_json`: the body is not JSON; `invalid_request`: a \
                                      field is wrong (the message names it); `invalid_topic`: \
                                      the topic is not valid.", body = ErrorBody),
        (status = 404, description = "`queue_not_found`: the unroutable queue was deleted.",
         body = ErrorBody),
        (status = 413, description = "`payload_too_large`: a payload or the whole body is over \
                                      its limit; `batch_too_large`: more messages than \
                                      `[limits] max_batch`.", body = ErrorBody),
        (status = 422, description = "`no_route`: no route matches the topic, no queue has its \
                                      name and no unroutable queue is configured; nothing was \
                                      stored.", body = ErrorBody),
    ),
)]
pub async fn publish(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(topic): ApiPath<String>,
    headers: HeaderMap,
    ApiJsonBytes(body): ApiJsonBytes,
) -> Result<(StatusCode, Json<PublishOut>), ApiError> {
    crate::router::pattern::validate_topic(&topic)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_topic", e.to_string()))?;
    let mut messages = messages_from_body(&state.limits, &principal, &headers, &body)?;
    let single = messages.len() == 1;
    for (i, m) in messages.iter_mut().enumerate() {
        match &m.topic {
            Some(t) if *t != topic => {
                let field = if single {
                    String::new()
                } else {
                    format!("messages[{i}].")
                };
                return Err(ApiError::invalid(format!(
                    "{field}topic is {t:?}, but the message is published to {topic:?}; \
                     leave it out or make them equal"
                )));
            }
            _ => m.topic = Some(topic.clone()),
        }
    }
    let published = state.dispatcher.router().publish(&topic, messages).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(PublishOut {
            ids: published.iter().map(|p| p.id.to_string()).collect(),
            deliveries: published.into_iter().map(DeliveryOut::from).collect(),
        }),
    ))
}

/// What happens to a message that no matching route delivers.
#[derive(Debug, Serialize, ToSchema)]
pub struct OtherwiseOut {
    /// `implicit`: the queue named like the topic; `unroutable`: `[router] unroutable_queue`;
    /// `refused`: the publish is refused with `no_route` and nothing is stored.
    #[schema(value_type = String, example = "implicit")]
    pub outcome: &'static str,
    /// The queue for `implicit` and `unroutable`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
}

/// `GET /v1/topics/{topic}/routes`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReachOut {
    pub topic: String,
    /// Routes whose pattern matches the topic, in fan-out order. Each still delivers only when
    /// its header conditions hold, through its filter if it has one.
    pub routes: Vec<RouteOut>,
    /// Where a message goes when none of `routes` delivers it.
    pub otherwise: OtherwiseOut,
}

/// `GET /v1/topics/{topic}/routes`: which routes a publish to the topic would reach.
#[utoipa::path(
    get,
    path = "/v1/topics/{topic}/routes",
    tag = tags::ROUTES,
    operation_id = "topic_routes",
    summary = "Which routes a topic reaches",
    description = "The routes whose pattern matches the topic, in fan-out order, and where a \
                   message goes that none of them delivers (their header conditions decide per \
                   message; filters are not run). Nothing is published or counted.",
    params(("topic" = String, Path, description = "Dot-separated words of `A-Z a-z 0-9 _ -` \
                                                    (no wildcards).")),
    responses(
        (status = 200, description = "The matching routes and the fallback.", body = ReachOut),
        (status = 400, description = "`invalid_topic`: the topic is not valid.", body = ErrorBody),
    ),
)]
pub async fn reach(
    State(state): State<AppState>,
    ApiPath(topic): ApiPath<String>,
) -> Result<Json<ReachOut>, ApiError> {
    let reach = state.dispatcher.router().reach(&topic).await?;
    let (outcome, queue) = match reach.otherwise {
        Otherwise::Implicit(q) => ("implicit", Some(q)),
        Otherwise::Unroutable(q) => ("unroutable", Some(q)),
        Otherwise::Refused => ("refused", None),
    };
    Ok(Json(ReachOut {
        topic,
        routes: reach.routes.into_iter().map(RouteOut::from).collect(),
        otherwise: OtherwiseOut { outcome, queue },
    }))
}

//! Routes: bindings of topic patterns to queues, optionally through a filter plugin.
//!
//! Changes go through the [`Router`](crate::router::Router), which checks them and reloads its
//! index after the store has committed them.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::dto::rfc3339;
use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJsonBytes, ApiPath, parse_json};
use super::openapi::tags;
use crate::model::{FilterLimits, NewRoute, Route, RouteId, whole};
use crate::router::RouteError;
use crate::store::StoreError;

/// Body of `POST /v1/routes`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"pattern": "orders.*.paid", "queue": "billing",
    "headers": {"region": "eu"}}))]
pub struct RouteIn {
    /// Dot-separated words; `*` matches exactly one word, `#` zero or more.
    pub pattern: String,
    /// The queue that receives what the route matches; it must exist.
    pub queue: String,
    /// A deployed `filter`-world plugin that decides per message (deliver, redirect, drop,
    /// transform).
    pub filter: Option<String>,
    /// Exact-match conditions on the message's headers (names case-insensitive), all of which
    /// must hold (at most 32).
    pub headers: Option<BTreeMap<String, String>>,
    /// The filter's wall-clock limit per message (needs `filter`); default `[router]
    /// filter_timeout_ms`.
    #[serde(default, deserialize_with = "whole::deserialize")]
    #[schema(minimum = 1, maximum = 60000)]
    pub timeout_ms: Option<u64>,
    /// The filter's fuel per message (needs `filter`); default `[router] filter_fuel`.
    #[serde(default, deserialize_with = "whole::deserialize")]
    #[schema(minimum = 1)]
    pub fuel: Option<u64>,
    /// The filter's memory cap (needs `filter`); default `[router] filter_memory_mb`.
    #[serde(default, deserialize_with = "whole::deserialize")]
    #[schema(minimum = 1, maximum = 4096)]
    pub memory_mb: Option<u32>,
}

impl RouteIn {
    pub fn into_new(self) -> NewRoute {
        NewRoute {
            pattern: self.pattern,
            queue: self.queue,
            filter: self.filter,
            headers: self.headers.unwrap_or_default().into_iter().collect(),
            limits: FilterLimits {
                timeout_ms: self.timeout_ms,
                fuel: self.fuel,
                memory_mb: self.memory_mb,
            },
        }
    }
}

/// A route as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct RouteOut {
    pub id: String,
    pub pattern: String,
    pub queue: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// Header conditions; empty when there are none.
    pub headers: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u32>,
    #[schema(format = DateTime)]
    pub created_at: String,
    pub created_at_ms: i64,
    /// Deliveries committed through this route since it was created.
    pub delivered: u64,
}

impl From<Route> for RouteOut {
    fn from(r: Route) -> Self {
        RouteOut {
            id: r.id.to_string(),
            pattern: r.pattern,
            queue: r.queue,
            filter: r.filter,
            headers: r.headers.into_iter().collect(),
            timeout_ms: r.limits.timeout_ms,
            fuel: r.limits.fuel,
            memory_mb: r.limits.memory_mb,
            created_at: rfc3339(r.created_at),
            created_at_ms: r.created_at,
            delivered: r.delivered,
        }
    }
}

/// `GET /v1/routes`.
#[derive(Debug, Serialize, ToSchema)]
pub struct RoutesOut {
    /// By id (creation order, which is also the order of fan-out).
    pub routes: Vec<RouteOut>,
    /// Messages published on this server since it started that no route matched and that went
    /// to `[router] unroutable_queue`.
    pub unroutable_total: u64,
    /// Deliveries of messages published on this server since it started.
    pub published_total: u64,
}

/// Parses a route id from the path.
fn parse_route_id(s: &str) -> Result<RouteId, ApiError> {
    s.parse::<RouteId>()
        .ok()
        .filter(|id| *id > 0 && id.to_string() == s)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_id",
                format!(
                    "{s:?} is not a route id; ids are positive decimal integers without sign or \
                     leading zeros"
                ),
            )
        })
}

/// `POST /v1/routes`.
#[utoipa::path(
    post,
    path = "/v1/routes",
    tag = tags::ROUTES,
    operation_id = "create_route",
    summary = "Create a route",
    description = "Binds a topic pattern to a queue, optionally with header conditions and a \
                   filter plugin (with its own limits). A route identical to an existing one \
                   (same pattern, queue, filter, headers and limits) is not created twice: the \
                   existing one comes back with 200.",
    request_body(content = RouteIn, content_type = "application/json"),
    responses(
        (status = 201, description = "Created.", body = RouteOut),
        (status = 200, description = "An identical route exists already; here it is.",
         body = RouteOut),
        (status = 400, description = "`invalid_request`: a field is wrong (the message names it): \
                                      a pattern or header condition that is not valid, limits \
                                      out of range or without a filter, a queue that does not \
                                      exist, a filter that is not deployed or not a `filter` \
                                      plugin; `invalid_json`: the body is not JSON.",
         body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the body is larger than a route can \
                                      be.", body = ErrorBody),
    ),
)]
pub async fn create(
    State(state): State<AppState>,
    ApiJsonBytes(body): ApiJsonBytes,
) -> Result<(StatusCode, Json<RouteOut>), ApiError> {
    let route: RouteIn = parse_json(&body)?;
    let route = route.into_new();
    let (queue, filter) = (route.queue.clone(), route.filter.clone());
    let (route, created) =
        state
            .dispatcher
            .router()
            .add_route(route)
            .await
            .map_err(|e| match e {
                // What the body names must exist: a client mistake in the body, not a missing
                // resource at the URL.
                RouteError::Store(StoreError::QueueNotFound(_)) => ApiError::invalid(format!(
                    "queue: queue {queue:?} does not exist; create it first \
                 (`PUT /v1/queues/{queue}`, `spool queue create {queue}`)"
                )),
                RouteError::Store(StoreError::PluginNotFound(_)) => ApiError::invalid(format!(
                    "filter: plugin {:?} is not deployed; deploy a filter plugin under that name \
                 first (`spool plugin deploy NAME FILE.wasm`)",
                    filter.unwrap_or_default()
                )),
                RouteError::Store(StoreError::WrongWorld(m)) => {
                    ApiError::invalid(format!("filter: {m}"))
                }
                other => other.into(),
            })?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(route.into())))
}

/// `GET /v1/routes`.
#[utoipa::path(
    get,
    path = "/v1/routes",
    tag = tags::ROUTES,
    operation_id = "list_routes",
    summary = "List routes",
    description = "Every route by id, with how many deliveries each made, and this server's \
                   publish totals since it started.",
    responses((status = 200, description = "The routes.", body = RoutesOut)),
)]
pub async fn list(State(state): State<AppState>) -> Result<Json<RoutesOut>, ApiError> {
    let router = state.dispatcher.router();
    let routes = router.routes().await?;
    let stats = router.stats();
    Ok(Json(RoutesOut {
        routes: routes.into_iter().map(RouteOut::from).collect(),
        unroutable_total: stats.unroutable,
        published_total: stats.published,
    }))
}

/// `GET /v1/routes/{id}`.
#[utoipa::path(
    get,
    path = "/v1/routes/{id}",
    tag = tags::ROUTES,
    operation_id = "get_route",
    summary = "One route",
    description = "The route with how many deliveries it made.",
    params(("id" = String, Path, description = "The route's id.")),
    responses(
        (status = 200, description = "The route.", body = RouteOut),
        (status = 400, description = "`invalid_id`: ids are positive decimal integers.",
         body = ErrorBody),
        (status = 404, description = "`route_not_found`: no such route.", body = ErrorBody),
    ),
)]
pub async fn get(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<RouteOut>, ApiError> {
    let id = parse_route_id(&id)?;
    let route = state
        .dispatcher
        .router()
        .routes()
        .await?
        .into_iter()
        .find(|r| r.id == id)
        .ok_or(StoreError::RouteNotFound(id))?;
    Ok(Json(route.into()))
}

/// `DELETE /v1/routes/{id}`.
#[utoipa::path(
    delete,
    path = "/v1/routes/{id}",
    tag = tags::ROUTES,
    operation_id = "delete_route",
    summary = "Delete a route",
    description = "Deletes the route; publishes from now on no longer match it. Messages it \
                   delivered stay in their queues. Its filter's dead letters replay to its \
                   queue as they are.",
    params(("id" = String, Path, description = "The route's id.")),
    responses(
        (status = 200, description = "Deleted; the route as it was.", body = RouteOut),
        (status = 400, description = "`invalid_id`: ids are positive decimal integers.",
         body = ErrorBody),
        (status = 404, description = "`route_not_found`: no such route.", body = ErrorBody),
    ),
)]
pub async fn delete(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<RouteOut>, ApiError> {
    let id = parse_route_id(&id)?;
    let route = state.dispatcher.router().delete_route(id).await?;
    Ok(Json(route.into()))
}

//! The HTTP admin API (DESIGN §7): axum handlers over the [`Store`], the plugin registry and the
//! dispatcher.
//!
//! - [`error`]: [`ApiError`](error::ApiError), the one JSON error shape, and how store and
//!   registry errors map to statuses.
//! - [`extract`]: extractors whose rejections are JSON too.
//! - [`dto`]: request/response bodies (the field names are the contract).
//! - [`messages`], [`queues`], [`plugins`], [`dlq`], [`routes`], [`topics`], [`schedules`],
//!   [`health`], [`metrics`], [`admin`]: one file per resource.
//! - [`backup_target`]: where a backup may be written (inside `[admin] backup_dir` only).
//! - [`openapi`]: `GET /openapi.json`, built from the handlers' `#[utoipa::path]` annotations by
//!   the same registrations that route requests.
//!
//! Handlers validate everything before they call the store, and every store call is atomic, so a
//! rejected request changes nothing.

pub mod admin;
pub mod backup_target;
pub mod dlq;
pub mod dto;
pub mod error;
pub mod extract;
pub mod guard;
pub mod health;
pub mod messages;
pub mod metrics;
pub mod openapi;
pub mod plugin_config;
pub mod plugins;
pub mod queues;
pub mod routes;
pub mod schedules;
pub mod server;
pub mod topics;
pub mod whoami;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, Request};
use axum::http::Method;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::{Extension, Router};
use utoipa::OpenApi as _;
use utoipa_axum::router::{OpenApiRouter, UtoipaMethodRouterExt as _};
use utoipa_axum::routes;

use crate::auth::Tokens;
use crate::dispatch::Dispatcher;
use crate::metrics::Metrics;
use crate::plugins::PluginRegistry;
use crate::scheduler::Scheduler;
use crate::store::Store;

/// Size and time limits on what clients may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiLimits {
    /// Largest payload of one message.
    pub max_payload_bytes: usize,
    /// Most messages in one `{"messages": [...]}` batch.
    pub max_batch: usize,
    /// Largest enqueue request body (a batch of many payloads).
    pub max_body_bytes: usize,
    /// Largest plugin upload.
    pub max_plugin_bytes: usize,
    /// How long one request may run before it is answered with 503.
    pub request_timeout: Duration,
    /// How long a connection may take to send a complete request head before it is closed.
    pub header_read_timeout: Duration,
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            max_payload_bytes: 1024 * 1024,
            max_batch: 1000,
            max_body_bytes: 16 * 1024 * 1024,
            max_plugin_bytes: 64 * 1024 * 1024,
            request_timeout: Duration::from_secs(60),
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

/// The route template of enqueue, the one JSON endpoint that takes large bodies.
pub const ENQUEUE_ROUTE: &str = "/v1/queues/{queue}/messages";
/// The route template of publish, which takes the same bodies as enqueue.
pub const PUBLISH_ROUTE: &str = "/v1/topics/{topic}/messages";
/// The route template of plugin upload.
pub const DEPLOY_ROUTE: &str = "/v1/plugins/{name}";

impl ApiLimits {
    /// The largest request body the route `route` (a template such as [`ENQUEUE_ROUTE`], `None`
    /// when no route matched) takes with `method`. The router sets each route's
    /// `DefaultBodyLimit` from this, and the guard refuses larger announced bodies up front.
    pub fn body_limit(&self, method: &Method, route: Option<&str>) -> usize {
        match (method, route) {
            (&Method::POST, Some(ENQUEUE_ROUTE | PUBLISH_ROUTE)) => self.max_body_bytes,
            (&Method::PUT, Some(DEPLOY_ROUTE)) => self.max_plugin_bytes,
            _ => SMALL_BODY_BYTES,
        }
    }
}

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub registry: Arc<PluginRegistry>,
    pub dispatcher: Dispatcher,
    pub limits: ApiLimits,
    /// This server's delivery metrics (the dispatcher's observer), for stats and `/metrics`.
    pub metrics: Arc<Metrics>,
    /// API tokens; empty: no authentication (the server then listens on loopback only).
    pub auth: Arc<Tokens>,
    /// The schedule timer, woken when schedules change; also the API's clock for them.
    pub scheduler: Scheduler,
    /// `[admin] backup_dir` (absolute, links resolved); `None`: backups are refused.
    pub backup_dir: Option<std::path::PathBuf>,
}

/// Bodies of the small JSON endpoints (queue config) never need more than this.
const SMALL_BODY_BYTES: usize = 64 * 1024;

/// The complete API.
pub fn router(state: AppState) -> Router {
    let limits = state.limits;
    // Each `routes!` takes a handler's path and methods from its `#[utoipa::path]`, routes them
    // and adds the operation to the OpenAPI document: a route cannot be left undocumented.
    let (routes, mut description) = OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(
            routes!(messages::enqueue, messages::list).layer(DefaultBodyLimit::max(
                limits.body_limit(&Method::POST, Some(ENQUEUE_ROUTE)),
            )),
        )
        .routes(routes!(queues::list))
        .routes(routes!(queues::get, queues::put, queues::delete))
        .routes(routes!(queues::reset_breaker))
        .routes(routes!(queues::history))
        .routes(routes!(messages::get, messages::cancel))
        .routes(routes!(messages::trace))
        .routes(routes!(messages::requeue))
        .routes(routes!(topics::publish).layer(DefaultBodyLimit::max(
            limits.body_limit(&Method::POST, Some(PUBLISH_ROUTE)),
        )))
        .routes(routes!(topics::reach))
        .routes(routes!(routes::list, routes::create))
        .routes(routes!(routes::get, routes::delete))
        .routes(routes!(schedules::list, schedules::create))
        .routes(routes!(
            schedules::get,
            schedules::update,
            schedules::delete
        ))
        .routes(routes!(schedules::pause))
        .routes(routes!(schedules::resume))
        .routes(routes!(schedules::run))
        .routes(routes!(plugins::deploy).layer(DefaultBodyLimit::max(
            limits.body_limit(&Method::PUT, Some(DEPLOY_ROUTE)),
        )))
        .routes(routes!(plugins::list))
        .routes(routes!(plugins::get, plugins::delete))
        .routes(routes!(plugins::rollback))
        .routes(routes!(plugins::activate))
        .routes(routes!(
            plugin_config::get_config,
            plugin_config::put_config
        ))
        .routes(routes!(
            plugin_config::get_grants,
            plugin_config::put_grants
        ))
        .routes(routes!(dlq::list))
        .routes(routes!(dlq::replay_matching))
        .routes(routes!(dlq::purge_matching))
        .routes(routes!(dlq::purge))
        .routes(routes!(dlq::replay))
        .routes(routes!(dlq::reviewed))
        .routes(routes!(admin::check))
        .routes(routes!(admin::backup))
        .routes(routes!(health::healthz))
        .routes(routes!(metrics::metrics_handler))
        .routes(routes!(health::readyz))
        .routes(routes!(openapi::document))
        .routes(routes!(whoami::whoami))
        .split_for_parts();
    openapi::complete(&mut description);
    routes
        .merge(crate::ui::router())
        // Applies to the routes above only, so it must come after them.
        .method_not_allowed_fallback(error::method_not_allowed)
        .fallback(error::not_found)
        // What `GET /openapi.json` serves.
        .layer(Extension(openapi::Served::new(
            &description,
            &limits,
            !state.auth.is_empty(),
        )))
        // Route-level limits above override this default for the endpoints that take big bodies.
        .layer(DefaultBodyLimit::max(limits.body_limit(&Method::GET, None)))
        // Layers run outside-in from the last one: log, then limits, then authentication.
        .layer(middleware::from_fn_with_state(
            state.auth.clone(),
            guard::authenticate,
        ))
        .layer(middleware::from_fn_with_state(limits, guard::limit))
        .layer(middleware::from_fn(log_request))
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` resolves, then lets in-flight requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "admin API listening");
    }
    let header_read_timeout = state.limits.header_read_timeout;
    server::serve(listener, router(state), header_read_timeout, shutdown).await
}

/// One debug line per request. Only method, path, status and latency: payloads and query
/// strings can carry user data.
async fn log_request(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let start = Instant::now();
    let response = next.run(req).await;
    tracing::debug!(
        %method,
        path,
        status = response.status().as_u16(),
        latency_us = start.elapsed().as_micros() as u64,
        "http request"
    );
    response
}

#[cfg(test)]
mod tests;

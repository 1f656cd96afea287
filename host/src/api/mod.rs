//! The HTTP admin API (DESIGN §7): axum handlers over the [`Store`], the plugin registry and the
//! dispatcher.
//!
//! - [`error`]: [`ApiError`](error::ApiError), the one JSON error shape, and how store and
//!   registry errors map to statuses.
//! - [`extract`]: extractors whose rejections are JSON too.
//! - [`dto`]: request/response bodies (the field names are the contract).
//! - [`messages`], [`queues`], [`plugins`], [`dlq`], [`health`]: one file per resource.
//!
//! Handlers validate everything before they call the store, and every store call is atomic, so a
//! rejected request changes nothing.

pub mod dlq;
pub mod dto;
pub mod error;
pub mod extract;
pub mod health;
pub mod messages;
pub mod plugins;
pub mod queues;

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post, put};

use crate::dispatch::Dispatcher;
use crate::runtime::registry::PluginRegistry;
use crate::store::Store;

/// Size limits on what clients may send.
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
}

impl Default for ApiLimits {
    fn default() -> Self {
        ApiLimits {
            max_payload_bytes: 1024 * 1024,
            max_batch: 1000,
            max_body_bytes: 16 * 1024 * 1024,
            max_plugin_bytes: 64 * 1024 * 1024,
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
}

/// Bodies of the small JSON endpoints (queue config) never need more than this.
const SMALL_BODY_BYTES: usize = 64 * 1024;

/// The complete API.
pub fn router(state: AppState) -> Router {
    let limits = state.limits;
    Router::new()
        .route(
            "/v1/queues/{queue}/messages",
            post(messages::enqueue)
                .get(messages::list)
                .layer(DefaultBodyLimit::max(limits.max_body_bytes)),
        )
        .route("/v1/queues", get(queues::list))
        .route("/v1/queues/{queue}", get(queues::get).put(queues::put))
        .route(
            "/v1/messages/{id}",
            get(messages::get).delete(messages::cancel),
        )
        .route(
            "/v1/plugins/{name}",
            put(plugins::deploy).layer(DefaultBodyLimit::max(limits.max_plugin_bytes)),
        )
        .route("/v1/plugins", get(plugins::list))
        .route("/v1/plugins/{name}/rollback", post(plugins::rollback))
        .route("/v1/dlq", get(dlq::list))
        .route("/v1/dlq/{id}", axum::routing::delete(dlq::purge))
        .route("/v1/dlq/{id}/replay", post(dlq::replay))
        .route("/v1/dlq/{id}/reviewed", post(dlq::reviewed))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        // Applies to the routes above only, so it must come after them.
        .method_not_allowed_fallback(error::method_not_allowed)
        .fallback(error::not_found)
        // Route-level limits above override this default for the endpoints that take big bodies.
        .layer(DefaultBodyLimit::max(SMALL_BODY_BYTES))
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
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
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

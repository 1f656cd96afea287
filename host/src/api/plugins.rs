//! Deploying, listing and rolling back plugins.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use utoipa::ToSchema;

use super::AppState;
use super::dto::{PluginVersionOut, PluginsOut};
use super::error::{ApiError, ErrorBody};
use super::extract::{ApiBytes, ApiPath};
use super::openapi::tags;

/// A WebAssembly component: the raw body of a plugin upload, whatever its content type.
#[derive(Debug, ToSchema)]
#[schema(value_type = String, format = Binary, content_media_type = "application/wasm")]
pub struct ComponentBytes(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for ComponentBytes {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let ApiBytes(bytes) = ApiBytes::from_request(req, state).await?;
        Ok(ComponentBytes(bytes))
    }
}

/// `PUT /v1/plugins/{name}`: the body is the component's bytes. The registry validates the
/// component before storing it, so a rejected upload leaves the active version untouched.
#[utoipa::path(
    put,
    path = "/v1/plugins/{name}",
    tag = tags::PLUGINS,
    operation_id = "deploy_plugin",
    summary = "Deploy a plugin version",
    description = "Uploads a WebAssembly component (the raw bytes, e.g. `curl -X PUT \
                   --data-binary @plugin.wasm`). It is compiled and checked against the \
                   `spool:plugin` worlds before it is stored; then it becomes the next version \
                   and is activated. Messages already running finish on the old version; a \
                   rejected upload leaves the active version untouched.",
    params(("name" = String, Path, description = "The plugin's name: 1 to 128 characters of \
                                                   `A-Z a-z 0-9 . _ -`.")),
    request_body(content = ComponentBytes, content_type = "application/wasm",
                 description = "The component's bytes (`application/octet-stream` and other \
                                content types are accepted too)."),
    responses(
        (status = 201, description = "Stored and activated.", body = PluginVersionOut),
        (status = 400, description = "`invalid_plugin`: the body is empty or not a WebAssembly \
                                      component; `invalid_name`: the plugin name is not valid.",
         body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the component is larger than \
                                      `[limits] max_plugin_bytes`.", body = ErrorBody),
        (status = 422, description = "`wrong_world`: a component, but not a Spool handler or \
                                      filter (the message says what it exports).",
         body = ErrorBody),
    ),
)]
pub async fn deploy(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ComponentBytes(body): ComponentBytes,
) -> Result<(StatusCode, Json<PluginVersionOut>), ApiError> {
    if body.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_plugin",
            "the request body is empty; send the component's bytes, e.g. \
             `curl -X PUT --data-binary @plugin.wasm .../v1/plugins/NAME`",
        ));
    }
    let version = state.registry.deploy(&name, body.to_vec()).await?;
    state.dispatcher.plugin_changed();
    Ok((StatusCode::CREATED, Json(version.into())))
}

/// `GET /v1/plugins`, with each plugin's error counts on this server since it started.
#[utoipa::path(
    get,
    path = "/v1/plugins",
    tag = tags::PLUGINS,
    operation_id = "list_plugins",
    summary = "Plugins with their versions",
    description = "Every plugin with all its versions, the active one, and its failed \
                   deliveries on this server since it started, by error category.",
    responses((status = 200, description = "The plugins, by name.", body = PluginsOut)),
)]
pub async fn list(State(state): State<AppState>) -> Result<Json<PluginsOut>, ApiError> {
    let mut out = PluginsOut::group(state.registry.list().await?);
    for p in &mut out.plugins {
        p.errors = state.metrics.plugin_errors(&p.name);
    }
    Ok(Json(out))
}

/// `POST /v1/plugins/{name}/rollback`: re-activates the version before the active one.
#[utoipa::path(
    post,
    path = "/v1/plugins/{name}/rollback",
    tag = tags::PLUGINS,
    operation_id = "rollback_plugin",
    summary = "Roll back to the previous version",
    description = "Re-activates the version before the active one. Takes no body.",
    params(("name" = String, Path, description = "The plugin's name.")),
    responses(
        (status = 200, description = "The version that is now active.", body = PluginVersionOut),
        (status = 404, description = "`plugin_not_found`: no such plugin.", body = ErrorBody),
        (status = 409, description = "`no_previous_version`: the active version is the first.",
         body = ErrorBody),
    ),
)]
pub async fn rollback(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<PluginVersionOut>, ApiError> {
    let version = state.registry.rollback(&name).await?;
    state.dispatcher.plugin_changed();
    Ok(Json(version.into()))
}

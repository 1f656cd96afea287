//! Deploying, listing, inspecting, activating, rolling back and deleting plugins.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use utoipa::ToSchema;

use super::AppState;
use super::dto::{
    ActivationOut, DeployOut, PluginDeletedOut, PluginDetailOut, PluginVersionOut, PluginsOut,
};
use super::error::{ApiError, ErrorBody};
use super::extract::{ApiBytes, ApiPath};
use super::openapi::tags;
use crate::auth::Principal;
use crate::model::validate_name;

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
                   and is activated. The bytes of an existing version activate that version \
                   again instead (`new_version: false`; no copy is stored). Messages already \
                   running finish on the old version; a rejected upload leaves the active \
                   version untouched. Recorded in the plugin's history with the token's name.",
    params(("name" = String, Path, description = "The plugin's name: 1 to 128 characters of \
                                                   `A-Z a-z 0-9 . _ -`.")),
    request_body(content = ComponentBytes, content_type = "application/wasm",
                 description = "The component's bytes (`application/octet-stream` and other \
                                content types are accepted too)."),
    responses(
        (status = 201, description = "Stored and activated, or (`new_version: false`) an existing \
                                      version with the same bytes activated.", body = DeployOut),
        (status = 400, description = "`invalid_plugin`: the body is empty or not a WebAssembly \
                                      component; `invalid_name`: the plugin name is not valid; \
                                      `world_mismatch`: queues use this plugin as their handler \
                                      but the component is not a handler (the message names \
                                      its world and the queues).",
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
    Extension(principal): Extension<Principal>,
    ApiPath(name): ApiPath<String>,
    ComponentBytes(body): ComponentBytes,
) -> Result<(StatusCode, Json<DeployOut>), ApiError> {
    if body.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_plugin",
            "the request body is empty; send the component's bytes, e.g. \
             `curl -X PUT --data-binary @plugin.wasm .../v1/plugins/NAME`",
        ));
    }
    let deployed = state
        .registry
        .deploy(&name, body.to_vec(), principal.name.as_deref())
        .await?;
    state.dispatcher.plugin_changed();
    let mut out = DeployOut::from(deployed);
    out.compiled = compiled(&state, &name, out.version.version);
    Ok((StatusCode::CREATED, Json(out)))
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
        p.compiled = p.active_version.and_then(|v| compiled(&state, &p.name, v));
        with_version_stats(&state, &mut p.versions);
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
    description = "Re-activates the version before the active one (by number). Takes no body. \
                   Recorded in the plugin's history with the token's name.",
    params(("name" = String, Path, description = "The plugin's name.")),
    responses(
        (status = 200, description = "The version that is now active.", body = PluginVersionOut),
        (status = 400, description = "`world_mismatch`: queues use this plugin as their handler \
                                      but that version is not a handler.", body = ErrorBody),
        (status = 404, description = "`plugin_not_found`: no such plugin.", body = ErrorBody),
        (status = 409, description = "`no_previous_version`: the active version is the first.",
         body = ErrorBody),
    ),
)]
pub async fn rollback(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<PluginVersionOut>, ApiError> {
    let version = state
        .registry
        .rollback(&name, principal.name.as_deref())
        .await?;
    state.dispatcher.plugin_changed();
    Ok(Json(version.into()))
}

/// `POST /v1/plugins/{name}/versions/{n}/activate`: makes version `n` the active one.
#[utoipa::path(
    post,
    path = "/v1/plugins/{name}/versions/{version}/activate",
    tag = tags::PLUGINS,
    operation_id = "activate_plugin_version",
    summary = "Activate a version by number",
    description = "Makes version `version` the active one, earlier or later than the active \
                   one. Takes no body. Activating the active version changes nothing. Messages \
                   already running finish on the version they started with. Recorded in the \
                   plugin's history with the token's name.",
    params(
        ("name" = String, Path, description = "The plugin's name."),
        ("version" = u32, Path, description = "The version number, as `GET /v1/plugins/{name}` \
                                               lists them."),
    ),
    responses(
        (status = 200, description = "The version that is now active.", body = PluginVersionOut),
        (status = 400, description = "`world_mismatch`: queues use this plugin as their handler \
                                      but that version is not a handler; `invalid_request`: \
                                      the version is not a number.", body = ErrorBody),
        (status = 404, description = "`plugin_not_found`: no such plugin; \
                                      `plugin_version_not_found`: it has no such version.",
         body = ErrorBody),
    ),
)]
pub async fn activate(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath((name, version)): ApiPath<(String, u32)>,
) -> Result<Json<PluginVersionOut>, ApiError> {
    check_plugin_name(&name)?;
    let version = state
        .registry
        .activate_version(&name, version, principal.name.as_deref())
        .await?;
    state.dispatcher.plugin_changed();
    Ok(Json(version.into()))
}

/// `GET /v1/plugins/{name}`: one plugin with its versions, errors and activation history.
#[utoipa::path(
    get,
    path = "/v1/plugins/{name}",
    tag = tags::PLUGINS,
    operation_id = "get_plugin",
    summary = "One plugin with its versions and history",
    description = "The plugin as `GET /v1/plugins` lists it (versions, the active one, failed \
                   deliveries on this server by error category) plus `history`: every change of \
                   the active version, oldest first, with who made it (the API token's name), \
                   when, from which version to which, and how (`deploy`, `rollback`, \
                   `activate`), and `compiled`: how the active version's code is compiled on \
                   this server (`baseline` while its optimised code compiles in the \
                   background, then `optimized`).",
    params(("name" = String, Path, description = "The plugin's name.")),
    responses(
        (status = 200, description = "The plugin.", body = PluginDetailOut),
        (status = 400, description = "`invalid_name`: the plugin name is not valid.",
         body = ErrorBody),
        (status = 404, description = "`plugin_not_found`: no such plugin.", body = ErrorBody),
    ),
)]
pub async fn get(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<PluginDetailOut>, ApiError> {
    check_plugin_name(&name)?;
    let versions = state
        .registry
        .list()
        .await?
        .into_iter()
        .filter(|v| v.name == name)
        .collect();
    let history = state.store.plugin_history(&name).await?;
    let Some(mut plugin) = PluginsOut::group(versions).plugins.pop() else {
        return Err(crate::store::StoreError::PluginNotFound(name).into());
    };
    plugin.errors = state.metrics.plugin_errors(&plugin.name);
    plugin.compiled = plugin
        .active_version
        .and_then(|v| compiled(&state, &plugin.name, v));
    with_version_stats(&state, &mut plugin.versions);
    Ok(Json(PluginDetailOut {
        plugin,
        history: history.into_iter().map(ActivationOut::from).collect(),
    }))
}

/// Fills in each version's deliveries on this server.
fn with_version_stats(state: &AppState, versions: &mut [PluginVersionOut]) {
    for v in versions {
        let stats = state.metrics.version_stats(&v.name, v.version);
        v.outcomes = stats.outcomes;
        v.errors = stats.errors;
    }
}

/// `DELETE /v1/plugins/{name}`: every version, the history and the key-value data.
#[utoipa::path(
    delete,
    path = "/v1/plugins/{name}",
    tag = tags::PLUGINS,
    operation_id = "delete_plugin",
    summary = "Delete a plugin",
    description = "Deletes every version of the plugin, its activation history and its \
                   key-value data, and reports how much was removed. Refused while a queue uses \
                   it as its handler or a route as its filter: change or delete those first.",
    params(("name" = String, Path, description = "The plugin's name.")),
    responses(
        (status = 200, description = "Deleted.", body = PluginDeletedOut),
        (status = 400, description = "`invalid_name`: the plugin name is not valid.",
         body = ErrorBody),
        (status = 404, description = "`plugin_not_found`: no such plugin.", body = ErrorBody),
        (status = 409, description = "`plugin_in_use`: queues use it as their handler or \
                                      routes as their filter (the message names them).",
         body = ErrorBody),
    ),
)]
pub async fn delete(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<PluginDeletedOut>, ApiError> {
    check_plugin_name(&name)?;
    let deleted = state.registry.delete(&name).await?;
    state.dispatcher.plugin_changed();
    Ok(Json(deleted.into()))
}

fn check_plugin_name(name: &str) -> Result<(), ApiError> {
    validate_name("plugin", name)
        .map_err(|m| ApiError::new(StatusCode::BAD_REQUEST, "invalid_name", m))
}

/// The tier of `name`'s loaded code, if what is loaded is `version`.
fn compiled(state: &AppState, name: &str, version: u32) -> Option<&'static str> {
    match state.registry.compiled(name) {
        Some((loaded, tier)) if loaded == version => Some(tier.as_str()),
        _ => None,
    }
}

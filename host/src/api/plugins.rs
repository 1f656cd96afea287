//! Deploying, listing and rolling back plugins.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

use super::AppState;
use super::dto::{PluginVersionOut, PluginsOut};
use super::error::ApiError;
use super::extract::{ApiBytes, ApiPath};

/// `PUT /v1/plugins/{name}`: the body is the component's bytes. The registry validates the
/// component before storing it, so a rejected upload leaves the active version untouched.
pub async fn deploy(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiBytes(body): ApiBytes,
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

/// `GET /v1/plugins`.
pub async fn list(State(state): State<AppState>) -> Result<Json<PluginsOut>, ApiError> {
    Ok(Json(PluginsOut::group(state.registry.list().await?)))
}

/// `POST /v1/plugins/{name}/rollback`: re-activates the version before the active one.
pub async fn rollback(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<PluginVersionOut>, ApiError> {
    let version = state.registry.rollback(&name).await?;
    state.dispatcher.plugin_changed();
    Ok(Json(version.into()))
}

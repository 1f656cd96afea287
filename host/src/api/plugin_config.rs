//! A plugin's configuration values and write-only secrets (`/v1/plugins/{name}/config`).
//!
//! Secrets are returned by name only: no response, log line or error message carries a
//! secret's value (the request log records method, path and status, never bodies).

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJson, ApiPath};
use super::openapi::tags;
use crate::model::{ConfigChange, PluginGrants, PluginSettings};
use crate::plugins::FileSettings;

/// Changes to a plugin's configuration: each key given is set, `null` removes it; keys not
/// given stay as they are.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"values": {"endpoint": "http://127.0.0.1:8080/hook"},
                          "secrets": {"api_key": "s3cr3t"}}))]
pub struct PluginConfigIn {
    /// Plain values, readable back through the API. `null` removes the key.
    #[serde(default)]
    pub values: BTreeMap<String, Option<String>>,
    /// Write-only secrets: the plugin reads them like values, the API lists their names only.
    /// `null` removes the key.
    #[serde(default)]
    pub secrets: BTreeMap<String, Option<String>>,
}

/// A plugin's configuration and grants as the API shows them: secrets by name only.
#[derive(Debug, Serialize, ToSchema)]
pub struct PluginConfigOut {
    pub plugin: String,
    /// Values set through the API (they override `file_values` of the same key).
    pub values: BTreeMap<String, String>,
    /// Names of the secrets set through the API; their values are never returned.
    pub secrets: Vec<String>,
    /// spool.toml's `[plugins.NAME.config]`.
    pub file_values: BTreeMap<String, String>,
    /// What the plugin is granted: spool.toml's `[plugins.NAME]` grants, each field overridden
    /// by the API's when set there.
    pub grants: PluginGrants,
    /// The grants set through the API (`PUT /v1/plugins/{name}/grants`).
    pub api_grants: PluginGrants,
}

impl PluginConfigOut {
    pub fn new(plugin: &str, stored: PluginSettings, file: FileSettings) -> PluginConfigOut {
        PluginConfigOut {
            plugin: plugin.to_owned(),
            grants: file.grants.overridden_by(&stored.grants),
            values: stored.values,
            secrets: stored.secrets.into_keys().collect(),
            file_values: file.config,
            api_grants: stored.grants,
        }
    }
}

/// `GET /v1/plugins/{name}/config`.
#[utoipa::path(
    get,
    path = "/v1/plugins/{name}/config",
    tag = tags::PLUGINS,
    operation_id = "get_plugin_config",
    summary = "A plugin's configuration (secrets by name)",
    description = "The values and the names of the secrets set through the API, spool.toml's \
                   values, and the plugin's grants. Secret values are never returned. The \
                   plugin need not be deployed: configuration set beforehand applies to every \
                   version.",
    params(("name" = String, Path, description = "The plugin's name.")),
    responses(
        (status = 200, description = "The configuration.", body = PluginConfigOut),
        (status = 400, description = "`invalid_name`: the plugin name is not valid.",
         body = ErrorBody),
    ),
)]
pub async fn get_config(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<PluginConfigOut>, ApiError> {
    let stored = state.registry.stored_settings(&name).await?;
    let file = state.registry.file_settings(&name);
    Ok(Json(PluginConfigOut::new(&name, stored, file)))
}

/// `PUT /v1/plugins/{name}/config`: merges the changes into the stored configuration.
#[utoipa::path(
    put,
    path = "/v1/plugins/{name}/config",
    tag = tags::PLUGINS,
    operation_id = "put_plugin_config",
    summary = "Set or remove configuration values and secrets",
    description = "Sets each key given in `values` or `secrets` (a key is one or the other: \
                   setting it as a secret turns a value into a secret and the reverse) and \
                   removes each key given as `null`; keys not named stay. Every version of \
                   the plugin reads them through `config(key)`, secrets included, from its next \
                   call (on other servers of the same database within 5 s); they override \
                   spool.toml's `[plugins.NAME.config]`. Secrets are write-only: responses list \
                   their names only. Keys are 1 to 256 bytes without control characters, \
                   values at most 16 KiB, 256 keys per plugin.",
    params(("name" = String, Path, description = "The plugin's name.")),
    request_body(content = PluginConfigIn, content_type = "application/json"),
    responses(
        (status = 200, description = "The configuration after the change.",
         body = PluginConfigOut),
        (status = 400, description = "`invalid_request`: a key or value out of bounds, a key \
                                      in both `values` and `secrets`, or too many keys; \
                                      `invalid_name`: the plugin name is not valid.",
         body = ErrorBody),
    ),
)]
pub async fn put_config(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiJson(body): ApiJson<PluginConfigIn>,
) -> Result<Json<PluginConfigOut>, ApiError> {
    if let Some(key) = body.values.keys().find(|k| body.secrets.contains_key(*k)) {
        return Err(ApiError::invalid(format!(
            "key {key:?} is in both `values` and `secrets`; a key is one or the other"
        )));
    }
    let changes: Vec<ConfigChange> = (body.values.into_iter().map(|kv| (kv, false)))
        .chain(body.secrets.into_iter().map(|kv| (kv, true)))
        .map(|((key, value), secret)| ConfigChange { key, value, secret })
        .collect();
    let stored = state.registry.update_config(&name, changes).await?;
    let file = state.registry.file_settings(&name);
    Ok(Json(PluginConfigOut::new(&name, stored, file)))
}

/// `GET /v1/plugins/{name}/grants`: the same view as the configuration.
#[utoipa::path(
    get,
    path = "/v1/plugins/{name}/grants",
    tag = tags::PLUGINS,
    operation_id = "get_plugin_grants",
    summary = "A plugin's grants (with its configuration)",
    description = "The capabilities granted to the plugin (`grants`: spool.toml's, each field \
                   overridden by the API's) and those set through the API (`api_grants`), \
                   with its configuration as `GET /v1/plugins/{name}/config` shows it.",
    params(("name" = String, Path, description = "The plugin's name.")),
    responses(
        (status = 200, description = "The grants and configuration.", body = PluginConfigOut),
        (status = 400, description = "`invalid_name`: the plugin name is not valid.",
         body = ErrorBody),
    ),
)]
pub async fn get_grants(
    state: State<AppState>,
    name: ApiPath<String>,
) -> Result<Json<PluginConfigOut>, ApiError> {
    get_config(state, name).await
}

/// `PUT /v1/plugins/{name}/grants`: replaces the grants set through the API.
#[utoipa::path(
    put,
    path = "/v1/plugins/{name}/grants",
    tag = tags::PLUGINS,
    operation_id = "put_plugin_grants",
    summary = "Grant capabilities to a plugin",
    description = "Replaces the grants set through the API (`{}` removes them; spool.toml's \
                   then apply alone). Each field given overrides spool.toml's \
                   `[plugins.NAME]` field of the same name. `allowed_outbound_hosts`: \
                   `scheme://host[:port]` entries (http or https; host `*` or `*.domain`, port \
                   `*` allowed) the plugin may send HTTP requests to through wasi-http; a \
                   component importing `wasi:http` is refused at deploy without it. \
                   `kv_max_keys`, `kv_max_bytes`: the plugin's key-value quotas. Calls that \
                   start afterwards see the change (other servers within 5 s).",
    params(("name" = String, Path, description = "The plugin's name.")),
    request_body(content = PluginGrants, content_type = "application/json"),
    responses(
        (status = 200, description = "The grants and configuration after the change.",
         body = PluginConfigOut),
        (status = 400, description = "`invalid_request`: an `allowed_outbound_hosts` entry is \
                                      not `scheme://host[:port]`, or there are too many; \
                                      `invalid_name`: the plugin name is not valid.",
         body = ErrorBody),
    ),
)]
pub async fn put_grants(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    ApiJson(grants): ApiJson<PluginGrants>,
) -> Result<Json<PluginConfigOut>, ApiError> {
    let stored = state.registry.put_grants(&name, grants).await?;
    let file = state.registry.file_settings(&name);
    Ok(Json(PluginConfigOut::new(&name, stored, file)))
}

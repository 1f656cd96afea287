//! `GET /v1/whoami`: who the presented token stands for, so a client (the dashboard) can show
//! only what that role may do.

use axum::extract::State;
use axum::{Extension, Json};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::openapi::tags;
use crate::auth::{Principal, Role};

/// The caller as the server sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct WhoamiOut {
    /// Whether this server requires tokens; `false`: everyone on loopback is an admin.
    pub tokens_required: bool,
    /// The token's name from `spool.toml`; `null` without tokens.
    pub name: Option<String>,
    /// `admin`, `producer` or `reader`.
    #[schema(value_type = String, example = "reader")]
    pub role: Role,
}

/// `GET /v1/whoami`.
#[utoipa::path(
    get,
    path = "/v1/whoami",
    tag = tags::API,
    operation_id = "whoami",
    summary = "Who the token stands for",
    description = "The role and name of the presented token (any role may ask), and whether \
                   the server requires tokens at all.",
    responses((status = 200, description = "The caller.", body = WhoamiOut)),
)]
pub async fn whoami(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Json<WhoamiOut> {
    Json(WhoamiOut {
        tokens_required: !state.auth.is_empty(),
        name: principal.name,
        role: principal.role,
    })
}

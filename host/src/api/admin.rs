//! Operator actions on the server itself: `POST /v1/admin/check`.

use std::time::Duration;

use axum::Json;
use axum::extract::State;

use super::AppState;
use super::dto::{CheckIn, IntegrityOut};
use super::error::{ApiError, ErrorBody};
use super::extract::{ApiBytes, parse_json};
use super::openapi::tags;
use crate::store::CheckLevel;

/// Time left at the end of a request for answering, after the check's own budget.
const ANSWER_MARGIN: Duration = Duration::from_secs(2);

/// `POST /v1/admin/check`: checks the database file's integrity now.
#[utoipa::path(
    post,
    path = "/v1/admin/check",
    tag = tags::ADMIN,
    operation_id = "check_database",
    summary = "Check the database file's integrity",
    description = "Runs `PRAGMA quick_check` (or with `{\"full\": true}` `PRAGMA \
                   integrity_check`, which also checks every index against its table) on a read \
                   connection while the server keeps working, and answers what it found. The \
                   result becomes the `detail.integrity` of `/readyz`, which turns 503 \
                   `database_damaged` when damage was found. A check that would outlast \
                   `[limits] request_timeout` is stopped and answers `incomplete`; check large \
                   databases offline with `spool check --db FILE --full`.",
    request_body(content = Option<CheckIn>, content_type = "application/json",
                 description = "Which check; an empty body is a quick check."),
    responses(
        (status = 200, description = "What the check found (`outcome` `ok`, `damaged` or \
                                      `incomplete`).", body = IntegrityOut),
        (status = 400, description = "`invalid_request`: an unknown field or a wrong type; \
                                      `invalid_json`: the body is not JSON.", body = ErrorBody),
    ),
)]
pub async fn check(
    State(state): State<AppState>,
    ApiBytes(body): ApiBytes,
) -> Result<Json<IntegrityOut>, ApiError> {
    let input: CheckIn = if body.iter().all(u8::is_ascii_whitespace) {
        CheckIn::default()
    } else {
        parse_json(&body)?
    };
    let level = if input.full {
        CheckLevel::Full
    } else {
        CheckLevel::Quick
    };
    let budget = state
        .limits
        .request_timeout
        .saturating_sub(ANSWER_MARGIN)
        .max(Duration::from_secs(1));
    let report = state.store.check_integrity(level, Some(budget)).await?;
    Ok(Json(IntegrityOut::new(report)))
}

//! Operator actions on the server itself: `POST /v1/admin/check` and `POST /v1/admin/backup`.

use std::time::Duration;

use axum::Json;
use axum::extract::State;

use super::AppState;
use axum::http::StatusCode;

use super::backup_target::{self, TargetError};
use super::dto::{BackupIn, BackupOut, CheckIn, IntegrityOut};
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

/// `POST /v1/admin/backup`: a consistent copy of the database, taken while the server works.
#[utoipa::path(
    post,
    path = "/v1/admin/backup",
    tag = tags::ADMIN,
    operation_id = "backup_database",
    summary = "Back the database up while the server runs",
    description = "Writes a consistent copy of the database (the state of one moment, taken \
                   with `VACUUM INTO` while messages keep flowing) to `path` inside the \
                   server's `[admin] backup_dir` (`spool serve --backup-dir`). A relative \
                   `path` is relative to that directory; a path that leads outside it (`..`, \
                   an absolute path elsewhere, a symbolic link out) is refused, and an existing \
                   file is never overwritten. The copy appears under its name only when \
                   complete. To restore, start a server on the copy: `spool serve --db COPY`.",
    request_body(content = BackupIn, content_type = "application/json",
                 description = "Where to write the copy."),
    responses(
        (status = 200, description = "The copy is written and synced.", body = BackupOut),
        (status = 400, description = "`invalid_request`: `path` is missing, empty or leads \
                                      outside the backup directory (the message says which); \
                                      `invalid_json`: the body is not JSON.", body = ErrorBody),
        (status = 409, description = "`already_exists`: a file of that name exists; \
                                      `backup_not_configured`: the server has no \
                                      `[admin] backup_dir`.", body = ErrorBody),
        (status = 500, description = "`backup_failed`: writing the copy failed (its disk is \
                                      full, say); nothing is left under its name.",
         body = ErrorBody),
    ),
)]
pub async fn backup(
    State(state): State<AppState>,
    ApiBytes(body): ApiBytes,
) -> Result<Json<BackupOut>, ApiError> {
    let input: BackupIn = parse_json(&body)?;
    let Some(dir) = state.backup_dir.as_deref() else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "backup_not_configured",
            "this server has no backup directory: set [admin] backup_dir in spool.toml (or \
             start it with --backup-dir DIR) and restart it",
        ));
    };
    // Every refusal names the field: the messages start with `path`.
    let target = backup_target::resolve(dir, &input.path)
        .map_err(|e: TargetError| ApiError::invalid(e.to_string()))?;
    let report = state.store.backup(target).await?;
    Ok(Json(report.into()))
}

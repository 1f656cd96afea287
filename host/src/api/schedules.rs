//! Schedules: cron, interval and one-shot fires into a queue or a topic (docs/SCHEDULES.md).
//!
//! Definitions are checked here (each error names its field) before the store is called; the
//! [`Scheduler`](crate::scheduler::Scheduler) is woken after every change so an earlier fire is
//! never slept through.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::dto::{MessageIn, parse_rfc3339, payload_out, present, rfc3339};
use super::error::{ApiError, ErrorBody};
use super::extract::{ApiJsonBytes, ApiPath, ApiQuery, parse_json};
use super::openapi::tags;
use crate::model::{
    Fire, Missed, NewSchedule, Schedule, ScheduleId, SchedulePatch, Target, Timing, whole,
};
use crate::scheduler::calendar::Calendar;
use crate::scheduler::timer::FireError;
use crate::store::StoreError;

/// How many upcoming fire times a schedule shows.
const UPCOMING: usize = 5;
/// How many recent fires `GET /v1/schedules/{id}` shows.
const RECENT_FIRES: u32 = 20;

/// Body of `POST /v1/schedules`: exactly one of `cron`, `every`, `at`, and exactly one of
/// `queue`, `topic`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"cron": "0 30 9 * * Mon-Fri", "timezone": "Europe/Paris",
    "queue": "reports", "payload": {"report": "daily"}, "name": "daily-report"}))]
pub struct ScheduleIn {
    /// A cron expression: 6 fields with seconds (`sec min hour day month weekday`) or 5
    /// (seconds are 0), read in `timezone`.
    pub cron: Option<String>,
    /// A fixed interval such as `30s`, `5m`, `1h 30m` (1 s to 366 days), from `start_at` or
    /// from the creation time.
    pub every: Option<String>,
    /// One instant (RFC 3339): fires once.
    #[schema(format = DateTime)]
    pub at: Option<String>,
    /// IANA time zone the cron is read in, e.g. `Europe/Paris`; default UTC.
    pub timezone: Option<String>,
    /// The queue each fire enqueues to; it must exist.
    pub queue: Option<String>,
    /// The topic each fire publishes to, through the routes.
    pub topic: Option<String>,
    /// The payload of every fired message: any JSON value.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Value)]
    pub payload: Option<Box<RawValue>>,
    /// Or raw bytes as standard base64.
    #[schema(content_encoding = "base64")]
    pub payload_base64: Option<String>,
    /// Headers of every fired message (with `spool-schedule-id` and `spool-fire-at` added).
    pub headers: Option<BTreeMap<String, String>>,
    /// Priority of every fired message; default 0.
    #[serde(default, deserialize_with = "whole::deserialize")]
    pub priority: Option<i32>,
    /// No fire before this instant (RFC 3339).
    #[schema(format = DateTime)]
    pub start_at: Option<String>,
    /// No fire after this instant (RFC 3339); after `start_at`.
    #[schema(format = DateTime)]
    pub end_at: Option<String>,
    /// The schedule ends after this many fires.
    #[serde(default, deserialize_with = "whole::deserialize")]
    #[schema(minimum = 1)]
    pub max_runs: Option<u64>,
    /// Fires missed while the server was down or the schedule paused: `skip` them, fire once
    /// for all of them (`fire-once`, the default), or `fire-all` (at most 100, the newest).
    pub missed: Option<Missed>,
    /// A label to find it by.
    pub name: Option<String>,
    /// Created paused: it fires once resumed.
    #[serde(default)]
    pub paused: bool,
}

/// Body of `PATCH /v1/schedules/{id}`: the fields to change (`null` clears the optional
/// ones). At most one of `cron`, `every`, `at` and one of `queue`, `topic`. A change takes
/// effect from now: a fire that was due goes by the new definition.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"cron": "0 0 8 * * *", "max_runs": null}))]
pub struct SchedulePatchIn {
    pub cron: Option<String>,
    pub every: Option<String>,
    #[schema(format = DateTime)]
    pub at: Option<String>,
    #[serde(default, with = "crate::model::double_option")]
    #[schema(value_type = Option<String>, nullable)]
    pub timezone: Option<Option<String>>,
    pub queue: Option<String>,
    pub topic: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Value)]
    pub payload: Option<Box<RawValue>>,
    #[schema(content_encoding = "base64")]
    pub payload_base64: Option<String>,
    pub headers: Option<BTreeMap<String, String>>,
    #[serde(default, with = "crate::model::double_option")]
    #[schema(value_type = Option<i32>, nullable)]
    pub priority: Option<Option<i32>>,
    #[serde(default, with = "crate::model::double_option")]
    #[schema(value_type = Option<String>, format = DateTime, nullable)]
    pub start_at: Option<Option<String>>,
    #[serde(default, with = "crate::model::double_option")]
    #[schema(value_type = Option<String>, format = DateTime, nullable)]
    pub end_at: Option<Option<String>>,
    #[serde(default, with = "crate::model::double_option")]
    #[schema(value_type = Option<u64>, minimum = 1, nullable)]
    pub max_runs: Option<Option<u64>>,
    pub missed: Option<Missed>,
    #[serde(default, with = "crate::model::double_option")]
    #[schema(value_type = Option<String>, nullable)]
    pub name: Option<Option<String>>,
    pub paused: Option<bool>,
}

/// A schedule as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleOut {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// The interval, e.g. `30s` or `1h 30m`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub every: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub at: Option<String>,
    /// The zone the cron is read in.
    pub timezone: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Value)]
    pub payload: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(content_encoding = "base64")]
    pub payload_base64: Option<String>,
    pub headers: BTreeMap<String, String>,
    pub priority: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub start_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub end_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_runs: Option<u64>,
    pub missed: Missed,
    pub paused: bool,
    /// Fires made from its calendar so far (`run now` does not count, so it never uses up
    /// `max_runs`).
    pub runs: u64,
    /// The next fire (RFC 3339); `null` once finished.
    #[schema(format = DateTime)]
    pub next_fire_at: Option<String>,
    pub next_fire_at_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub last_fire_at: Option<String>,
    /// The next few fire times (RFC 3339), the first being `next_fire_at`.
    #[schema(value_type = Vec<String>)]
    pub upcoming: Vec<String>,
    /// Why the last fire could not be delivered (its queue is gone, its topic has no route),
    /// while that lasts; the fire is tried again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Recent fires, newest first (only in `GET /v1/schedules/{id}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fires: Option<Vec<FireOut>>,
}

/// One fire of a schedule.
#[derive(Debug, Serialize, ToSchema)]
pub struct FireOut {
    /// The instant it was for (RFC 3339).
    #[schema(format = DateTime)]
    pub fire_at: String,
    pub fire_at_ms: i64,
    #[schema(format = DateTime)]
    pub fired_at: String,
    /// How late it was written, in milliseconds.
    pub lateness_ms: i64,
    /// The messages it wrote (one per delivery).
    pub message_ids: Vec<String>,
    /// Fired by `run now`.
    pub manual: bool,
}

impl From<Fire> for FireOut {
    fn from(f: Fire) -> Self {
        FireOut {
            fire_at: rfc3339(f.fire_at),
            fire_at_ms: f.fire_at,
            fired_at: rfc3339(f.fired_at),
            lateness_ms: f.lateness_ms,
            message_ids: f.message_ids.iter().map(|id| id.to_string()).collect(),
            manual: f.manual,
        }
    }
}

/// `GET /v1/schedules`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SchedulesOut {
    /// By id (creation order).
    pub schedules: Vec<ScheduleOut>,
}

/// What `POST /v1/schedules/{id}/run` wrote.
#[derive(Debug, Serialize, ToSchema)]
pub struct RunOut {
    pub schedule_id: String,
    #[schema(format = DateTime)]
    pub fire_at: String,
    /// The messages of the fire, one per delivery.
    pub ids: Vec<String>,
}

/// `?upcoming=N` on the schedule reads.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UpcomingQuery {
    /// How many upcoming fire times to show per schedule (0 to 100; default 5).
    #[param(value_type = Option<u32>, minimum = 0, maximum = 100)]
    pub upcoming: Option<String>,
}

fn upcoming_of(q: &UpcomingQuery) -> Result<usize, ApiError> {
    match q.upcoming.as_deref() {
        // An empty value is "not given", as for `limit`.
        None | Some("") => Ok(UPCOMING),
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| *n <= 100 && n.to_string() == s)
            .ok_or_else(|| {
                ApiError::invalid(format!(
                    "upcoming must be a whole number from 0 to 100, got {s:?}"
                ))
            }),
    }
}

fn out(s: Schedule, state: &AppState, upcoming: usize) -> ScheduleOut {
    let next = Calendar::of(&s)
        .ok()
        .zip(s.next_fire_at)
        .map(|(cal, next)| {
            let mut times = vec![next];
            times.extend(cal.upcoming(next, upcoming.saturating_sub(1)));
            times.truncate(upcoming);
            times
        })
        .unwrap_or_default();
    let (payload, payload_base64) = payload_out(&s.payload);
    let (cron, every, at) = match &s.timing {
        Timing::Cron(c) => (Some(c.clone()), None, None),
        Timing::Every(d) => (None, Some(humantime::format_duration(*d).to_string()), None),
        Timing::At(t) => (None, None, Some(rfc3339(*t))),
    };
    let (queue, topic) = match &s.target {
        Target::Queue(q) => (Some(q.clone()), None),
        Target::Topic(t) => (None, Some(t.clone())),
    };
    ScheduleOut {
        id: s.id.to_string(),
        last_error: state.scheduler.last_error(s.id),
        name: s.name,
        cron,
        every,
        at,
        timezone: s.timezone.unwrap_or_else(|| "UTC".to_owned()),
        queue,
        topic,
        payload,
        payload_base64,
        headers: s.headers.into_iter().collect(),
        priority: s.priority.unwrap_or(0),
        start_at: s.start_at.map(rfc3339),
        end_at: s.end_at.map(rfc3339),
        max_runs: s.max_runs,
        missed: s.missed,
        paused: s.paused,
        runs: s.runs,
        next_fire_at: s.next_fire_at.map(rfc3339),
        next_fire_at_ms: s.next_fire_at,
        last_fire_at: s.last_fire_at.map(rfc3339),
        upcoming: next.into_iter().map(rfc3339).collect(),
        created_at: rfc3339(s.created_at),
        fires: None,
    }
}

/// Parses a schedule id from the path.
fn parse_schedule_id(s: &str) -> Result<ScheduleId, ApiError> {
    s.parse::<ScheduleId>()
        .ok()
        .filter(|id| *id > 0 && id.to_string() == s)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_id",
                format!(
                    "{s:?} is not a schedule id; ids are positive decimal integers without sign \
                     or leading zeros"
                ),
            )
        })
}

/// The one timing of a body; `None` when it names none.
fn timing(
    cron: Option<String>,
    every: Option<String>,
    at: Option<String>,
) -> Result<Option<Timing>, ApiError> {
    match (cron, every, at) {
        (None, None, None) => Ok(None),
        (Some(c), None, None) => Ok(Some(Timing::Cron(c))),
        (None, Some(e), None) => {
            let d: Duration = humantime::parse_duration(e.trim()).map_err(|err| {
                ApiError::invalid(format!(
                    "every: {e:?} is not a duration ({err}); write e.g. \"30s\", \"5m\" or \"1h 30m\""
                ))
            })?;
            Ok(Some(Timing::Every(d)))
        }
        (None, None, Some(a)) => Ok(Some(Timing::At(parse_rfc3339("at", &a)?))),
        _ => Err(ApiError::invalid(
            "cron, every and at are exclusive: send exactly one of them",
        )),
    }
}

/// The one target of a body; `None` when it names none.
fn target(queue: Option<String>, topic: Option<String>) -> Result<Option<Target>, ApiError> {
    match (queue, topic) {
        (None, None) => Ok(None),
        (Some(q), None) => {
            crate::model::validate_name("queue", &q).map_err(ApiError::invalid)?;
            Ok(Some(Target::Queue(q)))
        }
        (None, Some(t)) => {
            crate::router::pattern::validate_topic(&t)
                .map_err(|e| ApiError::invalid(format!("topic: {e}")))?;
            Ok(Some(Target::Topic(t)))
        }
        (Some(_), Some(_)) => Err(ApiError::invalid(
            "queue and topic are exclusive: a schedule enqueues to a queue or publishes to a \
             topic, send exactly one",
        )),
    }
}

/// The message parts of a body, checked as enqueue checks them.
struct MessageParts {
    payload: Vec<u8>,
    headers: Vec<(String, String)>,
    priority: Option<i32>,
}

fn message_parts(
    max_payload_bytes: usize,
    payload: Option<Box<RawValue>>,
    payload_base64: Option<String>,
    headers: Option<BTreeMap<String, String>>,
    priority: Option<i32>,
) -> Result<MessageParts, ApiError> {
    if let Some(h) = &headers
        && let Some(reserved) = h
            .keys()
            .find(|k| k.to_ascii_lowercase().starts_with("spool-"))
    {
        return Err(ApiError::invalid(format!(
            "headers: {reserved:?} starts with \"spool-\", which the scheduler sets itself; \
             choose another name"
        )));
    }
    let m = MessageIn {
        payload,
        payload_base64,
        priority,
        delay_ms: None,
        deliver_at: None,
        idempotency_key: None,
        ttl_ms: None,
        headers,
        topic: None,
        correlation_id: None,
        supersede: false,
    }
    .into_new("", max_payload_bytes, None)?;
    Ok(MessageParts {
        payload: m.payload,
        headers: m.headers,
        priority,
    })
}

fn instant(field: &str, s: Option<String>) -> Result<Option<i64>, ApiError> {
    s.map(|s| parse_rfc3339(field, &s)).transpose()
}

fn check_name(name: &Option<String>) -> Result<(), ApiError> {
    if let Some(n) = name
        && (n.is_empty() || n.len() > 200 || n.chars().any(char::is_control))
    {
        return Err(ApiError::invalid(
            "name must be 1 to 200 characters of one line of text",
        ));
    }
    Ok(())
}

/// Store errors about what the body names are the client's mistakes.
fn body_error(e: StoreError) -> ApiError {
    match e {
        StoreError::QueueNotFound(q) => ApiError::invalid(format!(
            "queue: queue {q:?} does not exist; create it first (`PUT /v1/queues/{q}`, \
             `spool queue create {q}`)"
        )),
        other => other.into(),
    }
}

impl From<FireError> for ApiError {
    fn from(e: FireError) -> Self {
        match e {
            FireError::Store(s) => s.into(),
            FireError::Route(r) => r.into(),
            FireError::Definition(d) => ApiError::new(
                StatusCode::CONFLICT,
                "invalid_schedule",
                format!("{d}; fix the schedule with PATCH"),
            ),
        }
    }
}

/// `POST /v1/schedules`.
#[utoipa::path(
    post,
    path = "/v1/schedules",
    tag = tags::SCHEDULES,
    operation_id = "create_schedule",
    summary = "Create a schedule",
    description = "A cron expression (with seconds, in an IANA time zone), an interval or one \
                   instant, firing into a queue or through the routes of a topic. Each fire \
                   instant is enqueued exactly once, in the transaction that advances the \
                   schedule; fired messages carry the headers `spool-schedule-id` and \
                   `spool-fire-at`. On the day clocks spring forward a local time that does not \
                   exist is skipped; on the day they fall back a repeated local time fires once.",
    request_body(content = ScheduleIn, content_type = "application/json"),
    responses(
        (status = 201, description = "Created.", body = ScheduleOut),
        (status = 400, description = "`invalid_request`: a field is wrong (the message names \
                                      it): a cron that is not valid, an unknown time zone, \
                                      `end_at` not after `start_at`, none or several of \
                                      cron/every/at or of queue/topic, a queue that does not \
                                      exist; `invalid_json`: the body is not JSON.",
         body = ErrorBody),
        (status = 413, description = "`payload_too_large`: the payload is over the limit.",
         body = ErrorBody),
    ),
)]
pub async fn create(
    State(state): State<AppState>,
    ApiJsonBytes(body): ApiJsonBytes,
) -> Result<(StatusCode, Json<ScheduleOut>), ApiError> {
    let b: ScheduleIn = parse_json(&body)?;
    let now = state.scheduler.now_ms();
    let schedule = new_schedule(b, state.limits.max_payload_bytes)?;
    let created = state
        .store
        .create_schedule(schedule, now)
        .await
        .map_err(body_error)?;
    state.scheduler.wake();
    tracing::info!(schedule = created.id, "schedule created");
    Ok((StatusCode::CREATED, Json(out(created, &state, UPCOMING))))
}

/// A `[[schedules]]` entry of spool.toml (as JSON), checked as `POST /v1/schedules` checks its
/// body.
pub fn from_config(json: &str, max_payload_bytes: usize) -> Result<NewSchedule, ApiError> {
    new_schedule(parse_json(json.as_bytes())?, max_payload_bytes)
}

/// Checks a new schedule's body; every error names its field. The calendar (cron, zone,
/// interval, bounds) and `max_runs` are checked by the store, in the same terms.
fn new_schedule(b: ScheduleIn, max_payload_bytes: usize) -> Result<NewSchedule, ApiError> {
    let timing = timing(b.cron, b.every, b.at)?.ok_or_else(|| {
        ApiError::invalid("say when it fires: send one of cron, every (e.g. \"30s\") or at")
    })?;
    let target = target(b.queue, b.topic)?
        .ok_or_else(|| ApiError::invalid("say where it fires: send queue or topic"))?;
    if b.payload.is_none() && b.payload_base64.is_none() {
        return Err(ApiError::invalid(
            "payload is missing; send \"payload\" (any JSON, null included) or \"payload_base64\"",
        ));
    }
    let parts = message_parts(
        max_payload_bytes,
        b.payload,
        b.payload_base64,
        b.headers,
        b.priority,
    )?;
    let start_at = instant("start_at", b.start_at)?;
    let end_at = instant("end_at", b.end_at)?;
    check_name(&b.name)?;
    Ok(NewSchedule {
        name: b.name,
        timing,
        timezone: b.timezone,
        target,
        payload: parts.payload,
        headers: parts.headers,
        priority: parts.priority,
        start_at,
        end_at,
        max_runs: b.max_runs,
        missed: b.missed.unwrap_or_default(),
        paused: b.paused,
    })
}

/// `GET /v1/schedules`.
#[utoipa::path(
    get,
    path = "/v1/schedules",
    tag = tags::SCHEDULES,
    operation_id = "list_schedules",
    summary = "List schedules",
    description = "Every schedule by id, with its next fire times.",
    params(UpcomingQuery),
    responses(
        (status = 200, description = "The schedules.", body = SchedulesOut),
        (status = 400, description = "`invalid_request`: `upcoming` is out of range.",
         body = ErrorBody),
    ),
)]
pub async fn list(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<UpcomingQuery>,
) -> Result<Json<SchedulesOut>, ApiError> {
    let upcoming = upcoming_of(&q)?;
    let schedules = state.store.list_schedules().await?;
    Ok(Json(SchedulesOut {
        schedules: schedules
            .into_iter()
            .map(|s| out(s, &state, upcoming))
            .collect(),
    }))
}

/// `GET /v1/schedules/{id}`.
#[utoipa::path(
    get,
    path = "/v1/schedules/{id}",
    tag = tags::SCHEDULES,
    operation_id = "get_schedule",
    summary = "One schedule",
    description = "The schedule with its next fire times and its recent fires (instant, \
                   messages, lateness), newest first.",
    params(("id" = String, Path, description = "The schedule's id."), UpcomingQuery),
    responses(
        (status = 200, description = "The schedule.", body = ScheduleOut),
        (status = 400, description = "`invalid_id`: ids are positive decimal integers; \
                                      `invalid_request`: `upcoming` is out of range.",
         body = ErrorBody),
        (status = 404, description = "`schedule_not_found`: no such schedule.", body = ErrorBody),
    ),
)]
pub async fn get(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<UpcomingQuery>,
) -> Result<Json<ScheduleOut>, ApiError> {
    let id = parse_schedule_id(&id)?;
    let upcoming = upcoming_of(&q)?;
    let schedule = state.store.get_schedule(id).await?;
    let fires = state.store.schedule_fires(id, RECENT_FIRES).await?;
    let mut shown = out(schedule, &state, upcoming);
    shown.fires = Some(fires.into_iter().map(FireOut::from).collect());
    Ok(Json(shown))
}

/// `PATCH /v1/schedules/{id}`.
#[utoipa::path(
    patch,
    path = "/v1/schedules/{id}",
    tag = tags::SCHEDULES,
    operation_id = "update_schedule",
    summary = "Change a schedule",
    description = "Changes the fields the body names (`null` clears an optional one). The next \
                   fire is computed again from now, so a fire that was due goes by the new \
                   definition only.",
    params(("id" = String, Path, description = "The schedule's id.")),
    request_body(content = SchedulePatchIn, content_type = "application/json"),
    responses(
        (status = 200, description = "The schedule as changed.", body = ScheduleOut),
        (status = 400, description = "`invalid_request`: a field is wrong (the message names \
                                      it); `invalid_id`; `invalid_json`.", body = ErrorBody),
        (status = 404, description = "`schedule_not_found`: no such schedule.", body = ErrorBody),
    ),
)]
pub async fn update(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJsonBytes(body): ApiJsonBytes,
) -> Result<Json<ScheduleOut>, ApiError> {
    let id = parse_schedule_id(&id)?;
    let b: SchedulePatchIn = parse_json(&body)?;
    let now = state.scheduler.now_ms();
    let current = state.store.get_schedule(id).await?;
    let timing = timing(b.cron, b.every, b.at)?;
    let target = target(b.queue, b.topic)?;
    let payload_given = b.payload.is_some() || b.payload_base64.is_some();
    let parts = if payload_given || b.headers.is_some() || b.priority.is_some() {
        // Unchanged parts are checked as they are stored; what the body sends replaces them.
        let (payload, payload_base64) = if payload_given {
            (b.payload, b.payload_base64)
        } else {
            payload_out(&current.payload)
        };
        let priority = b.priority.unwrap_or(current.priority);
        let headers = b
            .headers
            .clone()
            .unwrap_or_else(|| current.headers.iter().cloned().collect());
        Some(message_parts(
            state.limits.max_payload_bytes,
            payload,
            payload_base64,
            Some(headers),
            priority,
        )?)
    } else {
        None
    };
    let start_at = b.start_at.map(|v| instant("start_at", v)).transpose()?;
    let end_at = b.end_at.map(|v| instant("end_at", v)).transpose()?;
    if let Some(name) = &b.name {
        check_name(name)?;
    }
    let patch = SchedulePatch {
        name: b.name,
        timing,
        timezone: b.timezone,
        target,
        payload: parts.as_ref().map(|p| p.payload.clone()),
        headers: parts.as_ref().map(|p| p.headers.clone()),
        priority: b.priority,
        start_at,
        end_at,
        max_runs: b.max_runs,
        missed: b.missed,
        paused: b.paused,
    };
    let updated = state
        .store
        .update_schedule(id, patch, now)
        .await
        .map_err(body_error)?;
    state.scheduler.wake();
    Ok(Json(out(updated, &state, UPCOMING)))
}

async fn set_paused(
    state: &AppState,
    id: &str,
    paused: bool,
) -> Result<Json<ScheduleOut>, ApiError> {
    let id = parse_schedule_id(id)?;
    let now = state.scheduler.now_ms();
    let patch = SchedulePatch {
        paused: Some(paused),
        ..SchedulePatch::default()
    };
    let s = state.store.update_schedule(id, patch, now).await?;
    state.scheduler.wake();
    Ok(Json(out(s, state, UPCOMING)))
}

/// `POST /v1/schedules/{id}/pause`.
#[utoipa::path(
    post,
    path = "/v1/schedules/{id}/pause",
    tag = tags::SCHEDULES,
    operation_id = "pause_schedule",
    summary = "Pause a schedule",
    description = "It does not fire until resumed; fires missed meanwhile then follow its \
                   `missed` policy.",
    params(("id" = String, Path, description = "The schedule's id.")),
    responses(
        (status = 200, description = "Paused.", body = ScheduleOut),
        (status = 400, description = "`invalid_id`.", body = ErrorBody),
        (status = 404, description = "`schedule_not_found`.", body = ErrorBody),
    ),
)]
pub async fn pause(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ScheduleOut>, ApiError> {
    set_paused(&state, &id, true).await
}

/// `POST /v1/schedules/{id}/resume`.
#[utoipa::path(
    post,
    path = "/v1/schedules/{id}/resume",
    tag = tags::SCHEDULES,
    operation_id = "resume_schedule",
    summary = "Resume a schedule",
    description = "It fires again from its next fire time.",
    params(("id" = String, Path, description = "The schedule's id.")),
    responses(
        (status = 200, description = "Resumed.", body = ScheduleOut),
        (status = 400, description = "`invalid_id`.", body = ErrorBody),
        (status = 404, description = "`schedule_not_found`.", body = ErrorBody),
    ),
)]
pub async fn resume(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ScheduleOut>, ApiError> {
    set_paused(&state, &id, false).await
}

/// `POST /v1/schedules/{id}/run`.
#[utoipa::path(
    post,
    path = "/v1/schedules/{id}/run",
    tag = tags::SCHEDULES,
    operation_id = "run_schedule",
    summary = "Fire a schedule now",
    description = "Fires once now, whatever its timing, paused or not; its next fire stays as \
                   it was. The message carries `spool-fire-at` of now.",
    params(("id" = String, Path, description = "The schedule's id.")),
    responses(
        (status = 202, description = "Fired.", body = RunOut),
        (status = 400, description = "`invalid_id`.", body = ErrorBody),
        (status = 404, description = "`schedule_not_found`; `queue_not_found`: its queue was \
                                      deleted.", body = ErrorBody),
        (status = 422, description = "`no_route`: its topic has no route.", body = ErrorBody),
    ),
)]
pub async fn run(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<(StatusCode, Json<RunOut>), ApiError> {
    let id = parse_schedule_id(&id)?;
    let fire = state.scheduler.run_now(id).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(RunOut {
            schedule_id: id.to_string(),
            fire_at: rfc3339(fire.fire_at),
            ids: fire.message_ids.iter().map(|m| m.to_string()).collect(),
        }),
    ))
}

/// `DELETE /v1/schedules/{id}`.
#[utoipa::path(
    delete,
    path = "/v1/schedules/{id}",
    tag = tags::SCHEDULES,
    operation_id = "delete_schedule",
    summary = "Delete a schedule",
    description = "It fires no more; messages it already enqueued stay.",
    params(("id" = String, Path, description = "The schedule's id.")),
    responses(
        (status = 200, description = "Deleted; the schedule as it was.", body = ScheduleOut),
        (status = 400, description = "`invalid_id`.", body = ErrorBody),
        (status = 404, description = "`schedule_not_found`.", body = ErrorBody),
    ),
)]
pub async fn delete(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ScheduleOut>, ApiError> {
    let id = parse_schedule_id(&id)?;
    let s = state.store.delete_schedule(id).await?;
    Ok(Json(out(s, &state, 0)))
}

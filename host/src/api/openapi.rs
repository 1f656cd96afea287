//! `GET /openapi.json`: the OpenAPI 3.1 description of this API.
//!
//! Nothing here lists endpoints. [`super::router`] registers every handler with
//! `utoipa_axum::routes!`, which takes the path, the method and the documentation from the
//! handler's `#[utoipa::path]` attribute and routes requests with the same registration, so a
//! route cannot exist without being described. Request and response schemas come from the
//! `ToSchema` derives of the types the handlers take and return.
//!
//! What holds for every route is added by [`complete`] from the rules the middleware enforces
//! rather than repeated on each handler: which token roles an operation accepts
//! ([`crate::auth::authorize`]), and the errors of authentication, of the request limits and of
//! the store.

use axum::Extension;
use axum::body::Bytes;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::schema::Schema;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    Components, Content, OpenApi as Document, Ref, RefOr, Required, Response as ApiResponse,
    ResponseBuilder,
};
use utoipa::{Modify, OpenApi, ToSchema};

use super::ApiLimits;
use super::error::{ApiError, ErrorBody};
use crate::auth::{self, Role};

/// Operation tags, one per resource.
pub mod tags {
    pub const MESSAGES: &str = "messages";
    pub const QUEUES: &str = "queues";
    pub const PLUGINS: &str = "plugins";
    pub const DLQ: &str = "dlq";
    pub const ROUTES: &str = "routes";
    pub const SCHEDULES: &str = "schedules";
    pub const HEALTH: &str = "health";
    pub const METRICS: &str = "metrics";
    pub const API: &str = "api";
    pub const ADMIN: &str = "admin";
}

/// Name of the bearer-token security scheme.
pub const BEARER: &str = "bearer";

/// Every token role, in the order the document lists them.
pub const ROLES: [Role; 3] = [Role::Admin, Role::Producer, Role::Reader];

const DESCRIPTION: &str = "\
Spool's admin API: produce and inspect messages, configure queues, deploy handler plugins \
(WebAssembly components) and work the dead-letter queue. Bodies are JSON unless an operation \
says otherwise.

**Authentication.** A server with API tokens (`[[auth.tokens]]` in `spool.toml`) needs \
`Authorization: Bearer <token>` on every request except `GET /healthz`, `GET /readyz` and \
`GET /openapi.json`. Each token has one role: `admin` may do everything; `producer` may enqueue \
and read back the messages it enqueued; `reader` may make any `GET`. Each operation's security \
requirement lists the roles it accepts. A server without tokens asks for none and listens on \
loopback only.

**Errors** have a 4xx/5xx status and the body `{\"error\": {\"code\", \"message\"}}` \
(`ErrorBody`): `code` is stable for scripts, `message` says what to do next. A refused request \
changes nothing.

**Conventions.** Ids are decimal strings. Times are given twice: RFC 3339 in UTC \
(`enqueued_at`) and Unix milliseconds (`enqueued_at_ms`). Lists return `next_cursor` while more \
pages follow; pass it back as `cursor`.";

/// The static part of the document: everything but the paths, which the router adds.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Spool admin API",
        version = env!("CARGO_PKG_VERSION"),
        description = DESCRIPTION,
    ),
    tags(
        (name = tags::MESSAGES, description = "Enqueue, inspect, list, cancel and requeue \
                                               messages."),
        (name = tags::QUEUES, description = "Queue configuration and statistics."),
        (name = tags::PLUGINS, description = "Deploy, list and roll back handler plugins."),
        (name = tags::ROUTES, description = "Topics and routes: publish through the router, \
                                             bind topic patterns to queues."),
        (name = tags::SCHEDULES, description = "Cron, interval and one-shot schedules that \
                                                enqueue or publish, exactly once per fire."),
        (name = tags::DLQ, description = "The dead-letter queue: list, replay, mark reviewed, \
                                          purge."),
        (name = tags::HEALTH, description = "Liveness and readiness probes; no token needed."),
        (name = tags::METRICS, description = "Prometheus metrics (docs/METRICS.md)."),
        (name = tags::API, description = "This description; no token needed."),
        (name = tags::ADMIN, description = "Operator actions on the server: integrity checks \
                                          and online backups."),
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerScheme),
)]
pub struct ApiDoc;

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut Document) {
        let scheme = HttpBuilder::new()
            .scheme(HttpAuthScheme::Bearer)
            .description(Some(
                "An API token: `Authorization: Bearer <token>`. The server's `spool.toml` holds \
                 only its SHA-256 (`spool token new` prints both). Roles: `admin`, `producer`, \
                 `reader`.",
            ))
            .build();
        openapi
            .components
            .get_or_insert_with(Components::new)
            .security_schemes
            .insert(BEARER.to_owned(), RefOr::T(SecurityScheme::Http(scheme)));
    }
}

/// Responses every operation (or every one that needs a token) can give, whatever its handler
/// does: they come from the middleware and the store. Keyed by component name.
const COMMON: [(&str, &str); 6] = [
    (
        "UnsupportedMediaType",
        "`unsupported_media_type`: the request declares a `Content-Type` other than JSON; send \
         `application/json` or none.",
    ),
    (
        "Unauthorized",
        "`unauthorized`: no token, not `Bearer <token>`, or a token this server does not know. \
         The `WWW-Authenticate` header says `Bearer`.",
    ),
    (
        "Forbidden",
        "`forbidden`: the token's role may not make this request (see the operation's roles).",
    ),
    (
        "HeadersTooLarge",
        "`headers_too_large`: more than 64 request headers, or more than 16 KiB of them.",
    ),
    (
        "Unavailable",
        "`request_timeout`: the request ran longer than `[limits] request_timeout` and was \
         abandoned; `unavailable`: the server is shutting down. Retry later.",
    ),
    (
        "Internal",
        "`internal`: the server failed; the details are in its log, not in the answer.",
    ),
];

/// Adds what holds for every route to the document the router collected: the bearer scheme's
/// roles on each operation, and the responses of authentication, limits and the store.
/// Also writes optional request bodies as the handlers read them.
pub fn complete(doc: &mut Document) {
    let error_body = || Content::new(Some(Ref::from_schema_name(ErrorBody::name())));
    let components = doc.components.get_or_insert_with(Components::new);
    for (name, description) in COMMON {
        let response: ApiResponse = ResponseBuilder::new()
            .description(description)
            .content("application/json", error_body())
            .build();
        components
            .responses
            .insert(name.to_owned(), RefOr::T(response));
    }
    for (path, item) in doc.paths.paths.iter_mut() {
        for (method, operation) in operations_mut(item) {
            complete_operation(path, &method, operation);
            drop_null_body(operation);
        }
    }
}

fn complete_operation(path: &str, method: &Method, op: &mut Operation) {
    let mut add = |status: StatusCode, component: &str| {
        // A handler's own description of the status (e.g. readiness's 503) wins.
        op.responses
            .responses
            .entry(status.as_str().to_owned())
            .or_insert_with(|| RefOr::Ref(Ref::from_response_name(component)));
    };
    add(
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        "HeadersTooLarge",
    );
    add(StatusCode::SERVICE_UNAVAILABLE, "Unavailable");
    let takes_json = matches!(&op.request_body, Some(RefOr::T(body))
        if body.content.contains_key("application/json"));
    if takes_json {
        add(StatusCode::UNSUPPORTED_MEDIA_TYPE, "UnsupportedMediaType");
    }
    if auth::is_public(path) {
        // An empty list: this operation needs no token, whatever the server's configuration.
        op.security = Some(Vec::new());
        return;
    }
    let sample = sample_path(path);
    let roles: Vec<&str> = ROLES
        .into_iter()
        .filter(|role| auth::authorize(*role, method, &sample).is_ok())
        .map(Role::as_str)
        .collect();
    add(StatusCode::UNAUTHORIZED, "Unauthorized");
    if roles.len() < ROLES.len() {
        add(StatusCode::FORBIDDEN, "Forbidden");
    }
    // Every operation behind a token reads or writes the store.
    add(StatusCode::INTERNAL_SERVER_ERROR, "Internal");

    let note = format!("Token roles: `{}`.", roles.join("`, `"));
    op.description = Some(match op.description.take() {
        Some(d) if !d.is_empty() => format!("{d}\n\n{note}"),
        _ => note,
    });
    // OpenAPI 3.1 lets a non-OAuth requirement list the roles it needs.
    op.security = Some(vec![SecurityRequirement::new(BEARER, roles)]);
}

/// utoipa writes the schema of an optional body (`Option<T>`) as `oneOf: [T, null]`. An
/// optional body here is one that may be left empty; JSON `null` is refused like any other
/// value that is not an object, so the `null` branch goes.
fn drop_null_body(op: &mut Operation) {
    let Some(RefOr::T(body)) = op.request_body.as_mut() else {
        return;
    };
    if body.required == Some(Required::True) {
        return;
    }
    let is_null = |s: &RefOr<Schema>| serde_json::to_value(s).ok() == Some(json!({"type": "null"}));
    for content in body.content.values_mut() {
        let RefOr::T(Content {
            schema: Some(schema),
            ..
        }) = content
        else {
            continue;
        };
        if let RefOr::T(Schema::OneOf(one_of)) = schema
            && let [a, b] = one_of.items.as_slice()
        {
            let kept = match (is_null(a), is_null(b)) {
                (false, true) => a.clone(),
                (true, false) => b.clone(),
                _ => continue,
            };
            *schema = kept;
        }
    }
}

/// `path` with each `{parameter}` replaced by a sample value, for questions that take a
/// concrete request path (authorization, the tests' requests).
pub fn sample_path(path: &str) -> String {
    path.split('/')
        .map(|segment| {
            if segment.starts_with('{') && segment.ends_with('}') {
                "1"
            } else {
                segment
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Every operation of a path item with its method.
pub fn operations_mut(item: &mut PathItem) -> Vec<(Method, &mut Operation)> {
    [
        (Method::GET, &mut item.get),
        (Method::PUT, &mut item.put),
        (Method::POST, &mut item.post),
        (Method::DELETE, &mut item.delete),
        (Method::OPTIONS, &mut item.options),
        (Method::HEAD, &mut item.head),
        (Method::PATCH, &mut item.patch),
        (Method::TRACE, &mut item.trace),
    ]
    .into_iter()
    .filter_map(|(method, op)| op.as_mut().map(|op| (method, op)))
    .collect()
}

/// What a name (queue, plugin, topic, handler) looks like: 1 to 128 of `A-Z a-z 0-9 . _ -`,
/// but not `.` or `..` (see [`crate::model::validate_name`]); the length is in `maxLength`.
pub const NAME_PATTERN: &str = r"^(?:[A-Za-z0-9._-]*[A-Za-z0-9_-][A-Za-z0-9._-]*|\.{3,})$";
/// What an id looks like: a positive decimal without sign or leading zeros. 18 digits keep it
/// within a 64-bit integer (ids that large do not exist anyway).
pub const ID_PATTERN: &str = "^[1-9][0-9]{0,17}$";
/// A topic: 1 to 32 words of `A-Z a-z 0-9 _ -` joined by single dots (at most 128 bytes, in
/// `maxLength`); see [`crate::router::pattern`].
pub const TOPIC_PATTERN: &str = r"^[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+){0,31}$";
/// A route pattern: like a topic, and a word may also be `*` (one word) or `#` (any number).
pub const ROUTE_PATTERN: &str = r"^(?:[A-Za-z0-9_-]+|\*|#)(?:\.(?:[A-Za-z0-9_-]+|\*|#)){0,31}$";
/// A route's header condition name.
const HEADER_CONDITION_PATTERN: &str = r"^[A-Za-z0-9._-]{1,256}$";
/// A `next_cursor`: 16 hex digits of a non-negative 64-bit id, or empty (none).
const CURSOR_PATTERN: &str = "^$|^[0-7][0-9a-fA-F]{15}$";
/// Text without control characters (keys, correlation ids, message header names and values).
const TEXT_PATTERN: &str = r"^[^\u0000-\u001f\u007f-\u009f]*$";
/// Canonical standard base64 (padding required, unused bits zero), as enqueue decodes it.
const BASE64_PATTERN: &str =
    "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?$";

/// Writes into the served document what the derives cannot say, so the document is exactly as
/// strict as the handlers: the shape of names and ids in paths, the bounds and exclusions of an
/// enqueued message, the ranges of a queue config, the batch size of this server, and, on a
/// server without tokens, that no operation needs one.
pub fn tighten(doc: &mut Value, limits: &ApiLimits, tokens: bool) {
    use crate::api::dto::limits as msg;
    use crate::model::limits as queue;

    let name = json!({
        "type": "string", "minLength": 1, "maxLength": 128, "pattern": NAME_PATTERN
    });
    let text = |max: usize| {
        json!({
            "type": "string", "minLength": 1, "maxLength": max, "pattern": TEXT_PATTERN
        })
    };
    if let Some(paths) = doc["paths"].as_object_mut() {
        for item in paths.values_mut() {
            let Some(item) = item.as_object_mut() else {
                continue;
            };
            for op in item.values_mut() {
                if let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) {
                    for p in params {
                        let schema = match (p["in"].as_str(), p["name"].as_str()) {
                            (Some("path"), Some("queue" | "name")) => name.clone(),
                            (Some("path"), Some("id")) => {
                                json!({"type": "string", "pattern": ID_PATTERN})
                            }
                            (Some("path"), Some("topic")) => json!({"type": "string",
                                "minLength": 1, "maxLength": 128, "pattern": TOPIC_PATTERN}),
                            // In queries an empty value means "not given" (`?state=&limit=` from
                            // scripts filling templates), so "" is valid everywhere.
                            (Some("query"), Some("queue")) => json!({"type": "string",
                                "maxLength": 128, "pattern": format!("^$|{NAME_PATTERN}")}),
                            (Some("query"), Some("state" | "category")) => {
                                let mut schema = p["schema"].take();
                                if let Some(values) = schema["enum"].as_array_mut() {
                                    values.push(json!(""));
                                }
                                schema
                            }
                            (Some("query"), Some("reviewed" | "skip_filter")) => {
                                json!({"type": "string", "enum": ["true", "false", ""]})
                            }
                            (Some("query"), Some("limit")) => json!({"anyOf": [
                                p["schema"].take(), {"type": "string", "enum": [""]}]}),
                            (Some("query"), Some("cursor")) => {
                                json!({"type": "string", "pattern": CURSOR_PATTERN})
                            }
                            _ => continue,
                        };
                        p["schema"] = schema;
                    }
                }
                if !tokens && op.get("security").is_some() {
                    // This server asks for no token at all.
                    op["security"] = json!([]);
                    if let Some(responses) = op["responses"].as_object_mut() {
                        responses.remove("401");
                        responses.remove("403");
                    }
                }
            }
        }
    }

    let Some(schemas) = doc.pointer_mut("/components/schemas") else {
        return;
    };
    if let Some(m) = schemas.get_mut("MessageIn") {
        let props = &mut m["properties"];
        props["payload_base64"]["pattern"] = json!(BASE64_PATTERN);
        props["priority"]["minimum"] = json!(i32::MIN);
        props["priority"]["maximum"] = json!(i32::MAX);
        props["delay_ms"]["maximum"] = json!(msg::MAX_DELAY_MS);
        props["ttl_ms"]["maximum"] = json!(msg::MAX_TTL_MS);
        for (field, max) in [
            ("idempotency_key", msg::MAX_KEY_BYTES),
            ("correlation_id", msg::MAX_KEY_BYTES),
        ] {
            let mut t = text(max);
            t["type"] = json!(["string", "null"]);
            props[field] = merge(props[field].take(), t);
        }
        let mut topic = name.clone();
        topic["type"] = json!(["string", "null"]);
        props["topic"] = merge(props["topic"].take(), topic);
        let headers = &mut props["headers"];
        headers["maxProperties"] = json!(msg::MAX_HEADERS);
        headers["propertyNames"] = text(msg::MAX_HEADER_NAME_BYTES);
        headers["additionalProperties"] = json!({"type": "string",
            "maxLength": msg::MAX_HEADER_VALUE_BYTES, "pattern": TEXT_PATTERN});
        m["allOf"] = json!([
            // Exactly one of payload and payload_base64 (a null one counts as absent).
            {"oneOf": [
                {"required": ["payload"], "properties": {"payload_base64": {"type": "null"}}},
                {"required": ["payload_base64"],
                 "properties": {"payload_base64": {"type": "string"}},
                 "not": {"required": ["payload"]}}
            ]},
            // Not both delay_ms and deliver_at.
            {"not": {"required": ["delay_ms", "deliver_at"],
                     "properties": {"delay_ms": {"type": "integer"},
                                    "deliver_at": {"type": "string"}}}},
            // supersede needs a key (or the Idempotency-Key header).
            {"if": {"required": ["supersede"], "properties": {"supersede": {"const": true}}},
             "then": {"required": ["idempotency_key"],
                      "properties": {"idempotency_key": {"type": "string"}}}}
        ]);
    }
    if let Some(c) = schemas.get_mut("ComponentBytes") {
        // An empty upload is refused (`invalid_plugin`); a larger one is a 413.
        c["minLength"] = json!(1);
        c["maxLength"] = json!(limits.max_plugin_bytes);
    }
    if let Some(batch) = schemas.get_mut("BatchIn") {
        batch["properties"]["messages"]["maxItems"] = json!(limits.max_batch);
        batch["required"] = json!(["messages"]);
    }
    if let Some(q) = schemas.pointer_mut("/QueueConfigPatch/properties") {
        for (field, lo, hi) in [
            ("concurrency", 1, u64::from(queue::MAX_CONCURRENCY)),
            ("max_attempts", 1, u64::from(queue::MAX_ATTEMPTS)),
            ("backoff_base_ms", 0, queue::MAX_BACKOFF_MS),
            ("backoff_max_ms", 0, queue::MAX_BACKOFF_MS),
            ("lease_ms", queue::MIN_LEASE_MS, queue::MAX_LEASE_MS),
            ("timeout_ms", queue::MIN_TIMEOUT_MS, queue::MAX_TIMEOUT_MS),
            ("fuel", 1, u64::MAX / 2),
            ("memory_mb", 1, u64::from(queue::MAX_MEMORY_MB)),
            ("default_ttl_ms", 1, u64::MAX / 4),
            (
                "breaker_failures",
                0,
                u64::from(queue::MAX_BREAKER_FAILURES),
            ),
            (
                "breaker_cooldown_ms",
                queue::MIN_BREAKER_COOLDOWN_MS,
                queue::MAX_BREAKER_COOLDOWN_MS,
            ),
            (
                "breaker_max_cooldown_ms",
                queue::MIN_BREAKER_COOLDOWN_MS,
                queue::MAX_BREAKER_COOLDOWN_MS,
            ),
        ] {
            q[field]["minimum"] = json!(lo);
            q[field]["maximum"] = json!(hi);
        }
        let mut handler = name.clone();
        handler["type"] = json!(["string", "null"]);
        q["handler"] = merge(q["handler"].take(), handler);
    }
    if let Some(r) = schemas.get_mut("RouteIn") {
        let props = &mut r["properties"];
        props["pattern"] = merge(
            props["pattern"].take(),
            json!({"minLength": 1, "maxLength": 128, "pattern": ROUTE_PATTERN}),
        );
        props["queue"] = merge(props["queue"].take(), name.clone());
        let mut filter = name.clone();
        filter["type"] = json!(["string", "null"]);
        props["filter"] = merge(props["filter"].take(), filter);
        let headers = &mut props["headers"];
        headers["maxProperties"] = json!(32);
        headers["propertyNames"] = json!({"type": "string", "pattern": HEADER_CONDITION_PATTERN});
        headers["additionalProperties"] =
            json!({"type": "string", "maxLength": 4096, "pattern": TEXT_PATTERN});
        props["fuel"]["maximum"] = json!(u64::MAX / 2);
        // Limits apply to a filter: a route that sets one needs a filter.
        let given = |field: &str| {
            json!({"required": [field],
            "properties": {field: {"type": "integer"}}})
        };
        r["allOf"] = json!([
            {"if": {"anyOf": [given("timeout_ms"), given("fuel"), given("memory_mb")]},
             "then": {"required": ["filter"], "properties": {"filter": {"type": "string"}}}}
        ]);
    }
    if let Some(d) = schemas.pointer_mut("/DeadBulkBody/properties") {
        // As in the list's query, an empty queue means "any queue".
        let queue = json!({"type": ["string", "null"], "maxLength": 128,
            "pattern": format!("^$|{NAME_PATTERN}")});
        d["queue"] = merge(d["queue"].take(), queue);
    }
}

/// `base` with the keys of `extra` set over it.
fn merge(mut base: Value, extra: Value) -> Value {
    if !base.is_object() {
        base = json!({});
    }
    if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
        b.extend(e);
    }
    base
}

/// The document as served, serialized once per router.
#[derive(Debug, Clone)]
pub struct Served(Option<Bytes>);

impl Served {
    /// `doc` tightened (see [`tighten`]) for a server with these limits and, or without, tokens.
    pub fn new(doc: &Document, limits: &ApiLimits, tokens: bool) -> Served {
        let json = serde_json::to_value(doc).and_then(|mut v| {
            tighten(&mut v, limits, tokens);
            serde_json::to_vec(&v)
        });
        match json {
            Ok(json) => Served(Some(Bytes::from(json))),
            Err(e) => {
                // Unreachable with utoipa's own types; if it ever happens the endpoint says so.
                tracing::error!(error = %e, "cannot serialize the OpenAPI document");
                Served(None)
            }
        }
    }
}

/// `GET /openapi.json`.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = tags::API,
    operation_id = "openapi",
    summary = "This description of the API",
    description = "The OpenAPI 3.1 document of every endpoint, generated from the handlers. \
                   Needs no token.",
    responses(
        (status = 200, description = "The OpenAPI document.", content_type = "application/json",
         body = Object),
    ),
)]
pub async fn document(Extension(served): Extension<Served>) -> Result<Response, ApiError> {
    let Served(Some(json)) = served else {
        return Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the API description could not be built; the details are in the server log",
        ));
    };
    Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response())
}

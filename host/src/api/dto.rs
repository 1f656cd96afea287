//! Request and response bodies, and the conversions between them and [`crate::model`].
//!
//! The field names are the contract of DESIGN §7; fields are only ever added. Times go out twice:
//! as RFC 3339 strings for people and as `*_ms` Unix milliseconds for scripts.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use utoipa::{IntoParams, ToSchema};

use super::error::ApiError;
use crate::dispatch::Waiting;
use crate::dispatch::breaker::{BreakerSnapshot, BreakerState};
use crate::metrics::LiveQueueStats;
use crate::model::whole;
use crate::model::{
    DeletedMessages, Deployed, ErrorCategory, Message, MessageId, MessageState, NewMessage,
    PluginAction, PluginActivation, PluginDeleted, PluginVersion, Queue, QueueConfig, QueueStats,
    TraceEntry,
};
use crate::store::{BackupReport, CheckReport};

/// Bounds on message metadata, so one producer cannot bloat every row (and every handler call).
pub mod limits {
    pub const MAX_HEADERS: usize = 64;
    pub const MAX_HEADER_NAME_BYTES: usize = 256;
    pub const MAX_HEADER_VALUE_BYTES: usize = 8 * 1024;
    pub const MAX_KEY_BYTES: usize = 512;
    /// Deepest nesting of arrays and objects in a JSON payload. Responses put a payload up to
    /// three levels deep (`{"items": [{"payload": ...}]}`), and common JSON parsers (serde's
    /// among them, with a limit of 128) refuse deeper documents, so a deeper payload could be
    /// stored but not read back.
    pub const MAX_PAYLOAD_DEPTH: usize = 64;
    /// Ten years: anything longer is a unit mistake, and it keeps `now + delay` far from overflow.
    pub const MAX_DELAY_MS: i64 = 10 * 366 * 24 * 3_600_000;
    pub const MAX_TTL_MS: i64 = MAX_DELAY_MS;
}

// --- time -----------------------------------------------------------------------------------

/// Formats Unix milliseconds as RFC 3339 in UTC.
pub fn rfc3339(ms: i64) -> String {
    // Only `None` for absurd stored values; a number is still more useful than nothing.
    crate::model::rfc3339(ms).unwrap_or_else(|| ms.to_string())
}

pub fn parse_rfc3339(field: &str, s: &str) -> Result<i64, ApiError> {
    let t = OffsetDateTime::parse(s, &Rfc3339).map_err(|e| {
        ApiError::invalid(format!(
            "{field} must be an RFC 3339 time such as 2030-01-01T12:00:00Z, got {s:?} ({e})"
        ))
    })?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000)
        .map_err(|_| ApiError::invalid(format!("{field} is out of range")))
}

// --- enqueue --------------------------------------------------------------------------------

/// One message as a producer sends it. Exactly one of `payload` and `payload_base64`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"payload": {"order": 42}, "priority": 5, "idempotency_key": "order-42"}))]
pub struct MessageIn {
    /// Any JSON value (`null` included), kept as the exact text sent so key order survives.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Value)]
    pub payload: Option<Box<RawValue>>,
    /// Raw bytes as standard base64, for payloads that are not JSON.
    #[schema(content_encoding = "base64")]
    pub payload_base64: Option<String>,
    /// Higher is handed out first by the `priority` and `weighted-random` strategies; default 0.
    #[serde(default, deserialize_with = "whole::deserialize")]
    pub priority: Option<i32>,
    /// Not delivered before this many milliseconds from now (at most ten years).
    #[serde(default, deserialize_with = "whole::deserialize")]
    #[schema(minimum = 0)]
    pub delay_ms: Option<i64>,
    /// Not delivered before this RFC 3339 time; excludes `delay_ms`.
    #[schema(format = DateTime)]
    pub deliver_at: Option<String>,
    /// Enqueueing again with a key that is still live returns the existing message's id (the
    /// `Idempotency-Key` header sets it for a single message). Keys are per producer token;
    /// admin tokens and servers without tokens share one scope.
    pub idempotency_key: Option<String>,
    /// Expires unless started within this many milliseconds of becoming deliverable; the
    /// queue's `default_ttl_ms` applies when absent.
    #[serde(default, deserialize_with = "whole::deserialize")]
    #[schema(minimum = 1)]
    pub ttl_ms: Option<i64>,
    /// Passed to the handler with the message (at most 64).
    pub headers: Option<BTreeMap<String, String>>,
    pub topic: Option<String>,
    /// Carried to messages the handler publishes, to follow a chain.
    pub correlation_id: Option<String>,
    /// With `idempotency_key`: replace the payload of the live, not yet leased message with that
    /// key instead of returning it unchanged.
    #[serde(default)]
    pub supersede: bool,
}

/// `{"messages": [...]}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchIn {
    /// At least one, at most the server's `[limits] max_batch` (default 1,000); all are stored
    /// or none is.
    #[schema(min_items = 1)]
    pub messages: Vec<MessageIn>,
}

/// Deserializes a field that is present (even as `null`) into `Some`, so `"payload": null` is a
/// JSON null payload rather than a missing one.
pub(super) fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

/// Enqueue body: one message or a batch. Decided by a cheap first pass that only looks for a
/// top-level `messages` key, so the real parse can name the offending field precisely.
// Not deserialized by serde: `untagged` only tells the OpenAPI schema that the body is one of
// the two shapes with nothing around it.
#[derive(ToSchema)]
#[serde(untagged)]
#[schema(description = "One message, or `{\"messages\": [...]}`: a batch stored all or nothing.")]
pub enum EnqueueBody {
    One(MessageIn),
    #[schema(value_type = BatchIn)]
    Batch(Vec<MessageIn>),
}

impl EnqueueBody {
    pub fn parse(bytes: &[u8]) -> Result<Self, ApiError> {
        #[derive(Deserialize)]
        struct Peek {
            // Present-ness is what matters: `"messages": null` is a (bad) batch too.
            #[serde(default, deserialize_with = "key_present")]
            messages: bool,
        }
        fn key_present<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
            serde::de::IgnoredAny::deserialize(d).map(|_| true)
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::invalid(
                r#"the request body is empty; send {"payload": ...} or {"messages": [...]}"#,
            ));
        }
        let is_batch = serde_json::from_slice::<Peek>(bytes)
            .map(|p| p.messages)
            .unwrap_or(false);
        if is_batch {
            super::extract::parse_json::<BatchIn>(bytes).map(|b| EnqueueBody::Batch(b.messages))
        } else {
            super::extract::parse_json::<MessageIn>(bytes).map(EnqueueBody::One)
        }
    }
}

/// Removes insignificant whitespace from valid JSON text. Strings are copied verbatim, so the
/// result is the same value with the producer's key order, as compact as `serde_json::to_vec`.
fn compact_json(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    for &b in text.as_bytes() {
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            if b == b'"' {
                in_string = true;
            }
            out.push(b);
        }
    }
    out
}

impl MessageIn {
    /// Checks the message and turns it into what the store takes. `field` prefixes error
    /// messages (`""` for a single message, `messages[3].` in a batch); `header_key` is the
    /// `Idempotency-Key` HTTP header, which only applies to a single message.
    pub fn into_new(
        self,
        field: &str,
        max_payload_bytes: usize,
        header_key: Option<&str>,
    ) -> Result<NewMessage, ApiError> {
        let payload = match (self.payload, self.payload_base64) {
            (Some(raw), None) => {
                check_payload(raw.get()).map_err(|problem| {
                    ApiError::invalid(format!(
                        "{field}payload {problem}; send such data as payload_base64 instead"
                    ))
                })?;
                compact_json(raw.get())
            }
            (None, Some(b64)) => base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| {
                    ApiError::invalid(format!(
                        "{field}payload_base64 is not valid standard base64: {e}"
                    ))
                })?,
            (Some(_), Some(_)) => {
                return Err(ApiError::invalid(format!(
                    "{field}payload and {field}payload_base64 are both set; send exactly one"
                )));
            }
            (None, None) => {
                return Err(ApiError::invalid(format!(
                    "{field}payload is missing; send \"payload\" (any JSON) or \"payload_base64\" (raw bytes)"
                )));
            }
        };
        if payload.len() > max_payload_bytes {
            return Err(ApiError::too_large(format!(
                "{field}payload is {} bytes; the limit is {max_payload_bytes} bytes \
                 (store large data elsewhere and enqueue a reference to it)",
                payload.len()
            )));
        }

        let mut delay_ms = None;
        let available_at = match (self.delay_ms, self.deliver_at) {
            (Some(_), Some(_)) => {
                return Err(ApiError::invalid(format!(
                    "{field}delay_ms and {field}deliver_at are both set; send at most one"
                )));
            }
            (Some(d), None) => {
                if !(0..=limits::MAX_DELAY_MS).contains(&d) {
                    return Err(ApiError::invalid(format!(
                        "{field}delay_ms must be between 0 and {}, got {d}",
                        limits::MAX_DELAY_MS
                    )));
                }
                delay_ms = Some(d as u64);
                None
            }
            (None, Some(at)) => Some(parse_rfc3339(&format!("{field}deliver_at"), &at)?),
            (None, None) => None,
        };

        // The TTL counts from when the message becomes deliverable: a delayed message with a TTL
        // shorter than its delay would otherwise always expire unseen.
        let ttl_ms = match self.ttl_ms {
            Some(ttl) if !(1..=limits::MAX_TTL_MS).contains(&ttl) => {
                return Err(ApiError::invalid(format!(
                    "{field}ttl_ms must be between 1 and {}, got {ttl}",
                    limits::MAX_TTL_MS
                )));
            }
            Some(ttl) => Some(ttl as u64),
            None => None,
        };

        let idempotency_key = match (self.idempotency_key, header_key) {
            (Some(k), Some(h)) if k != h => {
                return Err(ApiError::invalid(format!(
                    "the Idempotency-Key header ({h:?}) differs from {field}idempotency_key ({k:?}); send one or make them equal"
                )));
            }
            (Some(k), _) => Some(k),
            (None, h) => h.map(str::to_owned),
        };
        if let Some(k) = &idempotency_key {
            check_text(&format!("{field}idempotency_key"), k, limits::MAX_KEY_BYTES)?;
        }
        if self.supersede && idempotency_key.is_none() {
            return Err(ApiError::invalid(format!(
                "{field}supersede needs an idempotency_key: it replaces the message with the same key"
            )));
        }
        if let Some(c) = &self.correlation_id {
            check_text(&format!("{field}correlation_id"), c, limits::MAX_KEY_BYTES)?;
        }
        if let Some(t) = &self.topic {
            crate::model::validate_name(&format!("{field}topic"), t).map_err(ApiError::invalid)?;
        }

        let headers = self.headers.unwrap_or_default();
        if headers.len() > limits::MAX_HEADERS {
            return Err(ApiError::invalid(format!(
                "{field}headers has {} entries; at most {} are allowed",
                headers.len(),
                limits::MAX_HEADERS
            )));
        }
        for (name, value) in &headers {
            check_text(
                &format!("{field}headers name"),
                name,
                limits::MAX_HEADER_NAME_BYTES,
            )?;
            if value.len() > limits::MAX_HEADER_VALUE_BYTES {
                return Err(ApiError::invalid(format!(
                    "{field}headers[{name:?}] is {} bytes; at most {} are allowed",
                    value.len(),
                    limits::MAX_HEADER_VALUE_BYTES
                )));
            }
            // Values reach logs and handlers just like names: no line breaks or other controls.
            if value.chars().any(char::is_control) {
                return Err(ApiError::invalid(format!(
                    "{field}headers[{name:?}] value {value:?} contains control characters \
                     (such as CR or LF); header values are one line of text"
                )));
            }
        }

        Ok(NewMessage {
            payload,
            priority: self.priority.unwrap_or(0),
            available_at,
            delay_ms,
            expires_at: None,
            ttl_ms,
            idempotency_key,
            idempotency_scope: None,
            supersede: self.supersede,
            headers: headers.into_iter().collect(),
            topic: self.topic,
            correlation_id: self.correlation_id,
            ..NewMessage::default()
        })
    }
}

/// Checks that a JSON payload (already known to be well-formed JSON text) reads back with any
/// JSON parser: no lone UTF-16 surrogate escape (`"\ud800"`), no number beyond the range of a
/// 64-bit float, and at most [`limits::MAX_PAYLOAD_DEPTH`] levels of nesting. The capture as
/// raw text skips over values without these checks, so without this a payload could be stored
/// that no client can parse when it is listed or fetched. Returns what is wrong.
///
/// It walks the text once without building a value (strings without escapes are borrowed), so
/// it costs about as much as the capture itself.
pub fn check_payload(text: &str) -> Result<(), String> {
    let mut de = serde_json::Deserializer::from_str(text);
    match serde::de::DeserializeSeed::deserialize(PayloadCheck { depth: 0 }, &mut de) {
        Ok(()) => Ok(()),
        Err(e) if e.to_string().starts_with(TOO_DEEP) => Err(format!(
            "nests arrays and objects more than {} levels deep",
            limits::MAX_PAYLOAD_DEPTH
        )),
        Err(e) => {
            let detail = e.to_string();
            Err(
                if detail.contains("escape") || detail.contains("surrogate") {
                    format!(
                        "holds a lone UTF-16 surrogate escape such as \"\\ud800\" ({detail}), \
                     which is not Unicode text"
                    )
                } else if detail.starts_with("number out of range") {
                    format!("holds a number beyond the range of a 64-bit float ({detail})")
                } else {
                    format!("cannot be read back as JSON: {detail}")
                },
            )
        }
    }
}

const TOO_DEEP: &str = "payload too deep";

/// Visits every value of a payload, counting nesting; see [`check_payload`].
#[derive(Clone, Copy)]
struct PayloadCheck {
    depth: usize,
}

impl PayloadCheck {
    fn nested<E: serde::de::Error>(self) -> Result<PayloadCheck, E> {
        if self.depth >= limits::MAX_PAYLOAD_DEPTH {
            return Err(E::custom(TOO_DEEP));
        }
        Ok(PayloadCheck {
            depth: self.depth + 1,
        })
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for PayloadCheck {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for PayloadCheck {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let inner = self.nested()?;
        while seq.next_element_seed(inner)?.is_some() {}
        Ok(())
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let inner = self.nested()?;
        // Keys are strings, checked for surrogates like any other string.
        while map.next_key_seed(inner)?.is_some() {
            map.next_value_seed(inner)?;
        }
        Ok(())
    }
}

/// Non-empty, bounded, and free of control characters (these strings end up in logs and in
/// plugin-visible headers).
fn check_text(field: &str, s: &str, max: usize) -> Result<(), ApiError> {
    if s.is_empty() {
        return Err(ApiError::invalid(format!("{field} must not be empty")));
    }
    if s.len() > max {
        return Err(ApiError::invalid(format!(
            "{field} is {} bytes; at most {max} are allowed",
            s.len()
        )));
    }
    if s.chars().any(char::is_control) {
        return Err(ApiError::invalid(format!(
            "{field} {s:?} contains control characters"
        )));
    }
    Ok(())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EnqueueOut {
    /// The messages' ids, in the order sent.
    pub ids: Vec<String>,
    /// Per id: true when an existing message with the same idempotency key was returned.
    pub existing: Vec<bool>,
}

// --- messages -------------------------------------------------------------------------------

/// A message as `GET /v1/messages/{id}` shows it. Times are RFC 3339 (UTC) and, in the `_ms`
/// twin, Unix milliseconds.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageOut {
    pub id: String,
    pub queue: String,
    pub state: MessageState,
    pub attempts: u32,
    pub priority: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_category: Option<ErrorCategory>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin_version: Option<String>,
    #[schema(format = DateTime)]
    pub enqueued_at: String,
    pub enqueued_at_ms: i64,
    #[schema(format = DateTime)]
    pub available_at: String,
    pub available_at_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub finished_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub lease_expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_expires_at_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub reviewed_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reviewed_at_ms: Option<i64>,
    pub headers: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// The name of the API token that enqueued it (servers with tokens only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub producer: Option<String>,
    /// The payload as JSON when its bytes are JSON any client can parse back ...
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Value)]
    pub payload: Option<Box<RawValue>>,
    /// ... otherwise base64. Both are absent once the payload was dropped (acked messages).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(content_encoding = "base64")]
    pub payload_base64: Option<String>,
}

impl From<Message> for MessageOut {
    fn from(m: Message) -> Self {
        let (payload, payload_base64) = match m.payload {
            None => (None, None),
            Some(bytes) => payload_out(&bytes),
        };
        MessageOut {
            id: m.id.to_string(),
            queue: m.queue,
            state: m.state,
            attempts: m.attempts,
            priority: m.priority,
            last_error: m.last_error,
            error_category: m.error_category,
            plugin_version: m.plugin_version,
            enqueued_at: rfc3339(m.enqueued_at),
            enqueued_at_ms: m.enqueued_at,
            available_at: rfc3339(m.available_at),
            available_at_ms: m.available_at,
            expires_at: m.expires_at.map(rfc3339),
            expires_at_ms: m.expires_at,
            finished_at: m.finished_at.map(rfc3339),
            finished_at_ms: m.finished_at,
            lease_expires_at: m.lease_expires_at.map(rfc3339),
            lease_expires_at_ms: m.lease_expires_at,
            reviewed_at: m.reviewed_at.map(rfc3339),
            reviewed_at_ms: m.reviewed_at,
            headers: m.headers.into_iter().collect(),
            topic: m.topic,
            correlation_id: m.correlation_id,
            idempotency_key: m.idempotency_key,
            producer: m.producer,
            payload,
            payload_base64,
        }
    }
}

/// A stored payload as the API shows it: JSON as it is (`payload`), anything else as base64
/// (`payload_base64`).
pub fn payload_out(bytes: &[u8]) -> (Option<Box<RawValue>>, Option<String>) {
    // JSON that a client could not parse back (stored before enqueue checked payloads, or sent
    // as payload_base64) goes out as base64 too: shown, never unreadable.
    match serde_json::from_slice::<Box<RawValue>>(bytes)
        .ok()
        .filter(|raw| check_payload(raw.get()).is_ok())
    {
        Some(raw) => (Some(raw), None),
        None => (
            None,
            Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
        ),
    }
}

/// `GET /v1/messages/{id}/trace`: a message's correlation tree.
#[derive(Debug, Serialize, ToSchema)]
pub struct TraceOut {
    /// The chain's correlation id: the one its first message was sent with, else that
    /// message's id.
    pub correlation_id: String,
    /// Oldest first.
    pub messages: Vec<TraceEntryOut>,
}

/// One message of a trace.
#[derive(Debug, Serialize, ToSchema)]
pub struct TraceEntryOut {
    pub id: String,
    /// The message whose handler published this one; `null` for a producer's message.
    pub parent_id: Option<String>,
    pub queue: String,
    /// The topic it was published to; `null` when it was enqueued to its queue directly.
    pub topic: Option<String>,
    pub state: MessageState,
    /// The handler version of its last attempt; `null` before the first.
    pub plugin_version: Option<String>,
    #[schema(format = DateTime)]
    pub enqueued_at: String,
    pub enqueued_at_ms: i64,
}

impl From<TraceEntry> for TraceEntryOut {
    fn from(e: TraceEntry) -> Self {
        TraceEntryOut {
            id: e.id.to_string(),
            parent_id: e.parent_id.map(|p| p.to_string()),
            queue: e.queue,
            topic: e.topic,
            state: e.state,
            plugin_version: e.plugin_version,
            enqueued_at: rfc3339(e.enqueued_at),
            enqueued_at_ms: e.enqueued_at,
        }
    }
}

/// A page of items with the cursor of the next one.
#[derive(Debug, Serialize, ToSchema)]
pub struct PageOut<T> {
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; absent on the last one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// A message's id and the state it is in now.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageStateOut {
    pub id: String,
    pub state: MessageState,
}

/// Parses a message (or dead-letter) id from the path.
pub fn parse_id(s: &str) -> Result<MessageId, ApiError> {
    // Only the canonical spelling: `01` or `+1` naming message 1 would make two ids of one.
    s.parse::<MessageId>()
        .ok()
        .filter(|id| *id > 0 && id.to_string() == s)
        .ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::BAD_REQUEST,
                "invalid_id",
                format!(
                    "{s:?} is not a message id; ids are positive decimal integers \
                     without sign or leading zeros"
                ),
            )
        })
}

// --- listing parameters ---------------------------------------------------------------------

/// `limit`/`cursor` shared by every list endpoint. Query values are taken as strings and parsed
/// here so the error can say which parameter is wrong and what is allowed.
pub const DEFAULT_LIMIT: u32 = 100;
pub const MAX_LIMIT: u32 = 1000;

pub fn parse_limit(limit: Option<&str>) -> Result<u32, ApiError> {
    match limit {
        None | Some("") => Ok(DEFAULT_LIMIT),
        Some(s) => s
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| {
                ApiError::invalid(format!(
                    "limit must be an integer between 1 and {MAX_LIMIT}, got {s:?}"
                ))
            }),
    }
}

/// An empty query value means "not given" (`?state=&limit=` from scripts filling templates).
pub fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.is_empty())
}

// The query structs take strings (see `parse_limit`); `value_type` documents what the
// handlers accept after parsing them.

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct MessageListQuery {
    /// Only messages in this state.
    #[param(value_type = Option<MessageState>, inline)]
    pub state: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only messages enqueued with this idempotency key (by any producer).
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeadListQuery {
    /// Only dead letters of this queue.
    pub queue: Option<String>,
    /// Only dead letters that failed for this reason.
    #[param(value_type = Option<ErrorCategory>, inline)]
    pub category: Option<String>,
    /// Only reviewed (`true`) or only unreviewed (`false`) dead letters.
    #[param(value_type = Option<bool>)]
    pub reviewed: Option<String>,
    /// Page size, 1 to 1000 (default 100).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 1000)]
    pub limit: Option<String>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Body of `POST /v1/dlq/replay` and `POST /v1/dlq/purge`: which dead letters, oldest first.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeadBulkBody {
    /// Only dead letters of this queue.
    pub queue: Option<String>,
    /// Only dead letters that failed for this reason.
    #[schema(value_type = Option<ErrorCategory>)]
    pub category: Option<String>,
    /// Only reviewed (`true`) or only unreviewed (`false`) dead letters.
    pub reviewed: Option<bool>,
    /// Default 1,000, at most 10,000: larger selections take several calls.
    #[serde(default, deserialize_with = "whole::deserialize")]
    #[schema(minimum = 1, maximum = 10000)]
    pub limit: Option<u32>,
}

// --- queues ---------------------------------------------------------------------------------

/// A queue as `GET /v1/queues/{q}` shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueOut {
    pub name: String,
    pub config: QueueConfig,
    pub stats: QueueStatsOut,
    #[schema(format = DateTime)]
    pub created_at: String,
    pub created_at_ms: i64,
    /// Whether this server hands the queue's messages to its handler now.
    pub consumer: ConsumerOut,
}

/// `consumer` of a queue: `consuming`, or `waiting` with the cause and what to do. Waiting
/// messages spend no attempts.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConsumerOut {
    /// `consuming` or `waiting`.
    #[schema(example = "waiting")]
    pub state: &'static str,
    /// Why it waits: `paused`, `no_handler`, `plugin_missing`, `not_a_handler` or
    /// `plugin_unloadable`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<&'static str>,
    /// What is wrong and what to do, for people.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl ConsumerOut {
    pub fn of(waiting: Option<Waiting>) -> Self {
        match waiting {
            None => ConsumerOut {
                state: "consuming",
                cause: None,
                reason: None,
            },
            Some(w) => ConsumerOut {
                state: "waiting",
                cause: Some(w.cause.as_str()),
                reason: Some(w.reason),
            },
        }
    }
}

/// The result of an integrity check of the database file (`POST /v1/admin/check`, and the
/// last one in `/readyz`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IntegrityOut {
    /// `quick` (`PRAGMA quick_check`) or `full` (`PRAGMA integrity_check`).
    #[schema(example = "quick")]
    pub level: &'static str,
    /// `ok`, `damaged` (see `problems`), or `incomplete` (it ran out of time; nothing wrong in
    /// what it read).
    #[schema(example = "ok")]
    pub outcome: &'static str,
    /// What is wrong, in SQLite's words (at most 20); empty unless `damaged`.
    pub problems: Vec<String>,
    #[schema(format = DateTime)]
    pub checked_at: String,
    pub checked_at_ms: i64,
    pub duration_ms: u64,
}

impl IntegrityOut {
    pub fn new(r: CheckReport) -> Self {
        IntegrityOut {
            level: r.level.as_str(),
            outcome: r.outcome.as_str(),
            problems: r.problems,
            checked_at: rfc3339(r.checked_at_ms),
            checked_at_ms: r.checked_at_ms,
            duration_ms: r.duration_ms,
        }
    }
}

/// Body of `POST /v1/admin/backup`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupIn {
    /// The backup file: relative to the server's `[admin] backup_dir`, or an absolute path
    /// inside it. It must not exist yet.
    #[schema(example = "spool-2026-01-31.db", min_length = 1)]
    pub path: String,
}

/// A finished backup (`POST /v1/admin/backup`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BackupOut {
    /// Where the copy was written (absolute, on the server).
    pub path: String,
    /// The copy's size.
    pub bytes: u64,
    pub duration_ms: u64,
    /// The moment the copy shows the database as of.
    #[schema(format = DateTime)]
    pub taken_at: String,
    pub taken_at_ms: i64,
}

impl From<BackupReport> for BackupOut {
    fn from(r: BackupReport) -> Self {
        BackupOut {
            path: r.path.to_string_lossy().into_owned(),
            bytes: r.bytes,
            duration_ms: r.duration_ms,
            taken_at: rfc3339(r.taken_at_ms),
            taken_at_ms: r.taken_at_ms,
        }
    }
}

/// Body of `POST /v1/admin/check`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckIn {
    /// `true`: `PRAGMA integrity_check` (also checks every index against its table; slower).
    /// Default `false`: `PRAGMA quick_check`.
    #[serde(default)]
    pub full: bool,
}

/// A queue's `stats`: the store's figures (depths now, totals since the queue was created)
/// and, next to them, this server's live ones since it started (`in_flight`, `wait_ms`,
/// `handler_ms`, `errors`).
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueStatsOut {
    #[serde(flatten)]
    pub store: QueueStats,
    #[serde(flatten)]
    pub live: LiveQueueStats,
    /// This server's circuit breaker of the queue.
    pub breaker: BreakerOut,
}

/// A queue's circuit breaker on this server (in memory: each server has its own, and it starts
/// closed). Times are RFC 3339 (UTC) and, in the `_ms` twin, Unix milliseconds.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct BreakerOut {
    /// `breaker_failures` is above 0.
    pub enabled: bool,
    /// `closed` (claiming), `open` (claiming nothing until `retry_at`) or `half_open` (one
    /// message let through; its outcome decides).
    #[schema(example = "open")]
    pub state: &'static str,
    /// Failed deliveries in a row (an ack resets it).
    pub consecutive_failures: u32,
    /// When it last opened (while open or half-open).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub opened_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opened_at_ms: Option<i64>,
    /// When the cool-down ends and one message is let through (while open).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub retry_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_at_ms: Option<i64>,
    /// The cool-down it is in, or the one it would start with if it opened now.
    pub cooldown_ms: u64,
    /// Times it opened since this server started consuming the queue.
    pub times_opened: u64,
    /// The error category of the last failure counted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error_category: Option<ErrorCategory>,
}

impl BreakerOut {
    /// `snapshot` when the queue has a claimer on this server, else a closed breaker with the
    /// queue's settings.
    pub fn of(snapshot: Option<BreakerSnapshot>, config: &QueueConfig) -> Self {
        let s = snapshot.unwrap_or(BreakerSnapshot {
            threshold: config.breaker_failures,
            state: BreakerState::Closed,
            consecutive_failures: 0,
            opened_at_ms: None,
            retry_at_ms: None,
            cooldown_ms: config.breaker_cooldown_ms,
            times_opened: 0,
            last_failure: None,
        });
        BreakerOut {
            enabled: s.threshold > 0,
            state: s.state.as_str(),
            consecutive_failures: s.consecutive_failures,
            opened_at: s.opened_at_ms.map(rfc3339),
            opened_at_ms: s.opened_at_ms,
            retry_at: s.retry_at_ms.map(rfc3339),
            retry_at_ms: s.retry_at_ms,
            cooldown_ms: s.cooldown_ms,
            times_opened: s.times_opened,
            last_error_category: s.last_failure,
        }
    }
}

impl QueueOut {
    pub fn new(q: Queue, stats: QueueStats, live: LiveQueueStats) -> Self {
        let breaker = BreakerOut::of(None, &q.config);
        QueueOut {
            name: q.name,
            config: q.config,
            stats: QueueStatsOut {
                store: stats,
                live,
                breaker,
            },
            created_at: rfc3339(q.created_at),
            created_at_ms: q.created_at,
            consumer: ConsumerOut::of(None),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct QueuesOut {
    pub queues: Vec<QueueOut>,
}

// --- dead-letter queue ----------------------------------------------------------------------

/// A dead letter as `GET /v1/dlq` lists it.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadOut {
    pub id: String,
    pub queue: String,
    pub error_category: Option<ErrorCategory>,
    pub error: String,
    pub attempts: u32,
    pub reviewed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(format = DateTime)]
    pub reviewed_at: Option<String>,
    #[schema(format = DateTime)]
    pub dead_at: Option<String>,
    pub dead_at_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin_version: Option<String>,
    pub priority: i32,
    #[schema(format = DateTime)]
    pub enqueued_at: String,
    pub enqueued_at_ms: i64,
}

impl From<Message> for DeadOut {
    fn from(m: Message) -> Self {
        DeadOut {
            id: m.id.to_string(),
            queue: m.queue,
            error_category: m.error_category,
            error: m.last_error.unwrap_or_default(),
            attempts: m.attempts,
            reviewed: m.reviewed_at.is_some(),
            reviewed_at: m.reviewed_at.map(rfc3339),
            dead_at: m.finished_at.map(rfc3339),
            dead_at_ms: m.finished_at,
            plugin_version: m.plugin_version,
            priority: m.priority,
            enqueued_at: rfc3339(m.enqueued_at),
            enqueued_at_ms: m.enqueued_at,
        }
    }
}

/// `DELETE /v1/queues/{queue}?force=`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeleteQueueQuery {
    /// `true`: delete the queue even while it holds scheduled, ready or leased messages, and
    /// those messages with it.
    #[param(value_type = Option<bool>)]
    pub force: Option<String>,
}

/// `GET /v1/queues/{queue}/history?minutes=`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// How many minutes back, 1 to 10080 (a week, all that is kept) [default: 60].
    #[param(value_type = Option<u32>, minimum = 1, maximum = 10080)]
    pub minutes: Option<String>,
}

/// A queue's per-minute history.
#[derive(Debug, Serialize, ToSchema)]
pub struct HistoryOut {
    pub queue: String,
    /// Oldest first; each the last sample taken in its minute (every 10 s), so the current
    /// minute's point is at most that far behind. Minutes no server was running have no point.
    pub points: Vec<crate::model::HistoryPoint>,
}

/// What `DELETE /v1/queues/{queue}` removed.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueDeletedOut {
    pub name: String,
    /// Whether `force=true` was given.
    pub forced: bool,
    /// Messages deleted with the queue, by the state they were in (`dead` is the queue's part
    /// of the DLQ), and their `total`.
    pub deleted: DeletedMessagesOut,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeletedMessagesOut {
    #[serde(flatten)]
    pub by_state: DeletedMessages,
    pub total: u64,
}

impl QueueDeletedOut {
    pub fn new(name: String, forced: bool, deleted: DeletedMessages) -> Self {
        QueueDeletedOut {
            name,
            forced,
            deleted: DeletedMessagesOut {
                total: deleted.total(),
                by_state: deleted,
            },
        }
    }
}

// --- plugins --------------------------------------------------------------------------------

/// One plugin version, as `PUT /v1/plugins/{name}` returns it and `GET /v1/plugins` lists it.
#[derive(Debug, Serialize, ToSchema)]
pub struct PluginVersionOut {
    pub name: String,
    pub version: u32,
    pub sha256: String,
    pub world: String,
    pub size: u64,
    #[schema(format = DateTime)]
    pub created_at: String,
    pub created_at_ms: i64,
    pub active: bool,
    /// Deliveries through this version on this server since it started, by outcome (`ack`,
    /// `retry`, `handler-retry`, `dead`, ...; outcomes with none are left out).
    pub outcomes: BTreeMap<&'static str, u64>,
    /// Its failed deliveries on this server since it started, by error category.
    pub errors: BTreeMap<&'static str, u64>,
}

impl From<PluginVersion> for PluginVersionOut {
    fn from(v: PluginVersion) -> Self {
        PluginVersionOut {
            name: v.name,
            version: v.version,
            sha256: v.sha256,
            world: v.world,
            size: v.size,
            created_at: rfc3339(v.created_at),
            created_at_ms: v.created_at,
            active: v.active,
            outcomes: BTreeMap::new(),
            errors: BTreeMap::new(),
        }
    }
}

/// What `PUT /v1/plugins/{name}` did: the version that is active now.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeployOut {
    #[serde(flatten)]
    pub version: PluginVersionOut,
    /// `false` when the bytes were those of an existing version, which is active again (no
    /// copy was stored).
    pub new_version: bool,
    /// `baseline` when a large component was compiled quickly to serve at once and its
    /// optimised code is being compiled in the background (`GET /v1/plugins/{name}` shows when
    /// it is swapped in); `optimized` otherwise.
    #[schema(value_type = Option<String>, example = "baseline")]
    pub compiled: Option<&'static str>,
}

impl From<Deployed> for DeployOut {
    fn from(d: Deployed) -> Self {
        DeployOut {
            version: d.version.into(),
            new_version: d.new_version,
            compiled: None,
        }
    }
}

/// One change of a plugin's active version.
#[derive(Debug, Serialize, ToSchema)]
pub struct ActivationOut {
    #[schema(format = DateTime)]
    pub at: String,
    pub at_ms: i64,
    /// The API token's name; `null` on a server without tokens, and for plugins `spool.toml`
    /// declares (deployed at start).
    pub actor: Option<String>,
    pub action: PluginAction,
    /// The version active before; `null` for the first deploy.
    pub from_version: Option<u32>,
    pub to_version: u32,
}

impl From<PluginActivation> for ActivationOut {
    fn from(a: PluginActivation) -> Self {
        ActivationOut {
            at: rfc3339(a.at),
            at_ms: a.at,
            actor: a.actor,
            action: a.action,
            from_version: a.from_version,
            to_version: a.to_version,
        }
    }
}

/// `GET /v1/plugins/{name}`: the plugin as `GET /v1/plugins` lists it, plus its history.
#[derive(Debug, Serialize, ToSchema)]
pub struct PluginDetailOut {
    #[serde(flatten)]
    pub plugin: PluginOut,
    /// Every change of the active version, oldest first (kept since schema version 3).
    pub history: Vec<ActivationOut>,
}

/// What `DELETE /v1/plugins/{name}` removed.
#[derive(Debug, Serialize, ToSchema)]
pub struct PluginDeletedOut {
    pub name: String,
    /// Stored versions deleted.
    pub versions_deleted: u64,
    /// Entries of the plugin's key-value store deleted.
    pub kv_entries_deleted: u64,
}

impl From<PluginDeleted> for PluginDeletedOut {
    fn from(d: PluginDeleted) -> Self {
        PluginDeletedOut {
            name: d.name,
            versions_deleted: d.versions,
            kv_entries_deleted: d.kv_entries,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PluginOut {
    pub name: String,
    /// `null` when no version is active.
    pub active_version: Option<u32>,
    pub versions: Vec<PluginVersionOut>,
    /// Failed deliveries by error category on this server since it started.
    pub errors: BTreeMap<&'static str, u64>,
    /// How the active version's code is compiled on this server: `baseline` (Winch, serving
    /// while the optimising compile runs in the background) or `optimized` (Cranelift);
    /// `null` while this server has not loaded it yet.
    #[schema(value_type = Option<String>, example = "optimized")]
    pub compiled: Option<&'static str>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PluginsOut {
    pub plugins: Vec<PluginOut>,
}

impl PluginsOut {
    /// Groups a flat version list by plugin name, versions ascending.
    pub fn group(versions: Vec<PluginVersion>) -> Self {
        let mut by_name: BTreeMap<String, PluginOut> = BTreeMap::new();
        for v in versions {
            let p = by_name.entry(v.name.clone()).or_insert_with(|| PluginOut {
                name: v.name.clone(),
                active_version: None,
                versions: Vec::new(),
                errors: BTreeMap::new(),
                compiled: None,
            });
            if v.active {
                p.active_version = Some(v.version);
            }
            p.versions.push(v.into());
        }
        let mut plugins: Vec<PluginOut> = by_name.into_values().collect();
        for p in &mut plugins {
            p.versions.sort_by_key(|v| v.version);
        }
        PluginsOut { plugins }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compact_json_keeps_strings_and_order() {
        let text = "{ \"b\" : [1, 2],\n \"a\": \"x y \\\" z\" }";
        assert_eq!(
            compact_json(text),
            br#"{"b":[1,2],"a":"x y \" z"}"#.to_vec()
        );
    }

    #[test]
    fn ids_are_canonical_decimals() {
        assert_eq!(parse_id("1").unwrap(), 1);
        assert_eq!(parse_id("1234").unwrap(), 1234);
        for bad in ["01", "+1", "0", "-1", " 1", "1 ", "1e3", "", "00"] {
            let e = parse_id(bad).unwrap_err();
            assert_eq!(e.code, "invalid_id", "{bad:?}");
        }
    }

    /// The payload bytes `text` would be stored as, or the refusal.
    fn accept(text: &str) -> Result<Vec<u8>, ApiError> {
        let body = format!(r#"{{"payload": {text}}}"#);
        match EnqueueBody::parse(body.as_bytes())? {
            EnqueueBody::One(m) => m.into_new("", usize::MAX, None).map(|m| m.payload),
            EnqueueBody::Batch(_) => unreachable!("a single message"),
        }
    }

    #[test]
    fn payloads_that_cannot_be_read_back_are_refused() {
        for (text, problem) in [
            (r#""\ud800""#, "surrogate"),
            (r#"{"k": ["\udc00 trailing"]}"#, "surrogate"),
            (r#"{"\ud800": 1}"#, "surrogate"),
            ("1e400", "out of range"),
            (
                &format!("{}1{}", "[".repeat(65), "]".repeat(65)),
                "64 levels",
            ),
            (
                &format!("{}1{}", "{\"a\":".repeat(200), "}".repeat(200)),
                "64 levels",
            ),
        ] {
            let e = accept(text).unwrap_err();
            assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST, "{text}");
            assert!(e.message.contains(problem), "{problem:?} in {}", e.message);
            assert!(e.message.starts_with("payload "), "{}", e.message);
        }
        for fine in [
            r#""\ud83d\ude00 and \u0000""#,
            "1e300",
            "-0",
            "18446744073709551616",
            &format!("{}1{}", "[".repeat(64), "]".repeat(64)),
        ] {
            accept(fine).unwrap_or_else(|e| panic!("{fine}: {e}"));
        }
        // In a batch the error names the message.
        let body = r#"{"messages": [{"payload": 1}, {"payload": "\udfff"}]}"#;
        let EnqueueBody::Batch(batch) = EnqueueBody::parse(body.as_bytes()).unwrap() else {
            panic!("a batch")
        };
        let errors: Vec<String> = batch
            .into_iter()
            .enumerate()
            .filter_map(|(i, m)| m.into_new(&format!("messages[{i}]."), 1 << 20, None).err())
            .map(|e| e.message)
            .collect();
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].starts_with("messages[1].payload "),
            "{}",
            errors[0]
        );
    }

    /// Random JSON made of the parts that trip parsers: deep nesting, surrogate escapes (paired
    /// and lone), huge and tiny numbers, control escapes, non-ASCII text, odd whitespace.
    fn odd_json(rng: &mut impl rand::Rng, depth: usize, out: &mut String) {
        const STRINGS: [&str; 9] = [
            r#""plain""#,
            r#""\ud800""#,
            r#""\udc00""#,
            r#""\ud83d\ude00""#,
            r#""\u0000\n\t\"\\""#,
            "\"é 漢字 🎉\"",
            r#""\ud800\u0041""#,
            r#""""#,
            r#""\uDBFF\uDFFF""#,
        ];
        const NUMBERS: [&str; 9] = [
            "0",
            "-0",
            "1.5e308",
            "1e400",
            "-1e400",
            "1e-400",
            "18446744073709551616",
            "-9223372036854775809",
            "123456789012345678901234567890",
        ];
        let ws = [" ", "", "\n", "\t", "\r\n"];
        out.push_str(ws[rng.random_range(0..ws.len())]);
        let pick = if depth > 140 {
            rng.random_range(0..4)
        } else {
            rng.random_range(0..7)
        };
        match pick {
            0 => out.push_str(STRINGS[rng.random_range(0..STRINGS.len())]),
            1 => out.push_str(NUMBERS[rng.random_range(0..NUMBERS.len())]),
            2 => out.push_str(["true", "false", "null"][rng.random_range(0..3)]),
            3 => out.push_str("{}"),
            4 | 5 => {
                out.push('[');
                for i in 0..rng.random_range(1..3) {
                    if i > 0 {
                        out.push(',');
                    }
                    odd_json(rng, depth + 1, out);
                }
                out.push(']');
            }
            _ => {
                out.push('{');
                let key = STRINGS[rng.random_range(0..STRINGS.len())];
                out.push_str(key);
                out.push(':');
                odd_json(rng, depth + 1, out);
                out.push('}');
            }
        }
    }

    /// Whatever enqueue accepts, every client reads back: the stored payload inside a listing
    /// page (`{"items": [{"payload": ...}]}`) parses as a `serde_json::Value`, the way the CLI
    /// reads it.
    #[test]
    fn every_accepted_payload_reads_back() {
        use rand::SeedableRng as _;
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5_9001);
        let (mut accepted, mut refused) = (0, 0);
        for _ in 0..3000 {
            let mut text = String::new();
            odd_json(&mut rng, 0, &mut text);
            match accept(&text) {
                Ok(stored) => {
                    accepted += 1;
                    let stored = String::from_utf8(stored).expect("JSON payloads are UTF-8");
                    let page = format!(r#"{{"items": [{{"id": "1", "payload": {stored}}}]}}"#);
                    let v: Result<serde_json::Value, _> = serde_json::from_str(&page);
                    assert!(v.is_ok(), "accepted but unreadable: {text} ({:?})", v.err());
                }
                Err(e) => {
                    refused += 1;
                    assert_eq!(e.code, "invalid_request", "{text}: {}", e.message);
                    // Refused only when a client could not read it.
                    let whole: Result<serde_json::Value, _> = serde_json::from_str(&text);
                    let deep = e.message.contains("levels deep");
                    assert!(whole.is_err() || deep, "refused but readable: {text}");
                }
            }
        }
        // The generator reaches both sides, so the assertions above were exercised.
        assert!(
            accepted > 100 && refused > 100,
            "{accepted} accepted, {refused} refused"
        );
    }

    #[test]
    fn times_format_as_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_500), "1970-01-01T00:00:01.5Z");
        assert_eq!(
            parse_rfc3339("t", "1970-01-01T00:00:01.5+00:00").unwrap(),
            1_500
        );
    }
}

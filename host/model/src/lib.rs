//! Plain data shared by every layer: messages, their states, queue configuration and statistics.
//!
//! Nothing here does I/O. Times are Unix milliseconds (`i64`), ids are the store's integer row ids
//! (rendered as decimal strings at the API boundary).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub mod calendar;
pub mod fire;
pub mod plugin_settings;
pub mod schedule;
pub mod whole;

pub use plugin_settings::{ConfigChange, PluginGrants, PluginSettings};

pub use schedule::{
    Fire, FireOutcome, Missed, NewSchedule, Schedule, ScheduleId, SchedulePatch, Target, Timing,
};

/// A message id as the store assigns it.
pub type MessageId = i64;

/// Milliseconds since the Unix epoch, the one clock every layer uses.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Unix milliseconds as RFC 3339 in UTC (e.g. `2026-10-25T00:30:00Z`); `None` past year 9999.
pub fn rfc3339(ms: i64) -> Option<String> {
    use time::format_description::well_known::Rfc3339;
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()?
        .format(&Rfc3339)
        .ok()
}

/// Where a message is in its life (DESIGN §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum MessageState {
    /// Waiting for its `available_at`.
    Scheduled,
    /// Can be claimed now.
    Ready,
    /// Claimed by a worker until its lease expires.
    Leased,
    /// Handled; kept for the retention window so producers can poll it.
    Acked,
    /// In the dead-letter queue.
    Dead,
    Cancelled,
    /// Its TTL passed before a handler started it.
    Expired,
}

impl MessageState {
    pub const ALL: [MessageState; 7] = [
        MessageState::Scheduled,
        MessageState::Ready,
        MessageState::Leased,
        MessageState::Acked,
        MessageState::Dead,
        MessageState::Cancelled,
        MessageState::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MessageState::Scheduled => "scheduled",
            MessageState::Ready => "ready",
            MessageState::Leased => "leased",
            MessageState::Acked => "acked",
            MessageState::Dead => "dead",
            MessageState::Cancelled => "cancelled",
            MessageState::Expired => "expired",
        }
    }

    /// States from which nothing more happens to a message (except DLQ replay from `Dead`).
    pub fn is_final(self) -> bool {
        matches!(
            self,
            MessageState::Acked
                | MessageState::Dead
                | MessageState::Cancelled
                | MessageState::Expired
        )
    }
}

impl fmt::Display for MessageState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MessageState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MessageState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown state {s:?}; expected one of: scheduled, ready, leased, acked, dead, cancelled, expired"
                )
            })
    }
}

/// Why a delivery failed. Stored with the message and shown in the DLQ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ErrorCategory {
    /// The plugin trapped (panic, unreachable, bad memory access...).
    Trap,
    /// The plugin ran out of fuel (instruction budget).
    Fuel,
    /// The plugin exceeded its wall-clock timeout.
    Timeout,
    /// The plugin tried to grow its memory past the limit.
    Memory,
    /// The handler itself asked to retry or dead-letter the message.
    Handler,
    /// The queue's handler plugin is not deployed.
    NoPlugin,
    /// The plugin does not implement the world the host expects.
    Interface,
    /// The message's lease expired (its host died or stalled) too many times.
    LeaseExpired,
    /// The host failed in a way that is not the plugin's fault (e.g. could not instantiate).
    Host,
    /// A route's filter plugin failed (trap, fuel, timeout, memory, wrong interface) on a
    /// published message; the error text names the cause. The delivery is kept as a dead letter
    /// of the route's queue; replaying it runs the route again.
    Filter,
}

impl ErrorCategory {
    pub const ALL: [ErrorCategory; 10] = [
        ErrorCategory::Trap,
        ErrorCategory::Fuel,
        ErrorCategory::Timeout,
        ErrorCategory::Memory,
        ErrorCategory::Handler,
        ErrorCategory::NoPlugin,
        ErrorCategory::Interface,
        ErrorCategory::LeaseExpired,
        ErrorCategory::Host,
        ErrorCategory::Filter,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCategory::Trap => "trap",
            ErrorCategory::Fuel => "fuel",
            ErrorCategory::Timeout => "timeout",
            ErrorCategory::Memory => "memory",
            ErrorCategory::Handler => "handler",
            ErrorCategory::NoPlugin => "no-plugin",
            ErrorCategory::Interface => "interface",
            ErrorCategory::LeaseExpired => "lease-expired",
            ErrorCategory::Host => "host",
            ErrorCategory::Filter => "filter",
        }
    }
}

impl fmt::Display for ErrorCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ErrorCategory {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ErrorCategory::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| {
                let all: Vec<&str> = ErrorCategory::ALL.iter().map(|c| c.as_str()).collect();
                format!(
                    "unknown error category {s:?}; expected one of: {}",
                    all.join(", ")
                )
            })
    }
}

/// The order in which a queue hands out ready messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Higher priority first, then oldest first.
    #[default]
    Priority,
    /// Oldest first, ignoring priority.
    Fifo,
    /// Newest first, ignoring priority.
    Lifo,
    /// Random, weighted by priority and by age so nothing starves.
    WeightedRandom,
}

/// Whether each message gets a new plugin instance or a worker keeps a warm one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceMode {
    /// Whatever the handler declares in its `spool-settings` section; `fresh` if it declares
    /// nothing. Interpreted plugins built by `spool plugin build` declare `reuse`.
    #[default]
    Plugin,
    /// A new instance per message: no state survives between messages.
    Fresh,
    /// Each worker keeps a warm instance (recycled after a failure or a number of calls).
    Reuse,
}

impl InstanceMode {
    /// The mode a call runs in: the queue's, or under `plugin` the plugin's own default.
    pub fn resolve(self, plugin_default: Option<InstanceMode>) -> InstanceMode {
        match (self, plugin_default) {
            (InstanceMode::Plugin, Some(InstanceMode::Reuse)) => InstanceMode::Reuse,
            (InstanceMode::Plugin, _) => InstanceMode::Fresh,
            (mode, _) => mode,
        }
    }
}

/// A queue's settings (DESIGN §7 `PUT /v1/queues/{q}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
// The OpenAPI schema shows the defaults (from `Default` below).
#[schema(default)]
pub struct QueueConfig {
    /// Name of the handler plugin; `None` means nothing consumes the queue (messages wait).
    pub handler: Option<String>,
    /// How many messages of this queue may be in a handler at once, per host.
    pub concurrency: u32,
    /// Deliveries before a failing message goes to the dead-letter queue.
    pub max_attempts: u32,
    /// Delay before the first retry of a failed message; it doubles with each attempt.
    pub backoff_base_ms: u64,
    /// The longest retry delay. Never less than `backoff_base_ms`.
    pub backoff_max_ms: u64,
    /// How long a claimed message stays leased without a heartbeat.
    pub lease_ms: u64,
    /// Wall-clock limit for one handler call.
    pub timeout_ms: u64,
    /// Instruction budget (wasmtime fuel) for one handler call.
    pub fuel: u64,
    /// Memory limit for one plugin instance.
    pub memory_mb: u32,
    pub strategy: Strategy,
    pub instance_mode: InstanceMode,
    /// A paused queue accepts messages but hands none out.
    pub paused: bool,
    /// TTL applied to messages enqueued without one; `None` means they never expire.
    pub default_ttl_ms: Option<u64>,
    /// Circuit breaker: consecutive failed deliveries (trap, fuel, timeout, memory, plugin
    /// missing or unusable) after which this host stops claiming from the queue for a
    /// cool-down; 0 (the default) turns the breaker off. A handler's own `retry` or
    /// `dead-letter` is not a failure; an ack resets the count.
    pub breaker_failures: u32,
    /// The breaker's first cool-down; after a failed half-open probe it doubles.
    pub breaker_cooldown_ms: u64,
    /// The longest cool-down. Never less than `breaker_cooldown_ms`.
    pub breaker_max_cooldown_ms: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            handler: None,
            concurrency: 4,
            max_attempts: 5,
            backoff_base_ms: 1_000,
            backoff_max_ms: 300_000,
            lease_ms: 30_000,
            timeout_ms: 5_000,
            fuel: 1_000_000_000,
            memory_mb: 64,
            strategy: Strategy::Priority,
            instance_mode: InstanceMode::Plugin,
            paused: false,
            default_ttl_ms: None,
            // Off: a breaker stalls the whole queue, which is right when failures are the
            // system's (a bad deploy, a dependency down) and wrong for a few poison messages,
            // and an upgrade must not change how existing queues behave.
            breaker_failures: 0,
            breaker_cooldown_ms: 5_000,
            breaker_max_cooldown_ms: 300_000,
        }
    }
}

/// A partial update of a [`QueueConfig`]: a `PUT` changes only the fields it names.
/// `handler` and `default_ttl_ms` can be cleared by sending JSON `null`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueConfigPatch {
    #[serde(
        default,
        with = "double_option",
        skip_serializing_if = "Option::is_none"
    )]
    pub handler: Option<Option<String>>,
    #[serde(
        default,
        deserialize_with = "whole::deserialize",
        skip_serializing_if = "Option::is_none"
    )]
    pub concurrency: Option<u32>,
    #[serde(
        default,
        deserialize_with = "whole::deserialize",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_attempts: Option<u32>,
    /// Must not exceed `backoff_max_ms` (the one sent with it, else the queue's current one).
    #[serde(
        default,
        deserialize_with = "whole::deserialize",
        skip_serializing_if = "Option::is_none"
    )]
    pub backoff_base_ms: Option<u64>,
    /// Must be at least `backoff_base_ms` (the one sent with it, else the queue's current one).
    #[serde(
        default,
        deserialize_with = "whole::deserialize",
        skip_serializing_if = "Option::is_none"
    )]
    pub backoff_max_ms: Option<u64>,
    #[serde(
        default,
        deserialize_with = "whole::deserialize",
        skip_serializing_if = "Option::is_none"
    )]
    pub lease_ms: Option<u64>,
    #[serde(
        default,
        deserialize_with = "whole::deserialize",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout_ms: Option<u64>,
    #[serde(
        default,
        deserialize_with = "whole::deserialize",
        skip_serializing_if = "Option::is_none"
    )]
    pub fuel: Option<u64>,
    #[serde(
        default,
        deserialize_with = "whole::deserialize",
        skip_serializing_if = "Option::is_none"
    )]
    pub memory_mb: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_mode: Option<InstanceMode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
    #[serde(
        default,
        serialize_with = "double_option::serialize",
        deserialize_with = "whole::deserialize",
        skip_serializing_if = "Option::is_none"
    )]
    pub default_ttl_ms: Option<Option<u64>>,
    #[serde(
        default,
        deserialize_with = "whole::deserialize",
        skip_serializing_if = "Option::is_none"
    )]
    pub breaker_failures: Option<u32>,
    /// Must not exceed `breaker_max_cooldown_ms` (the one sent with it, else the queue's
    /// current one).
    #[serde(
        default,
        deserialize_with = "whole::deserialize",
        skip_serializing_if = "Option::is_none"
    )]
    pub breaker_cooldown_ms: Option<u64>,
    /// Must be at least `breaker_cooldown_ms` (the one sent with it, else the queue's current
    /// one).
    #[serde(
        default,
        deserialize_with = "whole::deserialize",
        skip_serializing_if = "Option::is_none"
    )]
    pub breaker_max_cooldown_ms: Option<u64>,
}

/// Hard bounds on queue settings, so a typo cannot ask for a million workers or a zero lease.
pub mod limits {
    pub const MAX_CONCURRENCY: u32 = 1_024;
    pub const MAX_ATTEMPTS: u32 = 1_000;
    pub const MIN_LEASE_MS: u64 = 100;
    pub const MAX_LEASE_MS: u64 = 24 * 3_600_000;
    pub const MIN_TIMEOUT_MS: u64 = 1;
    pub const MAX_TIMEOUT_MS: u64 = 3_600_000;
    pub const MAX_MEMORY_MB: u32 = 4_096;
    pub const MAX_BACKOFF_MS: u64 = 7 * 24 * 3_600_000;
    pub const MAX_BREAKER_FAILURES: u32 = 10_000;
    pub const MIN_BREAKER_COOLDOWN_MS: u64 = 10;
    pub const MAX_BREAKER_COOLDOWN_MS: u64 = 24 * 3_600_000;
}

impl QueueConfig {
    /// Applies `patch` to a copy of `self` and checks the result.
    pub fn patched(&self, patch: &QueueConfigPatch) -> Result<QueueConfig, String> {
        let mut c = self.clone();
        if let Some(h) = &patch.handler {
            c.handler = h.clone();
        }
        macro_rules! set {
            ($($f:ident),*) => { $( if let Some(v) = patch.$f { c.$f = v; } )* };
        }
        set!(
            concurrency,
            max_attempts,
            backoff_base_ms,
            backoff_max_ms,
            lease_ms,
            timeout_ms,
            fuel,
            memory_mb,
            strategy,
            instance_mode,
            paused,
            breaker_failures,
            breaker_cooldown_ms,
            breaker_max_cooldown_ms
        );
        if let Some(t) = patch.default_ttl_ms {
            c.default_ttl_ms = t;
        }
        c.validate()?;
        Ok(c)
    }

    /// Checks every field against [`limits`]; the error names the field and the allowed range.
    pub fn validate(&self) -> Result<(), String> {
        use limits::*;
        fn range<T: PartialOrd + fmt::Display>(
            name: &str,
            v: T,
            lo: T,
            hi: T,
        ) -> Result<(), String> {
            if v < lo || v > hi {
                Err(format!("{name} must be between {lo} and {hi}, got {v}"))
            } else {
                Ok(())
            }
        }
        if let Some(h) = &self.handler {
            validate_name("handler", h)?;
        }
        range("concurrency", self.concurrency, 1, MAX_CONCURRENCY)?;
        range("max_attempts", self.max_attempts, 1, MAX_ATTEMPTS)?;
        range("backoff_base_ms", self.backoff_base_ms, 0, MAX_BACKOFF_MS)?;
        range("backoff_max_ms", self.backoff_max_ms, 0, MAX_BACKOFF_MS)?;
        if self.backoff_max_ms < self.backoff_base_ms {
            return Err(format!(
                "backoff_max_ms ({}) must not be less than backoff_base_ms ({})",
                self.backoff_max_ms, self.backoff_base_ms
            ));
        }
        range("lease_ms", self.lease_ms, MIN_LEASE_MS, MAX_LEASE_MS)?;
        range(
            "timeout_ms",
            self.timeout_ms,
            MIN_TIMEOUT_MS,
            MAX_TIMEOUT_MS,
        )?;
        range("fuel", self.fuel, 1, u64::MAX / 2)?;
        range("memory_mb", self.memory_mb, 1, MAX_MEMORY_MB)?;
        if let Some(ttl) = self.default_ttl_ms {
            range("default_ttl_ms", ttl, 1, u64::MAX / 4)?;
        }
        range(
            "breaker_failures",
            self.breaker_failures,
            0,
            MAX_BREAKER_FAILURES,
        )?;
        range(
            "breaker_cooldown_ms",
            self.breaker_cooldown_ms,
            MIN_BREAKER_COOLDOWN_MS,
            MAX_BREAKER_COOLDOWN_MS,
        )?;
        range(
            "breaker_max_cooldown_ms",
            self.breaker_max_cooldown_ms,
            MIN_BREAKER_COOLDOWN_MS,
            MAX_BREAKER_COOLDOWN_MS,
        )?;
        if self.breaker_max_cooldown_ms < self.breaker_cooldown_ms {
            return Err(format!(
                "breaker_max_cooldown_ms ({}) must not be less than breaker_cooldown_ms ({})",
                self.breaker_max_cooldown_ms, self.breaker_cooldown_ms
            ));
        }
        Ok(())
    }
}

/// Queue and plugin names: 1–128 characters of `[A-Za-z0-9._-]`, so they are safe in URLs,
/// file names, metric labels and log lines.
pub fn validate_name(what: &str, name: &str) -> Result<(), String> {
    // `.` and `..` are path segments URL libraries resolve away (`/v1/queues/../x`), so a
    // resource with such a name could not be addressed reliably.
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} {name:?} is not a valid name: use 1 to 128 characters from A-Z a-z 0-9 . _ - \
             (but not `.` or `..`)"
        ))
    }
}

/// A message to enqueue, after the API has checked it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewMessage {
    pub payload: Vec<u8>,
    pub priority: i32,
    /// Not delivered before this time; `None` means now (plus `delay_ms`).
    pub available_at: Option<i64>,
    /// Not delivered before this long after the store accepts it. Relative, so the delay and
    /// `enqueued_at` come from one clock reading. Ignored when `available_at` is set.
    pub delay_ms: Option<u64>,
    /// Expires if not started by this time.
    pub expires_at: Option<i64>,
    /// Expires if not started this long after it becomes deliverable. Ignored when
    /// `expires_at` is set; when both are `None` the queue's `default_ttl_ms` applies.
    pub ttl_ms: Option<u64>,
    pub idempotency_key: Option<String>,
    /// Whose keys `idempotency_key` is looked up among: a producer token's name, so producers
    /// never see or change each other's messages; `None` is the scope shared by admin tokens,
    /// servers without tokens and plugins.
    pub idempotency_scope: Option<String>,
    /// With an idempotency key: replace the payload (and headers, priority, times) of a live,
    /// not-yet-leased message with the same key in the same scope instead of returning it
    /// unchanged.
    pub supersede: bool,
    pub headers: Vec<(String, String)>,
    pub topic: Option<String>,
    pub correlation_id: Option<String>,
    /// The API token that enqueued it, if the server has tokens.
    pub producer: Option<String>,
    /// An id reserved beforehand (`Store::reserve_ids`), for messages whose id was promised
    /// before they were written (a handler's publishes, committed with its ack). `None`: the
    /// store assigns the next id.
    pub id: Option<MessageId>,
    /// The message whose handler published this one (the causation id).
    pub parent_id: Option<MessageId>,
    /// How many publishes separate this message from the one that started its chain (0 for a
    /// message a producer sent).
    pub depth: u32,
}

/// What enqueueing one message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enqueued {
    pub id: MessageId,
    /// True when an existing message with the same idempotency key was returned (or superseded)
    /// instead of a new one being created.
    pub existing: bool,
}

/// A stored message with everything the API shows about it.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub id: MessageId,
    pub queue: String,
    pub state: MessageState,
    pub priority: i32,
    /// Deliveries started so far.
    pub attempts: u32,
    /// `None` once dropped (acked messages keep no payload).
    pub payload: Option<Vec<u8>>,
    pub headers: Vec<(String, String)>,
    pub topic: Option<String>,
    pub correlation_id: Option<String>,
    pub idempotency_key: Option<String>,
    pub enqueued_at: i64,
    pub available_at: i64,
    pub expires_at: Option<i64>,
    pub lease_expires_at: Option<i64>,
    /// When the message reached a final state.
    pub finished_at: Option<i64>,
    pub last_error: Option<String>,
    pub error_category: Option<ErrorCategory>,
    /// `name@version` of the plugin that handled (or last failed) it.
    pub plugin_version: Option<String>,
    /// For dead messages: when an operator marked the entry reviewed.
    pub reviewed_at: Option<i64>,
    /// The API token that enqueued it, if the server has tokens.
    pub producer: Option<String>,
    /// The message whose handler published this one.
    pub parent_id: Option<MessageId>,
    /// Publishes between this message and the start of its chain.
    pub depth: u32,
    /// The route that delivered it, if it came through one.
    pub route_id: Option<RouteId>,
}

/// A message handed to a worker by a claim. `attempt` doubles as the lease fence: a settle names
/// the attempt it settles, and the store ignores settles of a lease that has since been lost.
#[derive(Debug, Clone, PartialEq)]
pub struct Claimed {
    pub id: MessageId,
    pub queue: String,
    pub attempt: u32,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
    pub topic: Option<String>,
    pub correlation_id: Option<String>,
    pub enqueued_at: i64,
    pub lease_expires_at: i64,
    /// Publishes between this message and the start of its chain.
    pub depth: u32,
}

/// How a delivery ended, as the dispatcher tells the store.
#[derive(Debug, Clone, PartialEq)]
pub enum Settlement {
    Ack,
    /// Back to the queue, not before `delay_ms` from now.
    Retry {
        delay_ms: u64,
        error: String,
        category: ErrorCategory,
    },
    /// Back to the queue, not before `delay_ms` from now, because the handler returned `retry`:
    /// its own choice, not a failure, so no error is recorded.
    RetryRequested {
        delay_ms: u64,
    },
    /// Into the dead-letter queue.
    Dead {
        error: String,
        category: ErrorCategory,
    },
    /// Give the message back untouched (shutdown, or claimed but never started): the attempt is
    /// not counted.
    Release,
}

/// One settle instruction.
#[derive(Debug, Clone, PartialEq)]
pub struct Settle {
    pub id: MessageId,
    /// The attempt the worker was given; a settle for an older attempt is ignored.
    pub attempt: u32,
    pub settlement: Settlement,
    /// `name@version` of the plugin that ran.
    pub plugin_version: Option<String>,
    /// What the handler published (the outbox): written in the same transaction as an `Ack`
    /// that applies, and dropped with any other settlement or a lost lease.
    pub outbox: Vec<Delivery>,
}

/// What a settle did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SettleResult {
    Applied,
    /// The lease had been lost (expired and re-claimed, or the message was cancelled meanwhile).
    LeaseLost,
    /// The message had been cancelled while leased; it is now `cancelled`.
    Cancelled,
}

/// A queue's numbers. Depths are current; the `_total` figures count since the queue was created.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QueueStats {
    pub scheduled: u64,
    pub ready: u64,
    pub leased: u64,
    /// Acked since creation.
    pub acked: u64,
    /// Dead-lettered since creation.
    pub dead: u64,
    pub cancelled: u64,
    pub expired: u64,
    /// Retries (deliveries that failed, or whose handler returned `retry`, and were scheduled
    /// again) since creation.
    pub retried: u64,
    pub enqueued: u64,
    /// Messages in the DLQ now.
    pub dlq_depth: u64,
    /// Age of the oldest ready message, if any.
    pub oldest_ready_age_ms: Option<u64>,
}

/// One minute of a queue's history: its depths and running totals as last sampled in that
/// minute. Rates are the differences between consecutive points.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HistoryPoint {
    /// When the minute starts, Unix ms.
    pub minute: i64,
    pub scheduled: u64,
    pub ready: u64,
    pub leased: u64,
    /// Messages in the DLQ.
    pub dlq_depth: u64,
    /// Totals since the queue was created.
    pub enqueued: u64,
    pub acked: u64,
    pub retried: u64,
    pub dead: u64,
    pub cancelled: u64,
    pub expired: u64,
    pub oldest_ready_age_ms: Option<u64>,
}

impl HistoryPoint {
    /// `stats` as the point of the minute starting at `minute`.
    pub fn of(minute: i64, stats: &QueueStats) -> HistoryPoint {
        HistoryPoint {
            minute,
            scheduled: stats.scheduled,
            ready: stats.ready,
            leased: stats.leased,
            dlq_depth: stats.dlq_depth,
            enqueued: stats.enqueued,
            acked: stats.acked,
            retried: stats.retried,
            dead: stats.dead,
            cancelled: stats.cancelled,
            expired: stats.expired,
            oldest_ready_age_ms: stats.oldest_ready_age_ms,
        }
    }
}

/// Where the minute holding `at_ms` (Unix ms) starts.
pub fn minute_of(at_ms: i64) -> i64 {
    at_ms - at_ms.rem_euclid(60_000)
}

/// A queue with its config, as the store keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct Queue {
    pub name: String,
    pub config: QueueConfig,
    pub created_at: i64,
}

/// One version of a deployed plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginVersion {
    pub name: String,
    pub version: u32,
    pub sha256: String,
    /// `handler` or `filter`.
    pub world: String,
    pub size: u64,
    pub created_at: i64,
    pub active: bool,
}

/// What a deploy did: stored a new version, or found the same bytes in an existing one (which is
/// then the active version again).
#[derive(Debug, Clone, PartialEq)]
pub struct Deployed {
    pub version: PluginVersion,
    /// False when the bytes were those of an existing version.
    pub new_version: bool,
}

/// How a plugin version became the active one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PluginAction {
    /// `PUT /v1/plugins/{name}`: a new version, or the bytes of an existing one again.
    Deploy,
    /// `POST /v1/plugins/{name}/rollback`: the version before the active one.
    Rollback,
    /// `POST /v1/plugins/{name}/versions/{n}/activate`: a version chosen by number.
    Activate,
}

impl PluginAction {
    pub fn as_str(self) -> &'static str {
        match self {
            PluginAction::Deploy => "deploy",
            PluginAction::Rollback => "rollback",
            PluginAction::Activate => "activate",
        }
    }
}

impl FromStr for PluginAction {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            PluginAction::Deploy,
            PluginAction::Rollback,
            PluginAction::Activate,
        ]
        .into_iter()
        .find(|a| a.as_str() == s)
        .ok_or_else(|| format!("unknown plugin action {s:?}"))
    }
}

/// One change of a plugin's active version.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginActivation {
    pub at: i64,
    /// The API token that made the change; `None` on a server without tokens (or at start-up,
    /// for plugins declared in `spool.toml`).
    pub actor: Option<String>,
    pub action: PluginAction,
    /// The version active before; `None` for the first deploy.
    pub from_version: Option<u32>,
    pub to_version: u32,
}

/// Messages a queue deletion removed, by the state they were in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct DeletedMessages {
    pub scheduled: u64,
    pub ready: u64,
    pub leased: u64,
    pub acked: u64,
    /// Dead letters (the queue's part of the DLQ).
    pub dead: u64,
    pub cancelled: u64,
    pub expired: u64,
    /// Routes that delivered to the queue (deleted with it only when forced).
    pub routes: u64,
}

impl DeletedMessages {
    /// Messages that were still to be handled: scheduled, ready or leased.
    pub fn live(&self) -> u64 {
        self.scheduled + self.ready + self.leased
    }

    pub fn total(&self) -> u64 {
        self.live() + self.acked + self.dead + self.cancelled + self.expired
    }

    pub fn add(&mut self, state: MessageState, n: u64) {
        let slot = match state {
            MessageState::Scheduled => &mut self.scheduled,
            MessageState::Ready => &mut self.ready,
            MessageState::Leased => &mut self.leased,
            MessageState::Acked => &mut self.acked,
            MessageState::Dead => &mut self.dead,
            MessageState::Cancelled => &mut self.cancelled,
            MessageState::Expired => &mut self.expired,
        };
        *slot += n;
    }
}

/// What deleting a plugin removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginDeleted {
    pub name: String,
    /// Every stored version.
    pub versions: u64,
    /// Entries of the plugin's key-value store.
    pub kv_entries: u64,
}

/// Cursor-paginated results.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass back to get the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// Serde helper telling "field absent" (`None`) from "field is null" (`Some(None)`).
pub mod double_option {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<T: Serialize, S: Serializer>(
        v: &Option<Option<T>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            Some(inner) => inner.serialize(s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(d).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_changes_only_named_fields() {
        let base = QueueConfig::default();
        let patch: QueueConfigPatch =
            serde_json::from_str(r#"{"concurrency": 8, "handler": "echo"}"#).unwrap();
        let c = base.patched(&patch).unwrap();
        assert_eq!(c.concurrency, 8);
        assert_eq!(c.handler.as_deref(), Some("echo"));
        assert_eq!(c.max_attempts, base.max_attempts);

        let clear: QueueConfigPatch = serde_json::from_str(r#"{"handler": null}"#).unwrap();
        assert_eq!(c.patched(&clear).unwrap().handler, None);
    }

    #[test]
    fn patch_rejects_out_of_range_and_unknown_fields() {
        let base = QueueConfig::default();
        let zero: QueueConfigPatch = serde_json::from_str(r#"{"concurrency": 0}"#).unwrap();
        let err = base.patched(&zero).unwrap_err();
        assert!(err.contains("concurrency"), "{err}");
        assert!(serde_json::from_str::<QueueConfigPatch>(r#"{"concurency": 2}"#).is_err());
    }

    #[test]
    fn breaker_settings_are_checked() {
        let base = QueueConfig::default();
        let p: QueueConfigPatch = serde_json::from_str(
            r#"{"breaker_failures": 5, "breaker_cooldown_ms": 200, "breaker_max_cooldown_ms": 800}"#,
        )
        .unwrap();
        let c = base.patched(&p).unwrap();
        assert_eq!(
            (
                c.breaker_failures,
                c.breaker_cooldown_ms,
                c.breaker_max_cooldown_ms
            ),
            (5, 200, 800)
        );
        for (body, field) in [
            (r#"{"breaker_failures": 10001}"#, "breaker_failures"),
            (r#"{"breaker_cooldown_ms": 0}"#, "breaker_cooldown_ms"),
            (
                r#"{"breaker_max_cooldown_ms": 100}"#,
                "breaker_max_cooldown_ms",
            ),
        ] {
            let p: QueueConfigPatch = serde_json::from_str(body).unwrap();
            let err = c.patched(&p).unwrap_err();
            assert!(err.starts_with(field), "{body}: {err}");
        }
    }

    #[test]
    fn names_are_checked() {
        assert!(validate_name("queue", "orders.eu-1_x").is_ok());
        assert!(validate_name("queue", "").is_err());
        assert!(validate_name("queue", "a/b").is_err());
        assert!(validate_name("queue", &"x".repeat(129)).is_err());
        assert!(validate_name("queue", ".").is_err());
        assert!(validate_name("queue", "..").is_err());
        assert!(validate_name("queue", "...").is_ok());
        assert!(validate_name("queue", ".hidden").is_ok());
    }

    #[test]
    fn states_and_categories_round_trip() {
        for s in MessageState::ALL {
            assert_eq!(s.as_str().parse::<MessageState>().unwrap(), s);
        }
        for c in ErrorCategory::ALL {
            assert_eq!(c.as_str().parse::<ErrorCategory>().unwrap(), c);
            assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
        }
    }
}

/// A route's id.
pub type RouteId = i64;

/// A binding of a topic pattern to a queue, optionally through a filter plugin.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub id: RouteId,
    /// Dot-separated words; `*` is one word, `#` zero or more (checked by the router).
    pub pattern: String,
    pub queue: String,
    /// A `filter`-world plugin that decides per message.
    pub filter: Option<String>,
    /// Exact-match conditions on the message's headers, sorted by name.
    pub headers: Vec<(String, String)>,
    /// Limits for the filter that override the router's defaults.
    pub limits: FilterLimits,
    pub created_at: i64,
    /// Deliveries committed through this route since it was created.
    pub delivered: u64,
}

/// What a new route binds (the store checks the queue and the filter exist).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NewRoute {
    pub pattern: String,
    pub queue: String,
    pub filter: Option<String>,
    pub headers: Vec<(String, String)>,
    pub limits: FilterLimits,
}

/// Per-route overrides of the limits a filter runs under; `None` keeps the router's default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FilterLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u32>,
}

/// One message the router delivers into one queue.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    pub queue: String,
    pub message: NewMessage,
    /// The route that chose this queue (`None`: the implicit route to the queue named like the
    /// topic, or the unroutable queue). Its delivered count goes up when this commits.
    pub route: Option<RouteId>,
    /// The route's filter failed on this message: it is stored as a dead letter of `queue`
    /// with category `filter` and this error, so the publish loses nothing.
    pub filter_error: Option<String>,
}

/// One message in a correlation tree (`GET /v1/messages/{id}/trace`).
#[derive(Debug, Clone, PartialEq)]
pub struct TraceEntry {
    pub id: MessageId,
    pub parent_id: Option<MessageId>,
    pub queue: String,
    pub topic: Option<String>,
    pub state: MessageState,
    pub plugin_version: Option<String>,
    pub enqueued_at: i64,
}

//! Durable state: queues, messages, the dead-letter queue, plugins and plugin key-value data.
//!
//! [`Store`] is the one seam between Spool and its database. `sqlite` is the embedded default;
//! a PostgreSQL implementation follows the same trait. The store knows nothing about HTTP or
//! wasm: it moves messages between the states of DESIGN §3 and nothing else.
//!
//! Every method is atomic. Writes to SQLite go through one writer thread that commits concurrent
//! operations together (group commit), so callers should issue them concurrently rather than
//! batching by hand.

/// The store's behaviour, one suite run against both backends.
#[cfg(test)]
mod behaviour;
mod counters;
mod kv_rules;
mod message_timing;
pub mod migrate_copy;
mod paging;
mod plugin_rules;
pub mod postgres;
mod schedule_rules;
pub mod sqlite;

/// A private PostgreSQL server for tests (feature `testutil` for other crates' tests).
#[cfg(any(test, feature = "testutil"))]
pub mod pg_cluster;

use async_trait::async_trait;

use spool_model::calendar::CalendarError;
use spool_model::{
    Claimed, ConfigChange, DeletedMessages, Delivery, Deployed, Enqueued, ErrorCategory,
    HistoryPoint, Message, MessageId, MessageState, NewMessage, NewRoute, Page, PluginActivation,
    PluginDeleted, PluginGrants, PluginSettings, PluginVersion, Queue, QueueConfigPatch,
    QueueStats, Route, RouteId, Settle, SettleResult, TraceEntry,
};
use spool_model::{Fire, FireOutcome, NewSchedule, Schedule, ScheduleId, SchedulePatch};

/// What can go wrong in the store. Callers (the API) map these to HTTP statuses.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error(
        "queue {0:?} does not exist; create it with `PUT /v1/queues/{0}` or `spool queue create {0}`"
    )]
    QueueNotFound(String),
    #[error(
        "message {0} does not exist (it may have been acked and removed after the retention window)"
    )]
    MessageNotFound(MessageId),
    #[error("plugin {0:?} does not exist; deploy it with `spool plugin deploy {0} FILE.wasm`")]
    PluginNotFound(String),
    #[error("dead letter {0} does not exist")]
    DeadLetterNotFound(MessageId),
    /// The operation is not allowed in the message's current state.
    #[error("message {id} is {state}: {action} is not possible")]
    InvalidState {
        id: MessageId,
        state: MessageState,
        action: &'static str,
    },
    #[error("plugin {0:?} has no earlier version to roll back to")]
    NoPreviousVersion(String),
    #[error(
        "plugin {plugin:?} has no version {version}; `spool plugin show {plugin}` lists its versions"
    )]
    PluginVersionNotFound { plugin: String, version: u32 },
    /// A queue still holds messages that are to be handled (scheduled, ready or leased).
    #[error(
        "queue {queue:?} still holds {} live messages ({scheduled} scheduled, {ready} ready, \
         {leased} leased); wait for them to be handled, cancel them, or delete the queue with \
         them (`DELETE /v1/queues/{queue}?force=true`, `spool queue delete {queue} --force`)",
        scheduled + ready + leased
    )]
    QueueNotEmpty {
        queue: String,
        scheduled: u64,
        ready: u64,
        leased: u64,
    },
    /// Queues or routes still refer to the plugin.
    #[error("plugin {plugin:?} is in use: {}", in_use(queues, routes))]
    PluginInUse {
        plugin: String,
        queues: Vec<String>,
        routes: Vec<RouteId>,
    },
    /// Routes deliver to a queue about to be deleted.
    #[error(
        "queue {queue:?} is the destination of route(s) {}; delete them first \
         (`spool route delete ID`) or delete the queue with them \
         (`DELETE /v1/queues/{queue}?force=true`, `spool queue delete {queue} --force`)",
        join_ids(routes)
    )]
    QueueHasRoutes { queue: String, routes: Vec<RouteId> },
    #[error("route {0} does not exist; `spool route list` shows the routes")]
    RouteNotFound(RouteId),
    #[error(
        "schedule {0} does not exist (it may have been deleted); `GET /v1/schedules` or \
         `spool schedule list` shows the schedules"
    )]
    ScheduleNotFound(ScheduleId),
    /// A schedule definition the calendar refuses; [`CalendarError::field`] names the field.
    #[error("{0}")]
    InvalidSchedule(CalendarError),
    /// A plugin of one world where another is needed (a filter as a queue's handler); the
    /// message names the plugin, its world and what uses it.
    #[error("{0}")]
    WrongWorld(String),
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("invalid cursor {0:?}: pass back the next_cursor of a previous page")]
    InvalidCursor(String),
    #[error("database error: {0}")]
    Database(String),
    /// The database cannot grow: the disk (or the file system holding the database) is full, or
    /// `[store] max_size_bytes` is reached. Nothing of the failed operation was written; writes
    /// succeed again by themselves once there is room.
    #[error(
        "the database is full ({0}): free disk space next to the database or raise \
         [store] max_size_bytes; writes resume by themselves once there is room"
    )]
    StorageFull(String),
    /// The database file could not be written or synced (an I/O error from the operating
    /// system). Nothing of the failed operation was written.
    #[error(
        "the database cannot be written ({0}): check the disk and the server log; writes \
         resume by themselves once the disk works again"
    )]
    StorageIo(String),
    /// The database file (or its write-ahead log) is damaged; the message says what to do.
    #[error("{0}")]
    Damaged(String),
    /// A backup's target file exists; backups never overwrite.
    #[error(
        "{} exists already; a backup never overwrites a file: choose another name or remove \
         the old file first",
        .0.display()
    )]
    TargetExists(std::path::PathBuf),
    /// Writing a backup failed (the backup's disk is full, say); the database is untouched.
    #[error("the backup failed: {0}")]
    BackupFailed(String),
    /// A plugin's key-value store is full (`kv_max_keys` / `kv_max_bytes`).
    #[error("kv quota: {0}")]
    KvQuota(String),
    /// A large plugin upload's stored pieces went missing before its version was written (a
    /// plugin sharing them was deleted meanwhile); nothing was stored.
    #[error("{0}")]
    UploadInterrupted(String),
    #[error("the store is shut down")]
    Closed,
    /// An operation of the other backend (a SQLite file's backup or integrity check on a
    /// PostgreSQL server); the message names what to use instead.
    #[error("{0}")]
    NotForThisStore(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

fn join_ids(ids: &[RouteId]) -> String {
    ids.iter()
        .map(RouteId::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// What keeps a plugin from being deleted, and what to do about it.
fn in_use(queues: &[String], routes: &[RouteId]) -> String {
    let mut parts = Vec::new();
    if !queues.is_empty() {
        parts.push(format!(
            "it is the handler of queue(s) {}; give them another handler (`spool queue set \
             QUEUE --handler OTHER` or `--handler none`) or delete them first",
            queues.join(", ")
        ));
    }
    if !routes.is_empty() {
        parts.push(format!(
            "it is the filter of route(s) {}; delete them first (`spool route delete ID`)",
            join_ids(routes)
        ));
    }
    parts.join("; ")
}

/// Writes are failing because the database cannot be written: what `/readyz` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageFailure {
    /// The disk or the database's size cap is full (else: an I/O error).
    pub full: bool,
    pub message: String,
    /// When writes started failing (Unix ms).
    pub since_ms: i64,
}

impl StorageFailure {
    /// The storage failure `e` is, if it is one.
    pub fn of(e: &StoreError) -> Option<StorageFailure> {
        let (full, message) = match e {
            StoreError::StorageFull(m) => (true, m),
            StoreError::StorageIo(m) => (false, m),
            _ => return None,
        };
        Some(StorageFailure {
            full,
            message: message.clone(),
            since_ms: spool_model::now_ms(),
        })
    }
}

/// A finished backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupReport {
    pub path: std::path::PathBuf,
    pub bytes: u64,
    pub duration_ms: u64,
    /// When the copy's snapshot was taken (Unix ms).
    pub taken_at_ms: i64,
}

/// The database's size figures (see [`Store::db_stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DbStats {
    /// The database file's size: pages × page size.
    pub size_bytes: u64,
    /// Pages in the file that hold nothing (reused before the file grows).
    pub free_pages: u64,
    pub page_size: u64,
    /// The write-ahead log file's size (0 when there is none).
    pub wal_bytes: u64,
    /// When the last successful backup of this database was taken (Unix ms), if one ever was.
    pub last_backup_at_ms: Option<i64>,
}

/// What a checkpoint did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// Frames in the log, and how many of them are now in the database file.
    pub log_frames: u64,
    pub checkpointed_frames: u64,
    /// Another connection held the log (a checkpoint of its own, or, for a truncation, a
    /// reader or the writer past the wait): this round did less than everything.
    pub busy: bool,
    /// The log file was over the limit and was truncated to zero bytes.
    pub truncated: bool,
    /// The log file's size after the checkpoint.
    pub wal_bytes: u64,
}

/// Filter and page for `list_messages`.
#[derive(Debug, Clone, Default)]
pub struct MessageFilter {
    pub state: Option<MessageState>,
    /// Only messages with this idempotency key (in any producer's scope).
    pub idempotency_key: Option<String>,
    pub limit: u32,
    pub cursor: Option<String>,
}

/// Filter and page for `list_dead`.
#[derive(Debug, Clone, Default)]
pub struct DeadFilter {
    pub queue: Option<String>,
    pub category: Option<ErrorCategory>,
    /// `Some(false)`: only unreviewed; `Some(true)`: only reviewed.
    pub reviewed: Option<bool>,
    pub limit: u32,
    pub cursor: Option<String>,
}

/// What a claim returned.
#[derive(Debug, Clone, Default)]
pub struct ClaimBatch {
    pub messages: Vec<Claimed>,
    /// When nothing was ready: the earliest time a scheduled message of the queue becomes due,
    /// so the worker knows how long it may sleep.
    pub next_due_at: Option<i64>,
}

/// Result of a maintenance pass (lease recovery, TTL expiry, retention).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Maintenance {
    /// Leases that had expired and whose messages went back to `ready`.
    pub leases_recovered: u64,
    /// ... or to the DLQ because they had no attempts left.
    pub leases_dead: u64,
    pub expired: u64,
    /// Acked records removed after the retention window.
    pub acked_purged: u64,
    /// Reviewed dead letters removed after their retention window.
    pub dead_purged: u64,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    // --- queues -------------------------------------------------------------------------------

    /// Creates the queue with defaults patched by `patch`, or applies `patch` to an existing one.
    /// Returns the resulting queue and whether it was created.
    async fn put_queue(&self, name: &str, patch: &QueueConfigPatch) -> StoreResult<(Queue, bool)>;
    async fn get_queue(&self, name: &str) -> StoreResult<Queue>;
    async fn list_queues(&self) -> StoreResult<Vec<Queue>>;
    /// One queue's depths and totals. Costs the same at any depth (counters, not counting).
    async fn queue_stats(&self, name: &str) -> StoreResult<QueueStats>;
    /// Deletes the queue with every message it holds in any state (its DLQ entries, acked
    /// records, idempotency keys and counters go with it) and reports what was removed.
    /// Without `force`, refused with `QueueNotEmpty` while it holds scheduled, ready or leased
    /// messages. Settles and lease extensions of deleted messages then find nothing (lost lease).
    async fn delete_queue(&self, name: &str, force: bool) -> StoreResult<DeletedMessages>;
    /// Every queue's stats, by queue name, in one read.
    async fn all_queue_stats(&self) -> StoreResult<Vec<(String, QueueStats)>>;
    /// Writes every queue's stats now as its point of the minute starting at `minute`,
    /// replacing an earlier sample of that minute (the last sample of a minute stands, so
    /// several hosts of one database may all sample), and forgets points of minutes before
    /// `forget_before`. Returns how many queues were sampled.
    async fn record_history(&self, minute: i64, forget_before: i64) -> StoreResult<usize>;
    /// Queue `queue`'s points from the minute starting at or after `since` (Unix ms), oldest
    /// first.
    async fn queue_history(&self, queue: &str, since: i64) -> StoreResult<Vec<HistoryPoint>>;

    // --- producers ----------------------------------------------------------------------------

    /// Enqueues all of `messages` into `queue` atomically (all or nothing), in order.
    async fn enqueue(&self, queue: &str, messages: Vec<NewMessage>) -> StoreResult<Vec<Enqueued>>;

    /// Writes every delivery of a publish atomically (all or nothing): each into its queue as
    /// an enqueue would, a delivery with a `filter_error` as a dead letter of its queue; the
    /// routes' delivered counts go up. Returns one entry per delivery, in order.
    async fn publish(&self, deliveries: Vec<Delivery>) -> StoreResult<Vec<Enqueued>>;
    /// Reserves `n` message ids for messages written later with them (a handler's publishes,
    /// committed with its ack), in increasing order. Unused ids are a gap, never reused. They
    /// need not be consecutive: hosts sharing a PostgreSQL database draw from one sequence.
    async fn reserve_ids(&self, n: u32) -> StoreResult<Vec<MessageId>>;

    // --- routes -------------------------------------------------------------------------------

    /// Creates a route, or returns the identical one that exists (then `false`). The queue must
    /// exist (`QueueNotFound`); a filter must be a deployed `filter` plugin (`PluginNotFound`,
    /// `WrongWorld`). The pattern is not checked here: that is the router's language.
    async fn create_route(&self, route: NewRoute) -> StoreResult<(Route, bool)>;
    /// Every route, by id.
    async fn list_routes(&self) -> StoreResult<Vec<Route>>;
    async fn delete_route(&self, id: RouteId) -> StoreResult<Route>;
    /// Replaces dead letter `id` with `deliveries` in one transaction (a failed filter's
    /// delivery routed again).
    async fn replace_dead(
        &self,
        id: MessageId,
        deliveries: Vec<Delivery>,
    ) -> StoreResult<Vec<Enqueued>>;

    // --- schedules ----------------------------------------------------------------------------

    /// Creates a schedule at `now` (its creation time, and the anchor of an interval without
    /// `start_at`). The definition is checked by the calendar (`InvalidSchedule`), a queue
    /// target must exist (`QueueNotFound`), and a schedule with no fire after `now` is refused
    /// (`Invalid`). Its `next_fire_at` is the first fire after `now`.
    async fn create_schedule(&self, schedule: NewSchedule, now: i64) -> StoreResult<Schedule>;
    /// Every schedule, by id.
    async fn list_schedules(&self) -> StoreResult<Vec<Schedule>>;
    async fn get_schedule(&self, id: ScheduleId) -> StoreResult<Schedule>;
    /// Applies `patch` and recomputes the next fire from `now`, so a schedule edited while due
    /// fires by its new definition only; bumps the generation (a fire planned before is
    /// `Stale`). A queue target is checked only when the patch changes it.
    async fn update_schedule(
        &self,
        id: ScheduleId,
        patch: SchedulePatch,
        now: i64,
    ) -> StoreResult<Schedule>;
    /// Deletes the schedule and its fire history; returns it as it was.
    async fn delete_schedule(&self, id: ScheduleId) -> StoreResult<Schedule>;
    /// The schedule's last `limit` fires (at most the 100 kept), newest first.
    async fn schedule_fires(&self, id: ScheduleId, limit: u32) -> StoreResult<Vec<Fire>>;
    /// The earliest `next_fire_at` of an unpaused schedule: when the scheduler must look next.
    async fn next_schedule_due(&self) -> StoreResult<Option<i64>>;
    /// Up to `limit` unpaused schedules whose `next_fire_at <= now`, most overdue first.
    async fn due_schedules(&self, now: i64, limit: u32) -> StoreResult<Vec<Schedule>>;
    /// Fires schedule `id` in one transaction, only if it still has `expected_generation` and
    /// `expected_next_fire_at` (else `Stale`, nothing written): each `(fire_at, deliveries)`
    /// is recorded once (an instant recorded before is skipped, never repeated) with its
    /// deliveries written as a publish writes them; then `next_fire_at` becomes
    /// `next_fire_at`, `runs` and `last_fire_at` follow the fires written, and the generation
    /// goes up. Any failing delivery (a deleted queue) fails the whole call and writes nothing,
    /// so the schedule stays due. A paused schedule is `Stale` too.
    async fn fire_schedule(
        &self,
        id: ScheduleId,
        expected_generation: u64,
        expected_next_fire_at: i64,
        fires: Vec<(i64, Vec<Delivery>)>,
        next_fire_at: Option<i64>,
        now: i64,
    ) -> StoreResult<FireOutcome>;
    /// Fires schedule `id` once now, outside its calendar: `deliveries` recorded under
    /// `fire_at` (pass `now`; a retry passing the same `fire_at` gets the earlier fire back,
    /// with `false`, and writes nothing). `next_fire_at`, `runs` and the generation stay; a
    /// paused schedule runs too. A `fire_at` that is also a calendar instant takes its place:
    /// that instant is then recorded and the calendar's fire of it is skipped, not doubled.
    async fn run_schedule_now(
        &self,
        id: ScheduleId,
        fire_at: i64,
        deliveries: Vec<Delivery>,
        now: i64,
    ) -> StoreResult<(Fire, bool)>;

    // --- consumers ----------------------------------------------------------------------------

    /// Leases up to `max` messages of `queue` that are ready now, in the queue's strategy order,
    /// until `now + lease_ms`. Due scheduled messages are promoted and due TTLs expired first.
    /// A paused queue returns nothing.
    async fn claim(&self, queue: &str, max: u32, lease_ms: u64) -> StoreResult<ClaimBatch>;
    /// Settles deliveries; entries are independent (one lost lease does not fail the others).
    async fn settle(&self, settles: Vec<Settle>) -> StoreResult<Vec<SettleResult>>;
    /// Extends the lease of a message still leased at `attempt` to `now + lease_ms`.
    /// Returns false if the lease was lost.
    async fn extend_lease(&self, id: MessageId, attempt: u32, lease_ms: u64) -> StoreResult<bool>;

    // --- messages -----------------------------------------------------------------------------

    async fn get_message(&self, id: MessageId) -> StoreResult<Message>;
    /// The correlation id of message `id` and every stored message sharing it (the message that
    /// started the chain included), by id.
    async fn trace(&self, id: MessageId) -> StoreResult<(String, Vec<TraceEntry>)>;
    /// Lists a queue's messages, oldest first, optionally in one state.
    async fn list_messages(
        &self,
        queue: &str,
        filter: &MessageFilter,
    ) -> StoreResult<Page<Message>>;
    /// Cancels a scheduled/ready message at once; a leased one is marked to be cancelled when
    /// its handler returns. Final states give `InvalidState`.
    async fn cancel(&self, id: MessageId) -> StoreResult<MessageState>;
    /// Makes a `scheduled` message (delayed, or a retry waiting for its backoff) `ready` now
    /// and wakes its queue's workers. Other states give `InvalidState`.
    async fn requeue(&self, id: MessageId) -> StoreResult<()>;

    // --- dead-letter queue --------------------------------------------------------------------

    async fn list_dead(&self, filter: &DeadFilter) -> StoreResult<Page<Message>>;
    /// Back to `ready` with attempts reset to 0.
    async fn replay_dead(&self, id: MessageId) -> StoreResult<()>;
    async fn mark_reviewed(&self, id: MessageId) -> StoreResult<()>;
    async fn purge_dead(&self, id: MessageId) -> StoreResult<()>;
    /// Replays, atomically, the oldest `filter.limit` dead letters that match `filter`'s queue,
    /// category and reviewed flag (its cursor is ignored); returns their ids.
    async fn replay_dead_matching(&self, filter: &DeadFilter) -> StoreResult<Vec<MessageId>>;
    /// Purges, atomically, the oldest `filter.limit` matching dead letters; returns how many.
    async fn purge_dead_matching(&self, filter: &DeadFilter) -> StoreResult<u64>;

    // --- plugins ------------------------------------------------------------------------------

    /// Stores a new version of `name` and makes it active. Uploading the bytes of an existing
    /// version makes that version active instead (no copy is stored); the active one's bytes
    /// change nothing. `actor` (the API token's name) goes into the activation history.
    /// Refused with `WrongWorld` when queues use `name` as their handler and `world` is not
    /// `handler`.
    async fn put_plugin(
        &self,
        name: &str,
        world: &str,
        sha256: &str,
        wasm: Vec<u8>,
        actor: Option<&str>,
    ) -> StoreResult<Deployed>;
    /// The active version of `name` with its bytes.
    async fn active_plugin(&self, name: &str) -> StoreResult<(PluginVersion, Vec<u8>)>;
    /// All versions of all plugins, by name then version.
    async fn list_plugins(&self) -> StoreResult<Vec<PluginVersion>>;
    /// Makes the version before the active one active again (same world rule as `put_plugin`).
    async fn rollback_plugin(&self, name: &str, actor: Option<&str>) -> StoreResult<PluginVersion>;
    /// Makes version `version` of `name` active (same world rule as `put_plugin`). Activating
    /// the active version changes nothing.
    async fn activate_plugin(
        &self,
        name: &str,
        version: u32,
        actor: Option<&str>,
    ) -> StoreResult<PluginVersion>;
    /// Every change of `name`'s active version, oldest first (`PluginNotFound` if no such plugin).
    async fn plugin_history(&self, name: &str) -> StoreResult<Vec<PluginActivation>>;
    /// Deletes every version of `name`, its activation history, its key-value data and its
    /// configuration, secrets and grants.
    /// Refused with `PluginInUse` while a queue names it as its handler.
    async fn delete_plugin(&self, name: &str) -> StoreResult<PluginDeleted>;

    async fn kv_get(&self, plugin: &str, key: &str) -> StoreResult<Option<Vec<u8>>>;
    async fn kv_set(&self, plugin: &str, key: &str, value: Vec<u8>) -> StoreResult<()>;
    async fn kv_delete(&self, plugin: &str, key: &str) -> StoreResult<()>;
    /// `kv_set` refused with `KvQuota` when the plugin would then hold more than `max_keys`
    /// keys or `max_bytes` bytes (keys plus values); checked in the write's transaction.
    async fn kv_set_within(
        &self,
        plugin: &str,
        key: &str,
        value: Vec<u8>,
        max_keys: u64,
        max_bytes: u64,
    ) -> StoreResult<()>;

    /// The configuration values, secrets and grants stored for `plugin` (empty when none; the
    /// plugin need not be deployed).
    async fn plugin_settings(&self, plugin: &str) -> StoreResult<PluginSettings>;
    /// Sets or removes configuration keys of `plugin` in one transaction and returns the result.
    /// A key is a value or a secret, whichever it was last set as.
    async fn update_plugin_config(
        &self,
        plugin: &str,
        changes: Vec<ConfigChange>,
    ) -> StoreResult<PluginSettings>;
    /// Replaces the grants of `plugin` set through the API and returns its settings.
    async fn put_plugin_grants(
        &self,
        plugin: &str,
        grants: PluginGrants,
    ) -> StoreResult<PluginSettings>;

    // --- housekeeping -------------------------------------------------------------------------

    /// Recovers expired leases, expires messages past their TTL and removes records past their
    /// retention windows.
    async fn maintain(&self) -> StoreResult<Maintenance>;
    /// Checks the database answers (for `/readyz`).
    async fn ping(&self) -> StoreResult<()>;
    /// `None` while writes succeed. Once a write has failed for lack of space or an I/O error,
    /// each call makes one small write to learn whether writes work again, so readiness comes
    /// back by itself even when no other write arrives.
    async fn write_failure(&self) -> Option<StorageFailure>;
    /// Checks the database file's integrity now (on a read connection, so writes go on),
    /// giving up after `budget`; the result also becomes [`last_check`](Self::last_check).
    async fn check_integrity(
        &self,
        level: CheckLevel,
        budget: Option<std::time::Duration>,
    ) -> StoreResult<CheckReport>;
    /// The result of the last integrity check (the one at start, or a later one on request).
    fn last_check(&self) -> Option<CheckReport>;

    /// Writes a consistent copy of the database, as of one moment, to `target` (a file that must
    /// not exist: `TargetExists`) while writes go on. The copy is built under a temporary name
    /// beside `target` and appears under its name only when complete.
    async fn backup(&self, target: std::path::PathBuf) -> StoreResult<BackupReport>;
    /// Sizes of the database and its write-ahead log and when the last backup was taken: cheap
    /// (pragmas and file metadata), for `/metrics`.
    async fn db_stats(&self) -> StoreResult<DbStats>;
    /// Copies the write-ahead log into the database without waiting for anyone (`PASSIVE`);
    /// when the log file is still larger than `truncate_over` bytes, waits briefly for readers
    /// and writers to checkpoint all of it and truncate the file (`TRUNCATE`).
    async fn checkpoint(&self, truncate_over: u64) -> StoreResult<Checkpoint>;
    /// Lets the database refresh the statistics its query planner uses (`PRAGMA optimize`).
    async fn optimize(&self) -> StoreResult<()>;

    /// Wake-ups for consumers: the store signals a queue after committing anything that may have
    /// made one of its messages ready (enqueue, retry, release, replay, lease recovery).
    fn signals(&self) -> &Signals;

    /// How large a consumer's claims should be on this store.
    fn claim_sizes(&self) -> ClaimSizes {
        ClaimSizes::default()
    }
}

/// How many messages a consumer should claim at once, and hold claimed before starting them.
/// A claim's fixed cost differs by store: in-process SQLite answers in microseconds, a server
/// database takes several network round trips per claim, which larger claims spread out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClaimSizes {
    /// The most messages one claim leases.
    pub max_claim: usize,
    /// The most messages leased but not yet started, per queue and host.
    pub max_prefetch: usize,
}

impl Default for ClaimSizes {
    /// Measured on SQLite: larger claims speed warm drains up a little (+12%) but slow fresh
    /// instances down (-20%) and lengthen the writer's transactions.
    fn default() -> ClaimSizes {
        ClaimSizes {
            max_claim: 256,
            max_prefetch: 512,
        }
    }
}

/// Per-queue wake-up signals, so idle workers sleep instead of polling.
///
/// A signal sent while nobody waits is remembered (one permit), so a worker that checks the
/// queue, finds it empty and then waits cannot miss an enqueue that committed in between.
#[derive(Debug, Default)]
pub struct Signals {
    queues:
        std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<tokio::sync::Notify>>>,
}

impl Signals {
    /// The signal of `queue`, created on first use.
    pub fn get(&self, queue: &str) -> std::sync::Arc<tokio::sync::Notify> {
        let mut map = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(queue.to_owned()).or_default().clone()
    }

    /// Wakes every queue's worker on this host (after wake-ups may have been missed).
    pub fn notify_all(&self) {
        let map = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        for n in map.values() {
            n.notify_one();
        }
    }

    /// Wakes the worker of `queue`, if the queue has one on this host.
    pub fn notify(&self, queue: &str) {
        let map = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get(queue) {
            n.notify_one();
        }
    }
}

/// Store-wide settings.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// How long acked messages stay queryable; 0 deletes them on ack.
    pub acked_retention_ms: u64,
    /// How long reviewed dead letters are kept.
    pub dead_retention_ms: u64,
    /// `synchronous=FULL` instead of `NORMAL`: every commit survives power loss, at a cost.
    pub sync_full: bool,
    /// Cap on the database file's size (`PRAGMA max_page_count`); writes beyond it fail as
    /// [`StoreError::StorageFull`]. `None`: only the disk limits it.
    pub max_size_bytes: Option<u64>,
    /// The integrity check `open` runs before it starts the writer; `None`: none.
    pub startup_check: Option<CheckLevel>,
    /// Open even when the write-ahead log shows committed transactions that SQLite would
    /// drop (see `sqlite::wal`); the loss is logged.
    pub accept_wal_loss: bool,
}

/// What an integrity check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    pub level: CheckLevel,
    pub outcome: CheckOutcome,
    /// What is wrong (SQLite's own words), at most 20 lines; empty unless `damaged`.
    pub problems: Vec<String>,
    /// When the check started (Unix ms).
    pub checked_at_ms: i64,
    pub duration_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckOutcome {
    /// Nothing wrong.
    Ok,
    /// The file is damaged: see `problems`.
    Damaged,
    /// The check ran out of time before the end; it found nothing wrong in what it read.
    Incomplete,
}

impl CheckOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckOutcome::Ok => "ok",
            CheckOutcome::Damaged => "damaged",
            CheckOutcome::Incomplete => "incomplete",
        }
    }
}

impl CheckLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckLevel::Quick => "quick",
            CheckLevel::Full => "full",
        }
    }
}

/// How thorough an integrity check is: `quick` (`PRAGMA quick_check`: every page and record is
/// well formed) or `full` (`PRAGMA integrity_check`: also that every index matches its table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckLevel {
    Quick,
    Full,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            acked_retention_ms: 3_600_000,
            dead_retention_ms: 90 * 24 * 3_600_000,
            sync_full: false,
            max_size_bytes: None,
            startup_check: Some(CheckLevel::Quick),
            accept_wal_loss: false,
        }
    }
}

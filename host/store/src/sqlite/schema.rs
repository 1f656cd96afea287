//! Connection setup and schema migrations.
//!
//! Migrations are an ordered list; entry `i` moves the database from `user_version = i` to
//! `i + 1` in one transaction. A database written by a newer Spool (a higher `user_version` than
//! this list knows) is refused rather than guessed at.
//!
//! Message states are stored as small integers (see [`super::rows::state_code`]); SQL in this
//! module and in the query modules spells them as literals because SQLite only uses a partial
//! index when the query repeats the index's `WHERE` terms literally, not through a bound
//! parameter: 0 scheduled, 1 ready, 2 leased, 3 acked, 4 dead, 5 cancelled, 6 expired.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

use super::rows::Ctx;
use crate::{StoreError, StoreOptions, StoreResult};

/// How long a connection waits for a lock held by another process before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Statements cached per connection; the writer uses a few dozen distinct ones.
const STATEMENT_CACHE: usize = 128;

const V1: &str = r#"
CREATE TABLE queues (
    id              INTEGER PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    config          TEXT NOT NULL,
    created_at      INTEGER NOT NULL,
    enqueued_total  INTEGER NOT NULL DEFAULT 0,
    acked_total     INTEGER NOT NULL DEFAULT 0,
    retried_total   INTEGER NOT NULL DEFAULT 0,
    dead_total      INTEGER NOT NULL DEFAULT 0,
    cancelled_total INTEGER NOT NULL DEFAULT 0,
    expired_total   INTEGER NOT NULL DEFAULT 0
);

-- AUTOINCREMENT: ids are never reused after acked rows are deleted, so an id a producer holds
-- never starts naming a different message, and id-ordered cursors stay exactly-once.
-- The payload is the last column so reading the small columns never walks its overflow pages.
CREATE TABLE messages (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    queue_id         INTEGER NOT NULL REFERENCES queues(id), -- documented, not enforced
    state            INTEGER NOT NULL,
    priority         INTEGER NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    enqueued_at      INTEGER NOT NULL,
    available_at     INTEGER NOT NULL,
    expires_at       INTEGER,
    lease_expires_at INTEGER,
    finished_at      INTEGER,
    reviewed_at      INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    lease_expiries   INTEGER NOT NULL DEFAULT 0,
    idem_key         TEXT,
    topic            TEXT,
    correlation_id   TEXT,
    headers          TEXT,
    last_error       TEXT,
    error_category   TEXT,
    plugin_version   TEXT,
    payload          BLOB
);

-- Depth counts per state, fifo/lifo claims, per-state listing and the DLQ of one queue.
CREATE INDEX messages_by_state ON messages (queue_id, state, id);
-- The priority claim path: only ready rows, already in claim order.
CREATE INDEX messages_ready_by_priority ON messages (queue_id, priority DESC, id) WHERE state = 1;
-- Promotion of due scheduled messages and the next due time.
CREATE INDEX messages_scheduled_due ON messages (queue_id, available_at) WHERE state = 0;
-- TTL expiry: only messages that have never been started can expire.
CREATE INDEX messages_ttl ON messages (queue_id, expires_at)
    WHERE state < 2 AND attempts = 0 AND expires_at IS NOT NULL;
-- Lease recovery.
CREATE INDEX messages_lease ON messages (lease_expires_at) WHERE state = 2;
-- Idempotency keys are cleared when a message is cancelled or expires, freeing the key.
CREATE UNIQUE INDEX messages_idem_key ON messages (queue_id, idem_key) WHERE idem_key IS NOT NULL;
-- Retention of acked records.
CREATE INDEX messages_acked ON messages (finished_at) WHERE state = 3;
-- The DLQ across all queues, and retention of reviewed dead letters.
CREATE INDEX messages_dead ON messages (id) WHERE state = 4;
CREATE INDEX messages_dead_reviewed ON messages (reviewed_at)
    WHERE state = 4 AND reviewed_at IS NOT NULL;

CREATE TABLE plugins (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    version    INTEGER NOT NULL,
    sha256     TEXT NOT NULL,
    world      TEXT NOT NULL,
    size       INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    wasm       BLOB NOT NULL,
    UNIQUE (name, version)
);

CREATE TABLE plugin_heads (
    name           TEXT PRIMARY KEY,
    active_version INTEGER NOT NULL
);

CREATE TABLE plugin_kv (
    plugin TEXT NOT NULL,
    key    TEXT NOT NULL,
    value  BLOB NOT NULL,
    PRIMARY KEY (plugin, key)
);
"#;

/// Who enqueued a message: the name of the API token (NULL without authentication, or when the
/// message was published by a plugin), so a `producer` token can read back its own messages.
const V2: &str = "ALTER TABLE messages ADD COLUMN producer TEXT;";

/// Idempotency keys are scoped: a `producer` token's keys are its own, so another producer can
/// neither learn nor supersede its messages by guessing a key; admin tokens and servers without
/// tokens share the scope `''`. Keys stored before this migration stay in the shared scope.
const V_IDEM_SCOPE: &str = "
ALTER TABLE messages ADD COLUMN idem_scope TEXT NOT NULL DEFAULT '';
DROP INDEX messages_idem_key;
CREATE UNIQUE INDEX messages_idem_scope_key ON messages (queue_id, idem_scope, idem_key)
    WHERE idem_key IS NOT NULL;
";

/// Who made which version of a plugin active, when, and how (`deploy`, `rollback`, `activate`):
/// one row per change of `plugin_heads.active_version`. `actor` is the API token's name (NULL
/// without authentication). Plugins deployed before this migration have no history before it.
const V_PLUGIN_HISTORY: &str = r#"
CREATE TABLE plugin_history (
    id           INTEGER PRIMARY KEY,
    name         TEXT NOT NULL,
    at           INTEGER NOT NULL,
    actor        TEXT,
    action       TEXT NOT NULL,
    from_version INTEGER,
    to_version   INTEGER NOT NULL
);
CREATE INDEX plugin_history_by_name ON plugin_history (name, id);
"#;

/// Small facts the store keeps about itself: the row that readiness probes rewrite to learn
/// whether writes work (after a full disk, with no traffic).
const V_INTEGRITY: &str = "CREATE TABLE spool_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);";

/// How many messages each queue holds in each waiting state, kept by every write that moves a
/// message (see `rows::Counters`), so stats never count rows. Filled from the rows once here.
const V_DEPTHS: &str = "
ALTER TABLE queues ADD COLUMN scheduled_now INTEGER NOT NULL DEFAULT 0;
ALTER TABLE queues ADD COLUMN ready_now INTEGER NOT NULL DEFAULT 0;
ALTER TABLE queues ADD COLUMN leased_now INTEGER NOT NULL DEFAULT 0;
ALTER TABLE queues ADD COLUMN dead_now INTEGER NOT NULL DEFAULT 0;
UPDATE queues SET
    scheduled_now = (SELECT count(*) FROM messages WHERE queue_id = queues.id AND state = 0),
    ready_now = (SELECT count(*) FROM messages WHERE queue_id = queues.id AND state = 1),
    leased_now = (SELECT count(*) FROM messages WHERE queue_id = queues.id AND state = 2),
    dead_now = (SELECT count(*) FROM messages WHERE queue_id = queues.id AND state = 4);
";

/// Routes bind topic patterns to queues (optionally through a filter plugin); identical routes
/// are refused in code, since NULL filters and headers would not collide in a UNIQUE index.
/// Messages learn where they came from: the message whose handler published them
/// (`parent_id`), how deep in a chain of publishes they are, and the route that delivered them.
/// `correlation_id` gets an index for traces of a whole chain.
const V_ROUTES: &str = "
CREATE TABLE routes (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    pattern         TEXT NOT NULL,
    queue_id        INTEGER NOT NULL REFERENCES queues(id), -- documented, not enforced
    filter          TEXT,
    headers         TEXT,
    limits          TEXT,
    created_at      INTEGER NOT NULL,
    delivered_total INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX routes_by_queue ON routes (queue_id);
CREATE INDEX routes_by_filter ON routes (filter) WHERE filter IS NOT NULL;
ALTER TABLE messages ADD COLUMN parent_id INTEGER;
ALTER TABLE messages ADD COLUMN chain_depth INTEGER NOT NULL DEFAULT 0;
ALTER TABLE messages ADD COLUMN route_id INTEGER;
CREATE INDEX messages_by_correlation ON messages (correlation_id)
    WHERE correlation_id IS NOT NULL;
";

/// Schedules (DESIGN §3): the definition (exactly one of `cron`, `every_ms`, `at_ms`), the next
/// fire instant (indexed over unpaused schedules: the scheduler's "what is due" and "when to
/// wake" are one index lookup), and `generation`, the compare-and-set token every fire and edit
/// bumps. A queue target is named, not referenced by id: a schedule outlives a deleted queue and
/// fires into it again if it comes back. `schedule_fires` is each schedule's recent history; its
/// key `(schedule_id, fire_at)` makes a fire instant writable once.
const V_SCHEDULES: &str = "
CREATE TABLE schedules (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    name         TEXT,
    cron         TEXT,
    every_ms     INTEGER,
    at_ms        INTEGER,
    timezone     TEXT,
    target_kind  TEXT NOT NULL CHECK (target_kind IN ('queue', 'topic')),
    target       TEXT NOT NULL,
    headers      TEXT,
    priority     INTEGER,
    start_at     INTEGER,
    end_at       INTEGER,
    max_runs     INTEGER,
    missed       TEXT NOT NULL,
    paused       INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,
    next_fire_at INTEGER,
    runs         INTEGER NOT NULL DEFAULT 0,
    last_fire_at INTEGER,
    generation   INTEGER NOT NULL DEFAULT 1,
    payload      BLOB NOT NULL,
    CHECK ((cron IS NOT NULL) + (every_ms IS NOT NULL) + (at_ms IS NOT NULL) = 1)
);
CREATE INDEX schedules_due ON schedules (next_fire_at)
    WHERE paused = 0 AND next_fire_at IS NOT NULL;
CREATE TABLE schedule_fires (
    schedule_id INTEGER NOT NULL,
    fire_at     INTEGER NOT NULL,
    fired_at    INTEGER NOT NULL,
    message_ids TEXT NOT NULL,
    manual      INTEGER NOT NULL DEFAULT 0,
    UNIQUE (schedule_id, fire_at)
);
";

/// Queue configs gain the circuit breaker's settings (`breaker_failures`, `breaker_cooldown_ms`,
/// `breaker_max_cooldown_ms`), written into every stored config with their defaults (the
/// breaker off) so each row is complete. Configs are JSON, so no column changes; the version
/// step is what makes an older build refuse this database with a clear message instead of
/// failing to read configs holding keys it does not know.
const V_BREAKER: &str = "
UPDATE queues SET config = json_insert(config,
    '$.breaker_failures', 0,
    '$.breaker_cooldown_ms', 5000,
    '$.breaker_max_cooldown_ms', 300000);
";

/// A plugin's configuration set through the API (`PUT /v1/plugins/{name}/config`), shared by
/// all its versions: one row per key, `secret = 1` for write-only secrets (never returned by
/// the API); and the capabilities granted to it (`PUT /v1/plugins/{name}/grants`) as a JSON
/// object of the fields set. Rows may exist before the plugin is deployed, so a deploy can
/// find its grants.
const V_PLUGIN_CONFIG: &str = "
CREATE TABLE plugin_config (
    plugin TEXT NOT NULL,
    key    TEXT NOT NULL,
    value  TEXT NOT NULL,
    secret INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (plugin, key)
);
CREATE TABLE plugin_grants (
    plugin TEXT PRIMARY KEY,
    grants TEXT NOT NULL
);
";

/// Large plugin components in pieces, each written in a transaction of its own
/// (`plugin_chunks.rs`); a `plugins` row with an empty `wasm` keeps its bytes here.
const V_PLUGIN_CHUNKS: &str = "
CREATE TABLE plugin_chunks (
    sha256     TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    bytes      BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (sha256, seq)
);
";

/// Every schema version in order; the database's `user_version` is how many have been applied.
/// Per-minute queue history for charts (`Store::record_history`): the last sample of each
/// minute, kept a week.
const V_HISTORY: &str = "
CREATE TABLE queue_history (
    queue_id            INTEGER NOT NULL,
    minute              INTEGER NOT NULL,
    scheduled           INTEGER NOT NULL,
    ready               INTEGER NOT NULL,
    leased              INTEGER NOT NULL,
    dlq_depth           INTEGER NOT NULL,
    enqueued            INTEGER NOT NULL,
    acked               INTEGER NOT NULL,
    retried             INTEGER NOT NULL,
    dead                INTEGER NOT NULL,
    cancelled           INTEGER NOT NULL,
    expired             INTEGER NOT NULL,
    oldest_ready_age_ms INTEGER,
    PRIMARY KEY (queue_id, minute)
);
CREATE INDEX queue_history_by_minute ON queue_history (minute);
";

const MIGRATIONS: &[&str] = &[
    V1,
    V2,
    V_IDEM_SCOPE,
    V_PLUGIN_HISTORY,
    V_INTEGRITY,
    V_DEPTHS,
    V_ROUTES,
    V_SCHEDULES,
    V_BREAKER,
    V_PLUGIN_CONFIG,
    V_PLUGIN_CHUNKS,
    V_HISTORY,
];

/// The schema version this build writes.
pub(super) const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// Opens (creating if needed) the connection the writer thread owns.
pub(super) fn open_writer(path: &Path, opts: &StoreOptions) -> StoreResult<Connection> {
    let conn = Connection::open(path).map_err(|e| {
        StoreError::Database(format!("cannot open database {}: {e}", path.display()))
    })?;
    conn.busy_timeout(BUSY_TIMEOUT).ctx("set busy_timeout")?;
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
        .ctx("enable WAL")?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Database(format!(
            "database {} cannot use write-ahead logging (journal_mode is {mode}); \
             put it on a local file system",
            path.display()
        )));
    }
    let sync = if opts.sync_full { "FULL" } else { "NORMAL" };
    conn.pragma_update(None, "synchronous", sync)
        .ctx("set synchronous")?;
    // Foreign keys stay off (SQLite's default): every queue_id is read from `queues` inside the
    // same transaction and a queue is deleted together with its messages in one, while
    // enforcement would cost a parent probe and a statement journal on every message insert.
    conn.pragma_update(None, "temp_store", "MEMORY")
        .ctx("set temp_store")?;
    // 32 MiB of page cache (negative = KiB) keeps the hot index pages of the claim path resident.
    conn.pragma_update(None, "cache_size", -32_768)
        .ctx("set cache_size")?;
    // Checkpoints run on a thread of their own (`checkpoint::Checkpointer`), never inside one
    // of the writer's commits.
    conn.pragma_update(None, "wal_autocheckpoint", 0)
        .ctx("set wal_autocheckpoint")?;
    // Truncate the WAL file back to 64 MiB after checkpoints so a burst does not leave a huge file.
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)
        .ctx("set journal_size_limit")?;
    // `PRAGMA optimize` samples this many rows per index instead of reading whole tables, so
    // it stays cheap on a large database (SQLite's recommended setting).
    conn.pragma_update(None, "analysis_limit", 400)
        .ctx("set analysis_limit")?;
    if let Some(max) = opts.max_size_bytes {
        let page_size: i64 = conn
            .pragma_query_value(None, "page_size", |r| r.get(0))
            .ctx("read page_size")?;
        let pages = i64::try_from(max).unwrap_or(i64::MAX) / page_size.max(1);
        // SQLite never sets the cap below the current size; writes that need more pages fail.
        conn.pragma_update(None, "max_page_count", pages.max(1))
            .ctx("set max_page_count")?;
    }
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// Opens a connection for backups and checkpoints, which the read pool's `query_only`
/// connections refuse (`VACUUM INTO` writes its output through the connection, and a
/// checkpoint writes the database file). It never changes the database's contents.
/// `busy_timeout` bounds how long a checkpoint may wait for readers and the writer.
pub(super) fn open_maintenance(path: &Path, busy_timeout: Duration) -> StoreResult<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| {
        StoreError::Database(format!(
            "cannot open a maintenance connection to {}: {e}",
            path.display()
        ))
    })?;
    conn.busy_timeout(busy_timeout).ctx("set busy_timeout")?;
    Ok(conn)
}

/// Opens a read-only-by-policy connection for the read pool.
pub(super) fn open_reader(path: &Path) -> StoreResult<Connection> {
    // READ_WRITE without CREATE: WAL readers need write access to the -shm file, and the writer
    // has created the database already. `query_only` then forbids writes through this handle.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| {
        StoreError::Database(format!(
            "cannot open read connection to {}: {e}",
            path.display()
        ))
    })?;
    conn.busy_timeout(BUSY_TIMEOUT).ctx("set busy_timeout")?;
    conn.pragma_update(None, "query_only", "ON")
        .ctx("set query_only")?;
    conn.pragma_update(None, "cache_size", -8_192)
        .ctx("set cache_size")?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(conn)
}

/// Opens a connection for `spool check`: read-only, so it can neither write nor checkpoint
/// (closing the last connection would otherwise checkpoint the log and delete it).
pub(super) fn open_checker(path: &Path) -> StoreResult<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| {
        StoreError::Database(format!("cannot open {} to check it: {e}", path.display()))
    })?;
    conn.busy_timeout(BUSY_TIMEOUT).ctx("set busy_timeout")?;
    Ok(conn)
}

/// Brings the schema up to [`SCHEMA_VERSION`], one transaction per migration.
pub(super) fn migrate(conn: &mut Connection) -> StoreResult<()> {
    loop {
        // IMMEDIATE takes the write lock before reading the version, so two processes opening
        // the same new file cannot both apply the same migration.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .ctx("begin migration")?;
        let version: i64 = tx
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .ctx("read user_version")?;
        let version = usize::try_from(version).map_err(|_| {
            StoreError::Database(format!("database has a negative schema version {version}"))
        })?;
        if version > SCHEMA_VERSION {
            return Err(StoreError::Database(format!(
                "database schema version {version} is newer than this build of spool supports \
                 ({SCHEMA_VERSION}); upgrade spool or restore a backup"
            )));
        }
        if version == SCHEMA_VERSION {
            return Ok(());
        }
        tx.execute_batch(MIGRATIONS[version]).map_err(|e| {
            StoreError::Database(format!("migration to version {}: {e}", version + 1))
        })?;
        tx.pragma_update(None, "user_version", (version + 1) as i64)
            .ctx("write user_version")?;
        tx.commit().ctx("commit migration")?;
        tracing::info!(version = version + 1, "applied schema migration");
    }
}

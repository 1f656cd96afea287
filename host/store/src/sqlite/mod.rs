//! The embedded SQLite store: one database file in WAL mode.
//!
//! - `schema`: connection settings and ordered migrations (`PRAGMA user_version`).
//! - `writer`: the one writer thread; every write (including claims and settles) is a job that
//!   it batches with whatever else is pending into one transaction (group commit).
//! - `readers`: a small pool of read connections used from `spawn_blocking`.
//! - `write_ops` / `read_ops`: the SQL of each operation.
//! - `rows`: row <-> model conversions, cursors, counters.
//!
//! Messages refer to their queue by integer id, states are small integers, and the claim path
//! is served by partial indexes over ready rows only, so claiming stays cheap however many acked
//! or dead rows the table holds.
//!
//! Semantics worth knowing (DESIGN §3 leaves them open):
//! - `claim` on an unknown queue is `QueueNotFound`; on a paused queue it returns nothing.
//! - A TTL applies to messages that have not been started: a retried or lease-recovered message
//!   is not expired (a released one, whose attempt is not counted, is).
//! - Replaying a dead letter clears its TTL.
//! - Reviewed dead letters are deleted `dead_retention_ms` after they were marked reviewed.
//! - `oldest_ready_age_ms` counts from the enqueue time of the oldest ready message.
//! - A claim whose caller has gone away still leases its messages; they come back when the lease
//!   expires (at-least-once, as everywhere else).
//! - `list_messages` / `list_dead` with an unknown queue name are `QueueNotFound`.
//! - Each `maintain` call handles at most 10 000 rows of each kind; call it periodically.
//! - The path must name a file: `:memory:` would give each connection its own database.
//! - Deleting a queue deletes its messages in the same transaction (foreign keys are off), so
//!   no message ever names a missing queue; message ids are never reused, so a late settle of a
//!   deleted message finds nothing and is a lost lease.
//! - Plugins keep an activation history (`plugin_history`) from schema version 3 on.

mod backup;
mod checkpoint;
mod history_ops;
pub(crate) mod ids;
mod integrity;
pub(crate) mod plugin_chunks;
mod plugin_config_ops;
mod read_ops;
mod readers;
mod route_ops;
mod rows;
mod schedule_ops;
mod schema;
pub(crate) mod wal;
mod write_ops;
mod writer;

// Routes, schedules and the rest of the store's behaviour: `crate::behaviour`, on both backends.
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension};

use self::readers::ReadPool;
use self::rows::Ctx;
use self::writer::{OpJob, Tx, WriteHealth, Writer};
use crate::{
    BackupReport, CheckLevel, CheckOutcome, CheckReport, Checkpoint, ClaimBatch, DbStats,
    DeadFilter, Maintenance, MessageFilter, Signals, StorageFailure, Store, StoreError,
    StoreOptions, StoreResult,
};
use spool_model::{ConfigChange, HistoryPoint, PluginGrants, PluginSettings};
use spool_model::{
    DeletedMessages, Delivery, Deployed, Enqueued, Message, MessageId, MessageState, NewMessage,
    NewRoute, Page, PluginActivation, PluginDeleted, PluginVersion, Queue, QueueConfigPatch,
    QueueStats, Route, RouteId, Settle, SettleResult, TraceEntry,
};
use spool_model::{Fire, FireOutcome, NewSchedule, Schedule, ScheduleId, SchedulePatch};

/// How long the check at start may take before the server starts anyway (the check is then
/// reported `incomplete`); a full check can be run later with `POST /v1/admin/check`.
const STARTUP_CHECK_BUDGET: Duration = Duration::from_secs(30);

/// The schema version (`PRAGMA user_version`) this build writes; `spool migrate` copies only
/// a database at exactly this version.
pub(crate) const SCHEMA_VERSION: usize = schema::SCHEMA_VERSION;

/// What `spool check` found in a database file.
#[derive(Debug, Clone)]
pub struct FileCheck {
    pub report: CheckReport,
    /// Set when the write-ahead log holds committed transactions SQLite would drop.
    pub wal_loss: Option<String>,
    /// The highest message id the database remembers (None: unreadable).
    pub sequence: Option<i64>,
    /// The id mark beside the database (None: no mark file).
    pub id_mark: Option<i64>,
}

/// The `spool_meta` key of the last backup's time (Unix ms).
const LAST_BACKUP_KEY: &str = "last_backup_at_ms";

/// An integer in `spool_meta`, if set.
fn meta_i64(conn: &Connection, key: &str) -> StoreResult<Option<i64>> {
    let value: Option<String> = conn
        .query_row("SELECT value FROM spool_meta WHERE key = ?1", [key], |r| {
            r.get(0)
        })
        .optional()
        .ctx("read spool_meta")?;
    Ok(value.and_then(|v| v.parse().ok()))
}

/// Refuses a log that would lose commits, unless told to accept the loss.
fn check_wal(path: &Path, accept_loss: bool) -> StoreResult<()> {
    let wal_file = wal::wal_path(path);
    let scan = wal::scan(path)
        .map_err(|e| StoreError::StorageIo(format!("cannot read {}: {e}", wal_file.display())))?;
    let Some(scan) = scan.filter(wal::WalScan::loses_commits) else {
        return Ok(());
    };
    let what = scan.describe(&wal_file);
    if accept_loss {
        tracing::error!(db = %path.display(), frames = scan.frames, lost_commits = scan.lost_commits,
            "{what}; starting anyway (--accept-wal-loss): those transactions are gone, and \
             message ids continue above the id mark");
        return Ok(());
    }
    Err(StoreError::Damaged(format!(
        "{}. To accept the loss and start with what SQLite can replay, run `spool serve` once \
         with --accept-wal-loss",
        integrity::damaged_message(path, &what)
    )))
}

fn log_check(path: &Path, report: &CheckReport) {
    match report.outcome {
        CheckOutcome::Ok => tracing::info!(db = %path.display(), level = report.level.as_str(),
            duration_ms = report.duration_ms, "database integrity check passed"),
        CheckOutcome::Incomplete => tracing::warn!(db = %path.display(),
            level = report.level.as_str(), duration_ms = report.duration_ms,
            "database integrity check ran out of time and was stopped; it found no damage in \
             what it read (run a full check with `POST /v1/admin/check`)"),
        CheckOutcome::Damaged => tracing::error!(db = %path.display(),
            level = report.level.as_str(), problems = ?report.problems,
            "database integrity check found damage"),
    }
}

/// A [`Store`] on one SQLite file. Cheap to clone; the last clone dropped stops the writer
/// thread after it finishes its current batch.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    signals: Arc<Signals>,
    health: Arc<WriteHealth>,
    last_check: Mutex<Option<CheckReport>>,
    /// When the last backup was taken (Unix ms); also kept in `spool_meta` across restarts.
    last_backup_at_ms: Mutex<Option<i64>>,
    readers: ReadPool,
    /// Held for its thread, which stops when this is dropped.
    _checkpointer: checkpoint::Checkpointer,
    // Dropped last among the fields that matter: joining the writer closes the database.
    writer: Writer,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, applies pending migrations and starts
    /// the writer thread. Blocking: call it from `spawn_blocking` inside a runtime.
    ///
    /// Before SQLite touches the file, its write-ahead log is scanned for committed
    /// transactions SQLite would drop (refused as `Damaged` unless `opts.accept_wal_loss`);
    /// then `opts.startup_check` runs (damage is refused as `Damaged`), and message ids are
    /// moved past the id mark (`ids`).
    pub fn open(path: &Path, opts: StoreOptions) -> StoreResult<SqliteStore> {
        check_wal(path, opts.accept_wal_loss)?;
        let mut conn = schema::open_writer(path, &opts)?;
        let last_check = match opts.startup_check {
            Some(level) => {
                let report = integrity::check(&conn, level, Some(STARTUP_CHECK_BUDGET))?;
                log_check(path, &report);
                if report.outcome == CheckOutcome::Damaged {
                    return Err(integrity::refuse(path, &report));
                }
                Some(report)
            }
            None => None,
        };
        schema::migrate(&mut conn)?;
        // SQLite's advice for long-lived connections: let it analyze, within a small budget
        // (`analysis_limit`), the tables whose statistics are missing or stale; the
        // maintenance loop repeats `PRAGMA optimize` now and then.
        // It writes statistics, so it can fail on a full disk; the server starts anyway.
        if let Err(e) = conn.execute_batch("PRAGMA optimize=0x10002") {
            tracing::warn!(db = %path.display(), error = %e,
                "PRAGMA optimize at open failed; queries work without fresh statistics");
        }
        let last_backup_at_ms = meta_i64(&conn, LAST_BACKUP_KEY)?;
        let ids = ids::IdMark::open(path, &conn)?;
        let readers = ReadPool::new(path.to_owned())?;
        let signals = Arc::new(Signals::default());
        let health = Arc::new(WriteHealth::default());
        let writer = Writer::spawn(conn, opts, signals.clone(), health.clone(), ids)?;
        let checkpointer = checkpoint::Checkpointer::spawn(path)?;
        tracing::info!(path = %path.display(), schema = schema::SCHEMA_VERSION, "sqlite store open");
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                signals,
                health,
                last_check: Mutex::new(last_check),
                last_backup_at_ms: Mutex::new(last_backup_at_ms),
                readers,
                _checkpointer: checkpointer,
                writer,
            }),
        })
    }

    /// Checks the file at `path` without starting a store (`spool check`): the write-ahead log
    /// scan, then an integrity check of `level`, on a read-only connection that never writes
    /// or checkpoints. Safe while a server uses the file.
    pub fn check_file(path: &Path, level: CheckLevel) -> StoreResult<FileCheck> {
        if !path.is_file() {
            return Err(StoreError::Invalid(format!(
                "{} is not a file; pass the database a server runs with (--db)",
                path.display()
            )));
        }
        let wal = wal::scan(path).map_err(|e| {
            StoreError::StorageIo(format!(
                "cannot read {}: {e}",
                wal::wal_path(path).display()
            ))
        })?;
        let conn = schema::open_checker(path)?;
        let report = integrity::check(&conn, level, None)?;
        let sequence = ids::sequence(&conn).ok();
        let id_mark = ids::read_mark(&ids::mark_path(path))?;
        Ok(FileCheck {
            wal_loss: wal
                .filter(wal::WalScan::loses_commits)
                .map(|w| w.describe(&wal::wal_path(path))),
            report,
            sequence,
            id_mark,
        })
    }

    /// The database file this store writes.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Runs `f` on the writer thread in the next group-commit batch and waits for the commit.
    async fn write<T, F>(&self, op: &'static str, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Tx<'_>) -> StoreResult<T> + Send + 'static,
    {
        let (job, rx) = OpJob::new(op, f);
        self.inner.writer.submit(job)?;
        rx.await.unwrap_or(Err(StoreError::Closed))
    }

    /// Writes a large component's pieces, one write (and commit) each, so the writes of every
    /// queue go in between (see `plugin_chunks`).
    async fn put_plugin_chunks(&self, sha256: &str, wasm: &Arc<Vec<u8>>) -> StoreResult<()> {
        for (seq, start) in (0..wasm.len())
            .step_by(plugin_chunks::CHUNK_BYTES)
            .enumerate()
        {
            let (sha256, wasm) = (sha256.to_owned(), wasm.clone());
            self.write("put_plugin_chunk", move |tx| {
                let end = (start + plugin_chunks::CHUNK_BYTES).min(wasm.len());
                plugin_chunks::put_chunk(tx, &sha256, seq, &wasm[start..end])
            })
            .await?;
        }
        Ok(())
    }

    /// Runs `f` on a pooled read connection on tokio's blocking pool.
    async fn read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.readers.with(f))
            .await
            .map_err(|e| StoreError::Database(format!("read task failed: {e}")))?
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn put_queue(&self, name: &str, patch: &QueueConfigPatch) -> StoreResult<(Queue, bool)> {
        let (name, patch) = (name.to_owned(), patch.clone());
        self.write("put_queue", move |tx| {
            write_ops::put_queue(tx, &name, &patch)
        })
        .await
    }

    async fn get_queue(&self, name: &str) -> StoreResult<Queue> {
        let name = name.to_owned();
        self.read(move |c| read_ops::get_queue(c, &name)).await
    }

    async fn list_queues(&self) -> StoreResult<Vec<Queue>> {
        self.read(|c| read_ops::list_queues(c)).await
    }

    async fn queue_stats(&self, name: &str) -> StoreResult<QueueStats> {
        let name = name.to_owned();
        self.read(move |c| read_ops::queue_stats(c, &name)).await
    }

    async fn delete_queue(&self, name: &str, force: bool) -> StoreResult<DeletedMessages> {
        let name = name.to_owned();
        self.write("delete_queue", move |tx| {
            write_ops::delete_queue(tx, &name, force)
        })
        .await
    }

    async fn all_queue_stats(&self) -> StoreResult<Vec<(String, QueueStats)>> {
        self.read(|c| read_ops::all_queue_stats(c)).await
    }

    async fn record_history(&self, minute: i64, forget_before: i64) -> StoreResult<usize> {
        self.write("record_history", move |tx| {
            history_ops::record(tx, minute, forget_before)
        })
        .await
    }

    async fn queue_history(&self, queue: &str, since: i64) -> StoreResult<Vec<HistoryPoint>> {
        let queue = queue.to_owned();
        self.read(move |c| history_ops::read(c, &queue, since))
            .await
    }

    async fn enqueue(&self, queue: &str, messages: Vec<NewMessage>) -> StoreResult<Vec<Enqueued>> {
        let queue = queue.to_owned();
        self.write("enqueue", move |tx| {
            write_ops::enqueue(tx, &queue, messages)
        })
        .await
    }

    async fn publish(&self, deliveries: Vec<Delivery>) -> StoreResult<Vec<Enqueued>> {
        self.write("publish", move |tx| route_ops::publish(tx, deliveries))
            .await
    }

    async fn reserve_ids(&self, n: u32) -> StoreResult<Vec<MessageId>> {
        let first = self
            .write("reserve_ids", move |tx| route_ops::reserve_ids(tx, n))
            .await?;
        Ok((0..MessageId::from(n.max(1))).map(|i| first + i).collect())
    }

    async fn create_route(&self, route: NewRoute) -> StoreResult<(Route, bool)> {
        self.write("create_route", move |tx| route_ops::create_route(tx, route))
            .await
    }

    async fn list_routes(&self) -> StoreResult<Vec<Route>> {
        self.read(|c| route_ops::list_routes(c)).await
    }

    async fn delete_route(&self, id: RouteId) -> StoreResult<Route> {
        self.write("delete_route", move |tx| route_ops::delete_route(tx, id))
            .await
    }

    async fn replace_dead(
        &self,
        id: MessageId,
        deliveries: Vec<Delivery>,
    ) -> StoreResult<Vec<Enqueued>> {
        self.write("replace_dead", move |tx| {
            route_ops::replace_dead(tx, id, deliveries)
        })
        .await
    }

    async fn create_schedule(&self, schedule: NewSchedule, now: i64) -> StoreResult<Schedule> {
        self.write("create_schedule", move |tx| {
            schedule_ops::create_schedule(tx, schedule, now)
        })
        .await
    }

    async fn list_schedules(&self) -> StoreResult<Vec<Schedule>> {
        self.read(|c| schedule_ops::list_schedules(c)).await
    }

    async fn get_schedule(&self, id: ScheduleId) -> StoreResult<Schedule> {
        self.read(move |c| schedule_ops::get_schedule(c, id)).await
    }

    async fn update_schedule(
        &self,
        id: ScheduleId,
        patch: SchedulePatch,
        now: i64,
    ) -> StoreResult<Schedule> {
        self.write("update_schedule", move |tx| {
            schedule_ops::update_schedule(tx, id, patch, now)
        })
        .await
    }

    async fn delete_schedule(&self, id: ScheduleId) -> StoreResult<Schedule> {
        self.write("delete_schedule", move |tx| {
            schedule_ops::delete_schedule(tx, id)
        })
        .await
    }

    async fn schedule_fires(&self, id: ScheduleId, limit: u32) -> StoreResult<Vec<Fire>> {
        self.read(move |c| schedule_ops::schedule_fires(c, id, limit))
            .await
    }

    async fn next_schedule_due(&self) -> StoreResult<Option<i64>> {
        self.read(|c| schedule_ops::next_schedule_due(c)).await
    }

    async fn due_schedules(&self, now: i64, limit: u32) -> StoreResult<Vec<Schedule>> {
        self.read(move |c| schedule_ops::due_schedules(c, now, limit))
            .await
    }

    async fn fire_schedule(
        &self,
        id: ScheduleId,
        expected_generation: u64,
        expected_next_fire_at: i64,
        fires: Vec<(i64, Vec<Delivery>)>,
        next_fire_at: Option<i64>,
        now: i64,
    ) -> StoreResult<FireOutcome> {
        self.write("fire_schedule", move |tx| {
            schedule_ops::fire_schedule(
                tx,
                id,
                expected_generation,
                expected_next_fire_at,
                fires,
                next_fire_at,
                now,
            )
        })
        .await
    }

    async fn run_schedule_now(
        &self,
        id: ScheduleId,
        fire_at: i64,
        deliveries: Vec<Delivery>,
        now: i64,
    ) -> StoreResult<(Fire, bool)> {
        self.write("run_schedule_now", move |tx| {
            schedule_ops::run_schedule_now(tx, id, fire_at, deliveries, now)
        })
        .await
    }

    async fn claim(&self, queue: &str, max: u32, lease_ms: u64) -> StoreResult<ClaimBatch> {
        let queue = queue.to_owned();
        self.write("claim", move |tx| {
            write_ops::claim(tx, &queue, max, lease_ms)
        })
        .await
    }

    async fn settle(&self, settles: Vec<Settle>) -> StoreResult<Vec<SettleResult>> {
        if settles.is_empty() {
            return Ok(Vec::new());
        }
        self.write("settle", move |tx| write_ops::settle(tx, settles))
            .await
    }

    async fn extend_lease(&self, id: MessageId, attempt: u32, lease_ms: u64) -> StoreResult<bool> {
        self.write("extend_lease", move |tx| {
            write_ops::extend_lease(tx, id, attempt, lease_ms)
        })
        .await
    }

    async fn get_message(&self, id: MessageId) -> StoreResult<Message> {
        self.read(move |c| read_ops::get_message(c, id)).await
    }

    async fn trace(&self, id: MessageId) -> StoreResult<(String, Vec<TraceEntry>)> {
        self.read(move |c| read_ops::trace(c, id)).await
    }

    async fn list_messages(
        &self,
        queue: &str,
        filter: &MessageFilter,
    ) -> StoreResult<Page<Message>> {
        let (queue, filter) = (queue.to_owned(), filter.clone());
        self.read(move |c| read_ops::list_messages(c, &queue, &filter))
            .await
    }

    async fn cancel(&self, id: MessageId) -> StoreResult<MessageState> {
        self.write("cancel", move |tx| write_ops::cancel(tx, id))
            .await
    }

    async fn requeue(&self, id: MessageId) -> StoreResult<()> {
        self.write("requeue", move |tx| write_ops::requeue(tx, id))
            .await
    }

    async fn list_dead(&self, filter: &DeadFilter) -> StoreResult<Page<Message>> {
        let filter = filter.clone();
        self.read(move |c| read_ops::list_dead(c, &filter)).await
    }

    async fn replay_dead(&self, id: MessageId) -> StoreResult<()> {
        self.write("replay_dead", move |tx| write_ops::replay_dead(tx, id))
            .await
    }

    async fn mark_reviewed(&self, id: MessageId) -> StoreResult<()> {
        self.write("mark_reviewed", move |tx| write_ops::mark_reviewed(tx, id))
            .await
    }

    async fn purge_dead(&self, id: MessageId) -> StoreResult<()> {
        self.write("purge_dead", move |tx| write_ops::purge_dead(tx, id))
            .await
    }

    async fn replay_dead_matching(&self, filter: &DeadFilter) -> StoreResult<Vec<MessageId>> {
        let filter = filter.clone();
        self.write("replay_dead_matching", move |tx| {
            write_ops::replay_dead_matching(tx, &filter)
        })
        .await
    }

    async fn purge_dead_matching(&self, filter: &DeadFilter) -> StoreResult<u64> {
        let filter = filter.clone();
        self.write("purge_dead_matching", move |tx| {
            write_ops::purge_dead_matching(tx, &filter)
        })
        .await
    }

    async fn put_plugin(
        &self,
        name: &str,
        world: &str,
        sha256: &str,
        wasm: Vec<u8>,
        actor: Option<&str>,
    ) -> StoreResult<Deployed> {
        let (name, world, sha256) = (name.to_owned(), world.to_owned(), sha256.to_owned());
        let actor = actor.map(str::to_owned);
        // Checked before any piece is written, so a refused upload leaves nothing behind.
        crate::plugin_rules::validate_upload(&name, &world, &sha256, &wasm)?;
        let wasm = Arc::new(wasm);
        // Two tries: the pieces of the first may be deleted with a plugin that shared them.
        let mut tries = 2;
        loop {
            tries -= 1;
            if plugin_chunks::chunked(wasm.len()) {
                self.put_plugin_chunks(&sha256, &wasm).await?;
            }
            let (name, world, sha256, actor) =
                (name.clone(), world.clone(), sha256.clone(), actor.clone());
            let bytes = wasm.clone();
            let result = self
                .write("put_plugin", move |tx| {
                    write_ops::put_plugin(tx, &name, &world, &sha256, &bytes, actor.as_deref())
                })
                .await;
            match result {
                Err(StoreError::UploadInterrupted(_)) if tries > 0 => continue,
                other => return other,
            }
        }
    }

    async fn active_plugin(&self, name: &str) -> StoreResult<(PluginVersion, Vec<u8>)> {
        let name = name.to_owned();
        self.read(move |c| read_ops::active_plugin(c, &name)).await
    }

    async fn list_plugins(&self) -> StoreResult<Vec<PluginVersion>> {
        self.read(|c| read_ops::list_plugins(c)).await
    }

    async fn rollback_plugin(&self, name: &str, actor: Option<&str>) -> StoreResult<PluginVersion> {
        let (name, actor) = (name.to_owned(), actor.map(str::to_owned));
        self.write("rollback_plugin", move |tx| {
            write_ops::rollback_plugin(tx, &name, actor.as_deref())
        })
        .await
    }

    async fn activate_plugin(
        &self,
        name: &str,
        version: u32,
        actor: Option<&str>,
    ) -> StoreResult<PluginVersion> {
        let (name, actor) = (name.to_owned(), actor.map(str::to_owned));
        self.write("activate_plugin", move |tx| {
            write_ops::activate_plugin(tx, &name, version, actor.as_deref())
        })
        .await
    }

    async fn plugin_history(&self, name: &str) -> StoreResult<Vec<PluginActivation>> {
        let name = name.to_owned();
        self.read(move |c| read_ops::plugin_history(c, &name)).await
    }

    async fn delete_plugin(&self, name: &str) -> StoreResult<PluginDeleted> {
        let name = name.to_owned();
        self.write("delete_plugin", move |tx| {
            write_ops::delete_plugin(tx, &name)
        })
        .await
    }

    async fn kv_get(&self, plugin: &str, key: &str) -> StoreResult<Option<Vec<u8>>> {
        let (plugin, key) = (plugin.to_owned(), key.to_owned());
        self.read(move |c| read_ops::kv_get(c, &plugin, &key)).await
    }

    async fn kv_set(&self, plugin: &str, key: &str, value: Vec<u8>) -> StoreResult<()> {
        // Rejected before it queues behind other writes, and before a 64 KiB+ value is moved.
        write_ops::validate_kv(plugin, key, Some(&value))?;
        let (plugin, key) = (plugin.to_owned(), key.to_owned());
        self.write("kv_set", move |tx| {
            write_ops::kv_set(tx, &plugin, &key, value)
        })
        .await
    }

    async fn kv_set_within(
        &self,
        plugin: &str,
        key: &str,
        value: Vec<u8>,
        max_keys: u64,
        max_bytes: u64,
    ) -> StoreResult<()> {
        write_ops::validate_kv(plugin, key, Some(&value))?;
        let (plugin, key) = (plugin.to_owned(), key.to_owned());
        self.write("kv_set", move |tx| {
            write_ops::kv_check_quota(tx, &plugin, &key, value.len(), max_keys, max_bytes)?;
            write_ops::kv_set(tx, &plugin, &key, value)
        })
        .await
    }

    async fn kv_delete(&self, plugin: &str, key: &str) -> StoreResult<()> {
        let (plugin, key) = (plugin.to_owned(), key.to_owned());
        self.write("kv_delete", move |tx| {
            write_ops::kv_delete(tx, &plugin, &key)
        })
        .await
    }

    async fn plugin_settings(&self, plugin: &str) -> StoreResult<PluginSettings> {
        let plugin = plugin.to_owned();
        self.read(move |c| plugin_config_ops::read_settings(c, &plugin))
            .await
    }

    async fn update_plugin_config(
        &self,
        plugin: &str,
        changes: Vec<ConfigChange>,
    ) -> StoreResult<PluginSettings> {
        let plugin = plugin.to_owned();
        self.write("update_plugin_config", move |tx| {
            plugin_config_ops::update_config(tx, &plugin, &changes)
        })
        .await
    }

    async fn put_plugin_grants(
        &self,
        plugin: &str,
        grants: PluginGrants,
    ) -> StoreResult<PluginSettings> {
        let plugin = plugin.to_owned();
        self.write("put_plugin_grants", move |tx| {
            plugin_config_ops::put_grants(tx, &plugin, &grants)
        })
        .await
    }

    async fn maintain(&self) -> StoreResult<Maintenance> {
        self.write("maintain", write_ops::maintain).await
    }

    async fn ping(&self) -> StoreResult<()> {
        if !self.inner.writer.is_running() {
            return Err(StoreError::Closed);
        }
        self.read(|c| read_ops::ping(c)).await
    }

    async fn check_integrity(
        &self,
        level: CheckLevel,
        budget: Option<Duration>,
    ) -> StoreResult<CheckReport> {
        let report = self
            .read(move |c| integrity::check(c, level, budget))
            .await?;
        log_check(&self.inner.path, &report);
        *self
            .inner
            .last_check
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(report.clone());
        Ok(report)
    }

    fn last_check(&self) -> Option<CheckReport> {
        self.inner
            .last_check
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    async fn backup(&self, target: PathBuf) -> StoreResult<BackupReport> {
        let db = self.inner.path.clone();
        let report = tokio::task::spawn_blocking(move || backup::backup(&db, &target))
            .await
            .map_err(|e| StoreError::Database(format!("backup task failed: {e}")))??;
        let at = report.taken_at_ms;
        *self
            .inner
            .last_backup_at_ms
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(at);
        // Remembered across restarts so an alert on the backup's age does not fire because the
        // server restarted; the backup itself is complete whether or not this write succeeds.
        let remembered = self
            .write("remember_backup", move |tx| {
                tx.conn
                    .execute(
                        "INSERT INTO spool_meta (key, value) VALUES (?1, ?2) \
                         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                        rusqlite::params![LAST_BACKUP_KEY, at.to_string()],
                    )
                    .ctx("remember the last backup")
            })
            .await;
        if let Err(e) = remembered {
            tracing::warn!(error = %e, "cannot record the backup's time in the database");
        }
        Ok(report)
    }

    async fn db_stats(&self) -> StoreResult<DbStats> {
        let (page_count, free_pages, page_size) = self
            .read(|c| {
                let pragma = |name: &str| -> StoreResult<u64> {
                    let v: i64 = c
                        .pragma_query_value(None, name, |r| r.get(0))
                        .ctx("read database size")?;
                    Ok(u64::try_from(v).unwrap_or(0))
                };
                Ok((
                    pragma("page_count")?,
                    pragma("freelist_count")?,
                    pragma("page_size")?,
                ))
            })
            .await?;
        Ok(DbStats {
            size_bytes: page_count * page_size,
            free_pages,
            page_size,
            wal_bytes: checkpoint::wal_bytes(&self.inner.path),
            last_backup_at_ms: *self
                .inner
                .last_backup_at_ms
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        })
    }

    async fn checkpoint(&self, truncate_over: u64) -> StoreResult<Checkpoint> {
        let db = self.inner.path.clone();
        tokio::task::spawn_blocking(move || checkpoint::checkpoint(&db, truncate_over))
            .await
            .map_err(|e| StoreError::Database(format!("checkpoint task failed: {e}")))?
    }

    async fn optimize(&self) -> StoreResult<()> {
        self.write("optimize", |tx| {
            tx.conn.execute_batch("PRAGMA optimize").ctx("optimize")
        })
        .await
    }

    async fn write_failure(&self) -> Option<StorageFailure> {
        self.inner.health.current()?;
        // The probe's outcome updates the health either way; its own error says nothing more.
        let _ = self.write("write_probe", write_ops::write_probe).await;
        self.inner.health.current()
    }

    fn signals(&self) -> &Signals {
        &self.inner.signals
    }
}

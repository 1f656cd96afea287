//! The writer thread: the one connection that writes, with group commit.
//!
//! Every write is a [`Job`] sent over a channel. The thread takes whatever is pending (up to
//! [`MAX_BATCH`]), runs each job inside its own SAVEPOINT of one `BEGIN IMMEDIATE` transaction,
//! commits once, and only then answers the callers and wakes the queues that got work. A job that
//! fails rolls back to its savepoint, so it cannot take its neighbours in the batch down with it;
//! a failed commit fails every job in the batch, since none of them is durable.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::ids::IdMark;
use super::rows::{Ctx, classify};
use crate::{Signals, StorageFailure, StoreError, StoreOptions, StoreResult};
use spool_model::now_ms;

/// Most jobs committed in one transaction; bounds how long the first caller of a burst waits.
const MAX_BATCH: usize = 2_048;

/// What a job sees while it runs: the connection inside the batch transaction, the store's
/// options, and a place to name queues that should be woken if the batch commits.
pub(super) struct Tx<'a> {
    pub conn: &'a Connection,
    pub opts: &'a StoreOptions,
    wake: &'a mut Vec<String>,
}

impl Tx<'_> {
    /// Wakes `queue`'s worker after the commit (never before: it would find nothing new).
    pub fn wake(&mut self, queue: &str) {
        if !self.wake.iter().any(|q| q == queue) {
            self.wake.push(queue.to_owned());
        }
    }
}

/// How a job's operation went, as far as the writer cares.
pub(super) enum JobStatus {
    Ok,
    /// Failed for its own reasons (not found, invalid, ...): roll back to its savepoint.
    Failed,
    /// Failed because the database could not be written (full disk, I/O error).
    Storage(StorageFailure),
}

/// One write operation plus the way back to its caller.
pub(super) trait Job: Send {
    /// Runs inside the batch transaction (on failure the writer rolls back to the job's
    /// savepoint).
    fn run(&mut self, tx: &mut Tx<'_>) -> JobStatus;
    /// Answers the caller; `commit_error` is set when the batch as a whole was not committed.
    fn finish(self: Box<Self>, commit_error: Option<&StoreError>);
}

/// A closure-backed job returning `T` to an awaiting caller.
pub(super) struct OpJob<T, F> {
    op: &'static str,
    f: Option<F>,
    result: Option<StoreResult<T>>,
    reply: oneshot::Sender<StoreResult<T>>,
}

impl<T, F> OpJob<T, F>
where
    T: Send + 'static,
    F: FnOnce(&mut Tx<'_>) -> StoreResult<T> + Send + 'static,
{
    pub fn new(op: &'static str, f: F) -> (Box<Self>, oneshot::Receiver<StoreResult<T>>) {
        let (reply, rx) = oneshot::channel();
        let job = Box::new(OpJob {
            op,
            f: Some(f),
            result: None,
            reply,
        });
        (job, rx)
    }
}

impl<T, F> Job for OpJob<T, F>
where
    T: Send + 'static,
    F: FnOnce(&mut Tx<'_>) -> StoreResult<T> + Send + 'static,
{
    fn run(&mut self, tx: &mut Tx<'_>) -> JobStatus {
        let Some(f) = self.f.take() else {
            return JobStatus::Failed;
        };
        let result = f(tx);
        let status = match &result {
            Ok(_) => JobStatus::Ok,
            Err(e) => StorageFailure::of(e).map_or(JobStatus::Failed, JobStatus::Storage),
        };
        self.result = Some(result);
        status
    }

    fn finish(self: Box<Self>, commit_error: Option<&StoreError>) {
        let result = match (self.result, commit_error) {
            // The operation's own error explains more than the commit failure it led into.
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(_)), Some(e)) | (None, Some(e)) => Err(uncommitted(self.op, e)),
            (Some(Ok(v)), None) => Ok(v),
            (None, None) => Err(StoreError::Database(format!(
                "{}: the operation failed unexpectedly; see the log",
                self.op
            ))),
        };
        // The caller may have given up waiting; its result is durable either way.
        let _ = self.reply.send(result);
    }
}

/// What the caller of `op` gets when its batch did not commit: the same kind of error, so a
/// full disk is a full disk to every job of the batch.
fn uncommitted(op: &str, e: &StoreError) -> StoreError {
    match e {
        StoreError::StorageFull(m) => StoreError::StorageFull(format!("{op}: {m}")),
        StoreError::StorageIo(m) => StoreError::StorageIo(format!("{op}: {m}")),
        other => StoreError::Database(format!("{op}: the transaction was not committed: {other}")),
    }
}

/// Whether writes succeed, as the writer last saw them; `/readyz` reads it. A batch that fails
/// for lack of space (or an I/O error) sets it; a batch that commits changes with no such
/// failure clears it.
#[derive(Debug, Default)]
pub(super) struct WriteHealth {
    failure: Mutex<Option<StorageFailure>>,
}

impl WriteHealth {
    pub fn current(&self) -> Option<StorageFailure> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn failed(&self, f: StorageFailure) {
        let mut slot = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            tracing::error!(full = f.full, error = %f.message,
                "database writes are failing; answering 503 and not ready until they succeed");
        }
        // Keep the first time it failed, so `since` says how long the outage lasts.
        let since_ms = slot.as_ref().map_or(f.since_ms, |old| old.since_ms);
        *slot = Some(StorageFailure { since_ms, ..f });
    }

    fn succeeded(&self) {
        let mut slot = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = slot.take() {
            tracing::info!(
                down_ms = now_ms() - old.since_ms,
                "database writes succeed again"
            );
        }
    }
}

/// The handle to the writer thread. Dropping it closes the channel; the thread finishes the
/// batch it is in, closes its connection and exits, and `drop` waits for that.
pub(super) struct Writer {
    tx: Option<Sender<Box<dyn Job>>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    pub fn spawn(
        conn: Connection,
        opts: StoreOptions,
        signals: Arc<Signals>,
        health: Arc<WriteHealth>,
        ids: IdMark,
    ) -> StoreResult<Writer> {
        let (tx, rx) = mpsc::channel::<Box<dyn Job>>();
        let thread = std::thread::Builder::new()
            .name("spool-sqlite-writer".into())
            .spawn(move || run(conn, rx, opts, signals, health, ids))
            .map_err(|e| StoreError::Database(format!("cannot start the writer thread: {e}")))?;
        Ok(Writer {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    pub fn submit(&self, job: Box<dyn Job>) -> StoreResult<()> {
        match &self.tx {
            Some(tx) => tx.send(job).map_err(|_| StoreError::Closed),
            None => Err(StoreError::Closed),
        }
    }

    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.tx.take();
        if let Some(thread) = self.thread.take() {
            // A job never owns a store handle, so this cannot run on the writer thread itself;
            // the check keeps a future mistake from turning into a self-join deadlock.
            if thread.thread().id() != std::thread::current().id() && thread.join().is_err() {
                tracing::error!("sqlite writer thread panicked");
            }
        }
    }
}

fn run(
    conn: Connection,
    rx: Receiver<Box<dyn Job>>,
    opts: StoreOptions,
    signals: Arc<Signals>,
    health: Arc<WriteHealth>,
    mut ids: IdMark,
) {
    tracing::debug!("sqlite writer started");
    let mut wake = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut jobs = Vec::with_capacity(16);
        jobs.push(first);
        while jobs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let shared = Shared {
            opts: &opts,
            signals: &signals,
            health: &health,
        };
        run_batch(&conn, &shared, &mut ids, jobs, &mut wake);
    }
    // Closing the connection here (not in some later drop) checkpoints the WAL before `drop` of
    // the store returns, so a reopen right after sees a tidy file.
    if let Err((_, e)) = conn.close() {
        tracing::warn!(error = %e, "closing the sqlite writer connection failed");
    }
    tracing::debug!("sqlite writer stopped");
}

/// What every batch of the writer thread reads.
struct Shared<'a> {
    opts: &'a StoreOptions,
    signals: &'a Signals,
    health: &'a WriteHealth,
}

fn run_batch(
    conn: &Connection,
    shared: &Shared<'_>,
    ids: &mut IdMark,
    mut jobs: Vec<Box<dyn Job>>,
    wake: &mut Vec<String>,
) {
    let Shared {
        opts,
        signals,
        health,
    } = *shared;
    wake.clear();
    if let Err(e) = conn
        .prepare_cached("BEGIN IMMEDIATE")
        .and_then(|mut s| s.execute([]))
    {
        let err = classify(format!("begin transaction: {e}"), &e);
        tracing::error!(error = %e, jobs = jobs.len(), "sqlite writer cannot begin a transaction");
        if let Some(f) = StorageFailure::of(&err) {
            health.failed(f);
        }
        for job in jobs {
            job.finish(Some(&err));
        }
        return;
    }

    let changes_before = conn.total_changes();
    let mut storage_failure: Option<StorageFailure> = None;
    let mut batch_error: Option<StoreError> = None;
    for job in jobs.iter_mut() {
        if let Err(e) = savepoint(conn, "SAVEPOINT job") {
            batch_error = Some(e);
            break;
        }
        let wake_mark = wake.len();
        let mut tx = Tx {
            conn,
            opts,
            wake: &mut *wake,
        };
        let status = catch_unwind(AssertUnwindSafe(|| job.run(&mut tx))).unwrap_or_else(|_| {
            tracing::error!("a sqlite write operation panicked; rolled back");
            JobStatus::Failed
        });
        let end = match status {
            JobStatus::Ok => savepoint(conn, "RELEASE job"),
            failed => {
                if let JobStatus::Storage(f) = failed {
                    storage_failure.get_or_insert(f);
                }
                wake.truncate(wake_mark);
                savepoint(conn, "ROLLBACK TO job").and_then(|()| savepoint(conn, "RELEASE job"))
            }
        };
        if let Err(e) = end {
            batch_error = Some(e);
            break;
        }
    }

    // No caller learns an id beyond the durable mark (see `ids`).
    if batch_error.is_none()
        && let Err(e) = ids.before_commit(conn)
    {
        batch_error = Some(e);
    }
    if batch_error.is_none()
        && let Err(e) = conn
            .prepare_cached("COMMIT")
            .and_then(|mut s| s.execute([]))
    {
        batch_error = Some(classify(format!("commit: {e}"), &e));
    }
    if let Some(err) = &batch_error {
        tracing::error!(error = %err, jobs = jobs.len(), "sqlite batch failed; rolling back");
        // A failed COMMIT (a full disk, say) may have rolled the transaction back already;
        // a ROLLBACK then only fails with "no transaction is active".
        if !conn.is_autocommit()
            && let Err(e) = conn.execute_batch("ROLLBACK")
        {
            tracing::error!(error = %e, "sqlite rollback failed");
        }
        if let Some(f) = StorageFailure::of(err).or(storage_failure) {
            health.failed(f);
        }
        for job in jobs {
            job.finish(Some(err));
        }
        return;
    }
    match storage_failure {
        Some(f) => health.failed(f),
        // Only a batch that wrote something shows that writes work: one that changed nothing
        // commits even on a full disk.
        None if conn.total_changes() > changes_before => health.succeeded(),
        None => {}
    }

    for queue in wake.iter() {
        signals.notify(queue);
    }
    for job in jobs {
        job.finish(None);
    }
}

fn savepoint(conn: &Connection, sql: &str) -> StoreResult<()> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.execute([]))
        .map(|_| ())
        .ctx(sql)
}

//! Keeping the write-ahead log bounded, and the database's size figures.
//!
//! Checkpoints never run on the writer thread: SQLite's automatic checkpoint (every 1000 pages)
//! would copy and sync the log inside the commit that crosses the mark, and every write queued
//! behind it (any queue's enqueue) would wait those tens of milliseconds. The writer's
//! connection has `wal_autocheckpoint = 0` instead, and a [`Checkpointer`] thread of its own
//! runs a `PASSIVE` checkpoint every [`CHECKPOINT_EVERY`], beside the writer, which appends to
//! the log meanwhile.
//!
//! A checkpoint copies the log back into the database
//! but can only restart the log from its beginning when no reader still uses its frames; under
//! steady reads and writes that moment may not come, and the log file grows without bound
//! (SQLite's "checkpoint starvation"). The maintenance loop therefore runs a `PASSIVE`
//! checkpoint every round (it waits for nobody), and when the log file is still over the limit
//! a `TRUNCATE` checkpoint, which waits (at most [`TRUNCATE_WAIT`]) for readers to move to the
//! newest snapshot, holding new writes back meanwhile, then truncates the file to zero bytes.

use std::path::Path;
use std::time::Duration;

use rusqlite::Connection;

use super::rows::Ctx;
use super::{schema, wal};
use crate::{Checkpoint, StoreResult};

/// How long a truncating checkpoint may wait for readers and the writer. Writes wait behind it
/// at most this long, once in a while, rather than letting the log grow.
const TRUNCATE_WAIT: Duration = Duration::from_secs(1);

/// How often the checkpointer copies new log frames into the database. Each round with nothing
/// new costs microseconds; at 100 ms the log holds at most a tenth of a second of writes more
/// than it would with automatic checkpoints.
pub(super) const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);

/// The thread that checkpoints the log beside the writer; stops when dropped.
pub(super) struct Checkpointer {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    pub(super) fn spawn(db: &Path) -> StoreResult<Checkpointer> {
        // PASSIVE never waits for readers or the writer, so no busy timeout is needed.
        let conn = schema::open_maintenance(db, Duration::ZERO)?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let db = db.to_owned();
        let thread = std::thread::Builder::new()
            .name("spool-sqlite-checkpoint".into())
            .spawn(move || {
                let mut failing = false;
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(CHECKPOINT_EVERY)
                {
                    match run(&conn, "PASSIVE") {
                        Ok(_) if failing => {
                            failing = false;
                            tracing::info!(db = %db.display(), "checkpoints work again");
                        }
                        Ok(_) => {}
                        // Said once per failing stretch (a full disk fails every round); the
                        // log grows meanwhile and the maintenance loop truncates it.
                        Err(e) if !failing => {
                            failing = true;
                            tracing::warn!(db = %db.display(), error = %e,
                                "background checkpoint failed; retrying every 100 ms");
                        }
                        Err(_) => {}
                    }
                }
            })
            .map_err(|e| {
                crate::StoreError::Database(format!("cannot start the checkpoint thread: {e}"))
            })?;
        Ok(Checkpointer {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.stop.take();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("sqlite checkpoint thread panicked");
        }
    }
}

/// Size of the log file beside `db` (0 when there is none).
pub(super) fn wal_bytes(db: &Path) -> u64 {
    std::fs::metadata(wal::wal_path(db)).map_or(0, |m| m.len())
}

/// Checkpoints the log of `db` (see the module docs). Blocking.
pub(super) fn checkpoint(db: &Path, truncate_over: u64) -> StoreResult<Checkpoint> {
    let conn = schema::open_maintenance(db, TRUNCATE_WAIT)?;
    let (busy, log_frames, checkpointed_frames) = run(&conn, "PASSIVE")?;
    let mut done = Checkpoint {
        log_frames,
        checkpointed_frames,
        busy,
        truncated: false,
        wal_bytes: wal_bytes(db),
    };
    if done.wal_bytes > truncate_over {
        let (busy, log_frames, checkpointed_frames) = run(&conn, "TRUNCATE")?;
        done = Checkpoint {
            log_frames,
            checkpointed_frames,
            busy,
            truncated: !busy,
            wal_bytes: wal_bytes(db),
        };
        if busy {
            tracing::warn!(db = %db.display(), wal_bytes = done.wal_bytes, limit = truncate_over,
                "the write-ahead log is over its limit and readers kept it from being \
                 truncated; trying again next maintenance round");
        } else {
            tracing::info!(db = %db.display(), frames = log_frames,
                "write-ahead log over its limit: checkpointed and truncated");
        }
    }
    Ok(done)
}

/// `PRAGMA wal_checkpoint(mode)`: (busy, frames in the log, frames checkpointed).
fn run(conn: &Connection, mode: &str) -> StoreResult<(bool, u64, u64)> {
    let (busy, log, done): (i64, i64, i64) = conn
        .query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .ctx("checkpoint the write-ahead log")?;
    // -1: the database is not in WAL mode (never for a store, which refuses to open otherwise).
    let frames = |n: i64| u64::try_from(n).unwrap_or(0);
    Ok((busy != 0, frames(log), frames(done)))
}

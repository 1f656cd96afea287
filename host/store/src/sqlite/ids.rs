//! The message id high-water mark, `<db>.ids`: no id is ever handed out twice.
//!
//! Message ids come from SQLite's AUTOINCREMENT counter (`sqlite_sequence`), which lives in
//! the database and so goes back whenever committed transactions are lost: a power cut with
//! `synchronous = NORMAL`, or a damaged write-ahead log started with `--accept-wal-loss`. A
//! producer may hold an id from before; handing it out again would make it name a different
//! message. So the writer keeps a mark beside the database that is always at or above every id
//! it has let a caller see: before a batch commits with ids beyond the mark, it moves the mark
//! one block further and syncs the file (once per [`BLOCK`] ids, not per message). At start the
//! counter is moved up to the mark, so ids continue above anything handed out before — at the
//! cost of a gap of up to one block after each restart.

use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

use super::rows::Ctx;
use crate::{StoreError, StoreResult};

/// Ids reserved per sync of the mark file.
pub(super) const BLOCK: i64 = 65_536;

/// Width of the mark's text: fixed, so every write overwrites the whole value in place.
const WIDTH: usize = 20;

/// The mark file of `db`.
pub(crate) fn mark_path(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push(".ids");
    PathBuf::from(s)
}

/// The reserved ids and the file that makes the reservation durable.
pub(super) struct IdMark {
    path: PathBuf,
    file: File,
    /// Every id up to this one may be handed out without touching the file.
    reserved: i64,
}

impl IdMark {
    /// Reads (or creates) the mark of `db` and moves the message id counter of `conn` up to it.
    pub fn open(db: &Path, conn: &Connection) -> StoreResult<IdMark> {
        let path = mark_path(db);
        let seq = sequence(conn)?;
        let mark = read_mark(&path)?;
        if let Some(mark) = mark
            && mark > seq
        {
            set_sequence(conn, mark)?;
            tracing::info!(
                sequence = seq,
                mark,
                "message ids continue above the id mark"
            );
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| io_error(&path, e))?;
        let mut ids = IdMark {
            path,
            file,
            reserved: 0,
        };
        ids.reserve(seq.max(mark.unwrap_or(0)).saturating_add(BLOCK))?;
        if mark.is_none()
            && let Some(dir) = ids.path.parent().filter(|d| !d.as_os_str().is_empty())
        {
            // A new file's name must survive a power cut too.
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io_error(dir, e))?;
        }
        Ok(ids)
    }

    /// Called inside a batch just before its commit: if the batch took ids past the
    /// reservation, reserves the next block durably first.
    pub fn before_commit(&mut self, conn: &Connection) -> StoreResult<()> {
        let seq = sequence(conn)?;
        if seq > self.reserved {
            self.reserve(seq.saturating_add(BLOCK))?;
        }
        Ok(())
    }

    fn reserve(&mut self, upto: i64) -> StoreResult<()> {
        let text = format!("{upto:0WIDTH$}\n");
        self.file
            .write_all_at(text.as_bytes(), 0)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| io_error(&self.path, e))?;
        self.reserved = upto;
        Ok(())
    }
}

/// The highest message id ever assigned, as the database remembers it.
pub(crate) fn sequence(conn: &Connection) -> StoreResult<i64> {
    Ok(conn
        .prepare_cached("SELECT seq FROM sqlite_sequence WHERE name = 'messages'")
        .ctx("prepare id sequence")?
        .query_row([], |r| r.get::<_, i64>(0))
        .optional()
        .ctx("read id sequence")?
        .unwrap_or(0))
}

fn set_sequence(conn: &Connection, seq: i64) -> StoreResult<()> {
    let updated = conn
        .execute(
            "UPDATE sqlite_sequence SET seq = ?1 WHERE name = 'messages'",
            params![seq],
        )
        .ctx("advance id sequence")?;
    if updated == 0 {
        conn.execute(
            "INSERT INTO sqlite_sequence (name, seq) VALUES ('messages', ?1)",
            params![seq],
        )
        .ctx("advance id sequence")?;
    }
    Ok(())
}

/// The mark in the file, `None` when there is no file yet.
pub(crate) fn read_mark(path: &Path) -> StoreResult<Option<i64>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(path, e)),
    };
    if text.trim().is_empty() {
        // Created, but the first write never reached the disk.
        return Ok(None);
    }
    text.trim().parse::<i64>().map(Some).map_err(|_| {
        StoreError::Damaged(format!(
            "the id mark {} is damaged (it holds {:?}, not a number); it keeps message ids from \
             being handed out twice. Restore it from a backup, or delete it to rebuild it from \
             the database if no committed transaction was lost",
            path.display(),
            text.chars().take(40).collect::<String>()
        ))
    })
}

fn io_error(path: &Path, e: std::io::Error) -> StoreError {
    let message = format!("id mark {}: {e}", path.display());
    if e.kind() == ErrorKind::StorageFull || e.kind() == ErrorKind::QuotaExceeded {
        StoreError::StorageFull(message)
    } else {
        StoreError::StorageIo(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(dir: &Path) -> Connection {
        let conn = Connection::open(dir.join("x.db")).unwrap();
        conn.execute_batch("CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, v)")
            .unwrap();
        conn
    }

    #[test]
    fn the_counter_never_goes_back_below_the_mark() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db");
        let conn = db(dir.path());
        let mut ids = IdMark::open(&path, &conn).unwrap();
        assert_eq!(read_mark(&mark_path(&path)).unwrap(), Some(BLOCK));
        // Ids beyond the reservation move the mark before the commit.
        conn.execute("INSERT INTO messages (id, v) VALUES (?1, 0)", [BLOCK + 5])
            .unwrap();
        ids.before_commit(&conn).unwrap();
        assert_eq!(read_mark(&mark_path(&path)).unwrap(), Some(2 * BLOCK + 5));
        // The database loses those rows (and its counter with them) ...
        conn.execute_batch("DELETE FROM messages; UPDATE sqlite_sequence SET seq = 3")
            .unwrap();
        drop(ids);
        // ... and the next start continues above everything handed out.
        let _ids = IdMark::open(&path, &conn).unwrap();
        conn.execute("INSERT INTO messages (v) VALUES (1)", [])
            .unwrap();
        assert_eq!(conn.last_insert_rowid(), 2 * BLOCK + 6);
    }

    #[test]
    fn a_damaged_mark_refuses_to_guess() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db");
        let conn = db(dir.path());
        std::fs::write(mark_path(&path), "12x").unwrap();
        let err = IdMark::open(&path, &conn).err().unwrap();
        assert!(
            matches!(err, StoreError::Damaged(ref m) if m.contains("delete it")),
            "{err}"
        );
    }
}

//! A small pool of read connections.
//!
//! In WAL mode readers never block the writer or each other, so reads run on their own
//! connections in tokio's blocking pool. Idle connections are kept (with their statement caches)
//! up to [`MAX_IDLE`]; a burst beyond that opens extra connections and closes them afterwards.

use std::path::PathBuf;
use std::sync::Mutex;

use rusqlite::Connection;

use super::schema;
use crate::StoreResult;

const MAX_IDLE: usize = 4;

pub(super) struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl ReadPool {
    /// Opens one connection at once so a bad path or permission fails `open`, not the first read.
    pub fn new(path: PathBuf) -> StoreResult<ReadPool> {
        let first = schema::open_reader(&path)?;
        Ok(ReadPool {
            path,
            idle: Mutex::new(vec![first]),
        })
    }

    /// Runs `f` on a pooled connection. Blocking: call it from `spawn_blocking`.
    pub fn with<T>(&self, f: impl FnOnce(&mut Connection) -> StoreResult<T>) -> StoreResult<T> {
        let pooled = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut conn = match pooled {
            Some(c) => c,
            None => schema::open_reader(&self.path)?,
        };
        let result = f(&mut conn);
        // A connection left inside a transaction (only possible after a bug) is not reused.
        if conn.is_autocommit() {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < MAX_IDLE {
                idle.push(conn);
            }
        }
        result
    }
}

//! The floor Spool is compared with: raw SQLite on a file with the store's settings doing the
//! least a queue must do. A table of (id, state, payload); inserts; and claims that take the
//! 100 oldest rows and delete them, one transaction per batch. No leases, attempts, counters,
//! indexes beyond the primary key, or async hand-offs.
//!
//! Claim+delete is an at-most-once queue: a crash between the delete and the work loses the
//! message. The least an at-least-once queue must do is two writes per message, so the
//! baseline also measures that: mark 100 rows leased in one transaction, then delete them
//! (the ack) in the next.

use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use rusqlite::{Connection, params};
use tokio_util::sync::CancellationToken;

use super::args::SyncMode;
use super::fixture::payload;

/// Rows per insert batch and per claim.
pub const BATCH: u64 = 100;

/// The pragmas of `store/sqlite/schema.rs::open_writer`.
fn open(path: &Path, sync: SyncMode) -> anyhow::Result<Connection> {
    let conn = Connection::open(path).with_context(|| format!("open {}", path.display()))?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    anyhow::ensure!(
        mode.eq_ignore_ascii_case("wal"),
        "baseline database cannot use WAL (journal_mode {mode})"
    );
    let sync = match sync {
        SyncMode::Normal => "NORMAL",
        SyncMode::Full => "FULL",
    };
    conn.pragma_update(None, "synchronous", sync)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.pragma_update(None, "cache_size", -32_768)?;
    conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS messages (
             id      INTEGER PRIMARY KEY AUTOINCREMENT,
             state   INTEGER NOT NULL,
             payload BLOB
         );",
    )?;
    Ok(conn)
}

/// The three baseline figures of one run, in messages per second.
#[derive(Debug, Clone, Copy, Default)]
pub struct Baseline {
    /// One row per transaction, one thread.
    pub insert_single: f64,
    /// 100 rows per transaction.
    pub insert_batch: f64,
    /// Select the 100 oldest and delete them, one transaction per batch.
    pub claim_delete: f64,
    /// Mark the 100 oldest leased in one transaction, delete them in the next.
    pub lease_ack: f64,
}

/// Runs the baseline in `dir` (blocking; call from `spawn_blocking`). `single` rows are inserted
/// one per transaction into one file, `n` in batches into another, then claimed and deleted.
pub fn run(
    dir: &Path,
    sync: SyncMode,
    single: u64,
    n: u64,
    cancel: &CancellationToken,
) -> anyhow::Result<Baseline> {
    std::fs::create_dir_all(dir)?;

    let conn = open(&dir.join("single.db"), sync)?;
    let started = Instant::now();
    let mut inserted = 0;
    {
        let mut stmt =
            conn.prepare_cached("INSERT INTO messages (state, payload) VALUES (1, ?1)")?;
        for i in 0..single {
            if cancel.is_cancelled() {
                break;
            }
            conn.execute_batch("BEGIN IMMEDIATE")?;
            stmt.execute(params![payload(i)])?;
            conn.execute_batch("COMMIT")?;
            inserted += 1;
        }
    }
    let insert_single = rate(inserted, started);
    drop(conn);

    let mut conn = open(&dir.join("batch.db"), sync)?;
    let started = Instant::now();
    let inserted = insert_batches(&mut conn, n, cancel)?;
    let insert_batch = rate(inserted, started);

    let started = Instant::now();
    let mut claimed = 0u64;
    let mut sink = 0usize;
    while !cancel.is_cancelled() {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let got = {
            let mut stmt = tx.prepare_cached(
                "DELETE FROM messages WHERE id IN \
                 (SELECT id FROM messages WHERE state = 1 ORDER BY id LIMIT ?1) \
                 RETURNING id, payload",
            )?;
            let mut rows = stmt.query(params![BATCH as i64])?;
            let mut got = 0u64;
            while let Some(row) = rows.next()? {
                let id: i64 = row.get(0)?;
                let body: Vec<u8> = row.get(1)?;
                sink = sink.wrapping_add(body.len()).wrapping_add(id as usize);
                got += 1;
            }
            got
        };
        tx.commit()?;
        if got == 0 {
            break;
        }
        claimed += got;
    }
    let claim_delete = rate(claimed, started);

    insert_batches(&mut conn, n, cancel)?;
    let started = Instant::now();
    let mut acked = 0u64;
    let mut leased = Vec::with_capacity(BATCH as usize);
    while !cancel.is_cancelled() {
        leased.clear();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        {
            let mut stmt = tx.prepare_cached(
                "UPDATE messages SET state = 2 WHERE id IN \
                 (SELECT id FROM messages WHERE state = 1 ORDER BY id LIMIT ?1) \
                 RETURNING id, payload",
            )?;
            let mut rows = stmt.query(params![BATCH as i64])?;
            while let Some(row) = rows.next()? {
                let id: i64 = row.get(0)?;
                let body: Vec<u8> = row.get(1)?;
                sink = sink.wrapping_add(body.len());
                leased.push(id);
            }
        }
        tx.commit()?;
        if leased.is_empty() {
            break;
        }
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        {
            let mut stmt = tx.prepare_cached("DELETE FROM messages WHERE id = ?1 AND state = 2")?;
            for id in &leased {
                stmt.execute(params![id])?;
            }
        }
        tx.commit()?;
        acked += leased.len() as u64;
    }
    std::hint::black_box(sink);
    let lease_ack = rate(acked, started);
    drop(conn);

    Ok(Baseline {
        insert_single,
        insert_batch,
        claim_delete,
        lease_ack,
    })
}

/// Inserts `n` rows, [`BATCH`] per transaction; returns how many went in before a cancel.
fn insert_batches(
    conn: &mut Connection,
    n: u64,
    cancel: &CancellationToken,
) -> anyhow::Result<u64> {
    let mut inserted = 0;
    while inserted < n && !cancel.is_cancelled() {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        {
            let mut stmt =
                tx.prepare_cached("INSERT INTO messages (state, payload) VALUES (1, ?1)")?;
            let end = (inserted + BATCH).min(n);
            for i in inserted..end {
                stmt.execute(params![payload(i)])?;
            }
            inserted = end;
        }
        tx.commit()?;
    }
    Ok(inserted)
}

fn rate(n: u64, since: Instant) -> f64 {
    n as f64 / since.elapsed().as_secs_f64().max(1e-9)
}

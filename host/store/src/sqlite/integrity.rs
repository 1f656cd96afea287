//! Integrity checks of the database file: `PRAGMA quick_check` at start, `PRAGMA
//! integrity_check` on request, each optionally bounded in time.

use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rusqlite::{Connection, ErrorCode};

use super::rows::db_error;
use crate::{CheckLevel, CheckOutcome, CheckReport, StoreError, StoreResult};
use spool_model::now_ms;

/// Most problems one check lists; SQLite stops looking after as many.
const MAX_PROBLEMS: usize = 20;

/// Runs the check of `level` on `conn`. With a `budget`, a check still running after it is
/// interrupted and reported `incomplete` (it found nothing wrong in what it read).
pub(super) fn check(
    conn: &Connection,
    level: CheckLevel,
    budget: Option<Duration>,
) -> StoreResult<CheckReport> {
    let started = Instant::now();
    let checked_at_ms = now_ms();
    // A watchdog interrupts the check when the budget runs out; dropping `done` ends it early.
    let (done, wait) = mpsc::channel::<()>();
    let watchdog = budget.map(|budget| {
        let handle = conn.get_interrupt_handle();
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(budget) {
                handle.interrupt();
            }
        })
    });
    let sql = match level {
        CheckLevel::Quick => format!("PRAGMA quick_check({MAX_PROBLEMS})"),
        CheckLevel::Full => format!("PRAGMA integrity_check({MAX_PROBLEMS})"),
    };
    let rows: rusqlite::Result<Vec<String>> = conn
        .prepare(&sql)
        .and_then(|mut stmt| stmt.query_map([], |r| r.get::<_, String>(0))?.collect());
    drop(done);
    if let Some(w) = watchdog {
        let _ = w.join();
    }
    let report = |outcome, problems| CheckReport {
        level,
        outcome,
        problems,
        checked_at_ms,
        duration_ms: started.elapsed().as_millis() as u64,
    };
    match rows {
        Ok(rows) if rows.len() == 1 && rows[0] == "ok" => Ok(report(CheckOutcome::Ok, Vec::new())),
        Ok(rows) => Ok(report(CheckOutcome::Damaged, rows)),
        Err(e) => match e.sqlite_error_code() {
            Some(ErrorCode::OperationInterrupted) => {
                Ok(report(CheckOutcome::Incomplete, Vec::new()))
            }
            // Damage bad enough that the check itself cannot read on.
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
                Ok(report(CheckOutcome::Damaged, vec![e.to_string()]))
            }
            _ => Err(db_error("integrity check", e)),
        },
    }
}

/// What a refusal to start on a damaged file says: what is wrong and what to do.
pub(crate) fn damaged_message(db: &Path, what: &str) -> String {
    let db = db.display();
    format!(
        "database {db} is damaged: {what}. Spool does not start on a damaged database: reads \
         would fail and lost messages would look acked. What to do: stop here and restore the \
         latest backup of {db} (taken with `sqlite3 {db} \".backup FILE\"` or `VACUUM INTO`; a \
         plain `cp` of a running database can copy it damaged), or salvage what is readable with \
         `sqlite3 {db} .recover | sqlite3 recovered.db` and start on recovered.db. \
         `spool check --db {db} --full` lists the damage"
    )
}

/// The refusal for a report that found damage.
pub(super) fn refuse(db: &Path, report: &CheckReport) -> StoreError {
    let what = format!(
        "PRAGMA {} found {}",
        match report.level {
            CheckLevel::Quick => "quick_check",
            CheckLevel::Full => "integrity_check",
        },
        report.problems.join("; ")
    );
    StoreError::Damaged(damaged_message(db, &what))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_healthy_file_checks_ok_and_a_damaged_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.db");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE t (k TEXT PRIMARY KEY, v BLOB);
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000)
                 INSERT INTO t SELECT 'key-' || i, randomblob(200) FROM n;",
            )
            .unwrap();
            let r = check(&conn, CheckLevel::Full, Some(Duration::from_secs(30))).unwrap();
            assert_eq!(r.outcome, CheckOutcome::Ok, "{r:?}");
            assert!(r.problems.is_empty());
        }
        // Overwrite bytes in the middle of the file, as a bad copy or a bad disk would.
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        for b in &mut bytes[mid..mid + 512] {
            *b = 0xa5;
        }
        std::fs::write(&path, bytes).unwrap();
        let conn = Connection::open(&path).unwrap();
        let r = check(&conn, CheckLevel::Quick, None).unwrap();
        assert_eq!(r.outcome, CheckOutcome::Damaged, "{r:?}");
        assert!(!r.problems.is_empty());
        let refusal = refuse(&path, &r).to_string();
        assert!(
            refusal.contains("restore the latest backup") && refusal.contains("spool check"),
            "{refusal}"
        );
    }

    #[test]
    fn a_check_past_its_budget_is_incomplete() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("x.db")).unwrap();
        conn.execute_batch(
            "CREATE TABLE t (k TEXT PRIMARY KEY, v BLOB);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 200000)
             INSERT INTO t SELECT 'key-' || i, randomblob(100) FROM n;",
        )
        .unwrap();
        let r = check(&conn, CheckLevel::Full, Some(Duration::from_millis(5))).unwrap();
        assert_eq!(r.outcome, CheckOutcome::Incomplete, "{r:?}");
    }
}

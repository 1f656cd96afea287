//! `spool check`: checks a database file offline (no server needed).

use std::path::PathBuf;

use anyhow::bail;
use clap::Args;
use serde_json::json;

use super::output::{fields, json as print_json};
use crate::store::sqlite::{FileCheck, SqliteStore};
use crate::store::{CheckLevel, CheckOutcome};

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The database file to check (the --db of `spool serve`).
    #[arg(long, value_name = "FILE")]
    pub db: PathBuf,
    /// Run PRAGMA integrity_check (also checks every index against its table) instead of the
    /// faster PRAGMA quick_check.
    #[arg(long)]
    pub full: bool,
    /// Print the result as JSON (for scripts).
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: CheckArgs) -> anyhow::Result<()> {
    let level = if args.full {
        CheckLevel::Full
    } else {
        CheckLevel::Quick
    };
    let db = args.db.clone();
    let found = tokio::task::spawn_blocking(move || SqliteStore::check_file(&db, level)).await??;
    if args.json {
        print_json(&json!({
            "db": args.db.display().to_string(),
            "level": found.report.level.as_str(),
            "outcome": found.report.outcome.as_str(),
            "problems": found.report.problems,
            "duration_ms": found.report.duration_ms,
            "wal_loss": found.wal_loss,
            "id_sequence": found.sequence,
            "id_mark": found.id_mark,
        }));
    } else {
        fields(&pairs(&args.db, &found));
    }
    if found.report.outcome == CheckOutcome::Damaged || found.wal_loss.is_some() {
        bail!(
            "{} is damaged: restore the latest backup, or salvage it with `sqlite3 {} .recover \
             | sqlite3 recovered.db` (see docs/CLI.md, `spool check`)",
            args.db.display(),
            args.db.display()
        );
    }
    Ok(())
}

fn pairs(db: &std::path::Path, found: &FileCheck) -> Vec<(String, String)> {
    let r = &found.report;
    let mut pairs = vec![
        ("database".to_owned(), db.display().to_string()),
        (
            "check".to_owned(),
            format!(
                "{} ({} ms)",
                match r.level {
                    CheckLevel::Quick => "quick_check",
                    CheckLevel::Full => "integrity_check",
                },
                r.duration_ms
            ),
        ),
        ("result".to_owned(), r.outcome.as_str().to_owned()),
    ];
    for (i, p) in r.problems.iter().enumerate() {
        pairs.push((format!("problem {}", i + 1), p.clone()));
    }
    pairs.push((
        "write-ahead log".to_owned(),
        found
            .wal_loss
            .clone()
            .unwrap_or_else(|| "no committed transaction would be lost".to_owned()),
    ));
    let ids = match (found.sequence, found.id_mark) {
        (Some(seq), Some(mark)) if seq <= mark => {
            format!("last id {seq}, mark {mark}: ids continue above {mark}")
        }
        (Some(seq), Some(mark)) => format!(
            "last id {seq} is above the mark {mark}: the mark file is older than the database"
        ),
        (Some(seq), None) => format!("last id {seq}, no mark file (created at the next start)"),
        (None, _) => "unreadable".to_owned(),
    };
    pairs.push(("message ids".to_owned(), ids));
    pairs
}

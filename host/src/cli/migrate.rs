//! `spool migrate`: copies a SQLite database into PostgreSQL (local, no server needed). The
//! copy itself is `spool_store::copy`; this file parses the flags, shows progress on stderr and
//! prints the verified counts.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;

use super::output::{json as print_json, table, thousands};
use crate::store::migrate_copy::{CopyOptions, CopyReport, Progress, copy_sqlite_to_postgres};
use crate::store::postgres::DatabaseUrl;

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The database to copy, as sqlite:FILE (the --db of `spool serve`). Stop its server first:
    /// the file is read as it is, and stays untouched.
    #[arg(long, value_name = "sqlite:FILE")]
    pub from: String,
    /// The PostgreSQL database to copy into: postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE.
    /// It must be empty (or hold this copy, interrupted: it is resumed). Prefer the environment
    /// variable for a URL with a password, so it stays out of `ps`.
    #[arg(
        long,
        value_name = "URL",
        env = "SPOOL_DATABASE_URL",
        hide_env_values = true
    )]
    pub to: String,
    /// Rows per PostgreSQL transaction; an interrupted copy resumes after the last one.
    #[arg(long, value_name = "ROWS", default_value_t = 5_000,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub batch: u32,
    /// Print the report as JSON (for scripts).
    #[arg(long)]
    pub json: bool,
}

pub async fn run(args: MigrateArgs) -> anyhow::Result<()> {
    let Some(file) = args.from.strip_prefix("sqlite:") else {
        bail!(
            "--from {:?} must name a SQLite database as sqlite:FILE (the --db of `spool serve`)",
            args.from
        );
    };
    if file.is_empty() {
        bail!("--from sqlite: needs a file name after the colon, e.g. sqlite:spool.db");
    }
    let source = PathBuf::from(file);
    let target = DatabaseUrl::parse(&args.to).context("--to")?;
    eprintln!("copying {} into {target}", source.display());
    let opts = CopyOptions {
        batch_rows: args.batch as usize,
        stop_after_batches: None,
    };
    let mut shown = Shown::default();
    let report = copy_sqlite_to_postgres(&source, &target, &opts, &mut |p| shown.show(&p)).await?;
    if args.json {
        print_json(&serde_json::to_value(&report)?);
    } else {
        print_report(&report);
    }
    Ok(())
}

/// Progress lines on stderr: one per table when it is done, and for a large one at most one a
/// second meanwhile ("messages: 35,000 / 120,000"); nothing for an empty table.
#[derive(Default)]
struct Shown {
    last: Option<(&'static str, Instant)>,
}

impl Shown {
    fn show(&mut self, p: &Progress) {
        match *p {
            Progress::Copied { table, done, total } => {
                let quiet = matches!(self.last, Some((t, at)) if t == table
                    && at.elapsed() < Duration::from_secs(1));
                // Empty tables say nothing; the final table lists them with their 0.
                if total == 0 || (done < total && quiet) {
                    return;
                }
                eprintln!("{table}: {} / {}", thousands(done), thousands(total));
                self.last = Some((table, Instant::now()));
            }
            Progress::Verifying => {
                eprintln!("writing counters and id sequences, comparing counts…");
            }
        }
    }
}

fn print_report(r: &CopyReport) {
    let rows: Vec<Vec<String>> = r
        .tables
        .iter()
        .map(|t| vec![t.table.clone(), t.rows.to_string()])
        .collect();
    table(&["TABLE", "ROWS"], &rows);
    if !r.messages.is_empty() {
        outln!();
        let rows: Vec<Vec<String>> = r
            .messages
            .iter()
            .map(|m| vec![m.queue.clone(), m.state.clone(), m.messages.to_string()])
            .collect();
        table(&["QUEUE", "STATE", "MESSAGES"], &rows);
    }
    outln!();
    let rate = if r.messages_ms > 0 {
        format!(
            " ({} messages/s)",
            thousands((r.messages_copied as f64 * 1_000.0 / r.messages_ms as f64) as u64)
        )
    } else {
        String::new()
    };
    outln!(
        "{} {} rows in {:.1} s{rate}; every count above matches in both databases.",
        if r.resumed {
            "resumed and copied"
        } else {
            "copied"
        },
        thousands(r.rows_copied),
        r.duration_ms as f64 / 1_000.0
    );
    outln!(
        "new message ids start at {}. Start the hosts with --database-url (or \
         SPOOL_DATABASE_URL); keep {} as it is, as the way back.",
        thousands(u64::try_from(r.next_message_id).unwrap_or(0)),
        r.source.display()
    );
    for w in &r.warnings {
        eprintln!("warning: {w}");
    }
}

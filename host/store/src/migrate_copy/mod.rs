//! `spool migrate`: copies a SQLite database into PostgreSQL, ids and states as they are.
//!
//! The source is read in one read transaction on a read-only connection (`source.rs`): one
//! consistent snapshot, while the file's lock keeps a server from starting on it. The rows go
//! into PostgreSQL table by table (`tables.rs`), in key order, through `COPY ... (FORMAT
//! binary)`, one transaction per batch. Each batch's transaction also rewrites the progress
//! record in `spool_meta` (the source, a digest of it, the table in progress and the last key
//! copied), so an interrupted run resumes after the last committed batch and never copies a row
//! twice. Once every row is in, one transaction writes the queue counters, moves every id
//! sequence past the ids the source handed out, compares the counts, and marks the record
//! finished; a later run finds it and has nothing to do. Hosts refuse to start on a database
//! whose record is unfinished ([`refuse_unfinished`]).

mod source;
mod tables;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio_postgres::Client;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

use self::source::{Batch, Census, Start};
use self::tables::{TABLES, Table};
use crate::postgres::{DatabaseUrl, PgStore};
use crate::{StoreError, StoreResult};
use spool_model::{MessageState, now_ms, rfc3339};

/// The `spool_meta` key of the progress record.
const RECORD_KEY: &str = "migrated_from";

/// The advisory lock a copy holds on its target for its whole run ("spool" and a 2), so two
/// copies into one database cannot interleave their batches.
const COPY_LOCK_KEY: i64 = 0x73_70_6f_6f_6c_00_00_02;

/// How to copy.
#[derive(Debug, Clone)]
pub struct CopyOptions {
    /// Rows per PostgreSQL transaction (a batch also ends at 32 MiB of values). Progress is
    /// committed with each batch, so an interrupted copy loses at most one batch of work.
    pub batch_rows: usize,
    /// Stop with [`CopyError::Stopped`] after this many batches were committed; a later run
    /// resumes. For tests, and for copying a large database in several sittings.
    pub stop_after_batches: Option<u64>,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            batch_rows: 5_000,
            stop_after_batches: None,
        }
    }
}

/// What a copy is doing, reported after each committed batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// `done` of the `total` rows of `table` are in the target (earlier runs included).
    Copied {
        table: &'static str,
        done: u64,
        total: u64,
    },
    /// Every row is in: the counters, id sequences and the verification come next.
    Verifying,
}

/// A finished, verified copy.
#[derive(Debug, Clone, Serialize)]
pub struct CopyReport {
    pub source: PathBuf,
    /// The target's URL, password masked.
    pub target: String,
    /// Rows per table, the same on both sides.
    pub tables: Vec<TableCount>,
    /// Messages per queue and state, the same on both sides.
    pub messages: Vec<StateCount>,
    /// This run continued an interrupted one.
    pub resumed: bool,
    /// Rows written by this run (all tables), and of them messages.
    pub rows_copied: u64,
    pub messages_copied: u64,
    /// Time this run spent on the messages table.
    pub messages_ms: u64,
    pub duration_ms: u64,
    /// The id the next message gets on PostgreSQL: past every id the source handed out.
    pub next_message_id: i64,
    pub verified_at_ms: i64,
    /// What was copied as it was but deserves a look (a damaged plugin version, counters that
    /// disagreed with the rows).
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableCount {
    pub table: String,
    pub rows: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateCount {
    pub queue: String,
    pub state: String,
    pub messages: u64,
}

/// Why a copy did not happen or did not finish; each says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CopyError {
    #[error(
        "{} does not exist: pass the SQLite database a server ran with (`spool serve --db FILE`) \
         as --from sqlite:FILE",
        .0.display()
    )]
    NotFound(PathBuf),
    #[error(
        "{} is not a Spool database ({reason}): pass the file `spool serve --db` used",
        path.display()
    )]
    NotSpool { path: PathBuf, reason: String },
    #[error(
        "{} has schema version {found}, and this build of spool copies version {expected}: \
         start `spool serve --db {}` once with this build (it brings the file up to date at \
         start), stop it, then run `spool migrate` again",
        path.display(), path.display()
    )]
    SchemaOutdated {
        path: PathBuf,
        found: i64,
        expected: i64,
    },
    #[error(
        "{} has schema version {found}, newer than this build's {expected}: run `spool migrate` \
         of the spool release that wrote it",
        path.display()
    )]
    SchemaNewer {
        path: PathBuf,
        found: i64,
        expected: i64,
    },
    #[error(
        "{detail}; a copy would miss those transactions. `spool check --db {}` shows what is \
         wrong and docs/CLI.md (\"Check a database file\") what to do; migrate once the file is \
         whole",
        path.display()
    )]
    WalLoss { path: PathBuf, detail: String },
    #[error(
        "a spool server is using {} (its lock {} is held): stop it first, so nothing changes \
         the database while it is copied",
        db.display(), lock.display()
    )]
    SourceInUse { db: PathBuf, lock: PathBuf },
    #[error("cannot read the SQLite database: {0}")]
    Source(String),
    #[error("{0}")]
    Target(String),
    #[error("another `spool migrate` is copying into {0}: wait for it to end")]
    TargetBusy(String),
    #[error(
        "{target} already holds the migration of {file}, its counts verified at {verified_at} \
         ({summary}); nothing to do. Start the hosts with --database-url"
    )]
    AlreadyMigrated {
        file: String,
        target: String,
        verified_at: String,
        summary: String,
    },
    #[error(
        "{target} already holds Spool data that is not from this migration: {found}. Migrate \
         into an empty database (`createdb NEW`, then --to with NEW as the database name)"
    )]
    TargetNotEmpty { target: String, found: String },
    #[error(
        "{target} holds an unfinished migration of {file} started at {started}, but the SQLite \
         database is not the same any more (its row counts, last ids or message states \
         differ): resuming would mix two states. Drop the target database, create it empty and \
         run `spool migrate` again"
    )]
    SourceChanged {
        file: String,
        target: String,
        started: String,
    },
    #[error(
        "the copy in {target} does not match the source: {}. The migration is left unfinished \
         (hosts refuse to start on it): drop the target database, create it empty and run \
         `spool migrate` again",
        problems.join("; ")
    )]
    Mismatch {
        target: String,
        problems: Vec<String>,
    },
    #[error(
        "stopped after {batches} batches as asked, in table {table}; run `spool migrate` again \
         to resume"
    )]
    Stopped { batches: u64, table: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The progress record in the target's `spool_meta`, rewritten with every batch.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    /// The source file, as people know it.
    source: String,
    /// The census digest of the source's snapshot: "the same source" means this is equal.
    digest: String,
    messages: u64,
    max_message_id: i64,
    started_at_ms: i64,
    /// The table being copied (tables before it in copy order are complete); `None` once all
    /// are.
    table: Option<String>,
    /// The key of the last row of `table` committed.
    after: Vec<serde_json::Value>,
    /// Rows of `table` committed so far.
    rows_done: u64,
    finished: bool,
    verified_at_ms: Option<i64>,
    /// Rows per table, once verified.
    counts: Option<BTreeMap<String, u64>>,
}

fn when(ms: i64) -> String {
    rfc3339(ms).unwrap_or_else(|| ms.to_string())
}

/// A PostgreSQL error as a [`CopyError`], naming what failed, password scrubbed.
fn pg<'a>(url: &'a DatabaseUrl, what: &'a str) -> impl Fn(tokio_postgres::Error) -> CopyError + 'a {
    move |e| CopyError::Target(format!("{what} on {url}: {}", url.scrub(&e.to_string())))
}

/// Refuses to serve a database that `spool migrate` has not finished copying into (called by
/// `PgStore::open`): its rows are part of a SQLite database's, and its counters and id
/// sequences are not written yet.
pub(crate) async fn refuse_unfinished(client: &Client, url: &DatabaseUrl) -> StoreResult<()> {
    let row = client
        .query_opt(
            "SELECT value FROM spool_meta WHERE key = $1",
            &[&RECORD_KEY],
        )
        .await
        .map_err(|e| {
            StoreError::Database(format!(
                "cannot read spool_meta on {url}: {}",
                url.scrub(&e.to_string())
            ))
        })?;
    let Some(row) = row else {
        return Ok(());
    };
    let text: String = row.get(0);
    let record: Record = serde_json::from_str(&text).map_err(|e| {
        StoreError::Database(format!(
            "{url} holds a `spool migrate` record that cannot be read ({e}); it may be an \
             unfinished copy: copy into an empty database again"
        ))
    })?;
    if record.finished {
        return Ok(());
    }
    Err(StoreError::Database(format!(
        "{url} holds an unfinished `spool migrate` of {} (started at {}): run `spool migrate \
         --from sqlite:{} --to URL` again to finish it before starting hosts on it",
        record.source,
        when(record.started_at_ms),
        record.source
    )))
}

/// Copies the Spool database in the SQLite file `source` into the PostgreSQL database at
/// `target` (its schema is created if missing), reporting progress after each batch, and
/// verifies the result. The target must be empty, or hold an unfinished copy of the same
/// source, which is then resumed.
pub async fn copy_sqlite_to_postgres(
    source: &Path,
    target: &DatabaseUrl,
    opts: &CopyOptions,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<CopyReport, CopyError> {
    let started = Instant::now();
    if !source.is_file() {
        return Err(CopyError::NotFound(source.to_owned()));
    }
    let source = std::fs::canonicalize(source)
        .map_err(|e| CopyError::Source(format!("cannot resolve {}: {e}", source.display())))?;
    // The lock first: a running server's log is mid-write, and would look damaged.
    let _lock = lock_source(&source)?;
    check_wal(&source)?;
    let mut reader = source::spawn(source.clone(), opts.batch_rows)?;
    let result = run(&source, target, opts, progress, &mut reader, started).await;
    // Hang up, so a reader still sending (after an error here) stops, and wait for it: the
    // file is closed before the lock is let go.
    let source::Reader {
        census,
        start,
        batches,
        thread,
    } = reader;
    drop((census, start, batches));
    let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    result
}

/// Refuses a file whose write-ahead log would lose committed transactions: SQLite would read
/// the file without them, and the copy would be of a state the server never had.
fn check_wal(path: &Path) -> Result<(), CopyError> {
    let wal = crate::sqlite::wal::wal_path(path);
    let scan = crate::sqlite::wal::scan(path)
        .map_err(|e| CopyError::Source(format!("cannot read {}: {e}", wal.display())))?;
    match scan.filter(crate::sqlite::wal::WalScan::loses_commits) {
        Some(scan) => Err(CopyError::WalLoss {
            path: path.to_owned(),
            detail: scan.describe(&wal),
        }),
        None => Ok(()),
    }
}

/// Takes the lock a server takes (`<db>.lock`, see `host.rs`): refused while a server runs
/// on the file, and, held for the whole copy, keeps one from starting meanwhile.
fn lock_source(db: &Path) -> Result<Option<File>, CopyError> {
    let mut lock = db.as_os_str().to_owned();
    lock.push(".lock");
    let lock = PathBuf::from(lock);
    let file = match File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock)
    {
        Ok(f) => f,
        // A read-only directory (a copy on a mounted snapshot): no server can run there either,
        // unless one holds an existing lock file, which can be opened for reading.
        Err(e)
            if e.kind() == std::io::ErrorKind::PermissionDenied
                || e.kind() == std::io::ErrorKind::ReadOnlyFilesystem =>
        {
            match File::open(&lock) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    tracing::warn!(db = %db.display(),
                        "cannot create the lock file beside a read-only database; copying \
                         without it");
                    return Ok(None);
                }
                Err(e) => {
                    return Err(CopyError::Source(format!(
                        "cannot open the lock file {}: {e}",
                        lock.display()
                    )));
                }
            }
        }
        Err(e) => {
            return Err(CopyError::Source(format!(
                "cannot open the lock file {}: {e}",
                lock.display()
            )));
        }
    };
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Err(CopyError::SourceInUse {
            db: db.to_owned(),
            lock,
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(CopyError::Source(format!(
            "cannot lock {}: {e}",
            lock.display()
        ))),
    }
}

/// The state of a copy between batches.
struct Copier<'a> {
    url: &'a DatabaseUrl,
    client: Client,
    census: Census,
    record: Record,
    warnings: Vec<String>,
    rows_copied: u64,
    messages_copied: u64,
    messages_ms: u64,
    batches: u64,
}

/// How often, and how far apart, a run tries to take the migration lock before it calls the
/// target busy: 5 s in all.
const LOCK_TRIES: u32 = 50;
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(100);

async fn run(
    source: &Path,
    url: &DatabaseUrl,
    opts: &CopyOptions,
    progress: &mut (dyn FnMut(Progress) + Send),
    reader: &mut source::Reader,
    started: Instant,
) -> Result<CopyReport, CopyError> {
    let census = (&mut reader.census)
        .await
        .map_err(|_| CopyError::Source("the reading thread ended early".into()))??;
    tracing::info!(source = %source.display(), messages = census.messages(),
        max_message_id = census.max_message_id(), digest = %census.digest, "source counted");
    let client = PgStore::connect_one(url).await?;
    // Held by the session, so released when a run's connection closes, which the server notices
    // a moment after that run ended: a run just before this one (an interrupted copy, retried at
    // once) gets that moment before this one calls the target busy.
    let mut locked = false;
    for _ in 0..LOCK_TRIES {
        locked = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&COPY_LOCK_KEY])
            .await
            .map_err(pg(url, "cannot take the migration lock"))?
            .get(0);
        if locked {
            break;
        }
        tokio::time::sleep(LOCK_RETRY).await;
    }
    if !locked {
        return Err(CopyError::TargetBusy(url.to_string()));
    }
    let existing = read_record(&client, url).await?;
    let resumed = existing.is_some();
    let record = match existing {
        Some(record) => check_record(record, source, url, &census)?,
        None => {
            check_empty(&client, url).await?;
            let record = Record {
                source: source.display().to_string(),
                digest: census.digest.clone(),
                messages: census.messages(),
                max_message_id: census.max_message_id(),
                started_at_ms: now_ms(),
                table: TABLES.first().map(|t| t.name.to_owned()),
                after: Vec::new(),
                rows_done: 0,
                finished: false,
                verified_at_ms: None,
                counts: None,
            };
            client
                .execute(
                    "INSERT INTO spool_meta (key, value) VALUES ($1, $2)",
                    &[&RECORD_KEY, &encode(&record)?],
                )
                .await
                .map_err(pg(url, "cannot write the migration record"))?;
            record
        }
    };
    let start = match &record.table {
        None => TABLES.len(),
        Some(name) => TABLES.iter().position(|t| t.name == name).ok_or_else(|| {
            CopyError::Target(format!(
                "the migration record in {url} names a table {name:?} this build does not copy; \
                 finish it with the spool release that started it, or start over on an empty \
                 database"
            ))
        })?,
    };
    if resumed {
        tracing::info!(db = %url, table = record.table.as_deref().unwrap_or("-"),
            rows_done = record.rows_done, "resuming an interrupted migration");
    }
    let mut copy = Copier {
        url,
        client,
        census,
        record,
        warnings: Vec::new(),
        rows_copied: 0,
        messages_copied: 0,
        messages_ms: 0,
        batches: 0,
    };
    let start = Start {
        table: start,
        after: copy.record.after.clone(),
    };
    let first_table = start.table;
    reader
        .start
        .take()
        .and_then(|tx| tx.send(start).ok())
        .ok_or_else(|| CopyError::Source("the reading thread ended early".into()))?;
    let messages = tables::messages_index();
    let mut expected = first_table;
    let mut messages_began = None;
    while expected < TABLES.len() {
        if expected == messages && messages_began.is_none() {
            messages_began = Some(Instant::now());
        }
        let batch = reader.batches.recv().await.ok_or_else(|| {
            CopyError::Source("the reading thread ended before the last table".into())
        })??;
        if batch.table != expected {
            return Err(CopyError::Source(format!(
                "rows of {} arrived while {} was being copied",
                TABLES[batch.table].name, TABLES[expected].name
            )));
        }
        let table = &TABLES[batch.table];
        let end = batch.end_of_table;
        let rows = batch.rows.len() as u64;
        copy.write(table, batch).await?;
        if expected == messages {
            copy.messages_copied += rows;
            if let Some(began) = messages_began {
                copy.messages_ms = began.elapsed().as_millis() as u64;
            }
        }
        let total = copy.census.tables[expected].rows;
        let done = if end { total } else { copy.record.rows_done };
        progress(Progress::Copied {
            table: table.name,
            done,
            total,
        });
        if end {
            tracing::info!(table = table.name, rows = total, "table copied");
            expected += 1;
        }
        if let Some(limit) = opts.stop_after_batches
            && copy.batches >= limit
            && expected < TABLES.len()
        {
            return Err(CopyError::Stopped {
                batches: copy.batches,
                table: TABLES[expected].name.to_owned(),
            });
        }
    }
    progress(Progress::Verifying);
    let (verified_at_ms, next_message_id) = copy.finish().await?;
    let census = &copy.census;
    let report = CopyReport {
        source: source.to_owned(),
        target: url.to_string(),
        tables: TABLES
            .iter()
            .zip(&census.tables)
            .map(|(t, c)| TableCount {
                table: t.name.to_owned(),
                rows: c.rows,
            })
            .collect(),
        messages: census
            .by_state
            .iter()
            .map(|((queue, state), n)| StateCount {
                queue: queue_name(census, *queue),
                state: state_name(*state),
                messages: *n,
            })
            .collect(),
        resumed,
        rows_copied: copy.rows_copied,
        messages_copied: copy.messages_copied,
        messages_ms: copy.messages_ms,
        duration_ms: started.elapsed().as_millis() as u64,
        next_message_id,
        verified_at_ms,
        warnings: copy.warnings,
    };
    tracing::info!(source = %source.display(), db = %url, rows = report.rows_copied,
        duration_ms = report.duration_ms, "migration finished and verified");
    Ok(report)
}

fn encode(record: &Record) -> Result<String, CopyError> {
    serde_json::to_string(record)
        .map_err(|e| CopyError::Target(format!("cannot encode the migration record: {e}")))
}

async fn read_record(client: &Client, url: &DatabaseUrl) -> Result<Option<Record>, CopyError> {
    let Some(row) = client
        .query_opt(
            "SELECT value FROM spool_meta WHERE key = $1",
            &[&RECORD_KEY],
        )
        .await
        .map_err(pg(url, "cannot read the migration record"))?
    else {
        return Ok(None);
    };
    let text: String = row.get(0);
    serde_json::from_str(&text).map(Some).map_err(|e| {
        CopyError::Target(format!(
            "{url} holds a migration record that cannot be read ({e}): copy into an empty \
             database"
        ))
    })
}

/// What to do with the record a target already holds: resume it, or refuse.
fn check_record(
    record: Record,
    source: &Path,
    url: &DatabaseUrl,
    census: &Census,
) -> Result<Record, CopyError> {
    let same = record.digest == census.digest;
    match (record.finished, same) {
        (true, true) => {
            let counts = record.counts.clone().unwrap_or_default();
            let summary = TABLES
                .iter()
                .filter_map(|t| counts.get(t.name).map(|n| (t.name, n)))
                .filter(|(_, n)| **n > 0)
                .map(|(t, n)| format!("{n} rows in {t}"))
                .collect::<Vec<_>>()
                .join(", ");
            Err(CopyError::AlreadyMigrated {
                file: record.source,
                target: url.to_string(),
                verified_at: when(record.verified_at_ms.unwrap_or(record.started_at_ms)),
                summary,
            })
        }
        (true, false) => Err(CopyError::TargetNotEmpty {
            target: url.to_string(),
            found: format!(
                "the finished migration of {} ({} messages up to id {}, verified at {}), and {} \
                 is not that database as it was then",
                record.source,
                record.messages,
                record.max_message_id,
                when(record.verified_at_ms.unwrap_or(record.started_at_ms)),
                source.display()
            ),
        }),
        (false, false) => Err(CopyError::SourceChanged {
            file: record.source,
            target: url.to_string(),
            started: when(record.started_at_ms),
        }),
        (false, true) => Ok(record),
    }
}

/// Refuses a target holding anything Spool would show: copying into it would mix two states.
async fn check_empty(client: &Client, url: &DatabaseUrl) -> Result<(), CopyError> {
    let sql = TABLES
        .iter()
        .map(|t| format!("SELECT '{0}', count(*) FROM \"{0}\"", t.name))
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let mut found = Vec::new();
    for row in client
        .query(sql.as_str(), &[])
        .await
        .map_err(pg(url, "cannot look into the target"))?
    {
        let (table, n): (String, i64) = (row.get(0), row.get(1));
        if n > 0 {
            found.push(format!("{n} rows in {table}"));
        }
    }
    if found.is_empty() {
        return Ok(());
    }
    let queues: Vec<String> = client
        .query("SELECT name FROM queues ORDER BY name LIMIT 5", &[])
        .await
        .map_err(pg(url, "cannot look into the target"))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let mut found = found.join(", ");
    if !queues.is_empty() {
        found.push_str(&format!(" (queues {}", queues.join(", ")));
        found.push_str(if queues.len() == 5 { ", …)" } else { ")" });
    }
    Err(CopyError::TargetNotEmpty {
        target: url.to_string(),
        found,
    })
}

fn queue_name(census: &Census, id: i64) -> String {
    census
        .queues
        .get(&id)
        .map_or_else(|| format!("(queue id {id})"), |q| q.name.clone())
}

/// Both stores encode a state as its index in `MessageState::ALL` (0 scheduled … 6 expired).
fn state_name(code: i16) -> String {
    usize::try_from(code)
        .ok()
        .and_then(|i| MessageState::ALL.get(i))
        .map_or_else(|| format!("state {code}"), |s| s.as_str().to_owned())
}

impl Copier<'_> {
    /// Writes one batch and the record saying so, in one transaction.
    async fn write(&mut self, table: &Table, batch: Batch) -> Result<(), CopyError> {
        let url = self.url;
        let Batch {
            table: index,
            rows,
            last_key,
            end_of_table,
            warnings,
        } = batch;
        let n = rows.len() as u64;
        let mut record = self.record.clone();
        if end_of_table {
            record.table = TABLES.get(index + 1).map(|t| t.name.to_owned());
            record.after = Vec::new();
            record.rows_done = 0;
        } else {
            record.after = last_key;
            record.rows_done += n;
        }
        let tx = self
            .client
            .transaction()
            .await
            .map_err(pg(url, "cannot begin a batch"))?;
        if !rows.is_empty() {
            let what = format!(
                "cannot copy {} rows of {} (after {})",
                rows.len(),
                table.name,
                source::show_key(table, &self.record.after)
            );
            let cols: Vec<&str> = table.cols.iter().map(|c| c.name).collect();
            let sql = format!(
                "COPY \"{}\" ({}) FROM STDIN (FORMAT binary)",
                table.name,
                source::quoted(&cols)
            );
            let sink = tx.copy_in(sql.as_str()).await.map_err(pg(url, &what))?;
            let types: Vec<Type> = table.cols.iter().map(|c| c.kind.pg_type()).collect();
            let writer = BinaryCopyInWriter::new(sink, &types);
            let mut writer = std::pin::pin!(writer);
            for row in &rows {
                let values: Vec<&(dyn ToSql + Sync)> =
                    row.iter().map(|v| &**v as &(dyn ToSql + Sync)).collect();
                writer
                    .as_mut()
                    .write(&values)
                    .await
                    .map_err(pg(url, &what))?;
            }
            writer.as_mut().finish().await.map_err(pg(url, &what))?;
        }
        tx.execute(
            "UPDATE spool_meta SET value = $2 WHERE key = $1",
            &[&RECORD_KEY, &encode(&record)?],
        )
        .await
        .map_err(pg(url, "cannot record the progress"))?;
        tx.commit()
            .await
            .map_err(pg(url, "cannot commit a batch"))?;
        for w in &warnings {
            tracing::warn!(table = table.name, "{w}");
        }
        self.warnings.extend(warnings);
        self.record = record;
        self.rows_copied += n;
        self.batches += 1;
        Ok(())
    }

    /// Counters, id sequences, verification and the finished record, in one transaction:
    /// either the target is complete and says so, or it stays unfinished.
    async fn finish(&mut self) -> Result<(i64, i64), CopyError> {
        let url = self.url;
        let census = &self.census;
        let tx = self
            .client
            .transaction()
            .await
            .map_err(pg(url, "cannot begin the last step"))?;
        let mut by_state: BTreeMap<(i64, i16), u64> = BTreeMap::new();
        for row in tx
            .query(
                "SELECT queue_id, state, count(*) FROM messages GROUP BY queue_id, state",
                &[],
            )
            .await
            .map_err(pg(url, "cannot count the copied messages"))?
        {
            let (queue, state, n): (i64, i16, i64) = (row.get(0), row.get(1), row.get(2));
            by_state.insert((queue, state), u64::try_from(n).unwrap_or(0));
        }

        // Depths are the copied rows counted; totals are history only SQLite's row knows.
        tx.execute("DELETE FROM queue_counters", &[])
            .await
            .map_err(pg(url, "cannot clear the queue counters"))?;
        let depth = |queue: i64, state: MessageState| {
            let code = MessageState::ALL
                .iter()
                .position(|s| *s == state)
                .and_then(|i| i16::try_from(i).ok())
                .unwrap_or(-1);
            by_state.get(&(queue, code)).copied().unwrap_or(0) as i64
        };
        for (id, q) in &census.queues {
            let depths = [
                depth(*id, MessageState::Scheduled),
                depth(*id, MessageState::Ready),
                depth(*id, MessageState::Leased),
                depth(*id, MessageState::Dead),
            ];
            if depths != q.depths {
                self.warnings.push(format!(
                    "queue {:?}: SQLite's depth counters said {:?} (scheduled, ready, leased, \
                     dead) where its rows hold {depths:?}; PostgreSQL counts the rows",
                    q.name, q.depths
                ));
            }
            let t = &q.totals;
            tx.execute(
                "INSERT INTO queue_counters (queue_id, shard, enqueued, acked, retried, dead, \
                 cancelled, expired, scheduled_now, ready_now, leased_now, dead_now) \
                 VALUES ($1, 0, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                &[
                    id, &t[0], &t[1], &t[2], &t[3], &t[4], &t[5], &depths[0], &depths[1],
                    &depths[2], &depths[3],
                ],
            )
            .await
            .map_err(pg(url, "cannot write the queue counters"))?;
        }

        // Every id the source handed out stays taken: the highest row, SQLite's own counter
        // (rows since deleted), and for messages the id mark (ids reserved durably).
        let mut next_message_id = 1;
        for (t, c) in TABLES.iter().zip(&census.tables) {
            let Some(seq) = t.sequence else {
                continue;
            };
            let mut last = c.max_rowid;
            if let Some(n) = census.sequences.get(t.name) {
                last = last.max(*n);
            }
            if t.name == "messages" {
                last = last.max(census.id_mark.unwrap_or(0));
            }
            if last < 1 {
                continue;
            }
            let set: i64 = tx
                .query_one(
                    format!("SELECT setval('{seq}', GREATEST($1, (SELECT last_value FROM {seq})))")
                        .as_str(),
                    &[&last],
                )
                .await
                .map_err(pg(url, "cannot move an id sequence"))?
                .get(0);
            if t.name == "messages" {
                next_message_id = set + 1;
            }
        }

        let mut problems = Vec::new();
        let mut counts = BTreeMap::new();
        for (t, c) in TABLES.iter().zip(&census.tables) {
            let n: i64 = tx
                .query_one(format!("SELECT count(*) FROM \"{}\"", t.name).as_str(), &[])
                .await
                .map_err(pg(url, "cannot count the copied rows"))?
                .get(0);
            let n = u64::try_from(n).unwrap_or(0);
            if n != c.rows {
                problems.push(format!(
                    "table {}: {} rows in SQLite, {n} in PostgreSQL",
                    t.name, c.rows
                ));
            }
            counts.insert(t.name.to_owned(), n);
        }
        let keys: BTreeSet<(i64, i16)> = census
            .by_state
            .keys()
            .chain(by_state.keys())
            .copied()
            .collect();
        for key in keys {
            let (want, got) = (
                census.by_state.get(&key).copied().unwrap_or(0),
                by_state.get(&key).copied().unwrap_or(0),
            );
            if want != got {
                problems.push(format!(
                    "queue {} holds {want} {} messages in SQLite, {got} in PostgreSQL",
                    queue_name(census, key.0),
                    state_name(key.1)
                ));
            }
        }
        let mut lengths = BTreeMap::new();
        for row in tx
            .query("SELECT name, version, length(wasm) FROM plugins", &[])
            .await
            .map_err(pg(url, "cannot measure the copied plugins"))?
        {
            let (name, version, len): (String, i32, i32) = (row.get(0), row.get(1), row.get(2));
            lengths.insert((name, i64::from(version)), i64::from(len));
        }
        for ((name, version), (_, stored)) in &census.plugin_bytes {
            let got = lengths.get(&(name.clone(), *version)).copied();
            if got != Some(*stored) {
                problems.push(format!(
                    "plugin {name:?} version {version} holds {stored} bytes in SQLite, {} in \
                     PostgreSQL",
                    got.map_or_else(|| "none".to_owned(), |n| n.to_string())
                ));
            }
        }
        if !problems.is_empty() {
            tracing::error!(db = %url, ?problems, "the copy does not match the source");
            return Err(CopyError::Mismatch {
                target: url.to_string(),
                problems,
            });
        }

        let verified_at = now_ms();
        let mut record = self.record.clone();
        record.table = None;
        record.after = Vec::new();
        record.rows_done = 0;
        record.finished = true;
        record.verified_at_ms = Some(verified_at);
        record.counts = Some(counts);
        tx.execute(
            "UPDATE spool_meta SET value = $2 WHERE key = $1",
            &[&RECORD_KEY, &encode(&record)?],
        )
        .await
        .map_err(pg(url, "cannot record the finished migration"))?;
        tx.commit()
            .await
            .map_err(pg(url, "cannot commit the last step"))?;
        self.record = record;
        Ok((verified_at, next_message_id))
    }
}

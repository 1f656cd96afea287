//! The SQLite side of a copy: a thread of its own holding one read transaction on a read-only
//! connection, so the census (what the source holds, counted once) and every batch come from
//! one snapshot of the database, whatever happens to the file meanwhile. Batches go to the
//! PostgreSQL side through a small bounded channel, so reading the next batch overlaps with
//! writing the last one without ever holding more than a few batches in memory.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::types::{Value as SqlValue, ValueRef};
use rusqlite::{Connection, ErrorCode, OpenFlags};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::types::ToSql;

use super::CopyError;
use super::tables::{Col, Kind, TABLES, Table};

/// A value on its way into a `COPY ... (FORMAT binary)` row, typed for its column.
pub(super) type PgValue = Box<dyn ToSql + Sync + Send>;

/// A batch also ends once its values reach this many bytes, so a table of large payloads (or
/// plugin components of 18 MB) does not make a batch of thousands of them.
const BATCH_BYTES: usize = 32 << 20;

/// How long the read connection waits for a lock (none is expected: nothing writes the file).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// What the source holds, counted in the snapshot the rows are copied from: what the target is
/// verified against, and (as a digest) how a later run recognises the same source.
#[derive(Debug, Clone)]
pub(super) struct Census {
    /// Per entry of [`TABLES`], in order.
    pub tables: Vec<TableCensus>,
    /// Messages per (queue id, state code).
    pub by_state: BTreeMap<(i64, i16), u64>,
    pub queues: BTreeMap<i64, QueueCensus>,
    /// SQLite's AUTOINCREMENT counters (`sqlite_sequence`): ids handed out, whether or not
    /// their rows are still there.
    pub sequences: BTreeMap<String, i64>,
    /// The durable id mark beside the file (`sqlite/ids.rs`), if there is one.
    pub id_mark: Option<i64>,
    /// Per plugin version (name, version): its recorded size and the bytes actually stored
    /// (in the row, or in its pieces).
    pub plugin_bytes: BTreeMap<(String, i64), (i64, i64)>,
    /// A digest of everything above but the id mark (which a server start moves).
    pub digest: String,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct TableCensus {
    pub rows: u64,
    /// The highest rowid: for tables keyed by `id`, the highest id.
    pub max_rowid: i64,
}

#[derive(Debug, Clone)]
pub(super) struct QueueCensus {
    pub name: String,
    /// enqueued, acked, retried, dead, cancelled, expired (the order of `Counter`).
    pub totals: [i64; 6],
    /// The depth counters SQLite kept: scheduled, ready, leased, dead.
    pub depths: [i64; 4],
}

impl Census {
    pub(super) fn messages(&self) -> u64 {
        self.tables[super::tables::messages_index()].rows
    }

    pub(super) fn max_message_id(&self) -> i64 {
        self.tables[super::tables::messages_index()].max_rowid
    }
}

/// Where a run starts: table `table` of [`TABLES`], after key `after` (empty: from the start).
#[derive(Debug, Clone)]
pub(super) struct Start {
    pub table: usize,
    pub after: Vec<serde_json::Value>,
}

/// Rows of one table, in key order, ready for `COPY`.
pub(super) struct Batch {
    pub table: usize,
    pub rows: Vec<Vec<PgValue>>,
    /// The key of the last row (the previous batch's when this one is empty).
    pub last_key: Vec<serde_json::Value>,
    /// No rows of the table follow.
    pub end_of_table: bool,
    pub warnings: Vec<String>,
}

/// The running reader's ends.
pub(super) struct Reader {
    pub census: oneshot::Receiver<Result<Census, CopyError>>,
    /// Taken when the start is sent.
    pub start: Option<oneshot::Sender<Start>>,
    pub batches: mpsc::Receiver<Result<Batch, CopyError>>,
    pub thread: std::thread::JoinHandle<()>,
}

/// Starts the reader on `path`: it opens the file, checks it is a Spool database of this
/// build's schema, sends the census, then waits for where to start and streams batches of up to
/// `batch_rows` rows until the last table ends. It stops early when the other side hangs up.
pub(super) fn spawn(path: PathBuf, batch_rows: usize) -> Result<Reader, CopyError> {
    let (census_tx, census_rx) = oneshot::channel();
    let (start, start_rx) = oneshot::channel();
    let (batch_tx, batches) = mpsc::channel(2);
    let thread = std::thread::Builder::new()
        .name("spool-migrate-read".into())
        .spawn(move || {
            let mut conn = match open(&path) {
                Ok(conn) => conn,
                Err(e) => {
                    let _ = census_tx.send(Err(e));
                    return;
                }
            };
            // A deferred transaction takes its snapshot at the first read, the census's.
            let tx = match conn.transaction() {
                Ok(tx) => tx,
                Err(e) => {
                    let _ = census_tx.send(Err(source_error("begin a read transaction", e)));
                    return;
                }
            };
            let found = check_schema(&tx, &path).and_then(|()| census(&tx, &path));
            let ok = found.is_ok();
            if census_tx.send(found).is_err() || !ok {
                return;
            }
            let Ok(start) = start_rx.blocking_recv() else {
                return;
            };
            if let Err(e) = stream(&tx, start, batch_rows.max(1), &batch_tx) {
                let _ = batch_tx.blocking_send(Err(e));
            }
        })
        .map_err(|e| CopyError::Source(format!("cannot start the reading thread: {e}")))?;
    Ok(Reader {
        census: census_rx,
        start: Some(start),
        batches,
        thread,
    })
}

fn source_error(what: &str, e: rusqlite::Error) -> CopyError {
    CopyError::Source(format!("{what}: {e}"))
}

/// Opens `path` read-only: the copy never writes, checkpoints or deletes the write-ahead log.
fn open(path: &Path) -> Result<Connection, CopyError> {
    if !path.is_file() {
        return Err(CopyError::NotFound(path.to_owned()));
    }
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags)
        .map_err(|e| source_error(&format!("cannot open {}", path.display()), e))?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| source_error("set busy_timeout", e))?;
    Ok(conn)
}

/// Refuses a file that is not a Spool database, or one at another schema version than this
/// build's (its tables would not be the ones [`TABLES`] describes).
fn check_schema(conn: &Connection, path: &Path) -> Result<(), CopyError> {
    let not_spool = |reason: String| CopyError::NotSpool {
        path: path.to_owned(),
        reason,
    };
    let version: i64 = match conn.pragma_query_value(None, "user_version", |r| r.get(0)) {
        Ok(v) => v,
        Err(e) if e.sqlite_error_code() == Some(ErrorCode::NotADatabase) => {
            return Err(not_spool("it is not an SQLite database".into()));
        }
        Err(e) => return Err(source_error("read the schema version", e)),
    };
    let mut stmt = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .map_err(|e| source_error("list the tables", e))?;
    let tables = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .and_then(|rows| rows.collect::<Result<Vec<_>, _>>())
        .map_err(|e| source_error("list the tables", e))?;
    let missing: Vec<&str> = ["queues", "messages"]
        .into_iter()
        .filter(|t| !tables.iter().any(|have| have == t))
        .collect();
    if tables.is_empty() {
        return Err(not_spool("it holds no tables".into()));
    }
    if version == 0 || !missing.is_empty() {
        return Err(not_spool(format!(
            "it has no {} table; its tables are {}",
            missing.join(" or "),
            tables.join(", ")
        )));
    }
    let expected = i64::try_from(crate::sqlite::SCHEMA_VERSION).unwrap_or(i64::MAX);
    if version < expected {
        return Err(CopyError::SchemaOutdated {
            path: path.to_owned(),
            found: version,
            expected,
        });
    }
    if version > expected {
        return Err(CopyError::SchemaNewer {
            path: path.to_owned(),
            found: version,
            expected,
        });
    }
    Ok(())
}

/// Runs `sql` and maps every row with `f`.
fn collect<T>(
    conn: &Connection,
    sql: &str,
    what: &str,
    f: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> Result<Vec<T>, CopyError> {
    let mut stmt = conn.prepare(sql).map_err(|e| source_error(what, e))?;
    let rows = stmt
        .query_map([], f)
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<T>>>())
        .map_err(|e| source_error(what, e))?;
    Ok(rows)
}

/// Counts what the source holds (see [`Census`]).
fn census(conn: &Connection, path: &Path) -> Result<Census, CopyError> {
    let mut tables = Vec::with_capacity(TABLES.len());
    for t in TABLES {
        let sql = format!(
            "SELECT count(*), coalesce(max(rowid), 0) FROM \"{}\"",
            t.name
        );
        let (rows, max_rowid): (i64, i64) = conn
            .query_row(&sql, [], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(|e| source_error(&format!("count the rows of {}", t.name), e))?;
        tables.push(TableCensus {
            rows: u64::try_from(rows).unwrap_or(0),
            max_rowid,
        });
    }
    let mut by_state = BTreeMap::new();
    // The (queue_id, state, id) index covers this: no message row is read.
    for (queue, state, n) in collect(
        conn,
        "SELECT queue_id, state, count(*) FROM messages GROUP BY queue_id, state",
        "count messages by state",
        |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        },
    )? {
        let state = i16::try_from(state).map_err(|_| {
            CopyError::Source(format!("messages of queue id {queue} have state {state}"))
        })?;
        by_state.insert((queue, state), u64::try_from(n).unwrap_or(0));
    }
    let queues = collect(
        conn,
        "SELECT id, name, enqueued_total, acked_total, retried_total, dead_total, \
         cancelled_total, expired_total, scheduled_now, ready_now, leased_now, dead_now \
         FROM queues",
        "read the queues' counters",
        |r| {
            let n = |i: usize| r.get::<_, i64>(i);
            Ok((
                n(0)?,
                QueueCensus {
                    name: r.get(1)?,
                    totals: [n(2)?, n(3)?, n(4)?, n(5)?, n(6)?, n(7)?],
                    depths: [n(8)?, n(9)?, n(10)?, n(11)?],
                },
            ))
        },
    )?
    .into_iter()
    .collect();
    let sequences = collect(
        conn,
        "SELECT name, seq FROM sqlite_sequence",
        "read the id counters",
        |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)),
    )?
    .into_iter()
    .collect();
    // length() of a blob is read from its header, not by loading the component.
    let plugin_bytes = collect(
        conn,
        "SELECT p.name, p.version, p.size, CASE WHEN length(p.wasm) > 0 \
         THEN length(p.wasm) ELSE (SELECT coalesce(sum(length(c.bytes)), 0) \
         FROM plugin_chunks c WHERE c.sha256 = p.sha256) END FROM plugins p",
        "measure the plugin components",
        |r| {
            Ok((
                (r.get::<_, String>(0)?, r.get::<_, i64>(1)?),
                (r.get::<_, i64>(2)?, r.get::<_, i64>(3)?),
            ))
        },
    )?
    .into_iter()
    .collect();
    let id_mark = crate::sqlite::ids::read_mark(&crate::sqlite::ids::mark_path(path))?;
    let mut census = Census {
        tables,
        by_state,
        queues,
        sequences,
        id_mark,
        plugin_bytes,
        digest: String::new(),
    };
    census.digest = digest(&census);
    Ok(census)
}

/// A fingerprint of the census (FNV-1a, 64 bits): equal for the same database state, and
/// different once rows were added, removed or moved between states, or a plugin changed.
fn digest(c: &Census) -> String {
    let mut text = format!("schema {};", crate::sqlite::SCHEMA_VERSION);
    for (t, n) in TABLES.iter().zip(&c.tables) {
        let _ = write!(text, "{} {} {};", t.name, n.rows, n.max_rowid);
    }
    for ((q, s), n) in &c.by_state {
        let _ = write!(text, "m {q} {s} {n};");
    }
    for (id, q) in &c.queues {
        let _ = write!(text, "q {id} {:?} {:?} {:?};", q.name, q.totals, q.depths);
    }
    for (name, seq) in &c.sequences {
        let _ = write!(text, "seq {name:?} {seq};");
    }
    for ((name, version), (size, stored)) in &c.plugin_bytes {
        let _ = write!(text, "p {name:?} {version} {size} {stored};");
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// Streams every table from `start` on, in batches.
fn stream(
    conn: &Connection,
    start: Start,
    batch_rows: usize,
    out: &mpsc::Sender<Result<Batch, CopyError>>,
) -> Result<(), CopyError> {
    let mut after = start.after;
    for (index, table) in TABLES.iter().enumerate().skip(start.table) {
        stream_table(
            conn,
            index,
            table,
            std::mem::take(&mut after),
            batch_rows,
            out,
        )?;
    }
    Ok(())
}

/// An identifier quoted for SQL (the names are ours; quoting keeps words like `key` and
/// `filter` from being read as keywords on either side).
pub(super) fn quoted(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

fn stream_table(
    conn: &Connection,
    index: usize,
    table: &Table,
    after: Vec<serde_json::Value>,
    batch_rows: usize,
    out: &mpsc::Sender<Result<Batch, CopyError>>,
) -> Result<(), CopyError> {
    let keys = quoted(table.key);
    let cols: Vec<&str> = table.cols.iter().map(|c| c.name).collect();
    let filter = if after.is_empty() {
        String::new()
    } else {
        let marks: Vec<String> = (1..=after.len()).map(|i| format!("?{i}")).collect();
        format!(" WHERE ({keys}) > ({})", marks.join(", "))
    };
    let sql = format!(
        "SELECT {keys}, {} FROM \"{}\"{filter} ORDER BY {keys}",
        quoted(&cols),
        table.name
    );
    let err = |e: rusqlite::Error| source_error(&format!("read {}", table.name), e);
    let mut stmt = conn.prepare(&sql).map_err(err)?;
    let bound: Vec<SqlValue> = after.iter().map(json_to_sql).collect();
    let mut rows = stmt
        .query(rusqlite::params_from_iter(bound.iter()))
        .map_err(err)?;
    let send = |batch: Batch| {
        out.blocking_send(Ok(batch))
            .map_err(|_| CopyError::Source("the PostgreSQL side stopped".into()))
    };
    let mut batch = Batch::new(index, after);
    let mut bytes = 0usize;
    let width = table.key.len();
    while let Some(row) = rows.next().map_err(err)? {
        let mut key = Vec::with_capacity(width);
        for i in 0..width {
            key.push(key_value(table, i, row.get_ref(i).map_err(err)?)?);
        }
        let mut values = Vec::with_capacity(table.cols.len());
        for (i, col) in table.cols.iter().enumerate() {
            let value = row.get_ref(width + i).map_err(err)?;
            bytes += value_size(value);
            values.push(convert(
                conn, table, col, value, &key, row, width, &mut batch,
            )?);
        }
        batch.rows.push(values);
        batch.last_key = key;
        if batch.rows.len() >= batch_rows || bytes >= BATCH_BYTES {
            let next = Batch::new(index, batch.last_key.clone());
            send(std::mem::replace(&mut batch, next))?;
            bytes = 0;
        }
    }
    batch.end_of_table = true;
    send(batch)
}

impl Batch {
    fn new(table: usize, last_key: Vec<serde_json::Value>) -> Batch {
        Batch {
            table,
            rows: Vec::new(),
            last_key,
            end_of_table: false,
            warnings: Vec::new(),
        }
    }
}

fn json_to_sql(v: &serde_json::Value) -> SqlValue {
    match v {
        serde_json::Value::Number(n) => n.as_i64().map_or(SqlValue::Null, SqlValue::Integer),
        serde_json::Value::String(s) => SqlValue::Text(s.clone()),
        _ => SqlValue::Null,
    }
}

fn key_value(table: &Table, i: usize, v: ValueRef<'_>) -> Result<serde_json::Value, CopyError> {
    match v {
        ValueRef::Integer(n) => Ok(n.into()),
        ValueRef::Text(t) => Ok(String::from_utf8_lossy(t).into_owned().into()),
        other => Err(CopyError::Source(format!(
            "{}.{} holds a {:?} value, where a key was expected",
            table.name,
            table.key[i],
            other.data_type()
        ))),
    }
}

/// The row's key as people read it: `id 42`, `plugin "p", key "k"`.
pub(super) fn show_key(table: &Table, key: &[serde_json::Value]) -> String {
    table
        .key
        .iter()
        .zip(key)
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn value_size(v: ValueRef<'_>) -> usize {
    match v {
        ValueRef::Text(t) | ValueRef::Blob(t) => t.len(),
        _ => 8,
    }
}

/// One SQLite value as its PostgreSQL column's type.
#[allow(clippy::too_many_arguments)]
fn convert(
    conn: &Connection,
    table: &Table,
    col: &Col,
    v: ValueRef<'_>,
    key: &[serde_json::Value],
    row: &rusqlite::Row<'_>,
    width: usize,
    batch: &mut Batch,
) -> Result<PgValue, CopyError> {
    let bad = |what: String| {
        CopyError::Source(format!(
            "{}.{} of the row with {} cannot be copied: {what}",
            table.name,
            col.name,
            show_key(table, key)
        ))
    };
    if let ValueRef::Null = v {
        if !col.null {
            return Err(bad("it is NULL, and the column is NOT NULL".into()));
        }
        return Ok(match col.kind {
            Kind::Int2 => Box::new(None::<i16>),
            Kind::Int4 => Box::new(None::<i32>),
            Kind::Int8 => Box::new(None::<i64>),
            Kind::Bool => Box::new(None::<bool>),
            Kind::Text => Box::new(None::<String>),
            Kind::Bytea | Kind::Wasm => Box::new(None::<Vec<u8>>),
            Kind::Jsonb => Box::new(None::<serde_json::Value>),
        });
    }
    let int = || match v {
        ValueRef::Integer(n) => Ok(n),
        other => Err(bad(format!(
            "it holds a {:?} value, not an integer",
            other.data_type()
        ))),
    };
    let text = || match v {
        ValueRef::Text(t) | ValueRef::Blob(t) => std::str::from_utf8(t)
            .map(str::to_owned)
            .map_err(|e| bad(format!("it is not UTF-8 text ({e})"))),
        ValueRef::Integer(n) => Ok(n.to_string()),
        other => Err(bad(format!(
            "it holds a {:?} value, not text",
            other.data_type()
        ))),
    };
    let bytes = || match v {
        ValueRef::Text(t) | ValueRef::Blob(t) => Ok(t.to_vec()),
        other => Err(bad(format!(
            "it holds a {:?} value, not bytes",
            other.data_type()
        ))),
    };
    let range = |n: i64| bad(format!("{n} is out of range for its column"));
    Ok(match col.kind {
        Kind::Int2 => {
            let n = int()?;
            Box::new(i16::try_from(n).map_err(|_| range(n))?)
        }
        Kind::Int4 => {
            let n = int()?;
            Box::new(i32::try_from(n).map_err(|_| range(n))?)
        }
        Kind::Int8 => Box::new(int()?),
        Kind::Bool => match int()? {
            0 => Box::new(false),
            1 => Box::new(true),
            n => return Err(bad(format!("{n} is not a boolean (0 or 1)"))),
        },
        Kind::Text => Box::new(text()?),
        Kind::Bytea => Box::new(bytes()?),
        Kind::Jsonb => {
            let text = text()?;
            let json: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| bad(format!("it is not JSON ({e})")))?;
            Box::new(json)
        }
        Kind::Wasm => Box::new(component(conn, table, v, row, width, batch, &bad)?),
    })
}

/// A plugin row's component: its own bytes, or its pieces put together (`stored_bytes`, the
/// SQLite store's own reading). A size that does not match is copied as it is (the hosts then
/// report the version damaged, as the SQLite server would) and noted as a warning.
fn component(
    conn: &Connection,
    table: &Table,
    v: ValueRef<'_>,
    row: &rusqlite::Row<'_>,
    width: usize,
    batch: &mut Batch,
    bad: &dyn Fn(String) -> CopyError,
) -> Result<Vec<u8>, CopyError> {
    let field = |name: &str| {
        column(table, row, width, name).ok_or_else(|| bad(format!("cannot read its {name}")))
    };
    let name = match field("name")? {
        ValueRef::Text(t) => String::from_utf8_lossy(t).into_owned(),
        _ => return Err(bad("its name is not text".into())),
    };
    let (ValueRef::Integer(version), ValueRef::Integer(size)) = (field("version")?, field("size")?)
    else {
        return Err(bad("its version or size is not an integer".into()));
    };
    let own = match v {
        ValueRef::Blob(b) | ValueRef::Text(b) => b,
        _ => return Err(bad("it is not a blob".into())),
    };
    let wasm = if own.is_empty() {
        crate::sqlite::plugin_chunks::stored_bytes(conn, &name, version)?
    } else {
        own.to_vec()
    };
    if i64::try_from(wasm.len()).ok() != Some(size) {
        batch.warnings.push(format!(
            "plugin {name:?} version {version} is damaged in the SQLite database: {} bytes are \
             stored where {size} were deployed; it was copied as it is, and the hosts report it \
             damaged as the SQLite server did (deploy it again to repair it)",
            wasm.len()
        ));
    }
    Ok(wasm)
}

/// The value of column `name` of a row read with `width` key columns first.
fn column<'r>(
    table: &Table,
    row: &'r rusqlite::Row<'_>,
    width: usize,
    name: &str,
) -> Option<ValueRef<'r>> {
    let i = table.cols.iter().position(|c| c.name == name)?;
    row.get_ref(width + i).ok()
}

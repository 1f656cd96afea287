//! Plugin bytes stored in pieces (`plugin_chunks`), each written in a transaction of its own.
//!
//! There is one writer and every write shares its group commit. A Python or JavaScript
//! component (12-18 MB) written in one piece held that commit for over 100 ms (the log write and
//! the checkpoint after it), and every enqueue of every queue waited behind it. In
//! [`CHUNK_BYTES`] pieces, each commit takes a few milliseconds and other writes go between
//! them. The version row is written last, with an empty `wasm`, which means "the bytes are the
//! chunks of my `sha256`"; until then no reader can see the upload. Chunks are shared by every
//! version with the same bytes, deleted with the last plugin that uses them, and chunks that an
//! interrupted upload left behind are removed by maintenance after [`ORPHAN_AFTER_MS`].

use rusqlite::{Connection, OptionalExtension, params};

use super::rows::Ctx;
use super::writer::Tx;
use crate::{StoreError, StoreResult};

/// Size of one piece, and the size from which a component is stored in pieces.
pub(super) const CHUNK_BYTES: usize = 256 << 10;

/// How old unreferenced chunks must be before maintenance removes them: long enough for an
/// upload in progress (its chunks are unreferenced until its last write) to finish.
pub(super) const ORPHAN_AFTER_MS: i64 = 60 * 60 * 1000;

/// Whether a component of `len` bytes is stored in pieces.
pub(super) fn chunked(len: usize) -> bool {
    len > CHUNK_BYTES
}

/// Writes piece `seq` of the component with `sha256` (replacing one written before).
pub(super) fn put_chunk(
    tx: &mut Tx<'_>,
    sha256: &str,
    seq: usize,
    bytes: &[u8],
) -> StoreResult<()> {
    tx.conn
        .prepare_cached(
            "INSERT INTO plugin_chunks (sha256, seq, bytes, created_at) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (sha256, seq) DO UPDATE SET bytes = excluded.bytes, \
             created_at = excluded.created_at",
        )
        .ctx("prepare plugin chunk write")?
        .execute(params![sha256, seq as i64, bytes, spool_model::now_ms()])
        .ctx("write plugin chunk")?;
    Ok(())
}

/// Whether every piece of a `len`-byte component with `sha256` is there.
pub(super) fn complete(conn: &Connection, sha256: &str, len: usize) -> StoreResult<bool> {
    let (count, total): (i64, i64) = conn
        .prepare_cached(
            "SELECT count(*), coalesce(sum(length(bytes)), 0) FROM plugin_chunks \
             WHERE sha256 = ?1",
        )
        .ctx("prepare plugin chunk check")?
        .query_row(params![sha256], |r| Ok((r.get(0)?, r.get(1)?)))
        .ctx("check plugin chunks")?;
    Ok(count as usize == len.div_ceil(CHUNK_BYTES) && total as usize == len)
}

/// The stored bytes of `name` version `version`: the row's own, or its chunks reassembled.
pub(crate) fn stored_bytes(conn: &Connection, name: &str, version: i64) -> StoreResult<Vec<u8>> {
    let (sha256, size, wasm): (String, i64, Vec<u8>) = conn
        .prepare_cached("SELECT sha256, size, wasm FROM plugins WHERE name = ?1 AND version = ?2")
        .ctx("prepare plugin bytes")?
        .query_row(params![name, version], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .optional()
        .ctx("read plugin bytes")?
        .ok_or_else(|| StoreError::PluginNotFound(name.to_owned()))?;
    if !wasm.is_empty() {
        return Ok(wasm);
    }
    let mut out = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    let mut stmt = conn
        .prepare_cached("SELECT bytes FROM plugin_chunks WHERE sha256 = ?1 ORDER BY seq")
        .ctx("prepare plugin chunk read")?;
    let mut rows = stmt.query(params![sha256]).ctx("read plugin chunks")?;
    while let Some(row) = rows.next().ctx("read plugin chunk")? {
        let bytes = row.get_ref(0).ctx("read plugin chunk")?;
        out.extend_from_slice(bytes.as_blob().unwrap_or_default());
    }
    // Missing or damaged pieces make bytes whose SHA-256 does not match, which the registry
    // reports as a damaged version.
    Ok(out)
}

/// Deletes chunks no stored version refers to; with `older_than`, only those written before it.
pub(super) fn delete_unreferenced(conn: &Connection, older_than: Option<i64>) -> StoreResult<u64> {
    let n = conn
        .prepare_cached(
            "DELETE FROM plugin_chunks WHERE created_at < ?1 \
             AND sha256 NOT IN (SELECT sha256 FROM plugins)",
        )
        .ctx("prepare plugin chunk cleanup")?
        .execute(params![older_than.unwrap_or(i64::MAX)])
        .ctx("delete unreferenced plugin chunks")?;
    Ok(n as u64)
}

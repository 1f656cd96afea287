//! Reads `<db>-wal` before SQLite does, to find committed transactions SQLite would drop.
//!
//! SQLite replays the write-ahead log frame by frame while each frame carries the log's current
//! salts and extends an unbroken chain of checksums, and keeps everything up to the last commit
//! frame of that run. At the first frame that breaks the chain it stops, silently: whatever
//! follows is taken for the torn tail of a crash. That is right for a real tail, but when a
//! damaged frame sits in the middle of the log, the commit frames after it (current salts, a
//! non-zero "database size after commit") are transactions that were acknowledged and are now
//! lost. This module finds them so the server can refuse to start instead.
//!
//! Format (<https://www.sqlite.org/fileformat.html#the_write_ahead_log>): a 32-byte header
//! (magic, version, page size, checkpoint sequence, salt-1, salt-2, checksum-1, checksum-2),
//! then frames of a 24-byte header (page number, database size after commit or 0, salt-1,
//! salt-2, checksum-1, checksum-2) and one page. Checksums are cumulative over the header's
//! first 24 bytes, then each frame's first 8 header bytes and its page, in 32-bit words whose
//! byte order the magic's low bit gives.

use std::fs::File;
use std::io::{BufReader, ErrorKind, Read};
use std::path::{Path, PathBuf};

const HEADER: usize = 32;
const FRAME_HEADER: usize = 24;
const MAGIC: u32 = 0x377f_0682;

/// What the log holds, as far as the question "would SQLite drop a commit?" goes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct WalScan {
    /// Complete frames in the file (a partial frame at the end is not counted).
    pub frames: u64,
    /// Frames SQLite will apply: up to the last commit before the first invalid frame.
    pub replayed: u64,
    /// 1-based number of the first frame that breaks the checksum chain, if one does before
    /// the end.
    pub first_invalid: Option<u64>,
    /// Commit frames of the current log generation after the first invalid frame: committed
    /// transactions SQLite would drop.
    pub lost_commits: u64,
    /// The log header itself fails its checksum while frames of its generation follow: SQLite
    /// ignores the whole log.
    pub header_damaged: bool,
}

impl WalScan {
    /// Whether opening the database would silently lose committed transactions.
    pub fn loses_commits(&self) -> bool {
        self.lost_commits > 0
    }

    /// One sentence for logs and refusals.
    pub fn describe(&self, wal: &Path) -> String {
        if self.header_damaged {
            format!(
                "the header of the write-ahead log {} is damaged, so SQLite would ignore all {} \
                 frames in it, {} of them commits",
                wal.display(),
                self.frames,
                self.lost_commits
            )
        } else {
            format!(
                "the write-ahead log {} is damaged at frame {} of {}: SQLite would stop there and \
                 drop {} committed transaction(s) that follow it",
                wal.display(),
                self.first_invalid.unwrap_or(0),
                self.frames,
                self.lost_commits
            )
        }
    }
}

/// The log file of `db`.
pub(crate) fn wal_path(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push("-wal");
    PathBuf::from(s)
}

/// Scans the log of `db`. `None` when there is no log (or not even a header's worth of it).
pub(crate) fn scan(db: &Path) -> std::io::Result<Option<WalScan>> {
    let file = match File::open(wal_path(db)) {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    scan_reader(BufReader::with_capacity(1 << 20, file))
}

fn scan_reader(mut r: impl Read) -> std::io::Result<Option<WalScan>> {
    let mut header = [0u8; HEADER];
    if !read_full(&mut r, &mut header)? {
        return Ok(None);
    }
    let magic = be(&header[0..4]);
    let big_endian = magic & 1 == 1;
    let page_size = be(&header[8..12]) as usize;
    let salts = (be(&header[16..20]), be(&header[20..24]));
    let sane =
        magic & !1 == MAGIC && page_size.is_power_of_two() && (512..=65536).contains(&page_size);
    if !sane {
        // Not even a log header SQLite recognises: it ignores the file, and with no page size
        // there are no frames to speak of.
        return Ok(None);
    }
    let header_ok =
        checksum(&header[..24], big_endian, (0, 0)) == (be(&header[24..28]), be(&header[28..32]));

    let mut scan = WalScan::default();
    let mut sum = (be(&header[24..28]), be(&header[28..32]));
    let mut chain_ok = header_ok;
    let mut frame = vec![0u8; FRAME_HEADER + page_size];
    while read_full(&mut r, &mut frame)? {
        scan.frames += 1;
        let commit = be(&frame[4..8]) != 0;
        let current = (be(&frame[8..12]), be(&frame[12..16])) == salts;
        if chain_ok {
            let s = checksum(
                &frame[FRAME_HEADER..],
                big_endian,
                checksum(&frame[..8], big_endian, sum),
            );
            if current && s == (be(&frame[16..20]), be(&frame[20..24])) {
                sum = s;
                if commit {
                    scan.replayed = scan.frames;
                }
                continue;
            }
            // This frame is where SQLite stops: a torn tail if nothing of its generation
            // commits after it.
            chain_ok = false;
            scan.first_invalid = Some(scan.frames);
            continue;
        }
        if current && commit {
            scan.lost_commits += 1;
        }
    }
    if !header_ok {
        scan.first_invalid = Some(1);
        scan.header_damaged = scan.lost_commits > 0;
    }
    Ok(Some(scan))
}

/// Fills `buf` completely; false at a clean or partial end of the file.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<bool> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => return Ok(false),
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

fn be(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// SQLite's WAL checksum over `data` (a multiple of 8 bytes), continuing from `s`.
fn checksum(data: &[u8], big_endian: bool, s: (u32, u32)) -> (u32, u32) {
    let (mut s0, mut s1) = s;
    for pair in data.chunks_exact(8) {
        let word = |b: &[u8]| {
            let a = [b[0], b[1], b[2], b[3]];
            if big_endian {
                u32::from_be_bytes(a)
            } else {
                u32::from_le_bytes(a)
            }
        };
        s0 = s0.wrapping_add(word(&pair[0..4])).wrapping_add(s1);
        s1 = s1.wrapping_add(word(&pair[4..8])).wrapping_add(s0);
    }
    (s0, s1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    /// A database whose log holds `commits` transactions (never checkpointed), copied aside the
    /// way `cp` copies a busy database: the file and its log, while the writer is open.
    fn busy_copy(dir: &Path, commits: usize) -> PathBuf {
        let db = dir.join("live.db");
        let conn = Connection::open(&db).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        // The table goes into the main file; only the inserts stay in the log.
        conn.execute_batch("CREATE TABLE t (v BLOB); PRAGMA wal_checkpoint(TRUNCATE);")
            .unwrap();
        for i in 0..commits {
            conn.execute("INSERT INTO t VALUES (randomblob(3000 + ?1))", [i as i64])
                .unwrap();
        }
        let copy = dir.join("copy.db");
        std::fs::copy(&db, &copy).unwrap();
        std::fs::copy(wal_path(&db), wal_path(&copy)).unwrap();
        drop(conn);
        copy
    }

    fn frame_offset(db: &Path, frame: u64) -> u64 {
        let bytes = std::fs::read(wal_path(db)).unwrap();
        let page_size = be(&bytes[8..12]) as u64;
        HEADER as u64 + (frame - 1) * (FRAME_HEADER as u64 + page_size)
    }

    fn damage(db: &Path, offset: u64) {
        let path = wal_path(db);
        let mut bytes = std::fs::read(&path).unwrap();
        for b in &mut bytes[offset as usize..offset as usize + 16] {
            *b ^= 0x5a;
        }
        std::fs::write(&path, bytes).unwrap();
    }

    #[test]
    fn an_intact_log_replays_every_commit() {
        let dir = tempfile::tempdir().unwrap();
        let db = busy_copy(dir.path(), 5);
        let s = scan(&db).unwrap().unwrap();
        assert!(s.frames >= 5, "{s:?}");
        assert_eq!(s.replayed, s.frames, "{s:?}");
        assert_eq!((s.first_invalid, s.lost_commits), (None, 0), "{s:?}");
        assert!(!s.loses_commits());
    }

    #[test]
    fn a_torn_tail_is_not_a_loss() {
        let dir = tempfile::tempdir().unwrap();
        let db = busy_copy(dir.path(), 5);
        let len = std::fs::metadata(wal_path(&db)).unwrap().len();
        // Half of the last frame made it to disk, and the one before it is garbled.
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(wal_path(&db))
            .unwrap();
        f.set_len(len - 1000).unwrap();
        let frames = scan(&db).unwrap().unwrap().frames;
        damage(&db, frame_offset(&db, frames) + 100);
        let s = scan(&db).unwrap().unwrap();
        assert_eq!(s.first_invalid, Some(frames), "{s:?}");
        assert!(!s.loses_commits(), "{s:?}");
    }

    #[test]
    fn damage_before_later_commits_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let db = busy_copy(dir.path(), 6);
        damage(&db, frame_offset(&db, 2) + 200);
        let s = scan(&db).unwrap().unwrap();
        assert_eq!(s.first_invalid, Some(2), "{s:?}");
        assert!(s.loses_commits(), "{s:?}");
        assert!(s.replayed < 2, "{s:?}");
        let text = s.describe(&wal_path(&db));
        assert!(text.contains("frame 2") && text.contains("drop"), "{text}");
        // SQLite indeed drops them: the copy opens with fewer rows than were committed.
        let rows: i64 = Connection::open(&db)
            .unwrap()
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert!(rows < 6, "{rows}");
    }

    #[test]
    fn a_damaged_header_hides_the_whole_log() {
        let dir = tempfile::tempdir().unwrap();
        let db = busy_copy(dir.path(), 3);
        let path = wal_path(&db);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[13] ^= 0xff; // the checkpoint sequence: covered by the header checksum
        std::fs::write(&path, bytes).unwrap();
        let s = scan(&db).unwrap().unwrap();
        assert!(s.header_damaged && s.loses_commits(), "{s:?}");
    }

    #[test]
    fn no_log_no_scan() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(scan(&dir.path().join("none.db")).unwrap(), None);
    }
}

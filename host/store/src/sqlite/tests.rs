//! What only SQLite has: the file and its migrations, the write-ahead log and checkpoints,
//! backups, the size cap, integrity of the depth counters against the rows, plugin pieces, the
//! query plans. How the store behaves through the `Store` trait is tested once for both
//! backends, in `crate::behaviour`.

use std::time::Duration;

use tempfile::TempDir;

use super::*;

fn open_in(dir: &TempDir, opts: StoreOptions) -> SqliteStore {
    SqliteStore::open(&dir.path().join("spool.db"), opts).expect("open store")
}

fn patch(json: &str) -> QueueConfigPatch {
    serde_json::from_str(json).expect("patch json")
}

/// A store with one queue `q` configured by `config` (a JSON patch).
async fn setup(config: &str) -> (TempDir, SqliteStore) {
    setup_with(config, StoreOptions::default()).await
}

async fn setup_with(config: &str, opts: StoreOptions) -> (TempDir, SqliteStore) {
    let dir = TempDir::new().unwrap();
    let store = open_in(&dir, opts);
    store.put_queue("q", &patch(config)).await.unwrap();
    (dir, store)
}

fn msg(payload: &str) -> NewMessage {
    NewMessage {
        payload: payload.as_bytes().to_vec(),
        ..NewMessage::default()
    }
}

async fn enqueue_one(store: &SqliteStore, m: NewMessage) -> MessageId {
    store.enqueue("q", vec![m]).await.unwrap()[0].id
}

// --- open / migrations -----------------------------------------------------------------------

#[tokio::test]
async fn migrations_are_idempotent_on_reopen_and_data_survives() {
    let dir = TempDir::new().unwrap();
    let id = {
        let store = open_in(&dir, StoreOptions::default());
        store.put_queue("q", &patch("{}")).await.unwrap();
        enqueue_one(&store, msg("kept")).await
    };
    // The drop above joined the writer; reopening applies no migration twice.
    let store = open_in(&dir, StoreOptions::default());
    let m = store.get_message(id).await.unwrap();
    assert_eq!(m.payload.as_deref(), Some(&b"kept"[..]));
    assert_eq!(m.state, MessageState::Ready);
    let conn = Connection::open(dir.path().join("spool.db")).unwrap();
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap();
    assert_eq!(version, schema::SCHEMA_VERSION as i64);
    let mode: String = conn
        .pragma_query_value(None, "journal_mode", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let dir = TempDir::new().unwrap();
    drop(open_in(&dir, StoreOptions::default()));
    let conn = Connection::open(dir.path().join("spool.db")).unwrap();
    conn.pragma_update(None, "user_version", 99).unwrap();
    drop(conn);
    let err = SqliteStore::open(&dir.path().join("spool.db"), StoreOptions::default())
        .expect_err("newer schema must be refused");
    let text = err.to_string();
    assert!(text.contains("99") && text.contains("newer"), "{text}");
}

#[tokio::test]
async fn the_breaker_migration_completes_stored_configs_and_keeps_their_values() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("spool.db");
    drop(open_in(&dir, StoreOptions::default()));
    {
        let store = open_in(&dir, StoreOptions::default());
        store
            .put_queue("q", &patch(r#"{"concurrency": 3}"#))
            .await
            .unwrap();
    }
    // As an older Spool stored it: no breaker keys.
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(
        "UPDATE queues SET config = json_remove(config, '$.breaker_failures', \
         '$.breaker_cooldown_ms', '$.breaker_max_cooldown_ms'); \
         DROP TABLE plugin_config; DROP TABLE plugin_grants; DROP TABLE plugin_chunks; \
         DROP TABLE queue_history;",
    )
    .unwrap();
    // The breaker's migration and the three after it (plugin config, plugin chunks, queue
    // history) run again.
    conn.pragma_update(None, "user_version", schema::SCHEMA_VERSION as i64 - 4)
        .unwrap();
    drop(conn);
    let store = open_in(&dir, StoreOptions::default());
    let q = store.get_queue("q").await.unwrap();
    assert_eq!(q.config.concurrency, 3);
    assert_eq!(q.config.breaker_failures, 0, "off, as before");
    let conn = Connection::open(&path).unwrap();
    let stored: String = conn
        .query_row("SELECT config FROM queues WHERE name = 'q'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(stored.contains("\"breaker_cooldown_ms\":5000"), "{stored}");
}

// --- plumbing --------------------------------------------------------------------------------

#[tokio::test]
async fn debug_names_the_file() {
    let dir = TempDir::new().unwrap();
    let store = open_in(&dir, StoreOptions::default());
    assert!(format!("{store:?}").contains("spool.db"));
}

#[test]
fn cursors_round_trip_and_reject_garbage() {
    for id in [0, 1, 255, i64::MAX] {
        assert_eq!(
            crate::paging::decode_cursor(Some(&crate::paging::encode_cursor(id))).unwrap(),
            id
        );
    }
    assert_eq!(rows::decode_cursor(None).unwrap(), 0);
    for bad in [
        "",
        "12",
        "ffffffffffffffff",
        "000000000000000g",
        "+00000000000001",
    ] {
        assert!(
            matches!(
                rows::decode_cursor(Some(bad)),
                Err(StoreError::InvalidCursor(_))
            ),
            "{bad:?}"
        );
    }
}

#[test]
fn state_codes_match_the_sql_literals() {
    // The SQL spells states as literals; this pins the mapping they rely on.
    let codes: Vec<i64> = MessageState::ALL
        .iter()
        .map(|s| rows::state_code(*s))
        .collect();
    assert_eq!(codes, vec![0, 1, 2, 3, 4, 5, 6]);
    for s in MessageState::ALL {
        assert_eq!(rows::state_from_code(rows::state_code(s)), Some(s));
    }
    assert_eq!(rows::state_from_code(7), None);
}

#[tokio::test]
async fn claim_and_stats_queries_use_their_indexes() {
    let dir = TempDir::new().unwrap();
    drop(open_in(&dir, StoreOptions::default()));
    let conn = Connection::open(dir.path().join("spool.db")).unwrap();
    let plan = |sql: &str| -> String {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        let rows: Vec<String> = stmt
            .query_map(
                rusqlite::params_from_iter(std::iter::repeat_n(1i64, stmt.parameter_count())),
                |r| r.get::<_, String>(3),
            )
            .unwrap()
            .map(|r| r.unwrap())
            .collect();
        rows.join(" | ")
    };
    let p = plan(
        "SELECT id FROM messages WHERE queue_id = 1 AND state = 1 ORDER BY priority DESC, id LIMIT 10",
    );
    assert!(
        p.contains("messages_ready_by_priority") && !p.contains("TEMP B-TREE"),
        "{p}"
    );
    let p =
        plan("SELECT id FROM messages WHERE queue_id = 1 AND state = 1 ORDER BY id DESC LIMIT 10");
    assert!(
        p.contains("messages_by_state") && !p.contains("TEMP B-TREE"),
        "{p}"
    );
    let p = plan("SELECT id FROM messages WHERE queue_id = 1 AND state = 0 AND available_at <= 5");
    assert!(p.contains("messages_scheduled_due"), "{p}");
    let p = plan(
        "SELECT id FROM messages WHERE queue_id = 1 AND state < 2 AND attempts = 0 \
         AND expires_at IS NOT NULL AND expires_at <= 5",
    );
    assert!(p.contains("messages_ttl"), "{p}");
    // Expiry runs once per source state (for the depth counters) and must still take the TTL
    // index, not walk every ready row of the queue.
    for state in [0, 1] {
        let p = plan(&format!(
            "SELECT id FROM messages WHERE queue_id = 1 AND state < 2 AND state = {state} \
             AND attempts = 0 AND expires_at IS NOT NULL AND expires_at <= 5"
        ));
        assert!(p.contains("messages_ttl"), "{p}");
    }
    let p = plan("SELECT count(*) FROM messages WHERE queue_id = 1 AND state = ?1");
    assert!(p.contains("COVERING INDEX messages_by_state"), "{p}");
    let p = plan("SELECT id FROM messages WHERE state = 2 AND lease_expires_at <= 5");
    assert!(p.contains("messages_lease"), "{p}");
}

#[tokio::test]
async fn settle_with_explicit_sql_error_fails_only_that_caller() {
    // A job failing on the database (not on validation) rolls back to its savepoint only.
    let (_dir, store) = setup("{}").await;
    let a = store.clone();
    let bad = store.write("test", |tx| -> StoreResult<()> {
        tx.conn
            .execute(
                "INSERT INTO queues (id, name, config, created_at) VALUES (1, 'dup', '{}', 0)",
                [],
            )
            .map_err(|e| rows::db_error("insert duplicate", e))?;
        Ok(())
    });
    let good = a.enqueue("q", vec![msg("kept")]);
    let (bad, good) = tokio::join!(bad, good);
    assert!(matches!(bad, Err(StoreError::Database(_))));
    assert_eq!(good.unwrap().len(), 1);
    assert!(store.get_queue("dup").await.is_err());
    assert_eq!(store.queue_stats("q").await.unwrap().ready, 1);
}

// --- depth counters --------------------------------------------------------------------------

/// Counts each queue's rows per waiting state the slow way, for comparison with the counters.
fn counted_depths(path: &std::path::Path, queue: &str) -> [u64; 4] {
    let conn = Connection::open(path).unwrap();
    let mut out = [0u64; 4];
    for (slot, state) in [0, 1, 2, 4].into_iter().enumerate() {
        out[slot] = conn
            .query_row(
                "SELECT count(*) FROM messages m JOIN queues q ON q.id = m.queue_id \
                 WHERE q.name = ?1 AND m.state = ?2",
                rusqlite::params![queue, state],
                |r| r.get::<_, i64>(0),
            )
            .unwrap() as u64;
    }
    out
}

#[tokio::test]
async fn depth_counters_match_the_rows_through_every_transition() {
    // The behaviour suite's walk, which checks the counters against the listings, here also
    // against the rows counted in the file.
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("spool.db");
    let store = SqliteStore::open(&path, crate::behaviour::depth_walk_options()).unwrap();
    crate::behaviour::depth_walk(&store, Some(&|q: &str| counted_depths(&path, q))).await;
}

#[tokio::test]
async fn the_depth_migration_counts_existing_rows() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("spool.db");
    {
        let store = SqliteStore::open(&path, StoreOptions::default()).unwrap();
        store.put_queue("q", &patch("{}")).await.unwrap();
        store
            .enqueue("q", vec![msg("1"), msg("2"), msg("3")])
            .await
            .unwrap();
        store.claim("q", 1, 60_000).await.unwrap();
    }
    // Back to the schema before the counters existed, as a database of an older Spool.
    let conn = Connection::open(&path).unwrap();
    for column in ["scheduled_now", "ready_now", "leased_now", "dead_now"] {
        conn.execute_batch(&format!("ALTER TABLE queues DROP COLUMN {column}"))
            .unwrap();
    }
    // The counters were followed by six migrations: routes, schedules, the breaker's settings
    // (which only rewrite configs), plugin config and grants, plugin chunks, queue history.
    conn.execute_batch(
        "DROP TABLE queue_history; \
         DROP TABLE plugin_chunks; DROP TABLE plugin_config; DROP TABLE plugin_grants; \
         DROP TABLE schedule_fires; DROP TABLE schedules; \
         DROP TABLE routes; DROP INDEX messages_by_correlation; \
         ALTER TABLE messages DROP COLUMN parent_id; \
         ALTER TABLE messages DROP COLUMN chain_depth; \
         ALTER TABLE messages DROP COLUMN route_id;",
    )
    .unwrap();
    // Back to before the depth migration: it and the six after it (routes, schedules, the
    // breaker's settings, plugin config, plugin chunks, queue history) run again.
    conn.pragma_update(None, "user_version", schema::SCHEMA_VERSION as i64 - 7)
        .unwrap();
    drop(conn);
    let store = SqliteStore::open(&path, StoreOptions::default()).unwrap();
    let s = store.queue_stats("q").await.unwrap();
    assert_eq!((s.ready, s.leased, s.scheduled, s.dlq_depth), (2, 1, 0, 0));
}

#[tokio::test]
async fn a_full_database_refuses_writes_as_storage_full_and_keeps_what_it_had() {
    let opts = StoreOptions {
        max_size_bytes: Some(1 << 20),
        ..StoreOptions::default()
    };
    let (_dir, store) = setup_with("{}", opts).await;
    assert_eq!(store.write_failure().await, None);
    let big = "x".repeat(64 * 1024);
    let mut kept = Vec::new();
    let mut refused = None;
    // 1 MiB holds fewer than 16 such messages.
    for _ in 0..64 {
        match store.enqueue("q", vec![msg(&big)]).await {
            Ok(e) => kept.push(e[0].id),
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    let err = refused.expect("the cap was reached");
    assert!(matches!(err, StoreError::StorageFull(_)), "{err:?}");
    let failure = store
        .write_failure()
        .await
        .expect("writes are failing, and the probe agrees");
    assert!(failure.full, "{failure:?}");
    // Reads go on, and everything accepted before is there.
    for id in kept {
        store.get_message(id).await.unwrap();
    }
    // The readiness probe (run by each `write_failure` call) does not call the store writable
    // again while the cap leaves no headroom.
    assert!(store.write_failure().await.is_some());
}

// --- backup, checkpoint, sizes -----------------------------------------------------------------

fn leftovers(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".partial-"))
        .collect()
}

#[tokio::test]
async fn backup_is_a_store_that_opens_with_the_same_messages() {
    let (dir, store) = setup("{}").await;
    let ids: Vec<_> = store
        .enqueue("q", (0..50).map(|i| msg(&format!("m{i}"))).collect())
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id)
        .collect();
    store.claim("q", 5, 30_000).await.unwrap();
    assert_eq!(store.db_stats().await.unwrap().last_backup_at_ms, None);

    let target = dir.path().join("copy.db");
    let report = store.backup(target.clone()).await.unwrap();
    assert_eq!(report.path, target);
    assert_eq!(report.bytes, std::fs::metadata(&target).unwrap().len());
    assert!(
        leftovers(dir.path()).is_empty(),
        "{:?}",
        leftovers(dir.path())
    );
    // Written after the copy: not in it.
    store.enqueue("q", vec![msg("later")]).await.unwrap();

    let copy = SqliteStore::open(&target, StoreOptions::default()).unwrap();
    let stats = copy.queue_stats("q").await.unwrap();
    assert_eq!((stats.ready, stats.leased, stats.enqueued), (45, 5, 50));
    let page = copy
        .list_messages(
            "q",
            &MessageFilter {
                limit: 100,
                ..MessageFilter::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(page.items.iter().map(|m| m.id).collect::<Vec<_>>(), ids);
    drop(copy);

    // Never an overwrite, and a refused backup leaves nothing behind.
    let before = std::fs::read(&target).unwrap();
    assert!(matches!(
        store.backup(target.clone()).await,
        Err(StoreError::TargetExists(p)) if p == target
    ));
    assert_eq!(std::fs::read(&target).unwrap(), before);
    assert!(leftovers(dir.path()).is_empty());

    let at = store.db_stats().await.unwrap().last_backup_at_ms;
    assert_eq!(at, Some(report.taken_at_ms));
    drop(store);
    let reopened = open_in(&dir, StoreOptions::default());
    assert_eq!(reopened.db_stats().await.unwrap().last_backup_at_ms, at);
}

#[tokio::test]
async fn a_failed_backup_leaves_no_file() {
    let (dir, store) = setup("{}").await;
    store.enqueue("q", vec![msg("m")]).await.unwrap();
    let missing = dir.path().join("no-such-dir").join("copy.db");
    assert!(matches!(
        store.backup(missing.clone()).await,
        Err(StoreError::BackupFailed(_))
    ));
    assert!(!missing.exists());
    assert!(leftovers(dir.path()).is_empty());
    assert_eq!(store.db_stats().await.unwrap().last_backup_at_ms, None);
}

#[tokio::test]
async fn db_stats_report_the_file_sizes() {
    let (dir, store) = setup("{}").await;
    store
        .enqueue("q", (0..200).map(|_| msg(&"x".repeat(2_000))).collect())
        .await
        .unwrap();
    let s = store.db_stats().await.unwrap();
    let wal = std::fs::metadata(dir.path().join("spool.db-wal"))
        .unwrap()
        .len();
    assert_eq!(s.wal_bytes, wal);
    assert!(s.page_size >= 512, "{s:?}");
    // 200 payloads of 2 KB live in the database (or its log, counted in its pages).
    assert!(s.size_bytes >= 400_000, "{s:?}");
}

#[tokio::test]
async fn checkpoint_truncates_an_oversized_log_once_readers_let_it() {
    const LIMIT: u64 = 256 * 1024;
    let (dir, store) = setup("{}").await;
    let wal = || std::fs::metadata(dir.path().join("spool.db-wal")).map_or(0, |m| m.len());
    let fill = || async {
        for _ in 0..4 {
            store
                .enqueue("q", (0..100).map(|_| msg(&"x".repeat(4_000))).collect())
                .await
                .unwrap();
        }
    };

    // A reader that keeps an old snapshot: no checkpoint may pass it, so the log only grows.
    let reader = rusqlite::Connection::open(dir.path().join("spool.db")).unwrap();
    reader.execute_batch("BEGIN").unwrap();
    let _: i64 = reader
        .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))
        .unwrap();
    fill().await;
    assert!(wal() > LIMIT, "the log holds the writes: {}", wal());
    let held = store.checkpoint(LIMIT).await.unwrap();
    assert!(held.busy && !held.truncated, "{held:?}");
    assert!(held.wal_bytes > LIMIT, "{held:?}");

    reader.execute_batch("COMMIT").unwrap();
    drop(reader);
    let freed = store.checkpoint(LIMIT).await.unwrap();
    assert!(freed.truncated && !freed.busy, "{freed:?}");
    assert_eq!((freed.wal_bytes, wal()), (0, 0));

    // Under the limit a round only copies the log back, leaving the file for reuse.
    fill().await;
    let passive = store.checkpoint(u64::MAX).await.unwrap();
    assert!(!passive.truncated && !passive.busy, "{passive:?}");
    assert_eq!(
        passive.checkpointed_frames, passive.log_frames,
        "{passive:?}"
    );
    assert!(wal() > 0);
    // Everything written is still there.
    assert_eq!(store.queue_stats("q").await.unwrap().ready, 800);
}

#[tokio::test]
async fn the_log_is_copied_into_the_database_beside_the_writer() {
    let (dir, store) = setup("{}").await;
    let db = || std::fs::metadata(dir.path().join("spool.db")).map_or(0, |m| m.len());
    let before = db();
    store
        .enqueue("q", (0..100).map(|_| msg(&"x".repeat(4_000))).collect())
        .await
        .unwrap();
    // The writer never checkpoints (`wal_autocheckpoint = 0`) and nothing else runs one here:
    // only the checkpoint thread can grow the database file by the 400 KB written.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while db() < before + 400_000 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        db() >= before + 400_000,
        "the database file grew from {before} to {} bytes only",
        db()
    );
    assert_eq!(store.queue_stats("q").await.unwrap().ready, 100);
}

fn sha(n: u8) -> String {
    format!("{n:02x}").repeat(32)
}

#[tokio::test]
async fn a_large_plugin_is_stored_in_pieces_shared_repaired_and_cleaned_up() {
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("spool.db");
    let store = open_in(&dir, StoreOptions::default());
    // Three pieces, the last one short.
    let wasm: Vec<u8> = (0..(2 * plugin_chunks::CHUNK_BYTES + 12_345))
        .map(|i| (i % 251) as u8)
        .collect();
    let chunks = |conn: &Connection| -> i64 {
        conn.query_row("SELECT count(*) FROM plugin_chunks", [], |r| r.get(0))
            .unwrap()
    };
    // That both plugins read back whole, on either backend: `behaviour::plugins`. Here: how
    // SQLite stores them.
    for name in ["big", "big-too"] {
        store
            .put_plugin(name, "handler", &sha(7), wasm.clone(), None)
            .await
            .unwrap();
        assert_eq!(store.active_plugin(name).await.unwrap().1, wasm);
    }
    let conn = Connection::open(&path).unwrap();
    assert_eq!(chunks(&conn), 3, "one set of pieces for both plugins");
    let inline: i64 = conn
        .query_row("SELECT sum(length(wasm)) FROM plugins", [], |r| r.get(0))
        .unwrap();
    assert_eq!(inline, 0, "the version rows keep no copy");

    // A damaged piece: the bytes no longer match; uploading them again repairs the version.
    conn.execute("UPDATE plugin_chunks SET bytes = x'00' WHERE seq = 1", [])
        .unwrap();
    assert_ne!(store.active_plugin("big").await.unwrap().1, wasm);
    let again = store
        .put_plugin("big", "handler", &sha(7), wasm.clone(), None)
        .await
        .unwrap();
    assert!(!again.new_version);
    assert_eq!(store.active_plugin("big").await.unwrap().1, wasm);

    // Deleting one user keeps the pieces; deleting the last removes them.
    store.delete_plugin("big").await.unwrap();
    assert_eq!(store.active_plugin("big-too").await.unwrap().1, wasm);
    assert_eq!(chunks(&conn), 3);
    store.delete_plugin("big-too").await.unwrap();
    assert_eq!(chunks(&conn), 0);

    // Pieces of an upload that never finished go after an hour, not before.
    conn.execute(
        "INSERT INTO plugin_chunks (sha256, seq, bytes, created_at) VALUES \
         ('a', 0, x'01', 0), ('b', 0, x'01', ?1)",
        [spool_model::now_ms()],
    )
    .unwrap();
    store.maintain().await.unwrap();
    let left: Vec<String> = conn
        .prepare("SELECT sha256 FROM plugin_chunks")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(left, vec!["b".to_owned()]);
}

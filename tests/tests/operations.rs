//! Operating a server: requeueing waiting messages, online backups into the backup directory
//! (taken while producers run, restored by starting a server on the copy), and the database
//! figures of `/metrics`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use spool_tests::{TestHost, Value, json, spool_cli};

use crate::host_with;

const HOUR_MS: u64 = 3_600_000;
const WAIT: Duration = Duration::from_secs(60);

/// A host whose backup directory is `dir`.
async fn host_backing_up_to(dir: &Path, plugins: &[&str]) -> TestHost {
    let host = TestHost::options()
        .arg("--backup-dir")
        .arg(dir.to_string_lossy())
        .start();
    crate::deploy_all(&host, plugins).await;
    host
}

fn backup_dir() -> (tempfile::TempDir, PathBuf) {
    let root = tempfile::Builder::new()
        .prefix("spool-ops-")
        .tempdir()
        .unwrap();
    let dir = root.path().join("backups");
    std::fs::create_dir(&dir).unwrap();
    (root, dir)
}

// --- requeue ------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeue_runs_a_delayed_message_now_over_http_and_cli() {
    let host = host_with(&["echo"]).await;
    host.put_queue("later", json!({"handler": "echo"})).await;
    let delayed = |i: u32| json!({"payload": {"n": i}, "delay_ms": HOUR_MS});
    let by_http = host.enqueue("later", delayed(1)).await.remove(0);
    let by_cli = host.enqueue("later", delayed(2)).await.remove(0);
    assert_eq!(host.state(&by_http).await, "scheduled");

    let m = host
        .post(&format!("/v1/messages/{by_http}/requeue"), &json!({}))
        .await
        .expect(200, "requeue a delayed message");
    assert_eq!(m["id"], by_http.as_str(), "{m}");
    assert_ne!(m["state"], "scheduled", "{m}");
    host.wait_state(&by_http, "acked", WAIT).await;

    let out = host.cli(["message", "requeue", &by_cli]);
    out.expect_success("spool message requeue");
    assert!(
        out.stdout.contains(&format!("message {by_cli} is")),
        "{}",
        out.stdout
    );
    let m = host.wait_state(&by_cli, "acked", WAIT).await;
    assert_eq!(m["attempts"], 1, "{m}");

    // Nothing waits any more: an acked message, and one that does not exist, are refused.
    let code = host
        .post(&format!("/v1/messages/{by_http}/requeue"), &json!({}))
        .await
        .expect_error(409, "requeue an acked message");
    assert_eq!(code, "invalid_state");
    let code = host
        .post("/v1/messages/987654321/requeue", &json!({}))
        .await
        .expect_error(404, "requeue an unknown message");
    assert_eq!(code, "message_not_found");
    let out = host.cli(["message", "requeue", &by_cli]);
    out.expect_failure("spool message requeue of an acked message");
    assert!(out.stderr.contains("acked"), "{}", out.stderr);
    let s = host.stats("later").await;
    assert_eq!((s.acked, s.scheduled, s.ready), (2, 0, 0), "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requeue_cuts_a_backoff_short_over_http_and_cli() {
    let host = host_with(&["misbehave"]).await;
    host.put_queue(
        "flaky",
        json!({"handler": "misbehave", "max_attempts": 3, "backoff_base_ms": HOUR_MS,
               "backoff_max_ms": HOUR_MS}),
    )
    .await;
    let id = host.enqueue_one("flaky", json!({"do": "retry"})).await;
    let backing_off = |attempts: u32| {
        let host = &host;
        let id = id.clone();
        async move {
            spool_tests::wait_until(
                &format!("{id} to back off after attempt {attempts}"),
                WAIT,
                || async {
                    let m = host.get_message(&id).await;
                    if m["state"] == "scheduled" && m["attempts"] == attempts {
                        Ok(m)
                    } else {
                        Err(m.to_string())
                    }
                },
            )
            .await
        }
    };
    let m = backing_off(1).await;
    assert!(
        m["available_at_ms"].as_i64().unwrap() > spool_tests::now_ms() + 60_000,
        "an hour's backoff: {m}"
    );

    let m = host
        .post(&format!("/v1/messages/{id}/requeue"), &json!({}))
        .await
        .expect(200, "requeue a backing-off message");
    // A woken worker may have leased it already (attempt 2); either way its wait is over.
    assert_eq!(m["id"], id.as_str(), "{m}");
    assert!(
        !(m["state"] == "scheduled" && m["attempts"] == 1),
        "still backing off after the requeue: {m}"
    );
    backing_off(2).await;

    host.cli(["message", "requeue", &id])
        .expect_success("spool message requeue of a backing-off message");
    let m = host.wait_state(&id, "dead", WAIT).await;
    assert_eq!(m["attempts"], 3, "{m}");
    let s = host.stats("flaky").await;
    assert_eq!((s.retried, s.dead, s.scheduled), (2, 1, 0), "{s:?}");
}

// --- backup and restore ---------------------------------------------------------------------------

/// Counts of the copy's rows by state, read straight from the file.
fn rows_by_state(db: &Path) -> [u64; 7] {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    let mut counts = [0u64; 7];
    let mut stmt = conn
        .prepare("SELECT state, count(*) FROM messages GROUP BY state")
        .unwrap();
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, usize>(0)?, r.get::<_, u64>(1)?)))
        .unwrap();
    for row in rows {
        let (state, n) = row.unwrap();
        counts[state] = n;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_backup_during_traffic_restores_to_a_consistent_server() {
    const PRODUCERS: usize = 4;
    const BATCHES: usize = 25;
    const BATCH: usize = 100;
    const TOTAL: u64 = (PRODUCERS * BATCHES * BATCH) as u64;
    let (_root, dir) = backup_dir();
    let host = host_backing_up_to(&dir, &["echo"]).await;
    host.put_queue(
        "orders",
        json!({"handler": "echo", "concurrency": 4, "lease_ms": 2_000}),
    )
    .await;

    let url = host.url().to_owned();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let url = url.clone();
            tokio::spawn(async move {
                let client = reqwest::Client::new();
                for b in 0..BATCHES {
                    let messages: Vec<Value> = (0..BATCH)
                        .map(|i| json!({"payload": {"p": p, "b": b, "i": i}}))
                        .collect();
                    let r = client
                        .post(format!("{url}/v1/queues/orders/messages"))
                        .json(&json!({ "messages": messages }))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status().as_u16(), 202, "{}", r.text().await.unwrap());
                }
            })
        })
        .collect();
    host.wait_stats("orders", "traffic to be flowing", WAIT, |s| {
        s.enqueued >= 1_000
    })
    .await;
    let b = host
        .post("/v1/admin/backup", &json!({"path": "during.db"}))
        .await
        .expect(200, "backup while producers run");
    let copy = dir.join("during.db");
    assert_eq!(
        Path::new(b["path"].as_str().unwrap()),
        std::fs::canonicalize(&copy).unwrap()
    );
    assert_eq!(b["bytes"], std::fs::metadata(&copy).unwrap().len(), "{b}");
    // A second one, with the CLI, while traffic goes on.
    host.cli(["backup", "during-cli.db"])
        .expect_success("spool backup");
    for p in producers {
        p.await.unwrap();
    }
    host.wait_stats("orders", "every message acked", WAIT, |s| s.acked == TOTAL)
        .await;
    // Nothing but the two copies in the directory: no temporary files left behind.
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["during-cli.db", "during.db"]);

    for copy in [dir.join("during.db"), dir.join("during-cli.db")] {
        spool_cli(None, ["check", "--db", copy.to_str().unwrap(), "--full"])
            .expect_success("spool check of the copy");
        // Every row of the copy is counted where the copy's counters say.
        let rows = rows_by_state(&copy);
        // Paused from the start (the config applies before any delivery), so the counters
        // are read as the copy holds them.
        let restored = TestHost::options()
            .db(&copy)
            .config("[queues.orders]\npaused = true\n")
            .start();
        let s = restored.stats("orders").await;
        // Leases of the copy's moment belong to no running server: once expired (`lease_ms`)
        // the first maintenance round puts them back in `ready`, as after a crash; whether
        // that happened before this read or not, they are counted in one of the two.
        assert_eq!(
            [s.scheduled, s.ready + s.leased, s.acked, s.dlq_depth],
            [rows[0], rows[1] + rows[2], rows[3], rows[4]],
            "counters of {} against its rows {rows:?}",
            copy.display()
        );
        let held: u64 = rows.iter().sum();
        assert_eq!(s.enqueued, held, "{s:?} {rows:?}");
        assert!(held > 0 && held <= TOTAL, "{held}");
        // The restored server delivers what the copy holds undelivered (leases held at the
        // moment of the copy expire and come back), and nothing else.
        restored.put_queue("orders", json!({"paused": false})).await;
        let s = restored
            .wait_stats("orders", "the copy's messages to be handled", WAIT, |s| {
                s.live() == 0
            })
            .await;
        assert_eq!((s.acked, s.enqueued, s.dead), (held, held, 0), "{s:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backups_stay_in_their_directory_and_never_overwrite() {
    let (root, dir) = backup_dir();
    std::fs::create_dir(root.path().join("elsewhere")).unwrap();
    std::os::unix::fs::symlink(root.path().join("elsewhere"), dir.join("escape")).unwrap();
    let host = host_backing_up_to(&dir, &[]).await;
    host.put_queue("q", json!({})).await;
    host.enqueue_one("q", json!({"n": 1})).await;

    let outside = root.path().join("elsewhere").join("abs.db");
    for path in [
        "../out.db",
        "escape/out.db",
        "/tmp/spool-backup-outside.db",
        outside.to_str().unwrap(),
    ] {
        let r = host
            .post("/v1/admin/backup", &json!({ "path": path }))
            .await;
        let message = r.json["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert_eq!(r.expect_error(400, path), "invalid_request");
        assert!(
            message.contains("path") && message.contains("outside"),
            "{message}"
        );
    }
    let code = host
        .post("/v1/admin/backup", &json!({}))
        .await
        .expect_error(400, "no path");
    assert_eq!(code, "invalid_request");
    assert!(
        std::fs::read_dir(root.path().join("elsewhere"))
            .unwrap()
            .next()
            .is_none(),
        "nothing written outside"
    );
    assert!(!Path::new("/tmp/spool-backup-outside.db").exists());

    host.post("/v1/admin/backup", &json!({"path": "a.db"}))
        .await
        .expect(200, "first backup");
    let first = std::fs::read(dir.join("a.db")).unwrap();
    host.enqueue_one("q", json!({"n": 2})).await;
    let code = host
        .post("/v1/admin/backup", &json!({"path": "a.db"}))
        .await
        .expect_error(409, "backup onto an existing file");
    assert_eq!(code, "already_exists");
    let out = host.cli(["backup", "a.db"]);
    out.expect_failure("spool backup onto an existing file");
    assert!(out.stderr.contains("exists"), "{}", out.stderr);
    assert_eq!(std::fs::read(dir.join("a.db")).unwrap(), first, "untouched");

    // A server without a backup directory says how to configure one.
    let plain = TestHost::start();
    let r = plain
        .post("/v1/admin/backup", &json!({"path": "a.db"}))
        .await;
    let message = r.json["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        r.expect_error(409, "backup without backup_dir"),
        "backup_not_configured"
    );
    assert!(message.contains("backup_dir"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_report_database_sizes_and_the_last_backup() {
    let (_root, dir) = backup_dir();
    let host = host_backing_up_to(&dir, &[]).await;
    host.put_queue("q", json!({})).await;
    host.enqueue_one("q", json!({"n": 1})).await;
    let gauge = |text: &str, name: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .map(|v| v.parse().unwrap())
    };
    let scrape = || async {
        let r = host.get("/metrics").await;
        assert_eq!(r.status.as_u16(), 200, "{}", r.text);
        r.text
    };
    let text = scrape().await;
    assert!(gauge(&text, "spool_db_size_bytes").unwrap() > 0.0, "{text}");
    assert!(gauge(&text, "spool_db_wal_size_bytes").is_some(), "{text}");
    assert!(gauge(&text, "spool_db_free_pages").is_some(), "{text}");
    assert!(
        gauge(&text, "spool_integrity_check_timestamp_seconds").is_some(),
        "{text}"
    );
    assert_eq!(gauge(&text, "spool_db_last_backup_timestamp_seconds"), None);

    let b = host
        .post("/v1/admin/backup", &json!({"path": "m.db"}))
        .await
        .expect(200, "backup");
    let text = scrape().await;
    let at = gauge(&text, "spool_db_last_backup_timestamp_seconds").expect("after a backup");
    assert_eq!(at, b["taken_at_ms"].as_f64().unwrap() / 1_000.0, "{text}");
}

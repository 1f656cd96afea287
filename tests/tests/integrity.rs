//! Storage faults a user can meet: a full disk, a damaged database file, a damaged write-ahead
//! log, a damaged plugin record. Each must be visible (HTTP status, `/readyz`, `/metrics`) and
//! must never turn into silent loss.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use spool_tests::{TestHost, json, plugin_path, run_cli, wait_until};

/// A small tmpfs mounted for one test (the CI runs as root); unmounted on drop, after the
/// host that uses it is gone (declare the guard before the host).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::Builder::new()
            .prefix("spool-tmpfs-")
            .tempdir()
            .expect("create a mount point");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a tmpfs needs root (as in CI): {status}"
        );
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy, so a file still open by a dying process cannot leave the mount behind.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Writes zeros into `path` until the file system is full; returns how many bytes fit.
fn fill(path: &Path) -> u64 {
    use std::io::Write;
    let mut f = std::fs::File::create(path).expect("create the filler");
    let chunk = vec![0u8; 64 * 1024];
    let mut written = 0u64;
    // A tmpfs of a few MiB fills in well under this many chunks.
    for _ in 0..100_000 {
        match f.write(&chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => written += n as u64,
        }
    }
    let _ = f.flush();
    written
}

#[tokio::test]
async fn a_full_disk_answers_503_storage_full_and_recovers_by_itself() {
    let fs = Tmpfs::mount("8m");
    let host = TestHost::options().db(fs.path().join("spool.db")).start();
    host.put_queue("q", json!({})).await;
    let client = reqwest::Client::new();
    let url = format!("{}/v1/queues/q/messages", host.url());
    let payload = "x".repeat(8 * 1024);

    let mut accepted = Vec::new();
    for _ in 0..10 {
        accepted.extend(host.enqueue("q", json!({"payload": payload})).await);
    }
    let filled = fill(&fs.path().join("filler"));
    assert!(filled > 0, "the filler took the free space");

    // Keep writing until the database cannot grow; everything accepted before stays.
    let mut refused = None;
    for _ in 0..2_000 {
        let resp = client
            .post(&url)
            .json(&json!({"payload": payload}))
            .send()
            .await
            .expect("enqueue request");
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap_or_default().to_owned());
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        if status == 202 {
            accepted.push(body["ids"][0].as_str().unwrap().to_owned());
            continue;
        }
        refused = Some((status, retry_after, body));
        break;
    }
    let (status, retry_after, body) = refused.expect("the disk filled up");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "storage_full", "{body}");
    assert!(
        retry_after.is_some_and(|s| s.parse::<u32>().is_ok_and(|n| n > 0)),
        "Retry-After is set: {body}"
    );

    let ready = host.get("/readyz").await;
    assert_eq!(ready.status.as_u16(), 503, "{}", ready.text);
    assert_eq!(
        ready.json["error"]["code"], "storage_full",
        "{}",
        ready.text
    );
    assert_eq!(
        ready.json["detail"]["storage"]["writable"], false,
        "{}",
        ready.text
    );
    let metrics = host.get("/metrics").await.text;
    assert!(metrics.contains("spool_store_writable 0"), "{metrics}");

    // Space comes back; with no other traffic, readiness finds out by itself.
    std::fs::remove_file(fs.path().join("filler")).expect("free the space");
    wait_until(
        "/readyz to be 200 again",
        Duration::from_secs(30),
        || async {
            let r = host.get("/readyz").await;
            if r.status.as_u16() == 200 {
                Ok(())
            } else {
                Err(r.text)
            }
        },
    )
    .await;
    accepted.push(host.enqueue_one("q", json!("after")).await);
    for id in &accepted {
        host.get_message(id).await;
    }
    let log = host.log_tail(400);
    assert!(!log.contains("no transaction is active"), "{log}");
}

/// A host (on `db`) that enqueued `n` messages into `q`, then stopped cleanly so everything is
/// in the main database file; returns the ids.
async fn stopped_host_with_messages(n: usize) -> (TestHost, Vec<String>) {
    let mut host = TestHost::start();
    host.put_queue("q", json!({})).await;
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(
            host.enqueue_one("q", json!({"n": i, "pad": "p".repeat(1000)}))
                .await,
        );
    }
    host.stop(Duration::from_secs(30));
    (host, ids)
}

fn serve_once(db: &Path, extra: &[&str]) -> spool_tests::CliOutput {
    let db = db.to_string_lossy().into_owned();
    let mut args = vec!["serve", "--db", &db, "--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    run_cli(None, &[], None, &args)
}

#[tokio::test]
async fn a_damaged_database_file_refuses_to_start_and_says_what_to_do() {
    let (host, _) = stopped_host_with_messages(200).await;
    let db = host.db_path();
    let mut bytes = std::fs::read(&db).unwrap();
    let page = 4096;
    let mid = (bytes.len() / page / 2) * page;
    for b in &mut bytes[mid..mid + page] {
        *b = 0x5a;
    }
    std::fs::write(&db, bytes).unwrap();

    let out = serve_once(&db, &[]);
    assert!(
        !out.status.success(),
        "started on a damaged file:\n{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("damaged") && out.stderr.contains("restore"),
        "the refusal says what is wrong and what to do:\n{}",
        out.stderr
    );

    let db_arg = db.to_string_lossy().into_owned();
    let check = run_cli(None, &[], None, &["check", "--db", &db_arg, "--full"]);
    assert!(!check.status.success(), "{}", check.stdout);
    assert!(check.stdout.contains("damaged"), "{}", check.stdout);
}

#[tokio::test]
async fn spool_check_passes_a_healthy_file() {
    let (host, _) = stopped_host_with_messages(5).await;
    let db = host.db_path().to_string_lossy().into_owned();
    let out = run_cli(None, &[], None, &["check", "--db", &db, "--json"]);
    assert!(out.status.success(), "{}\n{}", out.stdout, out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["outcome"], "ok", "{v}");
    assert!(v["id_mark"].as_i64() >= v["id_sequence"].as_i64(), "{v}");
}

/// Frame boundaries of a WAL file: (page size, number of complete frames).
fn wal_frames(wal: &Path) -> (usize, usize) {
    let bytes = std::fs::read(wal).unwrap();
    let page = u32::from_be_bytes(bytes[8..12].try_into().unwrap()) as usize;
    (page, (bytes.len() - 32) / (24 + page))
}

#[tokio::test]
async fn a_damaged_wal_refuses_to_start_and_ids_are_never_handed_out_twice() {
    let (mut host, _) = stopped_host_with_messages(1).await;
    host.restart();
    // Each enqueue is its own commit, left in the log by the kill below.
    let mut ids: Vec<i64> = Vec::new();
    for i in 0..12 {
        let id = host.enqueue_one("q", json!({"n": i})).await;
        ids.push(id.parse().unwrap());
    }
    host.kill9();
    let db = host.db_path();
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    let (page, frames) = wal_frames(&wal);
    assert!(frames >= 6, "the log holds the enqueues: {frames} frames");
    let mut bytes = std::fs::read(&wal).unwrap();
    let at = 32 + (frames / 3) * (24 + page) + 24 + 100;
    for b in &mut bytes[at..at + 64] {
        *b ^= 0xff;
    }
    std::fs::write(&wal, bytes).unwrap();

    let out = serve_once(&db, &[]);
    assert!(
        !out.status.success(),
        "started on a damaged log:\n{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("write-ahead log") && out.stderr.contains("--accept-wal-loss"),
        "{}",
        out.stderr
    );

    // Accepting the loss starts the server; ids continue above everything handed out. (The
    // first host, stopped, keeps the directory the database lives in.)
    let _first = host;
    let host = TestHost::options().db(&db).arg("--accept-wal-loss").start();
    let lost = {
        let mut lost = 0;
        for id in &ids {
            if host
                .get(&format!("/v1/messages/{id}"))
                .await
                .status
                .as_u16()
                == 404
            {
                lost += 1;
            }
        }
        lost
    };
    assert!(lost > 0, "the damaged log did drop commits");
    let new: i64 = host.enqueue_one("q", json!("new")).await.parse().unwrap();
    let max_old = *ids.iter().max().unwrap();
    assert!(
        new > max_old,
        "new id {new} reuses one handed out before (max {max_old})"
    );
}

#[tokio::test]
async fn an_unloadable_plugin_makes_its_queue_wait_without_spending_attempts() {
    let mut host = TestHost::start();
    host.deploy("echo", &plugin_path("echo")).await;
    host.put_queue("q", json!({"handler": "echo"})).await;
    host.stop(Duration::from_secs(30));
    {
        let conn = rusqlite::Connection::open(host.db_path()).unwrap();
        // Echo (2.5 MB) is stored in 256 KiB pieces: damage the middle of the second one.
        let mut piece: Vec<u8> = conn
            .query_row("SELECT bytes FROM plugin_chunks WHERE seq = 1", [], |r| {
                r.get(0)
            })
            .unwrap();
        let mid = piece.len() / 2;
        for b in &mut piece[mid..mid + 256] {
            *b ^= 0xa5;
        }
        conn.execute("UPDATE plugin_chunks SET bytes = ?1 WHERE seq = 1", [piece])
            .unwrap();
    }
    host.restart();
    let ids = host
        .enqueue(
            "q",
            json!({"messages": [{"payload": 1}, {"payload": 2}, {"payload": 3}]}),
        )
        .await;

    let q = wait_until(
        "the queue to report its plugin",
        Duration::from_secs(30),
        || async {
            let q = host.queue("q").await;
            if q["consumer"]["cause"] == "plugin_unloadable" {
                Ok(q)
            } else {
                Err(q.to_string())
            }
        },
    )
    .await;
    assert_eq!(q["consumer"]["state"], "waiting", "{q}");
    assert!(
        q["consumer"]["reason"]
            .as_str()
            .unwrap()
            .contains("spool plugin deploy echo"),
        "{q}"
    );
    // Give the claimer a few rounds: nothing is claimed, no attempt is spent.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    for id in &ids {
        let m = host.get_message(id).await;
        assert_eq!(
            (m["state"].as_str(), m["attempts"].as_u64()),
            (Some("ready"), Some(0)),
            "{m}"
        );
    }
    let ready = host.get("/readyz").await;
    assert_eq!(ready.status.as_u16(), 200, "{}", ready.text);
    let waiting = &ready.json["detail"]["queues_waiting"];
    assert_eq!(waiting[0]["queue"], "q", "{}", ready.text);
    assert_eq!(waiting[0]["cause"], "plugin_unloadable", "{}", ready.text);
    let metrics = host.get("/metrics").await.text;
    assert!(
        metrics.contains(r#"spool_queue_waiting{queue="q",cause="plugin_unloadable"} 1"#),
        "{metrics}"
    );
    let list = host.get("/v1/queues").await.json;
    assert_eq!(
        list["queues"][0]["consumer"]["cause"], "plugin_unloadable",
        "{list}"
    );

    // Redeploying the good component repairs the record; the messages drain.
    host.deploy("echo", &plugin_path("echo")).await;
    host.wait_stats("q", "all three acked", Duration::from_secs(30), |s| {
        s.acked == 3
    })
    .await;
    assert_eq!(host.queue("q").await["consumer"]["state"], "consuming");
}

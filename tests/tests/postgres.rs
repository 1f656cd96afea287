//! Spool on PostgreSQL: one host through the whole message lifecycle, and three hosts sharing
//! one database (a host killed with -9 mid-run, a cron schedule every second, a deploy through
//! one host serving all three), and `spool migrate` from a SQLite server to a host on the copy.
//! The database is a private server the test process starts.

use std::collections::BTreeSet;
use std::time::Duration;

use spool_tests::{
    HostOptions, Method, Stats, TestHost, Value, json, plugin_path, postgres_database, spool_cli,
    wait_until,
};

const WAIT: Duration = Duration::from_secs(120);

fn pg_host(url: &str) -> TestHost {
    TestHost::options()
        .database_url(url)
        .args(["--maintenance-interval", "200ms"])
        .start()
}

/// This host's own count of acked deliveries of `queue` (`/metrics` is per process).
async fn acked_here(host: &TestHost, queue: &str) -> u64 {
    let reply = host.call(Method::GET, "/metrics", None).await;
    assert_eq!(reply.status.as_u16(), 200, "metrics: {}", reply.text);
    let want = format!("spool_deliveries_total{{queue=\"{queue}\",outcome=\"ack\"}} ");
    reply
        .text
        .lines()
        .find_map(|l| l.strip_prefix(&want))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Every message of `queue` in `state`, page by page (bounded).
async fn all_messages(host: &TestHost, queue: &str, state: &str) -> Vec<spool_tests::Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..1_000 {
        let mut path = format!("/v1/queues/{queue}/messages?state={state}&limit=1000");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page = host.get(&path).await.expect_ok("list messages");
        out.extend(page["items"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return out,
        }
    }
    panic!("more than 1,000 pages of {queue} messages");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_host_on_postgres_handles_retries_dead_letters_and_replays() {
    let backups = tempfile::tempdir().unwrap();
    let host = TestHost::options()
        .database_url(postgres_database())
        .args(["--maintenance-interval", "200ms", "--backup-dir"])
        .arg(backups.path().display().to_string())
        .start();
    host.deploy("misbehave", &plugin_path("misbehave")).await;
    host.put_queue(
        "jobs",
        json!({"handler": "misbehave", "max_attempts": 2, "backoff_base_ms": 10,
               "backoff_max_ms": 20}),
    )
    .await;
    let ok = host.enqueue_one("jobs", json!({"do": "kv"})).await;
    let bad = host.enqueue_one("jobs", json!({"do": "trap"})).await;
    assert_eq!(host.wait_until_final(&ok, WAIT).await["state"], "acked");
    let dead = host.wait_until_final(&bad, WAIT).await;
    assert_eq!(dead["state"], "dead", "{dead}");
    assert_eq!(dead["attempts"], 2, "{dead}");

    // The DLQ lists it, and a replay runs it again (and it dies again: the payload traps).
    let dlq = host.get("/v1/dlq?queue=jobs").await.expect_ok("dlq");
    assert_eq!(dlq["items"].as_array().map(Vec::len), Some(1), "{dlq}");
    host.post(&format!("/v1/dlq/{bad}/replay"), &json!({}))
        .await
        .expect_ok("replay");
    host.wait_stats("jobs", "the replayed message to die again", WAIT, |s| {
        // `dead` counts dead-letterings, `dlq_depth` what the DLQ holds now.
        s.dead == 2 && s.dlq_depth == 1 && s.live() == 0
    })
    .await;

    // A backup of a PostgreSQL database is PostgreSQL's job: refused, naming the tools.
    let reply = host
        .post("/v1/admin/backup", &json!({"path": "a.db"}))
        .await;
    let message = reply.json["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        reply.expect_error(409, "backup on PostgreSQL"),
        "not_for_this_store"
    );
    assert!(message.contains("pg_dump"), "{message}");
    assert!(!backups.path().join("a.db").exists());

    // A restart keeps everything: the state is in the database, not the host.
    let mut host = host;
    host.restart();
    let s: Stats = host.stats("jobs").await;
    assert_eq!(
        (s.acked, s.dead, s.dlq_depth, s.enqueued),
        (1, 2, 1, 2),
        "{s:?}"
    );
    assert!(host.healthy().await);
}

const TOTAL: usize = 50_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hosts_share_one_database() {
    let url = postgres_database();
    let a = pg_host(&url);
    let b = pg_host(&url);
    let mut c = pg_host(&url);

    // Deployed through one host; the queue is created paused so the run starts all at once.
    a.deploy("echo", &plugin_path("echo")).await;
    a.put_queue(
        "work",
        json!({"handler": "echo", "concurrency": 8, "lease_ms": 2000, "paused": true}),
    )
    .await;
    for chunk in 0..TOTAL / 1000 {
        let messages: Vec<_> = (0..1000)
            .map(|i| json!({"payload": {"n": chunk * 1000 + i}}))
            .collect();
        let host = [&a, &b, &c][chunk % 3];
        assert_eq!(
            host.enqueue("work", json!({ "messages": messages }))
                .await
                .len(),
            1000
        );
    }
    b.put_queue("work", json!({"paused": false})).await;

    // Kill one host with -9 in the middle of the run, then start it again.
    let before = a
        .wait_stats("work", "a fifth of the messages acked", WAIT, |s| {
            s.acked >= (TOTAL / 5) as u64
        })
        .await;
    let c_before_kill = acked_here(&c, "work").await;
    c.kill9();
    assert!(
        (before.acked as usize) < TOTAL,
        "the kill should land mid-run: {before:?}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.restart();

    let stats = b
        .wait_stats("work", "every message acked", WAIT, |s| {
            s.acked >= TOTAL as u64 && s.live() == 0
        })
        .await;
    assert_eq!(
        (stats.enqueued, stats.acked, stats.dead),
        (TOTAL as u64, TOTAL as u64, 0),
        "none lost, none acked twice: {stats:?}"
    );

    // Redeliveries are messages whose lease ran out: the ones the killed host held.
    let acked = all_messages(&a, "work", "acked").await;
    assert_eq!(acked.len(), TOTAL);
    let redelivered: Vec<_> = acked
        .iter()
        .filter(|m| m["attempts"].as_u64().unwrap_or(0) >= 2)
        .collect();
    for m in &redelivered {
        assert_eq!(m["error_category"], "lease-expired", "{m}");
    }
    // One host holds its prefetch on PostgreSQL (2,048 leased, not started), its handlers'
    // messages, and the finished ones whose acks are not committed yet (the settler writes up to
    // 1,024 at a time and gathers what finishes meanwhile, about one more batch on 2 cores).
    // That is far below the 50,000 and below what two hosts hold. (3,200 left the settle
    // backlog out; a loaded run saw 3,285.)
    assert!(
        redelivered.len() <= 4_200,
        "{} redeliveries: more than one host could have held",
        redelivered.len()
    );
    eprintln!(
        "cluster test: {} of {TOTAL} messages redelivered after the kill",
        redelivered.len()
    );

    // The plugin deployed through `a` ran on every host, `c` before and after its restart.
    assert!(
        c_before_kill > 0,
        "host c acked nothing before it was killed"
    );
    for (name, host) in [("a", &a), ("b", &b)] {
        assert!(
            acked_here(host, "work").await > 0,
            "host {name} acked nothing"
        );
    }
    c.put_queue("more", json!({"handler": "echo"})).await;
    let ids = a
        .enqueue(
            "more",
            json!({"messages": (0..200).map(|n| json!({"payload": n})).collect::<Vec<_>>()}),
        )
        .await;
    c.wait_stats("more", "200 acked", WAIT, |s| s.acked == 200)
        .await;
    assert_eq!(ids.len(), 200);
    let mut total = 0;
    for host in [&a, &b, &c] {
        total += acked_here(host, "more").await;
    }
    assert_eq!(
        total, 200,
        "the three hosts' own counts add up to the queue's"
    );

    // A cron schedule every second, seen by all three hosts, fires once per instant.
    c.put_queue("ticks", json!({})).await;
    let created = b
        .post(
            "/v1/schedules",
            &json!({"cron": "* * * * * *", "queue": "ticks", "payload": {"tick": true}}),
        )
        .await
        .expect_ok("create the schedule");
    let id = created["id"].as_str().expect("a schedule id").to_owned();
    wait_until("six fires", WAIT, || async {
        let s = a.stats("ticks").await;
        if s.ready >= 6 {
            Ok(())
        } else {
            Err(format!("{s:?}"))
        }
    })
    .await;
    a.post(&format!("/v1/schedules/{id}/pause"), &json!({}))
        .await
        .expect(200, "pause the schedule");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ticks = all_messages(&c, "ticks", "ready").await;
    let instants: BTreeSet<String> = ticks
        .iter()
        .map(|m| {
            m["headers"]["spool-fire-at"]
                .as_str()
                .unwrap_or("?")
                .to_owned()
        })
        .collect();
    assert_eq!(
        instants.len(),
        ticks.len(),
        "each instant enqueued once across three hosts: {ticks:?}"
    );
    assert!(ticks.len() >= 6);
    for host in [&a, &b, &c] {
        assert!(host.healthy().await);
    }
}

/// `spool migrate`: what a SQLite server held (queues, acked and waiting messages, a plugin
/// stored in pieces) moves into PostgreSQL, and a host there carries on with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_migrate_moves_a_sqlite_server_to_postgres() {
    // A file of its own, so the old server is on SQLite even under SPOOL_E2E_STORE=postgres.
    let files = tempfile::tempdir().expect("temp dir");
    let mut old = TestHost::start_with(HostOptions {
        db: Some(files.path().join("old.db")),
        ..HostOptions::default()
    });
    old.deploy("echo", &plugin_path("echo")).await;
    old.put_queue("done", json!({"handler": "echo"})).await;
    let messages: Vec<_> = (0..20).map(|n| json!({"payload": {"n": n}})).collect();
    old.enqueue("done", json!({ "messages": messages })).await;
    old.wait_stats("done", "20 acked", WAIT, |s| s.acked == 20)
        .await;
    // No handler yet: its messages wait, one of them delayed by an hour.
    old.put_queue("waiting", json!({})).await;
    let waiting = old
        .enqueue(
            "waiting",
            json!({"messages": [
                {"payload": {"w": 1}},
                {"payload": {"w": 2}},
                {"payload": {"w": 3}, "delay_ms": 3_600_000},
            ]}),
        )
        .await;
    let done_before = old.stats("done").await;
    let waiting_before = old.stats("waiting").await;
    let plugin_before = old.get("/v1/plugins/echo").await.expect_ok("plugin");
    let from = format!("sqlite:{}", old.db_path().display());
    let url = postgres_database();

    // Refused while the server holds the file.
    let busy = spool_cli(None, ["migrate", "--from", &from, "--to", &url]);
    busy.expect_failure("migrate while the server runs");
    assert!(busy.stderr.contains("stop it first"), "{}", busy.stderr);

    old.stop(Duration::from_secs(30));
    let out = spool_cli(None, ["migrate", "--from", &from, "--to", &url]);
    out.expect_success("spool migrate");
    assert!(out.stderr.contains("messages: 23 / 23"), "{}", out.stderr);
    assert!(
        out.stdout.contains("every count above matches"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("waiting"), "{}", out.stdout);

    // A second run has nothing to do, and says so.
    let again = spool_cli(None, ["migrate", "--from", &from, "--to", &url, "--json"]);
    again.expect_failure("a second migrate");
    assert!(again.stderr.contains("nothing to do"), "{}", again.stderr);

    let host = pg_host(&url);
    let same = |s: &Stats| {
        (
            s.enqueued,
            s.acked,
            s.ready,
            s.scheduled,
            s.dead,
            s.dlq_depth,
        )
    };
    assert_eq!(same(&host.stats("done").await), same(&done_before));
    assert_eq!(same(&host.stats("waiting").await), same(&waiting_before));
    assert_eq!(same(&waiting_before), (3, 0, 2, 1, 0, 0));
    let plugin = host.get("/v1/plugins/echo").await.expect_ok("plugin");
    // What each version did counts on the server that ran it; the rest is stored.
    let stored = |versions: &Value| {
        let mut versions = versions.clone();
        for v in versions.as_array_mut().into_iter().flatten() {
            if let Some(v) = v.as_object_mut() {
                v.remove("outcomes");
                v.remove("errors");
            }
        }
        versions
    };
    assert_eq!(
        stored(&plugin["versions"]),
        stored(&plugin_before["versions"]),
        "{plugin}"
    );
    assert_eq!(plugin["history"], plugin_before["history"], "{plugin}");

    // The copied plugin (its 2.5 MB were stored in pieces) handles the waiting messages.
    host.put_queue("waiting", json!({"handler": "echo"})).await;
    assert_eq!(
        host.wait_until_final(&waiting[0], WAIT).await["state"],
        "acked"
    );
    let new = host.enqueue_one("waiting", json!({"w": 4})).await;
    assert!(
        new.parse::<i64>().unwrap() > waiting[2].parse::<i64>().unwrap(),
        "{new} continues above the copied ids"
    );
    assert_eq!(host.wait_until_final(&new, WAIT).await["state"], "acked");
}

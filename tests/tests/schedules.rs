//! Schedules through the real binary, as a user drives them with `spool schedule` and `curl`:
//! fires with their headers, field-naming errors, run now / pause / resume / update / delete,
//! `[[schedules]]` in spool.toml across restarts, a topic target through routes, and `kill -9`
//! while fires are due (each instant once, none lost).
//!
//! Calendar arithmetic (DST, time zones) and the missed-fire policies after long gaps are tested
//! with a controlled clock beside the code (`scheduler::calendar`, `scheduler::timer`); here
//! time is real and short.

use std::collections::BTreeSet;
use std::time::Duration;

use spool_tests::{TestHost, Value, json, wait_until};

const WAIT: Duration = Duration::from_secs(30);

/// The messages of `queue` (up to 1,000), oldest first.
async fn messages(host: &TestHost, queue: &str) -> Vec<Value> {
    let page = host
        .get(&format!("/v1/queues/{queue}/messages?limit=1000"))
        .await
        .expect_ok(&format!("list {queue}"));
    page["items"]
        .as_array()
        .unwrap_or_else(|| panic!("a page has items: {page}"))
        .clone()
}

/// The `spool-fire-at` header of each message, in order.
fn fire_times(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .map(|m| {
            m["headers"]["spool-fire-at"]
                .as_str()
                .unwrap_or_else(|| panic!("a fired message has spool-fire-at: {m}"))
                .to_owned()
        })
        .collect()
}

fn ms_of(rfc3339: &str) -> i64 {
    let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{rfc3339:?} is RFC 3339: {e}"));
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// The id the CLI printed for `schedule add`: "schedule 3: ...".
fn schedule_id(stdout: &str) -> String {
    stdout
        .trim()
        .strip_prefix("schedule ")
        .and_then(|s| s.split(':').next())
        .unwrap_or_else(|| panic!("`schedule add` prints `schedule ID: ...`, got {stdout:?}"))
        .to_owned()
}

async fn wait_count(host: &TestHost, queue: &str, at_least: usize) -> Vec<Value> {
    wait_until(&format!("{at_least} messages in {queue}"), WAIT, || async {
        let m = messages(host, queue).await;
        if m.len() >= at_least {
            Ok(m)
        } else {
            Err(format!("{} messages", m.len()))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interval_fires_into_a_queue_once_per_instant_with_its_headers() {
    let host = TestHost::start();
    host.put_queue("ticks", json!({})).await;
    let out = host.cli([
        "schedule",
        "add",
        "--every",
        "1s",
        "--queue",
        "ticks",
        r#"{"tick": true}"#,
        "--name",
        "ticker",
        "--header",
        "kind=tick",
    ]);
    out.expect_success("spool schedule add");
    let id = schedule_id(&out.stdout);

    let fired = wait_count(&host, "ticks", 3).await;
    let times = fire_times(&fired);
    let distinct: BTreeSet<&String> = times.iter().collect();
    assert_eq!(
        distinct.len(),
        times.len(),
        "each instant fires once: {times:?}"
    );
    for pair in times.windows(2) {
        assert_eq!(
            ms_of(&pair[1]) - ms_of(&pair[0]),
            1000,
            "one second apart: {times:?}"
        );
    }
    for m in &fired {
        assert_eq!(m["headers"]["spool-schedule-id"], json!(id), "{m}");
        assert_eq!(m["headers"]["kind"], json!("tick"), "{m}");
        assert_eq!(m["payload"], json!({"tick": true}), "{m}");
    }

    let shown = host
        .get(&format!("/v1/schedules/{id}"))
        .await
        .expect_ok("get schedule");
    assert!(shown["runs"].as_u64().unwrap() >= 3, "{shown}");
    assert_eq!(shown["upcoming"].as_array().unwrap().len(), 5, "{shown}");
    let fires = shown["fires"].as_array().unwrap();
    assert!(!fires.is_empty(), "{shown}");
    assert!(fires[0]["lateness_ms"].as_i64().unwrap() >= 0, "{shown}");
    assert_eq!(
        fires[0]["message_ids"].as_array().unwrap().len(),
        1,
        "{shown}"
    );

    let listed = host.cli(["schedule", "list"]);
    listed.expect_success("spool schedule list");
    assert!(
        listed.stdout.contains("ticker") && listed.stdout.contains("every 1s"),
        "{}",
        listed.stdout
    );
    let show = host.cli(["schedule", "show", &id]);
    show.expect_success("spool schedule show");
    assert!(show.stdout.contains("recent fires"), "{}", show.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_definitions_are_refused_naming_the_field() {
    let host = TestHost::start();
    host.put_queue("q", json!({})).await;
    let cases = [
        (
            json!({"cron": "61 * * * * *", "queue": "q", "payload": 1}),
            "cron",
        ),
        (json!({"cron": "* * *", "queue": "q", "payload": 1}), "cron"),
        (
            json!({"cron": "0 * * * * *", "timezone": "Mars/Olympus", "queue": "q", "payload": 1}),
            "timezone",
        ),
        (
            json!({"every": "soon", "queue": "q", "payload": 1}),
            "every",
        ),
        (
            json!({"every": "10ms", "queue": "q", "payload": 1}),
            "every",
        ),
        (json!({"at": "tomorrow", "queue": "q", "payload": 1}), "at"),
        (
            json!({"every": "1m", "queue": "q", "payload": 1,
                "start_at": "2030-01-02T00:00:00Z", "end_at": "2030-01-01T00:00:00Z"}),
            "end_at",
        ),
        (
            json!({"every": "1m", "queue": "q", "topic": "a.b", "payload": 1}),
            "topic",
        ),
        (json!({"every": "1m", "payload": 1}), "queue or topic"),
        (
            json!({"cron": "0 * * * * *", "every": "1m", "queue": "q", "payload": 1}),
            "exactly one",
        ),
        (json!({"queue": "q", "payload": 1}), "cron"),
        (
            json!({"every": "1m", "queue": "nope", "payload": 1}),
            "queue",
        ),
        (json!({"every": "1m", "queue": "q"}), "payload"),
        (
            json!({"every": "1m", "queue": "q", "payload": 1, "max_runs": 0}),
            "max_runs",
        ),
        (
            json!({"every": "1m", "queue": "q", "payload": 1, "missed": "sometimes"}),
            "missed",
        ),
    ];
    for (body, field) in cases {
        let json = host
            .post("/v1/schedules", &body)
            .await
            .expect(400, &format!("POST /v1/schedules {body}"));
        let message = json["error"]["message"].as_str().unwrap_or_default();
        assert!(
            message.contains(field),
            "{body}: {message:?} names {field:?}"
        );
    }
    let listed = host.get("/v1/schedules").await.expect_ok("list");
    assert_eq!(
        listed["schedules"],
        json!([]),
        "a refused schedule is not stored"
    );

    // The CLI says the same.
    let out = host.cli(["schedule", "add", "--cron", "0 61 * * * *", "--queue", "q"]);
    out.expect_failure("a bad cron");
    assert!(out.stderr.contains("cron"), "{}", out.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_now_pause_resume_update_and_delete() {
    let host = TestHost::start();
    host.put_queue("reports", json!({})).await;
    // Far in the future: only `run` fires it.
    let created = host
        .post(
            "/v1/schedules",
            &json!({"cron": "0 0 3 1 1 *", "timezone": "Europe/Paris", "queue": "reports",
                    "payload": {"report": "yearly"}, "name": "yearly"}),
        )
        .await
        .expect(201, "create");
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["timezone"], json!("Europe/Paris"));
    // 03:00 in Paris on 1 January is 02:00 UTC.
    let next = created["next_fire_at"].as_str().unwrap();
    assert!(next.ends_with("-01-01T02:00:00Z"), "{created}");

    let out = host.cli(["schedule", "run", &id]);
    out.expect_success("spool schedule run");
    let fired = wait_count(&host, "reports", 1).await;
    assert_eq!(fired.len(), 1);
    let fire_at = ms_of(&fire_times(&fired)[0]);
    assert!(
        (fire_at - spool_tests::now_ms()).abs() < 60_000,
        "run now fires at now"
    );
    let after = host
        .get(&format!("/v1/schedules/{id}"))
        .await
        .expect_ok("get");
    assert_eq!(
        after["next_fire_at"], created["next_fire_at"],
        "run now keeps the next fire"
    );
    assert_eq!(
        after["runs"],
        json!(0),
        "run now does not count against max_runs"
    );
    assert_eq!(after["fires"][0]["manual"], json!(true), "{after}");

    // Pause an every-second schedule: nothing fires until it is resumed.
    let ticker = host
        .post(
            "/v1/schedules",
            &json!({"every": "1s", "queue": "reports", "payload": "tick",
                                        "paused": true, "missed": "skip"}),
        )
        .await
        .expect(201, "create paused");
    let tid = ticker["id"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        messages(&host, "reports").await.len(),
        1,
        "a paused schedule does not fire"
    );
    host.cli(["schedule", "resume", &tid])
        .expect_success("resume");
    wait_count(&host, "reports", 3).await;
    host.cli(["schedule", "pause", &tid])
        .expect_success("pause");
    let paused = host
        .get(&format!("/v1/schedules/{tid}"))
        .await
        .expect_ok("get");
    assert_eq!(paused["paused"], json!(true));

    // Update: a new cron and payload; the next fire follows the new definition.
    let out = host.cli([
        "schedule",
        "update",
        &id,
        "--cron",
        "0 30 9 * * *",
        "--payload",
        r#"{"report": "daily"}"#,
    ]);
    out.expect_success("spool schedule update");
    let updated = host
        .get(&format!("/v1/schedules/{id}"))
        .await
        .expect_ok("get");
    assert_eq!(updated["cron"], json!("0 30 9 * * *"));
    assert_eq!(updated["payload"], json!({"report": "daily"}));
    let next = updated["next_fire_at"].as_str().unwrap();
    assert!(
        next.ends_with(":30:00Z"),
        "09:30 in Paris is 08:30 or 07:30 UTC: {updated}"
    );
    let cleared = host
        .call(
            spool_tests::Method::PATCH,
            &format!("/v1/schedules/{id}"),
            Some(&json!({"name": null})),
        )
        .await
        .expect_ok("clear the name");
    assert!(
        cleared.get("name").is_none() || cleared["name"].is_null(),
        "{cleared}"
    );

    host.cli(["schedule", "delete", &id])
        .expect_success("delete");
    host.get(&format!("/v1/schedules/{id}"))
        .await
        .expect_error(404, "deleted");
    host.delete(&format!("/v1/schedules/{tid}"))
        .await
        .expect_ok("delete the ticker");
    // Messages it enqueued stay.
    assert!(messages(&host, "reports").await.len() >= 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_topic_schedule_goes_through_the_routes() {
    let host = TestHost::start();
    for q in ["audit", "billing"] {
        host.put_queue(q, json!({})).await;
    }
    for (pattern, queue) in [("ops.#", "audit"), ("ops.nightly", "billing")] {
        host.post("/v1/routes", &json!({"pattern": pattern, "queue": queue}))
            .await
            .expect(201, "route");
    }
    let s = host
        .post(
            "/v1/schedules",
            &json!({"every": "1s", "topic": "ops.nightly", "payload": {"job": 1}}),
        )
        .await
        .expect(201, "create");
    let id = s["id"].as_str().unwrap().to_owned();
    let audit = wait_count(&host, "audit", 2).await;
    let billing = wait_count(&host, "billing", 2).await;
    // Each fire reached both queues, with the same fire instant.
    let a: BTreeSet<String> = fire_times(&audit).into_iter().collect();
    let b: BTreeSet<String> = fire_times(&billing).into_iter().collect();
    assert!(a.intersection(&b).count() >= 1, "{a:?} {b:?}");
    for m in audit.iter().chain(&billing) {
        assert_eq!(m["topic"], json!("ops.nightly"), "{m}");
        assert_eq!(m["headers"]["spool-schedule-id"], json!(id), "{m}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_in_spool_toml_are_created_once_and_kept_across_restarts() {
    let config = r#"
[queues.jobs]

[[schedules]]
name = "heartbeat"
every = "1s"
queue = "jobs"
payload = { beat = true }
missed = "skip"
"#;
    let mut host = TestHost::options().config(config).start();
    let first = wait_until("the schedule from the config", WAIT, || async {
        let list = host.get("/v1/schedules").await.expect_ok("list");
        let s = list["schedules"][0].clone();
        if s["runs"].as_u64().is_some_and(|r| r >= 2) {
            Ok(s)
        } else {
            Err(list.to_string())
        }
    })
    .await;
    assert_eq!(first["name"], json!("heartbeat"));
    host.restart();
    let list = host.get("/v1/schedules").await.expect_ok("list");
    let schedules = list["schedules"].as_array().unwrap();
    assert_eq!(
        schedules.len(),
        1,
        "restarted with the same file: not created twice: {list}"
    );
    assert_eq!(schedules[0]["id"], first["id"], "the same schedule");
    assert!(
        schedules[0]["runs"].as_u64().unwrap() >= 2,
        "its history is kept: {list}"
    );
    let fired = messages(&host, "jobs").await;
    let times = fire_times(&fired);
    let distinct: BTreeSet<&String> = times.iter().collect();
    assert_eq!(
        distinct.len(),
        times.len(),
        "no instant twice across the restart: {times:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_fires_are_due_fires_each_instant_exactly_once() {
    let mut host = TestHost::start();
    host.put_queue("beats", json!({})).await;
    host.post(
        "/v1/schedules",
        &json!({"every": "1s", "queue": "beats", "payload": null,
                                        "missed": "fire-all"}),
    )
    .await
    .expect(201, "create");
    // 20 crashes at pseudo-random offsets within and across fire instants.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..20 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        tokio::time::sleep(Duration::from_millis(200 + seed % 1300)).await;
        host.restart();
    }
    let last_restart = spool_tests::now_ms();
    // After the last restart, fires catch up and go on.
    let fired = wait_until("fires after the last restart", WAIT, || async {
        let m = messages(&host, "beats").await;
        let times = fire_times(&m);
        if times.last().is_some_and(|t| ms_of(t) > last_restart + 1000) {
            Ok(m)
        } else {
            Err(format!("last fire {:?}", times.last()))
        }
    })
    .await;
    let times: Vec<i64> = fire_times(&fired).iter().map(|t| ms_of(t)).collect();
    let distinct: BTreeSet<i64> = times.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        times.len(),
        "an instant fired twice: {times:?}"
    );
    // fire-all: every instant from the first to the last, none lost to the crashes.
    let (first, last) = (*distinct.first().unwrap(), *distinct.last().unwrap());
    assert_eq!(
        distinct.len() as i64,
        (last - first) / 1000 + 1,
        "an instant is missing between {first} and {last}: {times:?}"
    );
}

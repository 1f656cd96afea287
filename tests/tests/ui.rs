//! The dashboard at `/ui` in a real browser: this test prepares a server with tokens of every
//! role, queues, dead letters, a route and a schedule, then runs `tests/browser/dashboard.mjs`
//! (Debian's Chromium driven by playwright-core, axe-core on every page), which clicks through
//! every page as an admin, a reader and a producer and writes screenshots to
//! `target/ui-screenshots`. `scripts/ensure-browser.sh` installs the browser and the npm
//! packages (`scripts/test.sh` runs it).

use std::fs::File;
use std::process::Command;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use spool_tests::{TestHost, json, plugin_path, workspace};

const ADMIN: &str = "ui-admin-secret";
const READER: &str = "ui-reader-secret";
const PRODUCER: &str = "ui-producer-secret";
/// The browser run takes about 10 s; this bounds a hung one (a slow Chromium start included).
const BROWSER_TIMEOUT: Duration = Duration::from_secs(420);

fn config() -> String {
    [
        ("ops", "admin", ADMIN),
        ("dash", "reader", READER),
        ("shop", "producer", PRODUCER),
    ]
    .iter()
    .map(|(name, role, token)| {
        format!(
            "[[auth.tokens]]\nname = \"{name}\"\nrole = \"{role}\"\nsha256 = \"{:x}\"\n\n",
            Sha256::digest(token.as_bytes())
        )
    })
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_works_in_a_browser_for_every_role() {
    let tools = workspace().join("target/tools/browser");
    assert!(
        tools.join("node_modules/playwright-core").is_dir(),
        "the browser test tools are missing; install them with:\n    scripts/ensure-browser.sh"
    );
    let host = TestHost::options().config(config()).token(ADMIN).start();
    host.deploy("echo", &plugin_path("echo")).await;
    // A second version, so the plugin page can activate either.
    host.deploy("echo", &plugin_path("misbehave")).await;
    host.deploy("misbehave", &plugin_path("misbehave")).await;
    host.put_queue("orders", json!({"handler": "echo", "paused": true}))
        .await;
    for q in ["failing", "bulk", "keep"] {
        host.put_queue(q, json!({"handler": "misbehave", "max_attempts": 1}))
            .await;
    }
    for (q, n) in [("failing", 1), ("bulk", 3), ("keep", 1)] {
        for _ in 0..n {
            host.enqueue_one(q, json!({"do": "trap"})).await;
        }
        host.wait_stats(q, "dead letters", Duration::from_secs(60), |s| {
            s.dlq_depth == n
        })
        .await;
    }
    // A replayed dead letter of `failing` then stays ready for the test to see.
    host.put_queue("failing", json!({"paused": true})).await;
    host.post(
        "/v1/routes",
        &json!({"pattern": "orders.#", "queue": "orders"}),
    )
    .await
    .expect(201, "route");
    let schedule = host
        .post(
            "/v1/schedules",
            &json!({"cron": "0 0 1 1 *", "queue": "orders", "payload": {"from": "schedule"},
                    "name": "new-year"}),
        )
        .await
        .expect(201, "schedule");

    let shots = workspace().join("target/ui-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    // Files, not pipes: a long report must not fill a pipe nobody reads until the end.
    let (out_path, err_path) = (shots.join("browser.out"), shots.join("browser.err"));
    let mut child = Command::new("node")
        .arg(workspace().join("tests/browser/dashboard.mjs"))
        .env("SPOOL_URL", host.url())
        .env("SPOOL_ADMIN_TOKEN", ADMIN)
        .env("SPOOL_READER_TOKEN", READER)
        .env("SPOOL_PRODUCER_TOKEN", PRODUCER)
        .env("SPOOL_PLUGIN", plugin_path("echo"))
        .env("SPOOL_SCHEDULE", schedule["id"].as_str().unwrap())
        .env("SPOOL_SCREENSHOTS", &shots)
        .env("SPOOL_BROWSER_TOOLS", &tools)
        .stdout(File::create(&out_path).unwrap())
        .stderr(File::create(&err_path).unwrap())
        .spawn()
        .expect("start node (Node.js 18 or later) with tests/browser/dashboard.mjs");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for node") {
            break Some(status);
        }
        if started.elapsed() > BROWSER_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let out = std::fs::read_to_string(&out_path).unwrap_or_default();
    let err = std::fs::read_to_string(&err_path).unwrap_or_default();
    println!("{out}");
    eprintln!("{err}");
    let status = status.unwrap_or_else(|| {
        panic!("the browser test ran longer than {BROWSER_TIMEOUT:?}:\n{out}\n{err}")
    });
    assert!(
        status.success(),
        "the browser test failed ({status}); screenshots are in {}:\n{out}\n{err}\nserver log:\n{}",
        shots.display(),
        host.log_tail(40)
    );
    for page in [
        "overview",
        "queue",
        "message",
        "dead-letters",
        "plugins",
        "routes",
        "schedules",
    ] {
        assert!(
            shots.join(format!("{page}.png")).is_file(),
            "a screenshot of {page}"
        );
    }
}

//! `spool serve --config spool.toml`: plugins and queues declared in the file exist at start, and
//! a bad file stops the host at start with the offending key named.

use std::time::Duration;

use spool_tests::{TestHost, json, plugin_path, spool_cli};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_file_deploys_plugins_and_creates_queues() {
    let toml = format!(
        r#"
[plugins.echo]
path = "{}"

[queues.orders]
handler = "echo"
concurrency = 3
max_attempts = 4
"#,
        plugin_path("echo").display()
    );
    let host = TestHost::options().config(toml).start();
    let q = host.queue("orders").await;
    assert_eq!(q["config"]["handler"], "echo", "{q}");
    assert_eq!(q["config"]["concurrency"], 3, "{q}");
    assert_eq!(q["config"]["max_attempts"], 4, "{q}");
    let id = host.enqueue_one("orders", json!({"order": 1})).await;
    let m = host.wait_state(&id, "acked", Duration::from_secs(30)).await;
    assert_eq!(m["plugin_version"], "echo@1", "{m}");
}

#[test]
fn bad_config_fails_at_start_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("spool.toml");
    std::fs::write(&config, "[queues.orders]\nconcurency = 8\n").unwrap();
    let db = dir.path().join("spool.db");
    let out = spool_cli(
        None,
        [
            "serve".as_ref(),
            "--config".as_ref(),
            config.as_os_str(),
            "--db".as_ref(),
            db.as_os_str(),
            "--listen".as_ref(),
            "127.0.0.1:0".as_ref(),
        ] as [&std::ffi::OsStr; 7],
    );
    out.expect_failure("spool serve with a misspelled config key");
    assert!(
        out.stderr.contains("concurency"),
        "the error names the bad key:\n{}",
        out.stderr
    );
    assert!(
        !out.stdout.contains("listening on"),
        "a bad config must stop the host before it listens:\n{}",
        out.stdout
    );
}

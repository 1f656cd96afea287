//! `spool bench` end to end: every scenario runs and lands in the JSON report, the temporary
//! databases are removed, a cut-short run still reports, and a missing plugin is a clear error.
//! Nothing here looks at how fast anything was: benchmarks are never timed tests.

use spool_tests::{Value, plugin_path, spool_cli};

const SCENARIOS: [&str; 9] = [
    "enqueue", "batch", "drain", "latency", "overhead", "rss", "baseline", "noisy", "publish",
];

/// `--quick`, made smaller still (fewer messages, one concurrency, a shorter latency load) so the
/// smoke test stays light next to the other end-to-end tests.
fn quick_args(dir: &std::path::Path, duration: &str) -> Vec<String> {
    let plugin = plugin_path("echo");
    [
        "bench",
        "--quick",
        "--json",
        "--messages",
        "2000",
        "--concurrency",
        "8",
        "--duration",
        duration,
        "--plugin",
        plugin.to_str().expect("utf-8 path"),
        "--dir",
        dir.to_str().expect("utf-8 path"),
    ]
    .map(str::to_owned)
    .to_vec()
}

fn parse(stdout: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| {
        panic!("`spool bench --json` prints one JSON document ({e}):\n{stdout}")
    })
}

/// The median of `scenario`'s figure `variant` in a `--json` report.
fn median(doc: &Value, scenario: &str, variant: &str) -> f64 {
    let results = doc["results"].as_array().expect("results is an array");
    let f = results
        .iter()
        .find(|r| r["scenario"] == scenario && r["variant"].as_str() == Some(variant))
        .unwrap_or_else(|| panic!("no {scenario} figure {variant:?} in:\n{doc:#}"));
    f["median"].as_f64().expect("a median")
}

#[test]
fn quick_bench_reports_every_scenario_as_json() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = spool_cli(None, quick_args(dir.path(), "1s"));
    out.expect_success("spool bench --quick --json");
    let doc = parse(&out.stdout);

    assert_eq!(doc["interrupted"], false, "{doc:#}");
    assert_eq!(doc["settings"]["quick"], true, "{doc:#}");
    assert_eq!(doc["settings"]["sync"], "normal", "{doc:#}");
    assert!(
        doc["machine"]["cores"].as_u64().unwrap_or(0) >= 1,
        "{doc:#}"
    );
    assert!(doc["machine"]["cpu"].is_string(), "{doc:#}");

    let results = doc["results"].as_array().expect("results is an array");
    for scenario in SCENARIOS {
        let figures: Vec<&Value> = results
            .iter()
            .filter(|r| r["scenario"] == scenario)
            .collect();
        assert!(!figures.is_empty(), "no {scenario} figures in:\n{doc:#}");
        for f in figures {
            let median = f["median"].as_f64();
            assert!(
                median.is_some_and(|m| m.is_finite() && m >= 0.0),
                "{scenario} figure without a usable median: {f}"
            );
            assert_eq!(f["partial"], false, "{f}");
        }
    }
    // Spool throughput figures are compared with the raw SQLite baseline of the same run.
    let drain = results
        .iter()
        .find(|r| r["scenario"] == "drain")
        .expect("a drain figure");
    assert_eq!(
        drain["baseline"], "claim+delete, 100 per transaction",
        "{drain}"
    );
    assert!(drain["ratio_to_baseline"].as_f64().is_some(), "{drain}");
    assert!(doc["targets"].is_array(), "{doc:#}");

    // The readable table went to stderr; the temporary databases are gone.
    assert!(
        out.stderr.contains("scenario"),
        "table on stderr:\n{}",
        out.stderr
    );
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("read bench dir")
        .map(|e| e.expect("dir entry").path())
        .collect();
    assert!(left.is_empty(), "bench left files behind: {left:?}");
}

#[test]
fn the_publish_scenario_compares_every_path_with_a_direct_enqueue() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (echo, filter) = (plugin_path("echo"), plugin_path("route_by_field"));
    let out = spool_cli(
        None,
        [
            "bench",
            "--quick",
            "--json",
            "--scenarios",
            "publish",
            "--messages",
            "300",
            "--plugin",
            echo.to_str().expect("utf-8 path"),
            "--filter",
            filter.to_str().expect("utf-8 path"),
            "--dir",
            dir.path().to_str().expect("utf-8 path"),
        ],
    );
    out.expect_success("spool bench --scenarios publish");
    let doc = parse(&out.stdout);
    let positive = |variant: &str| {
        let m = median(&doc, "publish", variant);
        assert!(m.is_finite() && m > 0.0, "{variant}: {m}");
    };
    for transport in ["in-process", "http"] {
        positive(&format!("{transport}, direct enqueue → q1, msgs/s"));
        for (path, target) in [
            ("fan-out 1", 0.8),
            ("fan-out 3", 0.8),
            ("filter, own queue", 0.3),
            ("filter, redirect", 0.3),
        ] {
            positive(&format!(
                "{transport}, {path} ÷ direct, per delivery (target ≥ {target})"
            ));
        }
    }
    for routes in ["10", "10,000"] {
        for what in ["one topic, hit", "one topic, miss", "build the index"] {
            positive(&format!("matcher, {routes} routes: {what}"));
        }
    }
    let targets = doc["targets"].as_array().expect("targets is an array");
    assert_eq!(
        targets
            .iter()
            .filter(|t| t["what"] == "publish vs direct enqueue, per delivery")
            .count(),
        8,
        "{doc:#}"
    );
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .expect("read bench dir")
        .map(|e| e.expect("dir entry").path())
        .collect();
    assert!(left.is_empty(), "bench left files behind: {left:?}");
}

#[test]
fn a_cut_short_bench_still_reports_what_it_measured() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut args = quick_args(dir.path(), "30s");
    args.extend(["--scenarios", "batch,latency", "--max-time", "2s"].map(str::to_owned));
    let out = spool_cli(None, args);
    out.expect_success("spool bench --max-time 2s");
    let doc = parse(&out.stdout);
    assert_eq!(doc["interrupted"], true, "{doc:#}");
    assert!(
        doc["elapsed_s"].as_f64().is_some_and(|s| s < 30.0),
        "--max-time stopped the 30 s latency run early: {doc:#}"
    );
    assert!(doc["results"].is_array(), "{doc:#}");
}

#[test]
fn a_missing_plugin_names_the_build_command() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = spool_cli(
        None,
        [
            "bench",
            "--quick",
            "--scenarios",
            "drain",
            "--plugin",
            "/nonexistent/echo.wasm",
            "--dir",
            dir.path().to_str().expect("utf-8 path"),
        ],
    );
    out.expect_failure("spool bench with a missing plugin");
    assert!(
        out.stderr
            .contains("cargo build --release --target wasm32-wasip2 -p echo"),
        "the error says how to build the plugin:\n{}",
        out.stderr
    );
}

/// The deploy scenario uploads a JavaScript component on a cold cache beside two running queues
/// and reports the upload, the first ack, the optimised code and the enqueue p99s.
#[test]
fn the_deploy_scenario_times_a_large_plugin_from_upload_to_optimised_code() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (echo, js) = (
        plugin_path("echo"),
        spool_tests::lang_plugin_path("js-handler"),
    );
    let out = spool_cli(
        None,
        [
            "bench",
            "--quick",
            "--json",
            "--scenarios",
            "deploy",
            "--plugin",
            echo.to_str().expect("utf-8 path"),
            "--deploy",
            js.to_str().expect("utf-8 path"),
            "--dir",
            dir.path().to_str().expect("utf-8 path"),
        ],
    );
    out.expect_success("spool bench --scenarios deploy");
    let doc = parse(&out.stdout);
    let median = |variant: &str| median(&doc, "deploy", variant);
    let upload = median("js-handler: upload (compile, check, store)");
    let first = median("js-handler: upload answered → first message acked");
    let optimized = median("js-handler: upload start → optimised code in");
    assert!(upload > 0.0 && first > 0.0, "{doc:#}");
    assert!(
        optimized >= upload,
        "the optimised code comes after the upload: {doc:#}"
    );
    for p99 in [
        "quiet",
        "while deploying",
        "while uploading",
        "while optimising",
    ] {
        let v = median(&format!("js-handler: HTTP enqueue p99, {p99}"));
        assert!(v.is_finite() && v > 0.0, "{p99}: {doc:#}");
    }
    assert!(median("js-handler: enqueue p99, deploying ÷ quiet").is_finite());
    let targets = doc["targets"].as_array().expect("targets");
    assert!(
        targets
            .iter()
            .any(|t| t["what"] == "upload answered → first message acked"),
        "{doc:#}"
    );
}

#[test]
fn the_postgres_scenario_compares_one_and_three_hosts_with_raw_postgres() {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = spool_tests::postgres_database();
    let echo = plugin_path("echo");
    let out = spool_cli(
        None,
        [
            "bench",
            "--json",
            "--database-url",
            &url,
            "--messages",
            "1000",
            "--runs",
            "1",
            "--plugin",
            echo.to_str().expect("utf-8 path"),
            "--dir",
            dir.path().to_str().expect("utf-8 path"),
        ],
    );
    out.expect_success("spool bench --database-url");
    let doc = parse(&out.stdout);
    // With a server and no --scenarios, the postgres scenario is the one that runs.
    assert_eq!(
        doc["settings"]["scenarios"],
        serde_json::json!(["postgres"]),
        "{doc:#}"
    );
    let positive = |variant: &str| {
        let m = median(&doc, "postgres", variant);
        assert!(m.is_finite() && m > 0.0, "{variant}: {m}");
    };
    for floor in [
        "insert, 100 per transaction",
        "SKIP LOCKED claim, then delete, 100 per transaction",
        "claim+delete in one statement, 100 per transaction",
        "lease, then ack (delete), 100 per transaction",
    ] {
        positive(&format!("raw PostgreSQL: {floor}, 4 connections"));
    }
    for hosts in ["1 host", "3 hosts"] {
        positive(&format!("enqueue, 100 per call, 16 producers, {hosts}"));
        positive(&format!("enqueue, 1 per call, 16 producers, {hosts}"));
        positive(&format!(
            "drain through echo (reuse, c=32 per host), {hosts}"
        ));
    }
    positive("drain through echo (reuse, c=32), 1 host, acked_retention = 0");
    positive("drain, 3 hosts ÷ 1 host");
    let one_host = doc["results"]
        .as_array()
        .expect("results")
        .iter()
        .find(|r| r["variant"] == "drain through echo (reuse, c=32 per host), 1 host")
        .expect("the one-host drain");
    assert!(
        one_host["ratio_to_baseline"]
            .as_f64()
            .is_some_and(|r| r > 0.0),
        "the drain is compared with the raw floor: {one_host:#}"
    );
    let checked: Vec<&str> = doc["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .filter_map(|t| t["what"].as_str())
        .collect();
    for what in [
        "PostgreSQL drain, 1 host, vs raw claim, then delete",
        "PostgreSQL: three hosts drain faster than one",
    ] {
        assert!(checked.contains(&what), "{what} not in {checked:?}");
    }
    // Every database the bench made on the server is gone again.
    assert_eq!(
        spool_tests::postgres_psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'spool_bench_%'"
        ),
        "0"
    );
}

#[test]
fn the_postgres_scenario_without_a_server_says_how_to_give_one() {
    let out = spool_cli(None, ["bench", "--scenarios", "postgres"]);
    out.expect_failure("spool bench --scenarios postgres without --database-url");
    assert!(
        out.stderr.contains("--database-url postgres://"),
        "{}",
        out.stderr
    );
}

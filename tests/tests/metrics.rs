//! `GET /metrics` and the live queue/plugin stats against a real server: a few hundred messages,
//! some failing, then the Prometheus text must parse strictly and agree with the JSON API.

use std::collections::BTreeMap;
use std::time::Duration;

use spool_tests::{TestHost, Value, json, wait_until};

use crate::host_with;

/// Messages through `echo`, all acked.
const FAST: u64 = 300;
/// Messages through `misbehave` that ack.
const FLAKY_OK: u64 = 60;
/// Messages that trap: delivered twice (`max_attempts` 2), then dead as `trap`.
const FLAKY_TRAP: u64 = 20;
/// Messages whose handler dead-letters them at once (category `handler`).
const FLAKY_REJECT: u64 = 20;

/// One sample line: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the OpenMetrics/Prometheus text format strictly: every line must be a `# HELP`,
/// `# TYPE` or `# UNIT` comment, the final `# EOF`, or a sample of a family declared by a
/// `# TYPE` line before it. Anything else is an error naming the line.
fn parse_exposition(text: &str) -> Result<Vec<Sample>, String> {
    let mut families: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = Vec::new();
    let mut eof = false;
    for (n, line) in text.lines().enumerate() {
        let at = |e: &str| format!("line {}: {e}: {line:?}", n + 1);
        if eof {
            return Err(at("content after # EOF"));
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut parts = comment.trim_start().splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some("EOF"), None, None) => eof = true,
                (Some("HELP"), Some(name), Some(_)) if valid_name(name) => {}
                (Some("UNIT"), Some(name), Some(unit)) if valid_name(name) && valid_name(unit) => {}
                (Some("TYPE"), Some(name), Some(kind)) if valid_name(name) => {
                    let known = [
                        "counter",
                        "gauge",
                        "histogram",
                        "summary",
                        "info",
                        "stateset",
                        "unknown",
                    ];
                    if !known.contains(&kind) {
                        return Err(at("unknown metric type"));
                    }
                    if families.insert(name.to_owned(), kind.to_owned()).is_some() {
                        return Err(at("family declared twice"));
                    }
                }
                _ => return Err(at("malformed comment")),
            }
            continue;
        }
        let sample = parse_sample(line).map_err(|e| at(&e))?;
        let declared = families.iter().any(|(family, kind)| {
            let suffixes: &[&str] = match kind.as_str() {
                "counter" => &["_total", "_created"],
                "histogram" => &["_bucket", "_count", "_sum", "_created"],
                "info" => &["_info"],
                _ => &[""],
            };
            suffixes
                .iter()
                .any(|s| sample.name == format!("{family}{s}"))
        });
        if !declared {
            return Err(at("sample of a family with no # TYPE line before it"));
        }
        samples.push(sample);
    }
    if !eof {
        return Err("the exposition does not end with # EOF".to_owned());
    }
    Ok(samples)
}

fn valid_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_' || b == b':')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b':')
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(['{', ' '])
        .ok_or("no value after the metric name")?;
    let name = &line[..name_end];
    if !valid_name(name) {
        return Err(format!("invalid metric name {name:?}"));
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after) = rest.strip_prefix('{') {
        rest = after;
        loop {
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = rest.find('=').ok_or("label without `=`")?;
            let key = &rest[..eq];
            if !valid_name(key) {
                return Err(format!("invalid label name {key:?}"));
            }
            rest = rest[eq + 1..]
                .strip_prefix('"')
                .ok_or("label value is not quoted")?;
            let mut value = String::new();
            let mut chars = rest.char_indices();
            let end = loop {
                match chars.next() {
                    None => return Err("unterminated label value".to_owned()),
                    Some((i, '"')) => break i,
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c @ ('\\' | '"'))) => value.push(c),
                        _ => return Err("bad escape in a label value".to_owned()),
                    },
                    Some((_, c)) => value.push(c),
                }
            };
            if labels.insert(key.to_owned(), value).is_some() {
                return Err(format!("label {key:?} given twice"));
            }
            rest = &rest[end + 1..];
            if let Some(after) = rest.strip_prefix(',') {
                rest = after;
            } else if !rest.starts_with('}') {
                return Err("labels must be separated by `,`".to_owned());
            }
        }
    }
    let value_text = rest.strip_prefix(' ').ok_or("no space before the value")?;
    // A timestamp would follow after another space; Spool never sends one.
    let value = match value_text {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v
            .parse::<f64>()
            .map_err(|_| format!("value {v:?} is not a number"))?,
    };
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// The value of the sample with exactly these labels.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    samples
        .iter()
        .find(|s| s.name == name && s.labels == want)
        .map(|s| s.value)
}

/// Fetches `/metrics`, checks the content type and parses the body.
async fn scrape(host: &TestHost) -> Vec<Sample> {
    let resp = reqwest::get(format!("{}/metrics", host.url()))
        .await
        .expect("GET /metrics");
    assert_eq!(resp.status().as_u16(), 200, "GET /metrics status");
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/openmetrics-text")
            || content_type.starts_with("text/plain"),
        "a Prometheus text content type, got {content_type:?}"
    );
    let text = resp.text().await.expect("read the /metrics body");
    parse_exposition(&text).unwrap_or_else(|e| panic!("/metrics does not parse: {e}\n{text}"))
}

/// Every way the scrape must agree with the queue's JSON stats; `Err` names the first
/// disagreement. The live families are updated just after each commit, so the caller retries.
fn agrees(samples: &[Sample], queue: &str, stats: &Value) -> Result<(), String> {
    let q = [("queue", queue)];
    let field = |f: &str| stats[f].as_u64().map(|v| v as f64);
    let mut checks: Vec<(String, Option<f64>, Option<f64>)> = Vec::new();
    for f in [
        "enqueued",
        "acked",
        "retried",
        "dead",
        "expired",
        "cancelled",
    ] {
        let name = format!("spool_messages_{f}_total");
        checks.push((name.clone(), value(samples, &name, &q), field(f)));
    }
    for (state, f) in [
        ("scheduled", "scheduled"),
        ("ready", "ready"),
        ("leased", "leased"),
        ("dead", "dlq_depth"),
    ] {
        checks.push((
            format!("spool_queue_messages{{state={state}}}"),
            value(
                samples,
                "spool_queue_messages",
                &[("queue", queue), ("state", state)],
            ),
            field(f),
        ));
    }
    let deliveries = field("acked")
        .zip(field("retried"))
        .zip(field("dead"))
        .map(|((a, r), d)| a + r + d);
    for h in ["spool_wait_seconds", "spool_handler_duration_seconds"] {
        for suffix in ["_count", "_bucket"] {
            let labels: &[(&str, &str)] = if suffix == "_bucket" {
                &[("le", "+Inf"), ("queue", queue)]
            } else {
                &q
            };
            let name = format!("{h}{suffix}");
            checks.push((name.clone(), value(samples, &name, labels), deliveries));
        }
    }
    let outcome = |o: &str| {
        value(
            samples,
            "spool_deliveries_total",
            &[("queue", queue), ("outcome", o)],
        )
    };
    for (o, f) in [("ack", "acked"), ("dead", "dead")] {
        checks.push((
            format!("spool_deliveries_total{{outcome={o}}}"),
            outcome(o),
            field(f),
        ));
    }
    // `retried` counts failures and handler-chosen retries alike; the outcomes tell them apart.
    checks.push((
        "spool_deliveries_total{outcome=retry} + {outcome=handler-retry}".to_owned(),
        outcome("retry")
            .zip(outcome("handler-retry"))
            .map(|(a, b)| a + b),
        field("retried"),
    ));
    checks.push((
        "spool_in_flight".to_owned(),
        value(samples, "spool_in_flight", &q),
        Some(0.0),
    ));
    for (what, got, want) in checks {
        if got.is_none() || got != want {
            return Err(format!(
                "queue {queue}: {what} is {got:?} in /metrics, the API says {want:?}"
            ));
        }
    }
    Ok(())
}

/// The buckets of a histogram series are cumulative: never decreasing as `le` grows.
fn assert_buckets_cumulative(samples: &[Sample], name: &str, queue: &str) {
    let mut buckets: Vec<(f64, f64)> = samples
        .iter()
        .filter(|s| s.name == name && s.labels.get("queue").map(String::as_str) == Some(queue))
        .map(|s| {
            let le = s.labels.get("le").expect("a bucket has `le`");
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().expect("`le` is a number")
            };
            (le, s.value)
        })
        .collect();
    assert!(buckets.len() > 10, "{name}{{queue={queue}}}: {buckets:?}");
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert_eq!(buckets[0].0, 0.000_1, "the first bucket is 100 µs");
    assert!(buckets.iter().any(|b| b.0 == 60.0), "a 60 s bucket");
    for pair in buckets.windows(2) {
        assert!(
            pair[0].1 <= pair[1].1,
            "{name}{{queue={queue}}}: {buckets:?}"
        );
    }
}

/// `wait_ms`/`handler_ms` are ordered percentiles over the deliveries seen.
fn assert_percentiles(stats: &Value, field: &str, deliveries: u64) {
    let p = &stats[field];
    let get = |k: &str| {
        p[k].as_f64()
            .unwrap_or_else(|| panic!("stats.{field}.{k} is a number: {stats}"))
    };
    let (p50, p95, p99) = (get("p50"), get("p95"), get("p99"));
    assert!(
        0.0 <= p50 && p50 <= p95 && p95 <= p99,
        "stats.{field} ordered: {p}"
    );
    assert!(p99 < 120_000.0, "stats.{field} within the test's run: {p}");
    assert_eq!(
        p["samples"].as_u64(),
        Some(deliveries.min(4_096)),
        "stats.{field} covers every delivery (up to the window): {p}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_agree_with_the_api_stats() {
    let host = host_with(&["echo", "misbehave"]).await;

    // Before any delivery the live figures are empty, not made up.
    host.put_queue("fast", json!({"handler": "echo", "concurrency": 4}))
        .await;
    let before = host.queue("fast").await;
    assert_eq!(before["stats"]["in_flight"], 0, "{before}");
    assert!(before["stats"]["wait_ms"].is_null(), "{before}");
    assert!(before["stats"]["handler_ms"].is_null(), "{before}");
    assert_eq!(before["stats"]["errors"], json!({}), "{before}");
    assert_eq!(
        before["stats"]["rates"],
        json!({"started_per_s": 0.0, "acked_per_s": 0.0, "failed_per_s": 0.0}),
        "{before}"
    );
    let started = std::time::Instant::now();

    host.put_queue(
        "flaky",
        json!({"handler": "misbehave", "concurrency": 4, "max_attempts": 2,
               "backoff_base_ms": 10, "backoff_max_ms": 50}),
    )
    .await;

    for chunk in 0..3 {
        let messages: Vec<Value> = (0..FAST / 3)
            .map(|i| json!({"payload": {"n": chunk * 1_000 + i}}))
            .collect();
        host.enqueue("fast", json!({ "messages": messages })).await;
    }
    let mut flaky: Vec<Value> = Vec::new();
    for i in 0..FLAKY_OK {
        flaky.push(json!({"payload": {"do": "ack", "n": i}}));
    }
    for _ in 0..FLAKY_TRAP {
        flaky.push(json!({"payload": {"do": "trap"}}));
    }
    for _ in 0..FLAKY_REJECT {
        flaky.push(json!({"payload": {"do": "dead-letter", "reason": "rejected"}}));
    }
    host.enqueue("flaky", json!({ "messages": flaky })).await;

    let fast = host
        .wait_stats(
            "fast",
            "every echo message acked",
            Duration::from_secs(90),
            |s| s.acked == FAST && s.live() == 0,
        )
        .await;
    assert_eq!((fast.enqueued, fast.dead, fast.retried), (FAST, 0, 0));
    let flaky = host
        .wait_stats(
            "flaky",
            "every misbehave message final",
            Duration::from_secs(90),
            |s| s.acked + s.dead == FLAKY_OK + FLAKY_TRAP + FLAKY_REJECT && s.live() == 0,
        )
        .await;
    assert_eq!(flaky.acked, FLAKY_OK, "{flaky:?}");
    assert_eq!(flaky.dead, FLAKY_TRAP + FLAKY_REJECT, "{flaky:?}");
    assert_eq!(
        flaky.retried, FLAKY_TRAP,
        "each trap is retried once: {flaky:?}"
    );

    // The queues are quiet now; the scrape catches up with the last commits within moments.
    let samples = wait_until(
        "/metrics to agree with the queues' stats",
        Duration::from_secs(30),
        || async {
            let samples = scrape(&host).await;
            for queue in ["fast", "flaky"] {
                let stats = host.queue(queue).await["stats"].clone();
                agrees(&samples, queue, &stats)?;
            }
            Ok(samples)
        },
    )
    .await;

    for queue in ["fast", "flaky"] {
        assert_buckets_cumulative(&samples, "spool_wait_seconds_bucket", queue);
        assert_buckets_cumulative(&samples, "spool_handler_duration_seconds_bucket", queue);
        let age = value(
            &samples,
            "spool_queue_oldest_ready_age_seconds",
            &[("queue", queue)],
        );
        assert_eq!(age, Some(0.0), "{queue}: nothing is ready");
    }
    let version = samples
        .iter()
        .find(|s| s.name == "spool_build_info")
        .expect("spool_build_info is exposed");
    assert_eq!(version.value, 1.0);
    assert!(
        version.labels.get("version").is_some_and(|v| !v.is_empty()),
        "{version:?}"
    );

    // Per-plugin errors: every trap attempt and every rejection, nothing for echo.
    let plugin_errors = |plugin: &str, category: &str| {
        value(
            &samples,
            "spool_plugin_errors_total",
            &[("plugin", plugin), ("category", category)],
        )
    };
    assert_eq!(
        plugin_errors("misbehave", "trap"),
        Some((FLAKY_TRAP * 2) as f64)
    );
    assert_eq!(
        plugin_errors("misbehave", "handler"),
        Some(FLAKY_REJECT as f64)
    );
    assert_eq!(plugin_errors("misbehave", "fuel"), Some(0.0));
    assert_eq!(plugin_errors("echo", "trap"), Some(0.0));
    // Label values come from closed sets only: queue and plugin names, states, categories.
    for s in &samples {
        for (k, v) in &s.labels {
            let ok = match k.as_str() {
                "queue" => ["fast", "flaky"].contains(&v.as_str()),
                "plugin" => ["echo", "misbehave"].contains(&v.as_str()),
                "le" | "version" | "state" | "category" | "outcome" => true,
                "level" => ["quick", "full"].contains(&v.as_str()),
                "cause" => [
                    "paused",
                    "no_handler",
                    "plugin_missing",
                    "not_a_handler",
                    "plugin_unloadable",
                ]
                .contains(&v.as_str()),
                _ => false,
            };
            assert!(ok, "unexpected label {k}={v:?} on {s:?}");
        }
    }

    // Rates average the last 60 complete seconds: once the second of the last delivery is over,
    // and as long as the whole run fit in the window, rate × 60 is the exact count.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    if started.elapsed() < std::time::Duration::from_secs(55) {
        let rates = host.queue("flaky").await["stats"]["rates"].clone();
        let times_60 = |f: &str| rates[f].as_f64().expect("a rate") * 60.0;
        let flaky_starts = (FLAKY_OK + 2 * FLAKY_TRAP + FLAKY_REJECT) as f64;
        assert!(
            (times_60("started_per_s") - flaky_starts).abs() < 0.5,
            "{rates}"
        );
        assert!(
            (times_60("acked_per_s") - FLAKY_OK as f64).abs() < 0.5,
            "{rates}"
        );
        let failed = (2 * FLAKY_TRAP + FLAKY_REJECT) as f64;
        assert!((times_60("failed_per_s") - failed).abs() < 0.5, "{rates}");
    }

    // The JSON stats carry the same live figures.
    let fast_stats = host.queue("fast").await["stats"].clone();
    assert_percentiles(&fast_stats, "wait_ms", FAST);
    assert_percentiles(&fast_stats, "handler_ms", FAST);
    assert_eq!(fast_stats["errors"], json!({}), "{fast_stats}");
    assert_eq!(fast_stats["in_flight"], 0, "{fast_stats}");

    let flaky_stats = host.queue("flaky").await["stats"].clone();
    let flaky_deliveries = FLAKY_OK + 2 * FLAKY_TRAP + FLAKY_REJECT;
    assert_percentiles(&flaky_stats, "wait_ms", flaky_deliveries);
    assert_percentiles(&flaky_stats, "handler_ms", flaky_deliveries);
    let errors = json!({"trap": FLAKY_TRAP * 2, "handler": FLAKY_REJECT});
    assert_eq!(flaky_stats["errors"], errors, "{flaky_stats}");
    // Every existing stats field is still there.
    for f in [
        "scheduled",
        "ready",
        "leased",
        "acked",
        "dead",
        "cancelled",
        "expired",
        "retried",
        "enqueued",
        "dlq_depth",
    ] {
        assert!(flaky_stats[f].is_u64(), "stats.{f}: {flaky_stats}");
    }

    // The list endpoint shows the same live stats.
    let list = host.get("/v1/queues").await.expect_ok("list queues");
    let listed = list["queues"]
        .as_array()
        .expect("`queues` array")
        .iter()
        .find(|q| q["name"] == "flaky")
        .unwrap_or_else(|| panic!("flaky listed: {list}"));
    assert_eq!(listed["stats"]["errors"], errors, "{listed}");
    assert!(listed["stats"]["wait_ms"]["p50"].is_number(), "{listed}");

    let plugins = host.get("/v1/plugins").await.expect_ok("list plugins");
    let by_name = |name: &str| {
        plugins["plugins"]
            .as_array()
            .expect("`plugins` array")
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name} listed: {plugins}"))
            .clone()
    };
    assert_eq!(by_name("misbehave")["errors"], errors, "{plugins}");
    assert_eq!(by_name("echo")["errors"], json!({}), "{plugins}");
}

#[test]
fn the_parser_is_strict() {
    let ok = "# HELP a_total Things.\n# TYPE a counter\na_total{q=\"x\\\"y\",r=\"2\"} 3\n# EOF\n";
    let s = parse_exposition(ok).unwrap();
    assert_eq!(s[0].labels["q"], "x\"y");
    assert_eq!(s[0].value, 3.0);
    for bad in [
        // Not ending in EOF.
        "# TYPE a gauge\na 1\n",
        // A sample of an undeclared family.
        "# TYPE a gauge\nb 1\n# EOF\n",
        // Garbage value, unquoted label, unterminated labels, stray text.
        "# TYPE a gauge\na x\n# EOF\n",
        "# TYPE a gauge\na{q=x} 1\n# EOF\n",
        "# TYPE a gauge\na{q=\"x\" 1\n# EOF\n",
        "# TYPE a gauge\nhello\n# EOF\n",
        "# TYPE a gauge\n# EOF\na 1\n",
        "# TYPE a nonsense\na 1\n# EOF\n",
    ] {
        assert!(parse_exposition(bad).is_err(), "accepted {bad:?}");
    }
}

/// The per-minute history: points appear within a sample interval, carry the store's figures,
/// survive a restart, and bad requests are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_history_is_sampled_every_minute_and_survives_a_restart() {
    let mut host = TestHost::start();
    host.put_queue("hist", json!({})).await;
    host.enqueue(
        "hist",
        json!({"messages": [{"payload": 1}, {"payload": 2}, {"payload": 3}]}),
    )
    .await;
    // The sampler writes the current minute every 10 s (and once at start).
    let points = wait_until(
        "a history point with 3 ready",
        Duration::from_secs(30),
        || {
            let host = &host;
            async move {
                let doc = host
                    .get("/v1/queues/hist/history")
                    .await
                    .expect(200, "history");
                let points = doc["points"].as_array().cloned().unwrap_or_default();
                match points.last() {
                    Some(p) if p["ready"] == 3 => Ok(points),
                    _ => Err(doc.to_string()),
                }
            }
        },
    )
    .await;
    let last = points.last().expect("a point");
    assert_eq!(last["enqueued"], 3, "{last}");
    assert_eq!(last["dlq_depth"], 0, "{last}");
    assert_eq!(
        last["minute"].as_i64().expect("minute") % 60_000,
        0,
        "{last}"
    );
    assert!(last["oldest_ready_age_ms"].as_u64().is_some(), "{last}");

    assert_eq!(
        host.get("/v1/queues/hist/history?minutes=0")
            .await
            .expect_error(400, "zero minutes"),
        "invalid_request"
    );
    assert_eq!(
        host.get("/v1/queues/hist/history?minutes=99999")
            .await
            .expect_error(400, "more than a week"),
        "invalid_request"
    );
    assert_eq!(
        host.get("/v1/queues/nope/history")
            .await
            .expect_error(404, "unknown queue"),
        "queue_not_found"
    );

    host.restart();
    let after = host
        .get("/v1/queues/hist/history?minutes=10")
        .await
        .expect(200, "history after a restart");
    let minutes: Vec<i64> = after["points"]
        .as_array()
        .expect("points")
        .iter()
        .filter_map(|p| p["minute"].as_i64())
        .collect();
    assert!(
        minutes.contains(&last["minute"].as_i64().unwrap_or_default()),
        "the minute sampled before the restart is still there: {after}"
    );
}

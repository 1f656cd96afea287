//! The observer as the dispatcher drives it: started, finished, settled.

use std::time::Duration;

use super::*;
use crate::model::QueueStats;

fn claimed(queue: &str, waited_ms: i64) -> Claimed {
    Claimed {
        id: 1,
        queue: queue.to_owned(),
        attempt: 1,
        payload: Vec::new(),
        headers: Vec::new(),
        topic: None,
        correlation_id: None,
        enqueued_at: now_ms() - waited_ms,
        lease_expires_at: now_ms() + 30_000,
        depth: 0,
    }
}

fn deliver(m: &Metrics, msg: &Claimed, took: Duration, s: &Settlement, plugin: Option<&str>) {
    m.started(msg);
    m.finished(msg, took);
    m.settled(
        msg,
        &SettledDelivery {
            settlement: s,
            version: plugin,
            result: Some(SettleResult::Applied),
            handler_time: took,
        },
    );
}

fn retry(category: ErrorCategory) -> Settlement {
    Settlement::Retry {
        delay_ms: 10,
        error: "boom".to_owned(),
        category,
    }
}

#[test]
fn outcome_indexes_follow_all() {
    for (i, o) in Outcome::ALL.iter().enumerate() {
        assert_eq!(o.index(), i, "{o:?}");
    }
    for (i, c) in ErrorCategory::ALL.iter().enumerate() {
        assert_eq!(category_index(*c), Some(i), "{c:?}");
    }
}

#[test]
fn outcome_comes_from_what_the_store_did() {
    let dead = Settlement::Dead {
        error: "x".into(),
        category: ErrorCategory::Trap,
    };
    assert_eq!(
        Outcome::of(&dead, Some(SettleResult::Applied)),
        Outcome::Dead
    );
    assert_eq!(
        Outcome::of(&Settlement::Ack, Some(SettleResult::Cancelled)),
        Outcome::Cancelled
    );
    assert_eq!(
        Outcome::of(&Settlement::Ack, Some(SettleResult::LeaseLost)),
        Outcome::LeaseLost
    );
    assert_eq!(Outcome::of(&Settlement::Ack, None), Outcome::NotCommitted);
    assert_eq!(
        Outcome::of(&Settlement::Release, Some(SettleResult::Applied)),
        Outcome::Release
    );
}

#[test]
fn unknown_queue_and_plugin_have_empty_live_stats() {
    let m = Metrics::new();
    let s = m.queue_stats("nothing");
    assert_eq!(s, LiveQueueStats::default());
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"in_flight": 0, "wait_ms": null, "handler_ms": null, "errors": {},
            "rates": {"started_per_s": 0.0, "acked_per_s": 0.0, "failed_per_s": 0.0}})
    );
    assert!(m.plugin_errors("echo").is_empty());
}

#[test]
fn deliveries_feed_percentiles_in_flight_and_errors() {
    let m = Metrics::new();
    let ok = Settlement::Ack;
    for i in 0..100 {
        let msg = claimed("q", 1_000);
        deliver(&m, &msg, Duration::from_millis(i + 1), &ok, Some("echo"));
    }
    let msg = claimed("q", 0);
    deliver(
        &m,
        &msg,
        Duration::from_millis(1),
        &retry(ErrorCategory::Trap),
        Some("misbehave"),
    );
    deliver(
        &m,
        &msg,
        Duration::from_millis(1),
        &Settlement::Dead {
            error: "out of fuel".into(),
            category: ErrorCategory::Fuel,
        },
        Some("misbehave"),
    );
    // No plugin could be loaded: counted on the queue only.
    deliver(
        &m,
        &msg,
        Duration::ZERO,
        &retry(ErrorCategory::NoPlugin),
        None,
    );

    let s = m.queue_stats("q");
    assert_eq!(s.in_flight, 0);
    let h = s.handler_ms.unwrap();
    assert_eq!(h.samples, 103);
    assert!((40.0..=60.0).contains(&h.p50), "{h:?}");
    assert!((95.0..=100.0).contains(&h.p99), "{h:?}");
    let w = s.wait_ms.unwrap();
    // Wall-clock milliseconds: 100 of 103 waited about a second.
    assert!((1_000.0..1_500.0).contains(&w.p50), "{w:?}");
    assert_eq!(
        s.errors,
        BTreeMap::from([("fuel", 1), ("no-plugin", 1), ("trap", 1)])
    );
    assert_eq!(
        m.plugin_errors("misbehave"),
        BTreeMap::from([("fuel", 1), ("trap", 1)])
    );
    assert!(m.plugin_errors("echo").is_empty());

    let text = m
        .encode(&[("q".to_owned(), QueueStats::default())])
        .unwrap();
    for want in [
        r#"spool_handler_duration_seconds_count{queue="q"} 103"#,
        r#"spool_wait_seconds_count{queue="q"} 103"#,
        r#"spool_deliveries_total{queue="q",outcome="ack"} 100"#,
        r#"spool_deliveries_total{queue="q",outcome="retry"} 2"#,
        r#"spool_deliveries_total{queue="q",outcome="dead"} 1"#,
        r#"spool_queue_errors_total{queue="q",category="trap"} 1"#,
        r#"spool_plugin_errors_total{plugin="misbehave",category="fuel"} 1"#,
        // A plugin that ran but never failed has its series, at zero.
        r#"spool_plugin_errors_total{plugin="echo",category="trap"} 0"#,
        r#"spool_in_flight{queue="q"} 0"#,
    ] {
        assert!(
            text.lines().any(|l| l == want),
            "missing {want:?} in\n{text}"
        );
    }
}

#[test]
fn in_flight_counts_handlers_between_start_and_finish() {
    let m = Metrics::new();
    let a = claimed("q", 0);
    m.started(&a);
    m.started(&a);
    assert_eq!(m.queue_stats("q").in_flight, 2);
    m.finished(&a, Duration::from_millis(1));
    assert_eq!(m.queue_stats("q").in_flight, 1);
    assert_eq!(m.queue_stats("other").in_flight, 0);
}

#[test]
fn each_plugin_version_counts_its_own_outcomes_and_errors() {
    let m = Metrics::new();
    let msg = claimed("q", 0);
    let settle = |s: &Settlement, version: &str| {
        m.settled(
            &msg,
            &SettledDelivery {
                settlement: s,
                version: Some(version),
                result: Some(SettleResult::Applied),
                handler_time: Duration::ZERO,
            },
        )
    };
    settle(&Settlement::Ack, "echo@1");
    settle(&Settlement::Ack, "echo@1");
    settle(&retry(ErrorCategory::Trap), "echo@2");
    let one = m.version_stats("echo", 1);
    assert_eq!(one.outcomes, BTreeMap::from([("ack", 2)]));
    assert!(one.errors.is_empty());
    let two = m.version_stats("echo", 2);
    assert_eq!(two.outcomes, BTreeMap::from([("retry", 1)]));
    assert_eq!(two.errors, BTreeMap::from([("trap", 1)]));
    assert_eq!(m.version_stats("echo", 3), VersionStats::default());
    assert_eq!(m.plugin_errors("echo"), BTreeMap::from([("trap", 1)]));
}

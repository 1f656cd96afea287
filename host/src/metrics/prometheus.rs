//! The Prometheus side: metric families, their label sets, and the `GET /metrics` body in the
//! OpenMetrics text format (prometheus-client's encoder).
//!
//! Two sources end up in one exposition. The store's figures (depths, totals since the queue was
//! created, oldest ready age) are read at scrape time into a throw-away registry, so they are
//! exactly what `GET /v1/queues/{q}` shows. This server's own figures (wait and handler
//! histograms, in-flight handlers, delivery outcomes, errors) live in a long-lived registry the
//! dispatcher's observer updates.

use std::sync::atomic::{AtomicI64, AtomicU64};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use super::Outcome;
use crate::model::{ErrorCategory, QueueStats, Route};
use crate::router::RouterStats;
use crate::scheduler::SchedulerStats;

/// What the encoder produces: OpenMetrics text, which Prometheus scrapes natively.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Histogram buckets in seconds, 100 µs to 60 s: fast in-process handlers land in the first
/// few, slow handlers and backed-up queues in the last.
const BUCKETS: [f64; 18] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct QueueLabels {
    queue: String,
}

/// `state` comes from a fixed list, never from input.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct QueueStateLabels {
    queue: String,
    state: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    queue: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct QueueCategoryLabels {
    queue: String,
    category: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PluginCategoryLabels {
    plugin: String,
    category: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// This server's families, registered once.
pub(super) struct Live {
    registry: Registry,
    in_flight: Family<QueueLabels, Gauge>,
    wait: HistogramFamily<QueueLabels>,
    handler: HistogramFamily<QueueLabels>,
    deliveries: Family<OutcomeLabels, Counter>,
    queue_errors: Family<QueueCategoryLabels, Counter>,
    plugin_errors: Family<PluginCategoryLabels, Counter>,
}

/// Handles to one queue's series (each shares its value with the family).
pub(super) struct QueueSeries {
    pub in_flight: Gauge,
    pub wait_seconds: Histogram,
    pub handler_seconds: Histogram,
    pub deliveries: [Counter; Outcome::ALL.len()],
    pub errors: [Counter; ErrorCategory::ALL.len()],
}

impl Live {
    pub fn new() -> Self {
        let build = Family::<BuildLabels, Gauge>::default();
        build
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        let live = Live {
            registry: Registry::default(),
            in_flight: Family::default(),
            wait: Family::new_with_constructor(histogram),
            handler: Family::new_with_constructor(histogram),
            deliveries: Family::default(),
            queue_errors: Family::default(),
            plugin_errors: Family::default(),
        };
        let mut r = Registry::default();
        r.register(
            "spool_build_info",
            "Always 1; the label names the running Spool version",
            build,
        );
        r.register(
            "spool_in_flight",
            "Handlers of the queue running on this server now",
            live.in_flight.clone(),
        );
        r.register_with_unit(
            "spool_wait",
            "Time from enqueue to handler start, per delivery on this server",
            Unit::Seconds,
            live.wait.clone(),
        );
        r.register_with_unit(
            "spool_handler_duration",
            "Duration of the handler plugin call, per delivery on this server",
            Unit::Seconds,
            live.handler.clone(),
        );
        r.register(
            "spool_deliveries",
            "Deliveries settled by this server since it started, by outcome",
            live.deliveries.clone(),
        );
        r.register(
            "spool_queue_errors",
            "Failed deliveries of the queue on this server since it started, by error category",
            live.queue_errors.clone(),
        );
        r.register(
            "spool_plugin_errors",
            "Failed deliveries of the plugin on this server since it started, by error category",
            live.plugin_errors.clone(),
        );
        Live {
            registry: r,
            ..live
        }
    }

    /// Creates (at zero, so rates start from the first scrape) and returns the series of `queue`.
    pub fn queue_series(&self, queue: &str) -> QueueSeries {
        let q = QueueLabels {
            queue: queue.to_owned(),
        };
        QueueSeries {
            in_flight: self.in_flight.get_or_create_owned(&q),
            wait_seconds: self.wait.get_or_create_owned(&q),
            handler_seconds: self.handler.get_or_create_owned(&q),
            deliveries: Outcome::ALL.map(|o| {
                self.deliveries.get_or_create_owned(&OutcomeLabels {
                    queue: queue.to_owned(),
                    outcome: o.as_str(),
                })
            }),
            errors: ErrorCategory::ALL.map(|c| {
                self.queue_errors.get_or_create_owned(&QueueCategoryLabels {
                    queue: queue.to_owned(),
                    category: c.as_str(),
                })
            }),
        }
    }

    /// Creates (at zero) and returns the error counters of `plugin`, indexed like
    /// [`ErrorCategory::ALL`].
    pub fn plugin_series(&self, plugin: &str) -> [Counter; ErrorCategory::ALL.len()] {
        ErrorCategory::ALL.map(|c| {
            self.plugin_errors
                .get_or_create_owned(&PluginCategoryLabels {
                    plugin: plugin.to_owned(),
                    category: c.as_str(),
                })
        })
    }

    /// The exposition: the store's figures of `queues`, the server's health if given, then
    /// this server's families.
    pub fn encode(
        &self,
        queues: &[(String, QueueStats)],
        health: Option<&Health>,
    ) -> Result<String, std::fmt::Error> {
        self.encode_all(queues, health, None, None)
    }

    /// [`encode`](Self::encode) with the router's figures after the health.
    pub fn encode_all(
        &self,
        queues: &[(String, QueueStats)],
        health: Option<&Health>,
        routing: Option<&Routing>,
        scheduling: Option<&SchedulerStats>,
    ) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        encode_registry(&mut out, &store_registry(queues))?;
        if let Some(health) = health {
            encode_registry(&mut out, &health_registry(health))?;
        }
        if let Some(routing) = routing {
            encode_registry(&mut out, &routing_registry(routing))?;
        }
        if let Some(scheduling) = scheduling {
            encode_registry(&mut out, &scheduling_registry(scheduling))?;
        }
        encode_registry(&mut out, &self.registry)?;
        encode_eof(&mut out)?;
        Ok(out)
    }
}

/// What `/readyz` knows, for the scrape: read at scrape time like the store's figures.
#[derive(Debug, Clone, Default)]
pub struct Health {
    /// Writes to the database succeed.
    pub writable: bool,
    /// The last integrity check: (level, outcome, when it ran in Unix ms).
    pub integrity: Option<(&'static str, &'static str, i64)>,
    /// Queues not being consumed, with the cause (a fixed identifier).
    pub waiting: Vec<(String, &'static str)>,
    /// The database's size figures (`None`: they could not be read this time).
    pub database: Option<crate::store::DbStats>,
    /// Each queue's circuit breaker on this server, for queues whose breaker is on: the state
    /// (0 closed, 1 open, 2 half-open) and the times it opened.
    pub breakers: Vec<(String, i64, u64)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct CheckLabels {
    level: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct QueueCauseLabels {
    queue: String,
    cause: &'static str,
}

fn health_registry(h: &Health) -> Registry {
    let mut r = Registry::default();
    let writable = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
    writable.set(i64::from(h.writable));
    r.register(
        "spool_store_writable",
        "1 while writes to the database succeed, 0 while they fail (disk full, I/O errors)",
        writable,
    );
    if let Some((level, outcome, at_ms)) = h.integrity {
        let ok = Family::<CheckLabels, Gauge>::default();
        ok.get_or_create(&CheckLabels { level })
            .set(i64::from(outcome != "damaged"));
        r.register(
            "spool_integrity_check_ok",
            "1 unless the last integrity check of the database file found damage (label: quick or full)",
            ok,
        );
        let complete = Family::<CheckLabels, Gauge>::default();
        complete
            .get_or_create(&CheckLabels { level })
            .set(i64::from(outcome != "incomplete"));
        r.register(
            "spool_integrity_check_complete",
            "1 if the last integrity check read the whole file, 0 if it ran out of time",
            complete,
        );
        let at = Gauge::<f64, AtomicU64>::default();
        at.set(at_ms as f64 / 1_000.0);
        r.register_with_unit(
            "spool_integrity_check_timestamp",
            "When the last integrity check of the database file ran (Unix time)",
            Unit::Seconds,
            at,
        );
    }
    if let Some(db) = &h.database {
        register_database(&mut r, db);
    }
    let waiting = Family::<QueueCauseLabels, Gauge>::default();
    for (queue, cause) in &h.waiting {
        waiting
            .get_or_create(&QueueCauseLabels {
                queue: queue.clone(),
                cause,
            })
            .set(1);
    }
    r.register(
        "spool_queue_waiting",
        "1 for a queue whose messages wait instead of being delivered on this server, by cause \
         (paused, no_handler, plugin_missing, not_a_handler, plugin_unloadable)",
        waiting,
    );
    let state = Family::<QueueLabels, Gauge>::default();
    let opened = Family::<QueueLabels, Counter>::default();
    for (queue, gauge, times) in &h.breakers {
        let labels = QueueLabels {
            queue: queue.clone(),
        };
        state.get_or_create(&labels).set(*gauge);
        opened.get_or_create(&labels).inc_by(*times);
    }
    r.register(
        "spool_queue_breaker_open",
        "State of the queue's circuit breaker on this server: 0 closed, 1 open (claiming \
         nothing), 2 half-open (one message let through); queues with the breaker on only",
        state,
    );
    r.register(
        "spool_queue_breaker_opened",
        "Times the queue's circuit breaker opened on this server since it started",
        opened,
    );
    r
}

/// The `spool_db_*` gauges: sizes from pragmas and file metadata, never a scan.
fn register_database(r: &mut Registry, db: &crate::store::DbStats) {
    let bytes = |help: &'static str, v: u64| -> (&'static str, Gauge<i64, AtomicI64>) {
        let g = Gauge::<i64, AtomicI64>::default();
        g.set(i64::try_from(v).unwrap_or(i64::MAX));
        (help, g)
    };
    for (name, (help, gauge)) in [
        (
            "spool_db_size",
            bytes(
                "Size of the database file (pages times page size)",
                db.size_bytes,
            ),
        ),
        (
            "spool_db_wal_size",
            bytes(
                "Size of the database's write-ahead log file; the maintenance loop truncates it \
                 when it outgrows 64 MiB",
                db.wal_bytes,
            ),
        ),
        (
            "spool_db_free",
            bytes(
                "Bytes of free pages inside the database file, reused before the file grows",
                db.free_pages * db.page_size,
            ),
        ),
    ] {
        r.register_with_unit(name, help, Unit::Bytes, gauge);
    }
    let free_pages = Gauge::<i64, AtomicI64>::default();
    free_pages.set(i64::try_from(db.free_pages).unwrap_or(i64::MAX));
    r.register(
        "spool_db_free_pages",
        "Free pages inside the database file (its freelist)",
        free_pages,
    );
    if let Some(at_ms) = db.last_backup_at_ms {
        let at = Gauge::<f64, AtomicU64>::default();
        at.set(at_ms as f64 / 1_000.0);
        r.register_with_unit(
            "spool_db_last_backup_timestamp",
            "When the last backup of the database (POST /v1/admin/backup, spool backup) was \
             taken (Unix time); absent until the first one",
            Unit::Seconds,
            at,
        );
    }
}

/// The schedule timer's counters since this server started.
fn scheduling_registry(s: &SchedulerStats) -> Registry {
    let mut r = Registry::default();
    let fires = Counter::<u64>::default();
    fires.inc_by(s.fires);
    r.register(
        "spool_schedule_fires",
        "Schedule fire instants this server committed since it started (each may deliver to \
         several queues)",
        fires,
    );
    let stale = Counter::<u64>::default();
    stale.inc_by(s.stale);
    r.register(
        "spool_schedule_stale",
        "Planned fires that found their schedule changed (edited, or fired by another host) and \
         were planned again",
        stale,
    );
    let failing = Gauge::<i64, std::sync::atomic::AtomicI64>::default();
    failing.set(s.failing as i64);
    r.register(
        "spool_schedules_failing",
        "Schedules whose last fire could not be delivered (queue deleted, no route); they stay \
         due and are retried",
        failing,
    );
    r
}

/// The router's figures, read at scrape time: each route's deliveries (kept in the store) and
/// this server's publish and filter counters since it started.
#[derive(Debug, Clone, Default)]
pub struct Routing {
    pub routes: Vec<Route>,
    pub stats: RouterStats,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    route: String,
    pattern: String,
    queue: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FilterOutcomeLabels {
    filter: String,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct FilterCategoryLabels {
    filter: String,
    category: &'static str,
}

fn routing_registry(routing: &Routing) -> Registry {
    let mut r = Registry::default();
    let delivered = Family::<RouteLabels, Counter>::default();
    for route in &routing.routes {
        delivered
            .get_or_create(&RouteLabels {
                route: route.id.to_string(),
                pattern: route.pattern.clone(),
                queue: route.queue.clone(),
            })
            .inc_by(route.delivered);
    }
    r.register(
        "spool_route_delivered",
        "Deliveries committed through the route since it was created",
        delivered,
    );
    let stats = &routing.stats;
    let published = Counter::<u64>::default();
    published.inc_by(stats.published);
    r.register(
        "spool_router_published",
        "Deliveries of messages published on this server since it started",
        published,
    );
    let unroutable = Counter::<u64>::default();
    unroutable.inc_by(stats.unroutable);
    r.register(
        "spool_router_unroutable",
        "Published messages no route matched, sent to [router] unroutable_queue, since this \
         server started",
        unroutable,
    );
    let decisions = Family::<FilterOutcomeLabels, Counter>::default();
    let errors = Family::<FilterCategoryLabels, Counter>::default();
    for (filter, f) in &stats.filters {
        for (outcome, n) in &f.decisions {
            decisions
                .get_or_create(&FilterOutcomeLabels {
                    filter: filter.clone(),
                    outcome,
                })
                .inc_by(*n);
        }
        for (category, n) in &f.errors {
            errors
                .get_or_create(&FilterCategoryLabels {
                    filter: filter.clone(),
                    category,
                })
                .inc_by(*n);
        }
    }
    r.register(
        "spool_filter_decisions",
        "Decisions of the filter plugin on this server since it started, by outcome (deliver, \
         redirect, drop, transform)",
        decisions,
    );
    r.register(
        "spool_filter_errors",
        "Failed filter calls on this server since it started, by error category (each one's \
         delivery became a dead letter of category filter)",
        errors,
    );
    r
}

/// The store's figures as families, built per scrape (a queue that no longer exists simply
/// disappears).
fn store_registry(queues: &[(String, QueueStats)]) -> Registry {
    let depth = Family::<QueueStateLabels, Gauge<u64, AtomicU64>>::default();
    let oldest = Family::<QueueLabels, Gauge<f64, AtomicU64>>::default();
    // (name, help, value) of each total the store keeps since the queue was created.
    type Total = (&'static str, &'static str, fn(&QueueStats) -> u64);
    let totals: [Total; 6] = [
        (
            "spool_messages_enqueued",
            "Messages enqueued since the queue was created",
            |s| s.enqueued,
        ),
        (
            "spool_messages_acked",
            "Messages acked since the queue was created",
            |s| s.acked,
        ),
        (
            "spool_messages_retried",
            "Failed deliveries scheduled again since the queue was created",
            |s| s.retried,
        ),
        (
            "spool_messages_dead",
            "Messages dead-lettered since the queue was created",
            |s| s.dead,
        ),
        (
            "spool_messages_expired",
            "Messages whose TTL passed before a handler started them, since the queue was created",
            |s| s.expired,
        ),
        (
            "spool_messages_cancelled",
            "Messages cancelled since the queue was created",
            |s| s.cancelled,
        ),
    ];
    let families: Vec<Family<QueueLabels, Counter>> =
        totals.iter().map(|_| Family::default()).collect();

    for (name, s) in queues {
        let q = QueueLabels {
            queue: name.clone(),
        };
        for (state, n) in [
            ("scheduled", s.scheduled),
            ("ready", s.ready),
            ("leased", s.leased),
            ("dead", s.dlq_depth),
        ] {
            depth
                .get_or_create(&QueueStateLabels {
                    queue: name.clone(),
                    state,
                })
                .set(n);
        }
        for ((_, _, value), family) in totals.iter().zip(&families) {
            family.get_or_create(&q).inc_by(value(s));
        }
        oldest
            .get_or_create(&q)
            .set(s.oldest_ready_age_ms.unwrap_or(0) as f64 / 1_000.0);
    }

    let mut r = Registry::default();
    r.register(
        "spool_queue_messages",
        "Messages in the queue now by state (dead: in the dead-letter queue)",
        depth,
    );
    for ((name, help, _), family) in totals.iter().zip(families) {
        r.register(*name, *help, family);
    }
    r.register_with_unit(
        "spool_queue_oldest_ready_age",
        "Age of the oldest ready message (0 when none is ready)",
        Unit::Seconds,
        oldest,
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats() -> QueueStats {
        QueueStats {
            scheduled: 1,
            ready: 2,
            leased: 3,
            acked: 40,
            dead: 5,
            cancelled: 6,
            expired: 7,
            retried: 8,
            enqueued: 60,
            dlq_depth: 4,
            oldest_ready_age_ms: Some(1_500),
        }
    }

    fn lines(text: &str) -> Vec<&str> {
        text.lines().collect()
    }

    #[test]
    fn scheduler_figures_are_exposed() {
        let stats = SchedulerStats {
            fires: 12,
            stale: 1,
            failing: 2,
        };
        let text = Live::new()
            .encode_all(&[], None, None, Some(&stats))
            .unwrap();
        let l = lines(&text);
        for want in [
            "spool_schedule_fires_total 12",
            "spool_schedule_stale_total 1",
            "spool_schedules_failing 2",
        ] {
            assert!(l.contains(&want), "{want} in\n{text}");
        }
    }

    #[test]
    fn router_figures_are_exposed() {
        let mut stats = RouterStats {
            published: 7,
            unroutable: 2,
            ..RouterStats::default()
        };
        let mut f = crate::router::FilterStats::default();
        f.decisions.insert("deliver", 5);
        f.errors.insert("fuel", 1);
        stats.filters.insert("pick".to_owned(), f);
        let routing = Routing {
            routes: vec![Route {
                id: 3,
                pattern: "orders.#".into(),
                queue: "all".into(),
                filter: None,
                headers: Vec::new(),
                limits: Default::default(),
                created_at: 0,
                delivered: 4,
            }],
            stats,
        };
        let text = Live::new()
            .encode_all(&[], None, Some(&routing), None)
            .unwrap();
        let l = lines(&text);
        for want in [
            r#"spool_route_delivered_total{route="3",pattern="orders.#",queue="all"} 4"#,
            "spool_router_published_total 7",
            "spool_router_unroutable_total 2",
            r#"spool_filter_decisions_total{filter="pick",outcome="deliver"} 5"#,
            r#"spool_filter_errors_total{filter="pick",category="fuel"} 1"#,
        ] {
            assert!(l.contains(&want), "{want} in {text}");
        }
    }

    #[test]
    fn store_figures_are_exposed_per_queue() {
        let live = Live::new();
        let text = live
            .encode(&[("orders".to_owned(), stats())], None)
            .unwrap();
        let l = lines(&text);
        for want in [
            "# TYPE spool_queue_messages gauge",
            r#"spool_queue_messages{queue="orders",state="scheduled"} 1"#,
            r#"spool_queue_messages{queue="orders",state="ready"} 2"#,
            r#"spool_queue_messages{queue="orders",state="leased"} 3"#,
            r#"spool_queue_messages{queue="orders",state="dead"} 4"#,
            "# TYPE spool_messages_enqueued counter",
            r#"spool_messages_enqueued_total{queue="orders"} 60"#,
            r#"spool_messages_acked_total{queue="orders"} 40"#,
            r#"spool_messages_retried_total{queue="orders"} 8"#,
            r#"spool_messages_dead_total{queue="orders"} 5"#,
            r#"spool_messages_expired_total{queue="orders"} 7"#,
            r#"spool_messages_cancelled_total{queue="orders"} 6"#,
            "# UNIT spool_queue_oldest_ready_age_seconds seconds",
            r#"spool_queue_oldest_ready_age_seconds{queue="orders"} 1.5"#,
            &format!(
                r#"spool_build_info{{version="{}"}} 1"#,
                env!("CARGO_PKG_VERSION")
            ),
        ] {
            assert!(l.contains(&want), "missing {want:?} in\n{text}");
        }
        assert_eq!(l.last(), Some(&"# EOF"), "{text}");
        assert_eq!(l.iter().filter(|x| **x == "# EOF").count(), 1, "{text}");
    }

    #[test]
    fn live_series_start_at_zero_and_count() {
        let live = Live::new();
        let s = live.queue_series("q");
        let p = live.plugin_series("echo");
        s.wait_seconds.observe(0.000_05);
        s.wait_seconds.observe(2.0);
        s.handler_seconds.observe(0.003);
        s.in_flight.inc();
        s.deliveries[Outcome::Retry as usize].inc();
        p[ErrorCategory::ALL
            .iter()
            .position(|c| *c == ErrorCategory::Trap)
            .unwrap()]
        .inc();
        let text = live.encode(&[], None).unwrap();
        let l = lines(&text);
        for want in [
            r#"spool_in_flight{queue="q"} 1"#,
            "# TYPE spool_wait_seconds histogram",
            r#"spool_wait_seconds_count{queue="q"} 2"#,
            r#"spool_wait_seconds_bucket{le="0.0001",queue="q"} 1"#,
            r#"spool_wait_seconds_bucket{le="2.5",queue="q"} 2"#,
            r#"spool_wait_seconds_bucket{le="+Inf",queue="q"} 2"#,
            r#"spool_handler_duration_seconds_count{queue="q"} 1"#,
            r#"spool_deliveries_total{queue="q",outcome="retry"} 1"#,
            r#"spool_deliveries_total{queue="q",outcome="ack"} 0"#,
            r#"spool_queue_errors_total{queue="q",category="fuel"} 0"#,
            r#"spool_plugin_errors_total{plugin="echo",category="trap"} 1"#,
            r#"spool_plugin_errors_total{plugin="echo",category="no-plugin"} 0"#,
        ] {
            assert!(l.contains(&want), "missing {want:?} in\n{text}");
        }
        // No store figures were given, so no queue series of theirs.
        assert!(!text.contains("spool_messages_acked_total{"), "{text}");
    }

    #[test]
    fn health_is_exposed() {
        let live = Live::new();
        let health = Health {
            writable: false,
            integrity: Some(("quick", "damaged", 1_700_000_000_000)),
            waiting: vec![("orders".to_owned(), "plugin_unloadable")],
            database: Some(crate::store::DbStats {
                size_bytes: 1_048_576,
                free_pages: 3,
                page_size: 4_096,
                wal_bytes: 8_192,
                last_backup_at_ms: Some(1_700_000_500_000),
            }),
            breakers: vec![("orders".to_owned(), 1, 3)],
        };
        let text = live.encode(&[], Some(&health)).unwrap();
        let l = lines(&text);
        for want in [
            "spool_store_writable 0",
            r#"spool_integrity_check_ok{level="quick"} 0"#,
            r#"spool_integrity_check_complete{level="quick"} 1"#,
            "spool_integrity_check_timestamp_seconds 1700000000.0",
            r#"spool_queue_waiting{queue="orders",cause="plugin_unloadable"} 1"#,
            r#"spool_queue_breaker_open{queue="orders"} 1"#,
            r#"spool_queue_breaker_opened_total{queue="orders"} 3"#,
            "spool_db_size_bytes 1048576",
            "spool_db_wal_size_bytes 8192",
            "spool_db_free_bytes 12288",
            "spool_db_free_pages 3",
            "spool_db_last_backup_timestamp_seconds 1700000500.0",
        ] {
            assert!(l.contains(&want), "missing {want:?} in\n{text}");
        }
    }

    #[test]
    fn every_sample_line_is_well_formed() {
        let live = Live::new();
        live.queue_series("a.b-c_1").wait_seconds.observe(0.01);
        let text = live
            .encode(
                &[("a.b-c_1".to_owned(), stats())],
                Some(&Health {
                    writable: false,
                    integrity: Some(("quick", "damaged", 1_700_000_000_000)),
                    waiting: vec![("a.b-c_1".to_owned(), "plugin_unloadable")],
                    database: Some(crate::store::DbStats::default()),
                    breakers: vec![("a.b-c_1".to_owned(), 2, 1)],
                }),
            )
            .unwrap();
        for line in text.lines() {
            if let Some(comment) = line.strip_prefix("# ") {
                assert!(
                    ["HELP ", "TYPE ", "UNIT ", "EOF"]
                        .iter()
                        .any(|p| comment.starts_with(p)),
                    "{line}"
                );
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect(line);
            assert!(
                value == "+Inf" || value.parse::<f64>().is_ok(),
                "value of {line}"
            );
            let name = series.split('{').next().unwrap();
            assert!(name.starts_with("spool_"), "{line}");
            assert!(
                name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
                "{line}"
            );
        }
    }
}

//! What this server has seen of its deliveries, for operators: live figures for the JSON stats
//! (`in_flight`, wait and handler percentiles, errors by category) and the in-process Prometheus
//! families served on `GET /metrics` (docs/METRICS.md).
//!
//! - [`Metrics`] is the dispatcher's [`DeliveryObserver`]: one per server, shared with the API.
//! - `window`: the ring buffer of recent samples the percentiles come from.
//! - `rate`: per-second rates over the last minute.
//! - `prometheus`: the metric families, their labels and the text encoding, including the
//!   store's figures read at scrape time.
//!
//! Everything here counts since this process started and only what this server delivered; the
//! totals since a queue was created come from the store. Label values are queue and plugin
//! names (validated, operator-chosen) and closed enums, never ids, payloads or error texts.

mod prometheus;
mod rate;
mod window;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use serde::Serialize;

pub use self::prometheus::{CONTENT_TYPE, Health, Routing};
pub use self::rate::{RATE_WINDOW_S, Rates, RatesOut};
pub use self::window::{Percentiles, WINDOW, Window};
use crate::dispatch::{DeliveryObserver, SettledDelivery};
use crate::model::{Claimed, ErrorCategory, SettleResult, Settlement, now_ms};

/// How a delivery ended, as `spool_deliveries_total{outcome}` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ack,
    /// Failed, and scheduled again.
    Retry,
    /// The handler returned `retry` (its own choice, not a failure), and it was scheduled again.
    HandlerRetry,
    Dead,
    /// Given back at shutdown without counting the attempt.
    Release,
    /// The message was cancelled while its handler ran.
    Cancelled,
    /// The lease had run out (and the message was handed out again) before the settle.
    LeaseLost,
    /// The store could not commit the settlement; the lease runs out and the message returns.
    NotCommitted,
}

impl Outcome {
    pub const ALL: [Outcome; 8] = [
        Outcome::Ack,
        Outcome::Retry,
        Outcome::HandlerRetry,
        Outcome::Dead,
        Outcome::Release,
        Outcome::Cancelled,
        Outcome::LeaseLost,
        Outcome::NotCommitted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ack => "ack",
            Outcome::Retry => "retry",
            Outcome::HandlerRetry => "handler-retry",
            Outcome::Dead => "dead",
            Outcome::Release => "release",
            Outcome::Cancelled => "cancelled",
            Outcome::LeaseLost => "lease-lost",
            Outcome::NotCommitted => "not-committed",
        }
    }

    /// What the store made of the settlement decides the outcome; only an applied settle is
    /// what the handler asked for.
    pub fn of(settlement: &Settlement, result: Option<SettleResult>) -> Outcome {
        match result {
            None => Outcome::NotCommitted,
            Some(SettleResult::LeaseLost) => Outcome::LeaseLost,
            Some(SettleResult::Cancelled) => Outcome::Cancelled,
            Some(SettleResult::Applied) => match settlement {
                Settlement::Ack => Outcome::Ack,
                Settlement::Retry { .. } => Outcome::Retry,
                Settlement::RetryRequested { .. } => Outcome::HandlerRetry,
                Settlement::Dead { .. } => Outcome::Dead,
                Settlement::Release => Outcome::Release,
            },
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Position of `c` in [`ErrorCategory::ALL`], the index of its counter.
fn category_index(c: ErrorCategory) -> Option<usize> {
    ErrorCategory::ALL.iter().position(|x| *x == c)
}

/// The live part of a queue's `stats`: what this server saw since it started.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct LiveQueueStats {
    /// Handlers of this queue running on this server now.
    pub in_flight: u64,
    /// Enqueue to handler start, over the last [`WINDOW`] deliveries; `null` before the first.
    pub wait_ms: Option<Percentiles>,
    /// The plugin call, over the last [`WINDOW`] deliveries; `null` before the first.
    pub handler_ms: Option<Percentiles>,
    /// Failed deliveries by error category (categories with none are left out).
    pub errors: BTreeMap<&'static str, u64>,
    /// Starts, acks and failures per second over the last [`RATE_WINDOW_S`] seconds.
    pub rates: RatesOut,
}

/// One queue's live figures. The Prometheus handles are clones of the families' series, so
/// recording builds no label set and allocates nothing.
struct QueueLive {
    in_flight: Gauge,
    wait: Mutex<Window>,
    handler: Mutex<Window>,
    rates: Mutex<Rates>,
    wait_seconds: Histogram,
    handler_seconds: Histogram,
    /// Indexed like [`Outcome::ALL`].
    deliveries: [Counter; Outcome::ALL.len()],
    /// Indexed like [`ErrorCategory::ALL`].
    errors: [Counter; ErrorCategory::ALL.len()],
}

/// One plugin's error counters, indexed like [`ErrorCategory::ALL`].
struct PluginLive {
    errors: [Counter; ErrorCategory::ALL.len()],
}

/// One plugin version's deliveries: outcomes indexed like [`Outcome::ALL`], failures like
/// [`ErrorCategory::ALL`]. Not a Prometheus family: versions only grow, and a label per version
/// would grow the scrape with them.
#[derive(Default)]
struct VersionLive {
    outcomes: [AtomicU64; Outcome::ALL.len()],
    errors: [AtomicU64; ErrorCategory::ALL.len()],
}

/// What one plugin version's deliveries came to on this server since it started (outcomes and
/// error categories with none are left out).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VersionStats {
    pub outcomes: BTreeMap<&'static str, u64>,
    pub errors: BTreeMap<&'static str, u64>,
}

/// The server's delivery metrics; see the module docs.
pub struct Metrics {
    queues: RwLock<HashMap<String, Arc<QueueLive>>>,
    plugins: RwLock<HashMap<String, Arc<PluginLive>>>,
    /// By `name@version`.
    versions: RwLock<HashMap<String, Arc<VersionLive>>>,
    prom: prometheus::Live,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        Metrics {
            queues: RwLock::new(HashMap::new()),
            plugins: RwLock::new(HashMap::new()),
            versions: RwLock::new(HashMap::new()),
            prom: prometheus::Live::new(),
        }
    }

    /// The live stats of `queue` (all empty if this server has not delivered from it).
    pub fn queue_stats(&self, queue: &str) -> LiveQueueStats {
        let Some(q) = read(&self.queues).get(queue).cloned() else {
            return LiveQueueStats::default();
        };
        LiveQueueStats {
            in_flight: q.in_flight.get().max(0) as u64,
            wait_ms: lock(&q.wait).percentiles(),
            handler_ms: lock(&q.handler).percentiles(),
            errors: by_category(&q.errors),
            rates: lock(&q.rates).report(now_ms() / 1_000),
        }
    }

    /// Failed deliveries by category of `plugin` since this server started (categories with
    /// none are left out).
    pub fn plugin_errors(&self, plugin: &str) -> BTreeMap<&'static str, u64> {
        read(&self.plugins)
            .get(plugin)
            .map(|p| by_category(&p.errors))
            .unwrap_or_default()
    }

    /// Deliveries through version `version` of `plugin` on this server since it started.
    pub fn version_stats(&self, plugin: &str, version: u32) -> VersionStats {
        let Some(v) = read(&self.versions)
            .get(&format!("{plugin}@{version}"))
            .cloned()
        else {
            return VersionStats::default();
        };
        VersionStats {
            outcomes: nonzero(Outcome::ALL.iter().map(|o| o.as_str()), &v.outcomes),
            errors: nonzero(ErrorCategory::ALL.iter().map(|c| c.as_str()), &v.errors),
        }
    }

    fn version(&self, label: &str) -> Arc<VersionLive> {
        if let Some(v) = read(&self.versions).get(label) {
            return v.clone();
        }
        write(&self.versions)
            .entry(label.to_owned())
            .or_default()
            .clone()
    }

    /// The whole `GET /metrics` body: the store's figures of `queues` (read by the caller just
    /// before, so they match the API's stats), then this server's live families.
    pub fn encode(
        &self,
        queues: &[(String, crate::model::QueueStats)],
    ) -> Result<String, std::fmt::Error> {
        self.prom.encode(queues, None)
    }

    /// Like [`encode`](Self::encode), with the server's health (storage, integrity, waiting
    /// queues) between the store's figures and the live families.
    pub fn encode_with_health(
        &self,
        queues: &[(String, crate::model::QueueStats)],
        health: &Health,
    ) -> Result<String, std::fmt::Error> {
        self.prom.encode(queues, Some(health))
    }

    /// Like [`encode_with_health`](Self::encode_with_health), with the router's and the
    /// schedule timer's figures too.
    pub fn encode_scrape(
        &self,
        queues: &[(String, crate::model::QueueStats)],
        health: &Health,
        routing: &Routing,
        scheduling: &crate::scheduler::SchedulerStats,
    ) -> Result<String, std::fmt::Error> {
        self.prom
            .encode_all(queues, Some(health), Some(routing), Some(scheduling))
    }

    fn queue(&self, name: &str) -> Arc<QueueLive> {
        if let Some(q) = read(&self.queues).get(name) {
            return q.clone();
        }
        write(&self.queues)
            .entry(name.to_owned())
            .or_insert_with(|| {
                let s = self.prom.queue_series(name);
                Arc::new(QueueLive {
                    in_flight: s.in_flight,
                    wait: Mutex::new(Window::default()),
                    handler: Mutex::new(Window::default()),
                    rates: Mutex::new(Rates::default()),
                    wait_seconds: s.wait_seconds,
                    handler_seconds: s.handler_seconds,
                    deliveries: s.deliveries,
                    errors: s.errors,
                })
            })
            .clone()
    }

    fn plugin(&self, name: &str) -> Arc<PluginLive> {
        if let Some(p) = read(&self.plugins).get(name) {
            return p.clone();
        }
        write(&self.plugins)
            .entry(name.to_owned())
            .or_insert_with(|| {
                Arc::new(PluginLive {
                    errors: self.prom.plugin_series(name),
                })
            })
            .clone()
    }
}

impl DeliveryObserver for Metrics {
    fn started(&self, msg: &Claimed) {
        let q = self.queue(&msg.queue);
        q.in_flight.inc();
        // Both clocks are wall-clock milliseconds; a clock step back must not give a negative.
        let now = now_ms();
        lock(&q.rates).started.add(now / 1_000, 1);
        let wait_ms = (now - msg.enqueued_at).max(0) as f64;
        q.wait_seconds.observe(wait_ms / 1_000.0);
        lock(&q.wait).record(wait_ms);
    }

    fn finished(&self, msg: &Claimed, handler_time: Duration) {
        let q = self.queue(&msg.queue);
        q.in_flight.dec();
        let secs = handler_time.as_secs_f64();
        q.handler_seconds.observe(secs);
        lock(&q.handler).record(secs * 1_000.0);
    }

    fn settled(&self, msg: &Claimed, d: &SettledDelivery<'_>) {
        let q = self.queue(&msg.queue);
        let outcome = Outcome::of(d.settlement, d.result);
        q.deliveries[outcome.index()].inc();
        if outcome == Outcome::Ack {
            lock(&q.rates).acked.add(now_ms() / 1_000, 1);
        }
        // Looked up for every delivery, so each plugin that ran has its (zero) error series
        // from the start and rates work before its first failure.
        let plugin = d.plugin().map(|p| self.plugin(p));
        let version = d.version.map(|v| self.version(v));
        if let Some(v) = &version {
            v.outcomes[outcome.index()].fetch_add(1, Ordering::Relaxed);
        }
        // A failure counts whatever became of the settle: the plugin did fail. A handler's own
        // `retry` (`RetryRequested`) is not a failure and counts under its outcome only.
        let (Settlement::Retry { category, .. } | Settlement::Dead { category, .. }) = d.settlement
        else {
            return;
        };
        lock(&q.rates).failed.add(now_ms() / 1_000, 1);
        let Some(i) = category_index(*category) else {
            return;
        };
        q.errors[i].inc();
        if let Some(p) = plugin {
            p.errors[i].inc();
        }
        if let Some(v) = version {
            v.errors[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// `names` paired with `counters`, leaving out those at zero.
fn nonzero(
    names: impl Iterator<Item = &'static str>,
    counters: &[AtomicU64],
) -> BTreeMap<&'static str, u64> {
    names
        .zip(counters)
        .map(|(name, n)| (name, n.load(Ordering::Relaxed)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

fn by_category(counters: &[Counter; ErrorCategory::ALL.len()]) -> BTreeMap<&'static str, u64> {
    ErrorCategory::ALL
        .iter()
        .zip(counters)
        .map(|(c, n)| (c.as_str(), n.get()))
        .filter(|(_, n)| *n > 0)
        .collect()
}

// A panic while a lock was held cannot leave these maps or windows half-updated in a way that
// matters (each update is one push or insert), so a poisoned lock is used as is.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests;

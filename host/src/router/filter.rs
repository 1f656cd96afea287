//! Running a route's filter plugin on one message: the warm instance pool of each filter
//! version, the limits (router defaults, per-route overrides), and what the decision means.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::RouterOptions;
use crate::model::{ErrorCategory, FilterLimits, NewMessage};
use crate::plugins::PluginRegistry;
use crate::runtime::{
    CallContext, FilterPool, HostApi, Limits, Origin, PluginFailure, PluginMessage, RouteDecision,
};

/// Idle warm instances kept per filter version: enough for every plugin thread to run the
/// filter at once with some to spare.
const MAX_IDLE_PER_FILTER: usize = 8;

/// The filters' warm instance pools, by filter name (a new version replaces its pool).
pub(super) struct Filters {
    registry: Arc<PluginRegistry>,
    pools: Mutex<HashMap<String, Arc<FilterPool>>>,
    defaults: Limits,
    max_calls: u32,
}

impl Filters {
    pub(super) fn new(registry: Arc<PluginRegistry>, options: &RouterOptions) -> Filters {
        Filters {
            registry,
            pools: Mutex::new(HashMap::new()),
            defaults: Limits {
                timeout: Duration::from_millis(options.filter_timeout_ms),
                fuel: options.filter_fuel,
                memory_bytes: (options.filter_memory_mb as usize) << 20,
            },
            max_calls: options.filter_max_calls,
        }
    }

    fn limits(&self, overrides: &FilterLimits) -> Limits {
        Limits {
            timeout: overrides
                .timeout_ms
                .map_or(self.defaults.timeout, Duration::from_millis),
            fuel: overrides.fuel.unwrap_or(self.defaults.fuel),
            memory_bytes: overrides
                .memory_mb
                .map_or(self.defaults.memory_bytes, |mb| (mb as usize) << 20),
        }
    }

    /// The pool of `name`'s active version.
    async fn pool(&self, name: &str) -> Result<Arc<FilterPool>, PluginFailure> {
        let plugin = self.registry.get(name).await.map_err(|e| {
            PluginFailure::new(
                ErrorCategory::Host,
                format!("cannot load filter {name:?}: {e}"),
            )
        })?;
        let mut pools = self.pools.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = pools.get(name)
            && Arc::ptr_eq(p.plugin(), &plugin)
        {
            return Ok(p.clone());
        }
        let pool = Arc::new(FilterPool::new(
            plugin,
            self.max_calls,
            MAX_IDLE_PER_FILTER,
        )?);
        pools.insert(name.to_owned(), pool.clone());
        Ok(pool)
    }

    /// Runs filter `name` on `msg` (published to `topic`); the decision, or why it failed,
    /// with the `name@version` that decided.
    pub(super) async fn run(
        &self,
        name: &str,
        topic: &str,
        msg: &NewMessage,
        overrides: &FilterLimits,
    ) -> (Result<RouteDecision, PluginFailure>, Option<String>) {
        let pool = match self.pool(name).await {
            Ok(p) => p,
            Err(f) => return (Err(f), None),
        };
        let plugin = pool.plugin();
        let version = format!("{}@{}", plugin.name(), plugin.version());
        let message = PluginMessage {
            id: msg.id.map(|id| id.to_string()).unwrap_or_default(),
            queue: String::new(),
            topic: Some(topic.to_owned()),
            payload: msg.payload.clone(),
            headers: msg.headers.clone(),
            attempt: 1,
            correlation_id: msg.correlation_id.clone(),
            enqueued_at: crate::model::now_ms(),
        };
        let settings = self.registry.settings(name).await;
        let ctx = CallContext {
            origin: Origin {
                plugin: plugin.name().to_owned(),
                version: plugin.version(),
                message_id: msg.id.map(|id| id.to_string()),
                queue: String::new(),
                correlation_id: msg.correlation_id.clone(),
            },
            config: settings.config.clone(),
            outbound: settings.outbound.clone(),
            host: Arc::new(FilterHost),
        };
        let (result, _stats) = pool.route(message, &self.limits(overrides), ctx).await;
        (result, Some(version))
    }
}

/// The host a filter sees. The runtime already refuses filters everything but `log` and
/// `config`, so these answer only if that ever changed.
struct FilterHost;

#[async_trait]
impl HostApi for FilterHost {
    async fn publish(
        &self,
        _origin: &Origin,
        _topic: &str,
        _payload: Vec<u8>,
        _headers: Vec<(String, String)>,
    ) -> Result<String, String> {
        Err("filters may not publish; return a route instead".to_owned())
    }

    async fn heartbeat(&self, _origin: &Origin) -> Result<(), String> {
        Err("filters have no lease to extend".to_owned())
    }

    async fn kv_get(&self, _plugin: &str, _key: &str) -> Result<Option<Vec<u8>>, String> {
        Err("filters have no key-value store".to_owned())
    }

    async fn kv_set(&self, _plugin: &str, _key: &str, _value: Vec<u8>) -> Result<(), String> {
        Err("filters have no key-value store".to_owned())
    }

    async fn kv_delete(&self, _plugin: &str, _key: &str) -> Result<(), String> {
        Err("filters have no key-value store".to_owned())
    }
}

/// How a filter decided, as counted per filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FilterOutcome {
    /// `deliver([])`: the route's own queue.
    Deliver,
    /// `deliver([q...])`: other queues.
    Redirect,
    Drop,
    Transform,
}

impl FilterOutcome {
    pub const ALL: [FilterOutcome; 4] = [
        FilterOutcome::Deliver,
        FilterOutcome::Redirect,
        FilterOutcome::Drop,
        FilterOutcome::Transform,
    ];

    pub fn of(decision: &RouteDecision) -> FilterOutcome {
        match decision {
            RouteDecision::Deliver(q) if q.is_empty() => FilterOutcome::Deliver,
            RouteDecision::Deliver(_) => FilterOutcome::Redirect,
            RouteDecision::Drop => FilterOutcome::Drop,
            RouteDecision::Transform { .. } => FilterOutcome::Transform,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            FilterOutcome::Deliver => "deliver",
            FilterOutcome::Redirect => "redirect",
            FilterOutcome::Drop => "drop",
            FilterOutcome::Transform => "transform",
        }
    }
}

/// One filter's decisions and failures since the server started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterStats {
    pub decisions: BTreeMap<&'static str, u64>,
    pub errors: BTreeMap<&'static str, u64>,
}

#[derive(Debug, Default)]
pub(super) struct FilterCounters {
    by_filter: Mutex<BTreeMap<String, FilterStats>>,
}

impl FilterCounters {
    pub(super) fn decided(&self, filter: &str, outcome: FilterOutcome) {
        let mut m = self.by_filter.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry(filter.to_owned())
            .or_default()
            .decisions
            .entry(outcome.as_str())
            .or_default() += 1;
    }

    pub(super) fn failed(&self, filter: &str, category: ErrorCategory) {
        let mut m = self.by_filter.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry(filter.to_owned())
            .or_default()
            .errors
            .entry(category.as_str())
            .or_default() += 1;
    }

    pub(super) fn snapshot(&self) -> BTreeMap<String, FilterStats> {
        self.by_filter
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

//! Warm filter instances, shared by every publish that runs the same filter version.
//!
//! A filter is called once per published message a filtered route matches, usually from many
//! requests at once, so instead of one instance per worker (as [`WarmHandler`](super::WarmHandler))
//! a filter version keeps a small pool of idle instances: a call takes one (or instantiates),
//! and puts it back when it returned normally. An instance that trapped, ran out of fuel, timed
//! out or hit its memory limit is dropped, as is one that reached `max_calls` calls (bounding
//! what a leaky guest accumulates), grew past three quarters of its memory limit, or was built
//! for other limits.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::CallContext;
use super::bindings::filter::Filter;
use super::limits::{Limits, PluginFailure};
use super::plugin::{CallStats, Plugin, PluginMessage, Prepared, RouteDecision, World};
use super::reuse::{Call, Live};

/// The idle instances of one filter version.
pub struct FilterPool {
    plugin: Arc<Plugin>,
    max_calls: u32,
    max_idle: usize,
    idle: Mutex<Vec<Live<Filter>>>,
    instances: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for FilterPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilterPool")
            .field("plugin", &self.plugin.label())
            .field("max_calls", &self.max_calls)
            .finish_non_exhaustive()
    }
}

impl FilterPool {
    /// A pool for `plugin` keeping at most `max_idle` instances, each recycled after
    /// `max_calls` calls (at least 1; 1 means a fresh instance per call). Fails with an
    /// `interface` failure if the plugin is not a filter.
    pub fn new(
        plugin: Arc<Plugin>,
        max_calls: u32,
        max_idle: usize,
    ) -> Result<FilterPool, PluginFailure> {
        if plugin.world() != World::Filter {
            return Err(plugin.wrong_world(World::Filter));
        }
        Ok(FilterPool {
            plugin,
            max_calls: max_calls.max(1),
            max_idle,
            idle: Mutex::new(Vec::new()),
            instances: Default::default(),
        })
    }

    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }

    /// How many instances this pool has created so far.
    pub fn instances_created(&self) -> u64 {
        self.instances.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn take(&self, limits: &Limits) -> Option<Live<Filter>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        // Instances built for other limits (the route was changed) are of no further use.
        idle.retain(|l| l.limits == *limits);
        idle.pop()
    }

    fn put_back(&self, live: Live<Filter>) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.max_idle {
            idle.push(live);
        }
    }

    /// Like [`Plugin::route_measured`], on a warm instance when one is idle.
    pub async fn route(
        &self,
        msg: PluginMessage,
        limits: &Limits,
        ctx: CallContext,
    ) -> (Result<RouteDecision, PluginFailure>, CallStats) {
        let Prepared::Filter(pre) = &self.plugin.prepared else {
            return (
                Err(self.plugin.wrong_world(World::Filter)),
                CallStats::default(),
            );
        };
        let started = Instant::now();
        let message = msg.into_wit();
        let mut call = Call::start(self.take(limits), &self.plugin, limits, ctx);
        if call.instantiates() {
            self.instances
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let result = call
            .run(
                limits.timeout,
                async |store| pre.instantiate_async(store).await,
                async |instance, store| instance.call_route(store, &message).await,
            )
            .await;
        let (result, stats) = self.plugin.finish(&call.store, started, limits, result);
        match result {
            Ok((instance, route)) => {
                if let Some(live) = call.keep(instance, limits, self.max_calls) {
                    self.put_back(live);
                }
                (RouteDecision::checked(route, &self.plugin.label()), stats)
            }
            // The store is dropped here: a trapped or interrupted instance is unusable.
            Err(failure) => (Err(failure), stats),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::testutil::{RecordingHost, context, plugin_wasm, runtime};
    use spool_model::ErrorCategory;

    #[tokio::test]
    async fn reuses_instances_until_max_calls_and_checks_the_world() {
        let (rt, _dir) = runtime();
        let filter = rt.load("route-all", 1, &plugin_wasm("route_all")).unwrap();
        let host = Arc::new(RecordingHost::default());
        let limits = Limits {
            timeout: Duration::from_secs(10),
            fuel: 1_000_000_000,
            memory_bytes: 32 << 20,
        };
        let pool = FilterPool::new(filter, 3, 4).unwrap();
        for _ in 0..4 {
            let msg = PluginMessage {
                payload: b"{}".to_vec(),
                ..PluginMessage::default()
            };
            let (r, _) = pool.route(msg, &limits, context("f", host.clone())).await;
            assert!(r.is_ok(), "{r:?}");
        }
        assert_eq!(
            pool.instances_created(),
            2,
            "3 calls on one instance, then a new one"
        );

        let handler = rt.load("echo", 1, &plugin_wasm("echo")).unwrap();
        let err = FilterPool::new(handler, 3, 4).unwrap_err();
        assert_eq!(err.category, ErrorCategory::Interface);
    }
}

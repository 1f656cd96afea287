//! A warm handler instance, reused across calls by one worker (`instance_mode = reuse`).
//!
//! Instantiation is most of a fresh call's cost for Rust guests (~30 µs) and nearly all of it for
//! interpreted ones (~1 ms for Python or JavaScript against ~10-50 µs for the call itself). A
//! worker that opts in keeps one instance and calls it again for the next message of the same
//! queue. Guest state (globals, caches) then survives between those messages, which is the point
//! and the price: only messages of one queue, handled by one plugin version, share an instance.
//!
//! The instance is discarded after any failure (after a trap or a cancelled call it cannot be
//! entered again), after `max_calls` calls (bounding leaks and heap growth), once its memory has
//! grown past three quarters of the limit (so accumulated heap never fails a message that alone
//! would fit), and whenever the caller asks for different limits. Each call still gets its own fuel, deadline and context.

use std::sync::Arc;
use std::time::Instant;

use super::CallContext;
use super::bindings::handler::Handler;
use super::limits::{Limits, PluginFailure};
use super::plugin::{CallStats, HandlerOutcome, Plugin, PluginMessage, Prepared, World};
use super::reuse::{Call, Live};

/// One worker's reusable handler instance. Not shared: a worker owns it and calls it serially.
pub struct WarmHandler {
    plugin: Arc<Plugin>,
    max_calls: u32,
    live: Option<Live<Handler>>,
    instances: u64,
}

impl std::fmt::Debug for WarmHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmHandler")
            .field("plugin", &self.plugin.label())
            .field("max_calls", &self.max_calls)
            .field("warm", &self.live.is_some())
            .finish()
    }
}

impl WarmHandler {
    /// A warm slot for `plugin` that recycles its instance every `max_calls` calls (at least 1).
    /// Fails with an `interface` failure if the plugin is not a handler.
    pub fn new(plugin: Arc<Plugin>, max_calls: u32) -> Result<WarmHandler, PluginFailure> {
        if plugin.world() != World::Handler {
            return Err(plugin.wrong_world(World::Handler));
        }
        Ok(WarmHandler {
            plugin,
            max_calls: max_calls.max(1),
            live: None,
            instances: 0,
        })
    }

    pub fn plugin(&self) -> &Arc<Plugin> {
        &self.plugin
    }

    /// How many instances this slot has created so far.
    pub fn instances_created(&self) -> u64 {
        self.instances
    }

    /// Like [`Plugin::handle`], reusing the warm instance when there is one.
    pub async fn handle(
        &mut self,
        msg: PluginMessage,
        limits: &Limits,
        ctx: CallContext,
    ) -> Result<HandlerOutcome, PluginFailure> {
        self.handle_measured(msg, limits, ctx).await.0
    }

    /// [`handle`](Self::handle), also reporting the fuel and time used.
    pub async fn handle_measured(
        &mut self,
        msg: PluginMessage,
        limits: &Limits,
        ctx: CallContext,
    ) -> (Result<HandlerOutcome, PluginFailure>, CallStats) {
        let Prepared::Handler(pre) = &self.plugin.prepared else {
            return (
                Err(self.plugin.wrong_world(World::Handler)),
                CallStats::default(),
            );
        };
        let started = Instant::now();
        let message = msg.into_wit();
        // Different limits (the queue was reconfigured) need a store built with them.
        let reusable = self.live.take().filter(|live| live.limits == *limits);
        let mut call = Call::start(reusable, &self.plugin, limits, ctx);
        if call.instantiates() {
            self.instances += 1;
        }
        let result = call
            .run(
                limits.timeout,
                async |store| pre.instantiate_async(store).await,
                async |instance, store| instance.call_handle(store, &message).await,
            )
            .await;
        let (result, stats) = self.plugin.finish(&call.store, started, limits, result);
        match result {
            Ok((instance, outcome)) => {
                self.live = call.keep(instance, limits, self.max_calls);
                (Ok(HandlerOutcome::from(outcome)), stats)
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

    fn message(payload: &str) -> PluginMessage {
        PluginMessage {
            id: "7".to_owned(),
            payload: payload.as_bytes().to_vec(),
            attempt: 1,
            ..PluginMessage::default()
        }
    }

    #[tokio::test]
    async fn reuses_until_max_calls_or_a_failure() {
        let (rt, _dir) = runtime();
        let plugin = rt.load("misbehave", 1, &plugin_wasm("misbehave")).unwrap();
        let host = Arc::new(RecordingHost::default());
        let limits = Limits {
            timeout: Duration::from_secs(10),
            fuel: 1_000_000_000,
            memory_bytes: 32 << 20,
        };
        let mut warm = WarmHandler::new(plugin, 3).unwrap();
        for _ in 0..4 {
            let r = warm
                .handle(message("{}"), &limits, context("m", host.clone()))
                .await;
            assert_eq!(r, Ok(HandlerOutcome::Ack));
        }
        // Calls 1-3 on the first instance, call 4 on a second.
        assert_eq!(warm.instances_created(), 2);

        let trap = warm
            .handle(
                message(r#"{"do":"trap"}"#),
                &limits,
                context("m", host.clone()),
            )
            .await;
        assert_eq!(trap.unwrap_err().category, ErrorCategory::Trap);
        let after = warm
            .handle(message("{}"), &limits, context("m", host.clone()))
            .await;
        assert_eq!(after, Ok(HandlerOutcome::Ack));
        assert_eq!(warm.instances_created(), 3);

        // Each call still has its own fuel budget: a low one stops only that call.
        let low = Limits {
            fuel: 1_000_000,
            ..limits
        };
        let r = warm
            .handle(
                message(r#"{"do":"loop"}"#),
                &low,
                context("m", host.clone()),
            )
            .await;
        assert_eq!(r.unwrap_err().category, ErrorCategory::Fuel);
    }

    #[tokio::test]
    async fn retires_an_instance_whose_memory_nears_the_limit() {
        let (rt, _dir) = runtime();
        let plugin = rt.load("misbehave", 1, &plugin_wasm("misbehave")).unwrap();
        let host = Arc::new(RecordingHost::default());
        let limits = Limits {
            timeout: Duration::from_secs(10),
            fuel: 1_000_000_000,
            memory_bytes: 32 << 20,
        };
        let mut warm = WarmHandler::new(plugin, 100).unwrap();
        // Each call keeps 10 MiB. Kept warm, the third would need over 32 MiB; the instance is
        // retired after the call that takes it past 24 MiB, so every call succeeds.
        for _ in 0..4 {
            let r = warm
                .handle(
                    message(r#"{"do":"hold","mb":10}"#),
                    &limits,
                    context("m", host.clone()),
                )
                .await;
            assert_eq!(r, Ok(HandlerOutcome::Ack));
        }
        assert_eq!(warm.instances_created(), 2);
    }

    /// `cargo test --release -p spool --lib runtime::warm::tests::per_call_overhead_warm -- --ignored --nocapture`
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    #[ignore = "measurement, not a test"]
    async fn per_call_overhead_warm() {
        let (rt, _dir) = runtime();
        let plugin = rt.load("misbehave", 1, &plugin_wasm("misbehave")).unwrap();
        let host = Arc::new(RecordingHost::default());
        let limits = Limits::default();
        let mut warm = WarmHandler::new(plugin, u32::MAX).unwrap();
        for _ in 0..200 {
            warm.handle(message("{}"), &limits, context("m", host.clone()))
                .await
                .unwrap();
        }
        let n = 20_000;
        let started = Instant::now();
        for _ in 0..n {
            warm.handle(message("{}"), &limits, context("m", host.clone()))
                .await
                .unwrap();
        }
        println!(
            "warm instance: {:?} per call ({n} calls)",
            started.elapsed() / n
        );
    }
}

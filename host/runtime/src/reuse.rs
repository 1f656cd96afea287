//! What a worker's [`WarmHandler`](super::WarmHandler) and a filter's
//! [`FilterPool`](super::FilterPool) share: an instance kept with its store between calls, how
//! the next call picks it up, and when it retires.

use std::time::Duration;

use tokio::time::error::Elapsed;
use wasmtime::Store;

use super::CallContext;
use super::host_imports::CallState;
use super::limits::Limits;
use super::plugin::{CallError, Plugin};

/// An instance between calls: its store, the limits the store was built with, and how many
/// calls it has served.
pub(super) struct Live<I> {
    store: Store<CallState>,
    instance: I,
    pub(super) limits: Limits,
    calls: u32,
}

/// One call under way: its store, and the warm instance it runs on unless it instantiates.
pub(super) struct Call<I> {
    pub(super) store: Store<CallState>,
    instance: Option<I>,
    /// Calls the instance served before this one.
    calls: u32,
}

impl<I> Call<I> {
    /// A call on `live` (its store made ready for `ctx` and given `limits`' fuel and deadline
    /// again), or on a new store when there is none. The caller has checked that `live` was
    /// built with `limits`.
    pub(super) fn start(
        live: Option<Live<I>>,
        plugin: &Plugin,
        limits: &Limits,
        ctx: CallContext,
    ) -> Call<I> {
        match live {
            Some(mut live) => {
                live.store.data_mut().reset_for_call(ctx);
                Plugin::arm(&mut live.store, limits);
                Call {
                    store: live.store,
                    instance: Some(live.instance),
                    calls: live.calls,
                }
            }
            None => Call {
                store: plugin.new_store(limits, ctx),
                instance: None,
                calls: 0,
            },
        }
    }

    /// Whether this call creates its instance.
    pub(super) fn instantiates(&self) -> bool {
        self.instance.is_none()
    }

    /// Runs the call within `timeout`: `instantiate` first when there is no warm instance, then
    /// `call` on the instance. Returns the instance with the result, so it can be kept.
    pub(super) async fn run<R>(
        &mut self,
        timeout: Duration,
        instantiate: impl AsyncFnOnce(&mut Store<CallState>) -> wasmtime::Result<I>,
        call: impl AsyncFnOnce(&I, &mut Store<CallState>) -> wasmtime::Result<R>,
    ) -> Result<Result<(I, R), CallError>, Elapsed> {
        let (store, instance) = (&mut self.store, self.instance.take());
        tokio::time::timeout(timeout, async {
            let instance = match instance {
                Some(instance) => instance,
                None => instantiate(store).await.map_err(CallError::Instantiate)?,
            };
            let value = call(&instance, store).await.map_err(CallError::Call)?;
            Ok((instance, value))
        })
        .await
    }

    /// After the call returned normally: the instance to keep for the next call, or `None` when
    /// it retires (see [`Live::serves_again`]). A failed call's instance is never kept: after a
    /// trap or an interrupted call it cannot be entered again.
    pub(super) fn keep(self, instance: I, limits: &Limits, max_calls: u32) -> Option<Live<I>> {
        let live = Live {
            store: self.store,
            instance,
            limits: *limits,
            calls: self.calls + 1,
        };
        live.serves_again(max_calls).then_some(live)
    }
}

impl<I> Live<I> {
    /// Whether the instance may serve another call. It retires after `max_calls` calls, bounding
    /// what a leaky guest accumulates, and once its memory has grown past three quarters of the
    /// limit: linear memory never shrinks, so a heap that creeps up would sooner or later fail a
    /// message that alone fits, while a fresh instance serves it.
    fn serves_again(&self, max_calls: u32) -> bool {
        self.calls < max_calls && !self.store.data().limiter.near_limit()
    }
}

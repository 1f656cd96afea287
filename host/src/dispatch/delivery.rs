//! One delivery: find the handler, run it under the queue's limits while keeping the lease alive,
//! and turn the result into a settlement (ack, retry with backoff, or dead letter).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Inner;
use super::backoff::retry_delay_ms;
use super::breaker::Verdict;
use super::host_api::DeliveryHost;
use super::settler::Done;
use crate::model::{Claimed, ErrorCategory, InstanceMode, QueueConfig, Settle, Settlement, now_ms};
use crate::plugins::RegistryError;
use crate::runtime::{
    CallContext, HandlerOutcome, Limits, Origin, PluginFailure, WarmHandler, World,
};

/// Calls before a reused instance is replaced, bounding what a leaky guest can accumulate.
const MAX_CALLS_PER_INSTANCE: u32 = 10_000;

/// How a delivery ended before it becomes a settlement.
enum Ran {
    Outcome(HandlerOutcome),
    Failed(PluginFailure),
    /// Shutdown stopped it: give the message back.
    Aborted,
}

/// Runs one claimed message and decides its settlement (the caller commits it). `warm` is the
/// worker's reusable instance for `instance_mode = "reuse"` (kept across calls, replaced when
/// the plugin version changes).
pub(super) async fn deliver(
    inner: &Arc<Inner>,
    config: &QueueConfig,
    warm: &mut Option<WarmHandler>,
    msg: Claimed,
) -> Done {
    if let Some(o) = &inner.observer {
        o.started(&msg);
    }
    let started = Instant::now();
    let handler = config.handler.as_deref().unwrap_or_default();
    let (ran, plugin_version, outbox) = run_handler(inner, config, warm, handler, &msg).await;
    let handler_time = started.elapsed();
    if let Some(o) = &inner.observer {
        o.finished(&msg, handler_time);
    }

    let mut outbox = outbox;
    let verdict = verdict(&ran);
    let settlement = match ran {
        Ran::Aborted => Settlement::Release,
        Ran::Outcome(HandlerOutcome::Ack) => Settlement::Ack,
        Ran::Outcome(HandlerOutcome::DeadLetter(reason)) => Settlement::Dead {
            error: reason,
            category: ErrorCategory::Handler,
        },
        Ran::Outcome(HandlerOutcome::Retry(delay)) => requested_retry(config, msg.attempt, delay),
        Ran::Failed(f) => failure_settlement(config, msg.attempt, f.message, f.category, None),
    };
    log_settlement(&msg, handler, &settlement, handler_time);
    // Publishes count only with an ack; any other outcome discards them.
    if settlement != Settlement::Ack {
        outbox.clear();
    }
    Done {
        settle: Settle {
            id: msg.id,
            attempt: msg.attempt,
            settlement,
            plugin_version,
            outbox,
        },
        msg,
        handler_time,
        verdict,
    }
}

/// What a delivery says to the circuit breaker. Every failure to run the handler counts,
/// whoever's fault (a host failure fails the delivery just the same, and the breaker is there
/// to stop spending attempts on deliveries that fail); the handler's own `retry` and
/// `dead-letter` are its decisions about one message, and a stopped call says nothing.
fn verdict(ran: &Ran) -> Verdict {
    match ran {
        Ran::Outcome(HandlerOutcome::Ack) => Verdict::Success,
        Ran::Outcome(HandlerOutcome::Retry(_) | HandlerOutcome::DeadLetter(_)) | Ran::Aborted => {
            Verdict::Neutral
        }
        Ran::Failed(f) => Verdict::Failure(f.category),
    }
}

/// A failed attempt becomes a retry with backoff, or a dead letter when no attempts are left.
fn failure_settlement(
    config: &QueueConfig,
    attempt: u32,
    error: String,
    category: ErrorCategory,
    own_delay: Option<u64>,
) -> Settlement {
    if attempt >= config.max_attempts {
        return Settlement::Dead { error, category };
    }
    let delay_ms = own_delay
        .unwrap_or_else(|| retry_delay_ms(attempt, config.backoff_base_ms, config.backoff_max_ms));
    Settlement::Retry {
        delay_ms,
        error,
        category,
    }
}

/// The handler returned `retry`: its own decision, not a failure, so the message goes back
/// without an error (after the handler's delay, or the queue's backoff). It still spends an
/// attempt; with none left it is dead-lettered as the handler's doing (category `handler`).
fn requested_retry(config: &QueueConfig, attempt: u32, own_delay: Option<u64>) -> Settlement {
    if attempt >= config.max_attempts {
        return Settlement::Dead {
            error: format!(
                "the handler asked to retry, but all {} attempts are used",
                config.max_attempts
            ),
            category: ErrorCategory::Handler,
        };
    }
    let delay_ms = own_delay
        .unwrap_or_else(|| retry_delay_ms(attempt, config.backoff_base_ms, config.backoff_max_ms));
    Settlement::RetryRequested { delay_ms }
}

async fn run_handler(
    inner: &Arc<Inner>,
    config: &QueueConfig,
    warm: &mut Option<WarmHandler>,
    handler: &str,
    msg: &Claimed,
) -> (Ran, Option<String>, Vec<crate::model::Delivery>) {
    let plugin = match inner.registry.get(handler).await {
        Ok(p) => p,
        Err(RegistryError::NotFound(_)) => {
            let f = PluginFailure {
                category: ErrorCategory::NoPlugin,
                message: format!(
                    "queue {:?} has handler {handler:?}, but no plugin of that name is deployed",
                    msg.queue
                ),
            };
            return (Ran::Failed(f), None, Vec::new());
        }
        Err(e) => {
            let f = PluginFailure {
                category: ErrorCategory::Host,
                message: format!("cannot load plugin {handler:?}: {e}"),
            };
            return (Ran::Failed(f), None, Vec::new());
        }
    };
    let version = Some(format!("{}@{}", plugin.name(), plugin.version()));
    if plugin.world() != World::Handler {
        let f = PluginFailure {
            category: ErrorCategory::Interface,
            message: format!(
                "plugin {}@{} is a {} plugin, not a handler; set the queue's handler to a plugin built for the `handler` world",
                plugin.name(),
                plugin.version(),
                plugin.world()
            ),
        };
        return (Ran::Failed(f), version, Vec::new());
    }

    let limits = Limits {
        timeout: Duration::from_millis(config.timeout_ms),
        fuel: config.fuel,
        memory_bytes: (config.memory_mb as usize) << 20,
    };
    let host = Arc::new(DeliveryHost::new(inner, msg, config.lease_ms));
    let settings = inner.registry.settings(handler).await;
    let ctx = CallContext {
        origin: Origin {
            plugin: plugin.name().to_owned(),
            version: plugin.version(),
            message_id: Some(msg.id.to_string()),
            queue: msg.queue.clone(),
            correlation_id: msg.correlation_id.clone(),
        },
        config: settings.config.clone(),
        outbound: settings.outbound.clone(),
        host: host.clone(),
    };
    let message = crate::runtime::PluginMessage::from_claimed(msg);
    match config
        .instance_mode
        .resolve(plugin.settings().instance_mode)
    {
        InstanceMode::Fresh | InstanceMode::Plugin => *warm = None,
        InstanceMode::Reuse => {
            // A deploy or rollback gives a different plugin: its instance starts afresh.
            if !warm
                .as_ref()
                .is_some_and(|w| Arc::ptr_eq(w.plugin(), &plugin))
            {
                match WarmHandler::new(plugin.clone(), MAX_CALLS_PER_INSTANCE) {
                    Ok(w) => *warm = Some(w),
                    Err(f) => return (Ran::Failed(f), version, Vec::new()),
                }
            }
        }
    }
    // Keep the lease alive for handlers that run longer than a fraction of it, whether or not
    // the plugin calls `heartbeat` itself.
    let renew_every = Duration::from_millis((config.lease_ms / 3).max(50));
    // A message that waited in the buffer has less than a full lease left: renew it first by
    // half of what is left.
    let left = Duration::from_millis((msg.lease_expires_at - now_ms()).max(0) as u64);
    let first = renew_every.min(left / 2);
    let mut renew = tokio::time::interval_at(tokio::time::Instant::now() + first, renew_every);
    let ran = {
        // The slot comes first, so the handler's timeout does not run while it waits; the
        // lease is renewed meanwhile all the same.
        let call = async {
            let slot = inner.slots.acquire(&msg.queue).await;
            slot.run(
                async {
                    match warm.as_mut() {
                        Some(w) => w.handle(message, &limits, ctx).await,
                        None => plugin.handle(message, &limits, ctx).await,
                    }
                },
                wasted_slot,
            )
            .await
        };
        tokio::pin!(call);
        loop {
            tokio::select! {
                r = &mut call => break match r {
                    Ok(o) => Ran::Outcome(o),
                    Err(f) => Ran::Failed(f),
                },
                _ = renew.tick() => host.renew().await,
                _ = inner.abort.cancelled() => break Ran::Aborted,
            }
        }
    };
    (ran, version, host.take_outbox())
}

/// Whether a call's slot time achieved nothing (see [`PluginFailure::wastes_slot`]).
fn wasted_slot(result: &Result<HandlerOutcome, PluginFailure>) -> bool {
    result.as_ref().is_err_and(PluginFailure::wastes_slot)
}

fn log_settlement(msg: &Claimed, handler: &str, s: &Settlement, took: Duration) {
    let took_us = took.as_micros() as u64;
    match s {
        Settlement::Ack => {
            tracing::trace!(message_id = msg.id, queue = %msg.queue, took_us, "acked")
        }
        Settlement::Retry {
            delay_ms,
            error,
            category,
        } => tracing::info!(
            message_id = msg.id,
            queue = %msg.queue,
            plugin = handler,
            attempt = msg.attempt,
            category = %category,
            delay_ms,
            error = %error,
            "delivery failed; will retry"
        ),
        Settlement::RetryRequested { delay_ms } => tracing::debug!(
            message_id = msg.id,
            queue = %msg.queue,
            plugin = handler,
            attempt = msg.attempt,
            delay_ms,
            "the handler asked to retry"
        ),
        Settlement::Dead { error, category } => tracing::warn!(
            message_id = msg.id,
            queue = %msg.queue,
            plugin = handler,
            attempt = msg.attempt,
            category = %category,
            error = %error,
            "message dead-lettered"
        ),
        Settlement::Release => {
            tracing::info!(message_id = msg.id, queue = %msg.queue, "released at shutdown")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(max_attempts: u32) -> QueueConfig {
        QueueConfig {
            max_attempts,
            backoff_base_ms: 100,
            backoff_max_ms: 1_000,
            ..QueueConfig::default()
        }
    }

    #[test]
    fn failures_retry_until_attempts_run_out() {
        match failure_settlement(&cfg(3), 1, "boom".into(), ErrorCategory::Trap, None) {
            Settlement::Retry {
                delay_ms, category, ..
            } => {
                assert!((100..=110).contains(&delay_ms), "{delay_ms}");
                assert_eq!(category, ErrorCategory::Trap);
            }
            other => panic!("expected retry, got {other:?}"),
        }
        match failure_settlement(&cfg(3), 3, "boom".into(), ErrorCategory::Fuel, None) {
            Settlement::Dead { error, category } => {
                assert_eq!(error, "boom");
                assert_eq!(category, ErrorCategory::Fuel);
            }
            other => panic!("expected dead, got {other:?}"),
        }
    }

    #[test]
    fn a_handler_retry_is_not_a_failure_until_attempts_run_out() {
        assert_eq!(
            requested_retry(&cfg(3), 2, Some(7)),
            Settlement::RetryRequested { delay_ms: 7 },
            "the handler's own delay overrides the backoff"
        );
        match requested_retry(&cfg(3), 1, None) {
            Settlement::RetryRequested { delay_ms } => {
                assert!((100..=110).contains(&delay_ms), "{delay_ms}")
            }
            other => panic!("expected a requested retry, got {other:?}"),
        }
        match requested_retry(&cfg(2), 2, Some(7)) {
            Settlement::Dead { error, category } => {
                assert!(error.contains("all 2 attempts"), "{error}");
                assert_eq!(category, ErrorCategory::Handler);
            }
            other => panic!("expected dead, got {other:?}"),
        }
    }
}

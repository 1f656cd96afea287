//! The claimer of one queue: claims as many messages as it has free permits and hands each to a
//! delivery task.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, watch};

use super::warm_pool::WarmPool;
use super::{Inner, delivery};
use crate::model::{QueueConfig, now_ms};
use crate::runtime::{RegistryError, World};

/// Upper bound on one claim, so a huge concurrency does not turn into one giant transaction.
const MAX_CLAIM: u32 = 256;
/// An idle claimer looks at the store at least this often even without a signal, as a backstop
/// (e.g. a lease recovered by another host of a shared database).
const IDLE_RECHECK: Duration = Duration::from_secs(1);
/// Pause after a store error before trying again.
const ERROR_BACKOFF: Duration = Duration::from_millis(500);

pub(super) async fn run(
    inner: Arc<Inner>,
    queue: String,
    mut config_rx: watch::Receiver<QueueConfig>,
) {
    let signal = inner.store.signals().get(&queue);
    let mut plugins_rx = inner.plugins.subscribe();
    let mut config = config_rx.borrow_and_update().clone();
    let permits = Arc::new(Semaphore::new(config.concurrency as usize));
    let mut concurrency = config.concurrency;
    let warm = Arc::new(WarmPool::default());
    // The reason the queue is not being consumed, logged once per change.
    let mut idle_reason: Option<String> = None;
    tracing::debug!(queue = %queue, concurrency, "claimer started");

    loop {
        if inner.stop.is_cancelled() {
            break;
        }
        // `changed()` below marks the value seen, so compare instead of asking `has_changed`.
        if *config_rx.borrow() != config {
            config = config_rx.borrow_and_update().clone();
            resize(&permits, &mut concurrency, config.concurrency);
            // Limits or mode may have changed: start from fresh instances.
            warm.clear();
        }

        if let Some(reason) = not_consumable(&inner, &config).await {
            if idle_reason.as_deref() != Some(reason.as_str()) {
                // Paused or handler-less queues are that way on purpose; a missing or wrong
                // plugin is a mistake someone should see.
                if config.paused || config.handler.is_none() {
                    tracing::info!(queue = %queue, reason = %reason, "queue is not being consumed");
                } else {
                    tracing::warn!(queue = %queue, reason = %reason, "queue is not being consumed");
                }
                idle_reason = Some(reason);
            }
            tokio::select! {
                _ = inner.stop.cancelled() => break,
                changed = config_rx.changed() => if changed.is_err() { break },
                _ = plugins_rx.changed() => {}
                _ = tokio::time::sleep(IDLE_RECHECK) => {}
            }
            continue;
        }
        if idle_reason.take().is_some() {
            tracing::info!(queue = %queue, "queue is being consumed again");
        }

        // Wait for at least one free permit before claiming anything.
        let first = tokio::select! {
            _ = inner.stop.cancelled() => break,
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let free = 1 + permits.available_permits() as u32;
        let want = free.min(MAX_CLAIM);

        let batch = match inner.store.claim(&queue, want, config.lease_ms).await {
            Ok(b) => b,
            Err(e) => {
                drop(first);
                tracing::warn!(queue = %queue, error = %e, "claim failed; retrying");
                tokio::select! {
                    _ = inner.stop.cancelled() => break,
                    _ = tokio::time::sleep(ERROR_BACKOFF) => {}
                }
                continue;
            }
        };

        if batch.messages.is_empty() {
            drop(first);
            let wait = batch
                .next_due_at
                .map(|due| Duration::from_millis((due - now_ms()).max(0) as u64))
                .unwrap_or(IDLE_RECHECK)
                .min(IDLE_RECHECK);
            tokio::select! {
                _ = inner.stop.cancelled() => break,
                _ = signal.notified() => {}
                _ = config_rx.changed() => {}
                _ = tokio::time::sleep(wait) => {}
            }
            continue;
        }

        let shared = Arc::new(config.clone());
        let mut first = Some(first);
        for msg in batch.messages {
            // One permit per message: the first was taken above, the rest are free by
            // construction (we claimed no more than were available and only we take them).
            let permit = match first.take() {
                Some(p) => p,
                None => match permits.clone().acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let inner2 = inner.clone();
            let config = shared.clone();
            let warm = warm.clone();
            inner.deliveries.spawn(async move {
                delivery::deliver(&inner2, &config, &warm, msg).await;
                drop(permit);
            });
        }
    }
    tracing::debug!(queue = %queue, "claimer stopped");
}

/// Why the queue cannot hand out messages right now, if it cannot. Messages wait (no attempt is
/// spent) while the queue is paused, has no handler, or its handler is not deployed or is not a
/// handler; a deploy, rollback or config change ends the wait.
async fn not_consumable(inner: &Inner, config: &QueueConfig) -> Option<String> {
    if config.paused {
        return Some("paused".to_owned());
    }
    let Some(handler) = config.handler.as_deref() else {
        return Some(
            "no handler is set; set one with `spool queue set QUEUE --handler PLUGIN`".to_owned(),
        );
    };
    match inner.registry.get(handler).await {
        Ok(p) if p.world() == World::Handler => None,
        Ok(p) => Some(format!(
            "plugin {} is a {} plugin, not a handler; deploy a handler component under that name or change the queue's handler",
            p.label(),
            p.world()
        )),
        Err(RegistryError::NotFound(_)) => Some(format!(
            "handler plugin {handler:?} is not deployed; deploy it with `spool plugin deploy {handler} FILE.wasm`"
        )),
        // Anything else (store hiccup, cache error) is retried by the delivery path, which
        // records it on the message.
        Err(_) => None,
    }
}

/// Grows or shrinks the permit pool to a new concurrency. Shrinking takes permits out as running
/// deliveries return them, so the new limit holds once they finish.
fn resize(permits: &Arc<Semaphore>, current: &mut u32, wanted: u32) {
    if wanted > *current {
        permits.add_permits((wanted - *current) as usize);
    } else if wanted < *current {
        let take = *current - wanted;
        let permits = permits.clone();
        tokio::spawn(async move {
            if let Ok(p) = permits.acquire_many_owned(take).await {
                p.forget();
            }
        });
    }
    *current = wanted;
}

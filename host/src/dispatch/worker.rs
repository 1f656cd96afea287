//! The claimer of one queue: claims as many messages as it has free permits and hands each to a
//! delivery task.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, watch};

use super::{Inner, delivery};
use crate::model::{QueueConfig, now_ms};

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
    let mut config = config_rx.borrow_and_update().clone();
    let permits = Arc::new(Semaphore::new(config.concurrency as usize));
    let mut concurrency = config.concurrency;
    tracing::debug!(queue = %queue, concurrency, "claimer started");

    loop {
        if inner.stop.is_cancelled() {
            break;
        }
        if config_rx.has_changed().unwrap_or(false) {
            config = config_rx.borrow_and_update().clone();
            resize(&permits, &mut concurrency, config.concurrency);
        }
        if config.paused || config.handler.is_none() {
            tokio::select! {
                _ = inner.stop.cancelled() => break,
                changed = config_rx.changed() => if changed.is_err() { break },
            }
            continue;
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

        let config = Arc::new(config.clone());
        let mut first = Some(first);
        for msg in batch.messages {
            // One permit per message: the first was taken above, the rest are free by
            // construction (we claimed no more than were available and only we take them).
            let permit = match first.take() {
                Some(p) => p,
                None => match permits.clone().try_acquire_owned() {
                    Ok(p) => p,
                    Err(_) => permits
                        .clone()
                        .acquire_owned()
                        .await
                        .expect("the semaphore is never closed"),
                },
            };
            let inner2 = inner.clone();
            let config = config.clone();
            inner.deliveries.spawn(async move {
                delivery::deliver(&inner2, &config, msg).await;
                drop(permit);
            });
        }
    }
    tracing::debug!(queue = %queue, "claimer stopped");
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

//! Commits the settlements of one queue's deliveries in batches.
//!
//! A worker hands its result over and takes the next message at once instead of waiting for a
//! transaction; the settler commits whatever has piled up while the previous commit ran. This
//! keeps a fast queue's workers busy and its transactions large. At-least-once still holds: a
//! settlement lost in a crash leaves the message leased, and the lease runs out.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::breaker::Verdict;
use super::{Inner, SettledDelivery};
use crate::model::{Claimed, Settle, SettleResult};

/// Most settlements committed in one store call.
const MAX_BATCH: usize = 1_024;

/// A finished delivery waiting to be committed.
pub(super) struct Done {
    pub msg: Claimed,
    pub settle: Settle,
    pub handler_time: Duration,
    /// What the delivery says about the handler's health, for the queue's circuit breaker.
    pub verdict: Verdict,
}

/// Commits everything sent on `rx` until every sender is gone.
pub(super) async fn run(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<Done>) {
    let mut batch = Vec::new();
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(d) => batch.push(d),
                Err(_) => break,
            }
        }
        commit(&inner, &mut batch).await;
    }
}

async fn commit(inner: &Inner, batch: &mut Vec<Done>) {
    // Only an observer needs the settlements (and who ran them) after the store has taken them.
    let observed: Option<Vec<_>> = inner.observer.as_ref().map(|_| {
        batch
            .iter()
            .map(|d| (d.settle.settlement.clone(), d.settle.plugin_version.clone()))
            .collect()
    });
    let settles = batch
        .iter_mut()
        .map(|d| take_settle(&mut d.settle))
        .collect();
    let results = match inner.store.settle(settles).await {
        Ok(results) => {
            for (d, r) in batch.iter().zip(&results) {
                if *r == SettleResult::LeaseLost {
                    tracing::warn!(
                        message_id = d.msg.id,
                        queue = %d.msg.queue,
                        attempt = d.msg.attempt,
                        "lease was lost before the handler finished; the message will be (or was) delivered again"
                    );
                }
            }
            Some(results)
        }
        Err(e) => {
            // The leases will expire and the messages will be redelivered: at-least-once holds.
            tracing::error!(count = batch.len(), error = %e, "cannot settle messages");
            None
        }
    };
    if let (Some(o), Some(observed)) = (&inner.observer, observed) {
        for (i, (d, (settlement, version))) in batch.iter().zip(&observed).enumerate() {
            o.settled(
                &d.msg,
                &SettledDelivery {
                    settlement,
                    version: version.as_deref(),
                    result: results.as_ref().and_then(|r| r.get(i).copied()),
                    handler_time: d.handler_time,
                },
            );
        }
    }
    batch.clear();
}

/// Moves the settle out, leaving a cheap placeholder (the batch is cleared right after).
fn take_settle(s: &mut Settle) -> Settle {
    Settle {
        id: s.id,
        attempt: s.attempt,
        settlement: std::mem::replace(&mut s.settlement, crate::model::Settlement::Release),
        plugin_version: s.plugin_version.take(),
        outbox: std::mem::take(&mut s.outbox),
    }
}

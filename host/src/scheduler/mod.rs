//! Time-driven work: the maintenance loop (lease recovery, TTL expiry, retention), and
//! schedules — `calendar` says when a schedule fires, `fire` builds the messages it fires.
//! Delayed messages need no timer of their own: the store promotes them when they fall due and
//! tells idle workers when to look again.

pub mod calendar;
pub mod fire;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::Store;

/// Runs `store.maintain()` every `interval` until `stop` is cancelled.
pub async fn run_maintenance(store: Arc<dyn Store>, interval: Duration, stop: CancellationToken) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        match store.maintain().await {
            Ok(m) if m != Default::default() => tracing::info!(
                leases_recovered = m.leases_recovered,
                leases_dead = m.leases_dead,
                expired = m.expired,
                acked_purged = m.acked_purged,
                dead_purged = m.dead_purged,
                "maintenance"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "maintenance failed; will try again"),
        }
    }
}

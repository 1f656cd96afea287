//! The per-minute queue history the dashboard's charts draw: every [`SAMPLE_EVERY`], each
//! queue's stats become its point of the current minute (`Store::record_history`), so a
//! minute's point is its last sample and the current one is at most that far behind. Kept for
//! [`KEEP`] in the database, so it survives restarts and every host of a shared database serves
//! the same history.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::model::{minute_of, now_ms};
use crate::store::Store;

/// How often the current minute's points are written.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(10);
/// How long points are kept.
pub const KEEP: Duration = Duration::from_secs(7 * 24 * 3_600);

/// Samples every queue into the history until `stop` is cancelled (the first sample at once).
pub async fn run_history(store: Arc<dyn Store>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let now = now_ms();
        let forget_before = minute_of(now) - KEEP.as_millis() as i64;
        match store.record_history(minute_of(now), forget_before).await {
            Ok(_) if failing => {
                tracing::info!("recording queue history again");
                failing = false;
            }
            Ok(_) => {}
            Err(e) if !failing => {
                tracing::warn!(error = %e, "cannot record queue history; charts miss these \
                    minutes until it works again");
                failing = true;
            }
            Err(_) => {}
        }
    }
}

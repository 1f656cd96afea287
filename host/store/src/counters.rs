//! Per-queue counters that every write moving a message keeps, shared by both backends: each
//! backend writes the deltas into its own rows (`sqlite::rows::flush_counters`,
//! `postgres::counters`).

use std::collections::HashMap;

use spool_model::MessageState;

/// Per-queue counter deltas, accumulated during one operation and written once at its end so a
/// batch of a thousand acks updates the queue row once, not a thousand times.
///
/// Two kinds live on the queue row: totals since the queue was created ([`Counter`]), and the
/// number of messages in each waiting state now ([`Counters::moved`]). The depths are what make
/// queue stats cost the same at ten messages or ten million: every write that changes a
/// message's state reports the move here, inside the same transaction as the change.
#[derive(Debug, Default)]
pub struct Counters {
    deltas: HashMap<i64, [i64; TOTALS + DEPTHS]>,
}

const TOTALS: usize = 6;
const DEPTHS: usize = 4;

#[derive(Debug, Clone, Copy)]
pub enum Counter {
    Enqueued = 0,
    Acked = 1,
    Retried = 2,
    Dead = 3,
    Cancelled = 4,
    Expired = 5,
}

/// The depth slot a state is counted in; final states other than `dead` have none (their
/// numbers are the totals).
fn depth_slot(state: MessageState) -> Option<usize> {
    match state {
        MessageState::Scheduled => Some(TOTALS),
        MessageState::Ready => Some(TOTALS + 1),
        MessageState::Leased => Some(TOTALS + 2),
        MessageState::Dead => Some(TOTALS + 3),
        MessageState::Acked | MessageState::Cancelled | MessageState::Expired => None,
    }
}

impl Counters {
    pub fn add(&mut self, queue_id: i64, counter: Counter, n: i64) {
        if n != 0 {
            self.deltas.entry(queue_id).or_default()[counter as usize] += n;
        }
    }

    /// `n` messages of the queue moved from state `from` to state `to`; `None` is "no row"
    /// (inserted, or deleted).
    pub fn moved(
        &mut self,
        queue_id: i64,
        from: Option<MessageState>,
        to: Option<MessageState>,
        n: i64,
    ) {
        if n == 0 || from == to {
            return;
        }
        let from = from.and_then(depth_slot);
        let to = to.and_then(depth_slot);
        if from.is_none() && to.is_none() {
            return;
        }
        let d = self.deltas.entry(queue_id).or_default();
        if let Some(slot) = from {
            d[slot] -= n;
        }
        if let Some(slot) = to {
            d[slot] += n;
        }
    }

    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.deltas.is_empty()
    }

    /// The deltas per queue id: the six totals ([`Counter`] order), then the depths of
    /// scheduled, ready, leased and dead; empties this.
    pub fn drain(&mut self) -> impl Iterator<Item = (i64, [i64; TOTALS + DEPTHS])> + '_ {
        self.deltas.drain()
    }
}

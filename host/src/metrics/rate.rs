//! Per-second rates over the last minute: a ring of one-second counters.
//!
//! Operators ask "how fast is this queue moving now"; the totals since creation cannot answer
//! that and Prometheus is not always at hand. Only complete seconds count, so a rate does not
//! dip at the start of every second.

use serde::Serialize;

/// Seconds a rate averages over.
pub const RATE_WINDOW_S: i64 = 60;
/// One slot per second of the window plus the current, incomplete second.
const SLOTS: usize = RATE_WINDOW_S as usize + 1;

/// Events per second of one kind, over the last [`RATE_WINDOW_S`] complete seconds.
#[derive(Debug, Clone)]
pub struct Rate {
    /// `counts[i]` events happened in second `seconds[i]` (unix time).
    counts: [u64; SLOTS],
    seconds: [i64; SLOTS],
}

impl Default for Rate {
    fn default() -> Self {
        Rate {
            counts: [0; SLOTS],
            seconds: [i64::MIN; SLOTS],
        }
    }
}

impl Rate {
    /// Counts `n` events in unix second `now_s`.
    pub fn add(&mut self, now_s: i64, n: u64) {
        let i = now_s.rem_euclid(SLOTS as i64) as usize;
        if self.seconds[i] != now_s {
            self.seconds[i] = now_s;
            self.counts[i] = 0;
        }
        self.counts[i] += n;
    }

    /// Average events per second over the complete seconds `now_s - 60 ..= now_s - 1`.
    pub fn per_second(&self, now_s: i64) -> f64 {
        let total: u64 = self
            .seconds
            .iter()
            .zip(&self.counts)
            .filter(|(s, _)| (1..=RATE_WINDOW_S).contains(&now_s.saturating_sub(**s)))
            .map(|(_, c)| c)
            .sum();
        let per_s = total as f64 / RATE_WINDOW_S as f64;
        (per_s * 1_000.0).round() / 1_000.0
    }
}

/// A queue's delivery rates on this server, averaged over the last minute.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct RatesOut {
    /// Handlers started per second.
    pub started_per_s: f64,
    /// Deliveries acked per second.
    pub acked_per_s: f64,
    /// Deliveries that failed (retried or dead-lettered) per second.
    pub failed_per_s: f64,
}

/// The rates [`RatesOut`] reports.
#[derive(Debug, Clone, Default)]
pub struct Rates {
    pub started: Rate,
    pub acked: Rate,
    pub failed: Rate,
}

impl Rates {
    pub fn report(&self, now_s: i64) -> RatesOut {
        RatesOut {
            started_per_s: self.started.per_second(now_s),
            acked_per_s: self.acked.per_second(now_s),
            failed_per_s: self.failed.per_second(now_s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averages_complete_seconds_of_the_last_minute() {
        let mut r = Rate::default();
        assert_eq!(r.per_second(1_000), 0.0);
        for s in 940..1_000 {
            r.add(s, 3);
        }
        // The current second is not complete yet and does not count.
        r.add(1_000, 100);
        assert_eq!(r.per_second(1_000), 3.0);
        // A minute later only second 1,000 is left in the window.
        assert!((r.per_second(1_060) - 100.0 / 60.0).abs() < 0.001);
        assert_eq!(r.per_second(1_061), 0.0);
    }

    #[test]
    fn a_reused_slot_starts_from_zero() {
        let mut r = Rate::default();
        r.add(5, 10);
        r.add(5 + SLOTS as i64, 1);
        assert!((r.per_second(6 + SLOTS as i64) - 1.0 / 60.0).abs() < 0.001);
    }
}

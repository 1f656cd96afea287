//! Percentiles over the most recent samples: a fixed-size ring buffer per figure.
//!
//! A window, not a histogram, because operators ask "how long do messages wait *now*": old
//! samples fall out as new ones arrive, and the memory per queue is fixed however busy it is.
//! Percentiles are computed when asked for (an API read), never on the delivery path.

use serde::Serialize;

/// Samples kept per window.
pub const WINDOW: usize = 4_096;

/// The most recent [`WINDOW`] samples of one figure, in milliseconds.
#[derive(Debug, Clone, Default)]
pub struct Window {
    samples: Vec<f64>,
    /// Where the next sample goes once the buffer is full (the oldest one).
    next: usize,
}

/// p50/p95/p99 of a window, in milliseconds, with how many samples they are over.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    /// Samples the percentiles are computed over (at most [`WINDOW`]).
    pub samples: usize,
}

impl Window {
    /// Adds a sample, replacing the oldest once the window is full. Non-finite values (which no
    /// clock produces) are ignored so they cannot poison the ordering.
    pub fn record(&mut self, ms: f64) {
        if !ms.is_finite() {
            return;
        }
        if self.samples.len() < WINDOW {
            self.samples.push(ms);
        } else {
            self.samples[self.next] = ms;
            self.next = (self.next + 1) % WINDOW;
        }
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Nearest-rank percentiles (each is a value that was actually observed), rounded to the
    /// microsecond; `None` before the first sample.
    pub fn percentiles(&self) -> Option<Percentiles> {
        if self.samples.is_empty() {
            return None;
        }
        let mut sorted = self.samples.clone();
        sorted.sort_unstable_by(f64::total_cmp);
        let rank = |p: f64| {
            let n = sorted.len();
            // Nearest rank: the smallest value with at least p of the samples at or below it.
            let idx = ((p * n as f64).ceil() as usize).clamp(1, n) - 1;
            (sorted[idx] * 1_000.0).round() / 1_000.0
        };
        Some(Percentiles {
            p50: rank(0.50),
            p95: rank(0.95),
            p99: rank(0.99),
            samples: sorted.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_window_has_no_percentiles() {
        assert_eq!(Window::default().percentiles(), None);
    }

    #[test]
    fn one_sample_is_every_percentile() {
        let mut w = Window::default();
        w.record(2.5);
        let p = w.percentiles().unwrap();
        assert_eq!((p.p50, p.p95, p.p99, p.samples), (2.5, 2.5, 2.5, 1));
    }

    #[test]
    fn nearest_rank_over_one_to_a_hundred() {
        let mut w = Window::default();
        // Recorded out of order: the window sorts a copy.
        for v in (1..=100).rev() {
            w.record(f64::from(v));
        }
        let p = w.percentiles().unwrap();
        assert_eq!((p.p50, p.p95, p.p99, p.samples), (50.0, 95.0, 99.0, 100));
    }

    #[test]
    fn old_samples_fall_out_once_full() {
        let mut w = Window::default();
        for _ in 0..WINDOW {
            w.record(1_000.0);
        }
        for _ in 0..WINDOW {
            w.record(1.0);
        }
        assert_eq!(w.len(), WINDOW);
        let p = w.percentiles().unwrap();
        assert_eq!((p.p50, p.p99), (1.0, 1.0), "only the newest samples count");

        // Half replaced: the upper half of the ranks is the slow sample again.
        for _ in 0..WINDOW / 2 {
            w.record(1_000.0);
        }
        let p = w.percentiles().unwrap();
        assert_eq!((p.p50, p.p95), (1.0, 1_000.0));
    }

    #[test]
    fn rounds_to_microseconds_and_ignores_non_finite() {
        let mut w = Window::default();
        w.record(0.123_456_7);
        w.record(f64::NAN);
        w.record(f64::INFINITY);
        let p = w.percentiles().unwrap();
        assert_eq!((p.p50, p.samples), (0.123, 1));
    }
}

//! Retry delays: `min(max, base * 2^(attempt-1))` plus up to 10% random jitter (DESIGN §3).
//!
//! Jitter spreads retries of messages that failed together (say, during an outage of something
//! the handler calls) so they do not all come back in the same instant.

use rand::Rng;

/// The largest share of the delay added as jitter.
const JITTER: f64 = 0.10;

/// Delay before retry number `attempt` (the attempt that just failed, 1-based), with jitter.
pub fn retry_delay_ms(attempt: u32, base_ms: u64, max_ms: u64) -> u64 {
    delay_with_jitter(attempt, base_ms, max_ms, rand::rng().random::<f64>())
}

/// The deterministic core: `jitter_unit` in `[0, 1)` picks how much of the 10% is added.
pub fn delay_with_jitter(attempt: u32, base_ms: u64, max_ms: u64, jitter_unit: f64) -> u64 {
    let exp = attempt.saturating_sub(1).min(63);
    let raw = base_ms.saturating_mul(1u64.checked_shl(exp).unwrap_or(u64::MAX));
    let capped = raw.min(max_ms);
    let jitter = (capped as f64 * JITTER * jitter_unit.clamp(0.0, 1.0)) as u64;
    capped.saturating_add(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_from_base_and_caps_at_max() {
        assert_eq!(delay_with_jitter(1, 1_000, 60_000, 0.0), 1_000);
        assert_eq!(delay_with_jitter(2, 1_000, 60_000, 0.0), 2_000);
        assert_eq!(delay_with_jitter(5, 1_000, 60_000, 0.0), 16_000);
        assert_eq!(delay_with_jitter(7, 1_000, 60_000, 0.0), 60_000);
        assert_eq!(delay_with_jitter(500, 1_000, 60_000, 0.0), 60_000);
    }

    #[test]
    fn jitter_adds_at_most_ten_percent() {
        assert_eq!(delay_with_jitter(1, 1_000, 60_000, 0.999_999), 1_099);
        assert_eq!(delay_with_jitter(3, 1_000, 60_000, 0.5), 4_200);
        for _ in 0..1_000 {
            let d = retry_delay_ms(3, 1_000, 60_000);
            assert!((4_000..=4_400).contains(&d), "{d}");
        }
    }

    #[test]
    fn zero_base_means_immediate_retry() {
        assert_eq!(delay_with_jitter(4, 0, 0, 0.7), 0);
    }

    #[test]
    fn huge_values_do_not_overflow() {
        assert_eq!(
            delay_with_jitter(64, u64::MAX / 2, u64::MAX / 2, 0.0),
            u64::MAX / 2
        );
        assert_eq!(delay_with_jitter(0, 10, 100, 0.0), 10);
    }
}

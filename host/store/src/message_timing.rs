//! When a new message becomes deliverable and when it expires: one rule for both stores.

use spool_model::{MessageState, NewMessage};

/// A new message's times, and so whether it starts scheduled or ready.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Timing {
    pub state: MessageState,
    pub available_at: i64,
    pub expires_at: Option<i64>,
}

/// An explicit time wins over a delay, an explicit deadline over a TTL, and a message's TTL
/// over its queue's `default_ttl`.
pub(crate) fn timing(m: &NewMessage, now: i64, default_ttl: Option<i64>) -> Timing {
    let ms = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let available_at = m
        .available_at
        .unwrap_or_else(|| now.saturating_add(ms(m.delay_ms.unwrap_or(0))));
    let state = if available_at > now {
        MessageState::Scheduled
    } else {
        MessageState::Ready
    };
    // A TTL counts from when the message becomes deliverable: a delayed message with a TTL
    // shorter than its delay would otherwise always expire unseen.
    let expires_at = m.expires_at.or_else(|| {
        m.ttl_ms
            .map(ms)
            .or(default_ttl)
            .map(|t| available_at.max(now).saturating_add(t))
    });
    Timing {
        state,
        available_at,
        expires_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ttl_counts_from_when_the_message_becomes_deliverable() {
        let delayed = NewMessage {
            delay_ms: Some(500),
            ttl_ms: Some(100),
            ..NewMessage::default()
        };
        let t = timing(&delayed, 1_000, Some(9_999));
        assert_eq!(
            t,
            Timing {
                state: MessageState::Scheduled,
                available_at: 1_500,
                expires_at: Some(1_600)
            }
        );
        let plain = NewMessage::default();
        let t = timing(&plain, 1_000, Some(50));
        assert_eq!((t.state, t.expires_at), (MessageState::Ready, Some(1_050)));
        let explicit = NewMessage {
            available_at: Some(10),
            delay_ms: Some(5_000),
            expires_at: Some(20),
            ..NewMessage::default()
        };
        let t = timing(&explicit, 1_000, None);
        assert_eq!(
            (t.state, t.available_at, t.expires_at),
            (MessageState::Ready, 10, Some(20))
        );
    }
}

//! A queue's circuit breaker: after `breaker_failures` consecutive failed deliveries the queue
//! stops claiming for a cool-down, then lets one message through (half-open); its success
//! closes the breaker, its failure opens it again for twice the cool-down, up to
//! `breaker_max_cooldown_ms`.
//!
//! The point is to stop spending attempts (and filling the dead-letter queue) while every
//! delivery fails for a reason outside the messages: a broken deploy, a dependency that is down.
//! So only failures of the handler count (trap, fuel, timeout, memory, a missing, wrong or
//! unloadable plugin, a host failure to run it); a handler's own `retry` or `dead-letter` is a
//! decision about one message and neither counts nor resets the count. An ack resets it.
//!
//! The state is this host's, in memory: every host of a shared database has its own, and a
//! restart starts closed. The state machine is plain data driven by the caller's clock (Unix
//! milliseconds passed in), so it is tested without sleeping; `worker.rs` owns the claiming.

use std::sync::Mutex;

use tokio::sync::Notify;

use crate::model::{ErrorCategory, MessageId, QueueConfig};

/// The three states, as the API, the CLI and `/metrics` name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Claiming as usual.
    Closed,
    /// Not claiming until the cool-down ends.
    Open,
    /// One message (the probe) is let through; its outcome decides.
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }

    /// The value of the `spool_queue_breaker_open` gauge.
    pub fn gauge(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::Open => 1,
            BreakerState::HalfOpen => 2,
        }
    }
}

/// What a delivery tells the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The handler acked.
    Success,
    /// The handler could not do its job (the category says why).
    Failure(ErrorCategory),
    /// Nothing about the handler's health: it asked to retry or dead-lettered the message
    /// itself, or shutdown stopped the call.
    Neutral,
}

/// The thresholds, from the queue's config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Consecutive failures that open the breaker; 0 disables it.
    pub failures: u32,
    pub cooldown_ms: u64,
    pub max_cooldown_ms: u64,
}

impl Policy {
    pub fn of(config: &QueueConfig) -> Self {
        Policy {
            failures: config.breaker_failures,
            cooldown_ms: config.breaker_cooldown_ms,
            // Validation keeps max >= base; the max() keeps a doubling sane regardless.
            max_cooldown_ms: config
                .breaker_max_cooldown_ms
                .max(config.breaker_cooldown_ms),
        }
    }
}

/// What the claimer may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Claim as usual.
    All,
    /// Claim exactly one message, the probe, and report it with [`Breaker::probe_claimed`].
    Probe,
    /// Claim nothing; look again at this time (Unix ms), or when woken (`None`: only when
    /// woken, since a probe is out).
    Wait(Option<i64>),
}

/// A change of state worth a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Opened {
        failures: u32,
        cooldown_ms: u64,
        category: ErrorCategory,
    },
    Closed,
}

/// A breaker's state as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BreakerSnapshot {
    /// `failures` of the policy: 0 means the breaker is off.
    pub threshold: u32,
    pub state: BreakerState,
    pub consecutive_failures: u32,
    /// When it last opened (set while open or half-open).
    pub opened_at_ms: Option<i64>,
    /// When the cool-down ends (set while open).
    pub retry_at_ms: Option<i64>,
    /// The cool-down it is in (open) or would be in if it opened now.
    pub cooldown_ms: u64,
    /// Times it opened on this host since the queue's claimer started.
    pub times_opened: u64,
    /// The category of the last failure counted.
    pub last_failure: Option<ErrorCategory>,
}

/// The state machine. Every method takes the current time; none reads a clock.
#[derive(Debug, Clone)]
pub struct Breaker {
    policy: Policy,
    state: BreakerState,
    consecutive: u32,
    /// The cool-down of the current (or next) opening.
    cooldown_ms: u64,
    opened_at: Option<i64>,
    retry_at: Option<i64>,
    /// The message let through while half-open, once claimed.
    probe: Option<MessageId>,
    times_opened: u64,
    last_failure: Option<ErrorCategory>,
}

impl Breaker {
    pub fn new(policy: Policy) -> Self {
        Breaker {
            policy,
            state: BreakerState::Closed,
            consecutive: 0,
            cooldown_ms: policy.cooldown_ms,
            opened_at: None,
            retry_at: None,
            probe: None,
            times_opened: 0,
            last_failure: None,
        }
    }

    /// The queue's config changed. Turning the breaker off closes it; new cool-downs apply
    /// from the next opening (the current one keeps its end).
    pub fn set_policy(&mut self, policy: Policy) -> Option<Transition> {
        if policy == self.policy {
            return None;
        }
        self.policy = policy;
        if policy.failures == 0 {
            let was_closed = self.state == BreakerState::Closed;
            self.close();
            self.consecutive = 0;
            return (!was_closed).then_some(Transition::Closed);
        }
        self.cooldown_ms = self
            .cooldown_ms
            .clamp(policy.cooldown_ms, policy.max_cooldown_ms);
        if self.state == BreakerState::Closed {
            self.cooldown_ms = policy.cooldown_ms;
        }
        None
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// What the claimer may claim at `now`. Moves an open breaker whose cool-down is over to
    /// half-open.
    pub fn admit(&mut self, now: i64) -> Admit {
        match self.state {
            BreakerState::Closed => Admit::All,
            BreakerState::Open => match self.retry_at {
                Some(at) if now < at => Admit::Wait(Some(at)),
                _ => {
                    self.state = BreakerState::HalfOpen;
                    self.retry_at = None;
                    self.probe = None;
                    Admit::Probe
                }
            },
            BreakerState::HalfOpen if self.probe.is_some() => Admit::Wait(None),
            BreakerState::HalfOpen => Admit::Probe,
        }
    }

    /// The claimer leased `id` as the probe.
    pub fn probe_claimed(&mut self, id: MessageId) {
        if self.state == BreakerState::HalfOpen {
            self.probe = Some(id);
        }
    }

    /// `id` went back to the queue without being delivered. If it was the probe, another one
    /// may be claimed.
    pub fn released(&mut self, id: MessageId) {
        if self.probe == Some(id) {
            self.probe = None;
        }
    }

    /// Whether a worker may start message `id` now. While open nothing starts; while half-open
    /// only the probe does. (Messages claimed before it opened are released instead, so they
    /// spend no attempt.)
    pub fn admits(&self, id: MessageId) -> bool {
        match self.state {
            BreakerState::Closed => true,
            BreakerState::Open => false,
            BreakerState::HalfOpen => self.probe == Some(id),
        }
    }

    /// The delivery of `id` ended with `verdict` at `now`.
    ///
    /// While open, outcomes are of calls that started before it opened: they change nothing.
    /// While half-open only the probe's outcome counts; a neutral one lets another probe
    /// through.
    pub fn record(&mut self, id: MessageId, verdict: Verdict, now: i64) -> Option<Transition> {
        if self.policy.failures == 0 {
            return None;
        }
        match self.state {
            BreakerState::Open => None,
            BreakerState::HalfOpen => {
                if self.probe != Some(id) {
                    return None;
                }
                self.probe = None;
                match verdict {
                    Verdict::Success => {
                        self.close();
                        self.consecutive = 0;
                        Some(Transition::Closed)
                    }
                    Verdict::Failure(category) => {
                        self.consecutive = self.consecutive.saturating_add(1);
                        self.last_failure = Some(category);
                        self.cooldown_ms = self
                            .cooldown_ms
                            .saturating_mul(2)
                            .min(self.policy.max_cooldown_ms);
                        Some(self.open(now, category))
                    }
                    Verdict::Neutral => None,
                }
            }
            BreakerState::Closed => match verdict {
                Verdict::Success => {
                    self.consecutive = 0;
                    None
                }
                Verdict::Neutral => None,
                Verdict::Failure(category) => {
                    self.consecutive = self.consecutive.saturating_add(1);
                    self.last_failure = Some(category);
                    (self.consecutive >= self.policy.failures).then(|| self.open(now, category))
                }
            },
        }
    }

    /// Closes the breaker by hand; returns whether it was not closed.
    pub fn reset(&mut self) -> bool {
        let was_closed = self.state == BreakerState::Closed;
        self.close();
        self.consecutive = 0;
        !was_closed
    }

    pub fn snapshot(&self) -> BreakerSnapshot {
        BreakerSnapshot {
            threshold: self.policy.failures,
            state: self.state,
            consecutive_failures: self.consecutive,
            opened_at_ms: self.opened_at,
            retry_at_ms: self.retry_at,
            cooldown_ms: self.cooldown_ms,
            times_opened: self.times_opened,
            last_failure: self.last_failure,
        }
    }

    fn open(&mut self, now: i64, category: ErrorCategory) -> Transition {
        self.state = BreakerState::Open;
        self.opened_at = Some(now);
        self.retry_at =
            Some(now.saturating_add(i64::try_from(self.cooldown_ms).unwrap_or(i64::MAX)));
        self.probe = None;
        self.times_opened += 1;
        Transition::Opened {
            failures: self.consecutive,
            cooldown_ms: self.cooldown_ms,
            category,
        }
    }

    fn close(&mut self) {
        self.state = BreakerState::Closed;
        self.opened_at = None;
        self.retry_at = None;
        self.probe = None;
        self.cooldown_ms = self.policy.cooldown_ms;
    }
}

/// A queue's breaker as the claimer, its workers and the API share it.
pub(crate) struct QueueBreaker {
    pub(crate) machine: Mutex<Breaker>,
    /// Wakes the claimer when the state changes (opened, closed, reset).
    pub(crate) changed: Notify,
}

impl QueueBreaker {
    pub(crate) fn new(config: &QueueConfig) -> Self {
        QueueBreaker {
            machine: Mutex::new(Breaker::new(Policy::of(config))),
            changed: Notify::new(),
        }
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.machine.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: u32 = 3;

    fn breaker() -> Breaker {
        Breaker::new(Policy {
            failures: K,
            cooldown_ms: 100,
            max_cooldown_ms: 350,
        })
    }

    fn fail() -> Verdict {
        Verdict::Failure(ErrorCategory::Trap)
    }

    /// Fails `K` deliveries at `now`, which opens a closed breaker.
    fn trip(b: &mut Breaker, now: i64) -> Option<Transition> {
        let mut last = None;
        for id in 0..i64::from(K) {
            last = b.record(id, fail(), now);
        }
        last
    }

    #[test]
    fn opens_after_k_consecutive_failures_and_an_ack_resets_the_count() {
        let mut b = breaker();
        b.record(1, fail(), 0);
        b.record(2, fail(), 0);
        b.record(3, Verdict::Success, 0);
        b.record(4, fail(), 0);
        b.record(5, Verdict::Neutral, 0);
        assert_eq!(b.record(6, fail(), 0), None);
        assert_eq!(b.state(), BreakerState::Closed, "an ack reset the count");
        assert_eq!(b.snapshot().consecutive_failures, 2, "neutral kept it");

        assert_eq!(
            b.record(7, Verdict::Failure(ErrorCategory::Timeout), 1_000),
            Some(Transition::Opened {
                failures: 3,
                cooldown_ms: 100,
                category: ErrorCategory::Timeout
            })
        );
        let s = b.snapshot();
        assert_eq!(s.state, BreakerState::Open);
        assert_eq!(s.opened_at_ms, Some(1_000));
        assert_eq!(s.retry_at_ms, Some(1_100));
        assert_eq!(s.times_opened, 1);
        assert_eq!(s.last_failure, Some(ErrorCategory::Timeout));
    }

    #[test]
    fn open_half_open_close() {
        let mut b = breaker();
        trip(&mut b, 0);
        assert_eq!(b.admit(50), Admit::Wait(Some(100)));
        assert!(!b.admits(42), "nothing starts while open");
        // Late outcomes of calls started before it opened change nothing.
        assert_eq!(b.record(40, Verdict::Success, 60), None);
        assert_eq!(b.state(), BreakerState::Open);

        assert_eq!(b.admit(100), Admit::Probe);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        b.probe_claimed(9);
        assert_eq!(b.admit(101), Admit::Wait(None), "one probe at a time");
        assert!(b.admits(9));
        assert!(!b.admits(10));
        assert_eq!(b.record(10, fail(), 102), None, "not the probe");
        assert_eq!(b.record(9, Verdict::Success, 103), Some(Transition::Closed));
        let s = b.snapshot();
        assert_eq!(s.state, BreakerState::Closed);
        assert_eq!(s.consecutive_failures, 0);
        assert_eq!((s.opened_at_ms, s.retry_at_ms), (None, None));
        assert_eq!(b.admit(104), Admit::All);
    }

    #[test]
    fn a_failed_probe_reopens_with_a_doubled_cooldown_up_to_the_cap() {
        let mut b = breaker();
        trip(&mut b, 0);
        let mut now = 0;
        for expected in [200, 350, 350] {
            now += 1_000;
            assert_eq!(b.admit(now), Admit::Probe);
            b.probe_claimed(now);
            match b.record(now, fail(), now) {
                Some(Transition::Opened { cooldown_ms, .. }) => assert_eq!(cooldown_ms, expected),
                other => panic!("expected a reopening, got {other:?}"),
            }
            assert_eq!(b.admit(now), Admit::Wait(Some(now + expected as i64)));
        }
        assert_eq!(b.snapshot().times_opened, 4);
        // Success closes, and the next opening starts from the first cool-down again.
        now += 1_000;
        b.admit(now);
        b.probe_claimed(1);
        b.record(1, Verdict::Success, now);
        assert_eq!(b.snapshot().cooldown_ms, 100);
        match trip(&mut b, now) {
            Some(Transition::Opened { cooldown_ms, .. }) => assert_eq!(cooldown_ms, 100),
            other => panic!("expected an opening, got {other:?}"),
        }
    }

    #[test]
    fn a_probe_that_says_nothing_or_goes_back_lets_another_through() {
        let mut b = breaker();
        trip(&mut b, 0);
        assert_eq!(b.admit(100), Admit::Probe);
        b.probe_claimed(1);
        assert_eq!(b.record(1, Verdict::Neutral, 101), None);
        assert_eq!(b.admit(102), Admit::Probe);
        b.probe_claimed(2);
        b.released(2);
        assert_eq!(b.admit(103), Admit::Probe);
        assert_eq!(b.state(), BreakerState::HalfOpen);
    }

    #[test]
    fn reset_closes_at_once() {
        let mut b = breaker();
        assert!(!b.reset(), "already closed");
        trip(&mut b, 0);
        assert!(b.reset());
        assert_eq!(b.admit(1), Admit::All);
        assert_eq!(b.snapshot().consecutive_failures, 0);
        assert_eq!(b.snapshot().times_opened, 1, "history stays");
    }

    #[test]
    fn disabled_never_opens_and_disabling_closes() {
        let mut b = Breaker::new(Policy {
            failures: 0,
            cooldown_ms: 100,
            max_cooldown_ms: 100,
        });
        for id in 0..100 {
            assert_eq!(b.record(id, fail(), 0), None);
        }
        assert_eq!(b.admit(0), Admit::All);

        let mut b = breaker();
        trip(&mut b, 0);
        let off = Policy {
            failures: 0,
            ..Policy::of(&QueueConfig::default())
        };
        assert_eq!(b.set_policy(off), Some(Transition::Closed));
        assert_eq!(b.admit(1), Admit::All);
    }
}

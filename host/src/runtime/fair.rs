//! Execution slots: how many plugin calls run at once, and which queue's call runs next.
//!
//! A call takes a slot before it starts (so its timeout does not run while it waits) and gives
//! it back when it ends. There are as many slots as plugin threads, so a call that holds one
//! has a thread to itself, and every queue is guaranteed its share:
//!
//! - A queue may start a call while it holds fewer than its share of the slots, the slots split
//!   evenly among the queues that are *active* (running or waiting, or done within
//!   [`ACTIVE_WINDOW`], which covers the gap between one delivery and the next).
//! - A freed slot goes to the waiting queue that holds the fewest; among equals, to the one that
//!   has waited longest (round robin). Within a queue, calls start in arrival order.
//! - At every epoch tick a running call checks whether a waiting queue holds fewer slots than
//!   its own; if so it hands its slot over and queues up again ([`preempt`]). That is what stops
//!   eight endless loops of one queue from keeping another queue's one call waiting.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

/// How long a queue that just finished a call still counts as active, keeping its share of the
/// slots for its next call.
pub const ACTIVE_WINDOW: Duration = Duration::from_millis(50);

/// The slots of one executor. Cheap to clone.
#[derive(Clone)]
pub struct ExecutionSlots {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ExecutionSlots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecutionSlots")
            .field("slots", &self.shared.slots)
            .finish_non_exhaustive()
    }
}

struct Shared {
    slots: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    running: usize,
    queues: HashMap<Arc<str>, QueueSlots>,
    /// Arrival order of waiters, across queues.
    seq: u64,
}

#[derive(Default)]
struct QueueSlots {
    running: usize,
    waiting: VecDeque<Waiter>,
    last_active: Option<Instant>,
}

struct Waiter {
    seq: u64,
    grant: oneshot::Sender<()>,
}

impl QueueSlots {
    fn is_active(&self, now: Instant) -> bool {
        self.running > 0
            || !self.waiting.is_empty()
            || self
                .last_active
                .is_some_and(|t| now.duration_since(t) < ACTIVE_WINDOW)
    }
}

impl State {
    /// Each active queue's share of `slots`, rounded up so no slot is left to nobody.
    fn share(&self, slots: usize, now: Instant) -> usize {
        let active = self.queues.values().filter(|q| q.is_active(now)).count();
        slots.div_ceil(active.max(1))
    }

    fn start(&mut self, queue: &str) {
        self.running += 1;
        if let Some(q) = self.queues.get_mut(queue) {
            q.running += 1;
        }
    }

    fn finish(&mut self, queue: &str, now: Instant) {
        self.running -= 1;
        if let Some(q) = self.queues.get_mut(queue) {
            q.running -= 1;
            q.last_active = Some(now);
        }
    }

    /// Hands free slots to waiters: the queue holding the fewest first, then the longest wait.
    fn dispatch(&mut self, slots: usize, now: Instant) {
        while self.running < slots {
            let share = self.share(slots, now);
            let next = self
                .queues
                .iter()
                .filter(|(_, q)| q.running < share)
                .filter_map(|(name, q)| Some((q.running, q.waiting.front()?.seq, name.clone())))
                .min();
            let Some((_, _, name)) = next else { break };
            let Some(waiter) = self
                .queues
                .get_mut(&name)
                .and_then(|q| q.waiting.pop_front())
            else {
                break;
            };
            self.start(&name);
            // A waiter that gave up (its call was cancelled) gives the slot straight back.
            if waiter.grant.send(()).is_err() {
                self.finish(&name, now);
            }
        }
        // Forget queues that have been idle for a while, so the map does not grow with every
        // queue that ever ran.
        self.queues.retain(|_, q| q.is_active(now));
    }

    /// Whether a call of `queue` holding a slot should hand it over: a queue holding fewer
    /// slots waits.
    fn should_yield(&self, queue: &str) -> bool {
        let Some(mine) = self.queues.get(queue) else {
            return false;
        };
        self.queues
            .values()
            .any(|q| !q.waiting.is_empty() && q.running < mine.running)
    }
}

impl ExecutionSlots {
    /// `slots` calls may run at once (at least one).
    pub fn new(slots: usize) -> ExecutionSlots {
        ExecutionSlots {
            shared: Arc::new(Shared {
                slots: slots.max(1),
                state: Mutex::new(State::default()),
            }),
        }
    }

    pub fn slots(&self) -> usize {
        self.shared.slots
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for a slot for a call of `queue`. The slot is held until the returned [`Slot`] is
    /// dropped; dropping this future while it waits gives up the place in line.
    pub async fn acquire(&self, queue: &str) -> Slot {
        let held = Arc::new(Held {
            slots: self.clone(),
            queue: Arc::from(queue),
            holding: AtomicBool::new(false),
        });
        held.acquire().await;
        Slot { held }
    }

    /// Calls running now, and of those `queue`'s (for tests and diagnostics).
    pub fn running(&self, queue: &str) -> (usize, usize) {
        let st = self.lock();
        (st.running, st.queues.get(queue).map_or(0, |q| q.running))
    }
}

/// A slot held by one call; given back on drop.
pub struct Slot {
    held: Arc<Held>,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("queue", &self.held.queue)
            .finish_non_exhaustive()
    }
}

impl Slot {
    /// Runs `call` holding this slot, letting the epoch ticks inside it hand the slot over to
    /// a queue that holds fewer (see [`preempt`]).
    pub async fn run<F: Future>(self, call: F) -> F::Output {
        let held = self.held.clone();
        let out = CURRENT.scope(held, call).await;
        drop(self);
        out
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.held.release();
    }
}

/// The state of one call's slot, shared with the epoch-tick hook of that call.
struct Held {
    slots: ExecutionSlots,
    queue: Arc<str>,
    /// False while the call is handed over and waits to get a slot back.
    holding: AtomicBool,
}

impl Held {
    async fn acquire(self: &Arc<Self>) {
        let (rx, seq) = {
            let slots = &self.slots.shared.slots;
            let mut st = self.slots.lock();
            let now = Instant::now();
            let share = {
                let q = st.queues.entry(self.queue.clone()).or_default();
                q.last_active = Some(now);
                st.share(*slots, now)
            };
            let q = &st.queues[&self.queue];
            if st.running < *slots && q.running < share && q.waiting.is_empty() {
                st.start(&self.queue);
                self.holding.store(true, Ordering::Release);
                return;
            }
            let (tx, rx) = oneshot::channel();
            st.seq += 1;
            let seq = st.seq;
            if let Some(q) = st.queues.get_mut(&self.queue) {
                q.waiting.push_back(Waiter { seq, grant: tx });
            }
            (rx, seq)
        };
        let mut waiting = Waiting {
            rx: Some(rx),
            seq,
            held: self.clone(),
        };
        if let Some(rx) = waiting.rx.as_mut() {
            // The sender lives in the queue until it is granted or the state is dropped with the
            // executor; either way the wait ends.
            let _ = rx.await;
        }
        waiting.rx = None;
        self.holding.store(true, Ordering::Release);
    }

    fn release(&self) {
        if self.holding.swap(false, Ordering::AcqRel) {
            let now = Instant::now();
            let mut st = self.slots.lock();
            st.finish(&self.queue, now);
            st.dispatch(self.slots.shared.slots, now);
        }
    }

    /// At an epoch tick: hand out slots left idle, and say whether this call should hand its
    /// own over.
    fn tick(&self) -> bool {
        let now = Instant::now();
        let mut st = self.slots.lock();
        st.dispatch(self.slots.shared.slots, now);
        st.should_yield(&self.queue)
    }
}

/// A place in line. Dropped while waiting (the call was cancelled), it leaves the line; if the
/// slot was granted but not yet taken, the slot goes back.
struct Waiting {
    rx: Option<oneshot::Receiver<()>>,
    seq: u64,
    held: Arc<Held>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else { return };
        rx.close();
        if rx.try_recv().is_ok() {
            self.held.holding.store(true, Ordering::Release);
            self.held.release();
            return;
        }
        let mut st = self.held.slots.lock();
        if let Some(q) = st.queues.get_mut(&self.held.queue) {
            q.waiting.retain(|w| w.seq != self.seq);
        }
    }
}

tokio::task_local! {
    /// The slot of the plugin call running in this task, for the epoch-tick hook.
    static CURRENT: Arc<Held>;
}

/// Called at every epoch tick of a running plugin call. Returns the future to yield on: one
/// that hands the call's slot over and waits to get one back when a queue holding fewer slots
/// is waiting, or `None` to yield as usual (so timeouts and other tasks get their turn).
pub fn preempt() -> Option<Pin<Box<dyn Future<Output = ()> + Send>>> {
    let held = CURRENT.try_with(Arc::clone).ok()?;
    if !held.tick() {
        return None;
    }
    Some(Box::pin(async move {
        held.release();
        held.acquire().await;
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now_or_never<F: Future>(f: F) -> Option<F::Output> {
        futures::FutureExt::now_or_never(f)
    }

    #[tokio::test]
    async fn a_lone_queue_may_use_every_slot_but_no_more() {
        let slots = ExecutionSlots::new(2);
        let a = slots.acquire("a").await;
        let b = slots.acquire("a").await;
        assert_eq!(slots.running("a"), (2, 2));
        let third = tokio::spawn({
            let slots = slots.clone();
            async move { slots.acquire("a").await }
        });
        tokio::task::yield_now().await;
        assert!(!third.is_finished());
        drop(a);
        let c = third.await.unwrap();
        assert_eq!(slots.running("a"), (2, 2));
        drop((b, c));
        assert_eq!(slots.running("a"), (0, 0));
    }

    #[tokio::test]
    async fn a_busy_queue_keeps_only_its_share_while_another_is_active() {
        let slots = ExecutionSlots::new(2);
        let busy = slots.acquire("busy").await;
        let other = slots.acquire("other").await;
        drop(other);
        // "other" just finished: it is still active, so "busy" may not take its slot ...
        assert!(now_or_never(slots.acquire("busy")).is_none());
        // ... but "other" gets it back at once.
        let other = now_or_never(slots.acquire("other")).expect("other's share is free");
        drop((busy, other));
    }

    #[tokio::test]
    async fn a_waiting_queue_holding_fewer_makes_the_busiest_yield() {
        let slots = ExecutionSlots::new(2);
        let first = slots.acquire("busy").await;
        let second = slots.acquire("busy").await;
        let held = second.held.clone();
        let waiter = tokio::spawn({
            let slots = slots.clone();
            async move { slots.acquire("other").await }
        });
        tokio::task::yield_now().await;
        assert!(
            held.tick(),
            "a queue holding both slots yields to one holding none"
        );
        held.release();
        let other = waiter.await.unwrap();
        assert_eq!(slots.running("other"), (2, 1));
        assert!(!first.held.tick(), "one slot each: nobody yields");
        drop((first, second, other));
        assert_eq!(slots.running("busy"), (0, 0));
    }

    #[tokio::test]
    async fn a_cancelled_wait_gives_its_place_and_slot_back() {
        let slots = ExecutionSlots::new(1);
        let a = slots.acquire("a").await;
        assert!(now_or_never(slots.acquire("a")).is_none());
        drop(a);
        assert_eq!(slots.running("a"), (0, 0));
        let b = now_or_never(slots.acquire("b")).expect("the cancelled waiter holds nothing");
        drop(b);
    }
}

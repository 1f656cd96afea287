//! Execution slots: how many plugin calls run at once, and which queue's call runs next.
//!
//! A call takes a slot before it starts (so its timeout does not run while it waits) and gives
//! it back when it ends. There are as many slots as plugin threads, so a call that holds one
//! has a thread to itself, and every queue is guaranteed its share:
//!
//! - Each queue has a *weight*: 1 for a healthy queue, down to [`MIN_WEIGHT`] for one whose
//!   slot time keeps ending in calls that achieved nothing (timeout, fuel, memory, trap: the
//!   caller says which, see [`Slot::run`]). It is a decaying measure ([`HALF_LIFE`]), so a
//!   demoted queue recovers as its calls succeed again, or as time passes.
//! - The slots are split among the queues that are *active* (running or waiting, or done within
//!   [`ACTIVE_WINDOW`], which covers the gap between one delivery and the next) in proportion
//!   to their weights. A queue may start a call while it holds fewer slots than its share
//!   rounded up, so one queue's share is not taken by another between two of its deliveries.
//! - Each active queue keeps a *balance*: the slot time it was entitled to minus what it held
//!   (bounded by [`MAX_BALANCE`]). A freed slot goes to the waiting queue with the highest
//!   balance; among equals, to the one that has waited longest. Within a queue, calls start in
//!   arrival order.
//! - At every epoch tick a running call checks whether a waiting queue below its share should
//!   have the slot: because the call's queue holds more than its share rounded up (it was
//!   alone a moment ago), or because the waiting queue's balance is ahead by more than
//!   [`SWITCH_MARGIN`]. If so it hands its slot over and queues up again ([`preempt`]). That is
//!   what stops eight endless loops of one queue from keeping another queue's one call waiting,
//!   and what gives a demoted queue its small share of the time, but no more.
//!
//! - A queue that mostly wastes its slot time (weight below [`WASTING_BELOW`]) never holds every
//!   slot, even alone: with two or more slots one always stays out of its reach. Its calls run
//!   on threads that fill a core each, and when every core runs one, a woken API or store
//!   thread waits for the kernel to take a core back — up to a scheduler slice, several
//!   milliseconds, whatever the plugin threads' nice value (measured with `perf sched`: the
//!   noisy bench's enqueue p99 was 3–4× its quiet value, and about equal with this cap).
//!
//! Any other queue alone may use every slot. Time is tokio's clock, so tests can pause it.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

/// How long a queue that just finished a call still counts as active, keeping its share of the
/// slots for its next call.
pub const ACTIVE_WINDOW: Duration = Duration::from_millis(50);

/// The weight of a queue whose slot time all ended in wasted calls, against 1 for a healthy
/// one: next to a healthy queue on two slots it gets about a ninth of the time.
pub const MIN_WEIGHT: f64 = 1.0 / 8.0;

/// Below this weight (more than about half of its recent slot time wasted) a queue may hold at
/// most all slots but one.
pub const WASTING_BELOW: f64 = 0.5;

/// Half-life of the measure of a queue's wasted slot time.
pub const HALF_LIFE: Duration = Duration::from_secs(1);

/// Healthy slot time every queue is credited with, so a single short failure (or a queue that
/// has only just started) does not demote it much.
const PRIOR: Duration = Duration::from_millis(10);

/// How far a queue's balance may run ahead of or behind its entitlement, so a queue that could
/// not use its share for a while does not then claim the slots for long.
pub const MAX_BALANCE: Duration = Duration::from_millis(50);

/// How much more balance a waiting queue must have than a running call's queue to take over
/// its slot at a tick; about one epoch tick, so calls are not handed back and forth at every
/// tick.
pub const SWITCH_MARGIN: Duration = Duration::from_millis(5);

/// Below this much decayed wasted time an idle queue's record is dropped.
const FORGET_BELOW: Duration = Duration::from_millis(1);

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
    /// Up to when the balances are brought.
    advanced: Option<Instant>,
}

#[derive(Default)]
struct QueueSlots {
    running: usize,
    waiting: VecDeque<Waiter>,
    last_active: Option<Instant>,
    waste: Waste,
    /// Its share of the slots since the last change (0 while inactive).
    share: f64,
    /// Its weight at the last change (1 until it has run).
    weight: Option<f64>,
    /// Slot time in seconds it was entitled to minus what it held, while active.
    balance: f64,
}

struct Waiter {
    seq: u64,
    /// Told when the slot was granted.
    grant: oneshot::Sender<Instant>,
}

/// A decaying measure of a queue's slot time: all of it, and the part held by calls that
/// achieved nothing. Seconds, decayed to `at`.
#[derive(Default)]
struct Waste {
    spent: f64,
    wasted: f64,
    at: Option<Instant>,
}

impl Waste {
    fn decay(&self, now: Instant) -> f64 {
        self.at.map_or(0.0, |at| {
            let halvings =
                now.saturating_duration_since(at).as_secs_f64() / HALF_LIFE.as_secs_f64();
            0.5f64.powf(halvings)
        })
    }

    fn record(&mut self, held: Duration, wasted: bool, now: Instant) {
        let decay = self.decay(now);
        let held = held.as_secs_f64();
        self.spent = self.spent * decay + held;
        self.wasted = self.wasted * decay + if wasted { held } else { 0.0 };
        self.at = Some(now);
    }

    /// 1 for a queue whose calls do what they are for, down to [`MIN_WEIGHT`] for one whose
    /// slot time all went to calls that ended in nothing.
    fn weight(&self, now: Instant) -> f64 {
        let decay = self.decay(now);
        let wasted = self.wasted * decay / (self.spent * decay + PRIOR.as_secs_f64());
        1.0 - wasted * (1.0 - MIN_WEIGHT)
    }

    fn is_forgotten(&self, now: Instant) -> bool {
        self.wasted * self.decay(now) < FORGET_BELOW.as_secs_f64()
    }
}

impl QueueSlots {
    fn is_active(&self, now: Instant) -> bool {
        self.running > 0
            || !self.waiting.is_empty()
            || self
                .last_active
                .is_some_and(|t| now.saturating_duration_since(t) < ACTIVE_WINDOW)
    }

    /// How many of `slots` it may hold: its share rounded up, at least one, and all but one
    /// while it wastes its time.
    fn cap(&self, slots: usize) -> usize {
        // The epsilon keeps an even split of 2 slots between 2 queues at 1 each.
        let cap = ((self.share - 1e-9).ceil() as usize).max(1);
        if self.is_wasting() {
            cap.min(slots - 1).max(1)
        } else {
            cap
        }
    }

    fn is_wasting(&self) -> bool {
        self.weight.is_some_and(|w| w < WASTING_BELOW)
    }
}

impl State {
    /// Credits each active queue with its share of the time since the last change and debits
    /// what it held. Called before anything changes who runs or who is active.
    fn advance(&mut self, now: Instant) {
        let elapsed = self
            .advanced
            .map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64());
        self.advanced = Some(now);
        let max = MAX_BALANCE.as_secs_f64();
        for q in self.queues.values_mut() {
            q.balance = if q.share > 0.0 {
                (q.balance + elapsed * (q.share - q.running as f64)).clamp(-max, max)
            } else {
                // A queue coming back from idle starts even, whatever it did before.
                0.0
            };
        }
    }

    /// Splits the slots among the active queues by weight.
    fn reweigh(&mut self, slots: usize, now: Instant) {
        let mut total = 0.0;
        for q in self.queues.values_mut() {
            let weight = q.waste.weight(now);
            q.weight = Some(weight);
            q.share = if q.is_active(now) { weight } else { 0.0 };
            total += q.share;
        }
        if total > 0.0 {
            let per_weight = slots as f64 / total;
            for q in self.queues.values_mut() {
                q.share *= per_weight;
            }
        }
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

    /// Hands free slots to waiters below their cap: the highest balance first, then the
    /// longest wait.
    fn dispatch(&mut self, slots: usize, now: Instant) {
        self.reweigh(slots, now);
        while self.running < slots {
            let next = self
                .queues
                .iter()
                .filter(|(_, q)| q.running < q.cap(slots))
                .filter_map(|(name, q)| Some((q.balance, q.waiting.front()?.seq, name)))
                .max_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1)))
                .map(|(_, _, name)| name.clone());
            let Some(name) = next else { break };
            let Some(waiter) = self
                .queues
                .get_mut(&name)
                .and_then(|q| q.waiting.pop_front())
            else {
                break;
            };
            self.start(&name);
            // A waiter that gave up (its call was cancelled) gives the slot straight back.
            if waiter.grant.send(now).is_err() {
                self.finish(&name, now);
            }
        }
        // Forget queues that have been idle for a while (once their waste has decayed), so
        // the map does not grow with every queue that ever ran.
        self.queues
            .retain(|_, q| q.is_active(now) || !q.waste.is_forgotten(now));
    }

    /// Whether a call of `queue` holding a slot should hand it over to a waiting queue below
    /// its cap: because `queue` holds more than its own cap, or because the waiting queue is
    /// owed clearly more time.
    fn should_yield(&self, queue: &str, slots: usize) -> bool {
        let Some(mine) = self.queues.get(queue) else {
            return false;
        };
        let over = mine.running > mine.cap(slots);
        if over && mine.is_wasting() {
            // Its cap keeps a core free of wasted work, whether or not anyone waits for it.
            return true;
        }
        let owed = mine.balance + SWITCH_MARGIN.as_secs_f64();
        self.queues.iter().any(|(name, q)| {
            **name != *queue
                && !q.waiting.is_empty()
                && q.running < q.cap(slots)
                && (over || q.balance > owed)
        })
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
            time: Mutex::new(HeldTime::default()),
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
    /// a queue that is owed it (see [`preempt`]). `wasted` tells from the call's output whether
    /// the slot time it held achieved nothing (the call was stopped or trapped); a queue whose
    /// calls keep wasting theirs gets a smaller share.
    pub async fn run<F: Future>(
        self,
        call: F,
        wasted: impl FnOnce(&F::Output) -> bool,
    ) -> F::Output {
        let out = CURRENT.scope(self.held.clone(), call).await;
        self.held.release(Some(wasted(&out)));
        out
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.held.release(None);
    }
}

/// The state of one call's slot, shared with the epoch-tick hook of that call.
struct Held {
    slots: ExecutionSlots,
    queue: Arc<str>,
    time: Mutex<HeldTime>,
}

#[derive(Default)]
struct HeldTime {
    /// When the slot now held was granted; `None` while the call is handed over and waits to
    /// get a slot back (or is done).
    since: Option<Instant>,
    /// Slot time held before `since`.
    used: Duration,
}

impl Held {
    fn time(&self) -> MutexGuard<'_, HeldTime> {
        self.time.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn acquire(self: &Arc<Self>) {
        let (rx, seq) = {
            let slots = self.slots.shared.slots;
            let mut st = self.slots.lock();
            let now = Instant::now();
            st.advance(now);
            st.queues.entry(self.queue.clone()).or_default().last_active = Some(now);
            st.dispatch(slots, now);
            let q = &st.queues[&self.queue];
            if st.running < slots && q.running < q.cap(slots) && q.waiting.is_empty() {
                st.start(&self.queue);
                self.time().since = Some(now);
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
            // A queue with waiters is active, so its line stays in the map until this is granted.
            if let Ok(granted) = rx.await {
                self.time().since = Some(granted);
            }
        }
        waiting.rx = None;
    }

    /// Gives the slot back if it is held; with a verdict (the call ended), records the call's
    /// slot time against its queue, wasted or not.
    fn release(&self, ended: Option<bool>) {
        let now = Instant::now();
        let (holding, used) = {
            let mut time = self.time();
            let since = time.since.take();
            if let Some(since) = since {
                time.used += now.saturating_duration_since(since);
            }
            (since.is_some(), time.used)
        };
        if !holding && ended.is_none() {
            return;
        }
        let mut st = self.slots.lock();
        st.advance(now);
        if holding {
            st.finish(&self.queue, now);
        }
        if let Some(wasted) = ended {
            // The call may have ended while handed over (its timeout fired meanwhile).
            st.queues
                .entry(self.queue.clone())
                .or_default()
                .waste
                .record(used, wasted, now);
        }
        st.dispatch(self.slots.shared.slots, now);
    }

    /// At an epoch tick: hand out slots left idle, and say whether this call should hand its
    /// own over.
    fn tick(&self) -> bool {
        let now = Instant::now();
        let mut st = self.slots.lock();
        st.advance(now);
        st.dispatch(self.slots.shared.slots, now);
        st.should_yield(&self.queue, self.slots.shared.slots)
    }
}

/// A place in line. Dropped while waiting (the call was cancelled), it leaves the line; if the
/// slot was granted but not yet taken, the slot goes back.
struct Waiting {
    rx: Option<oneshot::Receiver<Instant>>,
    seq: u64,
    held: Arc<Held>,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let Some(mut rx) = self.rx.take() else { return };
        rx.close();
        if let Ok(granted) = rx.try_recv() {
            self.held.time().since = Some(granted);
            self.held.release(None);
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
/// that hands the call's slot over and waits to get one back when a waiting queue is owed it,
/// or `None` to yield as usual (so timeouts and other tasks get their turn).
pub fn preempt() -> Option<Pin<Box<dyn Future<Output = ()> + Send>>> {
    let held = CURRENT.try_with(Arc::clone).ok()?;
    if !held.tick() {
        return None;
    }
    Some(Box::pin(async move {
        held.release(None);
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
        held.release(None);
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

    /// Epoch tick of the simulated calls, as the engine's.
    const TICK: Duration = Duration::from_millis(5);
    /// Wall-clock timeout of the simulated calls.
    const TIMEOUT: Duration = Duration::from_millis(100);

    /// One simulated plugin call: it needs `work` of slot time, offers its slot at every tick
    /// like a real call's epoch hook, and is stopped (wasted) after [`TIMEOUT`] however long it
    /// waited meanwhile. Returns whether it finished.
    async fn call(slots: &ExecutionSlots, queue: &str, work: Duration) -> bool {
        let slot = slots.acquire(queue).await;
        let body = async {
            let mut left = work;
            while !left.is_zero() {
                let step = left.min(TICK);
                tokio::time::sleep(step).await;
                left -= step;
                if step == TICK
                    && let Some(handover) = preempt()
                {
                    handover.await;
                }
            }
        };
        slot.run(tokio::time::timeout(TIMEOUT, body), |r| r.is_err())
            .await
            .is_ok()
    }

    /// `workers` callers of `queue`, each calling one call after the other until `until`;
    /// `work` says how much slot time a call starting at an instant needs. Returns when each
    /// call ended and whether it finished.
    fn workers(
        slots: &ExecutionSlots,
        queue: &'static str,
        workers: usize,
        until: Instant,
        work: fn(Duration) -> Duration,
    ) -> Vec<tokio::task::JoinHandle<Vec<(Instant, bool)>>> {
        let start = Instant::now();
        (0..workers)
            .map(|_| {
                let slots = slots.clone();
                tokio::spawn(async move {
                    let mut ends = Vec::new();
                    while Instant::now() < until {
                        let ok = call(&slots, queue, work(start.elapsed())).await;
                        ends.push((Instant::now(), ok));
                    }
                    ends
                })
            })
            .collect()
    }

    /// The calls of `tasks` that finished within `from..to` of `start`.
    async fn finished(
        tasks: Vec<tokio::task::JoinHandle<Vec<(Instant, bool)>>>,
        start: Instant,
        from: Duration,
        to: Duration,
    ) -> (usize, usize) {
        let (mut ok, mut wasted) = (0, 0);
        for t in tasks {
            for (at, done) in t.await.unwrap() {
                if (start + from..start + to).contains(&at) {
                    if done {
                        ok += 1;
                    } else {
                        wasted += 1;
                    }
                }
            }
        }
        (ok, wasted)
    }

    const SHORT: Duration = Duration::from_millis(1);
    const ENDLESS: Duration = Duration::from_secs(3600);

    #[tokio::test(start_paused = true)]
    async fn a_healthy_queue_gets_more_than_an_even_split_next_to_one_that_wastes_its_time() {
        let slots = ExecutionSlots::new(2);
        let start = Instant::now();
        let until = start + Duration::from_secs(10);
        let bad = workers(&slots, "bad", 8, until, |_| ENDLESS);
        let good = workers(&slots, "good", 8, until, |_| SHORT);
        let from = Duration::from_secs(2);
        let to = Duration::from_secs(10);
        let (good_ok, _) = finished(good, start, from, to).await;
        let (_, bad_stopped) = finished(bad, start, from, to).await;
        // An even split would give "good" one slot: 8 s of 1 ms calls, 8,000.
        assert!(good_ok > 12_000, "good finished {good_ok} calls in 8 s");
        assert!(
            bad_stopped > 20,
            "bad had {bad_stopped} calls stopped in 8 s"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_demoted_queue_recovers_once_its_calls_succeed() {
        let slots = ExecutionSlots::new(2);
        let start = Instant::now();
        let until = start + Duration::from_secs(12);
        // Loops for 4 s, then calls that finish.
        let flaky = workers(&slots, "flaky", 8, until, |t| {
            if t < Duration::from_secs(4) {
                ENDLESS
            } else {
                SHORT
            }
        });
        let good = workers(&slots, "good", 8, until, |_| SHORT);
        let (from, to) = (Duration::from_secs(9), Duration::from_secs(12));
        let (good_ok, _) = finished(good, start, from, to).await;
        let (flaky_ok, flaky_stopped) = finished(flaky, start, from, to).await;
        assert_eq!(flaky_stopped, 0);
        // Even again: one slot each, 3,000 calls in 3 s.
        assert!(
            flaky_ok * 10 > good_ok * 9,
            "flaky finished {flaky_ok} calls, good {good_ok}"
        );
    }

    /// Demotes `queue` on `slots` with 20 calls that all time out.
    async fn demote(slots: &ExecutionSlots, queue: &str) {
        for _ in 0..20 {
            let slot = slots.acquire(queue).await;
            tokio::time::advance(TIMEOUT).await;
            slot.run(async {}, |_| true).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_wasting_queue_alone_leaves_one_slot_free() {
        let slots = ExecutionSlots::new(3);
        demote(&slots, "bad").await;
        let a = now_or_never(slots.acquire("bad")).expect("a free slot");
        let b = now_or_never(slots.acquire("bad")).expect("a second free slot");
        assert!(now_or_never(slots.acquire("bad")).is_none());
        assert_eq!(slots.running("bad"), (2, 2));
        // The slot kept free is there for a healthy queue.
        let good = now_or_never(slots.acquire("good")).expect("the slot kept free");
        drop((a, b, good));
    }

    #[tokio::test(start_paused = true)]
    async fn a_wasting_queue_on_one_slot_still_runs() {
        let slots = ExecutionSlots::new(1);
        demote(&slots, "bad").await;
        let only = now_or_never(slots.acquire("bad")).expect("the only slot");
        drop(only);
    }

    #[tokio::test(start_paused = true)]
    async fn a_queue_demoted_while_holding_every_slot_hands_one_back_at_a_tick() {
        let slots = ExecutionSlots::new(2);
        let start = Instant::now();
        // Eight endless callers: the first calls hold both slots before any has been stopped.
        let bad = workers(&slots, "bad", 8, start + Duration::from_secs(3), |_| {
            ENDLESS
        });
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut most = 0;
        for _ in 0..100 {
            tokio::time::sleep(TICK).await;
            most = most.max(slots.running("bad").1);
        }
        assert_eq!(most, 1, "a wasting queue held {most} of 2 slots");
        finished(bad, start, Duration::ZERO, Duration::from_secs(3)).await;
    }
}

//! One queue on this host: a claimer that keeps a bounded buffer of leased messages, and
//! `concurrency` workers that take messages from it and deliver them.
//!
//! Claiming in batches is what makes a queue fast (one transaction leases many messages), but a
//! message leased and left waiting in a buffer burns its lease. So the buffer adapts: the
//! claimer always claims for idle workers, and beyond that prefetches only as many messages as
//! the workers will start within a quarter of the lease, judged from how long handlers take.
//! Slow handlers get no prefetch at all; fast ones get up to the store's
//! [`ClaimSizes::max_prefetch`].
//!
//! An estimate can be wrong (fast messages, then slow ones), so the claimer also watches the
//! buffered leases: a message still buffered when half its lease is gone goes back to the queue
//! (released: no attempt spent), all such messages in one store call. Releasing rather than
//! renewing lets another host, or this one later, take a message this host cannot start now.
//! A buffered message is taken out of the buffer under its lock, by a worker or by the
//! claimer, so never both.
//!
//! The queue's circuit breaker (`breaker.rs`) gates both sides: while it is open the claimer
//! claims nothing and releases what is buffered, and a worker that takes a buffered message
//! anyway releases it instead of starting it, so no attempt is spent; while it is half-open the
//! claimer claims one message, the probe, and only the probe may start.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use super::breaker::{Admit, BreakerState, Policy, QueueBreaker, Transition};
use super::settler::{self, Done};
use super::{Inner, WaitCause, Waiting, delivery};
use crate::model::{Claimed, QueueConfig, Settle, Settlement, now_ms};
use crate::plugins::RegistryError;
use crate::runtime::World;
use crate::store::ClaimSizes;

/// An idle claimer looks at the store at least this often even without a signal, as a backstop
/// (e.g. a lease recovered by another host of a shared database).
const IDLE_RECHECK: Duration = Duration::from_secs(1);
/// Pause after a store error before trying again.
const ERROR_BACKOFF: Duration = Duration::from_millis(500);

/// What the claimer and the workers of one queue share.
struct Lane {
    buffer: Mutex<VecDeque<Claimed>>,
    /// One permit per buffered message; closed when the queue stops.
    items: Semaphore,
    /// Workers signal here after taking a message, so the claimer can top the buffer up.
    room: Notify,
    in_flight: AtomicUsize,
    /// Live workers.
    workers: AtomicUsize,
    /// Moving average of handler time in microseconds (0 = nothing measured yet).
    handler_us: AtomicU64,
    breaker: Arc<QueueBreaker>,
    /// The store's bounds on one claim (so a huge concurrency does not turn into one giant
    /// transaction) and on messages leased but not yet started.
    sizes: ClaimSizes,
}

impl Lane {
    fn buffered(&self) -> usize {
        self.buffer.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// How long until the first buffered message must go back (`IDLE_RECHECK` when none is
    /// buffered).
    fn until_release(&self, config: &QueueConfig) -> Duration {
        let buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        match buffer.iter().map(|m| m.lease_expires_at).min() {
            Some(expires) => {
                let due = release_at(expires, config);
                Duration::from_millis((due - now_ms()).max(0) as u64)
            }
            None => IDLE_RECHECK,
        }
    }

    /// Takes out of the buffer every message the breaker does not let start now (all of them
    /// while it is open, all but the probe while half-open), with their permits where free.
    fn take_unadmitted(&self) -> Vec<Claimed> {
        let out: Vec<Claimed> = {
            let mut buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
            let breaker = self.breaker.lock();
            let (out, keep): (VecDeque<Claimed>, VecDeque<Claimed>) = std::mem::take(&mut *buffer)
                .into_iter()
                .partition(|m| !breaker.admits(m.id));
            *buffer = keep;
            Vec::from(out)
        };
        for _ in 0..out.len() {
            match self.items.try_acquire() {
                Ok(p) => p.forget(),
                Err(_) => break,
            }
        }
        out
    }

    /// Takes out of the buffer every message due to go back by now. Their permits are taken
    /// too where still free; a worker already woken for one finds another message or none.
    fn take_due(&self, config: &QueueConfig) -> Vec<Claimed> {
        let now = now_ms();
        let due: Vec<Claimed> = {
            let mut buffer = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
            let (due, keep): (VecDeque<Claimed>, VecDeque<Claimed>) = std::mem::take(&mut *buffer)
                .into_iter()
                .partition(|m| release_at(m.lease_expires_at, config) <= now);
            *buffer = keep;
            Vec::from(due)
        };
        for _ in 0..due.len() {
            match self.items.try_acquire() {
                Ok(p) => p.forget(),
                Err(_) => break,
            }
        }
        due
    }

    /// The handler-time estimate let messages wait too long: prefetch nothing more until
    /// handlers prove fast again.
    fn distrust_estimate(&self, config: &QueueConfig) {
        let lease_us = config.lease_ms.saturating_mul(1_000);
        self.handler_us.fetch_max(lease_us, Ordering::Relaxed);
    }

    fn record(&self, took: Duration) {
        let sample = (took.as_micros() as u64).max(1);
        let old = self.handler_us.load(Ordering::Relaxed);
        let new = if old == 0 {
            sample
        } else {
            (old * 7 + sample) / 8
        };
        self.handler_us.store(new, Ordering::Relaxed);
    }

    /// How many messages may wait in the buffer: as many as the workers start within a quarter
    /// of the lease at the measured handler speed.
    fn prefetch(&self, config: &QueueConfig) -> usize {
        let us = self.handler_us.load(Ordering::Relaxed);
        if us == 0 {
            return 0;
        }
        let budget_us = config.lease_ms.saturating_mul(1_000) / 4;
        let n = (config.concurrency as u64).saturating_mul(budget_us) / us;
        (n as usize).min(self.sizes.max_prefetch)
    }
}

/// When a buffered message whose lease ends at `lease_expires_at` goes back: with half its
/// lease left, so a worker that starts it just before still renews it in time (deliveries renew
/// every third of the lease, and sooner when little is left).
fn release_at(lease_expires_at: i64, config: &QueueConfig) -> i64 {
    lease_expires_at - (config.lease_ms / 2) as i64
}

pub(super) async fn run(
    inner: Arc<Inner>,
    queue: String,
    mut config_rx: watch::Receiver<Arc<QueueConfig>>,
) {
    let signal = inner.store.signals().get(&queue);
    let mut plugins_rx = inner.plugins.subscribe();
    let mut config = config_rx.borrow_and_update().clone();
    let lane = Arc::new(Lane {
        buffer: Mutex::new(VecDeque::new()),
        items: Semaphore::new(0),
        room: Notify::new(),
        in_flight: AtomicUsize::new(0),
        workers: AtomicUsize::new(0),
        handler_us: AtomicU64::new(0),
        breaker: Arc::new(QueueBreaker::new(&config)),
        sizes: inner.store.claim_sizes(),
    });
    inner.add_breaker(&queue, lane.breaker.clone());
    let (done_tx, done_rx) = mpsc::unbounded_channel();
    let settler = tokio::spawn(settler::run(inner.clone(), done_rx));
    let mut workers = JoinSet::new();
    spawn_workers(
        &inner,
        &lane,
        &config_rx,
        &done_tx,
        &mut workers,
        config.concurrency,
    );
    // The reason the queue is not being consumed, logged once per change.
    let mut idle_reason: Option<String> = None;
    tracing::debug!(queue = %queue, concurrency = config.concurrency, "queue started");

    loop {
        // A closed config channel means the queue was deleted (`Dispatcher::queue_deleted`).
        if inner.stop.is_cancelled() || config_rx.has_changed().is_err() {
            break;
        }
        // `changed()` below marks the value seen, so compare instead of asking `has_changed`.
        if *config_rx.borrow() != config {
            config = config_rx.borrow_and_update().clone();
            let turned_off = lane.breaker.lock().set_policy(Policy::of(&config));
            if turned_off.is_some() {
                tracing::info!(queue = %queue, "circuit breaker turned off; claiming again");
            }
            spawn_workers(
                &inner,
                &lane,
                &config_rx,
                &done_tx,
                &mut workers,
                config.concurrency,
            );
        }

        if let Some(waiting) = not_consumable(&inner, &config).await {
            if idle_reason.as_deref() != Some(waiting.reason.as_str()) {
                // Paused or handler-less queues are that way on purpose; a missing, wrong or
                // unloadable plugin is a mistake someone should see.
                let reason = &waiting.reason;
                let cause = waiting.cause.as_str();
                if waiting.cause.is_fault() {
                    tracing::warn!(queue = %queue, cause, reason = %reason, "queue is not being consumed");
                } else {
                    tracing::info!(queue = %queue, cause, reason = %reason, "queue is not being consumed");
                }
                idle_reason = Some(waiting.reason.clone());
                inner.set_waiting(&queue, Some(waiting));
            }
            release_due(&inner, &queue, &lane, &config).await;
            tokio::select! {
                _ = inner.stop.cancelled() => break,
                changed = config_rx.changed() => if changed.is_err() { break },
                _ = plugins_rx.changed() => {}
                _ = tokio::time::sleep(lane.until_release(&config)) => {}
            }
            continue;
        }
        if idle_reason.take().is_some() {
            inner.set_waiting(&queue, None);
            tracing::info!(queue = %queue, "queue is being consumed again");
        }
        release_due(&inner, &queue, &lane, &config).await;

        let admit = {
            let mut breaker = lane.breaker.lock();
            let was = breaker.state();
            let admit = breaker.admit(now_ms());
            if was == BreakerState::Open && admit == Admit::Probe {
                tracing::info!(queue = %queue, "circuit breaker half-open: its cool-down is over; letting one message through");
            }
            admit
        };
        if let Admit::Wait(until) = admit {
            release_unadmitted(&inner, &queue, &lane).await;
            let wait = until
                .map(|at| Duration::from_millis((at - now_ms()).max(0) as u64))
                .unwrap_or(IDLE_RECHECK);
            tokio::select! {
                _ = inner.stop.cancelled() => break,
                changed = config_rx.changed() => if changed.is_err() { break },
                _ = lane.breaker.changed.notified() => {}
                _ = tokio::time::sleep(wait.min(lane.until_release(&config))) => {}
            }
            continue;
        }
        let probe = admit == Admit::Probe;

        let buffered = lane.buffered();
        let idle =
            (config.concurrency as usize).saturating_sub(lane.in_flight.load(Ordering::Relaxed));
        let prefetch = lane.prefetch(&config);
        let want = if probe {
            // Exactly one message, and only once a worker is free to start it at once.
            usize::from(idle > 0 && buffered == 0)
        } else {
            (idle + prefetch)
                .saturating_sub(buffered)
                .min(lane.sizes.max_claim)
        };
        // Top up only once the buffer has run half down, so claims come in useful batches.
        if want == 0 || buffered > prefetch / 2 {
            tokio::select! {
                _ = inner.stop.cancelled() => break,
                _ = lane.room.notified() => {}
                _ = config_rx.changed() => {}
                _ = lane.breaker.changed.notified() => {}
                _ = tokio::time::sleep(lane.until_release(&config)) => {}
            }
            continue;
        }

        let batch = match inner
            .store
            .claim(&queue, want as u32, config.lease_ms)
            .await
        {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(queue = %queue, error = %e, "claim failed; retrying");
                tokio::select! {
                    _ = inner.stop.cancelled() => break,
                    _ = tokio::time::sleep(ERROR_BACKOFF) => {}
                }
                continue;
            }
        };

        if batch.messages.is_empty() {
            let wait = batch
                .next_due_at
                .map(|due| Duration::from_millis((due - now_ms()).max(0) as u64))
                .unwrap_or(IDLE_RECHECK)
                .min(IDLE_RECHECK);
            tokio::select! {
                _ = inner.stop.cancelled() => break,
                _ = signal.notified() => {}
                _ = config_rx.changed() => {}
                _ = lane.breaker.changed.notified() => {}
                _ = tokio::time::sleep(wait.min(lane.until_release(&config))) => {}
            }
            continue;
        }
        if probe && let Some(m) = batch.messages.first() {
            // Before it is buffered, so the worker that takes it finds it admitted.
            lane.breaker.lock().probe_claimed(m.id);
        }
        let n = batch.messages.len();
        lane.buffer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(batch.messages);
        lane.items.add_permits(n);
    }

    // Stopping: workers finish what they hold (the dispatcher aborts them after the drain
    // timeout); what is still buffered was never started and goes back at once.
    lane.items.close();
    while workers.join_next().await.is_some() {}
    drop(done_tx);
    let _ = settler.await;
    release_buffered(&inner, &queue, &lane).await;
    inner.remove_breaker(&queue, &lane.breaker);
    tracing::debug!(queue = %queue, "queue stopped");
}

/// Starts workers up to `concurrency`. Workers above a lowered concurrency notice and leave.
fn spawn_workers(
    inner: &Arc<Inner>,
    lane: &Arc<Lane>,
    config_rx: &watch::Receiver<Arc<QueueConfig>>,
    done: &mpsc::UnboundedSender<Done>,
    workers: &mut JoinSet<()>,
    concurrency: u32,
) {
    while workers.try_join_next().is_some() {}
    while lane.workers.load(Ordering::Acquire) < concurrency as usize {
        lane.workers.fetch_add(1, Ordering::AcqRel);
        workers.spawn_on(
            worker(inner.clone(), lane.clone(), config_rx.clone(), done.clone()),
            &inner.plugin_threads,
        );
    }
}

async fn worker(
    inner: Arc<Inner>,
    lane: Arc<Lane>,
    mut config_rx: watch::Receiver<Arc<QueueConfig>>,
    done: mpsc::UnboundedSender<Done>,
) {
    let mut warm = None;
    loop {
        // Leave if there are more workers than the concurrency now allows.
        let allowed = config_rx.borrow().concurrency as usize;
        let live = lane.workers.load(Ordering::Acquire);
        if live > allowed
            && lane
                .workers
                .compare_exchange(live, live - 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            break;
        }
        let permit = tokio::select! {
            _ = inner.stop.cancelled() => break,
            changed = config_rx.changed() => {
                if changed.is_err() { break }
                continue;
            }
            p = lane.items.acquire() => match p { Ok(p) => p, Err(_) => break },
        };
        permit.forget();
        let Some(msg) = lane
            .buffer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop_front()
        else {
            continue;
        };
        // The breaker opened after this message was claimed: it goes back unstarted, so it
        // spends no attempt. (The claimer releases the rest of the buffer in one call.)
        if !lane.breaker.lock().admits(msg.id) {
            release_one(&inner, msg).await;
            continue;
        }
        lane.in_flight.fetch_add(1, Ordering::Relaxed);
        lane.room.notify_one();
        let config = config_rx.borrow().clone();
        let finished = delivery::deliver(&inner, &config, &mut warm, msg).await;
        lane.in_flight.fetch_sub(1, Ordering::Relaxed);
        lane.record(finished.handler_time);
        let transition = lane
            .breaker
            .lock()
            .record(finished.msg.id, finished.verdict, now_ms());
        if let Some(t) = transition {
            log_transition(&finished.msg.queue, t);
            lane.breaker.changed.notify_one();
        }
        lane.room.notify_one();
        if done.send(finished).is_err() {
            break;
        }
    }
}

/// Gives back, in one store call, the buffered messages whose lease is half gone: the handler
/// estimate was wrong and the workers will not start them in time.
async fn release_due(inner: &Inner, queue: &str, lane: &Lane, config: &QueueConfig) {
    let due = lane.take_due(config);
    if due.is_empty() {
        return;
    }
    lane.distrust_estimate(config);
    {
        let mut breaker = lane.breaker.lock();
        for m in &due {
            breaker.released(m.id);
        }
    }
    match inner.store.settle(releases(&due)).await {
        Ok(_) => tracing::info!(
            queue = %queue,
            released = due.len(),
            lease_ms = config.lease_ms,
            "handlers are slower than the prefetch assumed; released buffered messages before their lease ends"
        ),
        // Their leases expire and they come back: nothing is lost, and no worker runs them.
        Err(e) => tracing::warn!(queue = %queue, error = %e, "cannot release buffered messages"),
    }
}

/// Gives back, in one store call, the buffered messages the breaker does not let start.
async fn release_unadmitted(inner: &Inner, queue: &str, lane: &Lane) {
    let held = lane.take_unadmitted();
    if held.is_empty() {
        return;
    }
    match inner.store.settle(releases(&held)).await {
        Ok(_) => tracing::info!(
            queue = %queue,
            released = held.len(),
            "circuit breaker open; released buffered messages without spending their attempts"
        ),
        // Their leases expire and they come back: nothing is lost, it only takes longer.
        Err(e) => tracing::warn!(queue = %queue, error = %e, "cannot release buffered messages"),
    }
}

/// Gives back one message a worker took but may not start (attempt not counted).
async fn release_one(inner: &Inner, msg: Claimed) {
    if let Err(e) = inner
        .store
        .settle(releases(std::slice::from_ref(&msg)))
        .await
    {
        tracing::warn!(queue = %msg.queue, message_id = msg.id, error = %e, "cannot release a buffered message");
    }
}

/// The breaker's changes, for whoever watches the log: opening is worth a warning (deliveries
/// stopped), closing an info line.
fn log_transition(queue: &str, t: Transition) {
    match t {
        Transition::Opened {
            failures,
            cooldown_ms,
            category,
        } => tracing::warn!(
            queue,
            failures,
            cooldown_ms,
            category = %category,
            "circuit breaker open: consecutive deliveries failed; claiming nothing until the cool-down ends (reset with `spool queue reset-breaker {queue}`)"
        ),
        Transition::Closed => {
            tracing::info!(queue, "circuit breaker closed: the probe message succeeded")
        }
    }
}

/// Release settlements (no attempt counted) for messages that were never started.
fn releases(msgs: &[Claimed]) -> Vec<Settle> {
    msgs.iter()
        .map(|m| Settle {
            id: m.id,
            attempt: m.attempt,
            settlement: Settlement::Release,
            plugin_version: None,
            outbox: Vec::new(),
        })
        .collect()
}

/// Gives back messages that were leased but never started, without counting an attempt.
async fn release_buffered(inner: &Inner, queue: &str, lane: &Lane) {
    let left: Vec<Claimed> = lane
        .buffer
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain(..)
        .collect();
    if left.is_empty() {
        return;
    }
    match inner.store.settle(releases(&left)).await {
        Ok(_) => {
            tracing::info!(queue = %queue, released = left.len(), "released prefetched messages")
        }
        // Their leases expire and they come back: nothing is lost, it only takes longer.
        Err(e) => tracing::warn!(queue = %queue, error = %e, "cannot release prefetched messages"),
    }
}

/// Why the queue cannot hand out messages right now, if it cannot. Messages wait (no attempt is
/// spent) while the queue is paused, has no handler, or its handler is not deployed, is not a
/// handler or cannot be loaded; a deploy, rollback or config change ends the wait (and an
/// unloadable plugin is tried again every [`IDLE_RECHECK`]).
async fn not_consumable(inner: &Inner, config: &QueueConfig) -> Option<Waiting> {
    let waiting = |cause, reason: String| Some(Waiting { cause, reason });
    if config.paused {
        return waiting(WaitCause::Paused, "paused".to_owned());
    }
    let Some(handler) = config.handler.as_deref() else {
        return waiting(
            WaitCause::NoHandler,
            "no handler is set; set one with `spool queue set QUEUE --handler PLUGIN`".to_owned(),
        );
    };
    match inner.registry.get(handler).await {
        Ok(p) if p.world() == World::Handler => None,
        Ok(p) => waiting(
            WaitCause::NotAHandler,
            format!(
                "plugin {} is a {} plugin, not a handler; deploy a handler component under that name or change the queue's handler",
                p.label(),
                p.world()
            ),
        ),
        Err(RegistryError::NotFound(_)) => waiting(
            WaitCause::PluginMissing,
            format!(
                "handler plugin {handler:?} is not deployed; deploy it with `spool plugin deploy {handler} FILE.wasm`"
            ),
        ),
        // A plugin that cannot be loaded would fail every delivery for the host's reasons, not
        // the message's: its messages wait like those of a missing plugin.
        Err(e) => waiting(
            WaitCause::PluginUnloadable,
            format!(
                "handler plugin {handler:?} cannot be loaded: {e}; redeploy it with `spool plugin deploy {handler} FILE.wasm` (or roll back with `spool plugin rollback {handler}`)"
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lane() -> Lane {
        Lane {
            buffer: Mutex::new(VecDeque::new()),
            items: Semaphore::new(0),
            room: Notify::new(),
            in_flight: AtomicUsize::new(0),
            workers: AtomicUsize::new(0),
            handler_us: AtomicU64::new(0),
            breaker: Arc::new(QueueBreaker::new(&QueueConfig::default())),
            sizes: ClaimSizes::default(),
        }
    }

    #[test]
    fn no_prefetch_until_handlers_are_measured() {
        assert_eq!(lane().prefetch(&QueueConfig::default()), 0);
    }

    #[test]
    fn fast_handlers_prefetch_up_to_the_cap_slow_ones_not_at_all() {
        let config = QueueConfig {
            concurrency: 4,
            lease_ms: 30_000,
            ..QueueConfig::default()
        };
        let fast = lane();
        fast.record(Duration::from_micros(30));
        assert_eq!(fast.prefetch(&config), ClaimSizes::default().max_prefetch);

        let slow = lane();
        slow.record(Duration::from_secs(10));
        assert_eq!(slow.prefetch(&config), 3);
        slow.record(Duration::from_secs(60));
        for _ in 0..20 {
            slow.record(Duration::from_secs(60));
        }
        assert_eq!(
            slow.prefetch(&config),
            0,
            "a handler slower than the lease gets none"
        );
    }

    fn claimed(id: i64, lease_expires_at: i64) -> Claimed {
        Claimed {
            id,
            queue: "q".to_owned(),
            attempt: 1,
            payload: Vec::new(),
            headers: Vec::new(),
            topic: None,
            correlation_id: None,
            enqueued_at: 0,
            lease_expires_at,
            depth: 0,
        }
    }

    #[test]
    fn messages_with_half_their_lease_gone_leave_the_buffer_with_their_permits() {
        let config = QueueConfig {
            concurrency: 1,
            lease_ms: 1_000,
            ..QueueConfig::default()
        };
        let l = lane();
        let now = now_ms();
        l.buffer
            .lock()
            .unwrap()
            .extend([claimed(1, now + 900), claimed(2, now + 400)]);
        l.items.add_permits(2);
        assert!(l.until_release(&config) <= Duration::from_millis(0));

        let due = l.take_due(&config);
        assert_eq!(due.iter().map(|m| m.id).collect::<Vec<_>>(), [2]);
        assert_eq!(l.buffered(), 1);
        assert_eq!(l.items.available_permits(), 1);
        let next = l.until_release(&config);
        assert!(
            next > Duration::ZERO && next <= Duration::from_millis(400),
            "{next:?}"
        );

        // After a release the fast-handler estimate no longer buys a deep prefetch.
        l.record(Duration::from_micros(50));
        assert!(l.prefetch(&config) > 0);
        l.distrust_estimate(&config);
        assert_eq!(l.prefetch(&config), 0);
    }

    #[test]
    fn handler_time_is_a_moving_average() {
        let l = lane();
        l.record(Duration::from_micros(800));
        l.record(Duration::from_micros(0));
        assert_eq!(l.handler_us.load(Ordering::Relaxed), (800 * 7 + 1) / 8);
    }
}

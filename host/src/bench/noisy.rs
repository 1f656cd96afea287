//! The `noisy` scenario: what a queue of misbehaving plugins costs the API and other queues.
//!
//! One Spool with three queues: `api` (no handler) takes single-message HTTP enqueues at a
//! modest fixed rate, `bench` drains pre-enqueued messages through echo, and `noisy` runs the
//! misbehave plugin's endless loops (stopped by a 100 ms timeout) and memory bombs at
//! concurrency 8, topped up so it never runs dry. Each phase probes the enqueue latency, then
//! times the drain; the quiet phase runs before the noisy queue gets any messages. The ratios of
//! the two phases of one run are the figures to compare across machines.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio_util::sync::CancellationToken;

use super::args::{Mode, Scenario};
use super::fixture::Spool;
use super::probe::probe;
use super::report::{Sample, Unit};
use super::scenarios::{Ctx, percentile, rate};
use crate::model::{NewMessage, QueueConfigPatch};
use crate::store::Store;

/// The queue the latency probe enqueues into (no handler: only the API and the store work).
const API_QUEUE: &str = "api";
/// The bad neighbour's queue.
const NOISY_QUEUE: &str = "noisy";
const MISBEHAVE: &str = "misbehave";
const NOISY_CONCURRENCY: u32 = 8;
const NOISY_TIMEOUT_MS: u64 = 100;
const NOISY_MEMORY_MB: u32 = 64;
/// Handlers of the drained queue.
const DRAIN_CONCURRENCY: u32 = 8;
/// Single-message enqueues per second of the latency probe.
const PROBE_RATE: u32 = 100;
/// The noisy queue is topped up whenever fewer than this many of its messages are ready.
const NOISY_READY_LOW: u64 = 32;
const REFILL_EVERY: Duration = Duration::from_millis(50);
/// How long the bad neighbour may take to reach full concurrency.
const WARM_UP_LIMIT: Duration = Duration::from_secs(30);

/// What one phase measured.
struct Phase {
    enqueue_p50_ms: f64,
    enqueue_p99_ms: f64,
    drain_per_s: f64,
}

/// Runs the scenario once: a quiet phase, then the same measurements with the bad neighbour.
pub async fn noisy(ctx: &Ctx) -> anyhow::Result<Vec<Sample>> {
    if ctx.cancelled() {
        return Ok(Vec::new());
    }
    let misbehave = ctx
        .misbehave
        .clone()
        .context("the misbehave plugin was not loaded")?;
    let mut spool = Spool::start(&ctx.fixture("noisy", true)?).await?;
    let result = run(ctx, &mut spool, misbehave).await;
    spool.stop().await?;
    result
}

async fn run(ctx: &Ctx, spool: &mut Spool, misbehave: Arc<Vec<u8>>) -> anyhow::Result<Vec<Sample>> {
    spool.deploy(MISBEHAVE, misbehave.as_ref().clone()).await?;
    spool
        .put_named_queue(API_QUEUE, QueueConfigPatch::default())
        .await?;
    spool
        .put_queue(Spool::handler_patch(DRAIN_CONCURRENCY, Mode::Fresh, true))
        .await?;
    spool
        .put_named_queue(
            NOISY_QUEUE,
            QueueConfigPatch {
                handler: Some(Some(MISBEHAVE.to_owned())),
                concurrency: Some(NOISY_CONCURRENCY),
                timeout_ms: Some(NOISY_TIMEOUT_MS),
                memory_mb: Some(NOISY_MEMORY_MB),
                // Loops end by the timeout, not by fuel.
                fuel: Some(u64::MAX / 2),
                max_attempts: Some(1),
                ..QueueConfigPatch::default()
            },
        )
        .await?;
    let addr = spool.serve_http().await?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .context("cannot build the HTTP client")?;
    let url = format!("http://{addr}/v1/queues/{API_QUEUE}/messages");

    ctx.progress.say(format_args!(
        "noisy, quiet: {PROBE_RATE} enqueues/s over HTTP for {:?}, then a drain through echo",
        ctx.plan.noisy_probe
    ));
    let quiet = phase(ctx, spool, &client, &url).await?;
    if ctx.cancelled() {
        return Ok(Vec::new());
    }

    ctx.progress.say(format_args!(
        "noisy, with the bad neighbour: loop and alloc at c={NOISY_CONCURRENCY}"
    ));
    let stop = ctx.cancel.child_token();
    let refill = tokio::spawn(refill(spool.store.clone(), stop.clone()));
    let bad = async {
        // Measure in steady state: every bad worker has had a call stopped at least once.
        let target = spool.observer.failed() + u64::from(NOISY_CONCURRENCY);
        let deadline = Instant::now() + WARM_UP_LIMIT;
        while spool.observer.failed() < target {
            if ctx.cancelled() {
                return Ok(None);
            }
            if Instant::now() >= deadline {
                bail!(
                    "the noisy queue had {} calls stopped within {WARM_UP_LIMIT:?}, expected {NOISY_CONCURRENCY}",
                    spool.observer.failed() + u64::from(NOISY_CONCURRENCY) - target
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (failed, started) = (spool.observer.failed(), Instant::now());
        let noisy = phase(ctx, spool, &client, &url).await?;
        let stopped = rate(spool.observer.failed() - failed, started.elapsed());
        Ok(Some((noisy, stopped)))
    }
    .await;
    stop.cancel();
    match refill.await {
        Ok(r) => r?,
        Err(e) => bail!("the refill task failed: {e}"),
    }
    let Some((noisy, stopped)) = bad? else {
        return Ok(Vec::new());
    };

    let drain = format!("drain through echo, fresh, c={DRAIN_CONCURRENCY}");
    let mut out = Vec::new();
    for (name, p) in [("quiet", &quiet), ("noisy", &noisy)] {
        out.push(Sample::new(
            Scenario::Noisy,
            format!("{name}, HTTP enqueue p50"),
            Unit::Millis,
            p.enqueue_p50_ms,
        ));
        out.push(Sample::new(
            Scenario::Noisy,
            format!("{name}, HTTP enqueue p99"),
            Unit::Millis,
            p.enqueue_p99_ms,
        ));
        out.push(Sample::new(
            Scenario::Noisy,
            format!("{name}, {drain}"),
            Unit::MsgsPerSec,
            p.drain_per_s,
        ));
    }
    out.push(Sample::new(
        Scenario::Noisy,
        "noisy, bad calls stopped (timeout, memory)",
        Unit::MsgsPerSec,
        stopped,
    ));
    out.push(Sample::new(
        Scenario::Noisy,
        "enqueue p99, noisy ÷ quiet",
        Unit::Ratio,
        noisy.enqueue_p99_ms / quiet.enqueue_p99_ms,
    ));
    out.push(Sample::new(
        Scenario::Noisy,
        "drain rate, quiet ÷ noisy",
        Unit::Ratio,
        quiet.drain_per_s / noisy.drain_per_s.max(f64::MIN_POSITIVE),
    ));
    Ok(out)
}

/// The latency probe, then the drain.
async fn phase(
    ctx: &Ctx,
    spool: &Spool,
    client: &reqwest::Client,
    url: &str,
) -> anyhow::Result<Phase> {
    let total = (ctx.plan.noisy_probe.as_secs_f64() * f64::from(PROBE_RATE)).round() as u64;
    let urls = vec![url.to_owned()];
    let sent = probe(client.clone(), urls, PROBE_RATE, total, ctx.cancel.clone()).await?;
    let mut ms: Vec<f64> = sent.into_iter().map(|(_, ms)| ms).collect();
    ms.sort_by(f64::total_cmp);
    let drain_per_s = drain(ctx, spool).await?;
    Ok(Phase {
        enqueue_p50_ms: percentile(&ms, 0.50),
        enqueue_p99_ms: percentile(&ms, 0.99),
        drain_per_s,
    })
}

/// Fills the paused drain queue, unpauses it and counts acks for at most the phase's drain
/// time; pauses it again. Returns acks per second.
async fn drain(ctx: &Ctx, spool: &Spool) -> anyhow::Result<f64> {
    let filled = spool.fill(ctx.plan.messages, &ctx.cancel).await?;
    let base = spool.observer.acked();
    let started = Instant::now();
    spool
        .put_queue(QueueConfigPatch {
            paused: Some(false),
            ..QueueConfigPatch::default()
        })
        .await?;
    spool
        .observer
        .wait_acked(base + filled, &ctx.cancel, ctx.plan.noisy_drain)
        .await;
    let elapsed = started.elapsed();
    let acked = spool.observer.acked() - base;
    spool
        .put_queue(QueueConfigPatch {
            paused: Some(true),
            ..QueueConfigPatch::default()
        })
        .await?;
    Ok(rate(acked, elapsed))
}

/// Keeps the noisy queue supplied with endless loops and memory bombs until `stop`.
async fn refill(store: Arc<dyn Store>, stop: CancellationToken) -> anyhow::Result<()> {
    const BATCH: usize = 32;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            _ = tokio::time::sleep(REFILL_EVERY) => {}
        }
        let stats = store.queue_stats(NOISY_QUEUE).await?;
        if stats.ready >= NOISY_READY_LOW {
            continue;
        }
        let batch = (0..BATCH)
            .map(|i| NewMessage {
                payload: if i % 2 == 0 {
                    br#"{"do":"loop"}"#.to_vec()
                } else {
                    br#"{"do":"alloc"}"#.to_vec()
                },
                ..NewMessage::default()
            })
            .collect();
        store.enqueue(NOISY_QUEUE, batch).await?;
    }
}

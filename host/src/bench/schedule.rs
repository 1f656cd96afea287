//! The `schedule` scenario: how late schedules fire, with 10, 1,000 and 100,000 of them.
//!
//! Each size runs on a fresh Spool (SQLite store, router, the schedule timer on the system
//! clock) with one queue without a handler. The schedules are intervals whose fire instants are
//! spread evenly over one period, so fires arrive at a steady rate: every 1 s for 10 and 1,000
//! schedules (10 and 1,000 fires per second), every 100 s for 100,000 (1,000 per second). The
//! timer runs for the measuring window (10 s, 3 s with `--quick`) after its first fire; then
//! each fired message's lateness is its commit time (`enqueued_at`) minus its `spool-fire-at`
//! instant. Reported: p50 and p99 lateness and the fires counted, per size. The target (p99 ≤
//! 50 ms at 1,000 schedules on an otherwise idle host) is checked by the report.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::args::Scenario;
use super::fixture::Spool;
use super::publish::thousands;
use super::report::{Sample, Unit};
use super::scenarios::Ctx;
use crate::model::{NewSchedule, QueueConfigPatch, Target, Timing, now_ms};
use crate::scheduler::{Scheduler, SchedulerOptions};

const QUEUE: &str = "scheduled";
/// Fires per second the sizes are spread to at most.
const MAX_RATE: u64 = 1000;
/// The target of the p99 lateness at 1,000 schedules, milliseconds.
pub const P99_TARGET_MS: f64 = 50.0;
/// Schedules created at once (each is a write; the store commits concurrent ones together).
const CREATE_CONCURRENCY: usize = 64;

/// The schedule counts measured.
fn sizes(quick: bool) -> &'static [u64] {
    if quick {
        &[10, 1000]
    } else {
        &[10, 1000, 100_000]
    }
}

/// The variant name of the p99 figure at `n` schedules.
pub fn p99_variant(n: u64) -> String {
    format!("{} schedules, fire lateness p99", thousands(n as usize))
}

pub async fn schedule(ctx: &Ctx) -> anyhow::Result<Vec<Sample>> {
    let window = Duration::from_secs(if ctx.plan.quick { 3 } else { 10 });
    let mut out = Vec::new();
    for &n in sizes(ctx.plan.quick) {
        if ctx.cancelled() {
            break;
        }
        ctx.progress.say(format_args!(
            "schedule: {n} schedules, {} s of fires",
            window.as_secs()
        ));
        let spool = Spool::start(&ctx.fixture("schedule", false)?).await?;
        let measured = once(ctx, &spool, n, window).await;
        spool.stop().await?;
        let (mut lateness, fires) = measured?;
        lateness.sort_by(f64::total_cmp);
        let pct = |p: f64| -> f64 {
            if lateness.is_empty() {
                return f64::NAN;
            }
            let i = ((lateness.len() as f64 - 1.0) * p).round() as usize;
            lateness[i.min(lateness.len() - 1)]
        };
        let name = thousands(n as usize);
        out.push(Sample::new(
            Scenario::Schedule,
            format!("{name} schedules, fire lateness p50"),
            Unit::Millis,
            pct(0.50),
        ));
        out.push(Sample::new(
            Scenario::Schedule,
            p99_variant(n),
            Unit::Millis,
            pct(0.99),
        ));
        out.push(Sample::new(
            Scenario::Schedule,
            format!("{name} schedules, fires measured"),
            Unit::Count,
            fires as f64,
        ));
    }
    Ok(out)
}

/// Creates `n` schedules on `spool`, runs the timer for `window`, and returns each fire's
/// lateness in milliseconds and how many fires there were.
async fn once(
    ctx: &Ctx,
    spool: &Spool,
    n: u64,
    window: Duration,
) -> anyhow::Result<(Vec<f64>, usize)> {
    let store = spool.store.clone();
    store.put_queue(QUEUE, &QueueConfigPatch::default()).await?;
    let period_s = (n / MAX_RATE).max(1);
    let period_ms = period_s as i64 * 1000;
    // The first fires a little after the schedules are all in place (100,000 take seconds).
    let created_at = now_ms();
    let lead_ms = 2000 + (n as i64) / 20;
    let first = created_at + lead_ms;
    let stagger = period_ms as f64 / n as f64;
    let creating = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..CREATE_CONCURRENCY {
        let (store, next) = (store.clone(), next.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return Ok::<(), anyhow::Error>(());
                }
                let mut s = NewSchedule::new(
                    Timing::Every(Duration::from_secs(period_s)),
                    Target::Queue(QUEUE.into()),
                );
                s.payload = b"{}".to_vec();
                s.start_at = Some(first + (i as f64 * stagger) as i64);
                store.create_schedule(s, created_at).await?;
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.context("create schedules")??;
    }
    tracing::debug!(
        n,
        took_ms = creating.elapsed().as_millis() as u64,
        "schedules created"
    );

    let scheduler = Scheduler::system(
        store.clone(),
        spool.dispatcher.router().clone(),
        SchedulerOptions::default(),
    );
    let stop = CancellationToken::new();
    let timer = tokio::spawn(scheduler.clone().run(stop.clone()));
    // Measure the window that starts at the first fire instant (or now, if creating took
    // longer than the lead).
    let start = first.max(now_ms());
    let end = start + window.as_millis() as i64;
    let wait = Duration::from_millis((end - now_ms()).max(0) as u64);
    tokio::select! {
        _ = ctx.cancel.cancelled() => {}
        _ = tokio::time::sleep(wait) => {}
    }
    stop.cancel();
    let _ = timer.await;

    let mut messages = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list_messages(
                QUEUE,
                &crate::store::MessageFilter {
                    state: None,
                    limit: 1000,
                    cursor,
                    ..Default::default()
                },
            )
            .await
            .context("list the fired messages")?;
        messages.extend(page.items);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    let lateness: Vec<f64> = messages
        .iter()
        .filter_map(|m| {
            let at = m
                .headers
                .iter()
                .find(|(k, _)| k == "spool-fire-at")
                .and_then(|(_, v)| parse_ms(v))?;
            (at >= start && at < end).then(|| (m.enqueued_at - at) as f64)
        })
        .collect();
    let fires = lateness.len();
    Ok((lateness, fires))
}

fn parse_ms(rfc3339: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
        .ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

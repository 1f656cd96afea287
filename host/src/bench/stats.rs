//! The `stats` scenario: what one queue's stats cost at 10k and at 1M queued messages.
//!
//! Stats come from per-queue counters that every write keeps, so reading them should cost the
//! same at any depth. Next to them the scenario times the way stats used to be read — counting
//! the queue's rows per state — on the same database, so the difference shows in one run.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::args::Scenario;
use super::fixture::{QUEUE, Spool};
use super::report::{Sample, Unit};
use super::scenarios::Ctx;
use crate::model::QueueConfigPatch;

/// Stats reads timed per variant; the median is reported.
const CALLS: usize = 200;

/// Queue depths measured: 10k and 1M (100k with --quick).
fn depths(quick: bool) -> [u64; 2] {
    [10_000, if quick { 100_000 } else { 1_000_000 }]
}

fn label(depth: u64) -> String {
    if depth >= 1_000_000 {
        format!("{}M queued", depth / 1_000_000)
    } else {
        format!("{}k queued", depth / 1_000)
    }
}

/// Median of `CALLS` timings of `call`, in microseconds.
async fn median_us<F, Fut>(mut call: F) -> anyhow::Result<f64>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut took = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        let started = Instant::now();
        call().await?;
        took.push(started.elapsed().as_secs_f64() * 1e6);
    }
    took.sort_by(f64::total_cmp);
    Ok(took[took.len() / 2])
}

pub async fn stats(ctx: &Ctx) -> anyhow::Result<Vec<Sample>> {
    let mut out = Vec::new();
    for depth in depths(ctx.plan.quick) {
        if ctx.cancel.is_cancelled() {
            break;
        }
        let at = label(depth);
        ctx.progress
            .say(format_args!("stats: filling a queue with {depth} messages"));
        let mut spool = Spool::start(&ctx.fixture("stats", false)?).await?;
        spool.put_queue(QueueConfigPatch::default()).await?;
        let filled = spool.fill(depth, &ctx.cancel).await?;
        if filled < depth {
            spool.stop().await?;
            break;
        }
        let addr = spool.serve_http().await?;
        let measured = measure(&spool, addr, depth).await;
        spool.stop().await?;
        let (in_process, get_queue, metrics) = measured?;
        for (variant, value) in [
            (format!("store stats, {at}"), in_process.0),
            (format!("row count (before counters), {at}"), in_process.1),
            (format!("GET /v1/queues/{QUEUE}, {at}"), get_queue),
            (format!("GET /metrics, {at}"), metrics),
        ] {
            out.push(Sample::new(Scenario::Stats, variant, Unit::Micros, value));
        }
    }
    Ok(out)
}

/// ((counters, row count), GET queue, GET metrics), each the median of `CALLS` calls in µs.
async fn measure(
    spool: &Spool,
    addr: std::net::SocketAddr,
    depth: u64,
) -> anyhow::Result<((f64, f64), f64, f64)> {
    let stats = spool.store.queue_stats(QUEUE).await?;
    if stats.ready != depth {
        bail!(
            "the queue holds {} ready messages, not {depth}",
            stats.ready
        );
    }
    let store = spool.store.clone();
    let counters = median_us(|| {
        let store = store.clone();
        async move {
            store.queue_stats(QUEUE).await?;
            Ok(())
        }
    })
    .await?;

    // The query stats ran before the counters: one count per state, on a read connection.
    let conn = rusqlite::Connection::open_with_flags(
        spool.db_path(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .context("cannot open the bench database for reading")?;
    let conn = std::sync::Arc::new(std::sync::Mutex::new(conn));
    let counted = median_us(|| {
        let conn = conn.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let conn = conn.lock().unwrap_or_else(|e| e.into_inner());
                for state in [0, 1, 2, 4] {
                    conn.prepare_cached(
                        "SELECT count(*) FROM messages WHERE queue_id = \
                         (SELECT id FROM queues WHERE name = ?1) AND state = ?2",
                    )?
                    .query_row(rusqlite::params![QUEUE, state], |r| r.get::<_, i64>(0))?;
                }
                Ok::<_, rusqlite::Error>(())
            })
            .await
            .context("count task")?
            .context("count rows")?;
            Ok(())
        }
    })
    .await?;

    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .context("cannot build the HTTP client")?;
    let get = |path: String| {
        let client = client.clone();
        move || {
            let (client, url) = (client.clone(), format!("http://{addr}{path}"));
            async move {
                let resp = client.get(&url).send().await.context("stats request")?;
                let status = resp.status();
                resp.bytes().await.context("stats response")?;
                if !status.is_success() {
                    bail!("GET {url} answered {status}");
                }
                Ok(())
            }
        }
    };
    let get_queue = median_us(get(format!("/v1/queues/{QUEUE}"))).await?;
    let metrics = median_us(get("/metrics".to_owned())).await?;
    Ok(((counters, counted), get_queue, metrics))
}

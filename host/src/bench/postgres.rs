//! The `postgres` scenario (`spool bench --database-url URL`): Spool on PostgreSQL with one host
//! and with three hosts sharing one database, beside the raw PostgreSQL floor of `pg_floor`
//! measured on the same server in the same run.
//!
//! Every measurement gets a database of its own on the given server (`CREATE DATABASE`, dropped
//! afterwards), so runs never see each other's rows or dead tuples. The hosts are complete Spools
//! in this process, each with its own connection pool, listener, plugin runtime and dispatcher:
//! on a shared machine they compete for the same cores, as three `spool serve` processes would.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::args::{Mode, Scenario};
use super::fixture::{QUEUE, Spool, new_message};
use super::pg_floor;
use super::report::{BaseKey, Sample, Unit};
use super::scenarios::{Ctx, produce, rate};
use crate::model::QueueConfigPatch;
use crate::store::postgres::DatabaseUrl;

/// Host counts measured.
const HOSTS: [usize; 2] = [1, 3];
/// Producers of the enqueue variants, spread over the hosts.
const PRODUCERS: u32 = 16;
/// Handlers per host in the drain variants (warm instances).
pub const DRAIN_CONCURRENCY: u32 = 32;

/// The variant that compares three hosts' drain with one host's.
pub const HOSTS_RATIO: &str = "drain, 3 hosts ÷ 1 host";

pub fn drain_variant(hosts: usize) -> String {
    format!(
        "drain through echo (reuse, c={DRAIN_CONCURRENCY} per host), {hosts} host{}",
        plural(hosts)
    )
}

/// The drain with acked messages deleted at once rather than kept for an hour.
fn drain_deleting_variant() -> String {
    format!("drain through echo (reuse, c={DRAIN_CONCURRENCY}), 1 host, acked_retention = 0")
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// One run of the scenario: the floor, then enqueue and drain with one and three hosts.
pub async fn postgres(ctx: &Ctx) -> anyhow::Result<Vec<Sample>> {
    let server = ctx
        .plan
        .database_url
        .clone()
        .context("the postgres scenario needs --database-url postgres://…")?;
    let n = ctx.plan.messages;
    let mut out = Vec::new();

    ctx.progress.say(format_args!(
        "postgres floor: {n} rows inserted and taken three ways by {} connections",
        pg_floor::WORKERS
    ));
    let floor = with_database(&server, async |url| {
        pg_floor::run(&url, n, &ctx.cancel).await
    })
    .await?;
    for (key, value) in [
        (BaseKey::PgInsertBatch, floor.insert_batch),
        (BaseKey::PgClaimThenDelete, floor.claim_then_delete),
        (BaseKey::PgClaimDelete, floor.claim_delete),
        (BaseKey::PgLeaseAck, floor.lease_ack),
    ] {
        out.push(Sample::new(
            Scenario::Postgres,
            key.variant(),
            Unit::MsgsPerSec,
            value,
        ));
    }

    for hosts in HOSTS {
        for (per_call, total) in [(100, n), (1, ctx.plan.single_messages)] {
            if ctx.cancelled() {
                return Ok(out);
            }
            let variant = format!(
                "enqueue, {per_call} per call, {PRODUCERS} producers, {hosts} host{}",
                plural(hosts)
            );
            ctx.progress
                .say(format_args!("postgres {variant}: {total} messages"));
            let (sent, elapsed) = with_database(&server, async |url| {
                enqueue(ctx, &url, hosts, per_call, total).await
            })
            .await?;
            let sample = Sample::new(
                Scenario::Postgres,
                variant,
                Unit::MsgsPerSec,
                rate(sent, elapsed),
            );
            out.push(if per_call == 1 {
                sample
            } else {
                sample.vs(BaseKey::PgInsertBatch)
            });
        }
    }

    let mut drained = Vec::new();
    for hosts in HOSTS {
        if ctx.cancelled() {
            return Ok(out);
        }
        ctx.progress.say(format_args!(
            "postgres drain, {hosts} host{}: {n} messages through echo",
            plural(hosts)
        ));
        let (acked, elapsed) =
            with_database(&server, async |url| drain(ctx, &url, hosts, false, n).await).await?;
        let r = rate(acked, elapsed);
        drained.push(r);
        out.push(
            Sample::new(
                Scenario::Postgres,
                drain_variant(hosts),
                Unit::MsgsPerSec,
                r,
            )
            .vs(BaseKey::PgClaimThenDelete),
        );
    }
    if !ctx.cancelled() {
        ctx.progress.say(format_args!(
            "postgres drain, 1 host, acked messages deleted at once: {n} messages through echo"
        ));
        let (acked, elapsed) =
            with_database(&server, async |url| drain(ctx, &url, 1, true, n).await).await?;
        out.push(
            Sample::new(
                Scenario::Postgres,
                drain_deleting_variant(),
                Unit::MsgsPerSec,
                rate(acked, elapsed),
            )
            .vs(BaseKey::PgClaimThenDelete),
        );
    }
    if let [one, three] = drained[..] {
        out.push(Sample::new(
            Scenario::Postgres,
            HOSTS_RATIO,
            Unit::Ratio,
            three / one,
        ));
    }
    Ok(out)
}

/// Runs `work` on a new database on `server`, and drops the database afterwards whatever
/// `work` returned.
async fn with_database<T>(
    server: &DatabaseUrl,
    work: impl AsyncFnOnce(DatabaseUrl) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        "spool_bench_{}_{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    );
    let admin = pg_floor::connect(server).await?;
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot create the bench database {name} on {server}: {}\n\
                 spool bench makes a database for each measurement and drops it afterwards; \
                 the role in --database-url needs CREATEDB (ALTER ROLE … CREATEDB)",
                server.scrub(&e.to_string())
            )
        })?;
    let result = work(server.with_dbname(&name)).await;
    // FORCE: a host's listener connection may still be closing.
    if let Err(e) = admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await
    {
        tracing::warn!(database = %name, error = %server.scrub(&e.to_string()),
            "cannot drop a bench database; drop it by hand");
    }
    result
}

/// `hosts` Spools on the database `url`; the first deploys echo when `echo` is set. The others
/// learn the queue and the plugin from the database, as `spool serve` hosts do.
async fn start_hosts(
    ctx: &Ctx,
    url: &DatabaseUrl,
    hosts: usize,
    echo: bool,
    delete_acked: bool,
) -> anyhow::Result<Vec<Spool>> {
    let mut started = Vec::with_capacity(hosts);
    for i in 0..hosts {
        let mut opts = ctx.fixture("postgres", echo && i == 0)?;
        opts.database = Some(url.clone());
        opts.delete_acked = delete_acked;
        match Spool::start(&opts).await {
            Ok(spool) => started.push(spool),
            Err(e) => {
                stop_hosts(started).await;
                return Err(e.context(format!("cannot start bench host {}", i + 1)));
            }
        }
    }
    Ok(started)
}

async fn stop_hosts(hosts: Vec<Spool>) {
    for spool in hosts {
        if let Err(e) = spool.stop().await {
            tracing::warn!(error = %format!("{e:#}"), "cannot stop a bench host");
        }
    }
}

/// Changes the bench queue through the first host; every host takes it up.
async fn put_queue(hosts: &[Spool], patch: QueueConfigPatch) -> anyhow::Result<()> {
    let (first, others) = hosts.split_first().context("no bench hosts")?;
    first.put_queue(patch).await?;
    for spool in others {
        spool.follow().await?;
    }
    Ok(())
}

/// `total` messages, `per_call` per store call, from [`PRODUCERS`] producers spread over
/// `hosts` hosts.
async fn enqueue(
    ctx: &Ctx,
    url: &DatabaseUrl,
    hosts: usize,
    per_call: u64,
    total: u64,
) -> anyhow::Result<(u64, Duration)> {
    let spools = start_hosts(ctx, url, hosts, false, false).await?;
    let result = async {
        put_queue(&spools, QueueConfigPatch::default()).await?;
        let stores: Vec<_> = spools.iter().map(|s| s.store.clone()).collect();
        produce(
            total,
            per_call,
            PRODUCERS,
            &ctx.cancel,
            move |start, end| {
                let store = stores[(start / per_call) as usize % stores.len()].clone();
                async move {
                    store
                        .enqueue(QUEUE, (start..end).map(new_message).collect())
                        .await?;
                    Ok(())
                }
            },
        )
        .await
    }
    .await;
    stop_hosts(spools).await;
    result
}

/// Fills a paused queue through the first host, resumes it, and times until the hosts together
/// acked every message.
async fn drain(
    ctx: &Ctx,
    url: &DatabaseUrl,
    hosts: usize,
    delete_acked: bool,
    n: u64,
) -> anyhow::Result<(u64, Duration)> {
    let spools = start_hosts(ctx, url, hosts, true, delete_acked).await?;
    let result = async {
        put_queue(
            &spools,
            Spool::handler_patch(DRAIN_CONCURRENCY, Mode::Reuse, true),
        )
        .await?;
        let filled = spools[0].fill(n, &ctx.cancel).await?;
        let acked = || spools.iter().map(|s| s.observer.acked()).sum::<u64>();
        let limit = Duration::from_secs(60 + filled / 1_000);
        let started = Instant::now();
        put_queue(
            &spools,
            QueueConfigPatch {
                paused: Some(false),
                ..QueueConfigPatch::default()
            },
        )
        .await?;
        while acked() < filled && !ctx.cancelled() && started.elapsed() < limit {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let elapsed = started.elapsed();
        let done = acked();
        if done < filled && !ctx.cancelled() {
            bail!(
                "drain of {filled} messages through {hosts} host(s) did not finish within \
                 {limit:?}: {done} acked"
            );
        }
        if done >= filled {
            let stats = spools[0].store.queue_stats(QUEUE).await?;
            if stats.acked < filled {
                bail!(
                    "the database counts {} acked of {filled} after the drain",
                    stats.acked
                );
            }
        }
        let shares: Vec<u64> = spools.iter().map(|s| s.observer.acked()).collect();
        tracing::debug!(?shares, "acked per host");
        Ok((done, elapsed))
    }
    .await;
    stop_hosts(spools).await;
    result
}

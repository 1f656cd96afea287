//! `spool bench`: reproducible throughput, latency and memory figures for this machine.
//!
//! Every scenario starts a complete Spool in this process (store, runtime, dispatcher, and the
//! real HTTP API on a loopback port where the scenario goes over HTTP) on a fresh database in a
//! temporary directory, drives it the way producers would, and tears it down. Each figure is the
//! median of `--runs` runs; `baseline` measures raw SQLite on the same file settings doing the
//! least a queue must do, and Spool's throughput figures are shown as ratios of it.
//!
//! - [`args`]: the flags and the plan they resolve to.
//! - `scenarios`: the measurements (a) to (f) and the baseline's driver.
//! - `noisy`: what a queue of misbehaving plugins costs the API and other queues.
//! - `probe`: the open-loop HTTP enqueue probe `noisy` and `deploy` time the API with.
//! - `baseline`: the raw SQLite floor.
//! - `stats`: what queue stats cost at 10k and 1M queued.
//! - `publish`: what routing (patterns, fan-out, a filter) costs a producer, against a direct
//!   enqueue in the same run; and the route matcher at 10 and 10,000 routes.
//! - `schedule`: how late schedules fire with 10, 1,000 and 100,000 of them.
//! - `deploy`: how soon a large plugin serves after its upload, and what its compile costs the
//!   queues already running.
//! - `postgres`: Spool on PostgreSQL with one and three hosts on one database
//!   (`--database-url`), beside `pg_floor`, raw PostgreSQL on the same server.
//! - `fixture`: an in-process Spool with a counting [`DeliveryObserver`](crate::dispatch::DeliveryObserver).
//! - `report`: medians, ratios, target checks, the table and the JSON document.
//!
//! Peak RSS is measured in a child process (`spool bench --rss-child MODE`, hidden), so the
//! figure belongs to that workload alone and not to whatever ran before it.
//!
//! Benchmarks are never timed tests: nothing here asserts on speed.

pub mod args;
mod baseline;
mod deploy;
mod fixture;
mod noisy;
mod pg_floor;
mod postgres;
mod probe;
mod publish;
mod report;
mod scenarios;
mod schedule;
mod stats;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

pub use args::{BenchArgs, DEFAULT_PLUGIN, Mode, Scenario, SyncMode};
pub use fixture::{NullHost, null_context, payload};
pub use scenarios::runtime_options;

use args::Plan;
use report::{Machine, Results};
use scenarios::Ctx;

/// Runs `spool bench`.
pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    init_logging();
    let plan = Plan::from_args(&args)?;
    let plugin = if plan.needs_plugin() || args.rss_child.is_some() {
        Some(Arc::new(read_plugin(&args.plugin)?))
    } else {
        None
    };

    let misbehave = if plan.wants(Scenario::Noisy) && args.rss_child.is_none() {
        Some(Arc::new(read_plugin(&args.misbehave_path())?))
    } else {
        None
    };

    let (root, owned) = bench_dir(args.dir.as_deref(), args.rss_child.is_some())?;
    let cancel = CancellationToken::new();
    let mut ctx = Ctx::new(
        plan.clone(),
        root.clone(),
        args.plugin.clone(),
        plugin.clone(),
        cancel.clone(),
    );
    ctx.misbehave = misbehave;
    if plan.wants(Scenario::Deploy) && args.rss_child.is_none() {
        for path in args.deploy_paths() {
            let wasm = std::fs::read(&path).with_context(|| {
                format!(
                    "cannot read {} for the deploy scenario; build the Python and JavaScript \
                     plugins with `bash scripts/build.sh`, or pass --deploy PATH",
                    path.display()
                )
            })?;
            ctx.deploy.push((path, Arc::new(wasm)));
        }
    }
    if plan.wants(Scenario::Publish) && args.rss_child.is_none() {
        ctx.filter = Some(Arc::new(read_plugin(&args.filter_path())?));
    }

    if let Some(mode) = args.rss_child {
        // The child's only output: one JSON line for the parent.
        let report = scenarios::rss_child(&ctx, mode).await?;
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }

    let watcher = watch_for_stop(cancel.clone(), args.max_time);
    let started = Instant::now();
    let outcome = measure(&ctx, plugin).await;
    watcher.abort();
    if owned {
        let root = root.clone();
        let _ = tokio::task::spawn_blocking(move || fixture::remove_dir_retrying(&root)).await;
    }
    let (mut results, failures) = outcome;
    results.not_echo = args.plugin.file_stem().is_some_and(|s| s != "echo");

    let machine = Machine::detect();
    let interrupted = cancel.is_cancelled();
    let process_rss = report::peak_rss_kib();
    let table = report::table(&results, &machine, &plan, interrupted, process_rss);
    if args.json {
        // stdout stays machine-readable; the table goes to stderr for whoever watches.
        eprint!("{table}");
        let doc = report::json_doc(
            &results,
            &machine,
            &plan,
            interrupted,
            started.elapsed().as_secs_f64(),
            process_rss,
        );
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{table}");
    }
    if !failures.is_empty() {
        anyhow::bail!(
            "{} scenario run(s) failed: {}",
            failures.len(),
            failures.join("; ")
        );
    }
    Ok(())
}

/// Runs every planned scenario `runs` times (run-major, so a cut-short bench still has every
/// scenario it reached). A failing scenario is reported and the others still run.
async fn measure(ctx: &Ctx, plugin: Option<Arc<Vec<u8>>>) -> (Results, Vec<String>) {
    let mut results = Results::default();
    let mut failures = Vec::new();
    if let Some(wasm) = plugin {
        ctx.progress.say("compiling the echo plugin (once, cached)");
        if let Err(e) = scenarios::prepare_plugin(ctx.cache_dir(), wasm).await {
            failures.push(format!("{e:#}"));
            return (results, failures);
        }
    }
    let plan = &ctx.plan;
    'runs: for run in 1..=plan.runs {
        for &scenario in &plan.scenarios {
            if ctx.cancel.is_cancelled() {
                break 'runs;
            }
            ctx.progress.say(format_args!(
                "run {run}/{} — {}",
                plan.runs,
                scenario.name()
            ));
            let measured = match scenario {
                Scenario::Enqueue => scenarios::enqueue(ctx, false).await,
                Scenario::Batch => scenarios::enqueue(ctx, true).await,
                Scenario::Drain => scenarios::drain(ctx).await,
                Scenario::Latency => scenarios::latency(ctx).await,
                Scenario::Overhead => scenarios::overhead(ctx).await,
                Scenario::Rss => scenarios::rss(ctx).await,
                Scenario::Baseline => scenarios::baseline(ctx).await,
                Scenario::Noisy => noisy::noisy(ctx).await,
                Scenario::Stats => stats::stats(ctx).await,
                Scenario::Publish => publish::publish(ctx).await,
                Scenario::Schedule => schedule::schedule(ctx).await,
                Scenario::Deploy => deploy::deploy(ctx).await,
                Scenario::Postgres => postgres::postgres(ctx).await,
            };
            match measured {
                Ok(samples) => results.add(samples, ctx.cancel.is_cancelled()),
                Err(e) => {
                    tracing::error!(scenario = scenario.name(), run, error = %format!("{e:#}"), "scenario failed");
                    failures.push(format!("{} (run {run}): {e:#}", scenario.name()));
                }
            }
        }
    }
    (results, failures)
}

fn read_plugin(path: &Path) -> anyhow::Result<Vec<u8>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => anyhow::bail!(
            "the bench plugin {} does not exist; build it with\n    \
             cargo build --release --target wasm32-wasip2 -p echo -p misbehave -p route-by-field\n\
             (run from the workspace root, or pass --plugin PATH / --misbehave PATH / --filter PATH)",
            path.display()
        ),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// The directory the bench works in, and whether it is ours to remove. Without `--dir`, a new
/// directory under the system temp dir; with it, a new subdirectory of it. The RSS child works
/// directly in the directory its parent passes (and removes only its own database).
fn bench_dir(dir: Option<&Path>, child: bool) -> anyhow::Result<(PathBuf, bool)> {
    if child {
        let dir = dir.context("--rss-child needs --dir")?;
        return Ok((dir.to_owned(), false));
    }
    let parent = dir.map_or_else(std::env::temp_dir, Path::to_owned);
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let root = parent.join(format!("spool-bench-{}-{stamp}", std::process::id()));
    std::fs::create_dir_all(&root)
        .with_context(|| format!("cannot create bench directory {}", root.display()))?;
    Ok((root, true))
}

/// Cancels the run on Ctrl-C or when `max_time` has passed. A second Ctrl-C exits at once.
fn watch_for_stop(
    cancel: CancellationToken,
    max_time: Option<std::time::Duration>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let deadline = async {
            match max_time {
                Some(t) => tokio::time::sleep(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = tokio::signal::ctrl_c() => {
                if r.is_err() {
                    return;
                }
                eprintln!("\ninterrupted: finishing the current step, then printing what was measured (Ctrl-C again to quit now)");
            }
            _ = deadline => eprintln!("\n--max-time reached: printing what was measured"),
        }
        cancel.cancel();
        if tokio::signal::ctrl_c().await.is_ok() {
            std::process::exit(130);
        }
    })
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    // The `noisy` scenario dead-letters thousands of messages on purpose; their per-message
    // warnings would bury the report.
    let filter = EnvFilter::try_from_env("SPOOL_LOG")
        .unwrap_or_else(|_| EnvFilter::new("warn,spool::dispatch::delivery=error"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
}

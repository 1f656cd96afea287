//! The `deploy` scenario: how soon a large (Python, JavaScript) plugin serves after its upload,
//! and what its compile costs the queues already running.
//!
//! One Spool with the HTTP API and two queues, `a` and `b`, each consumed by echo. A probe
//! offers single-message HTTP enqueues to them in turn at a fixed rate: first while nothing else
//! happens (quiet), then from the start of the upload until the plugin's optimised code is in
//! (deploy). Meanwhile the plugin is uploaded with `PUT /v1/plugins/{name}` on a cold
//! compiled-code cache, a queue is pointed at it and one message is enqueued. The figures are
//! the upload's duration, the time from the upload's answer to that message's ack, the time to
//! the optimised code, and the probe's p99 in both phases with their ratio (the figure to
//! compare across machines).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio_util::sync::CancellationToken;

use super::args::{Mode, Scenario};
use super::fixture::Spool;
use super::probe::probe;
use super::report::{Sample, Unit};
use super::scenarios::{Ctx, percentile};
use crate::model::{NewMessage, QueueConfigPatch};

/// The two running queues the probe enqueues into.
const RUNNING: [&str; 2] = ["a", "b"];
/// Echo handlers per running queue.
const RUNNING_CONCURRENCY: u32 = 2;
/// Single-message enqueues per second of the probe, over both queues.
const PROBE_RATE: u32 = 200;
/// The queue whose first message the deployed plugin handles.
const FIRST_QUEUE: &str = "first";
/// How often the scenario looks for the first ack and for the optimised code.
const POLL_FIRST_ACK: Duration = Duration::from_millis(5);
const POLL_COMPILED: Duration = Duration::from_millis(100);
/// Limits on the waits, so a broken plugin ends the run instead of hanging it.
const FIRST_ACK_LIMIT: Duration = Duration::from_secs(120);
const OPTIMIZED_LIMIT: Duration = Duration::from_secs(300);

/// The deploy's figures, apart from the probe.
struct Timings {
    /// When the upload was answered.
    answered: Instant,
    upload: Duration,
    first_ack: Duration,
    optimized: Duration,
}

/// Runs the scenario once for each plugin in the plan.
pub async fn deploy(ctx: &Ctx) -> anyhow::Result<Vec<Sample>> {
    let mut out = Vec::new();
    for (path, wasm) in &ctx.deploy {
        if ctx.cancelled() {
            break;
        }
        let name = plugin_name(path);
        let mut opts = ctx.fixture("deploy", true)?;
        // A cold cache, so the upload compiles as it would the first time on a server.
        opts.cache_dir = opts.dir.join("plugin-cache");
        let mut spool = Spool::start(&opts).await?;
        let result = run(ctx, &mut spool, &name, wasm.as_ref().clone()).await;
        spool.stop().await?;
        out.extend(result.with_context(|| format!("deploying {}", path.display()))?);
    }
    Ok(out)
}

async fn run(
    ctx: &Ctx,
    spool: &mut Spool,
    name: &str,
    wasm: Vec<u8>,
) -> anyhow::Result<Vec<Sample>> {
    for queue in RUNNING {
        spool
            .put_named_queue(
                queue,
                Spool::handler_patch(RUNNING_CONCURRENCY, Mode::Reuse, false),
            )
            .await?;
    }
    let addr = spool.serve_http().await?;
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .context("cannot build the HTTP client")?;
    let base = format!("http://{addr}/v1");
    let urls: Vec<String> = RUNNING
        .iter()
        .map(|queue| format!("{base}/queues/{queue}/messages"))
        .collect();
    // No count: each phase's probe runs until it is stopped (the quiet one after the noisy
    // scenario's probe duration, the other once the optimised code is in).
    let start_probe = |stop: &CancellationToken| {
        let (client, urls) = (client.clone(), urls.clone());
        tokio::spawn(probe(client, urls, PROBE_RATE, u64::MAX, stop.clone()))
    };

    ctx.progress.say(format_args!(
        "deploy {name}, quiet: {PROBE_RATE} enqueues/s over HTTP to two running queues for {:?}",
        ctx.plan.noisy_probe
    ));
    let stop = ctx.cancel.child_token();
    let probing = start_probe(&stop);
    tokio::select! {
        _ = tokio::time::sleep(ctx.plan.noisy_probe) => {}
        _ = ctx.cancel.cancelled() => {}
    }
    stop.cancel();
    let quiet = probing.await.context("the probe task failed")??;

    ctx.progress.say(format_args!(
        "deploy {name}: upload ({:.1} MB), first message, optimised code",
        wasm.len() as f64 / 1e6
    ));
    let stop = ctx.cancel.child_token();
    let probing = start_probe(&stop);
    let timings = deploy_and_wait(ctx, spool, &client, &base, name, wasm).await;
    stop.cancel();
    let during = probing.await.context("the probe task failed")??;
    let Some(timings) = timings? else {
        return Ok(Vec::new());
    };

    let mut quiet: Vec<f64> = quiet.into_iter().map(|(_, ms)| ms).collect();
    let (uploading, optimising): (Vec<_>, Vec<_>) =
        during.iter().partition(|(at, _)| *at < timings.answered);
    let mut all: Vec<f64> = during.iter().map(|(_, ms)| *ms).collect();
    all.sort_by(f64::total_cmp);
    quiet.sort_by(f64::total_cmp);
    let p99 = |v: &[&(Instant, f64)]| {
        let mut ms: Vec<f64> = v.iter().map(|(_, ms)| *ms).collect();
        ms.sort_by(f64::total_cmp);
        percentile(&ms, 0.99)
    };
    let (quiet_p99, during_p99) = (percentile(&quiet, 0.99), percentile(&all, 0.99));
    let secs = |d: Duration| d.as_secs_f64();
    Ok(vec![
        Sample::new(
            Scenario::Deploy,
            format!("{name}: upload (compile, check, store)"),
            Unit::Seconds,
            secs(timings.upload),
        ),
        Sample::new(
            Scenario::Deploy,
            first_ack_variant(name),
            Unit::Seconds,
            secs(timings.first_ack),
        ),
        Sample::new(
            Scenario::Deploy,
            format!("{name}: upload start → optimised code in"),
            Unit::Seconds,
            secs(timings.optimized),
        ),
        Sample::new(
            Scenario::Deploy,
            format!("{name}: HTTP enqueue p99, quiet"),
            Unit::Millis,
            quiet_p99,
        ),
        Sample::new(
            Scenario::Deploy,
            format!("{name}: HTTP enqueue p99, while deploying"),
            Unit::Millis,
            during_p99,
        ),
        Sample::new(
            Scenario::Deploy,
            format!("{name}: HTTP enqueue p99, while uploading"),
            Unit::Millis,
            p99(&uploading),
        ),
        Sample::new(
            Scenario::Deploy,
            format!("{name}: HTTP enqueue p99, while optimising"),
            Unit::Millis,
            p99(&optimising),
        ),
        Sample::new(
            Scenario::Deploy,
            ratio_variant(name),
            Unit::Ratio,
            during_p99 / quiet_p99,
        ),
    ])
}

/// How the variants with a target end (after the plugin's name).
pub const FIRST_ACK: &str = "upload answered → first message acked";
pub const P99_RATIO: &str = "enqueue p99, deploying ÷ quiet";

fn first_ack_variant(name: &str) -> String {
    format!("{name}: {FIRST_ACK}")
}

fn ratio_variant(name: &str) -> String {
    format!("{name}: {P99_RATIO}")
}

/// Uploads, points a queue at the plugin, enqueues one message and waits for its ack, then
/// for the optimised code. `None` when the bench was stopped meanwhile.
async fn deploy_and_wait(
    ctx: &Ctx,
    spool: &Spool,
    client: &reqwest::Client,
    base: &str,
    name: &str,
    wasm: Vec<u8>,
) -> anyhow::Result<Option<Timings>> {
    let started = Instant::now();
    let resp = client
        .put(format!("{base}/plugins/{name}"))
        .header("content-type", "application/wasm")
        .body(wasm)
        .send()
        .await
        .context("PUT the plugin")?;
    let status = resp.status();
    let deployed: serde_json::Value = resp.json().await.context("the deploy's answer")?;
    if !status.is_success() {
        bail!("the deploy was refused ({status}): {deployed}");
    }
    let upload = started.elapsed();
    let answered = Instant::now();

    spool
        .put_named_queue(
            FIRST_QUEUE,
            QueueConfigPatch {
                handler: Some(Some(name.to_owned())),
                ..QueueConfigPatch::default()
            },
        )
        .await?;
    spool
        .store
        .enqueue(
            FIRST_QUEUE,
            vec![NewMessage {
                payload: b"{}".to_vec(),
                ..NewMessage::default()
            }],
        )
        .await?;
    loop {
        let stats = spool.store.queue_stats(FIRST_QUEUE).await?;
        if stats.acked >= 1 {
            break;
        }
        if stats.dead > 0 || stats.retried > 0 {
            bail!("the plugin's first message was not acked: {stats:?}");
        }
        if answered.elapsed() > FIRST_ACK_LIMIT {
            bail!("no ack within {FIRST_ACK_LIMIT:?} of the upload's answer");
        }
        if ctx.cancelled() {
            return Ok(None);
        }
        tokio::time::sleep(POLL_FIRST_ACK).await;
    }
    let first_ack = answered.elapsed();

    loop {
        let plugin: serde_json::Value = client
            .get(format!("{base}/plugins/{name}"))
            .send()
            .await
            .context("GET the plugin")?
            .json()
            .await
            .context("the plugin's description")?;
        if plugin["compiled"] == "optimized" {
            break;
        }
        if started.elapsed() > OPTIMIZED_LIMIT {
            bail!("the optimised code was not in within {OPTIMIZED_LIMIT:?}: {plugin}");
        }
        if ctx.cancelled() {
            return Ok(None);
        }
        tokio::time::sleep(POLL_COMPILED).await;
    }
    Ok(Some(Timings {
        answered,
        upload,
        first_ack,
        optimized: started.elapsed(),
    }))
}

/// The plugin's name: its file stem, as `spool plugin deploy` users would name it.
fn plugin_name(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name: String = stem
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        .take(128)
        .collect();
    if name.is_empty() {
        "deployed".to_owned()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_a_plugin_after_its_file() {
        assert_eq!(
            plugin_name(Path::new("target/lang-plugins/py-handler.wasm")),
            "py-handler"
        );
        assert_eq!(plugin_name(Path::new("/tmp/ä b.wasm")), "b");
        assert_eq!(plugin_name(Path::new("/")), "deployed");
    }
}

//! The measurements. Each function runs one scenario once (all its variants) on fresh
//! databases and returns its samples; the caller repeats it `--runs` times.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::args::{Mode, Plan, Scenario};
use super::baseline;
use super::fixture::{FixtureOptions, QUEUE, Spool, new_message, null_context, payload};
use super::report::{BaseKey, Sample, Unit, peak_rss_kib};
use crate::model::{MessageId, QueueConfigPatch};
use crate::runtime::{Limits, Plugin, PluginMessage, Runtime, RuntimeOptions, WarmHandler};

/// Producer counts of the enqueue scenarios.
const PRODUCERS: [u32; 2] = [1, 16];
/// Messages per request in the batch scenario.
const BATCH: u64 = 100;
/// Handler concurrency of the latency scenario.
const LATENCY_CONCURRENCY: u32 = 8;
/// Handler concurrency of the RSS scenario.
const RSS_CONCURRENCY: u32 = 64;

/// Progress lines on stderr, only when a person is watching.
#[derive(Debug, Clone)]
pub struct Progress {
    enabled: bool,
    start: Instant,
}

impl Progress {
    pub fn new() -> Progress {
        Progress {
            enabled: std::io::IsTerminal::is_terminal(&std::io::stderr()),
            start: Instant::now(),
        }
    }

    pub fn say(&self, what: impl std::fmt::Display) {
        if self.enabled {
            eprintln!("[{:>6.1}s] {what}", self.start.elapsed().as_secs_f64());
        }
    }
}

/// Everything a scenario needs.
pub struct Ctx {
    pub plan: Plan,
    /// The bench's own directory (removed at the end).
    pub root: PathBuf,
    /// The echo plugin as given on the command line, and its bytes.
    pub plugin_path: PathBuf,
    pub plugin: Option<Arc<Vec<u8>>>,
    /// The misbehave plugin's bytes, for the `noisy` scenario.
    pub misbehave: Option<Arc<Vec<u8>>>,
    /// The route-by-field filter's bytes, for the `publish` scenario.
    pub filter: Option<Arc<Vec<u8>>>,
    /// The components the `deploy` scenario uploads, with their paths.
    pub deploy: Vec<(PathBuf, Arc<Vec<u8>>)>,
    pub cancel: CancellationToken,
    pub progress: Progress,
    seq: AtomicU64,
}

impl Ctx {
    pub fn new(
        plan: Plan,
        root: PathBuf,
        plugin_path: PathBuf,
        plugin: Option<Arc<Vec<u8>>>,
        cancel: CancellationToken,
    ) -> Ctx {
        Ctx {
            plan,
            root,
            plugin_path,
            plugin,
            misbehave: None,
            filter: None,
            deploy: Vec::new(),
            cancel,
            progress: Progress::new(),
            seq: AtomicU64::new(0),
        }
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.root.join("plugin-cache")
    }

    fn next_dir(&self, what: &str) -> PathBuf {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        self.root.join(format!("{what}-{n}"))
    }

    pub(super) fn fixture(&self, what: &str, with_plugin: bool) -> anyhow::Result<FixtureOptions> {
        let plugin = if with_plugin {
            Some(
                self.plugin
                    .clone()
                    .context("the echo plugin was not loaded")?,
            )
        } else {
            None
        };
        Ok(FixtureOptions {
            dir: self.next_dir(what),
            cache_dir: self.cache_dir(),
            sync: self.plan.sync,
            plugin,
            database: None,
            delete_acked: false,
        })
    }

    pub(super) fn cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }
}

/// The runtime settings every scenario uses, so all of them share one compiled-code cache.
pub fn runtime_options(cache_dir: PathBuf) -> RuntimeOptions {
    RuntimeOptions {
        cache_dir,
        max_instances: 128,
        max_memory_mb: 64,
        ..RuntimeOptions::default()
    }
}

/// Compiles the plugin once (filling the on-disk cache) and checks it is a handler.
pub async fn prepare_plugin(cache_dir: PathBuf, wasm: Arc<Vec<u8>>) -> anyhow::Result<Arc<Plugin>> {
    let runtime =
        Runtime::new(runtime_options(cache_dir)).context("cannot start the plugin runtime")?;
    let plugin = tokio::task::spawn_blocking(move || runtime.load_optimized("echo", 1, &wasm))
        .await
        .context("plugin load task")?
        .context("cannot load the echo plugin")?;
    if plugin.world() != crate::runtime::World::Handler {
        bail!(
            "the bench plugin is a {} plugin; it needs a handler (the echo plugin)",
            plugin.world()
        );
    }
    Ok(plugin)
}

pub(super) fn rate(n: u64, elapsed: Duration) -> f64 {
    n as f64 / elapsed.as_secs_f64().max(1e-9)
}

// --- (a) and (b): enqueue ---------------------------------------------------------------------

/// Single (a) or batch (b) enqueue: in-process and over HTTP, from 1 and 16 producers.
pub async fn enqueue(ctx: &Ctx, batch: bool) -> anyhow::Result<Vec<Sample>> {
    let (scenario, per_request, total, base) = if batch {
        (
            Scenario::Batch,
            BATCH,
            ctx.plan.messages,
            BaseKey::InsertBatch,
        )
    } else {
        (
            Scenario::Enqueue,
            1,
            ctx.plan.single_messages,
            BaseKey::InsertSingle,
        )
    };
    let mut out = Vec::new();
    for http in [false, true] {
        for producers in PRODUCERS {
            if ctx.cancelled() {
                return Ok(out);
            }
            let transport = if http { "http" } else { "in-process" };
            let variant = format!(
                "{transport}, {producers} producer{}",
                if producers == 1 { "" } else { "s" }
            );
            ctx.progress.say(format_args!(
                "{} {variant}: {total} messages, {per_request} per request",
                scenario.name()
            ));
            let mut spool = Spool::start(&ctx.fixture(scenario.name(), false)?).await?;
            spool.put_queue(QueueConfigPatch::default()).await?;
            let measured = if http {
                let addr = spool.serve_http().await?;
                produce_http(addr, total, per_request, producers, &ctx.cancel).await
            } else {
                produce_in_process(&spool, total, per_request, producers, &ctx.cancel).await
            };
            spool.stop().await?;
            let (sent, elapsed) = measured?;
            out.push(
                Sample::new(scenario, variant, Unit::MsgsPerSec, rate(sent, elapsed)).vs(base),
            );
        }
    }
    Ok(out)
}

async fn produce_in_process(
    spool: &Spool,
    total: u64,
    per_request: u64,
    producers: u32,
    cancel: &CancellationToken,
) -> anyhow::Result<(u64, Duration)> {
    let store = spool.store.clone();
    produce(total, per_request, producers, cancel, move |start, end| {
        let store = store.clone();
        async move {
            let batch = (start..end).map(new_message).collect();
            store.enqueue(QUEUE, batch).await?;
            Ok(())
        }
    })
    .await
}

/// Sends messages `0..total`, `per_request` at a time, from `producers` concurrent tasks that
/// each take the next range as soon as their previous request was answered (closed loop).
/// `send(start, end)` makes one request. Returns how many were sent and how long it took.
pub(super) async fn produce<F, Fut>(
    total: u64,
    per_request: u64,
    producers: u32,
    cancel: &CancellationToken,
    send: F,
) -> anyhow::Result<(u64, Duration)>
where
    F: Fn(u64, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..producers {
        let (send, next, cancel) = (send.clone(), next.clone(), cancel.clone());
        tasks.spawn(async move {
            let mut sent = 0u64;
            loop {
                let start = next.fetch_add(per_request, Ordering::Relaxed);
                if start >= total || cancel.is_cancelled() {
                    return Ok::<u64, anyhow::Error>(sent);
                }
                let end = (start + per_request).min(total);
                send(start, end).await?;
                sent += end - start;
            }
        });
    }
    let mut sent = 0;
    while let Some(r) = tasks.join_next().await {
        sent += r.context("producer task")??;
    }
    Ok((sent, started.elapsed()))
}

/// The body of one `POST /v1/queues/{q}/messages` request for messages `start..end`.
pub(super) fn http_body(start: u64, end: u64) -> Vec<u8> {
    http_body_of(start, end, payload)
}

/// [`http_body`] with the payloads `payload(i)`. The same body publishes to a topic.
pub(super) fn http_body_of(start: u64, end: u64, payload: fn(u64) -> Vec<u8>) -> Vec<u8> {
    let mut body = Vec::with_capacity(((end - start) * 80 + 16) as usize);
    let single = end - start == 1;
    if !single {
        body.extend_from_slice(b"{\"messages\":[");
    }
    for i in start..end {
        if i > start {
            body.push(b',');
        }
        body.extend_from_slice(b"{\"payload\":");
        body.extend_from_slice(&payload(i));
        body.push(b'}');
    }
    if !single {
        body.extend_from_slice(b"]}");
    }
    body
}

/// Sends one enqueue (`POST /v1/queues/{q}/messages`) or publish
/// (`POST /v1/topics/{topic}/messages`, the same body) to `url`; fails unless it succeeded.
pub(super) async fn post_enqueue(
    client: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
) -> anyhow::Result<()> {
    let resp = client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = resp.status();
    let text = resp.bytes().await.context("enqueue response")?;
    if !status.is_success() {
        bail!(
            "POST {url} answered {status}: {}",
            String::from_utf8_lossy(&text)
        );
    }
    Ok(())
}

/// An HTTP client for `producers` concurrent requests to the bench's loopback server.
pub(super) fn http_client(producers: u32) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(producers as usize)
        .build()
        .context("cannot build the HTTP client")
}

async fn produce_http(
    addr: SocketAddr,
    total: u64,
    per_request: u64,
    producers: u32,
    cancel: &CancellationToken,
) -> anyhow::Result<(u64, Duration)> {
    let client = http_client(producers)?;
    let url = format!("http://{addr}/v1/queues/{QUEUE}/messages");
    produce(total, per_request, producers, cancel, move |start, end| {
        let (client, url) = (client.clone(), url.clone());
        async move { post_enqueue(&client, &url, http_body(start, end)).await }
    })
    .await
}

// --- (c) drain --------------------------------------------------------------------------------

/// How long a drain may take before it is reported as stuck: at least 1 000 msgs/s.
fn drain_limit(n: u64) -> Duration {
    Duration::from_secs(60 + n / 1_000)
}

/// Fills a paused queue, unpauses it and times until every message was acked.
/// Returns (acked, elapsed, most handlers in flight at once).
async fn drain_once(
    ctx: &Ctx,
    what: &str,
    mode: Mode,
    concurrency: u32,
    n: u64,
) -> anyhow::Result<(u64, Duration, u64)> {
    let spool = Spool::start(&ctx.fixture(what, true)?).await?;
    let result = async {
        spool
            .put_queue(Spool::handler_patch(concurrency, mode, true))
            .await?;
        let filled = spool.fill(n, &ctx.cancel).await?;
        let started = Instant::now();
        spool
            .put_queue(QueueConfigPatch {
                paused: Some(false),
                ..QueueConfigPatch::default()
            })
            .await?;
        let done = spool
            .observer
            .wait_acked(filled, &ctx.cancel, drain_limit(filled))
            .await;
        let elapsed = started.elapsed();
        let acked = spool.observer.acked();
        if spool.observer.failed() > 0 {
            tracing::warn!(
                failed = spool.observer.failed(),
                "some deliveries did not ack; the drain figure counts acks only"
            );
        }
        if !done && !ctx.cancelled() {
            bail!(
                "drain of {filled} messages ({} c={concurrency}) did not finish within {:?}: {acked} acked",
                mode.name(),
                drain_limit(filled)
            );
        }
        if done {
            let stats = spool.store.queue_stats(QUEUE).await?;
            if stats.acked < filled {
                bail!(
                    "the store counts {} acked of {filled} after the drain",
                    stats.acked
                );
            }
        }
        Ok((acked, elapsed, spool.observer.max_in_flight()))
    }
    .await;
    spool.stop().await?;
    result
}

/// (c): N pre-enqueued messages through echo, per instance mode and concurrency.
pub async fn drain(ctx: &Ctx) -> anyhow::Result<Vec<Sample>> {
    let n = ctx.plan.messages;
    let mut out = Vec::new();
    for &mode in &ctx.plan.modes {
        for &c in &ctx.plan.concurrency {
            if ctx.cancelled() {
                return Ok(out);
            }
            ctx.progress.say(format_args!(
                "drain {} c={c}: {n} messages through echo",
                mode.name()
            ));
            let (acked, elapsed, _) = drain_once(ctx, "drain", mode, c, n).await?;
            out.push(
                Sample::new(
                    Scenario::Drain,
                    format!("{}, c={c}", mode.name()),
                    Unit::MsgsPerSec,
                    rate(acked, elapsed),
                )
                .vs(BaseKey::ClaimDelete),
            );
        }
    }
    Ok(out)
}

// --- (d) latency ------------------------------------------------------------------------------

pub(super) fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// (d): an open-loop producer offers `rate` single-message enqueues per second for `duration`;
/// each message's enqueue call start is matched with its handler start and its ack.
pub async fn latency(ctx: &Ctx) -> anyhow::Result<Vec<Sample>> {
    let mut out = Vec::new();
    for &mode in &ctx.plan.modes {
        if ctx.cancelled() {
            return Ok(out);
        }
        ctx.progress.say(format_args!(
            "latency {}: {} msgs/s for {:?}, {LATENCY_CONCURRENCY} handlers",
            mode.name(),
            ctx.plan.rate,
            ctx.plan.duration
        ));
        let spool = Spool::start(&ctx.fixture("latency", true)?).await?;
        let result = latency_once(ctx, &spool, mode).await;
        spool.stop().await?;
        out.extend(result?);
    }
    Ok(out)
}

async fn latency_once(ctx: &Ctx, spool: &Spool, mode: Mode) -> anyhow::Result<Vec<Sample>> {
    spool
        .put_queue(Spool::handler_patch(LATENCY_CONCURRENCY, mode, false))
        .await?;
    // Warm up: the claimer is running and the plugin loaded before the clock starts.
    let warm = 200;
    spool
        .store
        .enqueue(QUEUE, (0..warm).map(new_message).collect())
        .await?;
    if !spool
        .observer
        .wait_acked(warm, &ctx.cancel, Duration::from_secs(60))
        .await
    {
        if ctx.cancelled() {
            return Ok(Vec::new());
        }
        bail!("the latency warm-up did not drain within 60 s");
    }
    let base = spool.observer.acked();
    spool.observer.record(true);

    let sent: Arc<Mutex<Vec<(MessageId, Instant)>>> = Arc::default();
    let per_s = f64::from(ctx.plan.rate);
    let total = (ctx.plan.duration.as_secs_f64() * per_s).round() as u64;
    let mut tasks = tokio::task::JoinSet::new();
    let mut issued = 0u64;
    let started = Instant::now();
    while issued < total && !ctx.cancelled() {
        let due = ((started.elapsed().as_secs_f64() * per_s) as u64).min(total);
        while issued < due {
            let (store, sent) = (spool.store.clone(), sent.clone());
            let i = warm + issued;
            tasks.spawn(async move {
                let at = Instant::now();
                let ids = store.enqueue(QUEUE, vec![new_message(i)]).await?;
                let id = ids.first().context("enqueue returned no id")?.id;
                sent.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((id, at));
                Ok::<(), anyhow::Error>(())
            });
            issued += 1;
        }
        while let Some(r) = tasks.try_join_next() {
            r.context("producer task")??;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let offered_for = started.elapsed();
    while let Some(r) = tasks.join_next().await {
        r.context("producer task")??;
    }
    let done = spool
        .observer
        .wait_acked(base + issued, &ctx.cancel, Duration::from_secs(60))
        .await;
    let drained_for = started.elapsed();
    if !done && !ctx.cancelled() {
        bail!(
            "{} of {issued} latency messages were not acked 60 s after the load stopped",
            base + issued - spool.observer.acked()
        );
    }
    spool.observer.record(false);

    let sent: HashMap<MessageId, Instant> =
        std::mem::take(&mut *sent.lock().unwrap_or_else(|e| e.into_inner()))
            .into_iter()
            .collect();
    let (starts, acks) = spool.observer.take_records();
    let ms = |records: Vec<(MessageId, Instant)>| {
        let mut v: Vec<f64> = records
            .into_iter()
            .filter_map(|(id, t)| {
                let at = sent.get(&id)?;
                Some(t.saturating_duration_since(*at).as_secs_f64() * 1e3)
            })
            .collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let start_ms = ms(starts);
    let ack_ms = ms(acks);
    let m = mode.name();
    let mut out = Vec::new();
    for (what, v) in [("start", &start_ms), ("ack", &ack_ms)] {
        for (label, q) in [("p50", 0.50), ("p99", 0.99), ("max", 1.0)] {
            out.push(Sample::new(
                Scenario::Latency,
                format!("{m}, enqueue → {what} {label}"),
                Unit::Millis,
                percentile(v, q),
            ));
        }
    }
    let acked = spool.observer.acked().saturating_sub(base);
    out.push(Sample::new(
        Scenario::Latency,
        format!("{m}, offered rate"),
        Unit::MsgsPerSec,
        rate(issued, offered_for),
    ));
    out.push(Sample::new(
        Scenario::Latency,
        format!("{m}, acked rate (until drained)"),
        Unit::MsgsPerSec,
        rate(acked, drained_for),
    ));
    Ok(out)
}

// --- (e) plugin call overhead -----------------------------------------------------------------

/// (e): µs per call of echo's `handle`, in a fresh instance per call and in a warm instance.
/// Direct runtime calls: no store, no dispatcher.
pub async fn overhead(ctx: &Ctx) -> anyhow::Result<Vec<Sample>> {
    let wasm = ctx
        .plugin
        .clone()
        .context("the echo plugin was not loaded")?;
    let plugin = prepare_plugin(ctx.cache_dir(), wasm).await?;
    let limits = Limits::default();
    let call_ctx = null_context();
    let msg = PluginMessage {
        id: "1".to_owned(),
        queue: QUEUE.to_owned(),
        payload: payload(1),
        attempt: 1,
        ..PluginMessage::default()
    };
    let (n_fresh, n_reuse) = ctx.plan.overhead_calls;
    let mut out = Vec::new();

    ctx.progress
        .say(format_args!("overhead fresh: {n_fresh} calls"));
    for _ in 0..200 {
        plugin
            .handle(msg.clone(), &limits, call_ctx.clone())
            .await
            .map_err(|f| anyhow::anyhow!("echo failed: {f}"))?;
    }
    let started = Instant::now();
    let mut calls = 0u64;
    while calls < n_fresh && !ctx.cancelled() {
        plugin
            .handle(msg.clone(), &limits, call_ctx.clone())
            .await
            .map_err(|f| anyhow::anyhow!("echo failed: {f}"))?;
        calls += 1;
    }
    if calls > 0 {
        out.push(Sample::new(
            Scenario::Overhead,
            "fresh instance per call",
            Unit::Micros,
            started.elapsed().as_secs_f64() * 1e6 / calls as f64,
        ));
    }
    if ctx.cancelled() {
        return Ok(out);
    }

    ctx.progress
        .say(format_args!("overhead reuse: {n_reuse} calls"));
    let mut warm = WarmHandler::new(plugin, u32::MAX)
        .map_err(|f| anyhow::anyhow!("echo is not a handler: {f}"))?;
    for _ in 0..200 {
        warm.handle(msg.clone(), &limits, call_ctx.clone())
            .await
            .map_err(|f| anyhow::anyhow!("echo failed: {f}"))?;
    }
    let started = Instant::now();
    let mut calls = 0u64;
    while calls < n_reuse && !ctx.cancelled() {
        warm.handle(msg.clone(), &limits, call_ctx.clone())
            .await
            .map_err(|f| anyhow::anyhow!("echo failed: {f}"))?;
        calls += 1;
    }
    if calls > 0 {
        out.push(Sample::new(
            Scenario::Overhead,
            "warm instance (reuse)",
            Unit::Micros,
            started.elapsed().as_secs_f64() * 1e6 / calls as f64,
        ));
    }
    Ok(out)
}

// --- (f) peak RSS -----------------------------------------------------------------------------

/// What the RSS child prints (one JSON line on stdout).
#[derive(Debug, Serialize, Deserialize)]
pub struct RssReport {
    pub peak_rss_kib: Option<u64>,
    pub queued: u64,
    pub acked: u64,
    pub max_in_flight: u64,
    pub drain_s: f64,
}

/// (f): a child process (so the peak is this workload's alone) fills a queue with N messages and
/// drains it with 64 handlers; its `VmHWM` is the figure.
pub async fn rss(ctx: &Ctx) -> anyhow::Result<Vec<Sample>> {
    let mut out = Vec::new();
    let exe = own_executable()?;
    for &mode in &ctx.plan.modes {
        if ctx.cancelled() {
            return Ok(out);
        }
        ctx.progress.say(format_args!(
            "rss {}: child process, {} queued, {RSS_CONCURRENCY} handlers",
            mode.name(),
            ctx.plan.messages
        ));
        let mut cmd = tokio::process::Command::new(&exe);
        cmd.arg("bench")
            .arg("--rss-child")
            .arg(mode.name())
            .arg("--messages")
            .arg(ctx.plan.messages.to_string())
            .arg("--sync")
            .arg(ctx.plan.sync.name())
            .arg("--plugin")
            .arg(&ctx.plugin_path)
            .arg("--dir")
            .arg(&ctx.root)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let output = tokio::select! {
            o = cmd.output() => o.context("cannot run the RSS child process")?,
            _ = ctx.cancel.cancelled() => return Ok(out),
        };
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            bail!(
                "the RSS child process failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        let line = stdout
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .context("the RSS child process printed no report")?;
        let report: RssReport =
            serde_json::from_str(line).context("cannot parse the RSS child's report")?;
        let variant = format!(
            "{}, c={RSS_CONCURRENCY}, {} queued",
            mode.name(),
            report.queued
        );
        if let Some(kib) = report.peak_rss_kib {
            out.push(Sample::new(
                Scenario::Rss,
                variant.clone(),
                Unit::MiB,
                kib as f64 / 1024.0,
            ));
        }
        out.push(Sample::new(
            Scenario::Rss,
            format!("{variant}: most deliveries started, not yet settled"),
            Unit::Count,
            report.max_in_flight as f64,
        ));
    }
    Ok(out)
}

/// The program to start the RSS child from. On Linux `/proc/self/exe` names the running binary
/// even after a rebuild has replaced (or deleted) the file it was started from.
fn own_executable() -> anyhow::Result<PathBuf> {
    let proc_exe = PathBuf::from("/proc/self/exe");
    if proc_exe.exists() {
        return Ok(proc_exe);
    }
    std::env::current_exe().context("cannot find the spool executable")
}

/// The RSS workload, run inside the child process.
pub async fn rss_child(ctx: &Ctx, mode: Mode) -> anyhow::Result<RssReport> {
    let n = ctx.plan.messages;
    let started = Instant::now();
    let (acked, elapsed, max_in_flight) = drain_once(
        ctx,
        &format!("rss-{}", std::process::id()),
        mode,
        RSS_CONCURRENCY,
        n,
    )
    .await?;
    tracing::debug!(took = ?started.elapsed(), "rss workload done");
    Ok(RssReport {
        peak_rss_kib: peak_rss_kib(),
        queued: n,
        acked,
        max_in_flight,
        drain_s: elapsed.as_secs_f64(),
    })
}

// --- baseline ---------------------------------------------------------------------------------

/// Raw SQLite: insert one per transaction, insert 100 per transaction, claim+delete 100, and
/// lease 100 then ack them.
pub async fn baseline(ctx: &Ctx) -> anyhow::Result<Vec<Sample>> {
    if ctx.cancelled() {
        return Ok(Vec::new());
    }
    ctx.progress.say(format_args!(
        "baseline: raw SQLite, {} single inserts, {} batched, claim+delete",
        ctx.plan.single_messages, ctx.plan.messages
    ));
    let dir = ctx.next_dir("baseline");
    let (sync, single, n, cancel) = (
        ctx.plan.sync,
        ctx.plan.single_messages,
        ctx.plan.messages,
        ctx.cancel.clone(),
    );
    let dir2 = dir.clone();
    let b = tokio::task::spawn_blocking(move || {
        let r = baseline::run(&dir2, sync, single, n, &cancel);
        super::fixture::remove_dir_retrying(&dir2);
        r
    })
    .await
    .context("baseline task")??;
    Ok(vec![
        Sample::new(
            Scenario::Baseline,
            BaseKey::InsertSingle.variant(),
            Unit::MsgsPerSec,
            b.insert_single,
        ),
        Sample::new(
            Scenario::Baseline,
            BaseKey::InsertBatch.variant(),
            Unit::MsgsPerSec,
            b.insert_batch,
        ),
        Sample::new(
            Scenario::Baseline,
            BaseKey::ClaimDelete.variant(),
            Unit::MsgsPerSec,
            b.claim_delete,
        ),
        Sample::new(
            Scenario::Baseline,
            BaseKey::LeaseAck.variant(),
            Unit::MsgsPerSec,
            b.lease_ack,
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_bodies_are_json() {
        let one: serde_json::Value = serde_json::from_slice(&http_body(5, 6)).unwrap();
        assert!(one["payload"]["id"].is_string());
        let many: serde_json::Value = serde_json::from_slice(&http_body(0, 100)).unwrap();
        assert_eq!(many["messages"].as_array().unwrap().len(), 100);
        assert_eq!(payload(7).len(), 64);
    }

    #[test]
    fn percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert!(percentile(&[], 0.5).is_nan());
    }
}

//! `spool bench` flags, and the plan they resolve to.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};

use crate::model::InstanceMode;
use crate::store::postgres::DatabaseUrl;

/// Where `cargo build --release --target wasm32-wasip2 -p echo` puts the echo plugin.
pub const DEFAULT_PLUGIN: &str = "target/wasm32-wasip2/release/echo.wasm";
/// The misbehaving plugin of the `noisy` scenario, looked for next to the echo plugin.
const MISBEHAVE_FILE: &str = "misbehave.wasm";
/// The filter plugin of the `publish` scenario, looked for next to the echo plugin.
const FILTER_FILE: &str = "route_by_field.wasm";
/// The components the `deploy` scenario uploads: where `scripts/build.sh` puts the Python and
/// JavaScript handlers.
pub const DEFAULT_DEPLOY: [&str; 2] = [
    "target/lang-plugins/py-handler.wasm",
    "target/lang-plugins/js-handler.wasm",
];

/// One group of measurements. Letters follow the issue: a enqueue, b batch, c drain,
/// d latency, e overhead, f rss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ValueEnum)]
pub enum Scenario {
    /// (a) one message per request, 1 and 16 producers, in-process and over HTTP.
    #[value(alias = "a")]
    Enqueue,
    /// (b) 100 messages per request, 1 and 16 producers, in-process and over HTTP.
    #[value(alias = "b")]
    Batch,
    /// (c) pre-enqueued messages through the echo plugin, per concurrency and instance mode.
    #[value(alias = "c")]
    Drain,
    /// (d) enqueue -> handler start and enqueue -> ack at a fixed offered load.
    #[value(alias = "d")]
    Latency,
    /// (e) cost of one plugin call, fresh instance vs warm instance.
    #[value(alias = "e")]
    Overhead,
    /// (f) peak RSS of a process draining a full queue with 64 handlers in flight.
    #[value(alias = "f", alias = "memory")]
    Rss,
    /// Raw SQLite on the same file settings: insert, and claim+delete in batches of 100.
    Baseline,
    /// HTTP enqueue latency and another queue's drain rate, quiet and then while a third queue
    /// runs endless-loop and memory-bomb plugins at concurrency 8.
    Noisy,
    /// Cost of one queue's stats (store, `GET /v1/queues/{q}`, `GET /metrics`) at 10k and 1M
    /// queued messages (100k with --quick), beside the row count it replaced.
    Stats,
    /// HTTP and in-process batch throughput of publishing through routes (a `bench.*` pattern
    /// to one queue, to three, and through the route-by-field filter) as ratios of a direct
    /// batch enqueue in the same run; and the route matcher's cost at 10 and 10,000 routes.
    Publish,
    /// Fire lateness (p50, p99) of 10, 1,000 and 100,000 interval schedules firing at up to
    /// 1,000 per second through the schedule timer.
    Schedule,
    /// Upload → first ack of large (Python, JavaScript) plugins on a cold cache, and two running
    /// queues' HTTP enqueue p99 while they compile, against quiet. Not in the default set: it
    /// needs `scripts/build.sh`'s Python and JavaScript plugins (see --deploy).
    Deploy,
    /// Spool on PostgreSQL (`--database-url`): enqueue and drain through echo with one host
    /// and with three hosts on one database, beside raw PostgreSQL (insert, and a `SKIP LOCKED`
    /// claim then delete, 100 per transaction) on the same server. The only default with
    /// --database-url.
    #[value(alias = "pg")]
    Postgres,
}

impl Scenario {
    /// What runs without `--scenarios`: everything that needs only the Rust plugins.
    pub const ALL: [Scenario; 11] = [
        Scenario::Enqueue,
        Scenario::Batch,
        Scenario::Drain,
        Scenario::Latency,
        Scenario::Overhead,
        Scenario::Rss,
        Scenario::Baseline,
        Scenario::Noisy,
        Scenario::Stats,
        Scenario::Publish,
        Scenario::Schedule,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Enqueue => "enqueue",
            Scenario::Batch => "batch",
            Scenario::Drain => "drain",
            Scenario::Latency => "latency",
            Scenario::Overhead => "overhead",
            Scenario::Rss => "rss",
            Scenario::Baseline => "baseline",
            Scenario::Noisy => "noisy",
            Scenario::Stats => "stats",
            Scenario::Publish => "publish",
            Scenario::Schedule => "schedule",
            Scenario::Deploy => "deploy",
            Scenario::Postgres => "postgres",
        }
    }
}

/// Instance mode as a flag value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, ValueEnum)]
pub enum Mode {
    Fresh,
    Reuse,
}

impl Mode {
    pub fn instance_mode(self) -> InstanceMode {
        match self {
            Mode::Fresh => InstanceMode::Fresh,
            Mode::Reuse => InstanceMode::Reuse,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::Fresh => "fresh",
            Mode::Reuse => "reuse",
        }
    }
}

/// SQLite `synchronous` setting for the bench databases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SyncMode {
    /// WAL + NORMAL: a commit may be lost on power failure (not on a crash of the process).
    Normal,
    /// WAL + FULL: the WAL is synced on every commit.
    Full,
}

impl SyncMode {
    pub fn name(self) -> &'static str {
        match self {
            SyncMode::Normal => "normal",
            SyncMode::Full => "full",
        }
    }
}

/// Measure throughput, latency and memory on this machine (see docs/PERFORMANCE.md).
///
/// Every scenario runs against a fresh temporary database. Spool runs in this process (store,
/// runtime, dispatcher, and the HTTP API on a loopback port for the HTTP variants), driven the
/// way a producer would drive it. Figures are medians of --runs runs.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Scenarios to run, comma-separated: enqueue (a), batch (b), drain (c), latency (d),
    /// overhead (e), rss (f), baseline, noisy, stats, publish, schedule, deploy, postgres.
    /// Default: all but deploy and postgres; with --database-url, postgres.
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub scenarios: Vec<Scenario>,
    /// Messages per drain run (and the size of batch-enqueue, RSS and publish runs)
    /// [default: 100000, publish 500000; 10000 with --quick].
    #[arg(long, value_name = "N")]
    pub messages: Option<u64>,
    /// Offered load of the latency scenario, messages per second.
    #[arg(long, value_name = "MSGS_PER_S", default_value_t = 5000)]
    pub rate: u32,
    /// How long the latency scenario offers load [default: 30s; 5s with --quick].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Runs of each measurement; the median is reported [default: 3; 1 with --quick].
    #[arg(long, value_name = "N")]
    pub runs: Option<u32>,
    /// Small sizes for a smoke test: 10k messages, 5 s of latency, 1 run.
    #[arg(long)]
    pub quick: bool,
    /// Handler concurrencies of the drain scenario.
    #[arg(long, value_delimiter = ',', value_name = "LIST", default_values_t = [1u32, 2, 8, 64])]
    pub concurrency: Vec<u32>,
    /// Instance modes of the drain, latency and RSS scenarios.
    #[arg(long, value_delimiter = ',', value_name = "LIST", default_values = ["fresh", "reuse"])]
    pub modes: Vec<Mode>,
    /// SQLite `synchronous` setting (WAL either way).
    #[arg(long, value_name = "MODE", default_value = "normal")]
    pub sync: SyncMode,
    /// The echo handler component.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_PLUGIN)]
    pub plugin: PathBuf,
    /// The misbehave handler component the `noisy` scenario runs as the bad neighbour
    /// [default: misbehave.wasm next to --plugin].
    #[arg(long, value_name = "PATH")]
    pub misbehave: Option<PathBuf>,
    /// The route-by-field filter component the `publish` scenario routes through
    /// [default: route_by_field.wasm next to --plugin].
    #[arg(long, value_name = "PATH")]
    pub filter: Option<PathBuf>,
    /// Components the `deploy` scenario uploads, comma-separated; each is named after its file
    /// [default: the Python and JavaScript handlers `scripts/build.sh` builds].
    #[arg(long, value_delimiter = ',', value_name = "LIST")]
    pub deploy: Vec<PathBuf>,
    /// Print every figure, the machine and the settings as one JSON document on stdout; the
    /// table then goes to stderr.
    #[arg(long)]
    pub json: bool,
    /// Where to put the temporary databases [default: a new temporary directory, removed
    /// afterwards]. A given directory is kept; only the files the bench created are removed.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// A PostgreSQL server for the postgres scenario, e.g. postgres://USER@127.0.0.1:5432/postgres.
    /// Each measurement creates a database of its own there and drops it afterwards, so the
    /// role needs CREATEDB; the database named in the URL is only connected to.
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// Stop after this long and print what was measured (Ctrl-C does the same).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub max_time: Option<Duration>,
    /// Internal: run the RSS workload in this (child) process and print one JSON line.
    #[arg(long, hide = true, value_name = "MODE")]
    pub rss_child: Option<Mode>,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    crate::config::parse_duration(text)
}

/// The sizes a run uses, after `--quick` and the defaults are applied.
#[derive(Debug, Clone)]
pub struct Plan {
    pub scenarios: BTreeSet<Scenario>,
    /// Drain size, batch-enqueue total and RSS queue depth.
    pub messages: u64,
    /// Messages per single-enqueue variant.
    pub single_messages: u64,
    /// Messages per path of the `publish` scenario: at 300,000 msgs/s, 100,000 are a third of a
    /// second, too short for its ratios to hold from one run to the next.
    pub publish_messages: u64,
    pub rate: u32,
    pub duration: Duration,
    pub runs: u32,
    pub concurrency: Vec<u32>,
    pub modes: Vec<Mode>,
    pub sync: SyncMode,
    /// Calls per plugin-overhead measurement (fresh, reuse).
    pub overhead_calls: (u64, u64),
    /// How long the `noisy` scenario probes enqueue latency in each phase.
    pub noisy_probe: Duration,
    /// The longest the `noisy` scenario's drain may run in each phase.
    pub noisy_drain: Duration,
    pub quick: bool,
    /// The server of the postgres scenario.
    pub database_url: Option<DatabaseUrl>,
}

impl Plan {
    pub fn from_args(a: &BenchArgs) -> anyhow::Result<Plan> {
        let database_url = a
            .database_url
            .as_deref()
            .map(DatabaseUrl::parse)
            .transpose()
            .context("--database-url")?;
        let scenarios: BTreeSet<Scenario> = match (a.scenarios.is_empty(), &database_url) {
            (true, Some(_)) => [Scenario::Postgres].into_iter().collect(),
            (true, None) => Scenario::ALL.into_iter().collect(),
            (false, _) => a.scenarios.iter().copied().collect(),
        };
        if scenarios.contains(&Scenario::Postgres) && database_url.is_none() {
            anyhow::bail!(
                "the postgres scenario needs a server: pass --database-url \
                 postgres://USER@HOST:PORT/postgres (a role with CREATEDB)"
            );
        }
        let messages = a.messages.unwrap_or(if a.quick { 10_000 } else { 100_000 });
        if messages < 100 {
            anyhow::bail!("--messages must be at least 100 (got {messages})");
        }
        let runs = a.runs.unwrap_or(if a.quick { 1 } else { 3 });
        if runs == 0 {
            anyhow::bail!("--runs must be at least 1");
        }
        if a.rate == 0 {
            anyhow::bail!("--rate must be at least 1 message per second");
        }
        let duration = a
            .duration
            .unwrap_or(Duration::from_secs(if a.quick { 5 } else { 30 }));
        if duration.is_zero() {
            anyhow::bail!("--duration must be longer than 0");
        }
        let mut concurrency = a.concurrency.clone();
        concurrency.sort_unstable();
        concurrency.dedup();
        if let Some(bad) = concurrency
            .iter()
            .find(|c| **c == 0 || **c > crate::model::limits::MAX_CONCURRENCY)
        {
            anyhow::bail!(
                "--concurrency {bad} is out of range (1 to {})",
                crate::model::limits::MAX_CONCURRENCY
            );
        }
        let mut modes = a.modes.clone();
        modes.sort_unstable();
        modes.dedup();
        if concurrency.is_empty() || modes.is_empty() {
            anyhow::bail!("--concurrency and --modes need at least one value each");
        }
        Ok(Plan {
            scenarios,
            messages,
            single_messages: (messages / 5).max(100),
            publish_messages: a.messages.unwrap_or(if a.quick { 10_000 } else { 500_000 }),
            rate: a.rate,
            duration,
            runs,
            concurrency,
            modes,
            sync: a.sync,
            overhead_calls: if a.quick {
                (2_000, 20_000)
            } else {
                (20_000, 200_000)
            },
            noisy_probe: Duration::from_secs(if a.quick { 2 } else { 10 }),
            noisy_drain: Duration::from_secs(if a.quick { 5 } else { 20 }),
            quick: a.quick,
            database_url,
        })
    }

    pub fn wants(&self, s: Scenario) -> bool {
        self.scenarios.contains(&s)
    }

    /// Whether any scenario needs the echo plugin.
    pub fn needs_plugin(&self) -> bool {
        [
            Scenario::Drain,
            Scenario::Latency,
            Scenario::Overhead,
            Scenario::Rss,
            Scenario::Noisy,
            Scenario::Deploy,
            Scenario::Postgres,
        ]
        .iter()
        .any(|s| self.wants(*s))
    }
}

impl BenchArgs {
    /// The misbehave plugin: `--misbehave`, or the file next to the echo plugin.
    pub fn misbehave_path(&self) -> PathBuf {
        self.misbehave
            .clone()
            .unwrap_or_else(|| self.plugin.with_file_name(MISBEHAVE_FILE))
    }

    /// What the `deploy` scenario uploads: `--deploy`, or the Python and JavaScript handlers.
    pub fn deploy_paths(&self) -> Vec<PathBuf> {
        if self.deploy.is_empty() {
            DEFAULT_DEPLOY.iter().map(PathBuf::from).collect()
        } else {
            self.deploy.clone()
        }
    }

    /// The route-by-field filter: `--filter`, or the file next to the echo plugin.
    pub fn filter_path(&self) -> PathBuf {
        self.filter
            .clone()
            .unwrap_or_else(|| self.plugin.with_file_name(FILTER_FILE))
    }
}

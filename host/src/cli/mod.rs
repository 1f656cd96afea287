//! The `spool` command line. `serve` runs a server; `plugin run` runs a plugin locally; every
//! other command is a thin client of the HTTP API (`--server`, or `SPOOL_SERVER`).

mod client;
mod commands;
mod output;
mod serve;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use commands::run;

pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7700";

/// Spool: a durable message queue whose consumers are sandboxed WebAssembly components.
///
/// Start a server, deploy a handler plugin, create a queue that uses it, and send messages:
///
///   spool serve --db spool.db &
///   spool plugin deploy echo target/wasm32-wasip2/release/echo.wasm
///   spool queue create orders --handler echo --concurrency 8
///   spool enqueue orders '{"order": 42}'
///   spool queue stats orders
#[derive(Debug, Parser)]
#[command(
    name = "spool",
    version,
    propagate_version = true,
    max_term_width = 100,
    verbatim_doc_comment
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// Options every client command shares.
#[derive(Debug, Clone, Args)]
pub struct ClientOpts {
    /// The server to talk to.
    #[arg(long, env = "SPOOL_SERVER", default_value = DEFAULT_SERVER, global = true)]
    pub server: String,
    /// Print the server's JSON instead of a table (for scripts).
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server: queues, workers, plugin runtime and the HTTP API.
    Serve(ServeArgs),
    /// Add a message to a queue.
    Enqueue(EnqueueArgs),
    /// Create, configure and inspect queues.
    #[command(subcommand)]
    Queue(QueueCmd),
    /// Inspect and cancel single messages.
    #[command(subcommand)]
    Message(MessageCmd),
    /// Inspect, replay and purge dead letters.
    #[command(subcommand)]
    Dlq(DlqCmd),
    /// Deploy, list, roll back and try out plugins.
    #[command(subcommand)]
    Plugin(PluginCmd),
    /// Measure throughput, latency and memory on this machine (see docs/PERFORMANCE.md).
    Bench(crate::bench::BenchArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// SQLite database file (created if missing).
    #[arg(long, value_name = "PATH")]
    pub db: Option<PathBuf>,
    /// Address for the HTTP API; port 0 picks a free port (the real one is printed).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Configuration file (see examples/spool.toml); flags override it.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where precompiled plugins are cached [default: <db>.cache].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// How long shutdown waits for running handlers before releasing their messages.
    #[arg(long, value_name = "DURATION")]
    pub drain_timeout: Option<String>,
    /// How often expired leases are recovered, TTLs expired and old records removed.
    #[arg(long, value_name = "DURATION")]
    pub maintenance_interval: Option<String>,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct EnqueueArgs {
    /// The queue (it must exist: see `spool queue create`).
    pub queue: String,
    /// The payload as JSON, e.g. '{"order": 42}'. Reads standard input when omitted or "-".
    pub payload: Option<String>,
    /// Higher is handled first (with the default `priority` strategy).
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub priority: i32,
    /// Deliver no earlier than this from now, e.g. 30s or 5m.
    #[arg(long, value_name = "DURATION", conflicts_with = "at")]
    pub delay: Option<String>,
    /// Deliver no earlier than this time (RFC 3339, e.g. 2026-12-01T09:00:00Z).
    #[arg(long, value_name = "TIME")]
    pub at: Option<String>,
    /// Expire the message if no handler has started it within this time.
    #[arg(long, value_name = "DURATION")]
    pub ttl: Option<String>,
    /// Idempotency key: enqueueing the same key again returns the first message's id.
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,
    /// With --key: replace the waiting message's payload instead of keeping the first one.
    #[arg(long, requires = "key")]
    pub supersede: bool,
    /// A header, repeatable: --header source=web --header trace=abc.
    #[arg(long = "header", value_name = "NAME=VALUE")]
    pub headers: Vec<String>,
    #[command(flatten)]
    pub client: ClientOpts,
}

/// Queue settings; each flag left out keeps its current (or default) value.
#[derive(Debug, Clone, Args)]
pub struct QueueSettings {
    /// Handler plugin that consumes the queue ("none" to stop consuming).
    #[arg(long, value_name = "PLUGIN")]
    pub handler: Option<String>,
    /// Messages handled at once on this host.
    #[arg(long)]
    pub concurrency: Option<u32>,
    /// Deliveries before a failing message is dead-lettered.
    #[arg(long)]
    pub max_attempts: Option<u32>,
    /// First retry delay; doubles each attempt.
    #[arg(long, value_name = "DURATION")]
    pub backoff_base: Option<String>,
    /// Longest retry delay.
    #[arg(long, value_name = "DURATION")]
    pub backoff_max: Option<String>,
    /// How long a delivery holds a message without a heartbeat.
    #[arg(long, value_name = "DURATION")]
    pub lease: Option<String>,
    /// Wall-clock limit for one handler call.
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// Instruction budget for one handler call.
    #[arg(long)]
    pub fuel: Option<u64>,
    /// Memory limit of one plugin instance, in MiB.
    #[arg(long)]
    pub memory_mb: Option<u32>,
    /// Order of delivery.
    #[arg(long, value_parser = ["priority", "fifo", "lifo", "weighted-random"])]
    pub strategy: Option<String>,
    /// A fresh plugin instance per message, or a warm one per worker.
    #[arg(long, value_parser = ["fresh", "reuse"])]
    pub instance_mode: Option<String>,
    /// Stop (true) or resume (false) handing out messages.
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub paused: Option<bool>,
    /// TTL for messages enqueued without one ("none" for no TTL).
    #[arg(long, value_name = "DURATION")]
    pub default_ttl: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum QueueCmd {
    /// Create a queue (or update it: same as `set`).
    Create {
        name: String,
        #[command(flatten)]
        settings: QueueSettings,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Change settings of a queue; only the flags given change.
    Set {
        name: String,
        #[command(flatten)]
        settings: QueueSettings,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Pause a queue: messages are accepted but not handed out.
    Pause {
        name: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Resume a paused queue.
    Resume {
        name: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Show a queue's depths by state and totals.
    Stats {
        name: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Show a queue's settings and stats.
    Get {
        name: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// List queues with their stats.
    List {
        #[command(flatten)]
        client: ClientOpts,
    },
    /// List a queue's messages, oldest first.
    Messages {
        name: String,
        /// Only messages in this state (scheduled, ready, leased, acked, dead, cancelled, expired).
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Continue after a previous page (its next_cursor).
        #[arg(long)]
        cursor: Option<String>,
        #[command(flatten)]
        client: ClientOpts,
    },
}

#[derive(Debug, Subcommand)]
pub enum MessageCmd {
    /// Show one message: state, attempts, last error.
    Get {
        id: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Cancel a waiting message (a running one is cancelled when its handler returns).
    Cancel {
        id: String,
        #[command(flatten)]
        client: ClientOpts,
    },
}

#[derive(Debug, Subcommand)]
pub enum DlqCmd {
    /// List dead letters.
    List {
        #[arg(long)]
        queue: Option<String>,
        /// trap, fuel, timeout, memory, handler, no-plugin, interface, lease-expired, host.
        #[arg(long)]
        category: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        cursor: Option<String>,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Send a dead letter back to its queue with its attempts reset.
    Replay {
        id: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Mark a dead letter as reviewed (it is removed after the retention window).
    Reviewed {
        id: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Delete a dead letter now.
    Purge {
        id: String,
        #[command(flatten)]
        client: ClientOpts,
    },
}

#[derive(Debug, Subcommand)]
pub enum PluginCmd {
    /// Upload a component as a new version of NAME and activate it.
    Deploy {
        name: String,
        file: PathBuf,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// List plugins and their versions.
    List {
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Re-activate the version before the active one.
    Rollback {
        name: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Run a plugin on one message locally, without a server, and print what it did.
    Run(PluginRunArgs),
}

#[derive(Debug, Args)]
pub struct PluginRunArgs {
    /// The component (.wasm) to run.
    pub file: PathBuf,
    /// The message payload as JSON.
    #[arg(long, default_value = "null")]
    pub payload: String,
    /// A header, repeatable: --header k=v.
    #[arg(long = "header", value_name = "NAME=VALUE")]
    pub headers: Vec<String>,
    /// The attempt number the plugin sees.
    #[arg(long, default_value_t = 1)]
    pub attempt: u32,
    /// The queue name the plugin sees.
    #[arg(long, default_value = "local")]
    pub queue: String,
    /// A plugin config value, repeatable: --config key=value.
    #[arg(long = "config", value_name = "KEY=VALUE")]
    pub config: Vec<String>,
    /// Wall-clock limit for the call.
    #[arg(long, default_value = "5s")]
    pub timeout: String,
    /// Instruction budget for the call.
    #[arg(long, default_value_t = 1_000_000_000)]
    pub fuel: u64,
    /// Memory limit in MiB.
    #[arg(long, default_value_t = 64)]
    pub memory_mb: u32,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_the_documented_commands() {
        let c =
            Cli::try_parse_from(["spool", "enqueue", "orders", "{}", "--priority", "-2"]).unwrap();
        assert!(matches!(c.command, Command::Enqueue(ref a) if a.priority == -2));
        let c = Cli::try_parse_from(["spool", "queue", "set", "q", "--paused"]).unwrap();
        match c.command {
            Command::Queue(QueueCmd::Set { settings, .. }) => {
                assert_eq!(settings.paused, Some(true))
            }
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["spool", "enqueue", "q", "{}", "--supersede"]).is_err());
    }
}

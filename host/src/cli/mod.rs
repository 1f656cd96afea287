//! The `spool` command line. `serve` runs a server; `plugin run`, `token` and `bench` work
//! locally; every other command is a thin client of the HTTP API (`--server`/`SPOOL_SERVER`,
//! `--token`/`SPOOL_TOKEN`).
//!
//! Layout: this file holds the top-level parser and the options every client command shares;
//! each command group lives in its own file with its clap definitions next to what it does
//! (`enqueue`, `publish`, `route`, `schedule`, `queue`, `message`, `dlq`, `plugin`, `status`,
//! `token`, `check`, `migrate`). `commands` dispatches
//! and holds the helpers they share, `client` is the HTTP client, `output` renders tables,
//! times and progress bars, and `serve` runs the server.

/// `print!` for command output. A closed pipe (`spool queue list | head -1`) ends the program
/// quietly, as other Unix tools do, where `print!` would panic.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::output::emit(&format!($($arg)*))
    };
}

/// `println!` for command output, with `out!`'s handling of a closed pipe.
macro_rules! outln {
    () => {
        $crate::cli::output::emit("\n")
    };
    ($($arg:tt)*) => {
        $crate::cli::output::emit(&format!("{}\n", format_args!($($arg)*)))
    };
}

mod backup;
mod check;
mod client;
mod commands;
mod dlq;
mod enqueue;
mod message;
mod migrate;
pub(crate) mod output;
mod plugin;
mod plugin_build;
mod plugin_config;
mod plugin_new;
mod publish;
mod queue;
mod route;
mod schedule;
mod serve;
mod status;
mod token;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

pub use commands::run;
pub use dlq::DlqCmd;
pub use enqueue::EnqueueArgs;
pub use message::MessageCmd;
pub use plugin::{PluginCmd, PluginRunArgs};
pub use publish::PublishArgs;
pub use queue::{QueueCmd, QueueSettings};
pub use route::RouteCmd;
pub use schedule::ScheduleCmd;
pub use token::TokenCmd;

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
///
/// Client commands talk to --server (SPOOL_SERVER, default http://127.0.0.1:7700) and send
/// --token (SPOOL_TOKEN) when the server requires one. Add --json to any of them for the
/// server's JSON. A task-by-task guide is in docs/CLI.md.
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

/// Paging options of the listing commands (`queue messages`, `dlq list`).
#[derive(Debug, Clone, Args)]
pub struct PageOpts {
    /// Items per page, 1 to 1000 [default: 50, or 1000 with --all].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: Option<u32>,
    /// Continue after a previous page (its next_cursor).
    #[arg(long)]
    pub cursor: Option<String>,
    /// Follow next_cursor to the last page (at most 100,000 items).
    #[arg(long)]
    pub all: bool,
}

/// Options every client command shares.
#[derive(Debug, Clone, Args)]
pub struct ClientOpts {
    /// The server to talk to.
    #[arg(long, env = "SPOOL_SERVER", default_value = DEFAULT_SERVER, global = true)]
    pub server: String,
    /// Bearer token for a server that requires one (create one with `spool token new`).
    // The value is a secret: never echo it in `--help`.
    #[arg(
        long,
        env = "SPOOL_TOKEN",
        global = true,
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// Print the server's JSON instead of a table (for scripts).
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server: queues, workers, plugin runtime and the HTTP API.
    Serve(ServeArgs),
    /// Add a message to a queue, or many from a JSON Lines file
    ///
    /// Examples:
    ///
    ///   spool enqueue orders '{"order": 42}' --priority 5 --delay 30s
    ///   echo '{"order": 43}' | spool enqueue orders --key order-43
    ///   spool enqueue orders --file messages.jsonl    # one {"payload": ...} object per line
    #[command(verbatim_doc_comment)]
    Enqueue(EnqueueArgs),
    /// Publish a message to a topic: every queue whose route matches gets it (docs/ROUTING.md)
    ///
    /// Takes the same options as `spool enqueue`, and prints where the message went (queue and
    /// id of each delivery).
    ///
    /// Examples:
    ///
    ///   spool publish orders.eu.created '{"order": 42}'
    ///   spool publish orders.eu.created '{"order": 43}' --header tier=gold --key order-43
    ///   spool publish orders.eu.created --file orders.jsonl   # one {"payload": ...} per line
    #[command(verbatim_doc_comment)]
    Publish(PublishArgs),
    /// Bind topic patterns to queues, with header conditions and filter plugins
    ///
    /// Examples:
    ///
    ///   spool route add 'orders.*' orders
    ///   spool route add 'orders.#' audit --header tier=gold
    ///   spool route add 'orders.#' orders --filter route-by-field
    ///   spool route list
    ///   spool route delete 3
    #[command(subcommand, verbatim_doc_comment)]
    Route(RouteCmd),
    /// Cron, interval and one-shot schedules that enqueue or publish (docs/SCHEDULES.md)
    ///
    /// Each fire instant is enqueued exactly once, also across restarts and crashes; time zones
    /// and daylight saving time follow the tz database.
    ///
    /// Examples:
    ///
    ///   spool schedule add --cron '0 30 9 * * Mon-Fri' --timezone Europe/Paris --queue reports
    ///   spool schedule add --every 30s --topic health.ping '{"from": "spool"}'
    ///   spool schedule list
    ///   spool schedule show 3
    ///   spool schedule run 3       # fire once now
    ///   spool schedule pause 3
    #[command(subcommand, verbatim_doc_comment)]
    Schedule(ScheduleCmd),
    /// Create, configure and inspect queues
    ///
    /// Examples:
    ///
    ///   spool queue create orders --handler echo --concurrency 8 --max-attempts 5
    ///   spool queue list
    ///   spool queue messages orders --state ready --all
    ///   spool queue delete orders --force    # with the messages it still holds
    ///   spool queue set orders --breaker-failures 10 --breaker-cooldown 5s
    ///   spool queue reset-breaker orders
    #[command(subcommand, verbatim_doc_comment)]
    Queue(QueueCmd),
    /// Inspect and cancel single messages, and trace chains of publishes
    ///
    /// Examples:
    ///
    ///   spool message get 42
    ///   spool message cancel 42
    ///   spool message trace 42
    #[command(subcommand, verbatim_doc_comment)]
    Message(MessageCmd),
    /// Inspect, replay and purge dead letters
    ///
    /// Examples:
    ///
    ///   spool dlq list --queue orders --category trap
    ///   spool dlq replay --all --queue orders
    ///   spool dlq purge --all --reviewed --yes
    #[command(subcommand, verbatim_doc_comment)]
    Dlq(DlqCmd),
    /// Deploy, list, activate, roll back, delete and try out plugins
    ///
    /// Examples:
    ///
    ///   spool plugin deploy echo target/wasm32-wasip2/release/echo.wasm
    ///   spool plugin list
    ///   spool plugin show echo         # versions and who activated which, when
    ///   spool plugin activate echo 1
    ///   spool plugin run target/wasm32-wasip2/release/echo.wasm --payload '{"hi": 1}'
    #[command(subcommand, verbatim_doc_comment)]
    Plugin(PluginCmd),
    /// Show whether the server is up (/healthz) and ready to serve requests (/readyz)
    ///
    /// Exits non-zero when the server is unreachable or not ready, so scripts can wait on it.
    ///
    /// Examples:
    ///
    ///   spool status
    ///   until spool status >/dev/null 2>&1; do sleep 1; done
    #[command(verbatim_doc_comment)]
    Status {
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Print the server's Prometheus metrics (GET /metrics) as text
    ///
    /// Examples:
    ///
    ///   spool metrics
    ///   spool metrics | grep '^spool_'
    #[command(verbatim_doc_comment)]
    Metrics {
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Create API tokens and hash them for spool.toml (local, no server needed)
    ///
    /// Examples:
    ///
    ///   spool token new --name deploy-bot --role producer
    ///   printf '%s' "$SPOOL_TOKEN" | spool token hash
    #[command(subcommand, verbatim_doc_comment)]
    Token(TokenCmd),
    /// Measure throughput, latency and memory on this machine (see docs/PERFORMANCE.md).
    Bench(crate::bench::BenchArgs),
    /// Back the running server's database up, while it works, into its backup directory
    ///
    /// The server writes a consistent copy (the state of one moment) to FILE inside the
    /// directory it was started with (--backup-dir, or admin.backup_dir in spool.toml); FILE
    /// is a path on the server, relative to that directory, and must not exist. To restore,
    /// start a server on the copy: `spool serve --db COPY`.
    ///
    /// Examples:
    ///
    ///   spool backup spool-$(date +%F).db
    ///   spool backup nightly/spool.db --json
    #[command(verbatim_doc_comment)]
    Backup(backup::BackupArgs),
    /// Check a database file for damage (local, no server needed)
    ///
    /// Runs PRAGMA quick_check (--full: integrity_check), looks for committed transactions a
    /// damaged write-ahead log would drop, and compares the message ids with the id mark. It
    /// opens the file read-only, so it is safe on a copy or while a server runs. Exits non-zero
    /// when the file is damaged.
    ///
    /// Examples:
    ///
    ///   spool check --db spool.db
    ///   spool check --db /backups/spool-monday.db --full --json
    #[command(verbatim_doc_comment)]
    Check(check::CheckArgs),
    /// Copy a SQLite database into PostgreSQL, to run several hosts on it (local, no server)
    ///
    /// Copies queues, messages in every state (ids kept), dead letters, plugins with their
    /// versions and history, key-value data, configuration, secrets, grants, routes, schedules
    /// and their fires, in batches with progress on stderr. Then it writes the queue counters,
    /// moves the id sequences past every id the file handed out, and compares the counts of
    /// every table and of every queue's messages per state. Stop the server on the file first.
    /// The target must be an empty database; an interrupted copy is resumed by running the
    /// same command again, and a finished one is not repeated. See docs/POSTGRES.md.
    ///
    /// Examples:
    ///
    ///   export SPOOL_DATABASE_URL='postgres://spool:PASSWORD@db.internal:5432/spool'
    ///   spool migrate --from sqlite:spool.db
    ///   spool migrate --from sqlite:/var/lib/spool/spool.db --to postgres://spool@db/spool --json
    #[command(verbatim_doc_comment)]
    Migrate(migrate::MigrateArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// SQLite database file (created if missing).
    #[arg(long, value_name = "PATH", conflicts_with = "database_url")]
    pub db: Option<PathBuf>,
    /// A PostgreSQL database instead of the SQLite file, shared by every host given the same
    /// URL: postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE. Prefer the environment variable
    /// for a URL with a password, so it stays out of `ps` [config: store.url].
    #[arg(
        long,
        value_name = "URL",
        env = "SPOOL_DATABASE_URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
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
    /// The directory online backups (`spool backup`, POST /v1/admin/backup) are written to;
    /// none: backups over the API are refused [config: admin.backup_dir].
    #[arg(long, value_name = "DIR")]
    pub backup_dir: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Start even though the database's write-ahead log (<db>-wal) is damaged and committed
    /// transactions in it would be dropped. Without it such a server refuses to start; prefer
    /// restoring a backup, and pass this only to accept the loss (`spool check --db` shows it).
    #[arg(long)]
    pub accept_wal_loss: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    /// `--help` teaches: every command and every flag says what it is for.
    #[test]
    fn every_command_and_argument_is_documented() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                if arg.get_help().is_none() {
                    missing.push(format!("{path} <{id}>"));
                }
            }
            for sub in cmd.get_subcommands() {
                let sub_path = format!("{path} {}", sub.get_name());
                if sub.get_about().is_none() {
                    missing.push(sub_path.clone());
                }
                walk(sub, &sub_path, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "spool", &mut missing);
        assert!(missing.is_empty(), "undocumented: {missing:#?}");
    }

    /// The top level and each client group show example invocations in their long help.
    #[test]
    fn groups_show_examples() {
        let cli = Cli::command();
        let top = cli
            .get_long_about()
            .or(cli.get_about())
            .unwrap()
            .to_string();
        assert!(top.contains("  spool enqueue"), "{top}");
        for name in [
            "enqueue", "publish", "route", "schedule", "queue", "message", "dlq", "plugin",
            "status", "metrics", "token", "check", "migrate",
        ] {
            let sub = cli.find_subcommand(name).unwrap();
            let long = sub
                .get_long_about()
                .map(|s| s.to_string())
                .unwrap_or_default();
            assert!(
                long.contains(&format!("  spool {name}")) || long.contains("  until spool"),
                "`spool {name} --help` shows an example:\n{long}"
            );
        }
    }

    #[test]
    fn the_design_verbs_stay() {
        let cli = Cli::command();
        for name in [
            "serve", "enqueue", "publish", "route", "schedule", "queue", "dlq", "plugin", "bench",
        ] {
            assert!(cli.find_subcommand(name).is_some(), "{name}");
        }
    }

    #[test]
    fn parses_the_documented_commands() {
        let c =
            Cli::try_parse_from(["spool", "enqueue", "orders", "{}", "--priority", "-2"]).unwrap();
        assert!(matches!(c.command, Command::Enqueue(ref a) if a.message.priority == -2));
        let c = Cli::try_parse_from(["spool", "queue", "set", "q", "--paused"]).unwrap();
        match c.command {
            Command::Queue(QueueCmd::Set { settings, .. }) => {
                assert_eq!(settings.paused, Some(true))
            }
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["spool", "enqueue", "q", "{}", "--supersede"]).is_err());
    }

    #[test]
    fn migrate_takes_a_sqlite_source_and_a_url() {
        let c = Cli::try_parse_from([
            "spool",
            "migrate",
            "--from",
            "sqlite:spool.db",
            "--to",
            "postgres://spool@db/spool",
        ])
        .unwrap();
        match c.command {
            Command::Migrate(a) => {
                assert_eq!(a.from, "sqlite:spool.db");
                assert_eq!(a.batch, 5_000);
                assert!(!a.json);
            }
            other => panic!("{other:?}"),
        }
        assert!(
            Cli::try_parse_from([
                "spool", "migrate", "--from", "sqlite:x", "--to", "u", "--batch", "0"
            ])
            .is_err()
        );
    }

    #[test]
    fn token_is_a_client_option() {
        let c =
            Cli::try_parse_from(["spool", "queue", "list", "--token", "t0k", "--json"]).unwrap();
        match c.command {
            Command::Queue(QueueCmd::List { client }) => {
                assert_eq!(client.token.as_deref(), Some("t0k"));
                assert!(client.json);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bulk_enqueue_flags() {
        let c = Cli::try_parse_from([
            "spool", "enqueue", "q", "--file", "m.jsonl", "--batch", "100",
        ])
        .unwrap();
        match c.command {
            Command::Enqueue(a) => {
                assert_eq!(
                    a.message.file.as_deref(),
                    Some(std::path::Path::new("m.jsonl"))
                );
                assert_eq!(a.message.batch, 100);
            }
            other => panic!("{other:?}"),
        }
        // A file and an inline payload (or per-message flags) do not mix.
        for bad in [
            vec!["spool", "enqueue", "q", "{}", "--file", "m.jsonl"],
            vec!["spool", "enqueue", "q", "--file", "m.jsonl", "--key", "k"],
            vec!["spool", "enqueue", "q", "--file", "m.jsonl", "--batch", "0"],
            vec![
                "spool", "enqueue", "q", "--file", "m.jsonl", "--batch", "1001",
            ],
            vec!["spool", "enqueue", "q", "--batch", "10"],
        ] {
            assert!(Cli::try_parse_from(&bad).is_err(), "{bad:?} is refused");
        }
    }

    #[test]
    fn dlq_bulk_flags() {
        let c = Cli::try_parse_from(["spool", "dlq", "replay", "--all", "--queue", "q"]).unwrap();
        assert!(matches!(
            c.command,
            Command::Dlq(DlqCmd::Replay { all: true, id: None, ref queue, .. }) if queue.as_deref() == Some("q")
        ));
        let c = Cli::try_parse_from(["spool", "dlq", "replay", "17"]).unwrap();
        assert!(matches!(
            c.command,
            Command::Dlq(DlqCmd::Replay { all: false, .. })
        ));
        let c =
            Cli::try_parse_from(["spool", "dlq", "purge", "--all", "--reviewed", "--yes"]).unwrap();
        assert!(matches!(
            c.command,
            Command::Dlq(DlqCmd::Purge {
                all: true,
                yes: true,
                reviewed: Some(true),
                ..
            })
        ));
        for bad in [
            vec!["spool", "dlq", "replay"],
            vec!["spool", "dlq", "replay", "17", "--all"],
            vec!["spool", "dlq", "replay", "17", "--queue", "q"],
            vec!["spool", "dlq", "purge"],
            vec!["spool", "dlq", "purge", "17", "--category", "trap"],
            vec!["spool", "dlq", "purge", "--all", "--category", "nonsense"],
        ] {
            assert!(Cli::try_parse_from(&bad).is_err(), "{bad:?} is refused");
        }
    }

    #[test]
    fn listing_flags() {
        let c = Cli::try_parse_from([
            "spool", "queue", "messages", "q", "--state", "ready", "--all",
        ])
        .unwrap();
        assert!(matches!(
            c.command,
            Command::Queue(QueueCmd::Messages {
                page: PageOpts {
                    all: true,
                    limit: None,
                    ..
                },
                ..
            })
        ));
        assert!(
            Cli::try_parse_from(["spool", "queue", "messages", "q", "--state", "nope"]).is_err()
        );
        assert!(Cli::try_parse_from(["spool", "queue", "messages", "q", "--limit", "0"]).is_err());
        let c = Cli::try_parse_from(["spool", "dlq", "list", "--reviewed", "false"]).unwrap();
        assert!(matches!(
            c.command,
            Command::Dlq(DlqCmd::List {
                reviewed: Some(false),
                ..
            })
        ));
    }

    #[test]
    fn routing_commands_parse() {
        let c = Cli::try_parse_from([
            "spool",
            "publish",
            "orders.eu",
            "{}",
            "--header",
            "a=1",
            "--key",
            "k",
        ])
        .unwrap();
        assert!(matches!(c.command, Command::Publish(ref a)
            if a.topic == "orders.eu" && a.message.key.as_deref() == Some("k")));
        let c = Cli::try_parse_from(["spool", "publish", "t", "--file", "m.jsonl"]).unwrap();
        assert!(matches!(c.command, Command::Publish(ref a) if a.message.file.is_some()));
        let c = Cli::try_parse_from([
            "spool",
            "route",
            "add",
            "orders.#",
            "audit",
            "--header",
            "tier=gold",
            "--filter",
            "f",
            "--fuel",
            "1000",
        ])
        .unwrap();
        assert!(matches!(
            c.command,
            Command::Route(RouteCmd::Add { fuel: Some(1000), ref headers, .. }) if headers.len() == 1
        ));
        let c = Cli::try_parse_from(["spool", "dlq", "replay", "9", "--skip-filter"]).unwrap();
        assert!(matches!(
            c.command,
            Command::Dlq(DlqCmd::Replay {
                skip_filter: true,
                ..
            })
        ));
        assert!(Cli::try_parse_from(["spool", "message", "trace", "9"]).is_ok());
        for bad in [
            vec!["spool", "publish", "t", "{}", "--file", "m.jsonl"],
            vec!["spool", "publish", "t", "{}", "--topic", "u"],
            vec!["spool", "route", "add", "a.*"],
            vec!["spool", "route", "add", "a.*", "q", "--fuel", "10"],
            vec!["spool", "dlq", "replay", "--all", "--skip-filter"],
        ] {
            assert!(Cli::try_parse_from(&bad).is_err(), "{bad:?} is refused");
        }
    }

    #[test]
    fn token_commands_parse() {
        let c = Cli::try_parse_from(["spool", "token", "new", "--name", "ci", "--role", "admin"])
            .unwrap();
        assert!(matches!(c.command, Command::Token(TokenCmd::New { .. })));
        assert!(Cli::try_parse_from(["spool", "token", "new", "--role", "root"]).is_err());
        let c = Cli::try_parse_from(["spool", "token", "hash", "abc"]).unwrap();
        assert!(matches!(c.command, Command::Token(TokenCmd::Hash { .. })));
    }
}

//! `spool plugin`: deploy, list, show, activate, roll back and delete plugins on a server, or
//! run one locally.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::ClientOpts;
use super::client::seg;
use super::commands::{client, done, key_values, now_ms, table_or};
use super::output::{ago_cell, bytes, cell, fields, json as print_json, progress, render_fields};
use crate::config::parse_duration;

#[derive(Debug, Subcommand)]
pub enum PluginCmd {
    /// Upload a component as a new version of NAME and activate it
    ///
    /// The bytes of an existing version activate that version again instead of storing a copy.
    ///
    /// Examples:
    ///
    ///   spool plugin deploy echo target/wasm32-wasip2/release/echo.wasm
    #[command(verbatim_doc_comment)]
    Deploy {
        /// Plugin name (queues refer to it with --handler): A-Z a-z 0-9 . _ -
        name: String,
        /// The component file (.wasm), e.g. target/wasm32-wasip2/release/echo.wasm.
        file: PathBuf,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// List plugins and their versions (* marks the active one).
    List {
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Show one plugin: its versions and the history of its active version
    ///
    /// The history says who (the API token's name) made which version active, when, and how
    /// (deploy, rollback or activate).
    ///
    /// Examples:
    ///
    ///   spool plugin show echo
    ///   spool plugin show echo --json | jq '.history[-1]'
    #[command(verbatim_doc_comment)]
    Show {
        /// The plugin to show.
        name: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Make an earlier (or later) version active, by number
    ///
    /// Examples:
    ///
    ///   spool plugin activate echo 1
    #[command(verbatim_doc_comment)]
    Activate {
        /// The plugin.
        name: String,
        /// The version to activate (`spool plugin show NAME` lists them).
        // Not named `version`: that id belongs to `--version`, which clap propagates.
        #[arg(value_name = "VERSION")]
        number: u32,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Re-activate the version before the active one
    ///
    /// Examples:
    ///
    ///   spool plugin rollback echo
    #[command(verbatim_doc_comment)]
    Rollback {
        /// The plugin to roll back.
        name: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Delete a plugin: every version, its history and its key-value data
    ///
    /// Refused while a queue uses it as its handler.
    ///
    /// Examples:
    ///
    ///   spool queue set orders --handler none && spool plugin delete old-handler
    #[command(verbatim_doc_comment)]
    Delete {
        /// The plugin to delete.
        name: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Run a plugin on messages locally, without a server, and print what it did
    ///
    /// Each message runs in a fresh instance with the same fuel, wall-clock and memory limits
    /// a server enforces: the flags' values, or with --limits-from those of a queue on a
    /// server (--server, SPOOL_SERVER).
    ///
    /// Examples:
    ///
    ///   spool plugin run target/orders.wasm --payload '{"id": 7}'
    ///   spool plugin run target/orders.wasm --payload "$(cat sample.json)" --limits-from orders
    ///   spool plugin run target/orders.wasm --messages batch.jsonl --json
    #[command(verbatim_doc_comment)]
    Run(PluginRunArgs),
    /// Create a plugin project in Rust, Python or JavaScript, ready to build
    ///
    /// The project carries the WIT contract and the guest SDK of its language, so it builds
    /// with only that language's toolchain; its README says how to build, try and deploy it.
    ///
    /// Examples:
    ///
    ///   spool plugin new orders --lang rust
    ///   spool plugin new orders-py --lang python
    ///   spool plugin new router --lang js --world filter --dir plugins/router
    #[command(verbatim_doc_comment)]
    New(super::plugin_new::PluginNewArgs),
    /// Build a plugin project and print the component's path as the last line
    ///
    /// Rust (Cargo.toml): cargo build --release --target wasm32-wasip2. Python (app.py):
    /// componentize-py. JavaScript (package.json): npm install if node_modules is missing,
    /// then npm run build. The toolchain's output goes to stderr.
    ///
    /// Examples:
    ///
    ///   spool plugin build orders
    ///   spool plugin deploy orders "$(spool plugin build orders)"
    ///   spool plugin run "$(spool plugin build)" --payload "$(cat sample.json)"
    #[command(verbatim_doc_comment)]
    Build(super::plugin_build::PluginBuildArgs),
    /// A plugin's configuration values, write-only secrets and grants on the server.
    #[command(subcommand)]
    Config(super::plugin_config::PluginConfigCmd),
}

#[derive(Debug, Args)]
pub struct PluginRunArgs {
    /// The component (.wasm) to run.
    pub file: PathBuf,
    /// The message payload as JSON.
    #[arg(long, default_value = "null", conflicts_with = "messages")]
    pub payload: String,
    /// Run several messages, one fresh instance each, sharing one key-value store (as on a
    /// server): a JSON array or JSON Lines file (`-` for
    /// stdin) of objects like {"payload": {...}, "headers": {"k": "v"}, "attempt": 2,
    /// "topic": "t"} (only payload is required; the flags give the rest's defaults). A report
    /// per message, then a summary; exits non-zero if any failed.
    #[arg(long, value_name = "FILE")]
    pub messages: Option<PathBuf>,
    /// A header, repeatable: --header k=v.
    #[arg(long = "header", value_name = "NAME=VALUE")]
    pub headers: Vec<String>,
    /// The attempt number the plugin sees.
    #[arg(long, default_value_t = 1)]
    pub attempt: u32,
    /// The queue name the plugin sees [default: the --limits-from queue, else "local"].
    #[arg(long)]
    pub queue: Option<String>,
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
    /// Take the limits (timeout_ms, fuel, memory_mb) from this queue's configuration on the
    /// server, so the run fails exactly where the queue's deliveries would.
    #[arg(long, value_name = "QUEUE", conflicts_with_all = ["timeout", "fuel", "memory_mb"])]
    pub limits_from: Option<String>,
    /// The server --limits-from reads the queue from.
    #[arg(long, env = "SPOOL_SERVER", default_value = super::DEFAULT_SERVER)]
    pub server: String,
    /// Bearer token for that server (a reader token is enough).
    #[arg(
        long,
        env = "SPOOL_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// Print the report (with --messages: the list of reports) as JSON.
    #[arg(long)]
    pub json: bool,
    /// Compile the component exactly as given. By default a dynamically linked component
    /// (componentize-py's) is flattened into one core module first, as `spool serve` does
    /// (`[runtime] flatten`); this runs the original, to compare the two.
    #[arg(long)]
    pub no_flatten: bool,
}

pub async fn run(cmd: PluginCmd) -> anyhow::Result<()> {
    match cmd {
        PluginCmd::Deploy {
            name,
            file,
            client: opts,
        } => {
            let wasm = std::fs::read(&file)
                .with_context(|| format!("cannot read plugin file {}", file.display()))?;
            // A person watching sees the upload and the server's compile (seconds for a
            // Python or JavaScript component); scripts and --json see nothing on stderr.
            let bar = progress(Some(wasm.len() as u64), "bytes", opts.json);
            bar.set_message(format!("uploading {}", file.display()));
            let resp = client(&opts)?
                .put_bytes_with_progress(&format!("/v1/plugins/{}", seg(&name)), wasm, &bar)
                .await;
            // The result line below says what happened; the bar has done its job.
            bar.finish_and_clear();
            let resp = resp?;
            if opts.json {
                print_json(&resp);
            } else if resp["new_version"] == false {
                outln!(
                    "{} version {} has these bytes already (sha256 {}); it is active now",
                    cell(&resp["name"]),
                    cell(&resp["version"]),
                    cell(&resp["sha256"])
                );
            } else {
                outln!(
                    "deployed {} version {} ({} world, {}, sha256 {}); it is active now",
                    cell(&resp["name"]),
                    cell(&resp["version"]),
                    cell(&resp["world"]),
                    resp["size"]
                        .as_u64()
                        .map(bytes)
                        .unwrap_or_else(|| "-".into()),
                    cell(&resp["sha256"])
                );
            }
            if !opts.json && resp["compiled"] == "baseline" {
                outln!(
                    "it serves with quickly compiled baseline code while the optimised code \
                     compiles in the background (`spool plugin show {name}` says when it is in)"
                );
            }
            Ok(())
        }
        PluginCmd::List { client: opts } => {
            let resp = client(&opts)?.get("/v1/plugins").await?;
            if opts.json {
                print_json(&resp);
            } else {
                let (headers, rows) = plugin_rows(&resp, now_ms());
                table_or(
                    &headers,
                    &rows,
                    "no plugins yet; deploy one with `spool plugin deploy NAME FILE`",
                );
                let errors = plugin_errors(&resp);
                if !errors.is_empty() {
                    outln!("\nfailed deliveries on this server since it started");
                    out!("{}", render_fields(&errors, "  "));
                }
            }
            Ok(())
        }
        PluginCmd::Rollback { name, client: opts } => {
            let resp = client(&opts)?
                .post(&format!("/v1/plugins/{}/rollback", seg(&name)), &json!({}))
                .await?;
            done(
                &opts,
                &resp,
                &format!(
                    "{name} is back at version {}; queues using it pick it up for new deliveries",
                    cell(&resp["version"])
                ),
            );
            Ok(())
        }
        PluginCmd::Show { name, client: opts } => {
            let resp = client(&opts)?
                .get(&format!("/v1/plugins/{}", seg(&name)))
                .await?;
            if opts.json {
                print_json(&resp);
            } else {
                let now = now_ms();
                fields(&[
                    ("plugin".into(), cell(&resp["name"])),
                    ("active version".into(), cell(&resp["active_version"])),
                    (
                        "compiled".into(),
                        match resp["compiled"].as_str() {
                            Some("baseline") => {
                                "baseline (the optimised compile runs in the background)".into()
                            }
                            Some(tier) => tier.to_owned(),
                            None => "not loaded on this server yet".into(),
                        },
                    ),
                ]);
                outln!();
                let (headers, rows) = plugin_rows(&json!({"plugins": [&resp]}), now);
                table_or(&headers, &rows, "no versions");
                outln!("\nhistory");
                let (headers, rows) = history_rows(&resp, now);
                table_or(
                    &headers,
                    &rows,
                    "  none recorded (versions activated before this server version have none)",
                );
            }
            Ok(())
        }
        PluginCmd::Activate {
            name,
            number,
            client: opts,
        } => {
            let resp = client(&opts)?
                .post(
                    &format!("/v1/plugins/{}/versions/{number}/activate", seg(&name)),
                    &json!({}),
                )
                .await?;
            done(
                &opts,
                &resp,
                &format!(
                    "{name} version {} is active; queues using it pick it up for new deliveries",
                    cell(&resp["version"])
                ),
            );
            Ok(())
        }
        PluginCmd::Delete { name, client: opts } => {
            let resp = client(&opts)?
                .delete(&format!("/v1/plugins/{}", seg(&name)))
                .await?;
            done(
                &opts,
                &resp,
                &format!(
                    "deleted plugin {name}: {} versions and {} key-value entries",
                    cell(&resp["versions_deleted"]),
                    cell(&resp["kv_entries_deleted"])
                ),
            );
            Ok(())
        }
        PluginCmd::Run(args) => plugin_run(args).await,
        PluginCmd::New(args) => super::plugin_new::run(args),
        PluginCmd::Build(args) => super::plugin_build::run(args),
        PluginCmd::Config(cmd) => super::plugin_config::run(cmd).await,
    }
}

/// The activation history, oldest first: when, who, how, from which version to which.
fn history_rows(resp: &Value, now: i64) -> ([&'static str; 4], Vec<Vec<String>>) {
    let rows = resp["history"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| {
            let from = if h["from_version"].is_null() {
                "-".to_owned()
            } else {
                cell(&h["from_version"])
            };
            vec![
                ago_cell(&h["at_ms"], now),
                if h["actor"].is_null() {
                    "(no token)".to_owned()
                } else {
                    cell(&h["actor"])
                },
                cell(&h["action"]),
                format!("{from} -> {}", cell(&h["to_version"])),
            ]
        })
        .collect();
    (["WHEN", "WHO", "ACTION", "VERSION"], rows)
}

/// Enough of a sha256 to tell versions apart and compare with `sha256sum`; `--json` has it all.
const SHA_PREFIX: usize = 12;

fn plugin_rows(resp: &Value, now: i64) -> ([&'static str; 7], Vec<Vec<String>>) {
    let mut rows = Vec::new();
    for p in resp["plugins"].as_array().into_iter().flatten() {
        for v in p["versions"].as_array().into_iter().flatten() {
            let active = if v["active"] == true { "*" } else { "" };
            rows.push(vec![
                cell(&p["name"]),
                cell(&v["version"]),
                active.to_owned(),
                cell(&v["world"]),
                v["size"].as_u64().map(bytes).unwrap_or_else(|| "-".into()),
                ago_cell(&v["created_at_ms"], now),
                cell(&v["sha256"]).chars().take(SHA_PREFIX).collect(),
            ]);
        }
    }
    (
        [
            "NAME", "VERSION", "ACTIVE", "WORLD", "SIZE", "DEPLOYED", "SHA256",
        ],
        rows,
    )
}

/// Per plugin with failures: "handler 3, trap 1" (the API's `errors` by category).
fn plugin_errors(resp: &Value) -> Vec<(String, String)> {
    resp["plugins"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| {
            let errors = p["errors"].as_object().filter(|e| !e.is_empty())?;
            let text = errors
                .iter()
                .map(|(k, n)| format!("{k} {}", cell(n)))
                .collect::<Vec<_>>()
                .join(", ");
            Some((cell(&p["name"]), text))
        })
        .collect()
}

async fn plugin_run(a: PluginRunArgs) -> anyhow::Result<()> {
    use crate::runtime::local::{LocalKv, LocalRun, load_local, run_loaded, run_local};
    use crate::runtime::{Limits, Runtime, RuntimeOptions};

    let wasm = std::fs::read(&a.file)
        .with_context(|| format!("cannot read plugin file {}", a.file.display()))?;
    let payload: Value = serde_json::from_str(&a.payload)
        .context("--payload is not valid JSON; quote strings, e.g. --payload '\"hi\"'")?;
    let headers = key_values("header", &a.headers)?
        .into_iter()
        .map(|(k, v)| (k, cell(&v)))
        .collect();
    let config = key_values("config", &a.config)?
        .into_iter()
        .map(|(k, v)| (k, cell(&v)))
        .collect();
    let limits = match &a.limits_from {
        Some(queue) => {
            let opts = ClientOpts {
                server: a.server.clone(),
                token: a.token.clone(),
                json: a.json,
            };
            queue_limits(&opts, queue).await?
        }
        None => Limits {
            timeout: parse_duration(&a.timeout).map_err(|e| anyhow::anyhow!("--timeout: {e}"))?,
            fuel: a.fuel,
            memory_bytes: (a.memory_mb as usize) << 20,
        },
    };
    let queue = a
        .queue
        .clone()
        .or_else(|| a.limits_from.clone())
        .unwrap_or_else(|| "local".to_owned());
    // A private cache: local runs never touch a server's cache directory.
    let cache = std::env::temp_dir().join("spool-plugin-run-cache");
    let runtime = Runtime::new(RuntimeOptions {
        cache_dir: cache,
        flatten: !a.no_flatten,
        ..RuntimeOptions::default()
    })?;
    let name = a
        .file
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| crate::model::validate_name("plugin", s).is_ok())
        .unwrap_or("local")
        .to_owned();
    let req = LocalRun {
        name,
        payload: serde_json::to_vec(&payload)?,
        headers,
        attempt: a.attempt,
        queue,
        topic: None,
        config,
        limits,
    };
    let Some(path) = &a.messages else {
        let report = run_local(&runtime, &wasm, req)
            .await
            .with_context(|| format!("cannot run {}", a.file.display()))?;
        if a.json {
            outln!("{}", serde_json::to_string_pretty(&report)?);
        } else {
            out!("{report}");
        }
        return Ok(());
    };
    let messages = read_messages(path)?;
    let total = messages.len();
    let plugin = load_local(&runtime, &wasm, &req.name)
        .await
        .with_context(|| format!("cannot load {}", a.file.display()))?;
    let mut kv = LocalKv::default();
    let mut failed = 0usize;
    let mut reports = Vec::with_capacity(messages.len());
    for (i, m) in messages.into_iter().enumerate() {
        let mut one = req.clone();
        one.payload = serde_json::to_vec(&m.payload)?;
        if let Some(headers) = m.headers {
            one.headers = headers.into_iter().collect();
        }
        one.attempt = m.attempt.unwrap_or(req.attempt);
        one.topic = m.topic;
        let report = run_loaded(&plugin, one, &mut kv).await;
        failed += usize::from(!report.succeeded());
        if a.json {
            reports.push(report);
        } else {
            outln!("--- message {}", i + 1);
            out!("{report}");
        }
    }
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&reports)?);
    } else {
        outln!("---");
    }
    if failed > 0 {
        bail!("{failed} of {total} message(s) failed");
    }
    Ok(())
}

/// The limits a server gives `queue`'s deliveries, from `GET /v1/queues/{queue}`; said on stderr
/// so a person sees where they came from.
async fn queue_limits(opts: &ClientOpts, queue: &str) -> anyhow::Result<crate::runtime::Limits> {
    let resp = client(opts)?
        .get(&format!("/v1/queues/{}", seg(queue)))
        .await
        .with_context(|| format!("--limits-from {queue}: cannot read the queue's limits"))?;
    let config = &resp["config"];
    let (Some(timeout_ms), Some(fuel), Some(memory_mb)) = (
        config["timeout_ms"].as_u64(),
        config["fuel"].as_u64(),
        config["memory_mb"].as_u64(),
    ) else {
        bail!("--limits-from {queue}: the server's answer has no timeout_ms, fuel and memory_mb");
    };
    eprintln!(
        "==> limits of queue {queue} on {}: timeout {timeout_ms} ms, fuel {fuel}, memory {memory_mb} MiB",
        opts.server
    );
    Ok(crate::runtime::Limits {
        timeout: std::time::Duration::from_millis(timeout_ms),
        fuel,
        memory_bytes: usize::try_from(memory_mb)
            .ok()
            .and_then(|mb| mb.checked_mul(1 << 20))
            .context("--limits-from: memory_mb is out of range")?,
    })
}

/// One entry of `plugin run --messages`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LocalMessage {
    payload: Value,
    #[serde(default)]
    headers: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default)]
    attempt: Option<u32>,
    #[serde(default)]
    topic: Option<String>,
}

/// Reads a JSON array or JSON Lines of [`LocalMessage`]s from a file, or stdin for `-`.
fn read_messages(path: &Path) -> anyhow::Result<Vec<LocalMessage>> {
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("cannot read messages from stdin")?
    } else {
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read messages from {}", path.display()))?
    };
    const SHAPE: &str = concat!(
        r#"each message is an object like {"payload": {...}, "headers": {"k": "v"}, "#,
        r#""attempt": 2, "topic": "t"} (only payload is required)"#
    );
    let messages: Vec<LocalMessage> = if text.trim_start().starts_with('[') {
        serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is not a JSON array of messages; {SHAPE}",
                path.display()
            )
        })?
    } else {
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(n, l)| {
                serde_json::from_str(l).with_context(|| {
                    format!("{} line {}: not a message; {SHAPE}", path.display(), n + 1)
                })
            })
            .collect::<anyhow::Result<_>>()?
    };
    if messages.is_empty() {
        bail!("{} holds no messages; {SHAPE}", path.display());
    }
    Ok(messages)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::output::render_table;

    #[test]
    fn messages_for_a_local_run_come_as_an_array_or_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let array = dir.path().join("m.json");
        std::fs::write(
            &array,
            r#"[{"payload": {"a": 1}}, {"payload": "x", "attempt": 3}]"#,
        )
        .unwrap();
        let m = read_messages(&array).unwrap();
        assert_eq!((m.len(), m[1].attempt), (2, Some(3)));
        let lines = dir.path().join("m.jsonl");
        std::fs::write(
            &lines,
            "{\"payload\": 1, \"headers\": {\"k\": \"v\"}}\n\n{\"payload\": 2, \"topic\": \"t\"}\n",
        )
        .unwrap();
        let m = read_messages(&lines).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[1].topic.as_deref(), Some("t"));
        for (bad, says) in [
            ("", "holds no messages"),
            ("{\"pay\": 1}", "line 1: not a message"),
            ("[1, 2]", "not a JSON array of messages"),
        ] {
            std::fs::write(&lines, bad).unwrap();
            let err = format!("{:#}", read_messages(&lines).unwrap_err());
            assert!(err.contains(says) && err.contains("only payload"), "{err}");
        }
    }

    #[test]
    fn plugin_versions_read_as_a_table() {
        let sha = "ab".repeat(32);
        let resp = json!({"plugins": [{"name": "echo", "active_version": 2, "versions": [
            {"version": 1, "active": false, "world": "handler", "size": 81_920,
             "created_at_ms": 0, "sha256": sha},
            {"version": 2, "active": true, "world": "handler", "size": 1_200_000,
             "created_at_ms": 50_000, "sha256": sha},
        ]}]});
        let (headers, rows) = plugin_rows(&resp, 60_000);
        assert!(plugin_errors(&resp).is_empty());
        assert_eq!(
            render_table(&headers, &rows),
            "\
NAME  VERSION  ACTIVE  WORLD    SIZE      DEPLOYED  SHA256
echo        1          handler  80.0 KiB  1m ago    abababababab
echo        2  *       handler  1.1 MiB   10s ago   abababababab
"
        );
    }

    #[test]
    fn history_reads_as_a_table() {
        let resp = json!({"history": [
            {"at_ms": 0, "actor": null, "action": "deploy", "from_version": null, "to_version": 1},
            {"at_ms": 50_000, "actor": "ops", "action": "activate", "from_version": 2,
             "to_version": 1},
        ]});
        let (headers, rows) = history_rows(&resp, 60_000);
        assert_eq!(
            render_table(&headers, &rows),
            "\
WHEN     WHO         ACTION    VERSION
1m ago   (no token)  deploy    - -> 1
10s ago  ops         activate  2 -> 1
"
        );
    }

    #[test]
    fn failures_are_summed_up_per_plugin() {
        let resp = json!({"plugins": [
            {"name": "echo", "versions": [], "errors": {}},
            {"name": "misbehave", "versions": [], "errors": {"handler": 3, "trap": 1}},
        ]});
        assert_eq!(
            plugin_errors(&resp),
            vec![("misbehave".to_owned(), "handler 3, trap 1".to_owned())]
        );
    }
}

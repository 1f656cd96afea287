//! What each CLI command does.

use std::io::Read;

use anyhow::{Context, bail};
use serde_json::{Map, Value, json};

use super::client::{Client, seg};
use super::output::{cell, fields, json as print_json, table};
use super::{
    Cli, ClientOpts, Command, DlqCmd, EnqueueArgs, MessageCmd, PluginCmd, PluginRunArgs, QueueCmd,
    QueueSettings,
};
use crate::config::parse_duration;

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => super::serve::serve(args).await,
        Command::Enqueue(args) => enqueue(args).await,
        Command::Queue(cmd) => queue(cmd).await,
        Command::Message(cmd) => message(cmd).await,
        Command::Dlq(cmd) => dlq(cmd).await,
        Command::Plugin(cmd) => plugin(cmd).await,
        Command::Bench(args) => crate::bench::run(args).await,
    }
}

fn client(opts: &ClientOpts) -> anyhow::Result<Client> {
    Client::new(&opts.server)
}

fn duration_ms(flag: &str, text: &str) -> anyhow::Result<u64> {
    let d = parse_duration(text).map_err(|e| anyhow::anyhow!("--{flag}: {e}"))?;
    Ok(d.as_millis() as u64)
}

fn key_values(flag: &str, items: &[String]) -> anyhow::Result<Map<String, Value>> {
    let mut map = Map::new();
    for item in items {
        let Some((k, v)) = item.split_once('=') else {
            bail!("--{flag} {item:?} must look like NAME=VALUE");
        };
        if k.is_empty() {
            bail!("--{flag} {item:?} has an empty name");
        }
        map.insert(k.to_owned(), Value::String(v.to_owned()));
    }
    Ok(map)
}

async fn enqueue(a: EnqueueArgs) -> anyhow::Result<()> {
    let text = match a.payload.as_deref() {
        None | Some("-") => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("cannot read the payload from standard input")?;
            s
        }
        Some(s) => s.to_owned(),
    };
    let payload: Value = serde_json::from_str(&text).with_context(
        || "the payload is not valid JSON; quote strings, e.g. '\"hello\"' or '{\"order\": 42}'",
    )?;
    let mut body = Map::new();
    body.insert("payload".into(), payload);
    if a.priority != 0 {
        body.insert("priority".into(), a.priority.into());
    }
    if let Some(d) = &a.delay {
        body.insert("delay_ms".into(), duration_ms("delay", d)?.into());
    }
    if let Some(at) = &a.at {
        body.insert("deliver_at".into(), at.clone().into());
    }
    if let Some(t) = &a.ttl {
        body.insert("ttl_ms".into(), duration_ms("ttl", t)?.into());
    }
    if let Some(k) = &a.key {
        body.insert("idempotency_key".into(), k.clone().into());
    }
    if a.supersede {
        body.insert("supersede".into(), true.into());
    }
    if !a.headers.is_empty() {
        body.insert(
            "headers".into(),
            Value::Object(key_values("header", &a.headers)?),
        );
    }
    let c = client(&a.client)?;
    let resp = c
        .post(
            &format!("/v1/queues/{}/messages", seg(&a.queue)),
            &Value::Object(body),
        )
        .await?;
    if a.client.json {
        print_json(&resp);
    } else {
        for id in resp["ids"].as_array().into_iter().flatten() {
            println!("{}", cell(id));
        }
    }
    Ok(())
}

fn settings_body(s: &QueueSettings) -> anyhow::Result<Value> {
    let mut m = Map::new();
    if let Some(h) = &s.handler {
        let v = if h == "none" {
            Value::Null
        } else {
            h.clone().into()
        };
        m.insert("handler".into(), v);
    }
    let mut num = |k: &str, v: Option<u64>| {
        if let Some(v) = v {
            m.insert(k.into(), v.into());
        }
    };
    num("concurrency", s.concurrency.map(u64::from));
    num("max_attempts", s.max_attempts.map(u64::from));
    num("fuel", s.fuel);
    num("memory_mb", s.memory_mb.map(u64::from));
    let durations = [
        ("backoff-base", "backoff_base_ms", &s.backoff_base),
        ("backoff-max", "backoff_max_ms", &s.backoff_max),
        ("lease", "lease_ms", &s.lease),
        ("timeout", "timeout_ms", &s.timeout),
    ];
    for (flag, field, v) in durations {
        if let Some(v) = v {
            m.insert(field.into(), duration_ms(flag, v)?.into());
        }
    }
    if let Some(t) = &s.default_ttl {
        let v = if t == "none" {
            Value::Null
        } else {
            duration_ms("default-ttl", t)?.into()
        };
        m.insert("default_ttl_ms".into(), v);
    }
    if let Some(v) = &s.strategy {
        m.insert("strategy".into(), v.clone().into());
    }
    if let Some(v) = &s.instance_mode {
        m.insert("instance_mode".into(), v.clone().into());
    }
    if let Some(p) = s.paused {
        m.insert("paused".into(), p.into());
    }
    Ok(Value::Object(m))
}

const STAT_KEYS: [&str; 11] = [
    "scheduled",
    "ready",
    "leased",
    "acked",
    "dead",
    "dlq_depth",
    "cancelled",
    "expired",
    "retried",
    "enqueued",
    "oldest_ready_age_ms",
];

async fn put_queue(name: &str, body: Value, opts: &ClientOpts) -> anyhow::Result<()> {
    let c = client(opts)?;
    let resp = c.put(&format!("/v1/queues/{}", seg(name)), &body).await?;
    if opts.json {
        print_json(&resp);
    } else {
        println!("queue {}", cell(&resp["name"]));
        print_config(&resp["config"]);
    }
    Ok(())
}

fn print_config(config: &Value) {
    if let Some(obj) = config.as_object() {
        let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        fields(config, &keys);
    }
}

async fn queue(cmd: QueueCmd) -> anyhow::Result<()> {
    match cmd {
        QueueCmd::Create {
            name,
            settings,
            client: opts,
        }
        | QueueCmd::Set {
            name,
            settings,
            client: opts,
        } => put_queue(&name, settings_body(&settings)?, &opts).await,
        QueueCmd::Pause { name, client: opts } => {
            put_queue(&name, json!({"paused": true}), &opts).await
        }
        QueueCmd::Resume { name, client: opts } => {
            put_queue(&name, json!({"paused": false}), &opts).await
        }
        QueueCmd::Stats { name, client: opts } => {
            let resp = client(&opts)?
                .get(&format!("/v1/queues/{}", seg(&name)))
                .await?;
            if opts.json {
                print_json(&resp["stats"]);
            } else {
                fields(&resp["stats"], &STAT_KEYS);
            }
            Ok(())
        }
        QueueCmd::Get { name, client: opts } => {
            let resp = client(&opts)?
                .get(&format!("/v1/queues/{}", seg(&name)))
                .await?;
            if opts.json {
                print_json(&resp);
            } else {
                println!("queue {}\n\nconfig:", cell(&resp["name"]));
                print_config(&resp["config"]);
                println!("\nstats:");
                fields(&resp["stats"], &STAT_KEYS);
            }
            Ok(())
        }
        QueueCmd::List { client: opts } => {
            let resp = client(&opts)?.get("/v1/queues").await?;
            if opts.json {
                print_json(&resp);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = resp["queues"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|q| {
                    let s = &q["stats"];
                    vec![
                        cell(&q["name"]),
                        cell(&q["config"]["handler"]),
                        cell(&q["config"]["paused"]),
                        cell(&s["ready"]),
                        cell(&s["scheduled"]),
                        cell(&s["leased"]),
                        cell(&s["acked"]),
                        cell(&s["dlq_depth"]),
                    ]
                })
                .collect();
            table(
                &[
                    "NAME",
                    "HANDLER",
                    "PAUSED",
                    "READY",
                    "SCHEDULED",
                    "LEASED",
                    "ACKED",
                    "DLQ",
                ],
                &rows,
            );
            Ok(())
        }
        QueueCmd::Messages {
            name,
            state,
            limit,
            cursor,
            client: opts,
        } => {
            let mut path = format!("/v1/queues/{}/messages?limit={limit}", seg(&name));
            if let Some(s) = state {
                path.push_str(&format!("&state={}", seg(&s)));
            }
            if let Some(c) = cursor {
                path.push_str(&format!("&cursor={}", seg(&c)));
            }
            let resp = client(&opts)?.get(&path).await?;
            if opts.json {
                print_json(&resp);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = resp["items"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| {
                    vec![
                        cell(&m["id"]),
                        cell(&m["state"]),
                        cell(&m["priority"]),
                        cell(&m["attempts"]),
                        cell(&m["enqueued_at"]),
                        cell(&m["error_category"]),
                    ]
                })
                .collect();
            table(
                &["ID", "STATE", "PRIORITY", "ATTEMPTS", "ENQUEUED", "ERROR"],
                &rows,
            );
            print_next_cursor(&resp);
            Ok(())
        }
    }
}

fn print_next_cursor(resp: &Value) {
    if let Some(c) = resp["next_cursor"].as_str() {
        println!("\nmore: --cursor {c}");
    }
}

async fn message(cmd: MessageCmd) -> anyhow::Result<()> {
    match cmd {
        MessageCmd::Get { id, client: opts } => {
            let resp = client(&opts)?
                .get(&format!("/v1/messages/{}", seg(&id)))
                .await?;
            if opts.json {
                print_json(&resp);
            } else {
                fields(
                    &resp,
                    &[
                        "id",
                        "queue",
                        "state",
                        "priority",
                        "attempts",
                        "enqueued_at",
                        "available_at",
                        "expires_at",
                        "finished_at",
                        "error_category",
                        "last_error",
                        "plugin_version",
                        "idempotency_key",
                        "correlation_id",
                    ],
                );
            }
            Ok(())
        }
        MessageCmd::Cancel { id, client: opts } => {
            let resp = client(&opts)?
                .delete(&format!("/v1/messages/{}", seg(&id)))
                .await?;
            if opts.json {
                print_json(&resp);
            } else if resp["state"] == "leased" {
                println!("message {id} is running; it will be cancelled when its handler returns");
            } else {
                println!("message {id} cancelled");
            }
            Ok(())
        }
    }
}

async fn dlq(cmd: DlqCmd) -> anyhow::Result<()> {
    match cmd {
        DlqCmd::List {
            queue,
            category,
            limit,
            cursor,
            client: opts,
        } => {
            let mut path = format!("/v1/dlq?limit={limit}");
            for (k, v) in [("queue", queue), ("category", category), ("cursor", cursor)] {
                if let Some(v) = v {
                    path.push_str(&format!("&{k}={}", seg(&v)));
                }
            }
            let resp = client(&opts)?.get(&path).await?;
            if opts.json {
                print_json(&resp);
                return Ok(());
            }
            let rows: Vec<Vec<String>> = resp["items"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| {
                    let mut err = cell(&m["error"]);
                    if err.chars().count() > 60 {
                        err = err.chars().take(57).collect::<String>() + "...";
                    }
                    vec![
                        cell(&m["id"]),
                        cell(&m["queue"]),
                        cell(&m["error_category"]),
                        cell(&m["attempts"]),
                        err,
                    ]
                })
                .collect();
            table(&["ID", "QUEUE", "CATEGORY", "ATTEMPTS", "ERROR"], &rows);
            print_next_cursor(&resp);
            Ok(())
        }
        DlqCmd::Replay { id, client: opts } => {
            let resp = client(&opts)?
                .post(&format!("/v1/dlq/{}/replay", seg(&id)), &json!({}))
                .await?;
            done(
                &opts,
                &resp,
                &format!("dead letter {id} is back in its queue"),
            );
            Ok(())
        }
        DlqCmd::Reviewed { id, client: opts } => {
            let resp = client(&opts)?
                .post(&format!("/v1/dlq/{}/reviewed", seg(&id)), &json!({}))
                .await?;
            done(&opts, &resp, &format!("dead letter {id} marked reviewed"));
            Ok(())
        }
        DlqCmd::Purge { id, client: opts } => {
            let resp = client(&opts)?
                .delete(&format!("/v1/dlq/{}", seg(&id)))
                .await?;
            done(&opts, &resp, &format!("dead letter {id} deleted"));
            Ok(())
        }
    }
}

fn done(opts: &ClientOpts, resp: &Value, text: &str) {
    if opts.json {
        print_json(resp);
    } else {
        println!("{text}");
    }
}

async fn plugin(cmd: PluginCmd) -> anyhow::Result<()> {
    match cmd {
        PluginCmd::Deploy {
            name,
            file,
            client: opts,
        } => {
            let bytes = std::fs::read(&file)
                .with_context(|| format!("cannot read plugin file {}", file.display()))?;
            let resp = client(&opts)?
                .put_bytes(&format!("/v1/plugins/{}", seg(&name)), bytes)
                .await?;
            if opts.json {
                print_json(&resp);
            } else {
                println!(
                    "deployed {} version {} ({} world, sha256 {})",
                    cell(&resp["name"]),
                    cell(&resp["version"]),
                    cell(&resp["world"]),
                    cell(&resp["sha256"])
                );
            }
            Ok(())
        }
        PluginCmd::List { client: opts } => {
            let resp = client(&opts)?.get("/v1/plugins").await?;
            if opts.json {
                print_json(&resp);
                return Ok(());
            }
            let mut rows = Vec::new();
            for p in resp["plugins"].as_array().into_iter().flatten() {
                for v in p["versions"].as_array().into_iter().flatten() {
                    let active = if v["active"] == true { "*" } else { "" };
                    let sha = cell(&v["sha256"]);
                    rows.push(vec![
                        cell(&p["name"]),
                        cell(&v["version"]),
                        active.to_owned(),
                        cell(&v["world"]),
                        cell(&v["size"]),
                        sha.chars().take(12).collect(),
                    ]);
                }
            }
            table(
                &["NAME", "VERSION", "ACTIVE", "WORLD", "BYTES", "SHA256"],
                &rows,
            );
            Ok(())
        }
        PluginCmd::Rollback { name, client: opts } => {
            let resp = client(&opts)?
                .post(&format!("/v1/plugins/{}/rollback", seg(&name)), &json!({}))
                .await?;
            done(
                &opts,
                &resp,
                &format!("{name} is back at version {}", cell(&resp["version"])),
            );
            Ok(())
        }
        PluginCmd::Run(args) => plugin_run(args).await,
    }
}

async fn plugin_run(a: PluginRunArgs) -> anyhow::Result<()> {
    use crate::runtime::local::{LocalRun, run_local};
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
    let limits = Limits {
        timeout: parse_duration(&a.timeout).map_err(|e| anyhow::anyhow!("--timeout: {e}"))?,
        fuel: a.fuel,
        memory_bytes: (a.memory_mb as usize) << 20,
    };
    // A private cache: local runs never touch a server's cache directory.
    let cache = std::env::temp_dir().join("spool-plugin-run-cache");
    let runtime = Runtime::new(RuntimeOptions {
        cache_dir: cache,
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
        queue: a.queue,
        topic: None,
        config,
        limits,
    };
    let report = run_local(&runtime, &wasm, req)
        .await
        .with_context(|| format!("cannot run {}", a.file.display()))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(())
}

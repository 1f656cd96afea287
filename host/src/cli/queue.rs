//! `spool queue`: create, configure, pause and inspect queues, and list their messages.

use clap::{Args, Subcommand};
use serde_json::{Map, Value, json};

use super::client::seg;
use super::commands::{client, duration_ms, list_pages, now_ms, print_listing, table_or};
use super::output::{
    ago_cell, cell, exact_duration, fields, json as print_json, millis, preview, relative,
    render_fields, short_duration, when,
};
use super::{ClientOpts, PageOpts};
use crate::model::QueueConfig;

/// Queue settings; each flag left out keeps its current value (on a new queue, the default
/// shown in its help).
#[derive(Debug, Clone, Args)]
pub struct QueueSettings {
    /// Handler plugin that consumes the queue ("none" to stop consuming) [new queues: none].
    #[arg(long, value_name = "PLUGIN")]
    pub handler: Option<String>,
    #[arg(long, help = with_default("Messages handled at once on this host", |c| c.concurrency.to_string()))]
    pub concurrency: Option<u32>,
    #[arg(long, help = with_default("Deliveries before a failing message is dead-lettered", |c| c.max_attempts.to_string()))]
    pub max_attempts: Option<u32>,
    #[arg(long, value_name = "DURATION", help = with_default("First retry delay; doubles each attempt", |c| exact_duration(c.backoff_base_ms)))]
    pub backoff_base: Option<String>,
    #[arg(long, value_name = "DURATION", help = with_default("Longest retry delay", |c| exact_duration(c.backoff_max_ms)))]
    pub backoff_max: Option<String>,
    #[arg(long, value_name = "DURATION", help = with_default("How long a delivery holds a message without a heartbeat", |c| exact_duration(c.lease_ms)))]
    pub lease: Option<String>,
    #[arg(long, value_name = "DURATION", help = with_default("Wall-clock limit for one handler call", |c| exact_duration(c.timeout_ms)))]
    pub timeout: Option<String>,
    #[arg(long, help = with_default("Instruction budget for one handler call", |c| c.fuel.to_string()))]
    pub fuel: Option<u64>,
    #[arg(long, help = with_default("Memory limit of one plugin instance, in MiB", |c| c.memory_mb.to_string()))]
    pub memory_mb: Option<u32>,
    #[arg(long, value_parser = ["priority", "fifo", "lifo", "weighted-random"],
          help = with_default("Order of delivery", |c| wire_name(c.strategy)))]
    pub strategy: Option<String>,
    #[arg(long, value_parser = ["plugin", "fresh", "reuse"],
          help = with_default("A fresh plugin instance per message (fresh), a warm one per worker (reuse), or what the handler declares (plugin; fresh if it declares nothing)", |c| wire_name(c.instance_mode)))]
    pub instance_mode: Option<String>,
    /// Stop (true) or resume (false) handing out messages [new queues: false].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub paused: Option<bool>,
    /// TTL for messages enqueued without one ("none" for no TTL) [new queues: none].
    #[arg(long, value_name = "DURATION")]
    pub default_ttl: Option<String>,
    #[arg(long, value_name = "N", help = with_default("Circuit breaker: consecutive failed deliveries that stop claiming for a cool-down (0 = off)", |c| c.breaker_failures.to_string()))]
    pub breaker_failures: Option<u32>,
    #[arg(long, value_name = "DURATION", help = with_default("The breaker's first cool-down; doubles after each failed probe", |c| exact_duration(c.breaker_cooldown_ms)))]
    pub breaker_cooldown: Option<String>,
    #[arg(long, value_name = "DURATION", help = with_default("The breaker's longest cool-down", |c| exact_duration(c.breaker_max_cooldown_ms)))]
    pub breaker_max_cooldown: Option<String>,
}

/// How an enum value is spelled in JSON (and so on the command line).
fn wire_name(value: impl serde::Serialize) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(s)) => s,
        other => format!("{other:?}"),
    }
}

/// A flag's help with the value a new queue gets, read from the server's defaults so the help
/// cannot drift from them.
fn with_default(text: &str, value: impl Fn(&QueueConfig) -> String) -> String {
    format!("{text} [new queues: {}]", value(&QueueConfig::default()))
}

/// The message states a listing can filter on.
const STATES: [&str; 7] = [
    "scheduled",
    "ready",
    "leased",
    "acked",
    "dead",
    "cancelled",
    "expired",
];

#[derive(Debug, Subcommand)]
pub enum QueueCmd {
    /// Create a queue (or update it: same as `set`).
    Create {
        /// Queue name: 1 to 128 characters from A-Z a-z 0-9 . _ -
        name: String,
        #[command(flatten)]
        settings: QueueSettings,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Change settings of a queue; only the flags given change.
    Set {
        /// The queue to change.
        name: String,
        #[command(flatten)]
        settings: QueueSettings,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Pause a queue: messages are accepted but not handed out.
    Pause {
        /// The queue to pause.
        name: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Resume a paused queue.
    Resume {
        /// The queue to resume.
        name: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Show a queue's depths by state, totals, live figures and circuit breaker.
    Stats {
        /// The queue to show.
        name: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Show a queue's settings and stats.
    Get {
        /// The queue to show.
        name: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// List queues with their stats.
    List {
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Delete a queue with its config, totals and every message it holds
    ///
    /// Refused while the queue holds scheduled, ready or leased messages, unless --force, which
    /// deletes those too. Prints how many messages were deleted in each state (acked records and
    /// the queue's dead letters go with it).
    ///
    /// Examples:
    ///
    ///   spool queue delete old-orders
    ///   spool queue delete old-orders --force
    #[command(verbatim_doc_comment)]
    Delete {
        /// The queue to delete.
        name: String,
        /// Delete it even while it holds messages still to be handled, and those messages.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Close a queue's circuit breaker on the server: claiming starts again at once
    ///
    /// The count of consecutive failures and the cool-down start over. The breaker is the
    /// server's own, in memory (see `spool queue stats QUEUE`).
    ///
    /// Example:
    ///
    ///   spool queue reset-breaker orders
    #[command(verbatim_doc_comment)]
    ResetBreaker {
        /// The queue whose breaker to close.
        name: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// List (peek at) a queue's messages, oldest first, a page at a time.
    #[command(visible_alias = "peek")]
    Messages {
        /// The queue whose messages to list.
        name: String,
        /// Only messages in this state.
        #[arg(long, value_parser = STATES)]
        state: Option<String>,
        /// Only messages enqueued with this idempotency key (by any producer).
        #[arg(long)]
        key: Option<String>,
        #[command(flatten)]
        page: PageOpts,
        #[command(flatten)]
        client: ClientOpts,
    },
}

pub async fn run(cmd: QueueCmd) -> anyhow::Result<()> {
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
        } => {
            let resp = put_queue(&name, settings_body(&settings)?, &opts).await?;
            if !opts.json {
                outln!("queue {}", cell(&resp["name"]));
                out!("{}", render_fields(&config_pairs(&resp["config"]), "  "));
            }
            Ok(())
        }
        QueueCmd::Pause { name, client: opts } => {
            put_queue(&name, json!({"paused": true}), &opts).await?;
            if !opts.json {
                outln!(
                    "queue {name} paused: it accepts messages but hands none out until \
                     `spool queue resume {name}`"
                );
            }
            Ok(())
        }
        QueueCmd::Resume { name, client: opts } => {
            put_queue(&name, json!({"paused": false}), &opts).await?;
            if !opts.json {
                outln!("queue {name} resumed: its messages are handed out again");
            }
            Ok(())
        }
        QueueCmd::Stats { name, client: opts } => {
            let resp = client(&opts)?
                .get(&format!("/v1/queues/{}", seg(&name)))
                .await?;
            if opts.json {
                print_json(&resp["stats"]);
            } else {
                out!("{}", render_stats(&resp["stats"]));
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
                fields(&[
                    ("queue".into(), cell(&resp["name"])),
                    (
                        "created".into(),
                        when(&resp["created_at"], &resp["created_at_ms"], now_ms()),
                    ),
                ]);
                outln!("\nconfig");
                out!("{}", render_fields(&config_pairs(&resp["config"]), "  "));
                outln!();
                out!("{}", render_stats(&resp["stats"]));
            }
            Ok(())
        }
        QueueCmd::List { client: opts } => {
            let resp = client(&opts)?.get("/v1/queues").await?;
            if opts.json {
                print_json(&resp);
            } else {
                let (headers, rows) = queue_rows(&resp);
                table_or(
                    &headers,
                    &rows,
                    "no queues yet; create one with `spool queue create`",
                );
            }
            Ok(())
        }
        QueueCmd::Delete {
            name,
            force,
            client: opts,
        } => {
            let path = format!(
                "/v1/queues/{}{}",
                seg(&name),
                if force { "?force=true" } else { "" }
            );
            let resp = client(&opts)?.delete(&path).await?;
            if opts.json {
                print_json(&resp);
            } else {
                out!("{}", deleted_text(&resp));
            }
            Ok(())
        }
        QueueCmd::ResetBreaker { name, client: opts } => {
            let resp = client(&opts)?
                .post(
                    &format!("/v1/queues/{}/breaker/reset", seg(&name)),
                    &json!({}),
                )
                .await?;
            if opts.json {
                print_json(&resp);
            } else {
                outln!(
                    "circuit breaker of queue {name} is {}; its messages are claimed again \
                     (unless the queue is paused)",
                    cell(&resp["state"])
                );
            }
            Ok(())
        }
        QueueCmd::Messages {
            name,
            state,
            key,
            page,
            client: opts,
        } => {
            let resp = list_pages(
                &client(&opts)?,
                &format!("/v1/queues/{}/messages", seg(&name)),
                &[("state", state), ("idempotency_key", key)],
                &page,
            )
            .await?;
            print_listing(
                opts.json,
                &resp,
                page.all,
                "no messages match",
                message_rows,
            );
            Ok(())
        }
    }
}

/// "deleted queue q and its 12 messages (10 acked, 2 dead)" from a `DELETE /v1/queues/{q}`
/// answer, naming only the states that had messages.
fn deleted_text(resp: &Value) -> String {
    let d = &resp["deleted"];
    let parts: Vec<String> = STATES
        .iter()
        .filter_map(|s| {
            d[*s]
                .as_u64()
                .filter(|n| *n > 0)
                .map(|n| format!("{n} {s}"))
        })
        .collect();
    let name = cell(&resp["name"]);
    if parts.is_empty() {
        format!("deleted queue {name}; it held no messages\n")
    } else {
        format!(
            "deleted queue {name} and its {} messages ({})\n",
            cell(&d["total"]),
            parts.join(", ")
        )
    }
}

async fn put_queue(name: &str, body: Value, opts: &ClientOpts) -> anyhow::Result<Value> {
    let resp = client(opts)?
        .put(&format!("/v1/queues/{}", seg(name)), &body)
        .await?;
    if opts.json {
        print_json(&resp);
    }
    Ok(resp)
}

/// The PUT body: only the fields whose flags were given.
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
    num("breaker_failures", s.breaker_failures.map(u64::from));
    let durations = [
        ("backoff-base", "backoff_base_ms", &s.backoff_base),
        ("backoff-max", "backoff_max_ms", &s.backoff_max),
        ("lease", "lease_ms", &s.lease),
        ("timeout", "timeout_ms", &s.timeout),
        (
            "breaker-cooldown",
            "breaker_cooldown_ms",
            &s.breaker_cooldown,
        ),
        (
            "breaker-max-cooldown",
            "breaker_max_cooldown_ms",
            &s.breaker_max_cooldown,
        ),
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

/// `key value` pairs of an object: the keys in `order` first, then any the server added since
/// (so a newer server's fields still show). `*_ms` numbers are shown as durations under the
/// name without the suffix, formatted by `duration`; nulls as `null_text`.
fn object_pairs(
    v: &Value,
    order: &[&str],
    duration: fn(u64) -> String,
    null_text: &str,
) -> Vec<(String, String)> {
    let Some(obj) = v.as_object() else {
        return Vec::new();
    };
    let rest = obj.keys().filter(|k| !order.contains(&k.as_str()));
    let keys: Vec<&str> = order
        .iter()
        .copied()
        .filter(|k| obj.contains_key(*k))
        .chain(rest.map(String::as_str))
        .collect();
    keys.into_iter()
        .map(|k| {
            let x = &obj[k];
            match k.strip_suffix("_ms") {
                Some(short) if x.is_u64() => (short.to_owned(), duration(x.as_u64().unwrap_or(0))),
                Some(short) if x.is_null() => (short.to_owned(), null_text.to_owned()),
                _ if x.is_null() => (k.to_owned(), null_text.to_owned()),
                _ => (k.to_owned(), cell(x)),
            }
        })
        .collect()
}

const CONFIG_ORDER: [&str; 16] = [
    "handler",
    "paused",
    "concurrency",
    "strategy",
    "max_attempts",
    "backoff_base_ms",
    "backoff_max_ms",
    "lease_ms",
    "timeout_ms",
    "fuel",
    "memory_mb",
    "instance_mode",
    "default_ttl_ms",
    "breaker_failures",
    "breaker_cooldown_ms",
    "breaker_max_cooldown_ms",
];

/// A queue's config with exact durations in the form the flags take ("30s", "1m 30s").
fn config_pairs(config: &Value) -> Vec<(String, String)> {
    object_pairs(config, &CONFIG_ORDER, exact_duration, "none")
}

/// Stats fall in three groups: depths now, totals since the queue was created (from the
/// store), and what this server measured since it started (latency windows, error counts).
/// Fields a newer server adds land in the last group.
const DEPTH_KEYS: [&str; 6] = [
    "ready",
    "scheduled",
    "leased",
    "in_flight",
    "dlq_depth",
    "oldest_ready_age_ms",
];
const TOTAL_KEYS: [&str; 6] = [
    "enqueued",
    "acked",
    "retried",
    "dead",
    "cancelled",
    "expired",
];
const LIVE_ORDER: [&str; 3] = ["wait_ms", "handler_ms", "errors"];

fn render_stats(stats: &Value) -> String {
    render_stats_at(stats, now_ms())
}

/// [`render_stats`] with the clock given, so the breaker's times read the same in tests.
fn render_stats_at(stats: &Value, now: i64) -> String {
    let Some(obj) = stats.as_object() else {
        return String::new();
    };
    let mut depths = Vec::new();
    let mut totals = Vec::new();
    let mut live = Vec::new();
    let ordered = DEPTH_KEYS
        .iter()
        .chain(&TOTAL_KEYS)
        .chain(&LIVE_ORDER)
        .copied()
        .filter(|k| obj.contains_key(*k));
    let rest = obj.keys().map(String::as_str).filter(|k| {
        !DEPTH_KEYS.contains(k)
            && !TOTAL_KEYS.contains(k)
            && !LIVE_ORDER.contains(k)
            && *k != "breaker"
    });
    for k in ordered.chain(rest) {
        let pair = stat_pair(k, &obj[k]);
        if DEPTH_KEYS.contains(&k) {
            depths.push(pair);
        } else if TOTAL_KEYS.contains(&k) {
            totals.push(pair);
        } else {
            live.push(pair);
        }
    }
    let mut out = String::new();
    for (title, pairs) in [
        ("now", depths),
        ("totals since the queue was created", totals),
        ("on this server since it started", live),
    ] {
        if !pairs.is_empty() {
            out.push_str(title);
            out.push('\n');
            out.push_str(&render_fields(&pairs, "  "));
        }
    }
    if let Some(b) = obj.get("breaker").filter(|b| b.is_object()) {
        out.push_str("circuit breaker on this server\n");
        out.push_str(&render_fields(&breaker_pairs(b, now), "  "));
    }
    out
}

/// The breaker for people: its state with when it opened and when it lets a message through,
/// then its counts.
fn breaker_pairs(b: &Value, now: i64) -> Vec<(String, String)> {
    if b["enabled"] == false {
        return vec![(
            "state".to_owned(),
            "off (set --breaker-failures to turn it on)".to_owned(),
        )];
    }
    let mut pairs = vec![("state".to_owned(), cell(&b["state"]))];
    if !b["opened_at_ms"].is_null() {
        pairs.push((
            "opened".to_owned(),
            when(&b["opened_at"], &b["opened_at_ms"], now),
        ));
    }
    if !b["retry_at_ms"].is_null() {
        pairs.push((
            "probe".to_owned(),
            when(&b["retry_at"], &b["retry_at_ms"], now),
        ));
    }
    pairs.push((
        "consecutive_failures".to_owned(),
        cell(&b["consecutive_failures"]),
    ));
    if let Some(ms) = b["cooldown_ms"].as_u64() {
        pairs.push(("cooldown".to_owned(), exact_duration(ms)));
    }
    pairs.push(("times_opened".to_owned(), cell(&b["times_opened"])));
    if !b["last_error_category"].is_null() {
        pairs.push(("last_error".to_owned(), cell(&b["last_error_category"])));
    }
    pairs
}

/// One stat for people: `*_ms` numbers as durations, `*_ms` windows as "p50 .. p95 .. p99 ..",
/// counts by kind as "handler 3, trap 1".
fn stat_pair(key: &str, v: &Value) -> (String, String) {
    let (name, is_ms) = match key.strip_suffix("_ms") {
        Some(short) => (short, true),
        None => (key, false),
    };
    let text = match v {
        Value::Null => "-".to_owned(),
        Value::Number(n) if is_ms => n.as_f64().map(millis).unwrap_or_else(|| cell(v)),
        Value::Object(o) if is_ms => {
            let samples = o.get("samples").and_then(Value::as_u64);
            if samples == Some(0) {
                "no samples yet".to_owned()
            } else {
                let parts: Vec<String> = o
                    .iter()
                    .filter(|(k, _)| k.as_str() != "samples")
                    .map(|(k, x)| match x.as_f64() {
                        Some(ms) => format!("{k} {}", millis(ms)),
                        None => format!("{k} {}", cell(x)),
                    })
                    .collect();
                let mut t = parts.join("  ");
                if let Some(n) = samples {
                    t.push_str(&format!("  ({n} samples)"));
                }
                t
            }
        }
        Value::Object(o) if o.is_empty() => "none".to_owned(),
        Value::Object(o) => o
            .iter()
            .map(|(k, x)| format!("{k} {}", cell(x)))
            .collect::<Vec<_>>()
            .join(", "),
        other => cell(other),
    };
    (name.to_owned(), text)
}

fn queue_rows(resp: &Value) -> ([&'static str; 9], Vec<Vec<String>>) {
    let rows = resp["queues"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|q| {
            let s = &q["stats"];
            let c = &q["config"];
            let status = if c["paused"] == true {
                "paused"
            } else if c["handler"].is_null() {
                "no handler"
            } else {
                "active"
            };
            vec![
                cell(&q["name"]),
                cell(&c["handler"]),
                status.to_owned(),
                cell(&s["ready"]),
                cell(&s["scheduled"]),
                cell(&s["leased"]),
                cell(&s["dlq_depth"]),
                cell(&s["acked"]),
                s["oldest_ready_age_ms"]
                    .as_u64()
                    .map(short_duration)
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    (
        [
            "NAME",
            "HANDLER",
            "STATUS",
            "READY",
            "SCHEDULED",
            "LEASED",
            "DLQ",
            "ACKED",
            "OLDEST READY",
        ],
        rows,
    )
}

/// Longest payload shown in a listing; `spool message get ID` shows it whole.
const PAYLOAD_PREVIEW: usize = 48;

fn message_rows(resp: &Value, now: i64) -> ([&'static str; 8], Vec<Vec<String>>) {
    let rows = resp["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            // When something next happens to it: a scheduled message becomes ready, a leased
            // one's lease runs out.
            let next = match m["state"].as_str() {
                Some("scheduled") => ago_cell(&m["available_at_ms"], now),
                Some("leased") => m["lease_expires_at_ms"]
                    .as_i64()
                    .map(|t| format!("lease ends {}", relative(t, now)))
                    .unwrap_or_else(|| "-".into()),
                _ => "-".into(),
            };
            // A JSON `null` payload is present (and shown as "-"); acked messages have none.
            let payload = if let Some(p) = m.get("payload") {
                preview(&cell(p), PAYLOAD_PREVIEW)
            } else if let Some(b) = m["payload_base64"].as_str() {
                preview(&format!("base64:{b}"), PAYLOAD_PREVIEW)
            } else {
                "-".into()
            };
            vec![
                cell(&m["id"]),
                cell(&m["state"]),
                cell(&m["priority"]),
                cell(&m["attempts"]),
                ago_cell(&m["enqueued_at_ms"], now),
                next,
                cell(&m["error_category"]),
                payload,
            ]
        })
        .collect();
    (
        [
            "ID", "STATE", "PRIORITY", "ATTEMPTS", "ENQUEUED", "NEXT", "ERROR", "PAYLOAD",
        ],
        rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::output::render_table;

    #[test]
    fn a_deletion_says_what_went_with_the_queue() {
        let resp = json!({"name": "old", "forced": true, "deleted": {"scheduled": 0, "ready": 3,
            "leased": 1, "acked": 10, "dead": 2, "cancelled": 0, "expired": 0, "total": 16}});
        assert_eq!(
            deleted_text(&resp),
            "deleted queue old and its 16 messages (3 ready, 1 leased, 10 acked, 2 dead)\n"
        );
        let empty = json!({"name": "new", "deleted": {"ready": 0, "total": 0}});
        assert_eq!(
            deleted_text(&empty),
            "deleted queue new; it held no messages\n"
        );
    }

    #[test]
    fn settings_map_onto_the_config_fields() {
        let s = QueueSettings {
            handler: Some("none".into()),
            concurrency: Some(3),
            max_attempts: None,
            backoff_base: Some("2s".into()),
            backoff_max: None,
            lease: Some("1m".into()),
            timeout: None,
            fuel: None,
            memory_mb: Some(32),
            strategy: Some("fifo".into()),
            instance_mode: None,
            paused: Some(false),
            default_ttl: Some("none".into()),
            breaker_failures: Some(5),
            breaker_cooldown: Some("500ms".into()),
            breaker_max_cooldown: None,
        };
        assert_eq!(
            settings_body(&s).unwrap(),
            json!({"handler": null, "concurrency": 3, "backoff_base_ms": 2000, "lease_ms": 60000,
                   "memory_mb": 32, "strategy": "fifo", "paused": false, "default_ttl_ms": null,
                   "breaker_failures": 5, "breaker_cooldown_ms": 500})
        );
    }

    #[test]
    fn config_shows_durations_and_new_fields() {
        let config = json!({"handler": null, "lease_ms": 30000, "backoff_max_ms": 300000,
                            "default_ttl_ms": null, "concurrency": 4, "zz_new": true});
        let pairs = config_pairs(&config);
        let text = render_fields(&pairs, "");
        assert_eq!(
            text,
            "handler      none\nconcurrency  4\nbackoff_max  5m\nlease        30s\n\
             default_ttl  none\nzz_new       true\n"
        );
    }

    #[test]
    fn stats_split_depths_totals_and_live_figures() {
        let stats = json!({"ready": 5, "scheduled": 0, "leased": 1, "dlq_depth": 2,
                           "oldest_ready_age_ms": 65000, "acked": 100, "enqueued": 108,
                           "retried": 3, "dead": 2, "cancelled": 0, "expired": 0,
                           "in_flight": 1, "errors": {"handler": 3, "trap": 1},
                           "handler_ms": {"p50": 0.372, "p95": 12.5, "p99": 1250.0, "samples": 4},
                           "wait_ms": {"p50": 0.0, "p95": 0.0, "p99": 0.0, "samples": 0},
                           "zz_new": 7});
        assert_eq!(
            render_stats(&stats),
            "\
now
  ready             5
  scheduled         0
  leased            1
  in_flight         1
  dlq_depth         2
  oldest_ready_age  1m 5s
totals since the queue was created
  enqueued   108
  acked      100
  retried    3
  dead       2
  cancelled  0
  expired    0
on this server since it started
  wait     no samples yet
  handler  p50 0.37ms  p95 12.5ms  p99 1.25s  (4 samples)
  errors   handler 3, trap 1
  zz_new   7
"
        );
    }

    #[test]
    fn stats_show_the_breaker_in_its_own_section() {
        let now = 1_700_000_010_000;
        let stats = json!({"ready": 2, "breaker": {"enabled": true, "state": "open",
            "consecutive_failures": 3, "opened_at": "2023-11-14T22:13:28Z",
            "opened_at_ms": 1_700_000_008_000_i64, "retry_at": "2023-11-14T22:13:35Z",
            "retry_at_ms": 1_700_000_015_000_i64, "cooldown_ms": 5000, "times_opened": 1,
            "last_error_category": "trap"}});
        assert_eq!(
            render_stats_at(&stats, now),
            "\
now
  ready  2
circuit breaker on this server
  state                 open
  opened                2023-11-14T22:13:28Z (2s ago)
  probe                 2023-11-14T22:13:35Z (in 5s)
  consecutive_failures  3
  cooldown              5s
  times_opened          1
  last_error            trap
"
        );
        let off = json!({"breaker": {"enabled": false, "state": "closed"}});
        assert!(render_stats_at(&off, now).contains("off (set --breaker-failures"));
    }

    #[test]
    fn queue_list_reads_as_a_table() {
        let resp = json!({"queues": [
            {"name": "orders", "config": {"handler": "echo", "paused": false},
             "stats": {"ready": 12, "scheduled": 0, "leased": 2, "dlq_depth": 1, "acked": 4031,
                       "oldest_ready_age_ms": 3000}},
            {"name": "idle", "config": {"handler": null, "paused": true},
             "stats": {"ready": 0, "scheduled": 0, "leased": 0, "dlq_depth": 0, "acked": 0,
                       "oldest_ready_age_ms": null}},
        ]});
        let (headers, rows) = queue_rows(&resp);
        assert_eq!(
            render_table(&headers, &rows),
            "\
NAME    HANDLER  STATUS  READY  SCHEDULED  LEASED  DLQ  ACKED  OLDEST READY
orders  echo     active     12          0       2    1   4031  3s
idle    -        paused      0          0       0    0      0  -
"
        );
    }

    #[test]
    fn message_list_shows_ages_and_a_payload_preview() {
        let now = 1_000_000;
        let resp = json!({"items": [
            {"id": "7", "state": "scheduled", "priority": 0, "attempts": 0,
             "enqueued_at_ms": now - 5000, "available_at_ms": now + 60_000,
             "payload": {"order": 42}},
            {"id": "12", "state": "dead", "priority": -1, "attempts": 5,
             "enqueued_at_ms": now - 7_200_000, "available_at_ms": now - 7_200_000,
             "error_category": "trap", "payload_base64": "AAEC"},
        ]});
        let (headers, rows) = message_rows(&resp, now);
        assert_eq!(
            render_table(&headers, &rows),
            "\
ID  STATE      PRIORITY  ATTEMPTS  ENQUEUED  NEXT   ERROR  PAYLOAD
 7  scheduled         0         0  5s ago    in 1m  -      {\"order\":42}
12  dead             -1         5  2h ago    -      trap   base64:AAEC
"
        );
    }
}

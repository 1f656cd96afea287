//! `spool schedule`: cron, interval and one-shot schedules that enqueue to a queue or publish to
//! a topic; list, show (with upcoming and recent fires), update, pause, resume, run now, delete.
//! See docs/SCHEDULES.md.

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::ClientOpts;
use super::client::seg;
use super::commands::{client, done, key_values, now_ms, table_or};
use super::output::{cell, fields, json as print_json, relative, sanitize};

#[derive(Debug, Subcommand)]
pub enum ScheduleCmd {
    /// Create a schedule
    ///
    /// Exactly one of --cron, --every and --at says when; exactly one of --queue and --topic
    /// says where. Each fire enqueues the payload once (exactly once per fire instant, also
    /// across restarts), with headers spool-schedule-id and spool-fire-at.
    ///
    /// Examples:
    ///
    ///   spool schedule add --cron '0 30 9 * * Mon-Fri' --timezone Europe/Paris \
    ///       --queue reports '{"report": "daily"}' --name daily-report
    ///   spool schedule add --every 30s --topic health.ping
    ///   spool schedule add --at 2026-12-24T18:00:00Z --queue greetings '"merry"'
    ///   spool schedule add --cron '*/5 * * * * *' --queue ticks --missed fire-all --max-runs 100
    #[command(verbatim_doc_comment)]
    Add {
        #[command(flatten)]
        when: When,
        /// The queue each fire enqueues to (it must exist).
        #[arg(
            long,
            value_name = "QUEUE",
            conflicts_with = "topic",
            required_unless_present = "topic"
        )]
        queue: Option<String>,
        /// The topic each fire publishes to, through the routes.
        #[arg(long, value_name = "TOPIC")]
        topic: Option<String>,
        /// The payload as JSON, e.g. '{"report": "daily"}' [default: null].
        payload: Option<String>,
        #[command(flatten)]
        options: ScheduleOptions,
        /// Create it paused (it fires once resumed).
        #[arg(long)]
        paused: bool,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// List schedules with their next fire.
    List {
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Show one schedule: its definition, next fire times and recent fires.
    Show {
        /// The schedule's id (`spool schedule list` shows them).
        id: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Change a schedule; only the options given change. A change takes effect from now: a
    /// fire that was due goes by the new definition.
    ///
    /// Examples:
    ///
    ///   spool schedule update 3 --cron '0 0 8 * * *'
    ///   spool schedule update 3 --payload '{"report": "weekly"}' --max-runs 10
    #[command(verbatim_doc_comment)]
    Update {
        /// The schedule's id.
        id: String,
        #[command(flatten)]
        when: UpdateWhen,
        /// New payload as JSON.
        #[arg(long, value_name = "JSON")]
        payload: Option<String>,
        #[command(flatten)]
        options: ScheduleOptions,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Pause a schedule: it does not fire until resumed (missed fires then follow --missed).
    Pause {
        /// The schedule's id (`spool schedule list` shows them).
        id: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Resume a paused schedule.
    Resume {
        /// The schedule's id (`spool schedule list` shows them).
        id: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Fire a schedule once now, whatever its timing (its next fire stays as it was).
    Run {
        /// The schedule's id (`spool schedule list` shows them).
        id: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Delete a schedule; messages it already enqueued stay.
    Delete {
        /// The schedule's id (`spool schedule list` shows them).
        id: String,
        #[command(flatten)]
        client: ClientOpts,
    },
}

/// When a new schedule fires: exactly one.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct When {
    /// A cron expression with seconds (6 fields: sec min hour day month weekday) or without
    /// (5 fields, fires at second 0), evaluated in --timezone.
    #[arg(long, value_name = "EXPR")]
    cron: Option<String>,
    /// A fixed interval, e.g. 30s, 5m, 1h (from --start-at, or from now).
    #[arg(long, value_name = "DURATION")]
    every: Option<String>,
    /// One instant (RFC 3339, e.g. 2026-12-24T18:00:00Z): fires once.
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
}

/// A new timing for an existing schedule: at most one.
#[derive(Debug, Args)]
#[group(required = false, multiple = false)]
pub struct UpdateWhen {
    /// New cron expression.
    #[arg(long, value_name = "EXPR")]
    cron: Option<String>,
    /// New interval.
    #[arg(long, value_name = "DURATION")]
    every: Option<String>,
    /// New one-shot instant.
    #[arg(long, value_name = "TIME")]
    at: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum MissedArg {
    /// Fires missed while the server was down or the schedule paused are dropped.
    Skip,
    /// One fire makes up for all that were missed.
    FireOnce,
    /// Every missed fire is made up (at most 100, the most recent).
    FireAll,
}

impl MissedArg {
    fn as_str(self) -> &'static str {
        match self {
            MissedArg::Skip => "skip",
            MissedArg::FireOnce => "fire-once",
            MissedArg::FireAll => "fire-all",
        }
    }
}

/// Options shared by `add` and `update`.
#[derive(Debug, Args)]
pub struct ScheduleOptions {
    /// IANA time zone the cron expression is read in, e.g. Europe/Paris [default: UTC].
    #[arg(long, value_name = "ZONE")]
    timezone: Option<String>,
    /// A name to find it by (unique).
    #[arg(long)]
    name: Option<String>,
    /// A header of each fired message, repeatable: --header kind=report.
    #[arg(long = "header", value_name = "NAME=VALUE")]
    headers: Vec<String>,
    /// Priority of each fired message.
    #[arg(long, allow_negative_numbers = true)]
    priority: Option<i32>,
    /// No fire before this time (RFC 3339).
    #[arg(long, value_name = "TIME")]
    start_at: Option<String>,
    /// No fire after this time (RFC 3339).
    #[arg(long, value_name = "TIME")]
    end_at: Option<String>,
    /// Stop after this many fires.
    #[arg(long, value_name = "N")]
    max_runs: Option<u64>,
    /// What to do with fires missed while the server was down or the schedule paused
    /// [default: skip].
    #[arg(long, value_enum)]
    missed: Option<MissedArg>,
}

impl ScheduleOptions {
    fn fill(self, body: &mut Map<String, Value>) -> anyhow::Result<()> {
        let text = [
            ("timezone", self.timezone),
            ("name", self.name),
            ("start_at", self.start_at),
            ("end_at", self.end_at),
        ];
        for (key, value) in text {
            if let Some(v) = value {
                body.insert(key.into(), v.into());
            }
        }
        if !self.headers.is_empty() {
            body.insert(
                "headers".into(),
                Value::Object(key_values("header", &self.headers)?),
            );
        }
        if let Some(p) = self.priority {
            body.insert("priority".into(), p.into());
        }
        if let Some(n) = self.max_runs {
            body.insert("max_runs".into(), n.into());
        }
        if let Some(m) = self.missed {
            body.insert("missed".into(), m.as_str().into());
        }
        Ok(())
    }
}

fn timing(
    body: &mut Map<String, Value>,
    cron: Option<String>,
    every: Option<String>,
    at: Option<String>,
) {
    for (key, value) in [("cron", cron), ("every", every), ("at", at)] {
        if let Some(v) = value {
            body.insert(key.into(), v.into());
        }
    }
}

/// The payload argument as JSON (kept as the text given, so key order survives).
fn payload(text: &str) -> anyhow::Result<Value> {
    let raw: Box<RawValue> = serde_json::from_str(text).with_context(|| {
        format!("the payload {text:?} is not JSON; quote a string as '\"text\"'")
    })?;
    serde_json::from_str(raw.get()).context("the payload is not JSON")
}

fn path(id: &str) -> String {
    format!("/v1/schedules/{}", seg(id))
}

pub async fn run(cmd: ScheduleCmd) -> anyhow::Result<()> {
    match cmd {
        ScheduleCmd::Add {
            when,
            queue,
            topic,
            payload: text,
            options,
            paused,
            client: opts,
        } => {
            let mut body = Map::new();
            timing(&mut body, when.cron, when.every, when.at);
            if let Some(q) = queue {
                body.insert("queue".into(), q.into());
            }
            if let Some(t) = topic {
                body.insert("topic".into(), t.into());
            }
            let payload = match text {
                Some(t) => payload(&t)?,
                None => Value::Null,
            };
            body.insert("payload".into(), payload);
            options.fill(&mut body)?;
            if paused {
                body.insert("paused".into(), true.into());
            }
            let resp = client(&opts)?
                .post("/v1/schedules", &Value::Object(body))
                .await?;
            done(
                &opts,
                &resp,
                &format!(
                    "schedule {}: {}; next fire {}",
                    cell(&resp["id"]),
                    describe(&resp),
                    next_fire(&resp, now_ms())
                ),
            );
            Ok(())
        }
        ScheduleCmd::List { client: opts } => {
            let resp = client(&opts)?.get("/v1/schedules").await?;
            if opts.json {
                print_json(&resp);
                return Ok(());
            }
            let now = now_ms();
            let rows: Vec<Vec<String>> = resp["schedules"]
                .as_array()
                .map(|a| a.as_slice())
                .unwrap_or_default()
                .iter()
                .map(|s| {
                    vec![
                        cell(&s["id"]),
                        s["name"].as_str().map(sanitize).unwrap_or_default(),
                        timing_text(s),
                        target(s),
                        next_fire(s, now),
                        cell(&s["runs"]),
                        state(s),
                    ]
                })
                .collect();
            table_or(
                &["ID", "NAME", "WHEN", "TO", "NEXT FIRE", "RUNS", "STATE"],
                &rows,
                "no schedules (add one with `spool schedule add --cron EXPR --queue QUEUE`)",
            );
            Ok(())
        }
        ScheduleCmd::Show { id, client: opts } => {
            let resp = client(&opts)?.get(&path(&id)).await?;
            if opts.json {
                print_json(&resp);
                return Ok(());
            }
            show(&resp, now_ms());
            Ok(())
        }
        ScheduleCmd::Update {
            id,
            when,
            payload: text,
            options,
            client: opts,
        } => {
            let mut body = Map::new();
            timing(&mut body, when.cron, when.every, when.at);
            if let Some(t) = text {
                body.insert("payload".into(), payload(&t)?);
            }
            options.fill(&mut body)?;
            if body.is_empty() {
                anyhow::bail!(
                    "nothing to change: give at least one option (see `spool schedule update --help`)"
                );
            }
            let resp = client(&opts)?
                .patch(&path(&id), &Value::Object(body))
                .await?;
            done(
                &opts,
                &resp,
                &format!(
                    "schedule {} updated: {}; next fire {}",
                    cell(&resp["id"]),
                    describe(&resp),
                    next_fire(&resp, now_ms())
                ),
            );
            Ok(())
        }
        ScheduleCmd::Pause { id, client: opts } => {
            let resp = client(&opts)?
                .post(&format!("{}/pause", path(&id)), &Value::Null)
                .await?;
            done(
                &opts,
                &resp,
                &format!("schedule {} paused", cell(&resp["id"])),
            );
            Ok(())
        }
        ScheduleCmd::Resume { id, client: opts } => {
            let resp = client(&opts)?
                .post(&format!("{}/resume", path(&id)), &Value::Null)
                .await?;
            done(
                &opts,
                &resp,
                &format!(
                    "schedule {} resumed; next fire {}",
                    cell(&resp["id"]),
                    next_fire(&resp, now_ms())
                ),
            );
            Ok(())
        }
        ScheduleCmd::Run { id, client: opts } => {
            let resp = client(&opts)?
                .post(&format!("{}/run", path(&id)), &Value::Null)
                .await?;
            let ids: Vec<String> = resp["ids"]
                .as_array()
                .map(|a| a.iter().map(cell).collect())
                .unwrap_or_default();
            done(
                &opts,
                &resp,
                &format!("schedule {id} fired: message {}", ids.join(", ")),
            );
            Ok(())
        }
        ScheduleCmd::Delete { id, client: opts } => {
            let resp = client(&opts)?.delete(&path(&id)).await?;
            done(
                &opts,
                &resp,
                &format!("schedule {} deleted", cell(&resp["id"])),
            );
            Ok(())
        }
    }
}

fn timing_text(s: &Value) -> String {
    if let Some(c) = s["cron"].as_str() {
        let tz = s["timezone"].as_str().unwrap_or("UTC");
        format!("cron {} ({})", sanitize(c), sanitize(tz))
    } else if let Some(e) = s["every"].as_str() {
        format!("every {}", sanitize(e))
    } else if let Some(a) = s["at"].as_str() {
        format!("at {}", sanitize(a))
    } else {
        String::new()
    }
}

fn target(s: &Value) -> String {
    match (s["queue"].as_str(), s["topic"].as_str()) {
        (Some(q), _) => format!("queue {}", sanitize(q)),
        (None, Some(t)) => format!("topic {}", sanitize(t)),
        (None, None) => String::new(),
    }
}

fn describe(s: &Value) -> String {
    format!("{} → {}", timing_text(s), target(s))
}

fn state(s: &Value) -> String {
    if s["paused"].as_bool() == Some(true) {
        "paused".into()
    } else if s["next_fire_at"].is_null() {
        "finished".into()
    } else {
        "active".into()
    }
}

fn next_fire(s: &Value, now: i64) -> String {
    match (s["next_fire_at"].as_str(), s["next_fire_at_ms"].as_i64()) {
        (Some(at), Some(ms)) => format!("{} ({})", sanitize(at), relative(ms, now)),
        _ => "none (finished)".into(),
    }
}

fn show(s: &Value, now: i64) {
    let mut pairs = vec![
        ("id".to_owned(), cell(&s["id"])),
        (
            "name".to_owned(),
            s["name"]
                .as_str()
                .map(sanitize)
                .unwrap_or_else(|| "-".into()),
        ),
        ("when".to_owned(), timing_text(s)),
        ("to".to_owned(), target(s)),
        ("state".to_owned(), state(s)),
        ("next fire".to_owned(), next_fire(s, now)),
        ("runs".to_owned(), cell(&s["runs"])),
        ("missed fires".to_owned(), cell(&s["missed"])),
    ];
    for key in ["start_at", "end_at", "max_runs", "last_error"] {
        if !s[key].is_null() {
            pairs.push((key.replace('_', " "), cell(&s[key])));
        }
    }
    pairs.push(("payload".to_owned(), payload_cell(s)));
    fields(&pairs);
    if let Some(upcoming) = s["upcoming"].as_array().filter(|u| !u.is_empty()) {
        outln!("\nupcoming:");
        for at in upcoming {
            outln!("  {}", cell(at));
        }
    }
    let fires = s["fires"]
        .as_array()
        .map(|a| a.as_slice())
        .unwrap_or_default();
    if !fires.is_empty() {
        outln!("\nrecent fires:");
        let rows: Vec<Vec<String>> = fires
            .iter()
            .map(|f| {
                let ids: Vec<String> = f["message_ids"]
                    .as_array()
                    .map(|a| a.iter().map(cell).collect())
                    .unwrap_or_default();
                vec![
                    cell(&f["fire_at"]),
                    format!("{} ms", cell(&f["lateness_ms"])),
                    ids.join(", "),
                ]
            })
            .collect();
        table_or(&["FIRE AT", "LATE BY", "MESSAGES"], &rows, "");
    }
}

fn payload_cell(s: &Value) -> String {
    match (&s["payload"], s["payload_base64"].as_str()) {
        (_, Some(b)) => format!("base64:{}", sanitize(b)),
        (p, None) => sanitize(&p.to_string()),
    }
}

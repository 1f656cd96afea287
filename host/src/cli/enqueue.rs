//! `spool enqueue`: one message from the command line, or many from a JSON Lines file. The
//! message options and the batched file upload are shared with `spool publish`.

use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use base64::Engine as _;
use clap::Args;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::ClientOpts;
use super::client::{Client, ClientError, seg};
use super::commands::{client, duration_ms, key_values};
use super::output::{cell, json as print_json, progress};

#[derive(Debug, Args)]
pub struct EnqueueArgs {
    /// The queue (it must exist: see `spool queue create`).
    pub queue: String,
    #[command(flatten)]
    pub message: MessageArgs,
    /// The topic the message is recorded under (handlers see it).
    #[arg(long, value_name = "TOPIC", conflicts_with = "file")]
    pub topic: Option<String>,
    #[command(flatten)]
    pub client: ClientOpts,
}

/// What a message is made of, shared by `spool enqueue` and `spool publish`: the payload and its
/// options on the command line, or many messages from a JSON Lines file.
#[derive(Debug, Args)]
pub struct MessageArgs {
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
    /// Idempotency key: sending the same key again returns the first message's id.
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,
    /// With --key: replace the waiting message's payload instead of keeping the first one.
    #[arg(long, requires = "key")]
    pub supersede: bool,
    /// A header, repeatable: --header source=web --header trace=abc.
    #[arg(long = "header", value_name = "NAME=VALUE")]
    pub headers: Vec<String>,
    /// An id that ties this message to others (e.g. the request that caused it).
    #[arg(long, value_name = "ID")]
    pub correlation_id: Option<String>,
    /// Send the payload as raw bytes instead of JSON (e.g. `--raw < image.png`).
    #[arg(long)]
    pub raw: bool,
    /// Send every line of a JSON Lines file ("-" for standard input). Each line is one
    /// message object as the API takes it, e.g. {"payload": {"order": 1}, "priority": 5,
    /// "idempotency_key": "order-1"}; blank lines are skipped.
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with_all = [
            "payload", "priority", "delay", "at", "ttl", "key", "supersede", "headers",
            "correlation_id", "raw",
        ]
    )]
    pub file: Option<PathBuf>,
    /// With --file: messages per request (1 to 1000). Each request is stored all or nothing.
    #[arg(
        long,
        value_name = "N",
        default_value_t = 500,
        requires = "file",
        value_parser = clap::value_parser!(u32).range(1..=1000)
    )]
    pub batch: u32,
}

impl MessageArgs {
    /// The request body for the one message given on the command line (payload from the
    /// argument or standard input).
    pub fn body(&self) -> anyhow::Result<Map<String, Value>> {
        let text = match self.payload.as_deref() {
            None | Some("-") => read_stdin()?,
            Some(s) => s.as_bytes().to_vec(),
        };
        let mut body = Map::new();
        if self.raw {
            let b64 = base64::engine::general_purpose::STANDARD.encode(&text);
            body.insert("payload_base64".into(), b64.into());
        } else {
            let payload: Value = serde_json::from_slice(&text).with_context(|| {
                "the payload is not valid JSON; quote strings, e.g. '\"hello\"' or '{\"order\": 42}', \
                 or send bytes with --raw"
            })?;
            body.insert("payload".into(), payload);
        }
        if self.priority != 0 {
            body.insert("priority".into(), self.priority.into());
        }
        if let Some(d) = &self.delay {
            body.insert("delay_ms".into(), duration_ms("delay", d)?.into());
        }
        if let Some(at) = &self.at {
            body.insert("deliver_at".into(), at.clone().into());
        }
        if let Some(t) = &self.ttl {
            body.insert("ttl_ms".into(), duration_ms("ttl", t)?.into());
        }
        if let Some(k) = &self.key {
            body.insert("idempotency_key".into(), k.clone().into());
        }
        if self.supersede {
            body.insert("supersede".into(), true.into());
        }
        if !self.headers.is_empty() {
            body.insert(
                "headers".into(),
                Value::Object(key_values("header", &self.headers)?),
            );
        }
        if let Some(c) = &self.correlation_id {
            body.insert("correlation_id".into(), c.clone().into());
        }
        Ok(body)
    }
}

/// Where `--file` sends its lines, and how its messages name the command that sends them.
pub struct Target<'a> {
    /// The API path the batches are POSTed to.
    pub url: String,
    /// `enqueue` or `publish`, for the "send the rest with" advice.
    pub command: &'static str,
    /// What the progress bar says of sent messages: "enqueued", "published".
    pub done: &'static str,
    /// The queue or topic, as given on the command line.
    pub name: &'a str,
}

pub async fn run(a: EnqueueArgs) -> anyhow::Result<()> {
    let url = format!("/v1/queues/{}/messages", seg(&a.queue));
    match &a.message.file {
        Some(file) => {
            let target = Target {
                url,
                command: "enqueue",
                done: "enqueued",
                name: &a.queue,
            };
            let sent = send_file(&a.message, &a.client, &target, file).await?;
            print_file_summary(&sent, &a.client, "enqueued", |source| {
                format!(
                    "enqueued {} messages to {} from {source} ({} requests)",
                    sent.messages, a.queue, sent.requests
                )
            });
            Ok(())
        }
        None => enqueue_one(&a, &url).await,
    }
}

async fn enqueue_one(a: &EnqueueArgs, url: &str) -> anyhow::Result<()> {
    let mut body = a.message.body()?;
    if let Some(t) = &a.topic {
        body.insert("topic".into(), t.clone().into());
    }
    let resp = client(&a.client)?.post(url, &Value::Object(body)).await?;
    if a.client.json {
        print_json(&resp);
        return Ok(());
    }
    // Just the id on stdout, so `id=$(spool enqueue ...)` works.
    for id in resp["ids"].as_array().into_iter().flatten() {
        outln!("{}", cell(id));
    }
    if resp["existing"][0] == true && !a.message.supersede {
        eprintln!("note: a message with this idempotency key already exists; that is its id");
    }
    Ok(())
}

fn read_stdin() -> anyhow::Result<Vec<u8>> {
    if std::io::stdin().is_terminal() {
        eprintln!("reading the payload from standard input (end it with Ctrl-D)");
    }
    let mut buf = Vec::new();
    std::io::stdin()
        .read_to_end(&mut buf)
        .context("cannot read the payload from standard input")?;
    Ok(buf)
}

/// The body of one request may hold at most this much: the server takes 16 MiB per request, and
/// half of it leaves room for a batch of large payloads without a 413.
const MAX_BATCH_BYTES: usize = 8 * 1024 * 1024;

/// Lines gathered for the next request.
#[derive(Default)]
struct Batch {
    /// 1-based line number of each message (blank lines are skipped, so not contiguous).
    lines: Vec<usize>,
    /// The messages' JSON text, exactly as the file has it.
    items: Vec<Box<RawValue>>,
    bytes: usize,
}

impl Batch {
    fn body(&self) -> String {
        let mut body = String::with_capacity(self.bytes + self.items.len() + 16);
        body.push_str("{\"messages\":[");
        for (i, item) in self.items.iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            body.push_str(item.get());
        }
        body.push_str("]}");
        body
    }

    fn first_line(&self) -> usize {
        self.lines.first().copied().unwrap_or(0)
    }

    /// The first line not yet sent: this batch's first, or `next` when the batch is empty.
    fn first_unsent(&self, next: usize) -> usize {
        self.lines.first().copied().unwrap_or(next)
    }
}

/// What has been stored so far, for the summary and for a failure's "already stored" note.
#[derive(Default)]
pub struct Sent {
    /// Where the lines came from: the file's path, or "standard input".
    pub source: String,
    pub ids: Vec<Value>,
    /// What a publish delivered where (`{"queue", "id", ...}`); empty for enqueue.
    pub deliveries: Vec<Value>,
    /// Messages (lines) stored.
    pub messages: usize,
    pub existing: usize,
    pub requests: usize,
    /// The last line of the last batch the server stored.
    last_line: usize,
}

/// Sends every line of `path` to `target` in batches of `m.batch`, with a progress bar on a
/// terminal. On failure the error says which lines were stored and how to send the rest.
pub async fn send_file(
    m: &MessageArgs,
    opts: &ClientOpts,
    target: &Target<'_>,
    path: &Path,
) -> anyhow::Result<Sent> {
    let from_stdin = path.as_os_str() == "-";
    let (mut reader, len): (Box<dyn BufRead>, Option<u64>) = if from_stdin {
        (Box::new(BufReader::new(std::io::stdin())), None)
    } else {
        let f =
            File::open(path).with_context(|| format!("cannot open {} (--file)", path.display()))?;
        let len = f.metadata().ok().map(|m| m.len());
        (Box::new(BufReader::new(f)), len)
    };
    let c = client(opts)?;
    let bar = progress(len, "messages", opts.json);
    let mut sent = Sent {
        source: if from_stdin {
            "standard input".to_owned()
        } else {
            path.display().to_string()
        },
        ..Sent::default()
    };
    let mut batch = Batch::default();
    let mut line = String::new();
    let mut line_no = 0usize;
    let mut bytes_read = 0u64;
    loop {
        line.clear();
        let n = reader.read_line(&mut line).map_err(|e| {
            anyhow::anyhow!(
                "cannot read line {} of {}: {e}{}",
                line_no + 1,
                sent.source,
                partial_note(&sent, batch.first_unsent(line_no + 1), m, target)
            )
        })?;
        if n == 0 {
            break;
        }
        line_no += 1;
        bytes_read += n as u64;
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        let item = parse_line(text).map_err(|e| {
            anyhow::anyhow!(
                "line {line_no} of {}: {e}{}",
                sent.source,
                partial_note(&sent, batch.first_unsent(line_no), m, target)
            )
        })?;
        if !batch.items.is_empty()
            && (batch.items.len() >= m.batch as usize || batch.bytes + text.len() > MAX_BATCH_BYTES)
        {
            send(&c, &mut batch, &mut sent, m, target).await?;
            bar.set_position(if len.is_some() {
                bytes_read
            } else {
                sent.messages as u64
            });
            bar.set_message(format!("{} {}", sent.messages, target.done));
        }
        batch.bytes += text.len();
        batch.lines.push(line_no);
        batch.items.push(item);
    }
    if !batch.items.is_empty() {
        send(&c, &mut batch, &mut sent, m, target).await?;
    }
    bar.finish_and_clear();
    Ok(sent)
}

/// After `--file`: with `--json` one object (`{count_key: N, "existing", "ids"}`, plus
/// `"deliveries"` for a publish), else `summary` (given the source) and a note on idempotency
/// keys that found existing messages.
pub fn print_file_summary(
    sent: &Sent,
    opts: &ClientOpts,
    count_key: &str,
    summary: impl FnOnce(&str) -> String,
) {
    if opts.json {
        let mut out = serde_json::json!({
            count_key: sent.messages,
            "existing": sent.existing,
            "ids": sent.ids,
        });
        if !sent.deliveries.is_empty() {
            out["deliveries"] = Value::Array(sent.deliveries.clone());
        }
        print_json(&out);
        return;
    }
    if sent.requests == 0 {
        outln!(
            "{} has no messages (only blank lines); nothing stored",
            sent.source
        );
        return;
    }
    outln!("{}", summary(&sent.source));
    if sent.existing > 0 {
        outln!(
            "{} of them already existed with the same idempotency key; their existing ids were kept",
            sent.existing
        );
    }
}

/// One line as a message object. Only the shape is checked here; the server checks the fields
/// and names the offending one.
fn parse_line(text: &str) -> Result<Box<RawValue>, String> {
    let raw: Box<RawValue> =
        serde_json::from_str(text).map_err(|e| format!("not valid JSON ({e})"))?;
    if !raw.get().starts_with('{') {
        return Err(format!(
            "each line must be a message object such as {{\"payload\": {}}}; \
             wrap a bare payload in {{\"payload\": ...}}",
            super::output::preview(raw.get(), 40)
        ));
    }
    Ok(raw)
}

/// Sends the batch; on failure, says which lines failed and which are already stored.
async fn send(
    c: &Client,
    batch: &mut Batch,
    sent: &mut Sent,
    m: &MessageArgs,
    target: &Target<'_>,
) -> anyhow::Result<()> {
    let first = batch.first_line();
    let last = batch.lines.last().copied().unwrap_or(first);
    match c.post_json_text(&target.url, batch.body()).await {
        Ok(resp) => {
            sent.ids
                .extend(resp["ids"].as_array().cloned().unwrap_or_default());
            sent.deliveries
                .extend(resp["deliveries"].as_array().cloned().unwrap_or_default());
            sent.existing += resp["existing"]
                .as_array()
                .map(|v| v.iter().filter(|b| **b == true).count())
                .unwrap_or(0);
            sent.existing += resp["deliveries"]
                .as_array()
                .map(|v| v.iter().filter(|d| d["existing"] == true).count())
                .unwrap_or(0);
            sent.messages += batch.items.len();
            sent.requests += 1;
            sent.last_line = last;
            *batch = Batch::default();
            Ok(())
        }
        Err(e) => bail!(failure_text(&e, batch, sent, m, target, first, last)),
    }
}

fn failure_text(
    e: &ClientError,
    batch: &Batch,
    sent: &Sent,
    m: &MessageArgs,
    target: &Target<'_>,
    first: usize,
    last: usize,
) -> String {
    let source = &sent.source;
    let mut text = if e.is_rejection() {
        let mut t = format!(
            "lines {first}-{last} of {source} were rejected, so none of them was stored: {e}"
        );
        if let Some(line) = e
            .server_message()
            .and_then(|m| offending_line(m, &batch.lines))
        {
            t.push_str(&format!("\n  the message the server names is line {line}"));
        }
        t
    } else {
        format!(
            "lines {first}-{last} of {source} may or may not have been stored: {e}\n  \
             give each line an \"idempotency_key\" so that sending lines again cannot duplicate them"
        )
    };
    text.push_str(&partial_note(sent, first, m, target));
    text
}

/// Indented lines for a failure: what was stored before it and, when something was, how to
/// send the rest.
fn partial_note(sent: &Sent, next_line: usize, m: &MessageArgs, target: &Target<'_>) -> String {
    let mut out = format!("\n  {}", stored_note(sent, next_line));
    let file = m.file.as_deref().filter(|p| p.as_os_str() != "-");
    if let (false, Some(file)) = (sent.messages == 0, file) {
        out.push_str(&format!(
            "\n  after fixing it, send the rest with: tail -n +{next_line} {} | spool {} {} --file -",
            file.display(),
            target.command,
            target.name
        ));
    }
    out
}

/// "N messages from lines 1-K were already stored" (or that nothing was).
fn stored_note(sent: &Sent, next_line: usize) -> String {
    if sent.messages == 0 {
        "nothing was stored".to_owned()
    } else {
        format!(
            "{} messages from lines 1-{} were already stored; lines from {next_line} on were not sent",
            sent.messages, sent.last_line
        )
    }
}

/// The file line of `messages[K]` in a server error message about this batch.
fn offending_line(message: &str, lines: &[usize]) -> Option<usize> {
    let start = message.find("messages[")? + "messages[".len();
    let end = message[start..].find(']')? + start;
    let k: usize = message[start..end].parse().ok()?;
    lines.get(k).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_must_be_message_objects() {
        assert!(parse_line(r#"{"payload": {"a": 1}, "priority": 2}"#).is_ok());
        let e = parse_line("42").unwrap_err();
        assert!(e.contains("{\"payload\": ...}"), "{e}");
        assert!(
            parse_line("{not json")
                .unwrap_err()
                .contains("not valid JSON")
        );
    }

    #[test]
    fn batches_keep_each_line_as_written() {
        let mut b = Batch::default();
        for (i, text) in [r#"{"payload": {"b": 1, "a": 2}}"#, r#"{"payload":3}"#]
            .iter()
            .enumerate()
        {
            b.lines.push(i + 1);
            b.items.push(parse_line(text).unwrap());
        }
        assert_eq!(
            b.body(),
            r#"{"messages":[{"payload": {"b": 1, "a": 2}},{"payload":3}]}"#
        );
        let v: Value = serde_json::from_str(&b.body()).unwrap();
        assert_eq!(v["messages"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn a_server_error_points_at_the_line() {
        let lines = [1001, 1002, 1004, 1005];
        assert_eq!(
            offending_line("messages[2].payload is missing", &lines),
            Some(1004)
        );
        assert_eq!(offending_line("queue \"q\" does not exist", &lines), None);
        assert_eq!(offending_line("messages[9].x", &lines), None);
    }

    #[test]
    fn stored_note_counts_what_is_kept() {
        let mut sent = Sent::default();
        assert_eq!(stored_note(&sent, 1), "nothing was stored");
        sent.messages = 500;
        sent.last_line = 500;
        assert_eq!(
            stored_note(&sent, 501),
            "500 messages from lines 1-500 were already stored; lines from 501 on were not sent"
        );
    }
}

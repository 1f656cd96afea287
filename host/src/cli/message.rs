//! `spool message`: one message in full, cancelling or requeueing it, and the tree of messages its chain of
//! publishes made.

use std::collections::{HashMap, HashSet};

use clap::Subcommand;
use serde_json::Value;

use super::ClientOpts;
use super::client::seg;
use super::commands::{client, now_ms};
use super::output::{
    cell, json as print_json, multiline, render_fields, render_table, sanitize, when,
};

#[derive(Debug, Subcommand)]
pub enum MessageCmd {
    /// Show one message: state, attempts, last error, headers and payload.
    Get {
        /// The message id (as `spool enqueue` printed it).
        id: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Cancel a waiting message (a running one is cancelled when its handler returns).
    Cancel {
        /// The message id.
        id: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Make a waiting message ready now: a delayed one, or a retry waiting for its backoff
    ///
    /// Only a `scheduled` message can be requeued; its attempts and last error are kept.
    ///
    /// Examples:
    ///
    ///   spool message requeue 42
    #[command(verbatim_doc_comment)]
    Requeue {
        /// The message id.
        id: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Show every message of a message's chain as a tree: who published what, where it went
    ///
    /// Messages that handlers publish carry the correlation id of the message that started the
    /// chain and their parent's id. Each line: id, queue, topic, state and the plugin version
    /// that handled it.
    ///
    /// Examples:
    ///
    ///   spool message trace 42
    ///   spool message trace 42 --json | jq '.messages[] | select(.state == "dead")'
    #[command(verbatim_doc_comment)]
    Trace {
        /// Any message of the chain (the first one, or one in the middle).
        id: String,
        #[command(flatten)]
        client: ClientOpts,
    },
}

pub async fn run(cmd: MessageCmd) -> anyhow::Result<()> {
    match cmd {
        MessageCmd::Get { id, client: opts } => {
            let resp = client(&opts)?
                .get(&format!("/v1/messages/{}", seg(&id)))
                .await?;
            if opts.json {
                print_json(&resp);
            } else {
                out!("{}", render_message(&resp, now_ms()));
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
                outln!("message {id} is running; it will be cancelled when its handler returns");
            } else {
                outln!("message {id} cancelled");
            }
            Ok(())
        }
        MessageCmd::Requeue { id, client: opts } => {
            let resp = client(&opts)?
                .post(
                    &format!("/v1/messages/{}/requeue", seg(&id)),
                    &Value::Object(Default::default()),
                )
                .await?;
            if opts.json {
                print_json(&resp);
            } else {
                outln!("message {id} is {}", cell(&resp["state"]));
            }
            Ok(())
        }
        MessageCmd::Trace { id, client: opts } => {
            let resp = client(&opts)?
                .get(&format!("/v1/messages/{}/trace", seg(&id)))
                .await?;
            if opts.json {
                print_json(&resp);
            } else {
                out!("{}", render_trace(&resp));
            }
            Ok(())
        }
    }
}

/// The chain as a tree under a table header: each message below its parent, children in the
/// order the server listed them.
fn render_trace(resp: &Value) -> String {
    let messages: Vec<&Value> = resp["messages"].as_array().into_iter().flatten().collect();
    let ids: HashSet<String> = messages.iter().map(|m| cell(&m["id"])).collect();
    let mut children: HashMap<String, Vec<usize>> = HashMap::new();
    let mut roots = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let parent = cell(&m["parent_id"]);
        // A parent outside the answer (removed after its retention window) makes a root.
        if m["parent_id"].is_null() || !ids.contains(&parent) {
            roots.push(i);
        } else {
            children.entry(parent).or_default().push(i);
        }
    }
    let mut rows = Vec::new();
    let mut seen = HashSet::new();
    // (message, prefix of its line, prefix of its children's lines)
    let mut stack: Vec<(usize, String, String)> = roots
        .iter()
        .rev()
        .map(|&i| (i, String::new(), String::new()))
        .collect();
    while let Some((i, line_prefix, child_prefix)) = stack.pop() {
        let m = messages[i];
        let id = cell(&m["id"]);
        if !seen.insert(i) {
            continue;
        }
        rows.push(vec![
            format!("{line_prefix}{id}"),
            cell(&m["queue"]),
            cell(&m["topic"]),
            cell(&m["state"]),
            cell(&m["plugin_version"]),
        ]);
        let kids = children.get(&id).map(Vec::as_slice).unwrap_or_default();
        for (k, &c) in kids.iter().enumerate().rev() {
            let last = k + 1 == kids.len();
            let (here, below) = if last {
                ("└─ ", "   ")
            } else {
                ("├─ ", "│  ")
            };
            stack.push((
                c,
                format!("{child_prefix}{here}"),
                format!("{child_prefix}{below}"),
            ));
        }
    }
    let mut out = String::new();
    if let Some(c) = resp["correlation_id"].as_str() {
        out.push_str(&format!("correlation id {}\n\n", sanitize(c)));
    }
    if rows.is_empty() {
        out.push_str("no messages in this chain\n");
    } else {
        out.push_str(&render_table(
            &["ID", "QUEUE", "TOPIC", "STATE", "PLUGIN_VERSION"],
            &rows,
        ));
    }
    out
}

/// Scalar fields in reading order; times get their age.
const PLAIN: [&str; 9] = [
    "id",
    "queue",
    "state",
    "priority",
    "attempts",
    "error_category",
    "plugin_version",
    "topic",
    "idempotency_key",
];
const TIMES: [(&str, &str); 6] = [
    ("enqueued", "enqueued_at"),
    ("available", "available_at"),
    ("lease_expires", "lease_expires_at"),
    ("expires", "expires_at"),
    ("finished", "finished_at"),
    ("reviewed", "reviewed_at"),
];

fn render_message(m: &Value, now: i64) -> String {
    let mut pairs: Vec<(String, String)> = PLAIN
        .iter()
        .filter(|k| !m[**k].is_null())
        .map(|k| ((*k).to_owned(), cell(&m[*k])))
        .collect();
    if let Some(c) = m["correlation_id"].as_str() {
        pairs.push(("correlation_id".into(), sanitize(c)));
    }
    for (label, key) in TIMES {
        if !m[key].is_null() {
            pairs.push((
                label.to_owned(),
                when(&m[key], &m[format!("{key}_ms").as_str()], now),
            ));
        }
    }
    if let Some(e) = m["last_error"].as_str() {
        pairs.push(("last_error".into(), multiline(e)));
    }
    let mut out = render_fields(&pairs, "");
    if let Some(h) = m["headers"].as_object().filter(|h| !h.is_empty()) {
        out.push_str("\nheaders\n");
        let pairs: Vec<(String, String)> = h.iter().map(|(k, v)| (sanitize(k), cell(v))).collect();
        out.push_str(&render_fields(&pairs, "  "));
    }
    if let Some(p) = m.get("payload") {
        out.push_str("\npayload\n");
        let pretty = serde_json::to_string_pretty(p).unwrap_or_else(|_| p.to_string());
        for line in pretty.lines() {
            out.push_str(&format!("  {}\n", sanitize(line)));
        }
    } else if let Some(b) = m["payload_base64"].as_str() {
        out.push_str(&format!(
            "\npayload (not JSON, base64)\n  {}\n",
            sanitize(b)
        ));
    } else if m["state"] == "acked" {
        out.push_str("\npayload  (dropped once acked)\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_message_reads_top_to_bottom() {
        let m = json!({
            "id": "12", "queue": "orders", "state": "dead", "priority": 0, "attempts": 3,
            "error_category": "trap", "last_error": "wasm trap: unreachable\nat handle",
            "enqueued_at": "1970-01-01T00:00:00Z", "enqueued_at_ms": 0,
            "available_at": "1970-01-01T00:00:00Z", "available_at_ms": 0,
            "finished_at": "1970-01-01T00:01:00Z", "finished_at_ms": 60000,
            "headers": {"tenant": "acme"},
            "payload": {"order": 42}
        });
        let text = render_message(&m, 120_000);
        assert_eq!(
            text,
            "\
id              12
queue           orders
state           dead
priority        0
attempts        3
error_category  trap
enqueued        1970-01-01T00:00:00Z (2m ago)
available       1970-01-01T00:00:00Z (2m ago)
finished        1970-01-01T00:01:00Z (1m ago)
last_error      wasm trap: unreachable
                at handle

headers
  tenant  acme

payload
  {
    \"order\": 42
  }
"
        );
    }

    #[test]
    fn a_trace_is_a_tree() {
        let resp = json!({"correlation_id": "c-1", "messages": [
            {"id": "1", "parent_id": null, "queue": "a", "topic": "t.a", "state": "acked",
             "plugin_version": 1},
            {"id": "2", "parent_id": "1", "queue": "b", "topic": "t.b", "state": "acked",
             "plugin_version": 1},
            {"id": "3", "parent_id": "2", "queue": "c", "topic": "t.c", "state": "ready",
             "plugin_version": null},
            {"id": "4", "parent_id": "1", "queue": "d", "topic": "t.b", "state": "dead",
             "plugin_version": 2},
            {"id": "5", "parent_id": "2", "queue": "e", "topic": "t.c", "state": "ready",
             "plugin_version": null},
        ]});
        assert_eq!(
            render_trace(&resp),
            "\
correlation id c-1

ID       QUEUE  TOPIC  STATE  PLUGIN_VERSION
1        a      t.a    acked               1
├─ 2     b      t.b    acked               1
│  ├─ 3  c      t.c    ready               -
│  └─ 5  e      t.c    ready               -
└─ 4     d      t.b    dead                2
"
        );
    }

    #[test]
    fn binary_and_dropped_payloads_say_so() {
        let text = render_message(&json!({"id": "1", "payload_base64": "AAE="}), 0);
        assert!(
            text.ends_with("payload (not JSON, base64)\n  AAE=\n"),
            "{text}"
        );
        let text = render_message(&json!({"id": "1", "state": "acked"}), 0);
        assert!(text.ends_with("(dropped once acked)\n"), "{text}");
    }
}

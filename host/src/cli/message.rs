//! `spool message`: one message in full, and cancelling it.

use clap::Subcommand;
use serde_json::Value;

use super::ClientOpts;
use super::client::seg;
use super::commands::{client, now_ms};
use super::output::{cell, json as print_json, multiline, render_fields, sanitize, when};

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
    }
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

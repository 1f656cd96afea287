//! `spool publish`: one message (or a JSON Lines file of them) through the router, to every
//! queue whose route matches the topic.

use std::collections::BTreeMap;

use clap::Args;
use serde_json::Value;

use super::ClientOpts;
use super::client::seg;
use super::commands::{client, table_or};
use super::enqueue::{MessageArgs, Target, print_file_summary, send_file};
use super::output::{cell, json as print_json};

#[derive(Debug, Args)]
pub struct PublishArgs {
    /// The topic: dot-separated words, e.g. orders.eu.created (routes match it by pattern).
    pub topic: String,
    #[command(flatten)]
    pub message: MessageArgs,
    #[command(flatten)]
    pub client: ClientOpts,
}

pub async fn run(a: PublishArgs) -> anyhow::Result<()> {
    let url = format!("/v1/topics/{}/messages", seg(&a.topic));
    if let Some(file) = &a.message.file {
        let target = Target {
            url,
            command: "publish",
            done: "published",
            name: &a.topic,
        };
        let sent = send_file(&a.message, &a.client, &target, file).await?;
        print_file_summary(&sent, &a.client, "published", |source| {
            format!(
                "published {} messages to {} from {source} ({} requests): {}",
                sent.messages,
                a.topic,
                sent.requests,
                per_queue(&sent.deliveries)
            )
        });
        return Ok(());
    }
    let body = a.message.body()?;
    let resp = client(&a.client)?.post(&url, &Value::Object(body)).await?;
    if a.client.json {
        print_json(&resp);
        return Ok(());
    }
    let deliveries = resp["deliveries"].as_array().cloned().unwrap_or_default();
    let (headers, rows) = delivery_rows(&deliveries);
    table_or(
        &headers,
        &rows,
        "no queue took the message: the filters of the routes that match dropped it",
    );
    let dead = deliveries.iter().filter(|d| d["dead"] == true).count();
    if dead > 0 {
        eprintln!(
            "note: {dead} of the routes' filters failed on this message; those deliveries are \
             dead letters (see `spool dlq list --category filter`, then `spool dlq replay ID`)"
        );
    }
    Ok(())
}

/// One row per delivery: queue, message id, and what is special about it.
fn delivery_rows(deliveries: &[Value]) -> ([&'static str; 3], Vec<Vec<String>>) {
    let rows = deliveries
        .iter()
        .map(|d| {
            let note = if d["dead"] == true {
                "dead letter: the route's filter failed"
            } else if d["existing"] == true {
                "already there (same idempotency key)"
            } else {
                ""
            };
            vec![cell(&d["queue"]), cell(&d["id"]), note.to_owned()]
        })
        .collect();
    (["QUEUE", "ID", "NOTE"], rows)
}

/// "3 deliveries: orders (2), audit (1)", or that none was made.
fn per_queue(deliveries: &[Value]) -> String {
    if deliveries.is_empty() {
        return "no deliveries (the routes' filters dropped every message)".to_owned();
    }
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for d in deliveries {
        *counts.entry(cell(&d["queue"])).or_default() += 1;
    }
    let list: Vec<String> = counts.iter().map(|(q, n)| format!("{q} ({n})")).collect();
    format!("{} deliveries: {}", deliveries.len(), list.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::output::render_table;
    use serde_json::json;

    #[test]
    fn deliveries_show_queue_and_id() {
        let d = [
            json!({"queue": "audit", "id": "7"}),
            json!({"queue": "orders", "id": "8", "existing": true}),
            json!({"queue": "eu", "id": "9", "dead": true}),
        ];
        let (h, rows) = delivery_rows(&d);
        let t = render_table(&h, &rows);
        assert_eq!(t.lines().nth(1).map(str::trim_end), Some("audit    7"));
        assert!(t.contains("eu       9  dead letter"), "{t}");
        assert_eq!(
            per_queue(&d[..2]),
            "2 deliveries: audit (1), orders (1)",
            "sorted by queue"
        );
        assert!(per_queue(&[]).starts_with("no deliveries"));
    }
}

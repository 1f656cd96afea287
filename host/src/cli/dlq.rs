//! `spool dlq`: list dead letters, replay them, mark them reviewed, purge them, one at a time or
//! in bulk.

use std::collections::HashSet;

use anyhow::bail;
use clap::{ArgGroup, Subcommand};
use serde_json::{Map, Value, json};

use super::client::{Client, ClientError, seg};
use super::commands::{client, confirm, done, list_pages, print_listing};
use super::output::{ago_cell, cell, json as print_json, multiline, progress};
use super::{ClientOpts, PageOpts};
use crate::model::ErrorCategory;

#[derive(Debug, Subcommand)]
pub enum DlqCmd {
    /// List dead letters, oldest first (`spool message get ID` shows one in full).
    List {
        /// Only this queue's dead letters.
        #[arg(long)]
        queue: Option<String>,
        /// Only this error category: trap, fuel, timeout, memory, handler, no-plugin,
        /// interface, lease-expired, host, filter.
        #[arg(long, value_parser = category)]
        category: Option<String>,
        /// Only reviewed (true) or not yet reviewed (false) dead letters.
        #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
        reviewed: Option<bool>,
        #[command(flatten)]
        page: PageOpts,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Send a dead letter back to its queue with its attempts reset; --all for every match
    ///
    /// A dead letter of a route's filter (category filter) runs its route again: the filter
    /// decides anew where it goes. With --skip-filter it goes to the route's queue unfiltered.
    ///
    /// Examples:
    ///
    ///   spool dlq replay 17
    ///   spool dlq replay 17 --skip-filter
    ///   spool dlq replay --all --queue orders --category trap
    #[command(
        verbatim_doc_comment,
        group(ArgGroup::new("which").required(true).args(["id", "all"]))
    )]
    Replay {
        /// The dead letter's id.
        id: Option<String>,
        /// Replay every dead letter that matches --queue and --category, oldest first.
        #[arg(long)]
        all: bool,
        /// With --all: only this queue's dead letters.
        #[arg(long, conflicts_with = "id")]
        queue: Option<String>,
        /// With --all: only this error category (see `dlq list --help`).
        #[arg(long, conflicts_with = "id", value_parser = category)]
        category: Option<String>,
        /// For a filter's dead letter: deliver it to the route's queue without running the
        /// filter again (when the filter is what is broken).
        #[arg(long, requires = "id", conflicts_with = "all")]
        skip_filter: bool,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Mark a dead letter as reviewed (it is removed after the retention window).
    Reviewed {
        /// The dead letter's id.
        id: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Delete a dead letter now; --all for every match (asks first on a terminal).
    #[command(group(ArgGroup::new("which").required(true).args(["id", "all"])))]
    Purge {
        /// The dead letter's id.
        id: Option<String>,
        /// Delete every dead letter that matches --queue, --category and --reviewed.
        #[arg(long)]
        all: bool,
        /// With --all: only this queue's dead letters.
        #[arg(long, conflicts_with = "id")]
        queue: Option<String>,
        /// With --all: only this error category (see `dlq list --help`).
        #[arg(long, conflicts_with = "id", value_parser = category)]
        category: Option<String>,
        /// With --all: only reviewed (true) or not yet reviewed (false) dead letters.
        #[arg(
            long,
            conflicts_with = "id",
            value_name = "BOOL",
            num_args = 0..=1,
            default_missing_value = "true"
        )]
        reviewed: Option<bool>,
        /// With --all: do not ask for confirmation (needed when not on a terminal).
        #[arg(long, short = 'y', conflicts_with = "id")]
        yes: bool,
        #[command(flatten)]
        client: ClientOpts,
    },
}

fn category(s: &str) -> Result<String, String> {
    s.parse::<ErrorCategory>().map(|c| c.as_str().to_owned())
}

/// Dead letters per bulk request: big enough to be quick, small enough that each request
/// (one transaction on the server) stays short.
const BULK_BATCH: u32 = 500;
/// Most dead letters one bulk command handles before it stops and says so.
const MAX_BULK: u64 = 1_000_000;

pub async fn run(cmd: DlqCmd) -> anyhow::Result<()> {
    match cmd {
        DlqCmd::List {
            queue,
            category,
            reviewed,
            page,
            client: opts,
        } => {
            let resp = list_pages(
                &client(&opts)?,
                "/v1/dlq",
                &[
                    ("queue", queue),
                    ("category", category),
                    ("reviewed", reviewed.map(|b| b.to_string())),
                ],
                &page,
            )
            .await?;
            print_listing(
                opts.json,
                &resp,
                page.all,
                "no dead letters match",
                dead_rows,
            );
            Ok(())
        }
        DlqCmd::Replay {
            id: Some(id),
            skip_filter,
            client: opts,
            ..
        } => {
            let mut path = format!("/v1/dlq/{}/replay", seg(&id));
            if skip_filter {
                path.push_str("?skip_filter=true");
            }
            let resp = client(&opts)?.post(&path, &json!({})).await?;
            let text = if skip_filter {
                format!(
                    "dead letter {id} is back in its route's queue, unfiltered, ready, with its \
                     attempts reset"
                )
            } else {
                format!("dead letter {id} is back in its queue, ready, with its attempts reset")
            };
            done(&opts, &resp, &text);
            Ok(())
        }
        DlqCmd::Replay {
            id: None,
            queue,
            category,
            client: opts,
            ..
        } => {
            let filter = Filter {
                queue,
                category,
                reviewed: None,
            };
            replay_all(&client(&opts)?, &filter, opts.json).await
        }
        DlqCmd::Reviewed { id, client: opts } => {
            let resp = client(&opts)?
                .post(&format!("/v1/dlq/{}/reviewed", seg(&id)), &json!({}))
                .await?;
            done(
                &opts,
                &resp,
                &format!(
                    "dead letter {id} marked reviewed; it is deleted after the retention window"
                ),
            );
            Ok(())
        }
        DlqCmd::Purge {
            id: Some(id),
            client: opts,
            ..
        } => {
            let resp = client(&opts)?
                .delete(&format!("/v1/dlq/{}", seg(&id)))
                .await?;
            done(&opts, &resp, &format!("dead letter {id} deleted"));
            Ok(())
        }
        DlqCmd::Purge {
            id: None,
            queue,
            category,
            reviewed,
            yes,
            client: opts,
            ..
        } => {
            let filter = Filter {
                queue,
                category,
                reviewed,
            };
            if !yes {
                let what = filter.describe();
                let question = format!("Delete {what} for good?");
                if !confirm(&question, &format!("delete {what}"))? {
                    bail!("not confirmed; nothing deleted");
                }
            }
            purge_all(&client(&opts)?, &filter, opts.json).await
        }
    }
}

/// Which dead letters a bulk command applies to.
struct Filter {
    queue: Option<String>,
    category: Option<String>,
    reviewed: Option<bool>,
}

impl Filter {
    fn body(&self) -> Value {
        let mut m = Map::new();
        if let Some(q) = &self.queue {
            m.insert("queue".into(), q.clone().into());
        }
        if let Some(c) = &self.category {
            m.insert("category".into(), c.clone().into());
        }
        if let Some(r) = self.reviewed {
            m.insert("reviewed".into(), r.into());
        }
        m.insert("limit".into(), BULK_BATCH.into());
        Value::Object(m)
    }

    /// "all dead letters of queue orders with category trap, reviewed".
    fn describe(&self) -> String {
        let mut s = String::from("all dead letters");
        if let Some(q) = &self.queue {
            s.push_str(&format!(" of queue {q}"));
        }
        if let Some(c) = &self.category {
            s.push_str(&format!(" with category {c}"));
        }
        match self.reviewed {
            Some(true) => s.push_str(" that were reviewed"),
            Some(false) => s.push_str(" not yet reviewed"),
            None => {}
        }
        s
    }
}

/// An error from a bulk endpoint, with what was already done and a hint when the server is
/// older than the endpoint.
fn bulk_error(e: ClientError, what: &str, done: u64) -> anyhow::Error {
    let hint = if e.status() == Some(404) || e.status() == Some(405) {
        "; this server may predate bulk DLQ operations: upgrade it, or use the one-id form"
    } else {
        ""
    };
    if done == 0 {
        anyhow::anyhow!("{e}{hint}")
    } else {
        anyhow::anyhow!("stopped after {what} {done} dead letters: {e}{hint}")
    }
}

async fn replay_all(c: &Client, filter: &Filter, json_out: bool) -> anyhow::Result<()> {
    let bar = progress(None, "dead letters replayed", json_out);
    let body = filter.body();
    let mut ids: Vec<Value> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut total = 0u64;
    let mut came_back = 0u64;
    let mut bounded = false;
    for _ in 0..=(MAX_BULK / u64::from(BULK_BATCH)) {
        let resp = c
            .post("/v1/dlq/replay", &body)
            .await
            .map_err(|e| bulk_error(e, "replaying", total))?;
        let batch: Vec<Value> = resp["ids"].as_array().cloned().unwrap_or_default();
        let n = resp["replayed"].as_u64().unwrap_or(batch.len() as u64);
        if n == 0 {
            break;
        }
        total += n;
        for id in &batch {
            // A replayed message whose handler still fails dies again and matches again;
            // replaying it once more would loop for as long as the handler is broken.
            if !seen.insert(cell(id)) {
                came_back += 1;
            }
        }
        ids.extend(batch);
        bar.set_position(total);
        if came_back > 0 {
            break;
        }
        if total >= MAX_BULK {
            bounded = true;
            break;
        }
    }
    bar.finish_and_clear();
    if json_out {
        print_json(&json!({ "replayed": total, "ids": ids }));
    } else if total == 0 {
        outln!("no dead letters match; nothing replayed");
    } else {
        outln!(
            "replayed {total} dead letters ({}): they are ready again with their attempts reset",
            filter.describe()
        );
    }
    if came_back > 0 {
        eprintln!(
            "note: {came_back} replayed messages died again while this ran (their handler still \
             fails), so replay stopped there; fix the handler, then run it again"
        );
    }
    if bounded {
        eprintln!("note: stopped after {MAX_BULK}; run it again to replay the rest");
    }
    Ok(())
}

async fn purge_all(c: &Client, filter: &Filter, json_out: bool) -> anyhow::Result<()> {
    let bar = progress(None, "dead letters deleted", json_out);
    let body = filter.body();
    let mut total = 0u64;
    let mut bounded = false;
    for _ in 0..=(MAX_BULK / u64::from(BULK_BATCH)) {
        let resp = c
            .post("/v1/dlq/purge", &body)
            .await
            .map_err(|e| bulk_error(e, "deleting", total))?;
        let Some(n) = resp["purged"].as_u64() else {
            bail!("the server's answer has no \"purged\" count: {resp}");
        };
        if n == 0 {
            break;
        }
        total += n;
        bar.set_position(total);
        // Messages keep dying while this runs; the bound keeps a busy DLQ from holding the
        // command forever.
        if total >= MAX_BULK {
            bounded = true;
            break;
        }
    }
    bar.finish_and_clear();
    if json_out {
        print_json(&json!({ "purged": total }));
    } else if total == 0 {
        outln!("no dead letters match; nothing deleted");
    } else {
        outln!("deleted {total} dead letters ({})", filter.describe());
    }
    if bounded {
        eprintln!("note: stopped after {MAX_BULK}; run it again to delete the rest");
    }
    Ok(())
}

fn dead_rows(resp: &Value, now: i64) -> ([&'static str; 7], Vec<Vec<String>>) {
    let rows = resp["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            vec![
                cell(&m["id"]),
                cell(&m["queue"]),
                cell(&m["error_category"]),
                cell(&m["attempts"]),
                ago_cell(&m["dead_at_ms"], now),
                if m["reviewed"] == true { "yes" } else { "no" }.to_owned(),
                // The whole error, last so it can run on (and over several lines, for a trap's
                // backtrace): it is what a person acts on.
                m["error"]
                    .as_str()
                    .map(multiline)
                    .unwrap_or_else(|| cell(&m["error"])),
            ]
        })
        .collect();
    (
        [
            "ID", "QUEUE", "CATEGORY", "ATTEMPTS", "DIED", "REVIEWED", "ERROR",
        ],
        rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::output::render_table;

    #[test]
    fn categories_are_checked_locally() {
        assert_eq!(category("no-plugin").unwrap(), "no-plugin");
        let e = category("oops").unwrap_err();
        assert!(e.contains("trap") && e.contains("lease-expired"), "{e}");
    }

    #[test]
    fn bulk_bodies_carry_only_the_filters_given() {
        let f = Filter {
            queue: Some("orders".into()),
            category: None,
            reviewed: Some(true),
        };
        assert_eq!(
            f.body(),
            json!({"queue": "orders", "reviewed": true, "limit": BULK_BATCH})
        );
        assert_eq!(
            f.describe(),
            "all dead letters of queue orders that were reviewed"
        );
        let f = Filter {
            queue: None,
            category: None,
            reviewed: None,
        };
        assert_eq!(f.body(), json!({"limit": BULK_BATCH}));
        assert_eq!(f.describe(), "all dead letters");
    }

    #[test]
    fn dead_letters_show_the_whole_error() {
        let long = format!("handler said: {}", "no ".repeat(40));
        let resp = json!({"items": [
            {"id": "3", "queue": "orders", "error_category": "handler", "attempts": 5,
             "dead_at_ms": 0, "reviewed": false, "error": long},
            {"id": "41", "queue": "q", "error_category": "trap", "attempts": 1,
             "dead_at_ms": 3_600_000, "reviewed": true, "error": "unreachable"},
        ]});
        let (headers, rows) = dead_rows(&resp, 7_200_000);
        let t = render_table(&headers, &rows);
        assert!(t.contains(long.trim_end()), "{t}");
        assert_eq!(
            t.lines().nth(2),
            Some("41  q       trap             1  1h ago  yes       unreachable")
        );
    }

    #[test]
    fn a_missing_bulk_endpoint_says_why() {
        let e = ClientError::Api {
            status: 404,
            code: "not_found".into(),
            message: "no route".into(),
        };
        let text = bulk_error(e, "replaying", 0).to_string();
        assert!(text.contains("predate"), "{text}");
        let e = ClientError::Unreachable {
            server: "http://x".into(),
        };
        let text = bulk_error(e, "replaying", 1500).to_string();
        assert!(text.starts_with("stopped after replaying 1500"), "{text}");
    }
}

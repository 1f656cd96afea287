//! `spool route`: bind topic patterns to queues (optionally with header conditions and a filter
//! plugin), list, show and delete the bindings. See docs/ROUTING.md.

use clap::Subcommand;
use serde_json::{Map, Value};

use super::ClientOpts;
use super::client::seg;
use super::commands::{client, done, key_values, now_ms, table_or};
use super::output::{ago_cell, cell, fields, json as print_json, relative, sanitize};

#[derive(Debug, Subcommand)]
pub enum RouteCmd {
    /// Bind a topic pattern to a queue
    ///
    /// Words are separated by dots; `*` matches exactly one word and `#` zero or more. Every
    /// route that matches a published topic delivers to its queue (each queue once). Adding a
    /// route identical to an existing one returns the existing one.
    ///
    /// Examples:
    ///
    ///   spool route add 'orders.*' orders
    ///   spool route add 'orders.#' audit
    ///   spool route add 'orders.*' priority-orders --header tier=gold
    ///   spool route add 'orders.#' orders --filter route-by-field --timeout-ms 200
    #[command(verbatim_doc_comment)]
    Add {
        /// The topic pattern, e.g. orders.* or orders.# (quote it for the shell).
        pattern: String,
        /// The queue matching messages go to (it must exist: see `spool queue create`).
        queue: String,
        /// A filter plugin (deployed, `filter` world) that delivers, redirects, transforms or
        /// drops each message.
        #[arg(long, value_name = "PLUGIN")]
        filter: Option<String>,
        /// Only messages with this header and exactly this value, repeatable (all must hold).
        #[arg(long = "header", value_name = "NAME=VALUE")]
        headers: Vec<String>,
        /// With --filter: its wall-clock limit per message in milliseconds [default: the
        /// server's [router] filter_timeout_ms].
        #[arg(long, value_name = "N", requires = "filter")]
        timeout_ms: Option<u64>,
        /// With --filter: its instruction budget per message [default: [router] filter_fuel].
        #[arg(long, value_name = "N", requires = "filter")]
        fuel: Option<u64>,
        /// With --filter: its memory limit in MiB [default: [router] filter_memory_mb].
        #[arg(long, value_name = "N", requires = "filter")]
        memory_mb: Option<u32>,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// List routes, with how many deliveries each made.
    List {
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Show one route.
    Show {
        /// The route's id (`spool route list` shows them).
        id: String,
        #[command(flatten)]
        client: ClientOpts,
    },
    /// Delete a route; messages already delivered stay in their queues.
    Delete {
        /// The route's id.
        id: String,
        #[command(flatten)]
        client: ClientOpts,
    },
}

pub async fn run(cmd: RouteCmd) -> anyhow::Result<()> {
    match cmd {
        RouteCmd::Add {
            pattern,
            queue,
            filter,
            headers,
            timeout_ms,
            fuel,
            memory_mb,
            client: opts,
        } => {
            let mut body = Map::new();
            body.insert("pattern".into(), pattern.into());
            body.insert("queue".into(), queue.into());
            if let Some(f) = filter {
                body.insert("filter".into(), f.into());
            }
            if !headers.is_empty() {
                body.insert(
                    "headers".into(),
                    Value::Object(key_values("header", &headers)?),
                );
            }
            if let Some(n) = timeout_ms {
                body.insert("timeout_ms".into(), n.into());
            }
            if let Some(n) = fuel {
                body.insert("fuel".into(), n.into());
            }
            if let Some(n) = memory_mb {
                body.insert("memory_mb".into(), n.into());
            }
            let resp = client(&opts)?
                .post("/v1/routes", &Value::Object(body))
                .await?;
            done(
                &opts,
                &resp,
                &format!("route {}: {}", cell(&resp["id"]), describe(&resp)),
            );
            Ok(())
        }
        RouteCmd::List { client: opts } => {
            let resp = client(&opts)?.get("/v1/routes").await?;
            if opts.json {
                print_json(&resp);
                return Ok(());
            }
            let (headers, rows) = route_rows(&resp, now_ms());
            table_or(
                &headers,
                &rows,
                "no routes; a topic reaches only the queue named like it (add one with \
                 `spool route add PATTERN QUEUE`)",
            );
            if let (Some(p), Some(u)) = (
                resp["published_total"].as_u64(),
                resp["unroutable_total"].as_u64(),
            ) {
                outln!("\nsince the server started: {p} published, {u} matched no route");
            }
            Ok(())
        }
        RouteCmd::Show { id, client: opts } => {
            let resp = client(&opts)?
                .get(&format!("/v1/routes/{}", seg(&id)))
                .await?;
            if opts.json {
                print_json(&resp);
            } else {
                fields(&route_fields(&resp, now_ms()));
            }
            Ok(())
        }
        RouteCmd::Delete { id, client: opts } => {
            let resp = client(&opts)?
                .delete(&format!("/v1/routes/{}", seg(&id)))
                .await?;
            // The server answers with the deleted route (or nothing to describe).
            let what = if resp["pattern"].is_string() {
                format!(" ({})", describe(&resp))
            } else {
                String::new()
            };
            done(
                &opts,
                &resp,
                &format!("route {id} deleted{what}; messages it delivered stay in their queue"),
            );
            Ok(())
        }
    }
}

/// "orders.* -> orders [tier=gold] via route-by-field".
fn describe(r: &Value) -> String {
    let mut s = format!("{} -> {}", cell(&r["pattern"]), cell(&r["queue"]));
    let h = headers_cell(&r["headers"]);
    if h != "-" {
        s.push_str(&format!(" [{h}]"));
    }
    if let Some(f) = r["filter"].as_str() {
        s.push_str(&format!(" via {}", sanitize(f)));
    }
    s
}

/// Header conditions as `a=1,b=2`, "-" for none.
fn headers_cell(h: &Value) -> String {
    match h.as_object() {
        Some(m) if !m.is_empty() => m
            .iter()
            .map(|(k, v)| format!("{}={}", sanitize(k), cell(v)))
            .collect::<Vec<_>>()
            .join(","),
        _ => "-".to_owned(),
    }
}

/// A filter's per-route limits as `timeout 200ms, fuel 1000000, memory 16 MiB`, "-" for the
/// server's defaults.
fn limits_cell(r: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(n) = r["timeout_ms"].as_u64() {
        parts.push(format!("timeout {n}ms"));
    }
    if let Some(n) = r["fuel"].as_u64() {
        parts.push(format!("fuel {n}"));
    }
    if let Some(n) = r["memory_mb"].as_u64() {
        parts.push(format!("memory {n} MiB"));
    }
    if parts.is_empty() {
        "-".to_owned()
    } else {
        parts.join(", ")
    }
}

/// Unix milliseconds of a time the server sent either as `<key>_ms` or as a number in `<key>`.
fn time_ms(r: &Value, key: &str) -> Value {
    match &r[format!("{key}_ms").as_str()] {
        Value::Null if r[key].is_number() => r[key].clone(),
        v => v.clone(),
    }
}

fn route_rows(resp: &Value, now: i64) -> ([&'static str; 8], Vec<Vec<String>>) {
    let rows = resp["routes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            vec![
                cell(&r["id"]),
                cell(&r["pattern"]),
                cell(&r["queue"]),
                headers_cell(&r["headers"]),
                cell(&r["filter"]),
                limits_cell(r),
                cell(&r["delivered"]),
                ago_cell(&time_ms(r, "created_at"), now),
            ]
        })
        .collect();
    (
        [
            "ID",
            "PATTERN",
            "QUEUE",
            "HEADERS",
            "FILTER",
            "LIMITS",
            "DELIVERED",
            "CREATED",
        ],
        rows,
    )
}

fn route_fields(r: &Value, now: i64) -> Vec<(String, String)> {
    let created = match (r["created_at"].as_str(), time_ms(r, "created_at").as_i64()) {
        (Some(t), Some(ms)) => format!("{} ({})", sanitize(t), relative(ms, now)),
        (None, Some(ms)) => relative(ms, now),
        (Some(t), None) => sanitize(t),
        (None, None) => "-".to_owned(),
    };
    vec![
        ("id".into(), cell(&r["id"])),
        ("pattern".into(), cell(&r["pattern"])),
        ("queue".into(), cell(&r["queue"])),
        ("headers".into(), headers_cell(&r["headers"])),
        ("filter".into(), cell(&r["filter"])),
        ("filter_limits".into(), limits_cell(r)),
        ("delivered".into(), cell(&r["delivered"])),
        ("created".into(), created),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::output::render_table;
    use serde_json::json;

    #[test]
    fn routes_read_as_a_table() {
        let resp = json!({"routes": [
            {"id": 1, "pattern": "orders.*", "queue": "orders", "headers": {},
             "created_at_ms": 0, "delivered": 12},
            {"id": 2, "pattern": "orders.#", "queue": "eu", "headers": {"tier": "gold"},
             "filter": "route-by-field", "timeout_ms": 200, "created_at": 60_000,
             "delivered": 0},
        ], "published_total": 3, "unroutable_total": 1});
        let (h, rows) = route_rows(&resp, 120_000);
        let t = render_table(&h, &rows);
        let lines: Vec<&str> = t.lines().map(str::trim_end).collect();
        assert_eq!(
            lines[1],
            " 1  orders.*  orders  -          -               -                     12  2m ago"
        );
        assert_eq!(
            lines[2],
            " 2  orders.#  eu      tier=gold  route-by-field  timeout 200ms          0  1m ago"
        );
    }

    #[test]
    fn a_route_describes_itself() {
        let r = json!({"id": 3, "pattern": "a.*", "queue": "q", "headers": {"x": "1"},
                       "filter": "f"});
        assert_eq!(describe(&r), "a.* -> q [x=1] via f");
        let f = route_fields(&r, 0);
        assert_eq!(f[5], ("filter_limits".to_owned(), "-".to_owned()));
    }
}

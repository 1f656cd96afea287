//! Runs a parsed command line, and the small helpers the command groups share.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::bail;
use serde_json::{Map, Value};

use super::client::{Client, with_query};
use super::output::json as print_json;
use super::{Cli, ClientOpts, Command, PageOpts};
use crate::config::parse_duration;

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => super::serve::serve(args).await,
        Command::Enqueue(args) => super::enqueue::run(args).await,
        Command::Publish(args) => super::publish::run(args).await,
        Command::Route(cmd) => super::route::run(cmd).await,
        Command::Schedule(cmd) => super::schedule::run(cmd).await,
        Command::Queue(cmd) => super::queue::run(cmd).await,
        Command::Message(cmd) => super::message::run(cmd).await,
        Command::Dlq(cmd) => super::dlq::run(cmd).await,
        Command::Plugin(cmd) => super::plugin::run(cmd).await,
        Command::Status { client } => super::status::status(client).await,
        Command::Metrics { client } => super::status::metrics(client).await,
        Command::Token(cmd) => super::token::run(cmd),
        Command::Bench(args) => crate::bench::run(args).await,
        Command::Check(args) => super::check::run(args).await,
        Command::Backup(args) => super::backup::run(args).await,
        Command::Migrate(args) => super::migrate::run(args).await,
    }
}

pub fn client(opts: &ClientOpts) -> anyhow::Result<Client> {
    Ok(Client::from_opts(opts)?)
}

/// A duration flag as whole milliseconds, the unit of the API's `*_ms` fields.
pub fn duration_ms(flag: &str, text: &str) -> anyhow::Result<u64> {
    let d = parse_duration(text).map_err(|e| anyhow::anyhow!("--{flag}: {e}"))?;
    Ok(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Repeated `NAME=VALUE` flags as a JSON object of strings.
pub fn key_values(flag: &str, items: &[String]) -> anyhow::Result<Map<String, Value>> {
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

/// Prints the server's answer with `--json`, else one line for people.
pub fn done(opts: &ClientOpts, resp: &Value, text: &str) {
    if opts.json {
        print_json(resp);
    } else {
        outln!("{text}");
    }
}

/// Most items `--all` collects before it stops and says so: a listing that large belongs in a
/// script that pages with `--json` and `--cursor`.
pub const MAX_LIST_ITEMS: usize = 100_000;

/// One page of a cursor-paginated listing (`{"items": [...], "next_cursor"?}`), or with `all`
/// every page up to [`MAX_LIST_ITEMS`]. Returns the page (for `--all`, the pages merged, with
/// `next_cursor` set only when the bound stopped it). Without `limit`, a page is a screenful,
/// or 1,000 items with `all`.
pub async fn list_pages(
    client: &Client,
    path: &str,
    params: &[(&str, Option<String>)],
    page: &PageOpts,
) -> anyhow::Result<Value> {
    let all = page.all;
    let limit = page.limit.unwrap_or(if all { 1000 } else { 50 });
    let mut items: Vec<Value> = Vec::new();
    let mut cursor = page.cursor.clone();
    // Each page brings at least one item or ends the loop, so this bound is never the limit
    // that matters; it only guards against a server that keeps answering empty pages.
    let max_pages = MAX_LIST_ITEMS / limit.max(1) as usize + 2;
    for _ in 0..max_pages {
        let mut query: Vec<(&str, Option<String>)> = params.to_vec();
        query.push(("limit", Some(limit.to_string())));
        query.push(("cursor", cursor.clone()));
        let mut page = client.get(&with_query(path, &query)).await?;
        if !all {
            return Ok(page);
        }
        let page_items = match page.get_mut("items").map(Value::take) {
            Some(Value::Array(v)) => v,
            _ => Vec::new(),
        };
        let empty = page_items.is_empty();
        items.extend(page_items);
        cursor = page["next_cursor"].as_str().map(str::to_owned);
        if cursor.is_none() || empty {
            return Ok(serde_json::json!({ "items": items }));
        }
        if items.len() >= MAX_LIST_ITEMS {
            break;
        }
    }
    let mut out = serde_json::json!({ "items": items });
    if let Some(c) = cursor {
        out["next_cursor"] = c.into();
    }
    Ok(out)
}

/// Prints what [`list_pages`] returned: the JSON with `--json`, else the table `rows` makes of it
/// (or `empty` when there is nothing) and how to get the next page.
pub fn print_listing<const N: usize>(
    json: bool,
    resp: &Value,
    all: bool,
    empty: &str,
    rows: impl FnOnce(&Value, i64) -> ([&'static str; N], Vec<Vec<String>>),
) {
    if json {
        super::output::json(resp);
        return;
    }
    let (headers, rows) = rows(resp, now_ms());
    table_or(&headers, &rows, empty);
    print_next_cursor(resp, all);
}

/// After a table of one page: how to get the next one.
pub fn print_next_cursor(resp: &Value, all: bool) {
    if let Some(c) = resp["next_cursor"].as_str() {
        if all {
            outln!(
                "\nstopped after {MAX_LIST_ITEMS} items; continue with --cursor {c} (or page with --json)"
            );
        } else {
            outln!("\nmore: --cursor {c} (or --all)");
        }
    }
}

/// Asks a yes/no question on the terminal; anything but "y"/"yes" is no. Off a terminal there is
/// nobody to ask, so it refuses and says to pass `--yes` (`what` names the action refused).
pub fn confirm(question: &str, what: &str) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        bail!(
            "refusing to {what} without confirmation: pass --yes (standard input is not a \
             terminal, so there is nobody to ask)"
        );
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim().to_lowercase().as_str(), "y" | "yes"))
}

/// Prints a table, or `empty` when there are no rows (a bare header row reads like an error).
pub fn table_or(headers: &[&str], rows: &[Vec<String>], empty: &str) {
    if rows.is_empty() {
        outln!("{empty}");
    } else {
        super::output::table(headers, rows);
    }
}

/// The current time in Unix milliseconds, for "5m ago" columns.
pub fn now_ms() -> i64 {
    crate::model::now_ms()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_become_milliseconds() {
        assert_eq!(duration_ms("delay", "1m 30s").unwrap(), 90_000);
        assert_eq!(duration_ms("lease", "250ms").unwrap(), 250);
        let e = duration_ms("ttl", "soon").unwrap_err().to_string();
        assert!(e.starts_with("--ttl: "), "{e}");
    }

    #[test]
    fn key_values_need_a_name() {
        let m = key_values("header", &["a=1".into(), "b=x=y".into()]).unwrap();
        assert_eq!(m["a"], "1");
        assert_eq!(m["b"], "x=y");
        assert!(key_values("header", &["novalue".into()]).is_err());
        assert!(key_values("header", &["=v".into()]).is_err());
    }
}

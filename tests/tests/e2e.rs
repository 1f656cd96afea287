//! End-to-end tests: each test starts the real `spool` binary (release build) on port 0 with its
//! own temporary database and drives it only through the HTTP API and the CLI.
//!
//! Build first: `cargo build --release -p spool` and
//! `scripts/build.sh` (or `cargo build --release --target wasm32-wasip2` of the plugins it names); then
//! `cargo test --release -p spool-tests`.

/// Admin surface: bulk DLQ replay/purge, limits (431/413) with nothing stored, pagination
/// while messages arrive, producers reading back their own messages.
mod admin;
/// Bearer tokens and roles: each role against each endpoint class; loopback-only without tokens.
mod auth;
/// Malformed requests, unknown queues, bad uploads and oversized payloads: clear 4xx, no change.
mod bad_input;
/// `spool bench --quick` end to end: JSON with every scenario (never asserts on speed).
mod bench;
/// A queue's circuit breaker under controlled failures: opens, spends no attempts while open,
/// half-opens, closes on success or by hand; handler decisions do not count.
mod breaker;
/// Capabilities granted per plugin: outbound HTTP to an allow-list (loopback server),
/// deploy refused without the grant, secrets never shown.
mod capabilities;
/// The CLI: help, client commands round trip, `plugin run`, unreachable server.
mod cli;
/// `spool serve --config`: declared plugins and queues exist at start; bad files fail early.
mod config;
/// `kill -9` mid-flight and restart: no message lost, none acked twice.
mod crash;
/// Many messages through `echo`, enqueued singly and in batches, all acked; stats agree.
mod flow;
/// Storage faults: a full disk (tmpfs), a damaged database file or write-ahead log, a damaged
/// plugin record; each visible and none a silent loss.
mod integrity;
/// A queue of endless loops does not starve the API or another queue's deliveries.
mod isolation;
/// Python and JavaScript plugins built with the guest SDKs: every handler outcome, 1,000
/// messages, a JavaScript filter on a route.
mod languages;
/// Priorities, delays, idempotency keys, supersede, TTL, cancel, backoff timing, DLQ replay.
mod lifecycle;
/// Deleting queues and plugins, activating plugin versions (with history), world checks on a
/// queue's handler, a handler's own retry counted apart from errors.
mod manage;
/// `GET /metrics` parses strictly and agrees with the queue and plugin stats of the JSON API.
mod metrics;
/// Each `misbehave` mode lands in the DLQ (or retries) with the right category and attempts.
mod misbehave;
/// `GET /openapi.json` needs no token on a server with tokens and describes the ones it needs.
mod openapi;
/// Requeueing delayed and backing-off messages; online backups during traffic, restored by
/// starting a server on the copy; backup paths confined to the backup directory; `spool_db_*`.
mod operations;
/// docs/PLUGINS.md's walk-through run as written in Rust, Python and JavaScript: new, build,
/// run locally, deploy, upgrade, roll back.
mod plugins_doc;
/// PostgreSQL: one host through the lifecycle; three hosts on one database with a kill -9, a
/// cron schedule firing once per instant and a deploy reaching every host; `spool migrate`
/// from a stopped SQLite server, then a host on the copy.
mod postgres;
/// Prefetched messages go back to the queue before their lease ends, costing no attempt.
mod prefetch;
/// The README's plugin example, built as written in a crate of its own, runs and acks.
mod readme;
/// Topics and routes: fan-out, filters (outcomes, failures, replay), chained publishes with the
/// ack and across `kill -9`, the depth limit, traces, unroutable publishes, roles.
mod routing;
/// Schedules: fires with their headers, errors naming the field, run now / pause / resume /
/// update / delete, spool.toml across restarts, topics through routes, `kill -9` while due.
mod schedules;
/// SIGTERM drains in-flight handlers and exits 0; nothing is lost across the restart.
mod shutdown;
/// The dashboard in headless Chromium (playwright-core, axe-core): every page for an admin, a
/// reader and a producer; live charts, replay, purge, upload, run now; screenshots.
mod ui;

use spool_tests::{TestHost, plugin_path};

/// A host with the given reference plugins deployed under their own names.
pub async fn host_with(plugins: &[&str]) -> TestHost {
    let host = TestHost::start();
    deploy_all(&host, plugins).await;
    host
}

pub async fn deploy_all(host: &TestHost, plugins: &[&str]) {
    for name in plugins {
        let v = host.deploy(name, &plugin_path(name)).await;
        assert_eq!(v["name"], *name, "deploy answer names the plugin: {v}");
        assert_eq!(v["world"], "handler", "reference plugins are handlers: {v}");
    }
}

//! Spool: a durable message queue whose consumers and routing filters are sandboxed
//! WebAssembly components.
//!
//! # Layout
//! Data flows from the top of this list to the bottom; nothing lower knows about anything higher.
//!
//! - [`cli`]: the `spool` command line; thin HTTP clients plus `plugin run`.
//! - [`api`]: the HTTP admin API (axum).
//! - [`host`]: wires store, runtime, dispatcher and API into one running server.
//! - [`router`]: where a published message goes.
//! - [`scheduler`]: periodic maintenance (lease recovery, TTL expiry, retention).
//! - [`dispatch`]: per-queue workers: claim, invoke the handler, settle.
//! - [`metrics`]: what this server saw of its deliveries: live stats and Prometheus families.
//! - [`plugins`]: deployed plugins kept in the store: versions, activation, hot swap, rollback.
//! - [`runtime`]: the wasm engine alone: component cache, host imports, limits, instances.
//! - [`store`]: the `Store` trait and its SQLite implementation.
//! - [`model`]: plain types shared by all of the above.
//! - [`config`]: `spool.toml` and its validation.
//! - [`auth`]: API tokens (stored as SHA-256 digests) and what each role may do.
//! - [`bench`]: `spool bench`, throughput, latency and memory measurements (docs/PERFORMANCE.md).

pub mod api;
pub mod auth;
pub mod bench;
pub mod cli;
pub mod config;
pub mod dispatch;
pub mod host;
pub mod metrics;
pub mod plugins;
pub mod router;
pub mod scheduler;
pub mod ui;

/// Plain data shared by every layer (its own crate, `host/model`).
pub use spool_model as model;
/// The wasm engine alone (its own crate, `host/runtime`).
pub use spool_runtime as runtime;
/// Durable state: the `Store` trait and its SQLite implementation (its own crate, `host/store`).
pub use spool_store as store;

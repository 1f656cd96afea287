//! `spool.toml`: read in two stages. [`RawConfig`] mirrors the file (unknown keys are errors, so
//! a typo fails at start with the key's name); [`Config`] is the checked, typed result the host
//! runs with. Command-line flags override the file.
//!
//! ```toml
//! [server]
//! listen = "127.0.0.1:7700"
//! db = "spool.db"
//! cache_dir = "spool-cache"        # precompiled plugins; default: <db>.cache
//! drain_timeout = "10s"            # how long shutdown waits for running handlers
//! maintenance_interval = "1s"      # lease recovery, TTL expiry, retention
//!
//! [store]
//! url = "postgres://spool:…@db.internal/spool"  # PostgreSQL instead of the SQLite file (several hosts)
//! acked_retention = "1h"           # how long acked messages stay queryable ("0s": delete at once)
//! dead_retention = "90d"           # how long reviewed dead letters are kept
//! synchronous = "normal"           # or "full": every commit survives power loss
//! max_size_bytes = 10737418240     # cap on the database file; writes beyond it answer 503
//! startup_check = "quick"          # integrity check before starting: "quick", "full" or "off"
//!
//! [limits]
//! max_payload_bytes = 1048576
//! max_batch = 1000
//! request_timeout = "60s"          # a request still running after this gets 503
//! header_read_timeout = "10s"      # a connection that has not sent its headers by then is closed
//!
//! [[auth.tokens]]                  # without tokens the server only listens on loopback
//! name = "ops"                     # shown in logs; a producer reads back its own messages
//! role = "admin"                   # admin | producer | reader
//! sha256 = "5e88…"                 # hex SHA-256 of the token: `spool token new` prints both
//!
//! [runtime]
//! max_instances = 1000             # plugin instances alive at once (pooling allocator slots)
//! max_memory_mb = 256              # no queue may give a plugin more than this
//! flatten = true                   # merge dynamically linked (Python) components into one
//!                                  # core module before compiling: instances start ~2x faster
//!
//! [plugins.echo]                   # deployed at start when the file changed
//! path = "target/wasm32-wasip2/release/echo.wasm"
//! config = { greeting = "hello" }  # what the plugin's `config(key)` returns
//! allowed_outbound_hosts = ["https://api.example.com"]  # wasi-http; default: none
//! kv_max_keys = 10000               # key-value quota (default 10,000 keys)
//! kv_max_bytes = 10485760           # key-value quota (default 10 MiB of keys and values)
//!
//! [queues.orders]                  # created (or updated) at start; same fields as PUT /v1/queues
//! handler = "echo"
//! concurrency = 8
//! breaker_failures = 10            # circuit breaker: stop claiming after 10 failures in a row
//!
//! [admin]
//! backup_dir = "backups"           # where POST /v1/admin/backup and `spool backup` may write
//!
//! [router]
//! implicit_routes = true           # a topic no route matches goes to the queue of its name
//! unroutable_queue = "unroutable"  # else here (must exist); unset: such a publish is refused
//! max_chain_depth = 16             # publishes from handler to handler before a chain is cut
//! filter_timeout_ms = 1000         # default limits of a filter call (a route may override)
//! filter_fuel = 100000000
//! filter_memory_mb = 64
//! filter_max_calls = 10000         # calls before a warm filter instance is replaced
//!
//! [[routes]]                       # created at start (an identical one is found, not doubled)
//! pattern = "orders.#"             # same fields as POST /v1/routes
//! queue = "orders"
//!
//! [scheduler]
//! late_after = "60s"               # a fire later than this is missed: the schedule's policy applies
//!
//! [[schedules]]                    # same fields as POST /v1/schedules; `name` is required and
//! name = "nightly-report"          # identifies it: at start it is created, or updated if the
//! cron = "0 0 2 * * *"             # file changed (its next fire and history are kept)
//! timezone = "Europe/Paris"
//! queue = "orders"
//! payload = { report = "nightly" }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::auth::{Role, TokenEntry};
use crate::model::{FilterLimits, NewRoute, QueueConfig, QueueConfigPatch, validate_name};
use crate::router::RouterOptions;
use crate::scheduler::SchedulerOptions;
use crate::store::CheckLevel;
use crate::store::postgres::DatabaseUrl;

/// Why a configuration could not be used. Each names the file and the offending key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{key}: {message}")]
    Invalid { key: String, message: String },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub store: RawStore,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub runtime: RawRuntime,
    #[serde(default)]
    pub plugins: BTreeMap<String, RawPlugin>,
    #[serde(default)]
    pub queues: BTreeMap<String, QueueConfigPatch>,
    #[serde(default)]
    pub auth: RawAuth,
    #[serde(default)]
    pub router: RawRouter,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    #[serde(default)]
    pub scheduler: RawScheduler,
    /// Each the body of `POST /v1/schedules`; checked by the API's rules at start.
    #[serde(default)]
    pub schedules: Vec<toml::Table>,
    #[serde(default)]
    pub admin: RawAdmin,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawScheduler {
    pub late_after: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// The one directory backups may be written to (relative: to the config file's directory).
    pub backup_dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRouter {
    pub implicit_routes: Option<bool>,
    pub unroutable_queue: Option<String>,
    pub max_chain_depth: Option<u32>,
    pub filter_timeout_ms: Option<u64>,
    pub filter_fuel: Option<u64>,
    pub filter_memory_mb: Option<u32>,
    pub filter_max_calls: Option<u32>,
}

/// A `[[routes]]` entry: the fields of `POST /v1/routes`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub pattern: String,
    pub queue: String,
    pub filter: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub timeout_ms: Option<u64>,
    pub fuel: Option<u64>,
    pub memory_mb: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    #[serde(default)]
    pub tokens: Vec<RawToken>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawToken {
    pub name: String,
    pub role: String,
    pub sha256: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<String>,
    pub db: Option<PathBuf>,
    pub cache_dir: Option<PathBuf>,
    pub drain_timeout: Option<String>,
    pub maintenance_interval: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    pub url: Option<String>,
    pub acked_retention: Option<String>,
    pub dead_retention: Option<String>,
    pub synchronous: Option<String>,
    pub max_size_bytes: Option<u64>,
    pub startup_check: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_payload_bytes: Option<usize>,
    pub max_batch: Option<usize>,
    pub max_body_bytes: Option<usize>,
    pub max_plugin_bytes: Option<usize>,
    pub request_timeout: Option<String>,
    pub header_read_timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRuntime {
    pub max_instances: Option<u32>,
    pub max_memory_mb: Option<u32>,
    pub flatten: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPlugin {
    /// A component to deploy at start (relative paths are relative to the config file).
    pub path: Option<PathBuf>,
    #[serde(default)]
    pub config: BTreeMap<String, String>,
    /// `scheme://host[:port]` the plugin may send HTTP requests to (wasi-http).
    pub allowed_outbound_hosts: Option<Vec<String>>,
    /// Most keys in the plugin's key-value store.
    pub kv_max_keys: Option<u64>,
    /// Most bytes (keys plus values) in the plugin's key-value store.
    pub kv_max_bytes: Option<u64>,
}

/// Command-line values that override the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub listen: Option<String>,
    pub db: Option<PathBuf>,
    /// `--database-url`: PostgreSQL instead of the SQLite file.
    pub database_url: Option<String>,
    pub cache_dir: Option<PathBuf>,
    pub drain_timeout: Option<String>,
    pub maintenance_interval: Option<String>,
    /// `--accept-wal-loss`: start even though the write-ahead log lost committed transactions.
    pub accept_wal_loss: bool,
    pub backup_dir: Option<PathBuf>,
}

/// The checked configuration the host runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub db: PathBuf,
    /// `[store] url` / `--database-url`: the PostgreSQL database this host shares with others;
    /// `None`: the SQLite file `db`. Its `Debug` and `Display` hide the password.
    pub database_url: Option<DatabaseUrl>,
    pub cache_dir: PathBuf,
    pub drain_timeout: Duration,
    pub maintenance_interval: Duration,
    pub acked_retention: Duration,
    pub dead_retention: Duration,
    pub sync_full: bool,
    /// `[store] max_size_bytes`: cap on the database file.
    pub max_size_bytes: Option<u64>,
    /// `[store] startup_check`: the integrity check run before the server starts.
    pub startup_check: Option<CheckLevel>,
    pub accept_wal_loss: bool,
    pub max_payload_bytes: usize,
    pub max_batch: usize,
    pub max_body_bytes: usize,
    pub max_plugin_bytes: usize,
    pub max_instances: u32,
    pub max_memory_mb: u32,
    /// `[runtime] flatten`: see `RuntimeOptions::flatten`.
    pub flatten: bool,
    /// Plugins to deploy at start: name → file.
    pub plugin_files: BTreeMap<String, PathBuf>,
    /// Per-plugin `config(key)` values.
    pub plugin_config: HashMap<String, BTreeMap<String, String>>,
    /// Per-plugin capabilities (`allowed_outbound_hosts`, `kv_max_keys`, `kv_max_bytes`).
    pub plugin_grants: HashMap<String, crate::model::PluginGrants>,
    /// Queues to create or update at start.
    pub queues: BTreeMap<String, QueueConfigPatch>,
    /// API tokens; empty means no authentication (loopback only).
    pub tokens: Vec<TokenEntry>,
    /// How long one API request may run.
    pub request_timeout: Duration,
    /// How long a client may take to send a request's headers.
    pub header_read_timeout: Duration,
    /// `[router]`.
    pub router: RouterOptions,
    /// `[[routes]]` to create at start, after the queues and plugins.
    pub routes: Vec<NewRoute>,
    /// `[scheduler]`.
    pub scheduler: SchedulerOptions,
    /// `[[schedules]]` as JSON bodies of `POST /v1/schedules`, with their names.
    pub schedules: Vec<(String, String)>,
    /// `[admin] backup_dir`, resolved to an absolute path without symbolic links; `None`:
    /// backups over the API are refused.
    pub backup_dir: Option<PathBuf>,
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:7700";

/// Smallest `[store] max_size_bytes`: an empty database with its schema needs a few pages.
const MIN_DB_SIZE: u64 = 1 << 20;

impl Config {
    /// Reads `path` (if given), applies `overrides` and checks everything.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let (raw, base) = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: p.to_owned(),
                    source,
                })?;
                let raw: RawConfig = toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    path: p.to_owned(),
                    message: e.to_string(),
                })?;
                (raw, p.parent().map(Path::to_owned).unwrap_or_default())
            }
            None => (RawConfig::default(), PathBuf::new()),
        };
        Config::from_raw(raw, &base, overrides)
    }

    /// Builds the checked config; relative paths in the file (database, cache, plugins) resolve
    /// against `base`, the file's directory; paths given as flags stay relative to the current
    /// directory, as a shell user expects.
    pub fn from_raw(
        raw: RawConfig,
        base: &Path,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        let listen_text = overrides
            .listen
            .clone()
            .or(raw.server.listen)
            .unwrap_or_else(|| DEFAULT_LISTEN.to_owned());
        let listen: SocketAddr = listen_text.parse().map_err(|_| invalid(
            "server.listen",
            format!("{listen_text:?} is not an address; use IP:PORT such as 127.0.0.1:7700 (port 0 picks a free port)"),
        ))?;
        let database_url = match overrides
            .database_url
            .as_deref()
            .or(raw.store.url.as_deref())
        {
            Some(url) => {
                if raw.server.db.is_some() && overrides.db.is_none() {
                    return Err(invalid(
                        "store.url",
                        "server.db names a SQLite file and store.url a PostgreSQL database; \
                         keep the one this server should use"
                            .to_owned(),
                    ));
                }
                Some(DatabaseUrl::parse(url).map_err(|e| invalid("store.url", e.to_string()))?)
            }
            None => None,
        };
        let db = overrides
            .db
            .clone()
            .or(raw.server.db.map(|p| base.join(p)))
            .unwrap_or_else(|| PathBuf::from("spool.db"));
        let cache_dir = overrides
            .cache_dir
            .clone()
            .or(raw.server.cache_dir.map(|p| base.join(p)))
            .unwrap_or_else(|| {
                let mut s = db.clone().into_os_string();
                s.push(".cache");
                PathBuf::from(s)
            });
        let backup_dir = overrides
            .backup_dir
            .clone()
            .or(raw.admin.backup_dir.map(|p| base.join(p)))
            .map(|dir| backup_dir(&dir))
            .transpose()?;
        let drain_timeout = duration(
            "server.drain_timeout",
            overrides
                .drain_timeout
                .as_deref()
                .or(raw.server.drain_timeout.as_deref()),
            "10s",
        )?;
        let maintenance_interval = duration(
            "server.maintenance_interval",
            overrides
                .maintenance_interval
                .as_deref()
                .or(raw.server.maintenance_interval.as_deref()),
            "1s",
        )?;
        if maintenance_interval.is_zero() {
            return Err(invalid(
                "server.maintenance_interval",
                "must be greater than zero".into(),
            ));
        }
        let acked_retention = duration(
            "store.acked_retention",
            raw.store.acked_retention.as_deref(),
            "1h",
        )?;
        let dead_retention = duration(
            "store.dead_retention",
            raw.store.dead_retention.as_deref(),
            "90days",
        )?;
        let sync_full = match raw.store.synchronous.as_deref().unwrap_or("normal") {
            "normal" => false,
            "full" => true,
            other => {
                return Err(invalid(
                    "store.synchronous",
                    format!("{other:?} is not a mode; use \"normal\" or \"full\""),
                ));
            }
        };

        let max_size_bytes = raw.store.max_size_bytes;
        if let Some(max) = max_size_bytes
            && max < MIN_DB_SIZE
        {
            return Err(invalid(
                "store.max_size_bytes",
                format!("must be at least {MIN_DB_SIZE} (1 MiB), got {max}"),
            ));
        }
        let startup_check = match raw.store.startup_check.as_deref().unwrap_or("quick") {
            "quick" => Some(CheckLevel::Quick),
            "full" => Some(CheckLevel::Full),
            "off" => None,
            other => {
                return Err(invalid(
                    "store.startup_check",
                    format!("{other:?} is not a check; use \"quick\", \"full\" or \"off\""),
                ));
            }
        };

        let max_payload_bytes = raw.limits.max_payload_bytes.unwrap_or(1 << 20);
        let max_batch = raw.limits.max_batch.unwrap_or(1_000);
        let max_body_bytes = raw.limits.max_body_bytes.unwrap_or(16 << 20);
        let max_plugin_bytes = raw.limits.max_plugin_bytes.unwrap_or(64 << 20);
        positive("limits.max_payload_bytes", max_payload_bytes)?;
        positive("limits.max_batch", max_batch)?;
        positive("limits.max_plugin_bytes", max_plugin_bytes)?;
        if max_body_bytes < max_payload_bytes {
            return Err(invalid(
                "limits.max_body_bytes",
                format!("must be at least limits.max_payload_bytes ({max_payload_bytes})"),
            ));
        }

        let request_timeout = duration(
            "limits.request_timeout",
            raw.limits.request_timeout.as_deref(),
            "60s",
        )?;
        if request_timeout.is_zero() {
            return Err(invalid(
                "limits.request_timeout",
                "must be greater than zero".into(),
            ));
        }

        let header_read_timeout = duration(
            "limits.header_read_timeout",
            raw.limits.header_read_timeout.as_deref(),
            "10s",
        )?;
        if header_read_timeout.is_zero() {
            return Err(invalid(
                "limits.header_read_timeout",
                "must be greater than zero".into(),
            ));
        }

        let mut tokens: Vec<TokenEntry> = Vec::with_capacity(raw.auth.tokens.len());
        for (i, t) in raw.auth.tokens.iter().enumerate() {
            let key = format!("auth.tokens[{i}]");
            validate_name("token name", &t.name).map_err(|m| invalid(&key, m))?;
            let role: Role = t
                .role
                .parse()
                .map_err(|m| invalid(&format!("{key}.role"), m))?;
            let entry = TokenEntry::new(&t.name, role, &t.sha256)
                .map_err(|m| invalid(&format!("{key}.sha256"), m))?;
            if tokens.iter().any(|e| e.name == t.name) {
                return Err(invalid(
                    &key,
                    format!(
                        "token name {:?} is used twice; names must be unique",
                        t.name
                    ),
                ));
            }
            tokens.push(entry);
        }
        if tokens.is_empty() && !listen.ip().is_loopback() {
            return Err(invalid(
                "server.listen",
                format!(
                    "refusing to listen on {listen} without authentication: anyone who can reach it \
                     could control this server. Add an [[auth.tokens]] entry to spool.toml \
                     (`spool token new --role admin` prints one), or listen on 127.0.0.1"
                ),
            ));
        }

        let max_instances = raw.runtime.max_instances.unwrap_or(1_000);
        let max_memory_mb = raw.runtime.max_memory_mb.unwrap_or(256);
        positive("runtime.max_instances", max_instances as usize)?;
        if !(1..=crate::model::limits::MAX_MEMORY_MB).contains(&max_memory_mb) {
            return Err(invalid(
                "runtime.max_memory_mb",
                format!(
                    "must be between 1 and {}",
                    crate::model::limits::MAX_MEMORY_MB
                ),
            ));
        }

        let mut plugin_files = BTreeMap::new();
        let mut plugin_config = HashMap::new();
        let mut plugin_grants = HashMap::new();
        for (name, p) in raw.plugins {
            validate_name("plugin", &name).map_err(|m| invalid(&format!("plugins.{name}"), m))?;
            if let Some(path) = p.path {
                plugin_files.insert(name.clone(), base.join(path));
            }
            if let Some(hosts) = &p.allowed_outbound_hosts {
                crate::runtime::OutboundHosts::parse(hosts)
                    .map_err(|m| invalid(&format!("plugins.{name}.allowed_outbound_hosts"), m))?;
            }
            let grants = crate::model::PluginGrants {
                allowed_outbound_hosts: p.allowed_outbound_hosts,
                kv_max_keys: p.kv_max_keys,
                kv_max_bytes: p.kv_max_bytes,
            };
            plugin_grants.insert(name.clone(), grants);
            plugin_config.insert(name, p.config);
        }
        for (name, patch) in &raw.queues {
            let key = format!("queues.{name}");
            validate_name("queue", name).map_err(|m| invalid(&key, m))?;
            let checked = QueueConfig::default()
                .patched(patch)
                .map_err(|m| invalid(&key, m))?;
            if checked.memory_mb > max_memory_mb {
                return Err(invalid(
                    &key,
                    format!(
                        "memory_mb {} exceeds runtime.max_memory_mb {max_memory_mb}",
                        checked.memory_mb
                    ),
                ));
            }
        }

        let router = router_options(raw.router, max_memory_mb)?;
        let routes = raw
            .routes
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                validate_name("queue", &r.queue)
                    .map_err(|m| invalid(&format!("routes[{i}].queue"), m))?;
                if let Some(f) = &r.filter {
                    validate_name("plugin", f)
                        .map_err(|m| invalid(&format!("routes[{i}].filter"), m))?;
                }
                Ok(NewRoute {
                    pattern: r.pattern,
                    queue: r.queue,
                    filter: r.filter,
                    headers: r.headers.into_iter().collect(),
                    limits: FilterLimits {
                        timeout_ms: r.timeout_ms,
                        fuel: r.fuel,
                        memory_mb: r.memory_mb,
                    },
                })
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;

        let scheduler = SchedulerOptions {
            late_after: duration(
                "scheduler.late_after",
                raw.scheduler.late_after.as_deref(),
                "60s",
            )?,
            ..SchedulerOptions::default()
        };
        let mut names = std::collections::HashSet::new();
        let schedules = raw
            .schedules
            .into_iter()
            .enumerate()
            .map(|(i, table)| {
                let key = format!("schedules[{i}]");
                let name = match table.get("name") {
                    Some(toml::Value::String(n)) if !n.is_empty() => n.clone(),
                    _ => {
                        return Err(invalid(
                            &format!("{key}.name"),
                            "a schedule in spool.toml needs a name (it identifies the schedule \
                             across restarts)"
                                .into(),
                        ));
                    }
                };
                if !names.insert(name.clone()) {
                    return Err(invalid(
                        &format!("{key}.name"),
                        format!("{name:?} is used by two schedules; names must be unique"),
                    ));
                }
                let json = json_of(&toml::Value::Table(table)).to_string();
                Ok((name, json))
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;

        Ok(Config {
            listen,
            db,
            database_url,
            cache_dir,
            drain_timeout,
            maintenance_interval,
            acked_retention,
            dead_retention,
            sync_full,
            max_size_bytes,
            startup_check,
            accept_wal_loss: overrides.accept_wal_loss,
            max_payload_bytes,
            max_batch,
            max_body_bytes,
            max_plugin_bytes,
            max_instances,
            max_memory_mb,
            flatten: raw.runtime.flatten.unwrap_or(true),
            plugin_files,
            plugin_config,
            plugin_grants,
            queues: raw.queues,
            tokens,
            request_timeout,
            header_read_timeout,
            router,
            routes,
            scheduler,
            schedules,
            backup_dir,
        })
    }
}

/// A TOML value as the JSON the API reads. TOML dates and times (`start_at = 2026-12-01T09:00:00Z`,
/// unquoted) become their RFC 3339 text, which is what the API takes for them.
fn json_of(v: &toml::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        toml::Value::String(s) => J::String(s.clone()),
        toml::Value::Integer(i) => J::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        toml::Value::Boolean(b) => J::Bool(*b),
        toml::Value::Datetime(d) => J::String(d.to_string()),
        toml::Value::Array(a) => J::Array(a.iter().map(json_of).collect()),
        toml::Value::Table(t) => {
            J::Object(t.iter().map(|(k, v)| (k.clone(), json_of(v))).collect())
        }
    }
}

/// The backup directory made absolute and free of symbolic links, so that a backup path is
/// checked against where the directory really is.
fn backup_dir(dir: &Path) -> Result<PathBuf, ConfigError> {
    let real = std::fs::canonicalize(dir).map_err(|e| {
        invalid(
            "admin.backup_dir",
            format!(
                "{} cannot be used ({e}); create the directory or point backup_dir \
                 (--backup-dir) at an existing one",
                dir.display()
            ),
        )
    })?;
    if !real.is_dir() {
        return Err(invalid(
            "admin.backup_dir",
            format!("{} is not a directory", dir.display()),
        ));
    }
    Ok(real)
}

/// `[router]` checked, defaults filled in.
fn router_options(raw: RawRouter, max_memory_mb: u32) -> Result<RouterOptions, ConfigError> {
    let d = RouterOptions::default();
    if let Some(q) = &raw.unroutable_queue {
        validate_name("queue", q).map_err(|m| invalid("router.unroutable_queue", m))?;
    }
    let o = RouterOptions {
        implicit_routes: raw.implicit_routes.unwrap_or(d.implicit_routes),
        unroutable_queue: raw.unroutable_queue,
        max_chain_depth: raw.max_chain_depth.unwrap_or(d.max_chain_depth),
        filter_timeout_ms: raw.filter_timeout_ms.unwrap_or(d.filter_timeout_ms),
        filter_fuel: raw.filter_fuel.unwrap_or(d.filter_fuel),
        filter_memory_mb: raw.filter_memory_mb.unwrap_or(d.filter_memory_mb),
        filter_max_calls: raw.filter_max_calls.unwrap_or(d.filter_max_calls),
    };
    positive("router.max_chain_depth", o.max_chain_depth as usize)?;
    if !(1..=60_000).contains(&o.filter_timeout_ms) {
        return Err(invalid(
            "router.filter_timeout_ms",
            format!("must be between 1 and 60000, got {}", o.filter_timeout_ms),
        ));
    }
    if o.filter_fuel == 0 {
        return Err(invalid(
            "router.filter_fuel",
            "must be greater than zero".into(),
        ));
    }
    if !(1..=max_memory_mb).contains(&o.filter_memory_mb) {
        return Err(invalid(
            "router.filter_memory_mb",
            format!(
                "must be between 1 and runtime.max_memory_mb ({max_memory_mb}), got {}",
                o.filter_memory_mb
            ),
        ));
    }
    positive("router.filter_max_calls", o.filter_max_calls as usize)?;
    Ok(o)
}

fn invalid(key: &str, message: String) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        message,
    }
}

fn positive(key: &str, v: usize) -> Result<(), ConfigError> {
    if v == 0 {
        Err(invalid(key, "must be greater than zero".into()))
    } else {
        Ok(())
    }
}

/// Parses a human duration such as `500ms`, `10s`, `1h 30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim())
        .map_err(|e| format!("{text:?} is not a duration ({e}); write e.g. 500ms, 10s, 5m, 1h"))
}

fn duration(key: &str, value: Option<&str>, default: &str) -> Result<Duration, ConfigError> {
    parse_duration(value.unwrap_or(default)).map_err(|m| invalid(key, m))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: "t.toml".into(),
            message: e.to_string(),
        })?;
        Config::from_raw(raw, Path::new("/etc/spool"), &Overrides::default())
    }

    fn token_toml(name: &str, role: &str, sha: &str) -> String {
        format!("[[auth.tokens]]\nname = \"{name}\"\nrole = \"{role}\"\nsha256 = \"{sha}\"\n")
    }

    #[test]
    fn tokens_are_checked() {
        let sha = crate::auth::hash_token("t");
        let c = parse(&token_toml("ops", "admin", &sha)).unwrap();
        assert_eq!(c.tokens.len(), 1);
        assert_eq!(c.tokens[0].role, Role::Admin);

        let e = parse(&token_toml("ops", "root", &sha))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("auth.tokens[0].role") && e.contains("admin"),
            "{e}"
        );
        let e = parse(&token_toml("ops", "admin", "t"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("auth.tokens[0].sha256") && e.contains("spool token"),
            "{e}"
        );
        let e = parse(&token_toml("bad name", "admin", &sha))
            .unwrap_err()
            .to_string();
        assert!(e.contains("auth.tokens[0]"), "{e}");
        let twice = format!(
            "{}{}",
            token_toml("ops", "admin", &sha),
            token_toml("ops", "reader", &sha)
        );
        let e = parse(&twice).unwrap_err().to_string();
        assert!(e.contains("twice"), "{e}");
    }

    #[test]
    fn non_loopback_needs_tokens() {
        let e = parse("[server]\nlisten = \"0.0.0.0:7700\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("refusing") && e.contains("spool token new"),
            "{e}"
        );
        let sha = crate::auth::hash_token("t");
        let text = format!(
            "[server]\nlisten = \"0.0.0.0:7700\"\n{}",
            token_toml("ops", "admin", &sha)
        );
        assert!(parse(&text).unwrap().listen.ip().is_unspecified());
        assert!(parse("[server]\nlisten = \"[::1]:7700\"\n").is_ok());
    }

    #[test]
    fn request_timeout_parses() {
        assert_eq!(parse("").unwrap().request_timeout, Duration::from_secs(60));
        let c = parse("[limits]\nrequest_timeout = \"5s\"\n").unwrap();
        assert_eq!(c.request_timeout, Duration::from_secs(5));
        assert!(parse("[limits]\nrequest_timeout = \"0s\"\n").is_err());
    }

    #[test]
    fn flattening_is_on_unless_turned_off() {
        assert!(parse("").unwrap().flatten);
        assert!(!parse("[runtime]\nflatten = false\n").unwrap().flatten);
        let e = parse("[runtime]\nflatten = \"no\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("flatten"), "{e}");
    }

    #[test]
    fn defaults_are_sane() {
        let c = parse("").unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.acked_retention, Duration::from_secs(3600));
        assert_eq!(c.max_payload_bytes, 1 << 20);
        assert_eq!(c.cache_dir, PathBuf::from("spool.db.cache"));
        assert!(!c.sync_full);
    }

    #[test]
    fn full_file_parses_and_resolves_paths() {
        let c = parse(
            r#"
            [server]
            listen = "127.0.0.1:0"
            drain_timeout = "2s"
            [store]
            acked_retention = "0s"
            synchronous = "full"
            [plugins.echo]
            path = "echo.wasm"
            config = { greeting = "hi" }
            [queues.orders]
            handler = "echo"
            concurrency = 8
            "#,
        )
        .unwrap();
        assert_eq!(c.drain_timeout, Duration::from_secs(2));
        assert_eq!(c.acked_retention, Duration::ZERO);
        assert!(c.sync_full);
        assert_eq!(
            c.plugin_files["echo"],
            PathBuf::from("/etc/spool/echo.wasm")
        );
        assert_eq!(c.plugin_config["echo"]["greeting"], "hi");
        assert_eq!(c.queues["orders"].concurrency, Some(8));
    }

    #[test]
    fn mistakes_name_the_key() {
        let e = parse("[server]\nlisten = \"nope\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("server.listen"), "{e}");
        let e = parse("[server]\nlistne = \"x\"").unwrap_err().to_string();
        assert!(e.contains("listne"), "{e}");
        let e = parse("[store]\nacked_retention = \"soon\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("store.acked_retention"), "{e}");
        let e = parse("[queues.q]\nconcurrency = 0")
            .unwrap_err()
            .to_string();
        assert!(e.contains("queues.q") && e.contains("concurrency"), "{e}");
    }

    #[test]
    fn store_size_cap_and_startup_check() {
        let c = parse("[store]\nmax_size_bytes = 10485760\nstartup_check = \"full\"").unwrap();
        assert_eq!(c.max_size_bytes, Some(10 << 20));
        assert_eq!(c.startup_check, Some(CheckLevel::Full));
        assert_eq!(parse("").unwrap().startup_check, Some(CheckLevel::Quick));
        assert_eq!(
            parse("[store]\nstartup_check = \"off\"")
                .unwrap()
                .startup_check,
            None
        );
        let e = parse("[store]\nmax_size_bytes = 10")
            .unwrap_err()
            .to_string();
        assert!(e.contains("store.max_size_bytes"), "{e}");
        let e = parse("[store]\nstartup_check = \"maybe\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("store.startup_check"), "{e}");
    }

    #[test]
    fn router_and_routes() {
        let c = parse("").unwrap();
        assert_eq!(c.router, RouterOptions::default());
        assert!(c.routes.is_empty());
        let c = parse(
            r#"
            [router]
            implicit_routes = false
            unroutable_queue = "lost"
            max_chain_depth = 4
            filter_timeout_ms = 200
            [[routes]]
            pattern = "orders.#"
            queue = "orders"
            [[routes]]
            pattern = "orders.*.paid"
            queue = "billing"
            filter = "pick"
            headers = { region = "eu" }
            fuel = 1000
            "#,
        )
        .unwrap();
        assert!(!c.router.implicit_routes);
        assert_eq!(c.router.unroutable_queue.as_deref(), Some("lost"));
        assert_eq!(c.router.max_chain_depth, 4);
        assert_eq!(c.router.filter_timeout_ms, 200);
        assert_eq!(c.router.filter_fuel, RouterOptions::default().filter_fuel);
        assert_eq!(c.routes.len(), 2);
        assert_eq!(c.routes[1].filter.as_deref(), Some("pick"));
        assert_eq!(c.routes[1].headers, [("region".into(), "eu".into())]);
        assert_eq!(c.routes[1].limits.fuel, Some(1000));

        for (text, key) in [
            ("[router]\nimplicit = true", "implicit"),
            ("[router]\nmax_chain_depth = 0", "router.max_chain_depth"),
            (
                "[router]\nfilter_timeout_ms = 0",
                "router.filter_timeout_ms",
            ),
            (
                "[router]\nfilter_memory_mb = 100000",
                "router.filter_memory_mb",
            ),
            (
                "[router]\nunroutable_queue = \"a b\"",
                "router.unroutable_queue",
            ),
            (
                "[[routes]]\npattern = \"a\"\nqueue = \"q\"\nfiltre = \"f\"",
                "filtre",
            ),
            ("[[routes]]\npattern = \"a\"", "queue"),
            (
                "[[routes]]\npattern = \"a\"\nqueue = \"a b\"",
                "routes[0].queue",
            ),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn overrides_win() {
        let raw: RawConfig = toml::from_str("[server]\nlisten = \"127.0.0.1:1\"").unwrap();
        let o = Overrides {
            listen: Some("127.0.0.1:2".into()),
            ..Default::default()
        };
        let c = Config::from_raw(raw, Path::new(""), &o).unwrap();
        assert_eq!(c.listen.port(), 2);
    }

    #[test]
    fn paths_in_the_file_are_relative_to_it_and_flags_to_the_current_directory() {
        let c = parse("[server]\ndb = \"data/q.db\"\ncache_dir = \"/abs/cache\"").unwrap();
        assert_eq!(c.db, PathBuf::from("/etc/spool/data/q.db"));
        assert_eq!(c.cache_dir, PathBuf::from("/abs/cache"));
        let raw: RawConfig = toml::from_str("[server]\ndb = \"data/q.db\"").unwrap();
        let o = Overrides {
            db: Some("here.db".into()),
            ..Default::default()
        };
        let c = Config::from_raw(raw, Path::new("/etc/spool"), &o).unwrap();
        assert_eq!(c.db, PathBuf::from("here.db"));
        assert_eq!(c.cache_dir, PathBuf::from("here.db.cache"));
    }

    #[test]
    fn schedules_are_read_as_api_bodies_with_toml_datetimes_as_text() {
        let c = parse(
            "[[schedules]]\nname = \"n\"\nevery = \"1m\"\nqueue = \"q\"\n\
             start_at = 2030-01-01T09:00:00Z\npayload = { a = [1, 2.5, true] }\n",
        )
        .unwrap();
        let (name, json) = &c.schedules[0];
        assert_eq!(name, "n");
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(v["start_at"], "2030-01-01T09:00:00Z");
        assert_eq!(v["payload"], serde_json::json!({"a": [1, 2.5, true]}));
        let e = parse("[[schedules]]\nevery = \"1m\"\nqueue = \"q\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("schedules[0].name:"), "{e}");
    }

    #[test]
    fn backup_dir_resolves_against_the_file_and_must_exist() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("bk")).unwrap();
        let real = std::fs::canonicalize(root.path().join("bk")).unwrap();
        let raw: RawConfig = toml::from_str("[admin]\nbackup_dir = \"bk\"").unwrap();
        let c = Config::from_raw(raw, root.path(), &Overrides::default()).unwrap();
        assert_eq!(c.backup_dir, Some(real.clone()));
        // The flag wins, relative to the current directory like every path flag.
        let o = Overrides {
            backup_dir: Some(root.path().join("bk/../bk")),
            ..Default::default()
        };
        let c = Config::from_raw(RawConfig::default(), Path::new("/etc/spool"), &o).unwrap();
        assert_eq!(c.backup_dir, Some(real));
        assert_eq!(parse("").unwrap().backup_dir, None);

        let e = parse("[admin]\nbackup_dir = \"no-such-dir\"")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("admin.backup_dir:") && e.contains("create the directory"),
            "{e}"
        );
        std::fs::write(root.path().join("file"), "x").unwrap();
        let raw: RawConfig = toml::from_str("[admin]\nbackup_dir = \"file\"").unwrap();
        let e = Config::from_raw(raw, root.path(), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not a directory"), "{e}");
    }
}

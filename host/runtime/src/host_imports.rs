//! What a plugin may ask of the host (the WIT `host` interface), checked and bounded.
//!
//! The runtime does not know about queues or the store: the caller passes a [`HostApi`] (the
//! dispatcher's talks to the store; `plugin run` has an in-memory one) and the runtime enforces
//! everything that does not need one — the world's permissions and the size bounds below.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::RuntimeError;
use super::bindings::{handler::Handler, wit_host, wit_types};
use super::capabilities::{OutboundHooks, OutboundHosts};
use super::limits::{CallLimiter, truncate_utf8};
use super::plugin::World;
use super::stdio::Captured;

/// Bounds on what one call can push through the host imports. A guest over a bound gets an
/// error it can see (or, for logs, a truncated line), never a silent drop.
pub mod bounds {
    /// Longest log line kept; longer lines are cut with a note.
    pub const MAX_LOG_LINE: usize = 4 * 1024;
    /// Log lines per call; after this one warning is logged and further lines are dropped.
    pub const MAX_LOG_LINES: u32 = 1_000;
    pub const MAX_PUBLISH_PAYLOAD: usize = 1 << 20;
    pub const MAX_PUBLISHES: u32 = 1_000;
    pub const MAX_HEADERS: usize = 64;
    pub const MAX_HEADER_NAME: usize = 256;
    pub const MAX_HEADER_VALUE: usize = 4 * 1024;
    pub const MAX_KV_KEY: usize = 256;
    pub const MAX_KV_VALUE: usize = 64 * 1024;
    /// kv-get/set/delete calls per call.
    pub const MAX_KV_OPS: u32 = 10_000;
    /// Guest heartbeats closer together than this are coalesced into one.
    pub const MIN_HEARTBEAT_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);
}

/// Log level of a plugin's log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }
}

impl std::fmt::Display for LogLevel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

impl From<wit_types::Level> for LogLevel {
    fn from(level: wit_types::Level) -> Self {
        match level {
            wit_types::Level::Trace => LogLevel::Trace,
            wit_types::Level::Debug => LogLevel::Debug,
            wit_types::Level::Info => LogLevel::Info,
            wit_types::Level::Warn => LogLevel::Warn,
            wit_types::Level::Error => LogLevel::Error,
        }
    }
}

/// Who is calling: the plugin and the message it is handling.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Origin {
    pub plugin: String,
    pub version: u32,
    /// `None` for a filter looking at a publish that has no id yet.
    pub message_id: Option<String>,
    /// The queue the message came from (empty for a filter).
    pub queue: String,
    pub correlation_id: Option<String>,
}

/// What the host does for a plugin's imports. Implemented by the caller of the runtime.
///
/// The runtime has already checked the world's permissions and the [`bounds`] when these are
/// called. Errors are plain text the guest sees, so write them for a plugin author.
#[async_trait]
pub trait HostApi: Send + Sync {
    /// Publishes a message through the router; returns the new message's id.
    async fn publish(
        &self,
        origin: &Origin,
        topic: &str,
        payload: Vec<u8>,
        headers: Vec<(String, String)>,
    ) -> Result<String, String>;

    /// Extends the lease of `origin.message_id`. Heartbeats closer together than
    /// [`bounds::MIN_HEARTBEAT_INTERVAL`] are coalesced before they get here.
    async fn heartbeat(&self, origin: &Origin) -> Result<(), String>;

    async fn kv_get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, String>;
    async fn kv_set(&self, plugin: &str, key: &str, value: Vec<u8>) -> Result<(), String>;
    async fn kv_delete(&self, plugin: &str, key: &str) -> Result<(), String>;

    /// A log line from the plugin (already truncated to [`bounds::MAX_LOG_LINE`]).
    fn log(&self, origin: &Origin, level: LogLevel, message: &str) {
        log_with_tracing(origin, level, message);
    }
}

/// Writes a plugin's log line through `tracing`, target `spool::plugin`, with the plugin,
/// version and message id as fields.
pub fn log_with_tracing(origin: &Origin, level: LogLevel, message: &str) {
    let plugin = origin.plugin.as_str();
    let version = origin.version;
    let message_id = origin.message_id.as_deref().unwrap_or("");
    macro_rules! emit {
        ($macro:ident) => {
            tracing::$macro!(target: "spool::plugin", plugin, version, message_id, "{message}")
        };
    }
    match level {
        LogLevel::Trace => emit!(trace),
        LogLevel::Debug => emit!(debug),
        LogLevel::Info => emit!(info),
        LogLevel::Warn => emit!(warn),
        LogLevel::Error => emit!(error),
    }
}

/// Everything a call needs from its caller.
#[derive(Clone)]
pub struct CallContext {
    pub origin: Origin,
    /// The plugin's configuration (`config(key)` reads it).
    pub config: Arc<BTreeMap<String, String>>,
    /// Where its outbound HTTP requests may go (empty: nowhere).
    pub outbound: Arc<OutboundHosts>,
    pub host: Arc<dyn HostApi>,
}

impl std::fmt::Debug for CallContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallContext")
            .field("origin", &self.origin)
            .field("config_keys", &self.config.keys().collect::<Vec<_>>())
            .field("outbound", &self.outbound)
            .finish_non_exhaustive()
    }
}

/// How many imports a call used, to enforce the per-call bounds.
#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    log_lines: u32,
    publishes: u32,
    kv_ops: u32,
}

/// The data of one call's `Store`.
pub(crate) struct CallState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    /// Checks each outbound request against the caller's allow-list.
    http_hooks: OutboundHooks,
    table: ResourceTable,
    pub(crate) limiter: CallLimiter,
    pub(crate) stdout: Captured,
    pub(crate) stderr: Captured,
    ctx: CallContext,
    world: World,
    usage: Usage,
    last_heartbeat: Option<Instant>,
}

impl CallState {
    pub(crate) fn new(world: World, memory_bytes: usize, ctx: CallContext) -> CallState {
        let stdout = Captured::default();
        let stderr = Captured::default();
        // Nothing granted: no preopened directories, no environment, no arguments, no
        // network. Clocks and randomness are the host's (they grant no access to anything).
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let http_hooks = OutboundHooks {
            plugin: ctx.origin.plugin.clone(),
            hosts: ctx.outbound.clone(),
        };
        CallState {
            wasi,
            http: WasiHttpCtx::new(),
            http_hooks,
            table: ResourceTable::new(),
            limiter: CallLimiter::new(memory_bytes),
            stdout,
            stderr,
            ctx,
            world,
            usage: Usage::default(),
            last_heartbeat: None,
        }
    }

    /// Makes a reused store ready for the next call: the new caller's context, fresh usage
    /// counters and output capture, and no memory failure on record.
    pub(crate) fn reset_for_call(&mut self, ctx: CallContext) {
        self.http_hooks = OutboundHooks {
            plugin: ctx.origin.plugin.clone(),
            hosts: ctx.outbound.clone(),
        };
        self.ctx = ctx;
        self.usage = Usage::default();
        self.last_heartbeat = None;
        self.stdout.clear();
        self.stderr.clear();
        self.limiter.memory_denied = false;
        self.limiter.memory_desired = None;
    }

    fn what(&self) -> String {
        format!("{}@{}", self.ctx.origin.plugin, self.ctx.origin.version)
    }

    fn refuse_for_filters(&self, call: &str) -> Result<(), String> {
        match self.world {
            World::Handler => Ok(()),
            World::Filter => Err(format!(
                "{call} is not available to filters: a filter may only log and read its config \
                 (return a route instead)"
            )),
        }
    }

    fn count_kv(&mut self) -> Result<(), String> {
        self.refuse_for_filters("the key-value store")?;
        self.usage.kv_ops += 1;
        if self.usage.kv_ops > bounds::MAX_KV_OPS {
            return Err(format!(
                "too many key-value operations in one call (limit {})",
                bounds::MAX_KV_OPS
            ));
        }
        Ok(())
    }
}

fn check_kv_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > bounds::MAX_KV_KEY {
        return Err(format!(
            "key-value keys must be 1 to {} bytes, got {}",
            bounds::MAX_KV_KEY,
            key.len()
        ));
    }
    Ok(())
}

fn check_headers(headers: &[(String, String)]) -> Result<(), String> {
    if headers.len() > bounds::MAX_HEADERS {
        return Err(format!(
            "too many headers: {} (limit {})",
            headers.len(),
            bounds::MAX_HEADERS
        ));
    }
    for (name, value) in headers {
        if name.is_empty() || name.len() > bounds::MAX_HEADER_NAME {
            return Err(format!(
                "header names must be 1 to {} bytes, got {}",
                bounds::MAX_HEADER_NAME,
                name.len()
            ));
        }
        if value.len() > bounds::MAX_HEADER_VALUE {
            return Err(format!(
                "header {name:?} is {} bytes, over the limit of {}",
                value.len(),
                bounds::MAX_HEADER_VALUE
            ));
        }
    }
    Ok(())
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for CallState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.http_hooks,
        }
    }
}

impl wit_types::Host for CallState {}

impl wit_host::Host for CallState {
    async fn log(&mut self, level: wit_types::Level, message: String) {
        self.usage.log_lines += 1;
        let origin = &self.ctx.origin;
        if self.usage.log_lines > bounds::MAX_LOG_LINES {
            if self.usage.log_lines == bounds::MAX_LOG_LINES + 1 {
                self.ctx.host.log(
                    origin,
                    LogLevel::Warn,
                    &format!(
                        "plugin wrote more than {} log lines in one call; dropping the rest",
                        bounds::MAX_LOG_LINES
                    ),
                );
            }
            return;
        }
        let mut message = message;
        truncate_utf8(&mut message, bounds::MAX_LOG_LINE);
        self.ctx.host.log(origin, level.into(), &message);
    }

    async fn publish(
        &mut self,
        topic: String,
        payload: Vec<u8>,
        headers: Vec<(String, String)>,
    ) -> Result<String, String> {
        self.refuse_for_filters("publish")?;
        spool_model::validate_name("topic", &topic)?;
        if payload.len() > bounds::MAX_PUBLISH_PAYLOAD {
            return Err(format!(
                "payload of {} bytes is over the publish limit of {} bytes",
                payload.len(),
                bounds::MAX_PUBLISH_PAYLOAD
            ));
        }
        check_headers(&headers)?;
        self.usage.publishes += 1;
        if self.usage.publishes > bounds::MAX_PUBLISHES {
            return Err(format!(
                "too many publishes in one call (limit {})",
                bounds::MAX_PUBLISHES
            ));
        }
        self.ctx
            .host
            .publish(&self.ctx.origin, &topic, payload, headers)
            .await
    }

    async fn heartbeat(&mut self) {
        if self.world == World::Filter {
            self.ctx.host.log(
                &self.ctx.origin,
                LogLevel::Warn,
                "heartbeat refused: filters have no lease to extend",
            );
            return;
        }
        let now = Instant::now();
        if self
            .last_heartbeat
            .is_some_and(|last| now.duration_since(last) < bounds::MIN_HEARTBEAT_INTERVAL)
        {
            return;
        }
        self.last_heartbeat = Some(now);
        if let Err(e) = self.ctx.host.heartbeat(&self.ctx.origin).await {
            // The guest cannot act on this (heartbeat returns nothing); the settle will find
            // out the lease was lost.
            self.ctx.host.log(
                &self.ctx.origin,
                LogLevel::Warn,
                &format!("heartbeat failed: {e}"),
            );
        }
    }

    async fn config(&mut self, key: String) -> Option<String> {
        self.ctx.config.get(&key).cloned()
    }

    async fn kv_get(&mut self, key: String) -> Result<Option<Vec<u8>>, String> {
        self.count_kv()?;
        check_kv_key(&key)?;
        let plugin = self.ctx.origin.plugin.clone();
        self.ctx.host.kv_get(&plugin, &key).await
    }

    async fn kv_set(&mut self, key: String, value: Vec<u8>) -> Result<(), String> {
        self.count_kv()?;
        check_kv_key(&key)?;
        if value.len() > bounds::MAX_KV_VALUE {
            return Err(format!(
                "value of {} bytes is over the key-value limit of {} bytes",
                value.len(),
                bounds::MAX_KV_VALUE
            ));
        }
        let plugin = self.ctx.origin.plugin.clone();
        self.ctx.host.kv_set(&plugin, &key, value).await
    }

    async fn kv_delete(&mut self, key: String) -> Result<(), String> {
        self.count_kv()?;
        check_kv_key(&key)?;
        let plugin = self.ctx.origin.plugin.clone();
        self.ctx.host.kv_delete(&plugin, &key).await
    }
}

/// The linker every plugin is instantiated with: WASI p2 (nothing granted, see
/// [`CallState::new`]), wasi-http's outgoing handler (every request checked against the call's
/// [`OutboundHosts`], so nothing is reachable unless granted) and the `spool:plugin/host`
/// interface.
pub(crate) fn build_linker(engine: &wasmtime::Engine) -> Result<Linker<CallState>, RuntimeError> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)
        .map_err(|e| RuntimeError::Engine(format!("linking WASI: {e:#}")))?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
        .map_err(|e| RuntimeError::Engine(format!("linking wasi-http: {e:#}")))?;
    // The filter world imports the same interfaces (the bindings share them), so linking the
    // handler world's imports serves both.
    Handler::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |s| s)
        .map_err(|e| RuntimeError::Engine(format!("linking host imports: {e:#}")))?;
    Ok(linker)
}

/// Logs what the guest printed, at debug level: useful while developing a plugin, noise in
/// production.
pub(crate) fn log_guest_output(state: &CallState, elapsed: Duration) {
    if !tracing::enabled!(target: "spool::plugin", tracing::Level::DEBUG) {
        return;
    }
    let what = state.what();
    for (stream, captured) in [("stdout", &state.stdout), ("stderr", &state.stderr)] {
        let text = captured.text();
        if !text.is_empty() {
            tracing::debug!(target: "spool::plugin", plugin = %what, stream, ?elapsed, "{text}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_and_keys_are_bounded() {
        assert!(check_headers(&[("a".into(), "b".into())]).is_ok());
        let many: Vec<(String, String)> = (0..=bounds::MAX_HEADERS)
            .map(|i| (format!("h{i}"), String::new()))
            .collect();
        assert!(
            check_headers(&many)
                .unwrap_err()
                .contains("too many headers")
        );
        let big = vec![("h".into(), "v".repeat(bounds::MAX_HEADER_VALUE + 1))];
        assert!(check_headers(&big).unwrap_err().contains("over the limit"));
        assert!(check_kv_key("").is_err());
        assert!(check_kv_key(&"k".repeat(bounds::MAX_KV_KEY + 1)).is_err());
        assert!(check_kv_key("count").is_ok());
    }
}

#[cfg(test)]
mod filter_tests {
    use std::sync::Arc;

    use super::wit_host::Host as _;
    use super::*;
    use crate::testutil::{RecordingHost, context};

    #[tokio::test]
    async fn filters_may_only_log_and_read_config() {
        let host = Arc::new(RecordingHost::default());
        let mut ctx = context("f", host.clone());
        ctx.config = Arc::new(BTreeMap::from([("k".to_owned(), "v".to_owned())]));
        let mut state = CallState::new(World::Filter, 1 << 20, ctx);

        let err = state.publish("t".into(), vec![], vec![]).await.unwrap_err();
        assert!(err.contains("publish is not available to filters"), "{err}");
        let err = state.kv_get("k".into()).await.unwrap_err();
        assert!(err.contains("not available to filters"), "{err}");
        assert!(state.kv_set("k".into(), vec![]).await.is_err());
        assert!(state.kv_delete("k".into()).await.is_err());
        state.heartbeat().await;
        assert_eq!(state.config("k".into()).await.as_deref(), Some("v"));
        state.log(wit_types::Level::Info, "hello".into()).await;

        // Nothing reached the host except log lines; the refused heartbeat is logged.
        assert_eq!(
            host.calls(),
            [
                "log warn heartbeat refused: filters have no lease to extend",
                "log info hello"
            ]
        );
    }

    #[tokio::test]
    async fn handler_imports_are_bounded() {
        let host = Arc::new(RecordingHost::default());
        let mut state = CallState::new(World::Handler, 1 << 20, context("h", host.clone()));

        let big = vec![0; bounds::MAX_PUBLISH_PAYLOAD + 1];
        let err = state.publish("t".into(), big, vec![]).await.unwrap_err();
        assert!(err.contains("over the publish limit"), "{err}");
        let err = state
            .publish("bad topic!".into(), vec![], vec![])
            .await
            .unwrap_err();
        assert!(err.contains("not a valid name"), "{err}");
        let err = state
            .kv_set("k".into(), vec![0; bounds::MAX_KV_VALUE + 1])
            .await
            .unwrap_err();
        assert!(err.contains("over the key-value limit"), "{err}");

        state
            .log(wit_types::Level::Warn, "x".repeat(bounds::MAX_LOG_LINE * 2))
            .await;
        for _ in 0..bounds::MAX_LOG_LINES + 5 {
            state.log(wit_types::Level::Debug, "spam".into()).await;
        }
        // Two heartbeats in quick succession are coalesced.
        state.heartbeat().await;
        state.heartbeat().await;

        let calls = host.calls();
        assert!(
            calls[0].len() < bounds::MAX_LOG_LINE + 100,
            "{}",
            calls[0].len()
        );
        assert!(calls[0].ends_with("more bytes)"));
        let logs = calls.iter().filter(|c| c.starts_with("log ")).count();
        // MAX_LOG_LINES lines (the long one included) plus one warning about dropping.
        assert_eq!(logs, bounds::MAX_LOG_LINES as usize + 1);
        assert!(calls.iter().any(|c| c.contains("dropping the rest")));
        assert_eq!(calls.iter().filter(|c| *c == "heartbeat").count(), 1);
    }
}

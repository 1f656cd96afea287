//! Run a plugin once against a message, with no server: `spool plugin run FILE.wasm`.
//!
//! The host imports are served in memory and recorded: log lines, publishes (which get ids
//! `local-1`, `local-2`, ...), key-value operations on a map that starts empty, and heartbeats.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;

use super::host_imports::{CallContext, HostApi, LogLevel, Origin};
use super::limits::{Limits, PluginFailure};
use super::plugin::{HandlerOutcome, Plugin, PluginMessage, RouteDecision, World};
use super::{Runtime, RuntimeError};

/// The plugin name a local run uses in messages and logs.
pub const LOCAL_NAME: &str = "local";

/// The message and settings for one local run.
#[derive(Debug, Clone)]
pub struct LocalRun {
    /// The plugin name used in logs and failure messages (e.g. the file's stem).
    pub name: String,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
    pub attempt: u32,
    pub queue: String,
    pub topic: Option<String>,
    pub config: BTreeMap<String, String>,
    pub limits: Limits,
}

impl Default for LocalRun {
    fn default() -> Self {
        LocalRun {
            name: LOCAL_NAME.to_owned(),
            payload: Vec::new(),
            headers: Vec::new(),
            attempt: 1,
            queue: "local".to_owned(),
            topic: None,
            config: BTreeMap::new(),
            limits: Limits::default(),
        }
    }
}

/// What the plugin decided. In JSON: `{"kind": "handled", "result": "ack"}`,
/// `{"kind": "routed", "result": {"deliver": ["q"]}}`,
/// `{"kind": "failed", "result": {"category": "trap", "message": "..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "result", rename_all = "kebab-case")]
pub enum LocalOutcome {
    Handled(HandlerOutcome),
    Routed(RouteDecision),
    Failed(PluginFailure),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    pub level: LogLevel,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LocalPublish {
    pub id: String,
    pub topic: String,
    pub size: usize,
    pub headers: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KvOpKind {
    Get,
    Set,
    Delete,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KvOp {
    pub op: KvOpKind,
    pub key: String,
    /// Bytes read (`get`, `None` if absent) or written (`set`).
    pub size: Option<usize>,
}

/// Everything a local run observed. `Display` gives a human summary; `Serialize` the `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct LocalReport {
    pub world: World,
    pub outcome: LocalOutcome,
    pub logs: Vec<LogLine>,
    pub publishes: Vec<LocalPublish>,
    pub kv: Vec<KvOp>,
    pub heartbeats: u32,
    /// Instantiation plus the call, in microseconds.
    pub duration_us: u64,
    pub fuel_consumed: u64,
    /// The most linear memory the instance had, in bytes.
    pub peak_memory_bytes: u64,
    /// Whether the compiled component came from the disk cache.
    pub from_cache: bool,
}

impl LocalReport {
    /// The call's duration.
    pub fn duration(&self) -> Duration {
        Duration::from_micros(self.duration_us)
    }

    /// True unless the plugin failed (trap, fuel, timeout, memory, ...).
    pub fn succeeded(&self) -> bool {
        !matches!(self.outcome, LocalOutcome::Failed(_))
    }
}

impl fmt::Display for LocalReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.outcome {
            LocalOutcome::Handled(HandlerOutcome::Ack) => writeln!(f, "outcome: ack")?,
            LocalOutcome::Handled(HandlerOutcome::Retry(None)) => {
                writeln!(f, "outcome: retry (queue backoff)")?
            }
            LocalOutcome::Handled(HandlerOutcome::Retry(Some(ms))) => {
                writeln!(f, "outcome: retry after {ms} ms")?
            }
            LocalOutcome::Handled(HandlerOutcome::DeadLetter(reason)) => {
                writeln!(f, "outcome: dead-letter: {reason}")?
            }
            LocalOutcome::Routed(RouteDecision::Deliver(queues)) => {
                writeln!(f, "route: deliver to [{}]", queues.join(", "))?
            }
            LocalOutcome::Routed(RouteDecision::Drop) => writeln!(f, "route: drop")?,
            LocalOutcome::Routed(RouteDecision::Transform {
                queues, payload, ..
            }) => writeln!(
                f,
                "route: transform ({} bytes) to [{}]",
                payload.len(),
                queues.join(", ")
            )?,
            LocalOutcome::Failed(failure) => {
                writeln!(f, "FAILED ({}): {}", failure.category, failure.message)?
            }
        }
        writeln!(
            f,
            "{}: {:.3} ms, {} fuel, peak memory {:.1} MiB{}",
            self.world,
            self.duration_us as f64 / 1000.0,
            self.fuel_consumed,
            self.peak_memory_bytes as f64 / (1024.0 * 1024.0),
            if self.from_cache {
                ", compiled code from cache"
            } else {
                ""
            }
        )?;
        if !self.logs.is_empty() {
            writeln!(f, "logs:")?;
            for line in &self.logs {
                writeln!(f, "  {:<5} {}", line.level, line.message)?;
            }
        }
        if !self.publishes.is_empty() {
            writeln!(f, "publishes:")?;
            for p in &self.publishes {
                write!(f, "  {} -> {} ({} bytes)", p.id, p.topic, p.size)?;
                if !p.headers.is_empty() {
                    let headers: Vec<String> =
                        p.headers.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    write!(f, " [{}]", headers.join(", "))?;
                }
                writeln!(f)?;
            }
        }
        if !self.kv.is_empty() {
            writeln!(f, "kv:")?;
            for op in &self.kv {
                let size = match (&op.op, op.size) {
                    (KvOpKind::Get, None) => " (absent)".to_owned(),
                    (_, Some(n)) => format!(" ({n} bytes)"),
                    (_, None) => String::new(),
                };
                writeln!(f, "  {:?} {}{size}", op.op, op.key)?;
            }
        }
        if self.heartbeats > 0 {
            writeln!(f, "heartbeats: {}", self.heartbeats)?;
        }
        Ok(())
    }
}

/// Serves host imports in memory and records them.
#[derive(Default)]
struct LocalHost {
    record: Mutex<Record>,
}

#[derive(Default)]
struct Record {
    logs: Vec<LogLine>,
    publishes: Vec<LocalPublish>,
    kv: Vec<KvOp>,
    kv_data: HashMap<String, Vec<u8>>,
    heartbeats: u32,
}

impl LocalHost {
    fn record(&self) -> std::sync::MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait]
impl HostApi for LocalHost {
    async fn publish(
        &self,
        _origin: &Origin,
        topic: &str,
        payload: Vec<u8>,
        headers: Vec<(String, String)>,
    ) -> Result<String, String> {
        let mut record = self.record();
        let id = format!("local-{}", record.publishes.len() + 1);
        record.publishes.push(LocalPublish {
            id: id.clone(),
            topic: topic.to_owned(),
            size: payload.len(),
            headers,
        });
        Ok(id)
    }

    async fn heartbeat(&self, _origin: &Origin) -> Result<(), String> {
        self.record().heartbeats += 1;
        Ok(())
    }

    async fn kv_get(&self, _plugin: &str, key: &str) -> Result<Option<Vec<u8>>, String> {
        let mut record = self.record();
        let value = record.kv_data.get(key).cloned();
        record.kv.push(KvOp {
            op: KvOpKind::Get,
            key: key.to_owned(),
            size: value.as_ref().map(Vec::len),
        });
        Ok(value)
    }

    async fn kv_set(&self, _plugin: &str, key: &str, value: Vec<u8>) -> Result<(), String> {
        let mut record = self.record();
        record.kv.push(KvOp {
            op: KvOpKind::Set,
            key: key.to_owned(),
            size: Some(value.len()),
        });
        record.kv_data.insert(key.to_owned(), value);
        Ok(())
    }

    async fn kv_delete(&self, _plugin: &str, key: &str) -> Result<(), String> {
        let mut record = self.record();
        record.kv.push(KvOp {
            op: KvOpKind::Delete,
            key: key.to_owned(),
            size: None,
        });
        record.kv_data.remove(key);
        Ok(())
    }

    fn log(&self, _origin: &Origin, level: LogLevel, message: &str) {
        self.record().logs.push(LogLine {
            level,
            message: message.to_owned(),
        });
    }
}

/// Compiles `wasm` (through the runtime's disk cache, off the async threads) and calls it once
/// with a message built from `req`. Plugin failures are part of the report; only a component
/// that cannot be loaded is an error.
pub async fn run_local(
    runtime: &Runtime,
    wasm: &[u8],
    req: LocalRun,
) -> Result<LocalReport, RuntimeError> {
    let plugin = load_local(runtime, wasm, &req.name).await?;
    Ok(run_loaded(&plugin, req, &mut LocalKv::default()).await)
}

/// Compiles (or loads from the cache) a plugin for [`run_loaded`], off the async threads.
pub async fn load_local(
    runtime: &Runtime,
    wasm: &[u8],
    name: &str,
) -> Result<Arc<Plugin>, RuntimeError> {
    let runtime = runtime.clone();
    let wasm = wasm.to_vec();
    let name = name.to_owned();
    tokio::task::spawn_blocking(move || runtime.load(&name, 0, &wasm))
        .await
        .map_err(|e| RuntimeError::Engine(format!("compiling the plugin: {e}")))?
}

/// The key-value data of a local run, carried from one message to the next like the server's.
pub type LocalKv = HashMap<String, Vec<u8>>;

/// Runs one message through a plugin loaded with [`load_local`], in a fresh instance, reading
/// and writing `kv`.
pub async fn run_loaded(plugin: &Plugin, req: LocalRun, kv: &mut LocalKv) -> LocalReport {
    let host = Arc::new(LocalHost::default());
    host.record().kv_data = std::mem::take(kv);
    let ctx = CallContext {
        origin: Origin {
            plugin: req.name.clone(),
            version: 0,
            message_id: Some("local-0".to_owned()),
            queue: req.queue.clone(),
            correlation_id: None,
        },
        config: Arc::new(req.config),
        // `plugin run` grants no outbound hosts: requests fail with HTTP-request-denied.
        outbound: Default::default(),
        host: host.clone(),
    };
    let msg = PluginMessage {
        id: "local-0".to_owned(),
        queue: req.queue,
        topic: req.topic,
        payload: req.payload,
        headers: req.headers,
        attempt: req.attempt,
        correlation_id: None,
        enqueued_at: spool_model::now_ms(),
    };
    let (outcome, stats) = match plugin.world() {
        World::Handler => {
            let (result, stats) = plugin.handle_measured(msg, &req.limits, ctx).await;
            (
                result.map_or_else(LocalOutcome::Failed, LocalOutcome::Handled),
                stats,
            )
        }
        World::Filter => {
            let (result, stats) = plugin.route_measured(msg, &req.limits, ctx).await;
            (
                result.map_or_else(LocalOutcome::Failed, LocalOutcome::Routed),
                stats,
            )
        }
    };
    let record = std::mem::take(&mut *host.record());
    *kv = record.kv_data;
    LocalReport {
        world: plugin.world(),
        outcome,
        logs: record.logs,
        publishes: record.publishes,
        kv: record.kv,
        heartbeats: record.heartbeats,
        duration_us: u64::try_from(stats.duration.as_micros()).unwrap_or(u64::MAX),
        fuel_consumed: stats.fuel_consumed,
        peak_memory_bytes: stats.peak_memory_bytes,
        from_cache: plugin.from_cache(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{plugin_wasm, runtime};
    use spool_model::ErrorCategory;

    fn run(payload: &str) -> LocalRun {
        LocalRun {
            payload: payload.as_bytes().to_vec(),
            ..LocalRun::default()
        }
    }

    #[tokio::test]
    async fn echo_reports_its_ack_and_log() {
        let (rt, _dir) = runtime();
        let report = run_local(&rt, &plugin_wasm("echo"), run(r#"{"a":1}"#))
            .await
            .unwrap();
        assert_eq!(report.world, World::Handler);
        assert_eq!(report.outcome, LocalOutcome::Handled(HandlerOutcome::Ack));
        assert_eq!(
            report.logs,
            [LogLine {
                level: LogLevel::Info,
                message: "message local-0 attempt 1 payload 7 bytes".to_owned()
            }]
        );
        assert!(report.succeeded() && report.fuel_consumed > 0);
        let text = report.to_string();
        assert!(text.starts_with("outcome: ack\nhandler: "), "{text}");
        assert!(text.contains("info  message local-0"), "{text}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(
            json["outcome"],
            serde_json::json!({"kind": "handled", "result": "ack"})
        );
    }

    #[tokio::test]
    async fn publishes_kv_and_heartbeats_are_recorded() {
        let (rt, _dir) = runtime();
        let wasm = plugin_wasm("misbehave");
        let report = run_local(
            &rt,
            &wasm,
            run(r#"{"do":"publish","topic":"t.x","body":"hi"}"#),
        )
        .await
        .unwrap();
        assert_eq!(
            report.publishes,
            [LocalPublish {
                id: "local-1".to_owned(),
                topic: "t.x".to_owned(),
                size: 4,
                headers: vec![("from".to_owned(), "misbehave".to_owned())],
            }]
        );
        assert!(
            report
                .to_string()
                .contains("local-1 -> t.x (4 bytes) [from=misbehave]")
        );

        let report = run_local(&rt, &wasm, run(r#"{"do":"kv"}"#)).await.unwrap();
        assert_eq!(report.kv.len(), 2, "{:?}", report.kv);
        assert_eq!(
            (&report.kv[0].op, report.kv[0].size),
            (&KvOpKind::Get, None)
        );
        assert_eq!(
            (&report.kv[1].op, report.kv[1].size),
            (&KvOpKind::Set, Some(1))
        );

        let report = run_local(&rt, &wasm, run(r#"{"do":"sleep-ms","ms":250}"#))
            .await
            .unwrap();
        assert!(report.heartbeats >= 1, "{report}");
        assert!(report.duration() >= Duration::from_millis(250));
    }

    #[tokio::test]
    async fn failures_are_part_of_the_report() {
        let (rt, _dir) = runtime();
        let report = run_local(&rt, &plugin_wasm("misbehave"), run(r#"{"do":"trap"}"#))
            .await
            .unwrap();
        assert!(!report.succeeded());
        let LocalOutcome::Failed(failure) = &report.outcome else {
            panic!("{report}");
        };
        assert_eq!(failure.category, ErrorCategory::Trap);
        assert!(
            report
                .to_string()
                .starts_with("FAILED (trap): plugin local@0 trapped")
        );

        let err = run_local(&rt, b"\0asm\x01\0\0\0", run("{}"))
            .await
            .unwrap_err();
        assert!(matches!(err, RuntimeError::InvalidComponent(_)), "{err}");
    }
}

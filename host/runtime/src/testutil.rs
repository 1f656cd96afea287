//! Helpers for the runtime's tests: the real test plugins and a recording host.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::{CallContext, HostApi, LogLevel, Origin, Runtime, RuntimeOptions};

/// The bytes of a test plugin built by `cargo build --release --target wasm32-wasip2`.
pub fn plugin_wasm(name: &str) -> Vec<u8> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let path = target.join(format!("wasm32-wasip2/release/{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read test plugin {}: {e}\nbuild the test plugins first:\n  \
             cargo build --release --target wasm32-wasip2 -p echo -p misbehave",
            path.display()
        )
    })
}

/// A runtime with its own cache directory (kept alive by the returned guard).
pub fn runtime() -> (Runtime, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let runtime = Runtime::new(RuntimeOptions {
        cache_dir: dir.path().to_owned(),
        max_instances: 16,
        max_memory_mb: 64,
        ..RuntimeOptions::default()
    })
    .expect("runtime");
    (runtime, dir)
}

/// Records every host call.
#[derive(Default)]
pub struct RecordingHost {
    pub(crate) calls: Mutex<Vec<String>>,
}

impl RecordingHost {
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    fn push(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }
}

#[async_trait]
impl HostApi for RecordingHost {
    async fn publish(
        &self,
        _origin: &Origin,
        topic: &str,
        payload: Vec<u8>,
        _headers: Vec<(String, String)>,
    ) -> Result<String, String> {
        self.push(format!("publish {topic} {}", payload.len()));
        Ok("m-1".to_owned())
    }

    async fn heartbeat(&self, _origin: &Origin) -> Result<(), String> {
        self.push("heartbeat".to_owned());
        Ok(())
    }

    async fn kv_get(&self, _plugin: &str, key: &str) -> Result<Option<Vec<u8>>, String> {
        self.push(format!("kv_get {key}"));
        Ok(None)
    }

    async fn kv_set(&self, _plugin: &str, key: &str, value: Vec<u8>) -> Result<(), String> {
        self.push(format!("kv_set {key} {}", String::from_utf8_lossy(&value)));
        Ok(())
    }

    async fn kv_delete(&self, _plugin: &str, key: &str) -> Result<(), String> {
        self.push(format!("kv_delete {key}"));
        Ok(())
    }

    fn log(&self, _origin: &Origin, level: LogLevel, message: &str) {
        self.push(format!("log {level} {message}"));
    }
}

/// A call context for plugin `name` served by `host`.
pub fn context(name: &str, host: Arc<RecordingHost>) -> CallContext {
    CallContext {
        origin: Origin {
            plugin: name.to_owned(),
            version: 1,
            message_id: Some("42".to_owned()),
            queue: "q".to_owned(),
            correlation_id: None,
        },
        config: Arc::new(BTreeMap::new()),
        outbound: Default::default(),
        host,
    }
}

//! What a handler's host calls do during a delivery: publish through the router, extend the
//! lease, and read/write the plugin's key-value store.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use async_trait::async_trait;

use super::Inner;
use crate::model::{Claimed, MessageId, NewMessage, now_ms};
use crate::runtime::{HostApi, Origin};

/// Heartbeats closer together than this are answered without a write: a plugin calling
/// `heartbeat` in a tight loop must not turn into a stream of transactions.
const MIN_HEARTBEAT_GAP_MS: i64 = 250;

pub(super) struct DeliveryHost {
    inner: Arc<Inner>,
    id: MessageId,
    attempt: u32,
    lease_ms: u64,
    correlation_id: String,
    last_renewal: AtomicI64,
}

impl DeliveryHost {
    pub(super) fn new(inner: &Arc<Inner>, msg: &Claimed, lease_ms: u64) -> Self {
        DeliveryHost {
            inner: inner.clone(),
            id: msg.id,
            attempt: msg.attempt,
            lease_ms,
            // A chain of publishes keeps the id of the message that started it.
            correlation_id: msg
                .correlation_id
                .clone()
                .unwrap_or_else(|| msg.id.to_string()),
            last_renewal: AtomicI64::new(now_ms()),
        }
    }

    /// Extends the lease; a lost lease is logged (the settle will then be ignored).
    pub(super) async fn renew(&self) {
        if let Err(e) = self.extend().await {
            tracing::warn!(message_id = self.id, attempt = self.attempt, error = %e, "cannot extend lease");
        }
    }

    async fn extend(&self) -> Result<(), String> {
        self.last_renewal.store(now_ms(), Ordering::Relaxed);
        match self
            .inner
            .store
            .extend_lease(self.id, self.attempt, self.lease_ms)
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(
                "the lease on this message was lost; another delivery may be running".to_owned(),
            ),
            Err(e) => Err(format!("cannot extend the lease: {e}")),
        }
    }
}

#[async_trait]
impl HostApi for DeliveryHost {
    async fn publish(
        &self,
        _origin: &Origin,
        topic: &str,
        payload: Vec<u8>,
        headers: Vec<(String, String)>,
    ) -> Result<String, String> {
        let msg = NewMessage {
            payload,
            headers,
            topic: Some(topic.to_owned()),
            correlation_id: Some(self.correlation_id.clone()),
            ..NewMessage::default()
        };
        let ids = self
            .inner
            .router
            .publish(topic, vec![msg])
            .await
            .map_err(|e| e.to_string())?;
        ids.first()
            .map(|e| e.id.to_string())
            .ok_or_else(|| format!("topic {topic:?} delivered the message to no queue"))
    }

    async fn heartbeat(&self, _origin: &Origin) -> Result<(), String> {
        let last = self.last_renewal.load(Ordering::Relaxed);
        if now_ms() - last < MIN_HEARTBEAT_GAP_MS {
            return Ok(());
        }
        self.extend().await
    }

    async fn kv_get(&self, plugin: &str, key: &str) -> Result<Option<Vec<u8>>, String> {
        self.inner
            .store
            .kv_get(plugin, key)
            .await
            .map_err(|e| e.to_string())
    }

    async fn kv_set(&self, plugin: &str, key: &str, value: Vec<u8>) -> Result<(), String> {
        self.inner
            .store
            .kv_set(plugin, key, value)
            .await
            .map_err(|e| e.to_string())
    }

    async fn kv_delete(&self, plugin: &str, key: &str) -> Result<(), String> {
        self.inner
            .store
            .kv_delete(plugin, key)
            .await
            .map_err(|e| e.to_string())
    }
}

//! What a handler's host calls do during a delivery: publish through the router (into the
//! delivery's outbox, written with its ack), extend the lease, and read/write the plugin's
//! key-value store.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::Inner;
use crate::model::{Claimed, Delivery, MessageId, NewMessage, now_ms};
use crate::runtime::{HostApi, Origin};

/// Heartbeats closer together than this are answered without a write: a plugin calling
/// `heartbeat` in a tight loop must not turn into a stream of transactions.
const MIN_HEARTBEAT_GAP_MS: i64 = 250;
/// A plugin's key-value quotas unless granted otherwise (`kv_max_keys`, `kv_max_bytes`).
const DEFAULT_KV_MAX_KEYS: u64 = 10_000;
const DEFAULT_KV_MAX_BYTES: u64 = 10 << 20;

pub(super) struct DeliveryHost {
    inner: Arc<Inner>,
    id: MessageId,
    attempt: u32,
    lease_ms: u64,
    correlation_id: String,
    /// Publishes between this message and the start of its chain.
    depth: u32,
    last_renewal: AtomicI64,
    /// What the handler published: written in the transaction of its ack, or never.
    outbox: Mutex<Vec<Delivery>>,
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
            depth: msg.depth,
            last_renewal: AtomicI64::new(now_ms()),
            outbox: Mutex::new(Vec::new()),
        }
    }

    /// The deliveries the handler published, for the settle of its ack.
    pub(super) fn take_outbox(&self) -> Vec<Delivery> {
        std::mem::take(&mut *self.outbox.lock().unwrap_or_else(|e| e.into_inner()))
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
            parent_id: Some(self.id),
            depth: self.depth.saturating_add(1),
            ..NewMessage::default()
        };
        let mut resolved = self
            .inner
            .router
            .resolve_chained(topic, msg)
            .await
            .map_err(|e| e.to_string())?;
        if resolved.deliveries.is_empty() {
            // Every matching route's filter dropped it: there is no message and no id.
            return Ok(String::new());
        }
        // The ids are promised now, before anything is written: reserved, so the message the
        // plugin is told about is the one its ack writes.
        let n = resolved.deliveries.len() as u32;
        let ids = self
            .inner
            .store
            .reserve_ids(n)
            .await
            .map_err(|e| format!("cannot publish now: {e}"))?;
        let first = ids[0];
        for (d, id) in resolved.deliveries.iter_mut().zip(ids) {
            d.message.id = Some(id);
        }
        self.outbox
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .append(&mut resolved.deliveries);
        Ok(first.to_string())
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
        let grants = self.inner.registry.settings(plugin).await.grants.clone();
        self.inner
            .store
            .kv_set_within(
                plugin,
                key,
                value,
                grants.kv_max_keys.unwrap_or(DEFAULT_KV_MAX_KEYS),
                grants.kv_max_bytes.unwrap_or(DEFAULT_KV_MAX_BYTES),
            )
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

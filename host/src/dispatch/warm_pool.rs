//! Warm handler instances of one queue (`instance_mode = "reuse"`).
//!
//! A delivery borrows an instance of the active plugin version, runs the message and gives it
//! back. At most one instance per running delivery exists, so the pool never holds more than
//! the queue's concurrency. Instances of an older version are dropped when met, so a deploy
//! takes effect on the next message, as in `fresh` mode.

use std::sync::{Arc, Mutex};

use crate::runtime::{Plugin, PluginFailure, WarmHandler};

/// Calls before an instance is replaced, bounding what a leaky guest can accumulate.
const MAX_CALLS_PER_INSTANCE: u32 = 10_000;

#[derive(Default)]
pub(super) struct WarmPool {
    idle: Mutex<Vec<WarmHandler>>,
}

impl WarmPool {
    /// An idle instance of `plugin` (same name and version), or a new slot for one.
    pub(super) fn take(&self, plugin: &Arc<Plugin>) -> Result<WarmHandler, PluginFailure> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(w) = idle.pop() {
            if Arc::ptr_eq(w.plugin(), plugin) {
                return Ok(w);
            }
            // A different version: this and the rest are stale.
            idle.clear();
        }
        drop(idle);
        WarmHandler::new(plugin.clone(), MAX_CALLS_PER_INSTANCE)
    }

    /// Returns an instance after a delivery (a failed call leaves it cold; that is fine).
    pub(super) fn give_back(&self, w: WarmHandler) {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).push(w);
    }

    /// Drops every idle instance (the queue switched to `fresh` or was reconfigured).
    pub(super) fn clear(&self) {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

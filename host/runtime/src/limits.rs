//! The limits of one plugin call, and how a call that broke one is reported.

use std::time::Duration;

use serde::Serialize;
use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder, Trap};

use spool_model::{ErrorCategory, QueueConfig};

/// Longest failure message kept; wasm backtraces of deep stacks can be long.
const MAX_FAILURE_MESSAGE: usize = 4096;

/// What one call may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Wall-clock limit, enforced at epoch ticks (a few milliseconds of resolution).
    pub timeout: Duration,
    /// Instruction budget (wasmtime fuel). Not time: the same work costs ~9k fuel in a Rust
    /// guest and ~5M in a JavaScript one.
    pub fuel: u64,
    /// Largest linear memory an instance may grow to.
    pub memory_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits::from_queue(&QueueConfig::default())
    }
}

impl Limits {
    /// The limits a queue's configuration asks for.
    pub fn from_queue(config: &QueueConfig) -> Limits {
        Limits {
            timeout: Duration::from_millis(config.timeout_ms),
            fuel: config.fuel,
            memory_bytes: (config.memory_mb as usize) << 20,
        }
    }
}

/// Why a call did not return a result. Affects only that call: the dispatcher retries or
/// dead-letters the message with `category`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{category}: {message}")]
pub struct PluginFailure {
    pub category: ErrorCategory,
    pub message: String,
}

impl PluginFailure {
    /// Whether the call's slot time achieved nothing: it was stopped by a limit or trapped. A
    /// queue (or filter) whose calls keep ending so gets a smaller share of the execution slots
    /// (`runtime::fair`). A handler's own error or retry is an answer, and host failures are
    /// not the plugin's doing.
    pub fn wastes_slot(&self) -> bool {
        matches!(
            self.category,
            ErrorCategory::Timeout
                | ErrorCategory::Fuel
                | ErrorCategory::Memory
                | ErrorCategory::Trap
        )
    }

    pub fn new(category: ErrorCategory, message: impl Into<String>) -> PluginFailure {
        let mut message = message.into();
        truncate_utf8(&mut message, MAX_FAILURE_MESSAGE);
        PluginFailure { category, message }
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary, noting how much was cut.
pub(crate) fn truncate_utf8(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let cut = s.len() - end;
    s.truncate(end);
    s.push_str(&format!("… ({cut} more bytes)"));
}

/// `StoreLimits` (with `trap_on_grow_failure`) plus a record of whether the memory limit was
/// what stopped the guest, so the failure is categorised `memory` rather than `trap`.
pub(crate) struct CallLimiter {
    inner: StoreLimits,
    /// The limit in force: the call's, capped by the runtime's `max_memory_mb`.
    pub(crate) memory_bytes: usize,
    /// Set when a memory growth was refused or failed.
    pub(crate) memory_denied: bool,
    /// The size the guest asked for, when the refusal was ours.
    pub(crate) memory_desired: Option<usize>,
    /// Linear memory granted so far across the instance's memories, and its highest value.
    committed: usize,
    pub(crate) peak_bytes: usize,
}

impl CallLimiter {
    pub(crate) fn new(memory_bytes: usize) -> CallLimiter {
        CallLimiter {
            inner: StoreLimitsBuilder::new()
                .memory_size(memory_bytes)
                .trap_on_grow_failure(true)
                .build(),
            memory_bytes,
            memory_denied: false,
            memory_desired: None,
            committed: 0,
            peak_bytes: 0,
        }
    }

    /// Whether the instance's memory has grown past three quarters of its limit. Linear memory
    /// never shrinks, so a warm instance whose heap creeps up (a JavaScript engine's garbage
    /// collector runs late, an interpreter caches) would sooner or later fail a message that
    /// alone fits easily; retiring it here gives the next message a fresh one instead.
    pub(crate) fn near_limit(&self) -> bool {
        self.committed > self.memory_bytes / 4 * 3
    }
}

impl ResourceLimiter for CallLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let result = self.inner.memory_growing(current, desired, maximum);
        if matches!(result, Ok(true)) {
            // Also called for each memory's initial size (from 0), so this is the total.
            self.committed = self
                .committed
                .saturating_add(desired.saturating_sub(current));
            self.peak_bytes = self.peak_bytes.max(self.committed);
        } else {
            self.memory_denied = true;
            self.memory_desired = Some(desired);
        }
        result
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        // Growth can also fail after we allowed it (the pooling allocator's slot size, or the
        // operating system refusing memory): still a memory failure for the guest's message.
        self.memory_denied = true;
        self.inner.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.inner.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.inner.instances()
    }

    fn tables(&self) -> usize {
        self.inner.tables()
    }

    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

/// Turns an error from instantiating or calling a plugin into a failure with its category.
///
/// `what` names the plugin (`name@version`); `stderr` is the tail of what the guest printed,
/// which for a Rust panic holds the panic message.
pub(crate) fn categorize(
    error: &wasmtime::Error,
    limiter: &CallLimiter,
    limits: &Limits,
    what: &str,
    stderr: &str,
) -> PluginFailure {
    let detail = format!("{error:#}");
    let stderr = stderr.trim();
    let with_stderr = |s: String| {
        if stderr.is_empty() {
            s
        } else {
            format!("{s}\nguest stderr: {stderr}")
        }
    };
    if limiter.memory_denied {
        let tried = match limiter.memory_desired {
            Some(desired) => format!(" (tried to grow to {desired} bytes)"),
            None => String::new(),
        };
        return PluginFailure::new(
            ErrorCategory::Memory,
            format!(
                "plugin {what} exceeded its memory limit of {} bytes{tried}; if it really \
                 needs more, raise the limit (the queue's memory_mb; --memory-mb for \
                 `spool plugin run`)",
                limiter.memory_bytes
            ),
        );
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => PluginFailure::new(
            ErrorCategory::Fuel,
            format!(
                "plugin {what} ran out of fuel (budget {} units); if the work is legitimate, \
                 raise the budget (the queue's fuel; --fuel for `spool plugin run`)",
                limits.fuel
            ),
        ),
        // Epoch deadlines yield rather than trap, but map the trap in case a caller
        // configures them to trap.
        Some(Trap::Interrupt) => timeout_failure(what, limits),
        Some(_) => PluginFailure::new(
            ErrorCategory::Trap,
            with_stderr(format!("plugin {what} trapped: {detail}")),
        ),
        None => PluginFailure::new(
            ErrorCategory::Trap,
            with_stderr(format!("plugin {what} failed: {detail}")),
        ),
    }
}

pub(crate) fn timeout_failure(what: &str, limits: &Limits) -> PluginFailure {
    PluginFailure::new(
        ErrorCategory::Timeout,
        format!(
            "plugin {what} did not finish within its timeout of {} ms (the queue's timeout_ms; \
             --timeout for `spool plugin run`)",
            limits.timeout.as_millis()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncates_on_char_boundaries() {
        let mut s = "ééééé".to_owned(); // 10 bytes
        truncate_utf8(&mut s, 3);
        assert!(s.starts_with('é'), "{s}");
        assert!(s.ends_with("(8 more bytes)"), "{s}");
        let mut short = "ok".to_owned();
        truncate_utf8(&mut short, 10);
        assert_eq!(short, "ok");
    }

    #[test]
    fn limits_follow_the_queue() {
        let limits = Limits::from_queue(&QueueConfig {
            timeout_ms: 250,
            fuel: 42,
            memory_mb: 3,
            ..QueueConfig::default()
        });
        assert_eq!(limits.timeout, Duration::from_millis(250));
        assert_eq!(limits.fuel, 42);
        assert_eq!(limits.memory_bytes, 3 << 20);
    }
}

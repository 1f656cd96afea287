//! A guest's stdout and stderr, kept in memory up to a bound.
//!
//! wasmtime's `MemoryOutputPipe` traps the guest once it is full, and Rust's `println!` panics
//! when a write fails, so a chatty plugin would fail its messages. This sink keeps the first
//! bytes (a Rust panic message is short and comes first) and silently drops the rest.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// How much of each stream is kept per call.
pub(crate) const CAPTURE_LIMIT: usize = 8 * 1024;

/// What the guest could write at once; large enough that writes are never split needlessly.
const WRITE_BUDGET: usize = 64 * 1024;

#[derive(Clone, Default)]
pub(crate) struct Captured {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    kept: Vec<u8>,
    dropped: usize,
}

impl Captured {
    fn push(&self, bytes: &[u8]) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let room = CAPTURE_LIMIT.saturating_sub(inner.kept.len());
        let take = room.min(bytes.len());
        inner.kept.extend_from_slice(&bytes[..take]);
        inner.dropped += bytes.len() - take;
    }

    pub(crate) fn clear(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.kept.clear();
        inner.dropped = 0;
    }

    /// What was written, as (lossy) text, with a note if some of it was dropped.
    pub(crate) fn text(&self) -> String {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut text = String::from_utf8_lossy(&inner.kept).into_owned();
        if inner.dropped > 0 {
            text.push_str(&format!("… ({} more bytes dropped)", inner.dropped));
        }
        text
    }
}

impl IsTerminal for Captured {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Captured {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl OutputStream for Captured {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }

    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(WRITE_BUDGET)
    }
}

#[async_trait::async_trait]
impl Pollable for Captured {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for Captured {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_start_and_counts_the_rest() {
        let c = Captured::default();
        c.push(b"panicked at x");
        c.push(&vec![b'a'; CAPTURE_LIMIT]);
        let text = c.text();
        assert!(text.starts_with("panicked at x"));
        assert!(
            text.ends_with("(13 more bytes dropped)"),
            "{}",
            &text[text.len() - 40..]
        );
    }
}

//! The HTTP/1.1 server under the API: an accept loop that serves each connection with hyper,
//! with a deadline for a request's headers, and a graceful stop.
//!
//! `axum::serve` has no header deadline, so a client that opens connections and sends its
//! headers a byte at a time would hold them open for ever; here such a connection is closed
//! once `header_read_timeout` passes without a complete request head.
//!
//! hyper answers requests it cannot parse itself, before any middleware sees them: 400 for a
//! bad request line or header, 414 for a URI over its limit, 431 for a head over its buffer or
//! header-count limit — with an empty body. [`JsonRefusals`] wraps each connection and gives
//! those answers the API's JSON error body, so every refusal has the same shape.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;

use super::error::{ErrorBody, ErrorDetail};
use super::guard::{MAX_HEADER_BYTES, MAX_HEADER_COUNT};

/// How long a failed `accept` (out of file descriptors, say) pauses the loop before retrying.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `app` on `listener` until `shutdown` resolves; then stops accepting, lets the
/// requests in flight finish and closes idle connections.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    header_read_timeout: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(e) => {
                    // Per-connection errors (a reset before accept, EMFILE) must not stop the
                    // server; back off briefly so a full descriptor table is not spun on.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Small JSON answers should not wait for Nagle's algorithm.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(header_read_timeout)
            .serve_connection(
                TokioIo::new(JsonRefusals::new(stream)),
                TowerToHyperService::new(app.clone()),
            );
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // A client that disconnects or times out ends its own connection; nothing to do.
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// A connection whose writes pass through unchanged, except hyper's own refusals (see the
/// module documentation), which are replaced by the same status with a JSON error body.
///
/// hyper writes such a refusal as one buffer holding only a response head with
/// `content-length: 0` and no `content-type`, as the last thing on the connection. Every
/// response of the API itself has a JSON body with a `content-type`, so it never looks like one.
/// Vectored writes are left off, so hyper hands each response head over in one piece.
struct JsonRefusals<S> {
    inner: S,
    /// A replacement refusal and how much of it has been written.
    pending: Option<(Vec<u8>, usize)>,
}

impl<S> JsonRefusals<S> {
    fn new(inner: S) -> Self {
        JsonRefusals {
            inner,
            pending: None,
        }
    }
}

impl<S: AsyncWrite + Unpin> JsonRefusals<S> {
    /// Writes what is left of a replacement refusal.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, written)) = &mut self.pending {
            if *written == bytes.len() {
                self.pending = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for JsonRefusals<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for JsonRefusals<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_pending(cx))?;
        if let Some(replacement) = json_refusal(buf) {
            this.pending = Some((replacement, 0));
            // hyper's bytes count as written; the replacement goes out now or on flush.
            if let Poll::Ready(Err(e)) = this.poll_pending(cx) {
                return Poll::Ready(Err(e));
            }
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// The JSON version of `head` if it is one of hyper's automatic refusals, else `None`.
fn json_refusal(head: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(head).ok()?;
    if !(text.starts_with("HTTP/1.1 ") || text.starts_with("HTTP/1.0 ")) {
        return None;
    }
    let end = text.find("\r\n\r\n")?;
    if end + 4 != text.len() {
        return None;
    }
    let mut lines = text[..end].split("\r\n");
    let status_line = lines.next()?;
    let (code, message): (&'static str, String) = match status_line.get(9..12)? {
        "400" => (
            "invalid_request",
            "the request is not valid HTTP/1.1: its request line, a header or the protocol \
             version could not be parsed"
                .to_owned(),
        ),
        "414" => (
            "uri_too_long",
            "the request URI is longer than this server accepts; send long values in the body"
                .to_owned(),
        ),
        "431" => (
            "headers_too_large",
            format!(
                "the request head is larger than this server accepts: at most \
                 {MAX_HEADER_COUNT} headers and {MAX_HEADER_BYTES} bytes of them"
            ),
        ),
        _ => return None,
    };
    let mut kept = Vec::new();
    let mut empty = false;
    for line in lines {
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("content-type:") {
            return None;
        }
        if let Some(length) = lower.strip_prefix("content-length:") {
            empty = length.trim() == "0";
        } else if !lower.starts_with("connection:") {
            kept.push(line);
        }
    }
    if !empty {
        return None;
    }
    let body = serde_json::to_vec(&ErrorBody {
        error: ErrorDetail { code, message },
    })
    .ok()?;
    let mut out = format!(
        "{status_line}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n",
        body.len()
    );
    for line in kept {
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(&body);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hyper_refusals_get_a_json_body() {
        let head = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n\
                     date: Mon, 30 Nov 2026 12:00:00 GMT\r\n\r\n";
        let out = String::from_utf8(json_refusal(head).expect("rewritten")).unwrap();
        let (head, body) = out.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 "), "{head}");
        assert!(head.contains("content-type: application/json"), "{head}");
        assert!(
            head.contains(&format!("content-length: {}", body.len())),
            "{head}"
        );
        assert!(head.contains("date: Mon"), "{head}");
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "headers_too_large");
        for status in ["400 Bad Request", "414 URI Too Long"] {
            let head = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
            assert!(json_refusal(head.as_bytes()).is_some(), "{status}");
        }
    }

    #[test]
    fn other_writes_pass_through() {
        for write in [
            // The API's own errors have a body and a content type.
            &b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n\
               content-length: 0\r\n\r\n"[..],
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 10\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n{}",
            b"{\"payload\": \"HTTP/1.1 400 Bad Request\"}",
        ] {
            assert_eq!(
                json_refusal(write),
                None,
                "{}",
                String::from_utf8_lossy(write)
            );
        }
    }
}

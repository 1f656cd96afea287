//! Wake-ups across hosts: every host LISTENs on `spool_ready`, and a commit that may have made
//! a queue's message ready (`pg_notify('spool_ready', queue)`) wakes that queue's workers on
//! every host. A lost connection is re-opened; since notifications sent meanwhile are gone,
//! every queue is woken once it is back (workers then look, and sleep again if there is
//! nothing). Behind a pooler in transaction mode LISTEN does not work; workers' own polling
//! (their sleep until the next due time, at most a second) still finds the messages.

use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::AsyncMessage;

use super::DatabaseUrl;
use crate::Signals;

/// The channel commits notify on.
pub(super) const CHANNEL: &str = "spool_ready";

/// The listening task; stops when dropped.
pub(super) struct Listener {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Listener {
    pub(super) fn spawn(url: DatabaseUrl, signals: Arc<Signals>) -> Listener {
        Listener {
            task: tokio::spawn(listen(url, signals)),
        }
    }
}

async fn listen(url: DatabaseUrl, signals: Arc<Signals>) {
    let mut failing = false;
    loop {
        match url.config().connect(tokio_postgres::NoTls).await {
            Ok((client, mut connection)) => {
                // The connection's messages (notifications among them) arrive only while it
                // is polled; the client's LISTEN is sent through the same poll.
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                let driver = tokio::spawn(async move {
                    // Ends when the connection fails or closes; dropping `tx` ends the loop
                    // below, and the outer loop connects again.
                    while let Some(Ok(message)) =
                        futures::future::poll_fn(|cx| connection.poll_message(cx)).await
                    {
                        if tx.send(message).is_err() {
                            break;
                        }
                    }
                });
                let sql = format!("LISTEN {CHANNEL}");
                match client.batch_execute(&sql).await {
                    Ok(()) => {
                        if failing {
                            tracing::info!(url = %url, "listening for wake-ups again");
                            failing = false;
                        }
                        // Whatever was notified while not listening is lost: look everywhere.
                        signals.notify_all();
                        while let Some(message) = rx.recv().await {
                            if let AsyncMessage::Notification(n) = message
                                && n.channel() == CHANNEL
                            {
                                signals.notify(n.payload());
                            }
                        }
                    }
                    Err(e) => {
                        if !failing {
                            tracing::warn!(url = %url, error = %url.scrub(&e.to_string()),
                                "cannot LISTEN for wake-ups (a pooler in transaction mode?); \
                                 workers find new messages by polling");
                        }
                        failing = true;
                    }
                }
                driver.abort();
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(url = %url, error = %url.scrub(&e.to_string()),
                        "the wake-up connection failed; retrying every second");
                }
                failing = true;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

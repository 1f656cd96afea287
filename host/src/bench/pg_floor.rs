//! The floor Spool on PostgreSQL is compared with: raw PostgreSQL doing the least a queue must
//! do, from [`WORKERS`] connections at once. A table of (id, state, payload); inserts of 100
//! rows per statement; and workers that, 100 rows per transaction, claim the oldest rows with
//! `SELECT … FOR UPDATE SKIP LOCKED` and then delete them, as a hand-written PostgreSQL worker
//! does. No leases, attempts, counters, queues or indexes beyond the primary key.
//!
//! Two more figures bound it: the claim and delete folded into one statement (fewer round
//! trips, the fastest way to empty a table in batches), and the least an at-least-once queue
//! must do, since claim-then-delete loses a message when the worker dies after the commit:
//! mark 100 rows leased in one transaction, delete them (the ack) in the next.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::Context;
use tokio_postgres::Client;
use tokio_util::sync::CancellationToken;

use super::fixture::payload;
use crate::store::postgres::DatabaseUrl;

/// Rows per insert and per claim.
pub const BATCH: u64 = 100;
/// Connections working at once: enough that `SKIP LOCKED` matters, as with several workers.
pub const WORKERS: usize = 4;

/// The floor's figures of one run, in messages per second.
#[derive(Debug, Clone, Copy, Default)]
pub struct PgFloor {
    /// 100 rows per transaction.
    pub insert_batch: f64,
    /// Claim the 100 oldest with `SKIP LOCKED`, then delete them: one transaction per batch.
    pub claim_then_delete: f64,
    /// The same in one statement.
    pub claim_delete: f64,
    /// Mark the 100 oldest leased in one transaction, delete them in the next.
    pub lease_ack: f64,
}

/// A connection of its own (no pool), driven on a task until the client is dropped.
pub async fn connect(url: &DatabaseUrl) -> anyhow::Result<Client> {
    let (client, connection) = url
        .config()
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to {url}: {}", url.scrub(&e.to_string())))?;
    tokio::spawn(async move {
        // The next statement on the client reports a lost connection; nothing to add here.
        let _ = connection.await;
    });
    Ok(client)
}

/// One way of working through the table, run on every connection at once: takes the
/// connection and the shared position, gives them back with the rows it handled.
type Work = fn(Client, Arc<AtomicU64>, u64, CancellationToken) -> Job;
type Job = std::pin::Pin<Box<dyn Future<Output = (Client, anyhow::Result<u64>)> + Send>>;

/// Runs the floor on the (empty) database `url`: `n` rows inserted, then taken by each way
/// of consuming them in turn (the table refilled in between).
pub async fn run(url: &DatabaseUrl, n: u64, cancel: &CancellationToken) -> anyhow::Result<PgFloor> {
    let setup = connect(url).await?;
    setup
        .batch_execute(
            "CREATE TABLE floor (
                 id      BIGSERIAL PRIMARY KEY,
                 state   INTEGER NOT NULL DEFAULT 1,
                 payload BYTEA NOT NULL
             )",
        )
        .await
        .context("create the floor table")?;
    let mut clients = Vec::with_capacity(WORKERS);
    for _ in 0..WORKERS {
        clients.push(connect(url).await?);
    }
    let mut rates = [0.0; 4];
    let fill: Work = |c, next, n, cancel| Box::pin(insert(c, next, n, cancel));
    let ways: [Work; 4] = [
        fill,
        |c, _, _, cancel| Box::pin(claim_then_delete(c, cancel)),
        |c, _, _, cancel| Box::pin(claim_delete(c, cancel)),
        |c, _, _, cancel| Box::pin(lease_then_ack(c, cancel)),
    ];
    for (i, work) in ways.into_iter().enumerate() {
        // The first consumer takes the rows the timed insert left; the others get new ones.
        if i > 1 {
            clients = on_every_client(clients, n, cancel, fill).await?.0;
        }
        let started = Instant::now();
        let (back, done) = on_every_client(clients, n, cancel, work).await?;
        rates[i] = rate(done, started);
        clients = back;
    }
    Ok(PgFloor {
        insert_batch: rates[0],
        claim_then_delete: rates[1],
        claim_delete: rates[2],
        lease_ack: rates[3],
    })
}

/// Runs `work` on every client at once until each is done; the clients back and the rows
/// handled.
async fn on_every_client(
    clients: Vec<Client>,
    n: u64,
    cancel: &CancellationToken,
    work: Work,
) -> anyhow::Result<(Vec<Client>, u64)> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for client in clients {
        tasks.spawn(work(client, next.clone(), n, cancel.clone()));
    }
    let (mut back, mut total, mut failed) = (Vec::new(), 0, None);
    while let Some(joined) = tasks.join_next().await {
        let (client, r) = joined.context("floor worker task")?;
        back.push(client);
        match r {
            Ok(done) => total += done,
            Err(e) => failed = Some(e),
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok((back, total)),
    }
}

/// Inserts rows `0..n` (shared with the other workers through `next`), [`BATCH`] per
/// statement.
async fn insert(
    client: Client,
    next: Arc<AtomicU64>,
    n: u64,
    cancel: CancellationToken,
) -> (Client, anyhow::Result<u64>) {
    let r = async {
        let stmt = client
            .prepare("INSERT INTO floor (payload) SELECT unnest($1::BYTEA[])")
            .await?;
        let mut done = 0u64;
        loop {
            let start = next.fetch_add(BATCH, Ordering::Relaxed);
            if start >= n || cancel.is_cancelled() {
                return Ok(done);
            }
            let end = (start + BATCH).min(n);
            let rows: Vec<Vec<u8>> = (start..end).map(payload).collect();
            client.execute(&stmt, &[&rows]).await?;
            done += end - start;
        }
    }
    .await;
    (client, r)
}

/// Claims a batch with `SKIP LOCKED` and deletes it, in one transaction, until none is left.
async fn claim_then_delete(
    mut client: Client,
    cancel: CancellationToken,
) -> (Client, anyhow::Result<u64>) {
    let r = async {
        let claim = client
            .prepare("SELECT id, payload FROM floor ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED")
            .await?;
        let delete = client
            .prepare("DELETE FROM floor WHERE id = ANY($1)")
            .await?;
        let mut taken = 0u64;
        let mut sink = 0usize;
        while !cancel.is_cancelled() {
            let tx = client.transaction().await?;
            let rows = tx.query(&claim, &[&(BATCH as i64)]).await?;
            if rows.is_empty() {
                break;
            }
            let ids = read_batch(&rows, &mut sink);
            tx.execute(&delete, &[&ids]).await?;
            tx.commit().await?;
            taken += ids.len() as u64;
        }
        std::hint::black_box(sink);
        Ok(taken)
    }
    .await;
    (client, r)
}

/// Claims and deletes batches in one statement each until none is left.
async fn claim_delete(client: Client, cancel: CancellationToken) -> (Client, anyhow::Result<u64>) {
    let r = async {
        let stmt = client
            .prepare(
                "DELETE FROM floor WHERE id IN (SELECT id FROM floor ORDER BY id LIMIT $1 \
                 FOR UPDATE SKIP LOCKED) RETURNING id, payload",
            )
            .await?;
        let mut taken = 0u64;
        let mut sink = 0usize;
        while !cancel.is_cancelled() {
            let rows = client.query(&stmt, &[&(BATCH as i64)]).await?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                let body: &[u8] = row.get(1);
                sink = sink.wrapping_add(body.len());
            }
            taken += rows.len() as u64;
        }
        std::hint::black_box(sink);
        Ok(taken)
    }
    .await;
    (client, r)
}

/// Leases a batch (one transaction), then deletes it (the next), until none is left.
async fn lease_then_ack(
    client: Client,
    cancel: CancellationToken,
) -> (Client, anyhow::Result<u64>) {
    let r = async {
        let lease = client
            .prepare(
                "UPDATE floor SET state = 2 WHERE id IN (SELECT id FROM floor WHERE state = 1 \
                 ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED) RETURNING id, payload",
            )
            .await?;
        let ack = client
            .prepare("DELETE FROM floor WHERE id = ANY($1) AND state = 2")
            .await?;
        let mut acked = 0u64;
        let mut sink = 0usize;
        while !cancel.is_cancelled() {
            let rows = client.query(&lease, &[&(BATCH as i64)]).await?;
            if rows.is_empty() {
                break;
            }
            let ids = read_batch(&rows, &mut sink);
            client.execute(&ack, &[&ids]).await?;
            acked += ids.len() as u64;
        }
        std::hint::black_box(sink);
        Ok(acked)
    }
    .await;
    (client, r)
}

/// Reads a claimed batch as a worker would (each `(id, payload)`): the ids, and the payload
/// bytes counted into `sink`, so the reads are not optimised away.
fn read_batch(rows: &[tokio_postgres::Row], sink: &mut usize) -> Vec<i64> {
    rows.iter()
        .map(|row| {
            let body: &[u8] = row.get(1);
            *sink = sink.wrapping_add(body.len());
            row.get(0)
        })
        .collect()
}

fn rate(n: u64, since: Instant) -> f64 {
    n as f64 / since.elapsed().as_secs_f64().max(1e-9)
}

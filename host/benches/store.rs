//! Criterion benchmarks of the SQLite store's hot paths: enqueue one message, enqueue a batch
//! of 100, and claim + ack a batch of 100. Each runs against a fresh file database with the
//! default settings (WAL, synchronous=NORMAL).
//!
//! `cargo bench -p spool --bench store`. These are measurements, never pass/fail tests.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use spool::model::{NewMessage, QueueConfigPatch, Settle, Settlement};
use spool::store::sqlite::SqliteStore;
use spool::store::{Store, StoreOptions};

const QUEUE: &str = "bench";
const BATCH: usize = 100;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn open(rt: &tokio::runtime::Runtime, dir: &tempfile::TempDir) -> Arc<dyn Store> {
    let path = dir.path().join("bench.db");
    let store = SqliteStore::open(&path, StoreOptions::default()).expect("open store");
    let store: Arc<dyn Store> = Arc::new(store);
    rt.block_on(store.put_queue(QUEUE, &QueueConfigPatch::default()))
        .expect("create queue");
    store
}

fn message(i: u64) -> NewMessage {
    NewMessage {
        payload: spool::bench::payload(i),
        ..NewMessage::default()
    }
}

fn enqueue(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(&rt, &dir);
    let mut group = c.benchmark_group("store/enqueue");

    group.throughput(Throughput::Elements(1));
    let mut i = 0u64;
    group.bench_function("single", |b| {
        b.to_async(&rt).iter(|| {
            i += 1;
            let store = store.clone();
            let m = message(i);
            async move { store.enqueue(QUEUE, vec![m]).await.expect("enqueue") }
        })
    });

    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("batch_100", |b| {
        b.to_async(&rt).iter(|| {
            i += BATCH as u64;
            let store = store.clone();
            let batch: Vec<NewMessage> = (i..i + BATCH as u64).map(message).collect();
            async move { store.enqueue(QUEUE, batch).await.expect("enqueue") }
        })
    });
    group.finish();
}

fn claim_settle(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(&rt, &dir);
    let mut group = c.benchmark_group("store/claim_settle");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.bench_function("batch_100", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                // Untimed: enough ready messages for this sample.
                let need = iters as usize * BATCH;
                let mut next = 0u64;
                while (next as usize) < need {
                    let batch = (next..next + 1_000).map(message).collect();
                    store.enqueue(QUEUE, batch).await.expect("fill");
                    next += 1_000;
                }
                let mut took = Duration::ZERO;
                for _ in 0..iters {
                    let started = Instant::now();
                    let claimed = store
                        .claim(QUEUE, BATCH as u32, 30_000)
                        .await
                        .expect("claim");
                    let settles = claimed
                        .messages
                        .iter()
                        .map(|m| Settle {
                            id: m.id,
                            attempt: m.attempt,
                            settlement: Settlement::Ack,
                            plugin_version: None,
                            outbox: Vec::new(),
                        })
                        .collect();
                    store.settle(settles).await.expect("settle");
                    took += started.elapsed();
                }
                // Untimed: leave nothing ready for the next sample.
                loop {
                    let rest = store.claim(QUEUE, 1_000, 30_000).await.expect("claim");
                    if rest.messages.is_empty() {
                        break;
                    }
                }
                took
            })
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5));
    targets = enqueue, claim_settle
}
criterion_main!(benches);

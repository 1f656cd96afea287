//! Criterion benchmarks of one call of the echo handler: a fresh instance per call (the
//! default `instance_mode`) against a warm instance reused across calls (`reuse`).
//!
//! Needs the echo plugin: `cargo build --release --target wasm32-wasip2 -p echo`; without it
//! the benchmarks are skipped with a message. `cargo bench -p spool --bench plugin`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use spool::runtime::{Limits, PluginMessage, Runtime, WarmHandler};

fn echo_wasm() -> Option<Vec<u8>> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target.join("wasm32-wasip2/release/echo.wasm");
    match std::fs::read(&path) {
        Ok(bytes) => Some(bytes),
        Err(e) => {
            eprintln!(
                "skipping plugin benchmarks: cannot read {} ({e}); build it with\n    \
                 cargo build --release --target wasm32-wasip2 -p echo",
                path.display()
            );
            None
        }
    }
}

fn calls(c: &mut Criterion) {
    let Some(wasm) = echo_wasm() else { return };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let cache = tempfile::tempdir().expect("temp dir");
    let runtime = Runtime::new(spool::bench::runtime_options(cache.path().to_owned()))
        .expect("plugin runtime");
    let plugin = runtime.load("echo", 1, &wasm).expect("load echo");
    let limits = Limits::default();
    let ctx = spool::bench::null_context();
    let msg = PluginMessage {
        id: "1".to_owned(),
        queue: "bench".to_owned(),
        payload: spool::bench::payload(1),
        attempt: 1,
        ..PluginMessage::default()
    };

    let mut group = c.benchmark_group("plugin/echo_handle");
    group.bench_function("fresh", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    plugin
                        .handle(msg.clone(), &limits, ctx.clone())
                        .await
                        .expect("echo");
                }
                started.elapsed()
            })
        })
    });

    let mut warm = WarmHandler::new(plugin.clone(), u32::MAX).expect("a handler");
    group.bench_function("reuse", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    warm.handle(msg.clone(), &limits, ctx.clone())
                        .await
                        .expect("echo");
                }
                started.elapsed()
            })
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(5));
    targets = calls
}
criterion_main!(benches);

//! Criterion benchmarks of topic routing: matching one topic against 10 and 10,000 routes
//! through the `RouteIndex` (a hit and a miss), the same against a scan of every pattern (what
//! the index saves), and building the index (what a rebuild on each route change costs).
//!
//! `cargo bench -p spool --bench router`. These are measurements, never pass/fail tests.

use std::hint::black_box;

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use spool::router::index::RouteIndex;
use spool::router::pattern::Pattern;

/// Routes as a multi-tenant deployment might bind them: per tenant an exact topic, a `*` and a
/// trailing `#`, plus a few catch-alls with leading wildcards, which every topic has to try.
fn routes(n: usize) -> Vec<(Pattern, usize)> {
    let catch_alls = ["#.audit", "*.*.audit", "audit.#"];
    let mut texts: Vec<String> = catch_alls.iter().map(|s| s.to_string()).collect();
    let mut tenant = 0;
    while texts.len() < n {
        texts.push(format!("tenant{tenant}.orders.*"));
        texts.push(format!("tenant{tenant}.#"));
        texts.push(format!("tenant{tenant}.refunds.eu.paid"));
        tenant += 1;
    }
    texts.truncate(n);
    texts
        .iter()
        .enumerate()
        .map(|(i, t)| (Pattern::parse(t).expect("valid pattern"), i))
        .collect()
}

const HIT: &str = "tenant1.orders.paid";
const MISS: &str = "nobody.orders.paid";

fn matching(c: &mut Criterion) {
    let mut group = c.benchmark_group("router_match");
    for n in [10, 10_000] {
        let routes = routes(n);
        let index = RouteIndex::new(routes.clone());
        assert_eq!(index.matches(HIT).len(), 2);
        assert!(index.matches(MISS).is_empty());
        let mut out = Vec::new();
        for (name, topic) in [("hit", HIT), ("miss", MISS)] {
            group.bench_function(BenchmarkId::new(format!("index_{name}"), n), |b| {
                b.iter(|| {
                    out.clear();
                    index.matches_into(black_box(topic), &mut out);
                    out.len()
                })
            });
            group.bench_function(BenchmarkId::new(format!("scan_{name}"), n), |b| {
                b.iter(|| {
                    routes
                        .iter()
                        .filter(|(p, _)| p.matches(black_box(topic)))
                        .count()
                })
            });
        }
    }
    group.finish();
}

fn building(c: &mut Criterion) {
    let mut group = c.benchmark_group("router_build");
    for n in [10, 10_000] {
        let routes = routes(n);
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter_batched(|| routes.clone(), RouteIndex::new, BatchSize::LargeInput)
        });
    }
    group.finish();
}

criterion_group!(benches, matching, building);
criterion_main!(benches);

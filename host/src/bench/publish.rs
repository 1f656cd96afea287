//! The `publish` scenario: what routing costs a producer, and what the route matcher costs.
//!
//! Batch throughput (100 messages per request, a few concurrent clients) of five paths into
//! queues without handlers, so only the write path is measured, each on a fresh Spool:
//!
//! - `direct`: `POST /v1/queues/q1/messages` (in-process: `Store::enqueue`), the reference;
//! - `fan-out 1`: `POST /v1/topics/bench.load/messages` through one route `bench.*` → q1
//!   (in-process: `Router::publish`);
//! - `fan-out 3`: the same topic through three routes `bench.*` → q1, q2, q3;
//! - `filter, own queue`: one route `bench.*` → q1 through the route-by-field filter, with
//!   payloads that lack its `region` field, so it delivers each to the route's queue;
//! - `filter, redirect`: the same route with payloads whose `region` is `q2`, so the filter
//!   redirects each to q2 (and adds two headers).
//!
//! Each path's deliveries per second are divided by the direct rate of the same run (the
//! ratio per delivered message): the machine's speed cancels out and the ratio is the figure
//! to compare. The matcher part times `RouteIndex::matches` in this process over many topics
//! that hit and miss, and the index build, at 10 and 10,000 routes.

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::args::Scenario;
use super::fixture::{Spool, payload};
use super::report::{Sample, Unit};
use super::scenarios::{Ctx, http_body_of, http_client, post_enqueue, produce, rate};
use crate::model::{NewMessage, NewRoute, QueueConfigPatch};
use crate::router::index::RouteIndex;
use crate::router::pattern::Pattern;

/// Concurrent clients (the batch scenario's 16 would mostly measure queueing on two cores).
const CLIENTS: u32 = 4;
/// Messages per request.
const BATCH: u64 = 100;
const TOPIC: &str = "bench.load";
const PATTERN: &str = "bench.*";
const QUEUES: [&str; 3] = ["q1", "q2", "q3"];
/// The name the filter plugin is deployed under.
const FILTER: &str = "route-by-field";
/// Messages published before the clock starts: the route table loaded, filter instances warm.
const WARM_UP: u64 = 200;

/// Targets of the ratio to a direct enqueue, per delivered message: routing by pattern alone
/// should cost at most a fifth, a filter (a wasm call per message) at most 70 %.
pub const PATTERN_TARGET: f64 = 0.8;
pub const FILTER_TARGET: f64 = 0.3;

/// The target of a `publish` ratio figure, by its variant name.
pub fn target(variant: &str) -> Option<f64> {
    if !variant.contains('÷') {
        None
    } else if variant.contains("filter") {
        Some(FILTER_TARGET)
    } else {
        Some(PATTERN_TARGET)
    }
}

/// One way into the queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Path {
    Direct,
    FanOut(usize),
    Filter { redirect: bool },
}

impl Path {
    const ALL: [Path; 5] = [
        Path::Direct,
        Path::FanOut(1),
        Path::FanOut(3),
        Path::Filter { redirect: false },
        Path::Filter { redirect: true },
    ];

    fn name(self) -> &'static str {
        match self {
            Path::Direct => "direct enqueue → q1",
            Path::FanOut(1) => "fan-out 1 (bench.* → q1)",
            Path::FanOut(_) => "fan-out 3 (bench.* → q1,q2,q3)",
            Path::Filter { redirect: false } => "filter, own queue (no region → q1)",
            Path::Filter { redirect: true } => "filter, redirect (region q2 → q2)",
        }
    }

    fn short(self) -> &'static str {
        match self {
            Path::Direct => "direct",
            Path::FanOut(1) => "fan-out 1",
            Path::FanOut(_) => "fan-out 3",
            Path::Filter { redirect: false } => "filter, own queue",
            Path::Filter { redirect: true } => "filter, redirect",
        }
    }

    /// Deliveries each message makes.
    fn fan_out(self) -> u64 {
        match self {
            Path::FanOut(n) => n as u64,
            _ => 1,
        }
    }

    fn payload(self) -> fn(u64) -> Vec<u8> {
        match self {
            Path::Filter { redirect: true } => region_payload,
            _ => payload,
        }
    }

    /// The routes this path publishes through.
    fn routes(self) -> Vec<NewRoute> {
        let route = |queue: &str, filter: Option<&str>| NewRoute {
            pattern: PATTERN.to_owned(),
            queue: queue.to_owned(),
            filter: filter.map(str::to_owned),
            ..NewRoute::default()
        };
        match self {
            Path::Direct => Vec::new(),
            Path::FanOut(n) => QUEUES[..n].iter().map(|q| route(q, None)).collect(),
            Path::Filter { .. } => vec![route(QUEUES[0], Some(FILTER))],
        }
    }
}

/// A 64-byte payload, like [`payload`], whose `region` makes route-by-field redirect it to q2.
fn region_payload(i: u64) -> Vec<u8> {
    format!("{{\"id\":\"{i:016}\",\"region\":\"q2\",\"note\":\"spool bench 64b\"}}").into_bytes()
}

pub async fn publish(ctx: &Ctx) -> anyhow::Result<Vec<Sample>> {
    let filter = ctx
        .filter
        .clone()
        .context("the route-by-field filter was not loaded")?;
    let total = ctx.plan.publish_messages;
    let mut out = Vec::new();
    for http in [false, true] {
        let transport = if http { "http" } else { "in-process" };
        let mut direct = None;
        for path in Path::ALL {
            if ctx.cancelled() {
                return Ok(out);
            }
            ctx.progress.say(format_args!(
                "publish {transport}, {}: {total} messages, {BATCH} per request, {CLIENTS} clients",
                path.short()
            ));
            let mut spool = Spool::start(&ctx.fixture("publish", false)?).await?;
            let measured = once(ctx, &mut spool, path, http, &filter).await;
            spool.stop().await?;
            let (sent, elapsed) = measured?;
            let deliveries = rate(sent * path.fan_out(), elapsed);
            let what = if path == Path::Direct {
                "msgs/s"
            } else {
                "deliveries/s"
            };
            out.push(Sample::new(
                Scenario::Publish,
                format!("{transport}, {}, {what}", path.name()),
                Unit::MsgsPerSec,
                deliveries,
            ));
            match direct {
                None => direct = Some(deliveries),
                Some(base) => {
                    let min = if matches!(path, Path::Filter { .. }) {
                        FILTER_TARGET
                    } else {
                        PATTERN_TARGET
                    };
                    out.push(Sample::new(
                        Scenario::Publish,
                        format!(
                            "{transport}, {} ÷ direct, per delivery (target ≥ {min})",
                            path.short()
                        ),
                        Unit::Ratio,
                        deliveries / f64::max(base, f64::MIN_POSITIVE),
                    ));
                }
            }
        }
    }
    if !ctx.cancelled() {
        ctx.progress
            .say("publish: route matcher at 10 and 10,000 routes");
        let quick = ctx.plan.quick;
        out.extend(
            tokio::task::spawn_blocking(move || matcher(quick))
                .await
                .context("matcher task")?,
        );
    }
    Ok(out)
}

/// Sets up one path on a fresh Spool, warms it up and sends `--messages` messages through it.
async fn once(
    ctx: &Ctx,
    spool: &mut Spool,
    path: Path,
    http: bool,
    filter: &[u8],
) -> anyhow::Result<(u64, Duration)> {
    for q in QUEUES {
        spool
            .put_named_queue(q, QueueConfigPatch::default())
            .await?;
    }
    if matches!(path, Path::Filter { .. }) {
        spool.deploy(FILTER, filter.to_vec()).await?;
    }
    let router = spool.dispatcher.router().clone();
    for route in path.routes() {
        router
            .add_route(route)
            .await
            .context("cannot add the bench route")?;
    }
    let payload_of = path.payload();
    let messages = move |start: u64, end: u64| -> Vec<NewMessage> {
        (start..end)
            .map(|i| NewMessage {
                payload: payload_of(i),
                ..NewMessage::default()
            })
            .collect()
    };
    // Warm-up, untimed and through the same path as the measurement.
    match path {
        Path::Direct => {
            spool.store.enqueue(QUEUES[0], messages(0, WARM_UP)).await?;
        }
        _ => {
            router.publish(TOPIC, messages(0, WARM_UP)).await?;
        }
    }

    let cancel = &ctx.cancel;
    let total = ctx.plan.publish_messages;
    let (sent, elapsed) = if http {
        let addr = spool.serve_http().await?;
        let client = http_client(CLIENTS)?;
        let url = match path {
            Path::Direct => format!("http://{addr}/v1/queues/{}/messages", QUEUES[0]),
            _ => format!("http://{addr}/v1/topics/{TOPIC}/messages"),
        };
        produce(total, BATCH, CLIENTS, cancel, move |start, end| {
            let (client, url) = (client.clone(), url.clone());
            async move { post_enqueue(&client, &url, http_body_of(start, end, payload_of)).await }
        })
        .await?
    } else if path == Path::Direct {
        let store = spool.store.clone();
        produce(total, BATCH, CLIENTS, cancel, move |start, end| {
            let store = store.clone();
            async move {
                store.enqueue(QUEUES[0], messages(start, end)).await?;
                Ok(())
            }
        })
        .await?
    } else {
        produce(total, BATCH, CLIENTS, cancel, move |start, end| {
            let router = router.clone();
            async move {
                router.publish(TOPIC, messages(start, end)).await?;
                Ok(())
            }
        })
        .await?
    };

    // Every delivery landed where the path says (counted by the store, after the clock).
    let expected: [u64; 3] = match path {
        Path::Direct | Path::FanOut(1) | Path::Filter { redirect: false } => [1, 0, 0],
        Path::FanOut(_) => [1, 1, 1],
        Path::Filter { redirect: true } => [0, 1, 0],
    };
    for (q, per_message) in QUEUES.into_iter().zip(expected) {
        let ready = spool.store.queue_stats(q).await?.ready;
        let want = per_message * (WARM_UP + sent);
        if ready != want {
            bail!(
                "after publishing {sent} messages ({}), queue {q} holds {ready} ready, not {want}",
                path.short()
            );
        }
    }
    Ok((sent, elapsed))
}

// --- the matcher ------------------------------------------------------------------------------

/// Routes as a multi-tenant deployment might bind them (as in `benches/router.rs`): per tenant
/// an exact topic, a `*` and a trailing `#`, plus catch-alls with leading wildcards, which
/// every topic has to try. Returns the patterns and the number of tenants.
fn tenant_routes(n: usize) -> (Vec<(Pattern, usize)>, usize) {
    let mut texts: Vec<String> = ["#.audit", "*.*.audit", "audit.#"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut tenants = 0;
    while texts.len() < n {
        texts.push(format!("tenant{tenants}.orders.*"));
        texts.push(format!("tenant{tenants}.#"));
        texts.push(format!("tenant{tenants}.refunds.eu.paid"));
        tenants += 1;
    }
    texts.truncate(n);
    let routes = texts
        .iter()
        .enumerate()
        .map(|(i, t)| (Pattern::parse(t).expect("valid pattern"), i))
        .collect();
    (routes, tenants)
}

/// ns per `matches` over distinct hitting and missing topics, and µs per index build.
fn matcher(quick: bool) -> Vec<Sample> {
    let lookups: usize = if quick { 20_000 } else { 500_000 };
    let mut out = Vec::new();
    for n in [10, 10_000] {
        let (routes, tenants) = tenant_routes(n);
        let mut builds: Vec<f64> = (0..7)
            .map(|_| {
                let routes = routes.clone();
                let started = Instant::now();
                let index = black_box(RouteIndex::new(routes));
                let took = started.elapsed().as_secs_f64() * 1e6;
                drop(index);
                took
            })
            .collect();
        builds.sort_by(f64::total_cmp);
        let index = RouteIndex::new(routes);
        // 1,000 distinct topics of each kind, cycled: every hit matches a tenant's `*` and `#`
        // routes (or only `*` for a tenant cut short), every miss reaches no route.
        let hits: Vec<String> = (0..1_000)
            .map(|i| format!("tenant{}.orders.paid", i % tenants))
            .collect();
        let misses: Vec<String> = (0..1_000)
            .map(|i| format!("nobody{i}.orders.paid"))
            .collect();
        for (kind, topics) in [("hit", &hits), ("miss", &misses)] {
            let mut found = Vec::with_capacity(8);
            let mut matched = 0usize;
            let started = Instant::now();
            for topic in topics.iter().cycle().take(lookups) {
                found.clear();
                index.matches_into(black_box(topic), &mut found);
                matched += found.len();
            }
            let ns = started.elapsed().as_secs_f64() * 1e9 / lookups as f64;
            debug_assert_eq!(matched == 0, kind == "miss");
            black_box(matched);
            out.push(Sample::new(
                Scenario::Publish,
                format!("matcher, {} routes: one topic, {kind}", thousands(n)),
                Unit::Nanos,
                ns,
            ));
        }
        out.push(Sample::new(
            Scenario::Publish,
            format!("matcher, {} routes: build the index", thousands(n)),
            Unit::Micros,
            builds[builds.len() / 2],
        ));
    }
    out
}

pub(super) fn thousands(n: usize) -> String {
    if n >= 1_000 {
        format!("{},{:03}", n / 1_000, n % 1_000)
    } else {
        n.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_the_same_size_and_json() {
        assert_eq!(region_payload(7).len(), payload(7).len());
        let v: serde_json::Value = serde_json::from_slice(&region_payload(7)).unwrap();
        assert_eq!(v["region"], "q2");
    }

    #[test]
    fn targets_follow_the_variant() {
        assert_eq!(target("http, fan-out 3 ÷ direct, per delivery"), Some(0.8));
        assert_eq!(target("http, filter, own queue ÷ direct"), Some(0.3));
        assert_eq!(target("http, direct enqueue → q1, msgs/s"), None);
    }

    #[test]
    fn the_matcher_part_reports_hits_misses_and_builds() {
        let samples = matcher(true);
        assert_eq!(samples.len(), 6);
        assert!(samples.iter().all(|s| s.value.is_finite() && s.value > 0.0));
        let (routes, tenants) = tenant_routes(10_000);
        let index = RouteIndex::new(routes);
        assert_eq!(index.matches("tenant5.orders.paid").len(), 2);
        assert!(index.matches("nobody5.orders.paid").is_empty());
        assert!(tenants > 3_000);
    }
}

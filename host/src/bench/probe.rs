//! The open-loop enqueue probe `noisy` and `deploy` time the HTTP API with, while something else
//! loads the server.

use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::scenarios::{http_body, post_enqueue};

/// Open loop: a single-message enqueue every `1 / rate` s, to `urls` in turn, each timed from its
/// due instant's send to its answer, until `count` were sent or `stop` is cancelled. Being open
/// loop, a slow answer delays no later send, so queueing in the server shows in the latencies.
/// Returns when each was sent and how many milliseconds it took, in the order they were answered.
pub(super) async fn probe(
    client: reqwest::Client,
    urls: Vec<String>,
    rate: u32,
    count: u64,
    stop: CancellationToken,
) -> anyhow::Result<Vec<(Instant, f64)>> {
    let every = Duration::from_secs(1) / rate;
    let started = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut i: u64 = 0;
    while i < count {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep_until(started + every * i as u32) => {}
        }
        let (client, url) = (client.clone(), urls[i as usize % urls.len()].clone());
        tasks.spawn(async move {
            let at = Instant::now();
            post_enqueue(&client, &url, http_body(i, i + 1)).await?;
            Ok::<_, anyhow::Error>((at, at.elapsed().as_secs_f64() * 1e3))
        });
        i += 1;
    }
    let mut ms = Vec::with_capacity(i as usize);
    while let Some(r) = tasks.join_next().await {
        ms.push(r.context("probe task")??);
    }
    Ok(ms)
}

//! A handler that misbehaves on request, for testing the host's limits and error categories.
//!
//! The JSON payload picks the behaviour:
//!
//! | payload | what happens |
//! |---|---|
//! | `{"do":"loop"}` | spins forever (fuel or timeout stops it) |
//! | `{"do":"trap"}` | panics (a trap) |
//! | `{"do":"alloc"}` | allocates until the memory limit is hit |
//! | `{"do":"hold","mb":N}` | allocates N MiB and keeps it for the instance's lifetime, then acks |
//! | `{"do":"retry","delay_ms":N}` | returns retry, with the delay if given |
//! | `{"do":"dead-letter","reason":"..."}` | returns dead-letter with the reason |
//! | `{"do":"sleep-ms","ms":N}` | busy-waits N ms, heartbeating every ~100 ms, then acks |
//! | `{"do":"publish","topic":"t","body":...}` | publishes `body` to `t` then acks (retry on error) |
//! | `{"do":"publish-then","topic":"t","body":...,"then":{...}}` | publishes `body` to `t`, then does what `then` says (any of these commands; a failed publish retries) |
//! | `{"do":"republish"}` | publishes its own payload and headers to its own topic, then acks; a refused publish (e.g. the chain depth limit) dead-letters it with the error |
//! | `{"do":"kv"}` | increments the kv counter `count` and acks |
//! | `{"do":"instance-calls"}` | dead-letters with the reason `instance call N`: N counts the calls this instance has handled, so 1 each time shows fresh instances |
//! | anything else, or not JSON | acks |
//!
//! Function names are kept in this plugin's wasm (the release profile does not strip it) so the
//! traps it provokes come with readable backtraces.

use std::time::{Duration, Instant};

use serde::Deserialize;
use spool_guest::{Message, Outcome, log};

#[derive(Deserialize)]
#[serde(tag = "do", rename_all = "kebab-case")]
enum Command {
    Loop,
    Trap,
    Alloc,
    Hold {
        mb: usize,
    },
    Retry {
        delay_ms: Option<u64>,
    },
    DeadLetter {
        #[serde(default)]
        reason: String,
    },
    SleepMs {
        ms: u64,
    },
    Publish {
        topic: String,
        #[serde(default)]
        body: serde_json::Value,
    },
    PublishThen {
        topic: String,
        #[serde(default)]
        body: serde_json::Value,
        then: Box<Command>,
    },
    Republish,
    Kv,
    InstanceCalls,
}

/// Memory kept by `hold` until the instance is dropped, like a leaking or caching guest.
static HELD: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());

/// Calls handled by this instance; a fresh instance starts at zero.
static INSTANCE_CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn handle(msg: Message) -> Outcome {
    let calls = INSTANCE_CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    if let Ok(Command::InstanceCalls) = msg.json::<Command>() {
        return Outcome::dead_letter(format!("instance call {calls}"));
    }
    let Ok(command) = msg.json::<Command>() else {
        return Outcome::Ack;
    };
    run(command, &msg)
}

fn run(command: Command, msg: &Message) -> Outcome {
    match command {
        Command::Loop => spin_forever(),
        Command::Trap => panic!("misbehave: trap requested by message {}", msg.id),
        Command::Alloc => allocate_forever(),
        Command::Hold { mb } => {
            HELD.lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(vec![0x5A; mb << 20]);
            Outcome::Ack
        }
        Command::Retry { delay_ms } => Outcome::Retry(delay_ms),
        Command::DeadLetter { reason } => Outcome::dead_letter(reason),
        Command::SleepMs { ms } => {
            busy_wait(Duration::from_millis(ms));
            Outcome::Ack
        }
        Command::Publish { topic, body } => {
            let body = body.to_string();
            match spool_guest::publish(&topic, body, &[("from", "misbehave")]) {
                Ok(id) => {
                    log::info(&format!("published {id} to {topic}"));
                    Outcome::Ack
                }
                Err(e) => {
                    log::warn(&format!("publish to {topic} failed: {e}"));
                    Outcome::retry()
                }
            }
        }
        Command::PublishThen { topic, body, then } => {
            match spool_guest::publish(&topic, body.to_string(), &[("from", "misbehave")]) {
                Ok(id) => {
                    log::info(&format!("published {id} to {topic}"));
                    run(*then, msg)
                }
                Err(e) => {
                    log::warn(&format!("publish to {topic} failed: {e}"));
                    Outcome::retry()
                }
            }
        }
        Command::Republish => {
            let Some(topic) = msg.topic.as_deref() else {
                return Outcome::dead_letter("republish: the message has no topic");
            };
            let headers: Vec<(&str, &str)> = msg
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            match spool_guest::publish(topic, &msg.payload, &headers) {
                Ok(id) => {
                    log::info(&format!("republished as {id} to {topic}"));
                    Outcome::Ack
                }
                Err(e) => {
                    log::warn(&format!("republish to {topic} refused: {e}"));
                    Outcome::dead_letter(format!("republish refused: {e}"))
                }
            }
        }
        Command::InstanceCalls => Outcome::dead_letter("instance-calls is answered in `handle`"),
        Command::Kv => match increment_counter() {
            Ok(n) => {
                log::info(&format!("count is now {n}"));
                Outcome::Ack
            }
            Err(e) => {
                log::warn(&format!("kv failed: {e}"));
                Outcome::retry()
            }
        },
    }
}

fn spin_forever() -> ! {
    let mut n: u64 = 0;
    loop {
        // `black_box` keeps the optimiser from proving the loop useless.
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

fn allocate_forever() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        // Touch every megabyte so the memory is really committed, not just reserved.
        hoard.push(std::hint::black_box(vec![0xA5; 1 << 20]));
    }
}

fn busy_wait(total: Duration) {
    let start = Instant::now();
    let mut last_beat = start;
    while start.elapsed() < total {
        if last_beat.elapsed() >= Duration::from_millis(100) {
            spool_guest::heartbeat();
            last_beat = Instant::now();
        }
        std::hint::spin_loop();
    }
}

fn increment_counter() -> Result<u64, String> {
    let current = match spool_guest::kv::get("count")? {
        Some(bytes) => std::str::from_utf8(&bytes)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0),
        None => 0,
    };
    let next = current + 1;
    spool_guest::kv::set("count", next.to_string())?;
    Ok(next)
}

spool_guest::handler!(handle);

//! A routing filter that misbehaves on request, for testing how the router survives its filters
//! (test-only, like `misbehave` for handlers).
//!
//! The JSON payload picks the behaviour:
//!
//! | payload | what the filter does |
//! |---|---|
//! | `{"do":"trap"}` | panics (a trap) |
//! | `{"do":"loop"}` | spins forever (fuel or the timeout stops it) |
//! | `{"do":"alloc"}` | allocates until the memory limit is hit |
//! | `{"do":"drop"}` | drops the message |
//! | `{"do":"redirect","queue":"q"}` | delivers to queue `q` instead of the route's |
//! | anything else, or not JSON | delivers to the route's own queue, unchanged |

use serde::Deserialize;
use spool_guest::{Message, Route};

#[derive(Deserialize)]
#[serde(tag = "do", rename_all = "kebab-case")]
enum Command {
    Trap,
    Loop,
    Alloc,
    Drop,
    Redirect { queue: String },
}

fn route(msg: Message) -> Route {
    let Ok(command) = msg.json::<Command>() else {
        return Route::Deliver(Vec::new());
    };
    match command {
        Command::Trap => panic!("misbehave-filter: trap requested by message {}", msg.id),
        Command::Loop => spin_forever(),
        Command::Alloc => allocate_forever(),
        Command::Drop => Route::Drop,
        Command::Redirect { queue } => Route::deliver_to([queue]),
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

spool_guest::filter!(route);

//! The smallest routing filter: delivers every message, unchanged, to the queue named like its
//! topic. A reference for the `filter` world, and what the tests use when they need a plugin that
//! is not a handler.
//!
//! ```text
//! cargo build --release --target wasm32-wasip2 -p route-all
//! spool plugin deploy route-all target/wasm32-wasip2/release/route_all.wasm
//! ```

use spool_guest::{Message, Route};

fn route(msg: Message) -> Route {
    match msg.topic {
        Some(topic) => Route::deliver_to([topic]),
        None => Route::Drop,
    }
}

spool_guest::filter!(route);

//! A routing filter that sends each message to the queue named by a field of its JSON payload.
//!
//! For every published message, in this order:
//!
//! 1. a message with the header `drop_header` set to `drop_value` (default `x-test: true`) is
//!    test traffic and is **dropped**;
//! 2. if the payload is a JSON object whose top-level `field` (default `region`) is a string of
//!    1 to 64 characters from `A-Z a-z 0-9 _ -`, the message is **redirected** to the queue
//!    `{prefix}{value}`, with its payload unchanged and two headers added: `routed-by:
//!    route-by-field` and `route-field: <value>`;
//! 3. anything else — not JSON, not an object, no such field, not a string, not a usable
//!    name — is **delivered unchanged to the route's own queue**.
//!
//! User data never traps the filter and is never lost: when in doubt, the message goes where it
//! would have gone without a filter. A configuration that cannot work (an empty `field`, a
//! `prefix` that cannot start a queue name) is logged as an error on every message, and messages
//! still go to the route's own queue.
//!
//! The rules live in `decide.rs`, apart from the bindings, so they are tested natively:
//!
//! ```text
//! cargo test -p route-by-field
//! cargo build --release --target wasm32-wasip2 -p route-by-field
//! spool plugin run target/wasm32-wasip2/release/route_by_field.wasm \
//!     --payload '{"region":"eu"}' --config prefix=orders-
//! ```

mod decide;

use decide::{Decision, Settings, decide, enrich};
use spool_guest::{Message, Route, Transformed, log};

fn route(msg: Message) -> Route {
    // Read on every call: the host runs each message in a fresh instance, so there is nothing to
    // cache across messages, and four `config` calls cost far less than the JSON scan.
    let settings = match Settings::from_lookup(spool_guest::config) {
        Ok(settings) => settings,
        Err(e) => {
            log::error(&format!("{e}; delivering to the route's own queue"));
            return Route::Deliver(Vec::new());
        }
    };
    match decide(&settings, &msg.payload, &msg.headers) {
        Decision::Own => Route::Deliver(Vec::new()),
        Decision::Drop => {
            log::debug(&format!(
                "dropped message {}: header {} is {}",
                msg.id, settings.drop_header, settings.drop_value
            ));
            Route::Drop
        }
        Decision::Redirect { queue, value } => Route::Transform(Transformed {
            queues: vec![queue],
            headers: enrich(msg.headers, &value),
            payload: msg.payload,
        }),
    }
}

spool_guest::filter!(route);

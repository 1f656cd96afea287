//! The smallest useful Spool handler: acknowledges every message.
//!
//! It logs the message id, the attempt and the payload size — never the payload itself, which may
//! hold personal data. Useful as a template, for smoke tests and for `spool bench`.
//!
//! ```text
//! cargo build --release --target wasm32-wasip2 -p echo
//! spool plugin run target/wasm32-wasip2/release/echo.wasm --payload '{"hello":"world"}'
//! ```

use spool_guest::{Message, Outcome, log};

fn handle(msg: Message) -> Outcome {
    log::info(&format!(
        "message {} attempt {} payload {} bytes",
        msg.id,
        msg.attempt,
        msg.payload.len()
    ));
    Outcome::Ack
}

spool_guest::handler!(handle);

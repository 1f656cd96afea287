//! Pages of messages with opaque cursors, shared by both backends.

use spool_model::{Message, Page};

use crate::{StoreError, StoreResult};

/// Cursors are the last id of a page as 16 hex digits: opaque to clients, trivially checked.
pub fn encode_cursor(id: i64) -> String {
    format!("{id:016x}")
}

/// The id after which the page starts; 0 without a cursor.
pub fn decode_cursor(cursor: Option<&str>) -> StoreResult<i64> {
    let Some(c) = cursor else { return Ok(0) };
    let valid = c.len() == 16 && c.bytes().all(|b| b.is_ascii_hexdigit());
    let id = if valid {
        i64::from_str_radix(c, 16).ok().filter(|id| *id >= 0)
    } else {
        None
    };
    id.ok_or_else(|| StoreError::InvalidCursor(c.to_owned()))
}

/// Page sizes: 0 means the default, anything above the maximum is capped.
pub fn page_limit(limit: u32) -> i64 {
    const DEFAULT: u32 = 100;
    const MAX: u32 = 1_000;
    i64::from(if limit == 0 { DEFAULT } else { limit.min(MAX) })
}

/// Builds a page from `limit + 1` fetched rows: the extra row only tells that more exist.
pub fn page(mut items: Vec<Message>, limit: i64) -> Page<Message> {
    let more = items.len() as i64 > limit;
    items.truncate(limit as usize);
    let next_cursor = if more {
        items.last().map(|m| encode_cursor(m.id))
    } else {
        None
    };
    Page { items, next_cursor }
}

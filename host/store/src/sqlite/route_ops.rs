//! Routes and what goes through them: the route table, publishes (one transaction for every
//! delivery of a request), reserved ids for a handler's outbox, and dead letters of a failed
//! filter that are routed again.
//!
//! Patterns are stored as the router gave them; matching them is the router's job, not SQL's.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension, Row, params};

use super::rows::{
    Counter, Counters, Ctx, QueueRow, decode_headers, encode_headers, flush_counters, require_queue,
};
use super::write_ops::{dead_letter, delete_dead, enqueue_into, plugin_version};
use super::writer::Tx;
use crate::{StoreError, StoreResult};
use spool_model::{
    Delivery, Enqueued, ErrorCategory, FilterLimits, MessageId, MessageState, NewRoute, Route,
    RouteId, now_ms,
};

const ROUTE_COLUMNS: &str = "r.id, r.pattern, q.name, r.filter, r.headers, r.limits, \
                             r.created_at, r.delivered_total";

fn route_from_row(row: &Row<'_>) -> rusqlite::Result<Route> {
    let limits: Option<String> = row.get(5)?;
    let limits = match limits {
        Some(json) => serde_json::from_str(&json).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(5, rusqlite::types::Type::Text, e.into())
        })?,
        None => FilterLimits::default(),
    };
    Ok(Route {
        id: row.get(0)?,
        pattern: row.get(1)?,
        queue: row.get(2)?,
        filter: row.get(3)?,
        headers: decode_headers(4, row.get(4)?)?,
        limits,
        created_at: row.get(6)?,
        delivered: u64::try_from(row.get::<_, i64>(7)?).unwrap_or(0),
    })
}

pub(super) fn list_routes(conn: &Connection) -> StoreResult<Vec<Route>> {
    conn.prepare_cached(&format!(
        "SELECT {ROUTE_COLUMNS} FROM routes AS r JOIN queues AS q ON q.id = r.queue_id \
         ORDER BY r.id"
    ))
    .ctx("prepare route list")?
    .query_map([], route_from_row)
    .ctx("list routes")?
    .collect::<rusqlite::Result<Vec<_>>>()
    .ctx("list routes")
}

fn route_by_id(conn: &Connection, id: RouteId) -> StoreResult<Option<Route>> {
    conn.prepare_cached(&format!(
        "SELECT {ROUTE_COLUMNS} FROM routes AS r JOIN queues AS q ON q.id = r.queue_id \
         WHERE r.id = ?1"
    ))
    .ctx("prepare route lookup")?
    .query_row(params![id], route_from_row)
    .optional()
    .ctx("look up route")
}

/// Creates `route`, or finds an identical one (same pattern, queue, filter, headers and
/// limits); returns it and whether it was created. The queue must exist and the filter, if any,
/// must be a deployed `filter`-world plugin.
pub(super) fn create_route(tx: &mut Tx<'_>, route: NewRoute) -> StoreResult<(Route, bool)> {
    let conn = tx.conn;
    let q = require_queue(conn, &route.queue)?;
    if let Some(filter) = &route.filter {
        check_filter(conn, filter, &route.pattern)?;
    }
    let mut headers = route.headers;
    headers.sort();
    let headers = encode_headers(&headers)?;
    let limits = (route.limits != FilterLimits::default())
        .then(|| serde_json::to_string(&route.limits))
        .transpose()
        .map_err(|e| StoreError::Database(format!("encode route limits: {e}")))?;
    let existing: Option<RouteId> = conn
        .prepare_cached(
            "SELECT id FROM routes WHERE pattern = ?1 AND queue_id = ?2 AND filter IS ?3 \
             AND headers IS ?4 AND limits IS ?5",
        )
        .ctx("prepare route match")?
        .query_row(
            params![route.pattern, q.id, route.filter, headers, limits],
            |r| r.get(0),
        )
        .optional()
        .ctx("look for an identical route")?;
    if let Some(id) = existing {
        let found = route_by_id(conn, id)?.ok_or(StoreError::RouteNotFound(id))?;
        return Ok((found, false));
    }
    conn.prepare_cached(
        "INSERT OR FAIL INTO routes (pattern, queue_id, filter, headers, limits, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .ctx("prepare route insert")?
    .execute(params![
        route.pattern,
        q.id,
        route.filter,
        headers,
        limits,
        now_ms()
    ])
    .ctx("insert route")?;
    let id = conn.last_insert_rowid();
    tracing::info!(route = id, pattern = %route.pattern, queue = %q.name, filter = ?route.filter, "route created");
    let created = route_by_id(conn, id)?.ok_or(StoreError::RouteNotFound(id))?;
    Ok((created, true))
}

/// A route's filter must exist and be a filter when the route is created.
fn check_filter(conn: &Connection, filter: &str, pattern: &str) -> StoreResult<()> {
    let active: Option<i64> = conn
        .prepare_cached("SELECT active_version FROM plugin_heads WHERE name = ?1")
        .ctx("prepare plugin head")?
        .query_row(params![filter], |r| r.get(0))
        .optional()
        .ctx("read plugin head")?;
    let Some(active) = active else {
        return Err(StoreError::PluginNotFound(filter.to_owned()));
    };
    let v = plugin_version(conn, filter, active, true)?;
    if v.world == crate::plugin_rules::FILTER_WORLD {
        return Ok(());
    }
    Err(StoreError::WrongWorld(format!(
        "plugin {filter:?} (active version {}) is a {} plugin, not a filter: route {pattern:?} \
         cannot use it as its filter; deploy a component built for the `filter` world \
         (`spool_guest::filter!`) and name that",
        v.version, v.world
    )))
}

pub(super) fn delete_route(tx: &mut Tx<'_>, id: RouteId) -> StoreResult<Route> {
    let route = route_by_id(tx.conn, id)?.ok_or(StoreError::RouteNotFound(id))?;
    tx.conn
        .prepare_cached("DELETE FROM routes WHERE id = ?1")
        .ctx("prepare route delete")?
        .execute(params![id])
        .ctx("delete route")?;
    tracing::info!(route = id, pattern = %route.pattern, queue = %route.queue, "route deleted");
    Ok(route)
}

/// Routes that deliver to queue `queue_id`, by id.
pub(super) fn routes_to_queue(conn: &Connection, queue_id: i64) -> StoreResult<Vec<RouteId>> {
    conn.prepare_cached("SELECT id FROM routes WHERE queue_id = ?1 ORDER BY id")
        .ctx("prepare queue routes")?
        .query_map(params![queue_id], |r| r.get(0))
        .ctx("find routes to a queue")?
        .collect::<rusqlite::Result<Vec<_>>>()
        .ctx("find routes to a queue")
}

/// Routes whose filter is `plugin`, by id.
pub(super) fn routes_using(conn: &Connection, plugin: &str) -> StoreResult<Vec<RouteId>> {
    conn.prepare_cached("SELECT id FROM routes WHERE filter = ?1 ORDER BY id")
        .ctx("prepare filter users")?
        .query_map(params![plugin], |r| r.get(0))
        .ctx("find routes using a plugin")?
        .collect::<rusqlite::Result<Vec<_>>>()
        .ctx("find routes using a plugin")
}

pub(super) fn delete_routes_to_queue(conn: &Connection, queue_id: i64) -> StoreResult<u64> {
    conn.prepare_cached("DELETE FROM routes WHERE queue_id = ?1")
        .ctx("prepare queue routes delete")?
        .execute(params![queue_id])
        .ctx("delete routes to a queue")
        .map(|n| n as u64)
}

/// Writes every delivery in one go (the caller's transaction): each queue's messages through
/// the same path as an enqueue, a failed filter's deliveries as dead letters. Returns one entry
/// per delivery, in order.
pub(super) fn deliver(
    tx: &mut Tx<'_>,
    deliveries: Vec<Delivery>,
    counters: &mut Counters,
) -> StoreResult<Vec<Enqueued>> {
    let total = deliveries.len();
    // Deliveries into the same queue through the same route are written together (multi-row
    // inserts, idempotency keys resolved in order), then put back in the caller's order.
    type Group = (
        Vec<usize>,
        Vec<spool_model::NewMessage>,
        Vec<Option<String>>,
    );
    let mut groups: Vec<((String, Option<RouteId>), Group)> = Vec::new();
    let mut index: HashMap<(String, Option<RouteId>), usize> = HashMap::new();
    for (i, d) in deliveries.into_iter().enumerate() {
        let key = (d.queue, d.route);
        let g = match index.get(&key) {
            Some(g) => *g,
            None => {
                index.insert(key.clone(), groups.len());
                groups.push((key, Default::default()));
                groups.len() - 1
            }
        };
        let (positions, messages, errors) = &mut groups[g].1;
        positions.push(i);
        messages.push(d.message);
        errors.push(d.filter_error);
    }
    let mut out = vec![
        Enqueued {
            id: 0,
            existing: false
        };
        total
    ];
    let mut queues: HashMap<String, QueueRow> = HashMap::new();
    let now = now_ms();
    for ((queue, route), (positions, messages, errors)) in groups {
        let q = match queues.get(&queue) {
            Some(q) => q.clone(),
            None => {
                let q = require_queue(tx.conn, &queue)?;
                queues.insert(queue.clone(), q.clone());
                q
            }
        };
        let written = enqueue_into(tx, &q, messages, route, counters)?;
        let mut fresh = 0i64;
        for ((pos, e), error) in positions.into_iter().zip(written).zip(errors) {
            if !e.existing {
                fresh += 1;
                if let Some(error) = error {
                    dead_letter(tx.conn, e.id, now, &error, ErrorCategory::Filter, None)?;
                    counters.add(q.id, Counter::Dead, 1);
                    counters.moved(q.id, Some(MessageState::Ready), Some(MessageState::Dead), 1);
                    tracing::info!(id = e.id, queue = %q.name, route = ?route, "filter failed: delivery dead-lettered");
                }
            }
            out[pos] = e;
        }
        if let Some(route) = route
            && fresh > 0
        {
            tx.conn
                .prepare_cached(
                    "UPDATE routes SET delivered_total = delivered_total + ?2 WHERE id = ?1",
                )
                .ctx("prepare route count")?
                .execute(params![route, fresh])
                .ctx("count route deliveries")?;
        }
    }
    Ok(out)
}

pub(super) fn publish(tx: &mut Tx<'_>, deliveries: Vec<Delivery>) -> StoreResult<Vec<Enqueued>> {
    let mut counters = Counters::default();
    let out = deliver(tx, deliveries, &mut counters)?;
    flush_counters(&mut counters, tx.conn)?;
    Ok(out)
}

/// Takes `n` message ids off the id counter for messages written later with those ids (or
/// never: an unused reservation is a gap, and ids are never reused). Returns the first.
pub(super) fn reserve_ids(tx: &mut Tx<'_>, n: u32) -> StoreResult<MessageId> {
    let n = i64::from(n.max(1));
    let seq = super::ids::sequence(tx.conn)?;
    let last = seq
        .checked_add(n)
        .ok_or_else(|| StoreError::Database("the message id counter is exhausted".to_owned()))?;
    let updated = tx
        .conn
        .prepare_cached("UPDATE sqlite_sequence SET seq = ?1 WHERE name = 'messages'")
        .ctx("prepare id reservation")?
        .execute(params![last])
        .ctx("reserve ids")?;
    if updated == 0 {
        tx.conn
            .prepare_cached("INSERT INTO sqlite_sequence (name, seq) VALUES ('messages', ?1)")
            .ctx("prepare id reservation")?
            .execute(params![last])
            .ctx("reserve ids")?;
    }
    Ok(seq + 1)
}

/// Replaces the dead letter `id` by `deliveries` (its route run again): the dead letter is
/// removed and the deliveries written, in one transaction.
pub(super) fn replace_dead(
    tx: &mut Tx<'_>,
    id: MessageId,
    deliveries: Vec<Delivery>,
) -> StoreResult<Vec<Enqueued>> {
    let mut counters = Counters::default();
    if !delete_dead(tx.conn, id, &mut counters)? {
        return Err(StoreError::DeadLetterNotFound(id));
    }
    let out = deliver(tx, deliveries, &mut counters)?;
    flush_counters(&mut counters, tx.conn)?;
    Ok(out)
}

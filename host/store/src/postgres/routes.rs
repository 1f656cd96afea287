//! Routes on PostgreSQL, and deleting a queue (which routes hold on to). Mirrors
//! `sqlite::route_ops` and `sqlite::write_ops::delete_queue`. Patterns are stored as the router
//! gave them; matching is the router's job.

use deadpool_postgres::GenericClient;
use spool_model::{
    Delivery, Enqueued, FilterLimits, MessageId, MessageState, NewRoute, Route, RouteId, now_ms,
};

use super::PgStore;
use super::enqueue::state_of;
use crate::counters::Counters;
use crate::{StoreError, StoreResult};
use spool_model::DeletedMessages;

/// Route creation is serialised across hosts so two identical routes are never both created.
const ROUTES_LOCK: i64 = 0x73_70_6f_6f_6c_00_00_03;

const ROUTE_COLUMNS: &str = "r.id, r.pattern, q.name, r.filter, r.headers, r.limits, \
                             r.created_at, r.delivered_total";

fn route_from_row(row: &tokio_postgres::Row) -> StoreResult<Route> {
    let unreadable = |what: &str, e: serde_json::Error| {
        StoreError::Database(format!("stored route {what} are unreadable: {e}"))
    };
    let limits: Option<serde_json::Value> = row.get(5);
    let headers: Option<serde_json::Value> = row.get(4);
    Ok(Route {
        id: row.get(0),
        pattern: row.get(1),
        queue: row.get(2),
        filter: row.get(3),
        headers: match headers {
            Some(v) => serde_json::from_value(v).map_err(|e| unreadable("headers", e))?,
            None => Vec::new(),
        },
        limits: match limits {
            Some(v) => serde_json::from_value(v).map_err(|e| unreadable("limits", e))?,
            None => FilterLimits::default(),
        },
        created_at: row.get(6),
        delivered: u64::try_from(row.get::<_, i64>(7)).unwrap_or(0),
    })
}

impl PgStore {
    /// See `Store::list_routes`: by id.
    pub async fn list_routes(&self) -> StoreResult<Vec<Route>> {
        let conn = self.conn().await?;
        conn.query(
            &format!(
                "SELECT {ROUTE_COLUMNS} FROM routes r JOIN queues q ON q.id = r.queue_id \
                 ORDER BY r.id"
            ),
            &[],
        )
        .await
        .map_err(|e| self.db("list routes", e))?
        .iter()
        .map(route_from_row)
        .collect()
    }

    async fn route_by_id(&self, c: &impl GenericClient, id: RouteId) -> StoreResult<Route> {
        let row = c
            .query_opt(
                &format!(
                    "SELECT {ROUTE_COLUMNS} FROM routes r JOIN queues q ON q.id = r.queue_id \
                     WHERE r.id = $1"
                ),
                &[&id],
            )
            .await
            .map_err(|e| self.db("look up route", e))?
            .ok_or(StoreError::RouteNotFound(id))?;
        route_from_row(&row)
    }

    /// See `Store::create_route`.
    pub async fn create_route(&self, route: NewRoute) -> StoreResult<(Route, bool)> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(|e| self.db("begin", e))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&ROUTES_LOCK])
            .await
            .map_err(|e| self.db("take the route lock", e))?;
        let queue_id = self.queue_id(&tx, &route.queue).await?;
        if let Some(filter) = &route.filter {
            self.check_filter(&tx, filter, &route.pattern).await?;
        }
        let mut headers = route.headers;
        headers.sort();
        let headers = (!headers.is_empty())
            .then(|| serde_json::to_value(&headers))
            .transpose()
            .map_err(|e| StoreError::Database(format!("encode route headers: {e}")))?;
        let limits = (route.limits != FilterLimits::default())
            .then(|| serde_json::to_value(route.limits))
            .transpose()
            .map_err(|e| StoreError::Database(format!("encode route limits: {e}")))?;
        let existing = tx
            .query_opt(
                "SELECT id FROM routes WHERE pattern = $1 AND queue_id = $2 \
                 AND filter IS NOT DISTINCT FROM $3 AND headers IS NOT DISTINCT FROM $4 \
                 AND limits IS NOT DISTINCT FROM $5",
                &[&route.pattern, &queue_id, &route.filter, &headers, &limits],
            )
            .await
            .map_err(|e| self.db("look for an identical route", e))?;
        if let Some(row) = existing {
            let found = self.route_by_id(&tx, row.get(0)).await?;
            return Ok((found, false));
        }
        let id: RouteId = tx
            .query_one(
                "INSERT INTO routes (pattern, queue_id, filter, headers, limits, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                &[
                    &route.pattern,
                    &queue_id,
                    &route.filter,
                    &headers,
                    &limits,
                    &now_ms(),
                ],
            )
            .await
            .map_err(|e| self.db("insert route", e))?
            .get(0);
        let created = self.route_by_id(&tx, id).await?;
        tx.commit().await.map_err(|e| self.db("commit", e))?;
        tracing::info!(route = id, pattern = %created.pattern, queue = %created.queue,
            filter = ?created.filter, "route created");
        Ok((created, true))
    }

    /// A route's filter must exist and be a filter when the route is created.
    async fn check_filter(
        &self,
        c: &impl GenericClient,
        filter: &str,
        pattern: &str,
    ) -> StoreResult<()> {
        let row = c
            .query_opt(
                "SELECT p.version, p.world FROM plugin_heads h \
                 JOIN plugins p ON p.name = h.name AND p.version = h.active_version \
                 WHERE h.name = $1",
                &[&filter],
            )
            .await
            .map_err(|e| self.db("look up the filter", e))?
            .ok_or_else(|| StoreError::PluginNotFound(filter.to_owned()))?;
        let (version, world): (i32, String) = (row.get(0), row.get(1));
        if world == crate::plugin_rules::FILTER_WORLD {
            return Ok(());
        }
        Err(StoreError::WrongWorld(format!(
            "plugin {filter:?} (active version {version}) is a {world} plugin, not a filter: \
             route {pattern:?} cannot use it as its filter; deploy a component built for the \
             `filter` world (`spool_guest::filter!`) and name that"
        )))
    }

    /// See `Store::delete_route`.
    pub async fn delete_route(&self, id: RouteId) -> StoreResult<Route> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(|e| self.db("begin", e))?;
        let route = self.route_by_id(&tx, id).await?;
        tx.execute("DELETE FROM routes WHERE id = $1", &[&id])
            .await
            .map_err(|e| self.db("delete route", e))?;
        tx.commit().await.map_err(|e| self.db("commit", e))?;
        tracing::info!(route = id, pattern = %route.pattern, queue = %route.queue, "route deleted");
        Ok(route)
    }

    /// See `Store::replace_dead`: the dead letter removed and the deliveries written, at once.
    pub async fn replace_dead(
        &self,
        id: MessageId,
        deliveries: Vec<Delivery>,
    ) -> StoreResult<Vec<Enqueued>> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(|e| self.db("begin", e))?;
        let mut counters = Counters::default();
        let queue_id: i64 = tx
            .query_opt(
                "DELETE FROM messages WHERE id = $1 AND state = 4 RETURNING queue_id",
                &[&id],
            )
            .await
            .map_err(|e| self.db("remove the dead letter", e))?
            .ok_or(StoreError::DeadLetterNotFound(id))?
            .get(0);
        counters.moved(queue_id, Some(MessageState::Dead), None, 1);
        let out = self.deliver(&tx, deliveries, &mut counters).await?;
        self.flush_counters(&tx, &mut counters).await?;
        tx.commit().await.map_err(|e| self.db("commit", e))?;
        Ok(out)
    }

    /// See `Store::delete_queue`.
    pub async fn delete_queue(&self, name: &str, force: bool) -> StoreResult<DeletedMessages> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(|e| self.db("begin", e))?;
        let queue_id: i64 = tx
            .query_opt("SELECT id FROM queues WHERE name = $1 FOR UPDATE", &[&name])
            .await
            .map_err(|e| self.db("look up queue", e))?
            .ok_or_else(|| StoreError::QueueNotFound(name.to_owned()))?
            .get(0);
        let mut deleted = DeletedMessages::default();
        for row in tx
            .query(
                "SELECT state, count(*) FROM messages WHERE queue_id = $1 GROUP BY state",
                &[&queue_id],
            )
            .await
            .map_err(|e| self.db("count queue messages", e))?
        {
            let n: i64 = row.get(1);
            deleted.add(state_of(row.get(0))?, u64::try_from(n).unwrap_or(0));
        }
        if deleted.live() > 0 && !force {
            return Err(StoreError::QueueNotEmpty {
                queue: name.to_owned(),
                scheduled: deleted.scheduled,
                ready: deleted.ready,
                leased: deleted.leased,
            });
        }
        let routes: Vec<RouteId> = tx
            .query(
                "SELECT id FROM routes WHERE queue_id = $1 ORDER BY id",
                &[&queue_id],
            )
            .await
            .map_err(|e| self.db("find routes to the queue", e))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        if !routes.is_empty() && !force {
            return Err(StoreError::QueueHasRoutes {
                queue: name.to_owned(),
                routes,
            });
        }
        deleted.routes = routes.len() as u64;
        for sql in [
            "DELETE FROM routes WHERE queue_id = $1",
            "DELETE FROM messages WHERE queue_id = $1",
            "DELETE FROM queue_counters WHERE queue_id = $1",
            "DELETE FROM queue_history WHERE queue_id = $1",
            "DELETE FROM queues WHERE id = $1",
        ] {
            tx.execute(sql, &[&queue_id])
                .await
                .map_err(|e| self.db("delete the queue", e))?;
        }
        tx.commit().await.map_err(|e| self.db("commit", e))?;
        tracing::info!(
            queue = name,
            force,
            ready = deleted.ready,
            leased = deleted.leased,
            dead = deleted.dead,
            "queue deleted"
        );
        Ok(deleted)
    }
}

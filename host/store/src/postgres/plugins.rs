//! Plugin versions, activation and history on PostgreSQL. Mirrors the SQLite store's rules
//! (`sqlite::write_ops::put_plugin` and its neighbours) with one difference: the component is
//! one `BYTEA` value, not pieces. SQLite splits it because its single writer would hold every
//! queue's commits behind an 18 MB write; here other transactions commit beside it.
//!
//! Every change to one plugin's versions takes a per-plugin advisory lock, so two hosts
//! deploying the same name at once get consecutive version numbers and a history in one order.

use deadpool_postgres::GenericClient;
use spool_model::{
    Deployed, PluginAction, PluginActivation, PluginDeleted, PluginVersion, RouteId, now_ms,
};

use super::PgStore;
use crate::plugin_rules::{check_users_world, validate_upload};
use crate::{StoreError, StoreResult};

const VERSION_COLUMNS: &str = "p.name, p.version, p.sha256, p.world, p.size, p.created_at, \
                               coalesce(h.active_version = p.version, false)";

fn version_from_row(row: &tokio_postgres::Row) -> PluginVersion {
    PluginVersion {
        name: row.get(0),
        version: u32::try_from(row.get::<_, i32>(1)).unwrap_or(0),
        sha256: row.get(2),
        world: row.get(3),
        size: u64::try_from(row.get::<_, i64>(4)).unwrap_or(0),
        created_at: row.get(5),
        active: row.get(6),
    }
}

impl PgStore {
    /// See `Store::put_plugin`.
    pub async fn put_plugin(
        &self,
        name: &str,
        world: &str,
        sha256: &str,
        wasm: Vec<u8>,
        actor: Option<&str>,
    ) -> StoreResult<Deployed> {
        validate_upload(name, world, sha256, &wasm)?;
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(|e| self.db("begin", e))?;
        self.lock_plugin(&tx, name).await?;
        let active = self.active_version(&tx, name).await?;
        let existing = tx
            .query_opt(
                "SELECT version, encode(sha256(wasm), 'hex') = $2 FROM plugins \
                 WHERE name = $1 AND sha256 = $2 ORDER BY version DESC LIMIT 1",
                &[&name, &sha256],
            )
            .await
            .map_err(|e| self.db("look up plugin bytes", e))?;
        if let Some(row) = existing {
            let (version, intact): (i32, bool) = (row.get(0), row.get(1));
            if !intact {
                // A damaged record of the same component: the upload repairs it in place.
                tx.execute(
                    "UPDATE plugins SET wasm = $3, size = $4 WHERE name = $1 AND version = $2",
                    &[&name, &version, &wasm, &(wasm.len() as i64)],
                )
                .await
                .map_err(|e| self.db("repair plugin bytes", e))?;
                tracing::warn!(
                    plugin = name,
                    version,
                    "the stored component of this version was damaged; replaced it with the \
                     uploaded copy (same SHA-256)"
                );
            }
            let v = self.version_of(&tx, name, version).await?;
            if active != Some(version) {
                // The same bytes as an earlier version: that version again, not a copy of it.
                self.check_users(&tx, name, &format!("version {version}"), &v.world)
                    .await?;
                self.set_active(&tx, name, active, version, PluginAction::Deploy, actor)
                    .await?;
                tracing::info!(
                    plugin = name,
                    from = active,
                    to = version,
                    sha256,
                    "plugin bytes match an earlier version; that version is active again"
                );
            }
            tx.commit().await.map_err(|e| self.db("commit", e))?;
            return Ok(Deployed {
                version: PluginVersion { active: true, ..v },
                new_version: false,
            });
        }
        self.check_users(&tx, name, "(new version)", world).await?;
        let version: i32 = tx
            .query_one(
                "INSERT INTO plugins (name, version, sha256, world, size, created_at, wasm) \
                 SELECT $1, coalesce(max(version), 0) + 1, $2, $3, $4, $5, $6 \
                 FROM plugins WHERE name = $1 RETURNING version",
                &[
                    &name,
                    &sha256,
                    &world,
                    &(wasm.len() as i64),
                    &now_ms(),
                    &wasm,
                ],
            )
            .await
            .map_err(|e| self.db("insert plugin version", e))?
            .get(0);
        self.set_active(&tx, name, active, version, PluginAction::Deploy, actor)
            .await?;
        let v = self.version_of(&tx, name, version).await?;
        tx.commit().await.map_err(|e| self.db("commit", e))?;
        tracing::info!(
            plugin = name,
            version,
            sha256,
            "plugin version stored and activated"
        );
        Ok(Deployed {
            version: PluginVersion { active: true, ..v },
            new_version: true,
        })
    }

    /// See `Store::active_plugin`: the version and its bytes read in one statement, so they
    /// always belong together.
    pub async fn active_plugin(&self, name: &str) -> StoreResult<(PluginVersion, Vec<u8>)> {
        let conn = self.conn().await?;
        let row = conn
            .query_opt(
                &format!(
                    "SELECT {VERSION_COLUMNS}, p.wasm FROM plugin_heads h \
                     JOIN plugins p ON p.name = h.name AND p.version = h.active_version \
                     WHERE h.name = $1"
                ),
                &[&name],
            )
            .await
            .map_err(|e| self.db("read the active plugin", e))?
            .ok_or_else(|| StoreError::PluginNotFound(name.to_owned()))?;
        Ok((version_from_row(&row), row.get(7)))
    }

    /// See `Store::list_plugins`: by name, then version.
    pub async fn list_plugins(&self) -> StoreResult<Vec<PluginVersion>> {
        let conn = self.conn().await?;
        let rows = conn
            .query(
                &format!(
                    "SELECT {VERSION_COLUMNS} FROM plugins p \
                     LEFT JOIN plugin_heads h ON h.name = p.name ORDER BY p.name, p.version"
                ),
                &[],
            )
            .await
            .map_err(|e| self.db("list plugins", e))?;
        Ok(rows.iter().map(version_from_row).collect())
    }

    /// See `Store::rollback_plugin`.
    pub async fn rollback_plugin(
        &self,
        name: &str,
        actor: Option<&str>,
    ) -> StoreResult<PluginVersion> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(|e| self.db("begin", e))?;
        self.lock_plugin(&tx, name).await?;
        let active = self
            .active_version(&tx, name)
            .await?
            .ok_or_else(|| StoreError::PluginNotFound(name.to_owned()))?;
        let previous: Option<i32> = tx
            .query_one(
                "SELECT max(version) FROM plugins WHERE name = $1 AND version < $2",
                &[&name, &active],
            )
            .await
            .map_err(|e| self.db("read the previous plugin version", e))?
            .get(0);
        let previous = previous.ok_or_else(|| StoreError::NoPreviousVersion(name.to_owned()))?;
        let v = self.version_of(&tx, name, previous).await?;
        self.check_users(&tx, name, &format!("version {previous}"), &v.world)
            .await?;
        self.set_active(
            &tx,
            name,
            Some(active),
            previous,
            PluginAction::Rollback,
            actor,
        )
        .await?;
        tx.commit().await.map_err(|e| self.db("commit", e))?;
        tracing::info!(
            plugin = name,
            from = active,
            to = previous,
            "plugin rolled back"
        );
        Ok(PluginVersion { active: true, ..v })
    }

    /// See `Store::activate_plugin`.
    pub async fn activate_plugin(
        &self,
        name: &str,
        version: u32,
        actor: Option<&str>,
    ) -> StoreResult<PluginVersion> {
        let not_found = || StoreError::PluginVersionNotFound {
            plugin: name.to_owned(),
            version,
        };
        let wanted = i32::try_from(version).map_err(|_| not_found())?;
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(|e| self.db("begin", e))?;
        self.lock_plugin(&tx, name).await?;
        let active = self
            .active_version(&tx, name)
            .await?
            .ok_or_else(|| StoreError::PluginNotFound(name.to_owned()))?;
        let v = match self.version_of(&tx, name, wanted).await {
            Err(StoreError::PluginNotFound(_)) => return Err(not_found()),
            other => other?,
        };
        if active != wanted {
            self.check_users(&tx, name, &format!("version {version}"), &v.world)
                .await?;
            self.set_active(
                &tx,
                name,
                Some(active),
                wanted,
                PluginAction::Activate,
                actor,
            )
            .await?;
            tx.commit().await.map_err(|e| self.db("commit", e))?;
            tracing::info!(
                plugin = name,
                from = active,
                to = wanted,
                "plugin version activated"
            );
        }
        Ok(PluginVersion { active: true, ..v })
    }

    /// See `Store::plugin_history`: oldest first.
    pub async fn plugin_history(&self, name: &str) -> StoreResult<Vec<PluginActivation>> {
        let mut conn = self.conn().await?;
        // One snapshot, so a plugin deleted meanwhile is "not found", not an empty history.
        let tx = conn
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(|e| self.db("begin", e))?;
        if self.active_version(&tx, name).await?.is_none() {
            return Err(StoreError::PluginNotFound(name.to_owned()));
        }
        let rows = tx
            .query(
                "SELECT at, actor, action, from_version, to_version FROM plugin_history \
                 WHERE name = $1 ORDER BY id",
                &[&name],
            )
            .await
            .map_err(|e| self.db("read plugin history", e))?;
        rows.iter()
            .map(|row| {
                let action: String = row.get(2);
                Ok(PluginActivation {
                    at: row.get(0),
                    actor: row.get(1),
                    action: action.parse().map_err(|e: String| {
                        StoreError::Database(format!("stored plugin history is unreadable: {e}"))
                    })?,
                    from_version: row
                        .get::<_, Option<i32>>(3)
                        .and_then(|v| u32::try_from(v).ok()),
                    to_version: u32::try_from(row.get::<_, i32>(4)).unwrap_or(0),
                })
            })
            .collect()
    }

    /// See `Store::delete_plugin`.
    pub async fn delete_plugin(&self, name: &str) -> StoreResult<PluginDeleted> {
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(|e| self.db("begin", e))?;
        self.lock_plugin(&tx, name).await?;
        if self.active_version(&tx, name).await?.is_none() {
            return Err(StoreError::PluginNotFound(name.to_owned()));
        }
        let (queues, routes) = self.users(&tx, name).await?;
        if !queues.is_empty() || !routes.is_empty() {
            return Err(StoreError::PluginInUse {
                plugin: name.to_owned(),
                queues,
                routes,
            });
        }
        let mut deleted = Vec::with_capacity(6);
        for (sql, what) in [
            (
                "DELETE FROM plugins WHERE name = $1",
                "delete plugin versions",
            ),
            (
                "DELETE FROM plugin_heads WHERE name = $1",
                "delete plugin head",
            ),
            (
                "DELETE FROM plugin_history WHERE name = $1",
                "delete plugin history",
            ),
            (
                "DELETE FROM plugin_kv WHERE plugin = $1",
                "delete plugin key-value data",
            ),
            (
                "DELETE FROM plugin_config WHERE plugin = $1",
                "delete plugin configuration",
            ),
            (
                "DELETE FROM plugin_grants WHERE plugin = $1",
                "delete plugin grants",
            ),
        ] {
            deleted.push(
                tx.execute(sql, &[&name])
                    .await
                    .map_err(|e| self.db(what, e))?,
            );
        }
        tx.commit().await.map_err(|e| self.db("commit", e))?;
        let (versions, kv_entries) = (deleted[0], deleted[3]);
        tracing::info!(plugin = name, versions, kv_entries, "plugin deleted");
        Ok(PluginDeleted {
            name: name.to_owned(),
            versions,
            kv_entries,
        })
    }

    /// Serialises changes to one plugin's versions across hosts until the transaction ends.
    /// The kv and configuration locks are separate keys: a deploy never waits on a plugin's
    /// own kv writes.
    async fn lock_plugin(&self, tx: &impl GenericClient, name: &str) -> StoreResult<()> {
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('spool-plugin:' || $1, 0))",
            &[&name],
        )
        .await
        .map_err(|e| self.db("take the plugin lock", e))?;
        Ok(())
    }

    async fn active_version(&self, c: &impl GenericClient, name: &str) -> StoreResult<Option<i32>> {
        Ok(c.query_opt(
            "SELECT active_version FROM plugin_heads WHERE name = $1",
            &[&name],
        )
        .await
        .map_err(|e| self.db("read plugin head", e))?
        .map(|row| row.get(0)))
    }

    /// Version `version` of `name`, marked active as the head says.
    async fn version_of(
        &self,
        c: &impl GenericClient,
        name: &str,
        version: i32,
    ) -> StoreResult<PluginVersion> {
        let row = c
            .query_opt(
                &format!(
                    "SELECT {VERSION_COLUMNS} FROM plugins p \
                     LEFT JOIN plugin_heads h ON h.name = p.name \
                     WHERE p.name = $1 AND p.version = $2"
                ),
                &[&name, &version],
            )
            .await
            .map_err(|e| self.db("read plugin version", e))?
            .ok_or_else(|| StoreError::PluginNotFound(name.to_owned()))?;
        Ok(version_from_row(&row))
    }

    /// The queues naming `name` as their handler and the routes naming it as their filter.
    async fn users(
        &self,
        c: &impl GenericClient,
        name: &str,
    ) -> StoreResult<(Vec<String>, Vec<RouteId>)> {
        let queues = c
            .query(
                "SELECT name FROM queues WHERE config->>'handler' = $1 ORDER BY name",
                &[&name],
            )
            .await
            .map_err(|e| self.db("find queues using a plugin", e))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let routes = c
            .query(
                "SELECT id FROM routes WHERE filter = $1 ORDER BY id",
                &[&name],
            )
            .await
            .map_err(|e| self.db("find routes using a plugin", e))?
            .iter()
            .map(|r| r.get(0))
            .collect();
        Ok((queues, routes))
    }

    async fn check_users(
        &self,
        c: &impl GenericClient,
        name: &str,
        version: &str,
        world: &str,
    ) -> StoreResult<()> {
        let (queues, routes) = self.users(c, name).await?;
        check_users_world(name, version, world, &queues, &routes)
    }

    /// Makes `to` the active version of `name` and records the change in the history.
    async fn set_active(
        &self,
        c: &impl GenericClient,
        name: &str,
        from: Option<i32>,
        to: i32,
        action: PluginAction,
        actor: Option<&str>,
    ) -> StoreResult<()> {
        c.execute(
            "INSERT INTO plugin_heads (name, active_version) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET active_version = EXCLUDED.active_version",
            &[&name, &to],
        )
        .await
        .map_err(|e| self.db("activate plugin version", e))?;
        c.execute(
            "INSERT INTO plugin_history (name, at, actor, action, from_version, to_version) \
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[&name, &now_ms(), &actor, &action.as_str(), &from, &to],
        )
        .await
        .map_err(|e| self.db("record plugin activation", e))?;
        Ok(())
    }
}

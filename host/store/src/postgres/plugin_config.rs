//! A plugin's configuration, secrets and grants on PostgreSQL (`plugin_config`,
//! `plugin_grants`). Mirrors `sqlite::plugin_config_ops`. Error messages name keys, never
//! values: a secret must not reach a log or a response through an error.

use deadpool_postgres::GenericClient;
use spool_model::plugin_settings::{MAX_CONFIG_KEYS, validate_config_change};
use spool_model::{ConfigChange, PluginGrants, PluginSettings, validate_name};

use super::PgStore;
use crate::{StoreError, StoreResult};

impl PgStore {
    /// See `Store::plugin_settings`.
    pub async fn plugin_settings(&self, plugin: &str) -> StoreResult<PluginSettings> {
        validate_name("plugin", plugin).map_err(StoreError::Invalid)?;
        let conn = self.conn().await?;
        self.read_settings(&conn, plugin).await
    }

    /// See `Store::update_plugin_config`: in order, in one transaction (a key set twice keeps
    /// the last); over the key limit nothing changes.
    pub async fn update_plugin_config(
        &self,
        plugin: &str,
        changes: Vec<ConfigChange>,
    ) -> StoreResult<PluginSettings> {
        validate_name("plugin", plugin).map_err(StoreError::Invalid)?;
        for change in &changes {
            validate_config_change(change)
                .map_err(|m| StoreError::Invalid(format!("plugin {plugin:?}: {m}")))?;
        }
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(|e| self.db("begin", e))?;
        // One writer per plugin at a time, so the key limit holds across hosts.
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('spool-config:' || $1, 0))",
            &[&plugin],
        )
        .await
        .map_err(|e| self.db("take the config lock", e))?;
        for change in &changes {
            let done = match &change.value {
                Some(value) => {
                    tx.execute(
                        "INSERT INTO plugin_config (plugin, key, value, secret) \
                         VALUES ($1, $2, $3, $4) ON CONFLICT (plugin, key) DO UPDATE SET \
                         value = EXCLUDED.value, secret = EXCLUDED.secret",
                        &[&plugin, &change.key, value, &change.secret],
                    )
                    .await
                }
                None => {
                    tx.execute(
                        "DELETE FROM plugin_config WHERE plugin = $1 AND key = $2",
                        &[&plugin, &change.key],
                    )
                    .await
                }
            };
            done.map_err(|e| self.db(&format!("change config key {:?}", change.key), e))?;
        }
        let settings = self.read_settings(&tx, plugin).await?;
        let keys = settings.values.len() + settings.secrets.len();
        if keys > MAX_CONFIG_KEYS {
            return Err(StoreError::Invalid(format!(
                "plugin {plugin:?} would have {keys} configuration keys, over the limit of \
                 {MAX_CONFIG_KEYS}; remove some first"
            )));
        }
        tx.commit().await.map_err(|e| self.db("commit", e))?;
        Ok(settings)
    }

    /// See `Store::put_plugin_grants`: replaces them; empty grants remove them.
    pub async fn put_plugin_grants(
        &self,
        plugin: &str,
        grants: PluginGrants,
    ) -> StoreResult<PluginSettings> {
        validate_name("plugin", plugin).map_err(StoreError::Invalid)?;
        let conn = self.conn().await?;
        if grants == PluginGrants::default() {
            conn.execute("DELETE FROM plugin_grants WHERE plugin = $1", &[&plugin])
                .await
                .map_err(|e| self.db("delete plugin grants", e))?;
        } else {
            let json = serde_json::to_value(&grants)
                .map_err(|e| StoreError::Database(format!("cannot encode grants: {e}")))?;
            conn.execute(
                "INSERT INTO plugin_grants (plugin, grants) VALUES ($1, $2) \
                 ON CONFLICT (plugin) DO UPDATE SET grants = EXCLUDED.grants",
                &[&plugin, &json],
            )
            .await
            .map_err(|e| self.db("set plugin grants", e))?;
        }
        self.read_settings(&conn, plugin).await
    }

    async fn read_settings(
        &self,
        c: &impl GenericClient,
        plugin: &str,
    ) -> StoreResult<PluginSettings> {
        let mut settings = PluginSettings::default();
        for row in c
            .query(
                "SELECT key, value, secret FROM plugin_config WHERE plugin = $1",
                &[&plugin],
            )
            .await
            .map_err(|e| self.db("read plugin config", e))?
        {
            let (key, value, secret): (String, String, bool) = (row.get(0), row.get(1), row.get(2));
            if secret {
                settings.secrets.insert(key, value);
            } else {
                settings.values.insert(key, value);
            }
        }
        if let Some(row) = c
            .query_opt(
                "SELECT grants FROM plugin_grants WHERE plugin = $1",
                &[&plugin],
            )
            .await
            .map_err(|e| self.db("read plugin grants", e))?
        {
            settings.grants = serde_json::from_value(row.get(0)).map_err(|e| {
                StoreError::Database(format!(
                    "plugin {plugin:?}: stored grants are unreadable: {e}"
                ))
            })?;
        }
        Ok(settings)
    }
}

//! A plugin's configuration, secrets and grants (`plugin_config`, `plugin_grants`).
//!
//! Error messages here name keys, never values: a secret must not reach a log or a response
//! through an error.

use rusqlite::{Connection, OptionalExtension, params};

use super::rows::Ctx;
use super::writer::Tx;
use crate::{StoreError, StoreResult};
use spool_model::plugin_settings::{MAX_CONFIG_KEYS, validate_config_change};
use spool_model::{ConfigChange, PluginGrants, PluginSettings, validate_name};

pub(super) fn read_settings(conn: &Connection, plugin: &str) -> StoreResult<PluginSettings> {
    validate_name("plugin", plugin).map_err(StoreError::Invalid)?;
    let mut settings = PluginSettings::default();
    let mut stmt = conn
        .prepare_cached("SELECT key, value, secret FROM plugin_config WHERE plugin = ?1")
        .ctx("prepare plugin config read")?;
    let rows = stmt
        .query_map(params![plugin], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, bool>(2)?,
            ))
        })
        .ctx("read plugin config")?;
    for row in rows {
        let (key, value, secret) = row.ctx("read plugin config row")?;
        if secret {
            settings.secrets.insert(key, value);
        } else {
            settings.values.insert(key, value);
        }
    }
    let grants: Option<String> = conn
        .prepare_cached("SELECT grants FROM plugin_grants WHERE plugin = ?1")
        .ctx("prepare plugin grants read")?
        .query_row(params![plugin], |r| r.get(0))
        .optional()
        .ctx("read plugin grants")?;
    if let Some(text) = grants {
        settings.grants = serde_json::from_str(&text).map_err(|e| {
            StoreError::Database(format!(
                "plugin {plugin:?}: stored grants are unreadable: {e}"
            ))
        })?;
    }
    Ok(settings)
}

/// Applies `changes` in order (a key set twice keeps the last) and returns the result.
pub(super) fn update_config(
    tx: &mut Tx<'_>,
    plugin: &str,
    changes: &[ConfigChange],
) -> StoreResult<PluginSettings> {
    validate_name("plugin", plugin).map_err(StoreError::Invalid)?;
    let conn = tx.conn;
    for change in changes {
        validate_config_change(change)
            .map_err(|m| StoreError::Invalid(format!("plugin {plugin:?}: {m}")))?;
        match &change.value {
            Some(value) => conn
                .prepare_cached(
                    "INSERT INTO plugin_config (plugin, key, value, secret) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT (plugin, key) DO UPDATE SET value = excluded.value, \
                     secret = excluded.secret",
                )
                .ctx("prepare plugin config set")?
                .execute(params![plugin, change.key, value, change.secret])
                .ctx("set plugin config"),
            None => conn
                .prepare_cached("DELETE FROM plugin_config WHERE plugin = ?1 AND key = ?2")
                .ctx("prepare plugin config delete")?
                .execute(params![plugin, change.key])
                .ctx("delete plugin config"),
        }?;
    }
    let settings = read_settings(conn, plugin)?;
    let keys = settings.values.len() + settings.secrets.len();
    if keys > MAX_CONFIG_KEYS {
        // The writer rolls back the whole operation on an error.
        return Err(StoreError::Invalid(format!(
            "plugin {plugin:?} would have {keys} configuration keys, over the limit of \
             {MAX_CONFIG_KEYS}; remove some first"
        )));
    }
    Ok(settings)
}

/// Replaces the grants set through the API (an empty `grants` removes them).
pub(super) fn put_grants(
    tx: &mut Tx<'_>,
    plugin: &str,
    grants: &PluginGrants,
) -> StoreResult<PluginSettings> {
    validate_name("plugin", plugin).map_err(StoreError::Invalid)?;
    let conn = tx.conn;
    if *grants == PluginGrants::default() {
        conn.prepare_cached("DELETE FROM plugin_grants WHERE plugin = ?1")
            .ctx("prepare plugin grants delete")?
            .execute(params![plugin])
            .ctx("delete plugin grants")?;
    } else {
        let text = serde_json::to_string(grants)
            .map_err(|e| StoreError::Database(format!("cannot encode grants: {e}")))?;
        conn.prepare_cached(
            "INSERT INTO plugin_grants (plugin, grants) VALUES (?1, ?2) \
             ON CONFLICT (plugin) DO UPDATE SET grants = excluded.grants",
        )
        .ctx("prepare plugin grants set")?
        .execute(params![plugin, text])
        .ctx("set plugin grants")?;
    }
    read_settings(conn, plugin)
}

/// Removes a deleted plugin's configuration, secrets and grants.
pub(super) fn delete_settings(conn: &Connection, plugin: &str) -> StoreResult<()> {
    conn.prepare_cached("DELETE FROM plugin_config WHERE plugin = ?1")
        .ctx("prepare plugin config purge")?
        .execute(params![plugin])
        .ctx("delete plugin config")?;
    conn.prepare_cached("DELETE FROM plugin_grants WHERE plugin = ?1")
        .ctx("prepare plugin grants purge")?
        .execute(params![plugin])
        .ctx("delete plugin grants")?;
    Ok(())
}

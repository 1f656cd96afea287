//! A plugin's key-value data on PostgreSQL, shared by every host. A set under quota takes a
//! per-plugin advisory lock, so two hosts' sets cannot both pass the same last free slot.

use super::PgStore;
use crate::kv_rules::validate_kv;
use crate::{StoreError, StoreResult};

impl PgStore {
    /// See `Store::kv_get`.
    pub async fn kv_get(&self, plugin: &str, key: &str) -> StoreResult<Option<Vec<u8>>> {
        validate_kv(plugin, key, None)?;
        let conn = self.conn().await?;
        Ok(conn
            .query_opt(
                "SELECT value FROM plugin_kv WHERE plugin = $1 AND key = $2",
                &[&plugin, &key],
            )
            .await
            .map_err(|e| self.db("read kv entry", e))?
            .map(|r| r.get(0)))
    }

    /// See `Store::kv_set`.
    pub async fn kv_set(&self, plugin: &str, key: &str, value: Vec<u8>) -> StoreResult<()> {
        validate_kv(plugin, key, Some(&value))?;
        let conn = self.conn().await?;
        conn.execute(UPSERT, &[&plugin, &key, &value])
            .await
            .map_err(|e| self.db("set kv entry", e))?;
        Ok(())
    }

    /// See `Store::kv_delete`.
    pub async fn kv_delete(&self, plugin: &str, key: &str) -> StoreResult<()> {
        validate_kv(plugin, key, None)?;
        let conn = self.conn().await?;
        conn.execute(
            "DELETE FROM plugin_kv WHERE plugin = $1 AND key = $2",
            &[&plugin, &key],
        )
        .await
        .map_err(|e| self.db("delete kv entry", e))?;
        Ok(())
    }

    /// See `Store::kv_set_within`: the other keys are counted with this one replaced, so
    /// overwriting a key with a value of the same size always fits.
    pub async fn kv_set_within(
        &self,
        plugin: &str,
        key: &str,
        value: Vec<u8>,
        max_keys: u64,
        max_bytes: u64,
    ) -> StoreResult<()> {
        validate_kv(plugin, key, Some(&value))?;
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(|e| self.db("begin", e))?;
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('spool-kv:' || $1, 0))",
            &[&plugin],
        )
        .await
        .map_err(|e| self.db("take the kv lock", e))?;
        let row = tx
            .query_one(
                "SELECT count(*), COALESCE(sum(octet_length(key) + octet_length(value)), 0)::BIGINT \
                 FROM plugin_kv WHERE plugin = $1 AND key <> $2",
                &[&plugin, &key],
            )
            .await
            .map_err(|e| self.db("read kv usage", e))?;
        let (others, other_bytes): (i64, i64) = (row.get(0), row.get(1));
        let keys = u64::try_from(others).unwrap_or(0) + 1;
        let bytes = u64::try_from(other_bytes).unwrap_or(0) + (key.len() + value.len()) as u64;
        if keys > max_keys {
            return Err(StoreError::KvQuota(format!(
                "plugin {plugin:?} may hold at most {max_keys} keys (kv_max_keys); delete some \
                 or raise the grant"
            )));
        }
        if bytes > max_bytes {
            return Err(StoreError::KvQuota(format!(
                "plugin {plugin:?} may hold at most {max_bytes} bytes of keys and values \
                 (kv_max_bytes), this set would make {bytes}; delete some or raise the grant"
            )));
        }
        tx.execute(UPSERT, &[&plugin, &key, &value])
            .await
            .map_err(|e| self.db("set kv entry", e))?;
        tx.commit().await.map_err(|e| self.db("commit", e))
    }
}

const UPSERT: &str = "INSERT INTO plugin_kv (plugin, key, value) VALUES ($1, $2, $3) \
     ON CONFLICT (plugin, key) DO UPDATE SET value = EXCLUDED.value";

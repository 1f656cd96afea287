//! Lease extension and id reservation on PostgreSQL.

use spool_model::{MessageId, now_ms};

use super::PgStore;
use super::enqueue::to_i64;
use crate::StoreResult;

impl PgStore {
    /// See `Store::extend_lease`: only the live lease of `attempt` is extended.
    pub async fn extend_lease(
        &self,
        id: MessageId,
        attempt: u32,
        lease_ms: u64,
    ) -> StoreResult<bool> {
        let until = now_ms().saturating_add(to_i64(lease_ms));
        let attempt = i32::try_from(attempt).unwrap_or(i32::MAX);
        let conn = self.conn().await?;
        let n = conn
            .execute(
                "UPDATE messages SET lease_expires_at = $3 \
                 WHERE id = $1 AND state = 2 AND attempts = $2",
                &[&id, &attempt, &until],
            )
            .await
            .map_err(|e| self.db("extend lease", e))?;
        Ok(n == 1)
    }

    /// See `Store::reserve_ids`. Not one consecutive run as the SQLite store gives: other hosts
    /// draw from the same sequence at the same time, and PostgreSQL cannot take a run of a
    /// sequence atomically (a `setval` after a `nextval` races with every other `nextval`; a
    /// test caught exactly that). So the ids come one by one, each unique, in order.
    pub async fn reserve_ids(&self, n: u32) -> StoreResult<Vec<MessageId>> {
        let n = i32::try_from(n.max(1)).unwrap_or(i32::MAX);
        let conn = self.conn().await?;
        Ok(conn
            .query(super::enqueue::DRAW_IDS, &[&n])
            .await
            .map_err(|e| self.db("reserve message ids", e))?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }
}

//! Lease extension and id reservation on PostgreSQL.

use spool_model::{MessageId, now_ms};

use super::PgStore;
use super::enqueue::to_i64;
use crate::StoreResult;

/// The advisory lock that makes an id reservation one consecutive run of the sequence.
const RESERVE_LOCK: i64 = 0x73_70_6f_6f_6c_00_00_02;

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

    /// See `Store::reserve_ids`: `n` consecutive ids, the first returned. Other hosts' inserts
    /// draw from the same sequence one at a time, so the run is taken in one step (`setval`
    /// past it) while reservations wait for each other on an advisory lock; an insert that
    /// drew its id in between only makes the run start later.
    pub async fn reserve_ids(&self, n: u32) -> StoreResult<MessageId> {
        let n = i64::from(n.max(1));
        let mut conn = self.conn().await?;
        let tx = conn.transaction().await.map_err(|e| self.db("begin", e))?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&RESERVE_LOCK])
            .await
            .map_err(|e| self.db("take the id lock", e))?;
        let last: i64 = tx
            .query_one(
                "SELECT setval('messages_id_seq', nextval('messages_id_seq') + $1 - 1)",
                &[&n],
            )
            .await
            .map_err(|e| self.db("reserve message ids", e))?
            .get(0);
        tx.commit().await.map_err(|e| self.db("commit", e))?;
        Ok(last - n + 1)
    }
}

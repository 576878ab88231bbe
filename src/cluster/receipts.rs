//! `[cluster]`: what providers' webhooks leave behind, shared by every node,
//! so that a duplicate or a stale event sent to another node is still
//! recognised: idempotency keys and request randoms (`SET NX`, claimed
//! atomically, so two nodes racing on the same key apply it once), and JaaS
//! sessions' ordering marks. They expire after a day, as the single node's
//! do in SQLite.

use std::sync::Arc;
use std::time::Duration;

use super::{Cluster, ClusterError, wire};

/// How long a key or mark is kept (the store's `RECEIPT_TTL_MS`).
const KEEP: Duration = Duration::from_secs(24 * 3600);

/// Raise a JaaS session's mark to ARGV[1] (ms) if it is higher; KEYS[1] the mark.
const RAISE_MARK: &str = r"
local mark = tonumber(redis.call('GET', KEYS[1]) or '-1')
local at = tonumber(ARGV[1])
if at > mark then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return 0
";

impl Cluster {
    /// Claims `provider`'s key for this delivery: `true` the first time on
    /// any node, `false` after that (a duplicate).
    pub async fn claim_receipt(
        self: &Arc<Self>,
        provider: &str,
        key: &str,
    ) -> Result<bool, ClusterError> {
        let key = wire::receipt_key(provider, key);
        self.on_io(move |this, mut conn| async move {
            let set: Option<String> = this
                .timed(
                    redis::cmd("SET")
                        .arg(&key)
                        .arg(&this.node_id)
                        .arg("NX")
                        .arg("PX")
                        .arg(KEEP.as_millis() as u64)
                        .query_async(&mut conn),
                )
                .await?;
            Ok(set.is_some())
        })
        .await
    }

    /// Gives a claimed key back: its delivery was not applied, and the
    /// provider's retry must be.
    pub async fn release_receipt(
        self: &Arc<Self>,
        provider: &str,
        key: &str,
    ) -> Result<(), ClusterError> {
        let key = wire::receipt_key(provider, key);
        self.on_io(move |this, mut conn| async move {
            let _: i64 = this
                .timed(redis::cmd("DEL").arg(&key).query_async(&mut conn))
                .await?;
            Ok(())
        })
        .await
    }

    /// A JaaS session's ordering mark: the newest event timestamp applied, if any.
    pub async fn jaas_mark(self: &Arc<Self>, session: &str) -> Result<Option<i64>, ClusterError> {
        let key = wire::jaas_mark_key(session);
        self.on_io(move |this, mut conn| async move {
            let mark: Option<i64> = this
                .timed(redis::cmd("GET").arg(&key).query_async(&mut conn))
                .await?;
            Ok(mark)
        })
        .await
    }

    /// Raises a JaaS session's mark to `at` (never lowers it).
    pub async fn raise_jaas_mark(
        self: &Arc<Self>,
        session: &str,
        at: i64,
    ) -> Result<(), ClusterError> {
        let key = wire::jaas_mark_key(session);
        self.on_io(move |this, mut conn| async move {
            let _: i64 = this
                .timed(
                    redis::Script::new(RAISE_MARK)
                        .key(key)
                        .arg(at)
                        .arg(KEEP.as_millis() as u64)
                        .invoke_async(&mut conn),
                )
                .await?;
            Ok(())
        })
        .await
    }
}

//! `[cluster]`: what providers' webhooks leave behind, shared by every node,
//! so that a duplicate or a stale event sent to another node is still
//! recognised: idempotency keys and request randoms (`SET NX`, claimed
//! atomically, so two nodes racing on the same key apply it once), and JaaS
//! sessions' and LiveKit egresses' ordering marks. They expire after a day,
//! as the single node's do in SQLite.

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

/// Admit a LiveKit egress event if it is newer than the egress's mark, and
/// raise the mark to it. KEYS[1] the mark; ARGV: updatedAt (ns, decimal, no
/// sign), status rank, final (0/1), TTL ms. The timestamps are compared as
/// decimal strings: nanoseconds since 1970 do not fit Lua's doubles.
/// Returns `{1, previous mark or ''}` when admitted, `{0, mark}` when stale.
const ADMIT_EGRESS_EVENT: &str = r"
local function cmp(a, b)
  if #a ~= #b then return #a < #b and -1 or 1 end
  if a == b then return 0 end
  return a < b and -1 or 1
end
local cur = redis.call('GET', KEYS[1])
if cur then
  local at, rank, final = string.match(cur, '^(%d+) (%d+) (%d)$')
  local r, nr = tonumber(rank), tonumber(ARGV[2])
  local c = cmp(ARGV[1], at)
  if final == '1' or nr < r or c < 0 or (c == 0 and nr <= r) then return {0, cur} end
end
redis.call('SET', KEYS[1], ARGV[1] .. ' ' .. ARGV[2] .. ' ' .. ARGV[3], 'PX', ARGV[4])
return {1, cur or ''}
";

/// Put a LiveKit egress's mark back to what it was before an admission whose
/// event was not applied, unless another event moved it since. KEYS[1] the
/// mark; ARGV: the admitted mark, the previous one ('' for none), TTL ms.
const READMIT_EGRESS_EVENT: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 1
";

/// Forget a Nextcloud pending start, only if it is still ARGV[1] (`''`: any).
/// KEYS[1] the pending start.
const FORGET_PENDING: &str = r"
local cur = redis.call('GET', KEYS[1])
if not cur then return 0 end
if ARGV[1] == '' or string.sub(cur, 1, #ARGV[1] + 1) == ARGV[1] .. ' ' then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
";

/// A LiveKit egress event admitted by [`Cluster::admit_egress_event`]: what
/// [`Cluster::readmit_egress_event`] needs to take it back.
#[derive(Debug, Clone)]
pub struct EgressAdmission {
    egress: String,
    admitted: String,
    previous: String,
}

impl Cluster {
    /// Remembers the recording started for a Nextcloud room token (and its
    /// owner) until its file arrives, for every node; a day at most.
    pub async fn remember_nextcloud_start(
        self: &Arc<Self>,
        token: &str,
        recording_id: &str,
        owner: &str,
    ) -> Result<(), ClusterError> {
        let key = wire::nextcloud_pending_key(token);
        let value = format!("{recording_id} {owner}");
        self.on_io(move |this, mut conn| async move {
            let _: () = this
                .timed(
                    redis::cmd("SET")
                        .arg(&key)
                        .arg(value)
                        .arg("PX")
                        .arg(KEEP.as_millis() as u64)
                        .query_async(&mut conn),
                )
                .await?;
            Ok(())
        })
        .await
    }

    /// The recording started for a Nextcloud room token whose file has not
    /// arrived, and its owner, if any.
    pub async fn nextcloud_start(
        self: &Arc<Self>,
        token: &str,
    ) -> Result<Option<(String, String)>, ClusterError> {
        let key = wire::nextcloud_pending_key(token);
        self.on_io(move |this, mut conn| async move {
            let value: Option<String> = this
                .timed(redis::cmd("GET").arg(&key).query_async(&mut conn))
                .await?;
            Ok(value.and_then(|v| {
                let (id, owner) = v.split_once(' ')?;
                Some((id.to_owned(), owner.to_owned()))
            }))
        })
        .await
    }

    /// Forgets a Nextcloud room token's pending start: only if it is still
    /// `recording_id`'s, or whichever it is with `None`.
    pub async fn forget_nextcloud_start(
        self: &Arc<Self>,
        token: &str,
        recording_id: Option<&str>,
    ) -> Result<(), ClusterError> {
        let key = wire::nextcloud_pending_key(token);
        let only = recording_id.unwrap_or_default().to_owned();
        self.on_io(move |this, mut conn| async move {
            let _: i64 = this
                .timed(
                    redis::Script::new(FORGET_PENDING)
                        .key(key)
                        .arg(only)
                        .invoke_async(&mut conn),
                )
                .await?;
            Ok(())
        })
        .await
    }

    /// Admits a LiveKit egress event on every node: `None` when an event as
    /// new or newer was applied before (anywhere), or the egress already
    /// reached a final status. Events are ordered by `updated_at`, then by
    /// how far along the status is (`rank`); a lower rank is never admitted.
    pub async fn admit_egress_event(
        self: &Arc<Self>,
        egress: &str,
        updated_at: i64,
        rank: u8,
        is_final: bool,
    ) -> Result<Option<EgressAdmission>, ClusterError> {
        let key = wire::livekit_mark_key(egress);
        let admitted = format!("{} {rank} {}", updated_at.max(0), u8::from(is_final));
        let egress = egress.to_owned();
        self.on_io(move |this, mut conn| async move {
            let (ok, previous): (i64, String) = this
                .timed(
                    redis::Script::new(ADMIT_EGRESS_EVENT)
                        .key(key)
                        .arg(updated_at.max(0))
                        .arg(rank)
                        .arg(u8::from(is_final))
                        .arg(KEEP.as_millis() as u64)
                        .invoke_async(&mut conn),
                )
                .await?;
            Ok((ok == 1).then_some(EgressAdmission {
                egress,
                admitted,
                previous,
            }))
        })
        .await
    }

    /// Takes back an admission whose event could not be applied, so that
    /// LiveKit's retry is admitted (unless a newer event was meanwhile).
    pub async fn readmit_egress_event(
        self: &Arc<Self>,
        admission: EgressAdmission,
    ) -> Result<(), ClusterError> {
        let key = wire::livekit_mark_key(&admission.egress);
        self.on_io(move |this, mut conn| async move {
            let _: i64 = this
                .timed(
                    redis::Script::new(READMIT_EGRESS_EVENT)
                        .key(key)
                        .arg(admission.admitted)
                        .arg(admission.previous)
                        .arg(KEEP.as_millis() as u64)
                        .invoke_async(&mut conn),
                )
                .await?;
            Ok(())
        })
        .await
    }

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

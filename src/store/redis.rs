//! The catalog and what hangs on it, in Redis (`[cluster]`, SPEC §7): what
//! the single node keeps in SQLite's `recordings`, `recording_facts`,
//! `recording_owners`, `notification_settings` and `jaas_downloads`, shared
//! by every node so that a node is stateless and can be replaced.
//!
//! Every exchange is awaited on the cluster's own runtime (`Cluster::on_io`,
//! with the command timeout): no thread waits for Redis. A change that touches several keys is one Lua script, so it is
//! atomic; cataloguing or removing a recording writes its outbox rows
//! (webhooks, the owner's notification POST) in the same script, with the
//! outbox layout of [`wire::outbox_row_key`] and its neighbours. The keys
//! are built in [`wire`]; the scripts live here, beside the only code that
//! runs them.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use redis::Script;

use super::{NewDelivery, RecordingFacts, location_columns};
use crate::catalog_entry::{Location, Recording};
use crate::cluster::scripts::OUTBOX_WRITE_FN;
use crate::cluster::{Cluster, ClusterError, wire};

mod import;

/// How long a JaaS download's idempotency key is kept (as the single node's
/// `RECEIPT_TTL_MS`).
const RECEIPT_TTL_MS: i64 = super::RECEIPT_TTL_MS;

/// Catalogue a recording with its outbox rows, unless its id is taken.
/// KEYS: outbox seq, due, held; the recording, the catalog by creation, the
/// room's set. ARGV: the rows' header (now, node id, row prefix, wake
/// channel: see `outbox_write` in [`OUTBOX_WRITE_FN`]), the creation member, the id,
/// the number of field pairs, the pairs, then the rows (six ARGV each).
/// Returns 1 if catalogued, 0 if the id was taken (nothing written).
static INSERT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{OUTBOX_WRITE_FN}
if redis.call('EXISTS', KEYS[4]) == 1 then return 0 end
local npairs = tonumber(ARGV[7])
local fields = {{}}
for i = 1, npairs * 2 do fields[i] = ARGV[7 + i] end
redis.call('HSET', KEYS[4], unpack(fields))
redis.call('ZADD', KEYS[5], 0, ARGV[5])
redis.call('SADD', KEYS[6], ARGV[6])
local first = 8 + npairs * 2
outbox_write(KEYS[1], KEYS[2], KEYS[3], ARGV[3], ARGV[4], ARGV[1], ARGV[2], first, (#ARGV - first + 1) / 6)
return 1
"
    ))
});

/// Remove a recording with its outbox rows. KEYS: as [`INSERT`]. ARGV:
/// (rows' header), the creation member, the id, then the rows. Returns 1
/// if removed, 0 if it was gone already (nothing written).
static DELETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{OUTBOX_WRITE_FN}
if redis.call('DEL', KEYS[4]) == 0 then return 0 end
redis.call('ZREM', KEYS[5], ARGV[5])
redis.call('SREM', KEYS[6], ARGV[6])
outbox_write(KEYS[1], KEYS[2], KEYS[3], ARGV[3], ARGV[4], ARGV[1], ARGV[2], 7, (#ARGV - 6) / 6)
return 1
"
    ))
});

/// Move a recording's file, only from where it is. KEYS: the recording.
/// ARGV: from kind, from location, to kind, to location. Returns 1 if moved.
static MOVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local at = redis.call('HMGET', KEYS[1], 'location_kind', 'location')
if at[1] ~= ARGV[1] or at[2] ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'location_kind', ARGV[3], 'location', ARGV[4])
return 1
",
    )
});

/// Set (ARGV[1]) or lift (`''`) a legal hold. KEYS: the recording. Returns
/// 1, or 0 if there is no such recording.
static KEEP_UNTIL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if ARGV[1] == '' then
  redis.call('HDEL', KEYS[1], 'keep_until')
else
  redis.call('HSET', KEYS[1], 'keep_until', ARGV[1])
end
return 1
",
    )
});

/// The ids catalogued before ARGV[1] and not held at ARGV[2], oldest first,
/// at most ARGV[3]. KEYS: the catalog by creation. ARGV[4]: the prefix of a
/// recording's key.
static EXPIRED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local out = {}
local limit = tonumber(ARGV[3])
if limit <= 0 then return out end
for _, member in ipairs(redis.call('ZRANGEBYLEX', KEYS[1], '-', '(' .. ARGV[1])) do
  local id = string.sub(member, string.find(member, ' ', 1, true) + 1)
  local hold = redis.call('HGET', ARGV[4] .. id, 'keep_until')
  if (not hold) or hold <= ARGV[2] then
    table.insert(out, id)
    if #out >= limit then break end
  end
end
return out
",
    )
});

/// A recording started: its start and first count, unless noted already.
/// KEYS: its facts. ARGV: started at, participants present.
static STARTED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if redis.call('HSETNX', KEYS[1], 'started_at', ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], 'peak', ARGV[2])
end
return 0
",
    )
});

/// Raise a recording's peak to ARGV[1] (never lower it; nothing if its
/// start was not noted). KEYS: its facts.
static PEAK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local peak = redis.call('HGET', KEYS[1], 'peak')
if peak and tonumber(ARGV[1]) > tonumber(peak) then
  redis.call('HSET', KEYS[1], 'peak', ARGV[1])
end
return 0
",
    )
});

/// Journal a JaaS download with the idempotency key that asked for it.
/// KEYS: the jobs, their order, the key. ARGV: recording id, job JSON,
/// accepted at (ms), whether there is a key (`1`/`0`), the key's lifetime
/// (ms). Returns 1, or 0 if the key was recorded before (nothing written).
static JAAS_ACCEPTED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
if ARGV[4] == '1' and not redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[5]) then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return 1
",
    )
});

/// The journalled JaaS downloads, oldest first, flattened `id, job, …`.
/// KEYS: the jobs, their order.
static JAAS_DOWNLOADS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local out = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local job = redis.call('HGET', KEYS[1], id)
  if job then
    table.insert(out, id)
    table.insert(out, job)
  end
end
return out
",
    )
});

/// The Redis half of [`super::CatalogStore`]: the same calls as the SQLite
/// [`super::Store`]'s of the same names, with the same meaning.
#[derive(Clone)]
pub struct RedisCatalog {
    cluster: Arc<Cluster>,
}

/// The member of [`wire::catalog_created_key`] for a recording.
fn created_member(created_at: &str, id: &str) -> String {
    format!("{created_at} {id}")
}

/// Milliseconds since the Unix epoch (an outbox row's `created_ms` and due time).
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A recording read back from its hash; `None` for a missing (empty) hash.
fn recording_from_hash(mut fields: HashMap<String, String>) -> Option<Recording> {
    let mut take = |name: &str| fields.remove(name);
    let id = take("id")?;
    let kind = take("location_kind").unwrap_or_default();
    let location = take("location").unwrap_or_default();
    Some(Recording {
        id,
        room: take("room").unwrap_or_default(),
        name: take("name").unwrap_or_default(),
        duration_s: take("duration_s")
            .and_then(|d| d.parse().ok())
            .unwrap_or(0.0),
        size_bytes: take("size_bytes").and_then(|s| s.parse().ok()).unwrap_or(0),
        location: match kind.as_str() {
            "file" => Location::File(location.into()),
            "object" => Location::Object { key: location },
            _ => Location::External(location),
        },
        provider: take("provider").unwrap_or_default(),
        created_at: take("created_at").unwrap_or_default(),
        // Written as a JSON array; unreadable means none known (as in SQLite).
        participants: take("participants")
            .and_then(|p| serde_json::from_str(&p).ok())
            .unwrap_or_default(),
        initiator: take("initiator"),
    })
}

/// A recording as its hash's field pairs (`initiator` only when known).
fn recording_fields(recording: &Recording) -> Vec<(&'static str, String)> {
    let (kind, location) = location_columns(&recording.location);
    let mut fields = vec![
        ("id", recording.id.clone()),
        ("room", recording.room.clone()),
        ("name", recording.name.clone()),
        ("duration_s", recording.duration_s.to_string()),
        ("size_bytes", recording.size_bytes.to_string()),
        ("location_kind", kind.to_owned()),
        ("location", location),
        ("provider", recording.provider.clone()),
        ("created_at", recording.created_at.clone()),
        (
            "participants",
            serde_json::to_string(&recording.participants).unwrap_or_else(|_| "[]".into()),
        ),
    ];
    if let Some(initiator) = &recording.initiator {
        fields.push(("initiator", initiator.clone()));
    }
    fields
}

impl RedisCatalog {
    /// The catalog in `cluster`'s Redis.
    pub fn new(cluster: Arc<Cluster>) -> Self {
        Self { cluster }
    }

    /// Runs `script` with `keys` and `args` (strings), on the cluster's runtime.
    async fn run<T: redis::FromRedisValue + Send + 'static>(
        &self,
        script: &'static LazyLock<Script>,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<T, ClusterError> {
        self.cluster
            .on_io(move |this, mut conn| async move {
                let mut invocation = script.prepare_invoke();
                for key in keys {
                    invocation.key(key);
                }
                for arg in args {
                    invocation.arg(arg);
                }
                this.timed(invocation.invoke_async(&mut conn)).await
            })
            .await
    }

    /// Runs one command on the cluster's runtime.
    async fn command<T: redis::FromRedisValue + Send + 'static>(
        &self,
        command: redis::Cmd,
    ) -> Result<T, ClusterError> {
        self.cluster
            .on_io(move |this, mut conn| async move {
                this.timed(command.query_async(&mut conn)).await
            })
            .await
    }

    /// The outbox keys and the rows' header ARGV, then the rows' ARGV.
    fn outbox_parts(&self, deliveries: &[NewDelivery]) -> (Vec<String>, Vec<String>, Vec<String>) {
        let keys = vec![
            wire::outbox_seq_key(),
            wire::outbox_due_key(),
            wire::outbox_held_key(),
        ];
        let header = vec![
            now_ms().to_string(),
            self.cluster.node_id.clone(),
            wire::outbox_row_prefix(),
            wire::outbox_wake_channel(),
        ];
        let mut rows = Vec::with_capacity(deliveries.len() * 6);
        for d in deliveries {
            rows.extend([
                d.kind.as_str().to_owned(),
                if d.held { "1" } else { "0" }.to_owned(),
                d.message_id.clone(),
                d.endpoint.clone(),
                d.event_type.clone(),
                d.payload.clone(),
            ]);
        }
        (keys, header, rows)
    }

    /// See [`super::Store::insert_recording`].
    pub async fn insert_recording(
        &self,
        recording: &Recording,
        deliveries: &[NewDelivery],
    ) -> Result<bool, ClusterError> {
        self.insert(recording, None, deliveries).await
    }

    /// Catalogues a recording, on legal hold until `keep_until` if given,
    /// with its deliveries ([`INSERT`]); `false` (nothing written) if the
    /// id is taken.
    async fn insert(
        &self,
        recording: &Recording,
        keep_until: Option<&str>,
        deliveries: &[NewDelivery],
    ) -> Result<bool, ClusterError> {
        let (mut keys, mut args, rows) = self.outbox_parts(deliveries);
        keys.extend([
            wire::catalog_recording_key(&recording.id),
            wire::catalog_created_key(),
            wire::catalog_room_key(&recording.room),
        ]);
        let mut fields = recording_fields(recording);
        if let Some(keep_until) = keep_until {
            fields.push(("keep_until", keep_until.to_owned()));
        }
        args.extend([
            created_member(&recording.created_at, &recording.id),
            recording.id.clone(),
            fields.len().to_string(),
        ]);
        for (name, value) in fields {
            args.extend([name.to_owned(), value]);
        }
        args.extend(rows);
        let inserted: i64 = self.run(&INSERT, keys, args).await?;
        Ok(inserted == 1)
    }

    /// See [`super::Store::move_recording`].
    pub async fn move_recording(
        &self,
        id: &str,
        from: &Location,
        to: &Location,
    ) -> Result<bool, ClusterError> {
        let (from_kind, from_location) = location_columns(from);
        let (to_kind, to_location) = location_columns(to);
        let moved: i64 = self
            .run(
                &MOVE,
                vec![wire::catalog_recording_key(id)],
                vec![
                    from_kind.to_owned(),
                    from_location,
                    to_kind.to_owned(),
                    to_location,
                ],
            )
            .await?;
        Ok(moved == 1)
    }

    /// See [`super::Store::recording`].
    pub async fn recording(&self, id: &str) -> Result<Option<Recording>, ClusterError> {
        let fields: HashMap<String, String> = self
            .command(
                redis::cmd("HGETALL")
                    .arg(wire::catalog_recording_key(id))
                    .clone(),
            )
            .await?;
        Ok(recording_from_hash(fields))
    }

    /// See [`super::Store::recordings`]: newest first, then by id.
    pub async fn recordings(&self, room: Option<&str>) -> Result<Vec<Recording>, ClusterError> {
        let ids: Vec<String> = match room {
            Some(room) => {
                self.command(
                    redis::cmd("SMEMBERS")
                        .arg(wire::catalog_room_key(room))
                        .clone(),
                )
                .await?
            }
            None => {
                let members: Vec<String> = self
                    .command(
                        redis::cmd("ZRANGE")
                            .arg(wire::catalog_created_key())
                            .arg(0)
                            .arg(-1)
                            .clone(),
                    )
                    .await?;
                members
                    .into_iter()
                    .filter_map(|m| m.split_once(' ').map(|(_, id)| id.to_owned()))
                    .collect()
            }
        };
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let hashes: Vec<HashMap<String, String>> = self
            .cluster
            .on_io(move |this, mut conn| async move {
                let mut pipe = redis::pipe();
                for id in &ids {
                    pipe.cmd("HGETALL").arg(wire::catalog_recording_key(id));
                }
                this.timed(pipe.query_async(&mut conn)).await
            })
            .await?;
        let mut recordings: Vec<Recording> =
            hashes.into_iter().filter_map(recording_from_hash).collect();
        recordings.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        Ok(recordings)
    }

    /// See [`super::Store::delete_recording`]. The entry is read, the
    /// deliveries made from it, then entry and rows go in one script (which
    /// writes nothing if another node removed it meanwhile).
    pub async fn delete_recording(
        &self,
        id: &str,
        deliveries: impl FnOnce(&Recording) -> Vec<NewDelivery>,
    ) -> Result<Option<Recording>, ClusterError> {
        let Some(recording) = self.recording(id).await? else {
            return Ok(None);
        };
        let (mut keys, mut args, rows) = self.outbox_parts(&deliveries(&recording));
        keys.extend([
            wire::catalog_recording_key(&recording.id),
            wire::catalog_created_key(),
            wire::catalog_room_key(&recording.room),
        ]);
        args.extend([
            created_member(&recording.created_at, &recording.id),
            recording.id.clone(),
        ]);
        args.extend(rows);
        let removed: i64 = self.run(&DELETE, keys, args).await?;
        Ok((removed == 1).then_some(recording))
    }

    /// See [`super::Store::expired_recordings`].
    pub async fn expired_recordings(
        &self,
        created_before: &str,
        now: &str,
        limit: usize,
    ) -> Result<Vec<String>, ClusterError> {
        self.run(
            &EXPIRED,
            vec![wire::catalog_created_key()],
            vec![
                created_before.to_owned(),
                now.to_owned(),
                limit.to_string(),
                wire::catalog_recording_key(""),
            ],
        )
        .await
    }

    /// See [`super::Store::set_keep_until`].
    pub async fn set_keep_until(
        &self,
        id: &str,
        keep_until: Option<&str>,
    ) -> Result<bool, ClusterError> {
        let set: i64 = self
            .run(
                &KEEP_UNTIL,
                vec![wire::catalog_recording_key(id)],
                vec![keep_until.unwrap_or_default().to_owned()],
            )
            .await?;
        Ok(set == 1)
    }

    /// See [`super::Store::keep_until`].
    pub async fn keep_until(&self, id: &str) -> Result<Option<String>, ClusterError> {
        self.command(
            redis::cmd("HGET")
                .arg(wire::catalog_recording_key(id))
                .arg("keep_until")
                .clone(),
        )
        .await
    }

    /// See [`super::Store::recording_started`].
    pub async fn recording_started(
        &self,
        recording_id: &str,
        present: u32,
    ) -> Result<(), ClusterError> {
        let _: i64 = self
            .run(
                &STARTED,
                vec![wire::catalog_facts_key(recording_id)],
                vec![crate::protocol::now_rfc3339(), present.to_string()],
            )
            .await?;
        Ok(())
    }

    /// See [`super::Store::recording_peak`].
    pub async fn recording_peak(&self, recording_id: &str, peak: u32) -> Result<(), ClusterError> {
        let _: i64 = self
            .run(
                &PEAK,
                vec![wire::catalog_facts_key(recording_id)],
                vec![peak.to_string()],
            )
            .await?;
        Ok(())
    }

    /// See [`super::Store::recording_facts`].
    pub async fn recording_facts(
        &self,
        recording_id: &str,
    ) -> Result<Option<RecordingFacts>, ClusterError> {
        let (started_at, peak): (Option<String>, Option<u32>) = self
            .command(
                redis::cmd("HMGET")
                    .arg(wire::catalog_facts_key(recording_id))
                    .arg("started_at")
                    .arg("peak")
                    .clone(),
            )
            .await?;
        Ok(started_at.map(|started_at| RecordingFacts {
            started_at,
            peak_participants: peak.unwrap_or(0),
        }))
    }

    /// See [`super::Store::set_owner`]: the first owner stays.
    pub async fn set_owner(&self, recording_id: &str, owner: &str) -> Result<(), ClusterError> {
        self.import_owner(recording_id, owner).await.map(drop)
    }

    /// See [`super::Store::owner`].
    pub async fn owner(&self, recording_id: &str) -> Result<Option<String>, ClusterError> {
        self.command(redis::cmd("GET").arg(wire::owner_key(recording_id)).clone())
            .await
    }

    /// See [`super::Store::notification_settings`].
    pub async fn notification_settings(&self, owner: &str) -> Result<Option<String>, ClusterError> {
        self.command(redis::cmd("GET").arg(wire::notify_key(owner)).clone())
            .await
    }

    /// See [`super::Store::save_notification_settings`].
    pub async fn save_notification_settings(
        &self,
        owner: &str,
        settings: &str,
    ) -> Result<(), ClusterError> {
        let _: () = self
            .command(
                redis::cmd("SET")
                    .arg(wire::notify_key(owner))
                    .arg(settings)
                    .clone(),
            )
            .await?;
        Ok(())
    }

    /// See [`super::Store::jaas_download_accepted`]. The key is kept under
    /// [`wire::jaas_download_receipt_key`], apart from the webhook's own
    /// claim ([`wire::receipt_key`], taken before the event is applied).
    pub async fn jaas_download_accepted(
        &self,
        recording_id: &str,
        job: &str,
        idempotency_key: Option<&str>,
        now_ms: i64,
    ) -> Result<bool, ClusterError> {
        let accepted: i64 = self
            .run(
                &JAAS_ACCEPTED,
                vec![
                    wire::jaas_download_jobs_key(),
                    wire::jaas_download_order_key(),
                    wire::jaas_download_receipt_key(idempotency_key.unwrap_or_default()),
                ],
                vec![
                    recording_id.to_owned(),
                    job.to_owned(),
                    now_ms.to_string(),
                    if idempotency_key.is_some() { "1" } else { "0" }.to_owned(),
                    RECEIPT_TTL_MS.to_string(),
                ],
            )
            .await?;
        Ok(accepted == 1)
    }

    /// See [`super::Store::jaas_downloads`].
    pub async fn jaas_downloads(&self) -> Result<Vec<(String, String)>, ClusterError> {
        let flat: Vec<String> = self
            .run(
                &JAAS_DOWNLOADS,
                vec![
                    wire::jaas_download_jobs_key(),
                    wire::jaas_download_order_key(),
                ],
                Vec::new(),
            )
            .await?;
        Ok(flat
            .chunks_exact(2)
            .map(|pair| (pair[0].clone(), pair[1].clone()))
            .collect())
    }

    /// See [`super::Store::jaas_download_done`].
    pub async fn jaas_download_done(&self, recording_id: &str) -> Result<(), ClusterError> {
        let recording_id = recording_id.to_owned();
        self.cluster
            .on_io(move |this, mut conn| async move {
                let _: () = this
                    .timed(
                        redis::pipe()
                            .atomic()
                            .cmd("HDEL")
                            .arg(wire::jaas_download_jobs_key())
                            .arg(&recording_id)
                            .ignore()
                            .cmd("ZREM")
                            .arg(wire::jaas_download_order_key())
                            .arg(&recording_id)
                            .ignore()
                            .query_async(&mut conn),
                    )
                    .await?;
                Ok(())
            })
            .await
    }
}

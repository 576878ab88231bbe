//! The Lua scripts that make each cluster operation one atomic step in Redis.
//!
//! A script runs without interleaving, and a `PUBLISH` inside it lands in the
//! room's message stream at exactly the point of the change: a node that reads
//! a snapshot in the same script as its `joined` knows that every message after
//! that `joined` is news, and every message before it is in the snapshot.

/// Join. KEYS: members, seq, node participants, rooms, recording.
/// ARGV: participant id, participant JSON, room, channel, `joined` message.
/// Returns `{HGETALL members, state JSON or nil}` taken right after the join.
pub const JOIN: &str = r"
local seq = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], ARGV[1], seq .. ' ' .. ARGV[2])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
redis.call('SADD', KEYS[4], ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[5])
return {redis.call('HGETALL', KEYS[1]), redis.call('HGET', KEYS[5], 's')}
";

/// Leave. KEYS: members, node participants, rooms.
/// ARGV: participant id, room, channel, `left` message.
/// Returns `{removed (0/1), members left}`; `left` is published only if removed.
pub const LEAVE: &str = r"
local removed = redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
if removed == 1 then redis.call('PUBLISH', ARGV[3], ARGV[4]) end
local count = redis.call('HLEN', KEYS[1])
if count == 0 then redis.call('SREM', KEYS[3], ARGV[2]) end
return {removed, count}
";

/// Re-register a participant after Redis came back (no message: the others
/// never saw it leave). KEYS: members, seq, node participants, rooms.
/// ARGV: participant id, participant JSON, room.
pub const REREGISTER: &str = r"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then
  local seq = redis.call('INCR', KEYS[2])
  redis.call('HSET', KEYS[1], ARGV[1], seq .. ' ' .. ARGV[2])
end
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
redis.call('SADD', KEYS[4], ARGV[3])
return 1
";

/// The Lua function that writes outbox rows (the layout of
/// [`super::wire::outbox_row_key`] and its neighbours), for the scripts that
/// write rows with their cause: `outbox_write(seq key, due key, held key, row
/// prefix, wake channel, now ms, node id, first ARGV index, row count)` reads
/// six ARGV per row (kind, held `1`/`0`, message id, endpoint, event type,
/// payload). A pending row is due at once; a held one waits in the held set
/// for its holder. Writing any publishes the node id on the wake channel, so
/// that every node looks for due rows at once.
macro_rules! outbox_write_lua {
    () => {
        r"
local function outbox_write(seq_key, due_key, held_key, prefix, wake, now, node, first, count)
  for r = 0, count - 1 do
    local i = first + r * 6
    local seq = redis.call('INCR', seq_key)
    local key = prefix .. seq
    redis.call('HSET', key, 'kind', ARGV[i], 'message_id', ARGV[i + 2], 'endpoint', ARGV[i + 3],
      'event_type', ARGV[i + 4], 'payload', ARGV[i + 5], 'attempts', 0, 'created_ms', now)
    if ARGV[i + 1] == '1' then
      redis.call('HSET', key, 'state', 'held', 'holder', node)
      redis.call('SADD', held_key, seq)
    else
      redis.call('HSET', key, 'state', 'pending')
      redis.call('ZADD', due_key, now, seq)
    end
  end
  if count > 0 then redis.call('PUBLISH', wake, node) end
end
"
    };
}

/// The `outbox_write` Lua function on its own, for the scripts of other
/// modules that write outbox rows with their cause (the catalog's).
pub const OUTBOX_WRITE_FN: &str = outbox_write_lua!();

/// Replace a member's public data (consent) and announce it, keeping its
/// place, with the outbound webhooks it causes (outbox rows, in the same step).
/// KEYS: members, outbox seq, outbox due, outbox held. ARGV: participant id,
/// participant JSON, channel, `update` message, then the outbox part (now,
/// node id, row prefix, wake channel, six per row: see `outbox_write`).
pub const UPDATE: &str = concat!(
    outbox_write_lua!(),
    r"
local current = redis.call('HGET', KEYS[1], ARGV[1])
if not current then return 0 end
local seq = string.match(current, '^(%d+) ')
redis.call('HSET', KEYS[1], ARGV[1], seq .. ' ' .. ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
outbox_write(KEYS[2], KEYS[3], KEYS[4], ARGV[7], ARGV[8], ARGV[5], ARGV[6], 9, (#ARGV - 8) / 6)
return 1
"
);

/// Compare-and-set of the recording state on its version, with its announcements,
/// its outbound webhooks (outbox rows) and, for a start that awaits the backend,
/// its deadline (in the same step, so that no node can die between them and
/// leave the start without its deadline or its webhooks).
/// KEYS: recording, members, deadlines, outbox seq, outbox due, outbox held.
/// ARGV: expected version, new state JSON, require empty (`1`/`0`), expiry in ms
/// (`0`: none), channel, deadline member (`''`: none), deadline (ms since the
/// epoch), message count `m`, `m` messages, then now (ms), node id, outbox row
/// prefix, outbox wake channel and six ARGV per outbox row (see `outbox_write`).
/// Returns the new version, `-1` if the version moved (read again and retry),
/// `-2` if the room was required to be empty and is not.
pub const CAS: &str = concat!(
    outbox_write_lua!(),
    r"
local v = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if v ~= tonumber(ARGV[1]) then return -1 end
if ARGV[3] == '1' and redis.call('HLEN', KEYS[2]) > 0 then return -2 end
redis.call('HSET', KEYS[1], 'v', v + 1, 's', ARGV[2])
if ARGV[4] == '0' then
  redis.call('PERSIST', KEYS[1])
else
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
end
if ARGV[6] ~= '' then redis.call('ZADD', KEYS[3], 'NX', ARGV[7], ARGV[6]) end
local m = tonumber(ARGV[8])
for i = 9, 8 + m do redis.call('PUBLISH', ARGV[5], ARGV[i]) end
local o = 9 + m
outbox_write(KEYS[4], KEYS[5], KEYS[6], ARGV[o + 2], ARGV[o + 3], ARGV[o], ARGV[o + 1], o + 4, (#ARGV - o - 3) / 6)
return v + 1
"
);

/// Write outbox rows on their own (causes that are not a script of their
/// own: consent changes, the catalog's announcements).
/// KEYS: outbox seq, outbox due, outbox held. ARGV: now (ms), node id, row
/// prefix, wake channel, six ARGV per row (see `outbox_write`). Returns the
/// row count.
pub const OUTBOX_ENQUEUE: &str = concat!(
    outbox_write_lua!(),
    r"
local count = (#ARGV - 4) / 6
outbox_write(KEYS[1], KEYS[2], KEYS[3], ARGV[3], ARGV[4], ARGV[1], ARGV[2], 5, count)
return count
"
);

/// Copy one undelivered row of a single node's outbox (`onair
/// migrate-to-redis`), once: the marker is set in the same step as the row
/// is written, so a second run (or one after a crash between two rows)
/// writes nothing. The row is pending and due at once (the node that held
/// or scheduled it is gone), with its message id and its attempts so far.
/// KEYS: outbox seq, outbox due, outbox held, the marker
/// ([`super::wire::migrated_key`]). ARGV: now (ms), node id, row prefix,
/// wake channel, six ARGV for the row (see `outbox_write`), attempts.
/// Returns 1 if written, 0 if it was copied before.
pub const OUTBOX_IMPORT: &str = concat!(
    outbox_write_lua!(),
    r"
if not redis.call('SET', KEYS[4], '1', 'NX') then return 0 end
outbox_write(KEYS[1], KEYS[2], KEYS[3], ARGV[3], ARGV[4], ARGV[1], ARGV[2], 5, 1)
redis.call('HSET', ARGV[3] .. redis.call('GET', KEYS[1]), 'attempts', ARGV[11])
return 1
"
);

/// Expire a finished outbox row (delivered, dead, disabled) `keep` ms after
/// it was written (`[webhooks] keep_days`; `0`: kept), as the single node
/// prunes its SQLite outbox.
macro_rules! outbox_finished_lua {
    () => {
        r"
local function outbox_finished(key, keep)
  if tonumber(keep) > 0 then
    redis.call('PEXPIREAT', key, tonumber(redis.call('HGET', key, 'created_ms') or '0') + tonumber(keep))
  end
end
"
    };
}

/// One delivery pass's claim. First, held rows whose holder is gone (its
/// heartbeat expired; or this node's, written before it started) go as they
/// were written. Then the due rows (at most ARGV[3]) are claimed: re-scored
/// to the end of this node's lease, so no other node takes them meanwhile;
/// one whose endpoint answered 410 is disabled instead.
/// KEYS: due, held, disabled endpoints.
/// ARGV: now (ms), lease (ms), limit, row prefix, heartbeat key prefix, node
/// id, when this node started (ms), keep (ms).
/// Returns `{claimed rows {seq, kind, message id, endpoint, event type,
/// payload, attempts}, score of the next due row or '', disabled endpoints,
/// lease end}`.
pub const OUTBOX_CLAIM: &str = concat!(
    outbox_finished_lua!(),
    r"
local now = tonumber(ARGV[1])
for _, seq in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local key = ARGV[4] .. seq
  local row = redis.call('HMGET', key, 'state', 'holder', 'created_ms')
  if row[1] ~= 'held' then
    redis.call('SREM', KEYS[2], seq)
  else
    local holder = row[2] or ''
    local orphan
    if holder == ARGV[6] then
      orphan = tonumber(row[3] or '0') < tonumber(ARGV[7])
    else
      orphan = redis.call('EXISTS', ARGV[5] .. holder) == 0
    end
    if orphan then
      redis.call('HSET', key, 'state', 'pending')
      redis.call('HDEL', key, 'holder')
      redis.call('SREM', KEYS[2], seq)
      redis.call('ZADD', KEYS[1], now, seq)
    end
  end
end
local lease_end = now + tonumber(ARGV[2])
local claimed = {}
for _, seq in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[3]))) do
  local key = ARGV[4] .. seq
  local row = redis.call('HMGET', key, 'kind', 'message_id', 'endpoint', 'event_type', 'payload', 'attempts', 'state')
  if row[7] ~= 'pending' then
    redis.call('ZREM', KEYS[1], seq)
  elseif row[1] == 'webhook' and redis.call('SISMEMBER', KEYS[3], row[3]) == 1 then
    redis.call('ZREM', KEYS[1], seq)
    redis.call('HSET', key, 'state', 'disabled')
    outbox_finished(key, ARGV[8])
  else
    redis.call('ZADD', KEYS[1], lease_end, seq)
    table.insert(claimed, {seq, row[1], row[2], row[3], row[4], row[5], row[6] or '0'})
  end
end
local head = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {claimed, head[2] or '', redis.call('SMEMBERS', KEYS[3]), tostring(lease_end)}
"
);

/// The outcome of one attempt at a claimed row, applied only while the
/// claim holds (the row's score is still this node's lease end: had the
/// lease run out and another node claimed it, that node's outcome counts).
/// KEYS: due, the row. ARGV: seq, lease end, outcome (`retry`, `delivered`,
/// `dead`), next attempt (ms, for `retry`), error (`''`: none), keep (ms).
/// Returns 1 if applied, 0 if the claim had lapsed.
pub const OUTBOX_FINISH: &str = concat!(
    outbox_finished_lua!(),
    r"
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) ~= tonumber(ARGV[2]) then return 0 end
redis.call('HINCRBY', KEYS[2], 'attempts', 1)
if ARGV[3] == 'retry' then
  redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
  redis.call('HSET', KEYS[2], 'last_error', ARGV[5])
  return 1
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[2], 'state', ARGV[3])
if ARGV[5] == '' then
  redis.call('HDEL', KEYS[2], 'last_error')
else
  redis.call('HSET', KEYS[2], 'last_error', ARGV[5])
end
outbox_finished(KEYS[2], ARGV[6])
return 1
"
);

/// An endpoint answered 410 Gone: remember it for every node and disable
/// its pending webhook rows. KEYS: due, disabled endpoints. ARGV: endpoint,
/// row prefix, keep (ms). Returns how many rows were disabled.
pub const OUTBOX_DISABLE: &str = concat!(
    outbox_finished_lua!(),
    r"
redis.call('SADD', KEYS[2], ARGV[1])
local n = 0
for _, seq in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local key = ARGV[2] .. seq
  local row = redis.call('HMGET', key, 'kind', 'endpoint')
  if row[1] == 'webhook' and row[2] == ARGV[1] then
    redis.call('ZREM', KEYS[1], seq)
    redis.call('HSET', key, 'state', 'disabled')
    outbox_finished(key, ARGV[3])
    n = n + 1
  end
end
return n
"
);

/// Give claimed rows back (a node stopping mid-pass): each is due at once,
/// unless its claim lapsed already. KEYS: due. ARGV: now (ms), then pairs of
/// seq and lease end. Returns how many were given back.
pub const OUTBOX_GIVE_BACK: &str = r"
local n = 0
for i = 2, #ARGV, 2 do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) == tonumber(ARGV[i + 1]) then
    redis.call('ZADD', KEYS[1], ARGV[1], ARGV[i])
    n = n + 1
  end
end
return n
";

/// Let a held row go (its holder is done, e.g. the S3 upload its POST names),
/// with a new payload if ARGV[2] is `1`. KEYS: due, held. ARGV: message id,
/// replace payload (`1`/`0`), payload, row prefix, now (ms).
/// Returns 1 if a held row was released, 0 if none (released already).
pub const OUTBOX_RELEASE: &str = r"
for _, seq in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local key = ARGV[4] .. seq
  local row = redis.call('HMGET', key, 'message_id', 'state')
  if row[1] == ARGV[1] and row[2] == 'held' then
    if ARGV[2] == '1' then redis.call('HSET', key, 'payload', ARGV[3]) end
    redis.call('HSET', key, 'state', 'pending')
    redis.call('HDEL', key, 'holder')
    redis.call('SREM', KEYS[2], seq)
    redis.call('ZADD', KEYS[1], ARGV[5], seq)
    return 1
  end
end
return 0
";

/// Reap a dead node: only if its heartbeat is gone, and only once (the `SREM`
/// decides which survivor does it). Removes its participants and publishes
/// `left` for each. KEYS: alive, node participants, nodes, rooms. ARGV: node id.
/// Returns `{reaped (0/1), rooms it left empty}`.
pub const REAP: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return {0, {}} end
if redis.call('SREM', KEYS[3], ARGV[1]) == 0 then return {0, {}} end
local parts = redis.call('HGETALL', KEYS[2])
local emptied = {}
for i = 1, #parts, 2 do
  local pid, room = parts[i], parts[i + 1]
  local members = 'onair:room:' .. room .. ':members'
  if redis.call('HDEL', members, pid) == 1 then
    redis.call('PUBLISH', 'onair:room:' .. room .. ':events', 'L\t' .. pid .. '\t')
    if redis.call('HLEN', members) == 0 then
      redis.call('SREM', KEYS[4], room)
      table.insert(emptied, room)
    end
  end
end
redis.call('DEL', KEYS[2])
return {1, emptied}
";

/// Take one join from a `sub`'s token bucket (`[server] joins_per_second_per_sub`).
/// KEYS: the bucket ([`super::wire::joins_key`]). ARGV: rate (joins/s), burst.
/// Redis's own clock (`TIME`) is the clock, so nodes need not agree on theirs.
/// Returns 0 when the join may go ahead, else the milliseconds until it may.
pub const JOIN_RATE: &str = r"
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(b[1])
local at = tonumber(b[2])
if tokens == nil or at == nil then
  tokens = burst
  at = now
end
tokens = math.min(burst, tokens + math.max(0, now - at) * rate / 1000)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.ceil((1 - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) * 1000 / rate) + 1000)
return wait
";

/// Issue a single-use ticket, unless its `sub` holds the most outstanding.
/// KEYS: the ticket ([`super::wire::ticket_key`]), the `sub`'s outstanding
/// tickets ([`super::wire::tickets_of_key`], a sorted set of ticket keys
/// scored by their expiry on Redis's clock). ARGV: the claims (JSON), the
/// ticket's lifetime in ms, the most a `sub` may hold (0 = no limit).
/// Returns 1 when issued, 0 when the `sub` holds too many.
pub const TICKET_ISSUE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
local max = tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
if max > 0 and redis.call('ZCARD', KEYS[2]) >= max then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
redis.call('ZADD', KEYS[2], now + ttl, KEYS[1])
local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[2], tonumber(last[2]) + 1000)
return 1
";

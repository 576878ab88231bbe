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

/// Replace a member's public data (consent) and announce it, keeping its place.
/// KEYS: members. ARGV: participant id, participant JSON, channel, `update` message.
pub const UPDATE: &str = r"
local current = redis.call('HGET', KEYS[1], ARGV[1])
if not current then return 0 end
local seq = string.match(current, '^(%d+) ')
redis.call('HSET', KEYS[1], ARGV[1], seq .. ' ' .. ARGV[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
return 1
";

/// Compare-and-set of the recording state on its version, with its announcements
/// and, for a start that awaits the backend, its deadline (in the same step, so
/// that no node can die between the two and leave the start without one).
/// KEYS: recording, members, deadlines.
/// ARGV: expected version, new state JSON, require empty (`1`/`0`), expiry in ms
/// (`0`: none), channel, deadline member (`''`: none), deadline (ms since the
/// epoch), messages…
/// Returns the new version, `-1` if the version moved (read again and retry),
/// `-2` if the room was required to be empty and is not.
pub const CAS: &str = r"
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
for i = 8, #ARGV do redis.call('PUBLISH', ARGV[5], ARGV[i]) end
return v + 1
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

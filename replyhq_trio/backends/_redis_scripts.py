"""The Lua scripts of the Redis presence (:mod:`replyhq_trio.backends.redis_presence`).

Each script is one atomic step, so every decision it returns (a device crossing 0 <-> 1,
a dead node's session removed) is seen by exactly one caller, however many nodes race:
Redis runs one script at a time. Each is called with EVALSHA, one round trip, and
loaded again (SCRIPT LOAD) only when Redis answers NOSCRIPT (after a restart).

Keys (``P`` is the key prefix; CONTRACT.md "Presence and sessions" names the first four):

``P presence:conn:{connection_id}``
    string (the node id), TTL ``connection_ttl``: the connection is alive.
``P presence:device:{app_id}:{device_id}``
    set of connection ids: the device is online while it is not empty.
``P session:{connection_id}``
    hash (connection_id, app_id, device_id, connected_at, node_id), TTL ``session_ttl``.
``P sessions:app:{app_id}``
    set of connection ids.
``P node:{node_id}``
    string, TTL ``node_ttl``: the node is alive.
``P node:{node_id}:conns``
    hash connection id -> ``[app_id, device_id, connected_at, crossed]`` (JSON), no TTL:
    what a reaper needs to remove a dead node's connections after their own keys have
    expired (the brief's "per-node set of connection ids", with what removing one
    needs). ``crossed`` is whether that connection's latest registration took its
    device 0 -> 1 (to recover the crossing when the caller's reply was lost).
``P nodes``
    set of node ids that may own connections.
``P ratelimit:{limit}:{key}``
    sorted set of event ids scored by their time (ms, Redis's clock), TTL one window:
    one sliding window of a rate limit (``message`` and ``typing`` per
    ``{app_id}:{device_id}``, ``connect`` per IP address).
``P presence:epoch``
    a random token written when missing: a new token means Redis lost our data (a
    restart without persistence, a flush).
``P presence:offline-claim:{epoch}:{app_id}:{device_id}``
    short-lived: the one node that reports an offline crossing Redis no longer knows of.

Redis Cluster is not supported: the scripts touch keys they derive (members of a set),
which a cluster would need in one hash slot.
"""

from __future__ import annotations

import hashlib

import attrs

__all__ = [
    "CONNECT",
    "DEAD_NODES",
    "DISCONNECT",
    "DROP_OWN",
    "HEARTBEAT",
    "LEAVE",
    "OFFLINE_CLAIM",
    "RATE_LIMIT",
    "REAP",
    "REFRESH",
    "SESSIONS",
    "Script",
]


@attrs.frozen
class Script:
    name: str
    source: str
    sha: str = attrs.field(init=False)

    @sha.default
    def _sha(self) -> str:
        return hashlib.sha1(self.source.encode(), usedforsecurity=False).hexdigest()


# Read the epoch, writing the caller's fresh candidate when there is none. Every script
# that writes presence returns it, so that a node notices a Redis that lost its data at
# the first call after, not only at its next heartbeat.
_EPOCH = """
local function current_epoch(key, candidate)
    local epoch = redis.call('GET', key)
    if not epoch then
        epoch = candidate
        redis.call('SET', key, epoch)
    end
    return epoch
end
"""

#: KEYS: device set, session hash, conn key, app set, node conns, nodes, epoch, node key.
#: ARGV: connection id, app id, device id, connected_at, node id, connection TTL (ms),
#: session TTL (ms), epoch candidate, node TTL (ms).
#: Returns {added, device size, owed, epoch}: a 0 -> 1 crossing iff added == 1 and
#: size == 1. When the connection was already there (a retry of a call whose reply was
#: lost), ``owed`` says whether the previous registration made that crossing; each
#: registration stores only its own, so that a crossing is owed to one retry at most.
#: A node that registers a connection is alive: its liveness key is created if missing
#: (after Redis restarted empty, a connect may come before the node's next heartbeat,
#: and a reaper must not take the node for dead meanwhile).
CONNECT = Script(
    "connect",
    _EPOCH
    + """
local added = redis.call('SADD', KEYS[1], ARGV[1])
local size = redis.call('SCARD', KEYS[1])
local crossed = 0
if added == 1 and size == 1 then crossed = 1 end
local owed = crossed
if added == 0 then
    local before = redis.call('HGET', KEYS[5], ARGV[1])
    if before then owed = cjson.decode(before)[4] end
end
redis.call('SET', KEYS[3], ARGV[5], 'PX', ARGV[6])
redis.call('HSET', KEYS[2], 'connection_id', ARGV[1], 'app_id', ARGV[2],
    'device_id', ARGV[3], 'connected_at', ARGV[4], 'node_id', ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[7])
redis.call('SADD', KEYS[4], ARGV[1])
redis.call('HSET', KEYS[5], ARGV[1], cjson.encode({ARGV[2], ARGV[3], ARGV[4], crossed}))
redis.call('SADD', KEYS[6], ARGV[5])
redis.call('SET', KEYS[8], '1', 'PX', ARGV[9], 'NX')
return {added, size, owed, current_epoch(KEYS[7], ARGV[8])}
""",
)

#: KEYS: device set, session hash, conn key, app set, node conns, epoch.
#: ARGV: connection id, epoch candidate.
#: Returns {removed, device size, epoch}: a 1 -> 0 crossing iff removed == 1 and size == 0.
DISCONNECT = Script(
    "disconnect",
    _EPOCH
    + """
local removed = redis.call('SREM', KEYS[1], ARGV[1])
local size = redis.call('SCARD', KEYS[1])
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('SREM', KEYS[4], ARGV[1])
redis.call('HDEL', KEYS[5], ARGV[1])
return {removed, size, current_epoch(KEYS[6], ARGV[2])}
""",
)

#: An offline crossing that Redis cannot tell any more (the connection was already gone:
#: Redis lost its data, or a call's reply was lost after it ran): reported by whoever
#: claims it first, and only while the device has no connection.
#: KEYS: device set, claim key. ARGV: claim TTL (ms). Returns 1 if this caller reports it.
OFFLINE_CLAIM = Script(
    "offline_claim",
    """
if redis.call('SCARD', KEYS[1]) > 0 then return 0 end
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[1]) then return 1 end
return 0
""",
)

#: KEYS: node key, nodes, node conns, epoch. ARGV: node id, node TTL (ms), epoch candidate.
#: Returns {liveness key existed, connections registered by the node, epoch}.
HEARTBEAT = Script(
    "heartbeat",
    _EPOCH
    + """
local existed = redis.call('EXISTS', KEYS[1])
redis.call('SET', KEYS[1], '1', 'PX', ARGV[2])
redis.call('SADD', KEYS[2], ARGV[1])
return {existed, redis.call('HLEN', KEYS[3]), current_epoch(KEYS[4], ARGV[3])}
""",
)

#: KEYS: epoch. ARGV: prefix, connection TTL (ms), session TTL (ms), epoch candidate,
#: then connection ids. Returns {epoch, {ids whose connection key is gone}}: those need
#: registering again (a reaper took them, or Redis lost them).
REFRESH = Script(
    "refresh",
    _EPOCH
    + """
local missing = {}
for i = 5, #ARGV do
    local id = ARGV[i]
    if redis.call('PEXPIRE', ARGV[1] .. 'presence:conn:' .. id, ARGV[2]) == 1 then
        redis.call('PEXPIRE', ARGV[1] .. 'session:' .. id, ARGV[3])
    else
        missing[#missing + 1] = id
    end
end
return {current_epoch(KEYS[1], ARGV[4]), missing}
""",
)

#: KEYS: nodes. ARGV: prefix, this node's id. Returns the other nodes whose liveness key
#: is gone.
DEAD_NODES = Script(
    "dead_nodes",
    """
local dead = {}
for _, node in ipairs(redis.call('SMEMBERS', KEYS[1])) do
    if node ~= ARGV[2] and redis.call('EXISTS', ARGV[1] .. 'node:' .. node) == 0 then
        dead[#dead + 1] = node
    end
end
return dead
""",
)

# Remove one connection of a node's conns hash everywhere; append
# {id, packed, removed from its device set, device size} to ``out``.
_REMOVE = """
local function remove(prefix, conns, id, packed, out)
    local info = cjson.decode(packed)
    local device = prefix .. 'presence:device:' .. info[1] .. ':' .. info[2]
    local removed = redis.call('SREM', device, id)
    redis.call('DEL', prefix .. 'session:' .. id, prefix .. 'presence:conn:' .. id)
    redis.call('SREM', prefix .. 'sessions:app:' .. info[1], id)
    redis.call('HDEL', conns, id)
    out[#out + 1] = id
    out[#out + 1] = packed
    out[#out + 1] = removed
    out[#out + 1] = redis.call('SCARD', device)
end
"""

#: A dead node's connections, at most ARGV[3] of them per call, so that one call never
#: blocks Redis for long. The liveness check is inside: a node that came back in time
#: keeps its connections.
#: KEYS: node key, node conns, nodes. ARGV: prefix, node id, batch size.
#: Returns {connections left (-1: the node is alive), then 4 fields per removed one}.
REAP = Script(
    "reap",
    _REMOVE
    + """
if redis.call('EXISTS', KEYS[1]) == 1 then return {-1} end
local picked = redis.call('HRANDFIELD', KEYS[2], tonumber(ARGV[3]), 'WITHVALUES')
local out = {0}
for i = 1, #picked, 2 do
    remove(ARGV[1], KEYS[2], picked[i], picked[i + 1], out)
end
local left = redis.call('HLEN', KEYS[2])
if left == 0 then redis.call('SREM', KEYS[3], ARGV[2]) end
out[1] = left
return out
""",
)

#: This node's own connections that it no longer has (left by an earlier run of the same
#: node id, or registered by a call whose reply was lost after the session ended).
#: KEYS: node conns. ARGV: prefix, then connection ids. Returns 4 fields per removed one.
DROP_OWN = Script(
    "drop_own",
    _REMOVE
    + """
local out = {}
for i = 2, #ARGV do
    local packed = redis.call('HGET', KEYS[1], ARGV[i])
    if packed then remove(ARGV[1], KEYS[1], ARGV[i], packed, out) end
end
return out
""",
)

#: KEYS: app set. ARGV: prefix. Returns 4 fields (id, device, connected_at, node) per
#: session whose hash still exists.
SESSIONS = Script(
    "sessions",
    """
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
    local h = redis.call('HMGET', ARGV[1] .. 'session:' .. id,
        'device_id', 'connected_at', 'node_id')
    if h[1] then
        out[#out + 1] = id
        out[#out + 1] = h[1]
        out[#out + 1] = h[2]
        out[#out + 1] = h[3]
    end
end
return out
""",
)

#: A node that stops: its liveness goes at once, so that other nodes reap what it left
#: without waiting for the TTL; it leaves the node set when nothing is left to reap.
#: KEYS: node key, node conns, nodes. ARGV: node id.
LEAVE = Script(
    "leave",
    """
redis.call('DEL', KEYS[1])
if redis.call('HLEN', KEYS[2]) == 0 then redis.call('SREM', KEYS[3], ARGV[1]) end
return 1
""",
)


#: One check of a sliding-window rate limit, on Redis's own clock (every node sees the
#: same time). KEYS: the window's sorted set. ARGV: events admitted per window, window
#: (ms), a unique event id, 1 to count the event or 0 to only look.
#: Returns 0 when admitted (and counted), else the ms until an event would be (> 0).
RATE_LIMIT = Script(
    "rate_limit",
    """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
    if ARGV[4] == '1' then
        redis.call('ZADD', KEYS[1], now, ARGV[3])
        redis.call('PEXPIRE', KEYS[1], window)
    end
    return 0
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return math.max(1, tonumber(oldest[2]) + window - now)
""",
)

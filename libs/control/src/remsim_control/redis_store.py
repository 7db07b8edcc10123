"""``Store`` on Redis, shared by every API process and server core.

Each method is one Lua script (or one read), so it is atomic on the Redis server: the
compare-and-set of ``update_slotmap``/``remove_slotmap`` and the uniqueness checks of
``create_slotmap``/``register_*`` cannot interleave with another process's writes.

Keys (``{prefix}`` is a hash tag, so a Redis Cluster keeps them in one slot):

==============================  ============================================================
``{p}:serial``                  counter, the last slotmap serial handed out
``{p}:slotmaps``                hash serial -> slotmap JSON (every state)
``{p}:slotmap:bank``            hash ``bank:slot`` -> serial of the *visible* map there
``{p}:slotmap:client``          hash ``client:slot`` -> serial of the *visible* map there
``{p}:slotmaps:bank:<id>``      set of the serials of bank ``id``'s maps (every state)
``{p}:slotmaps:bank:<id>:<n>``  set of the serials of the hidden maps at bank slot ``id:n``
                                (and of any map there made since this index exists)
``{p}:slotmaps:client:<c>:<s>`` set of the serials of client slot ``c:s``'s maps
``{p}:banks``, ``{p}:clients``  hash id -> registry record JSON; with ``...:order`` zsets
``{p}:client_configs``          hash ``client:slot`` -> configuration JSON
``{p}:cards``                   hash ``bank:slot`` -> card inventory record JSON
``{p}:lease:<core_id>``         present while core ``core_id`` lives (expires after a TTL)
``{p}:audit``                   hash seq -> audit entry JSON (without its seq)
``{p}:audit:seq``               counter, the last audit seq handed out
``{p}:audit:seqs``              zset of every seq (score: the seq): the whole log, in order
``{p}:audit:kind:<kind>``,      zsets of the seqs of one kind, bank id or client id (score:
``{p}:audit:bank:<id>``,        the seq): the indexes of ``list_audit``'s filters
``{p}:audit:client:<id>``
``{p}:audit:clock``             the latest entry time appended so far
``{p}:audit:by_clock``          zset seq -> the clock when it was appended
==============================  ============================================================

The audit log's ``by_clock`` never decreases along the log (entry times themselves may, a
little, when cores' clocks differ): the entries older than a prune's ``before`` are a prefix
of it, and the entries a ``since`` filter can match a suffix. So both find their range with
one ZRANGEBYSCORE; an entry appended after one with a later clock is kept until the clock
has passed its retention too. ``list_audit`` walks the smallest index that applies from its
``after`` cursor, ``AUDIT_SCAN_BATCH`` entries per script call at most (the other filters
are checked in the script), so a long log never blocks Redis for long.

Registry leases: a registry record names the core holding its connection; it counts only
while that core's lease key exists. Every store that registered records for a core refreshes
that core's lease (every ``lease_ttl / 3``); when the process dies the lease expires and its
records vanish from ``get_*``/``list_*`` and stop blocking ``register_*``. If a lease lapsed
while the core still lives (Redis was unreachable longer than the TTL, or lost its data), the
refresher re-asserts the records it holds, unless another core took the identity meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable, Collection, Iterator
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import BusyLoadingError, DataError, NoScriptError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from remsim_control.audit import AuditEntry, AuditQuery
from remsim_control.errors import BackendUnavailable, IdentityInUse, SlotInUse
from remsim_control.models import (
    BankRecord,
    BankSlot,
    CardRecord,
    ClientConfig,
    ClientRecord,
    ClientSlot,
    Slotmap,
    SlotmapState,
    card_order,
    check_bank_cards,
    slotmap_bank,
)

try:
    import hiredis
except ImportError:  # pragma: no cover - redis[hiredis] brings it
    hiredis = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "remsim"
DEFAULT_LEASE_TTL = 15.0
AUDIT_SCAN_BATCH = 1000
"""The most audit entries one script call of ``list_audit`` or ``prune_audit`` looks at."""
SLOTS_PER_CALL = 1000
"""The most bank slots one script call of ``list_slotmaps(bank_slots=...)`` looks up."""
AUDITS_PER_CALL = 500
"""The most audit entries one script call of ``add_audit`` appends."""
BATCH_CALLS = 256
"""The most script calls one round trip of a ``_Batcher`` carries (the rest follow)."""

_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, BusyLoadingError, OSError)

# Shared Lua helpers: state visibility, dropping a map from the uniqueness indexes (only
# where they still point at this map), and removing a map completely (``drop``: for scripts
# whose KEYS are slotmaps, by_bank, by_client, bank set prefix, client set prefix).
_LUA_COMMON = """
local VISIBLE = {NEW = true, UNACKNOWLEDGED = true, ACTIVE = true}
local function slot_key(slot, id_field)
    return string.format('%d:%d', slot[id_field], slot.slot_nr)
end
local function unindex(m, serial, by_bank, by_client)
    local bk = slot_key(m.bank, 'bank_id')
    if redis.call('HGET', by_bank, bk) == serial then redis.call('HDEL', by_bank, bk) end
    local ck = slot_key(m.client, 'client_id')
    if redis.call('HGET', by_client, ck) == serial then redis.call('HDEL', by_client, ck) end
end
local function drop(m, s)
    unindex(m, s, KEYS[2], KEYS[3])
    redis.call('HDEL', KEYS[1], s)
    redis.call('SREM', KEYS[4] .. m.bank.bank_id, s)
    redis.call('SREM', KEYS[4] .. slot_key(m.bank, 'bank_id'), s)
    redis.call('SREM', KEYS[5] .. slot_key(m.client, 'client_id'), s)
end
local function in_list(value, first, last)
    for i = first, last do if ARGV[i] == value then return true end end
    return false
end
"""

# KEYS: slotmaps, by_bank, by_client, serial, bank set, client set, bank slot set
# ARGV: bank key, client key, map JSON (serial 0)
_CREATE = """
for _, k in ipairs({{KEYS[2], ARGV[1]}, {KEYS[3], ARGV[2]}}) do
    local s = redis.call('HGET', k[1], k[2])
    if s then
        local existing = redis.call('HGET', KEYS[1], s)
        if existing then return {0, existing} end
        redis.call('HDEL', k[1], k[2])
    end
end
local m = cjson.decode(ARGV[3])
local serial = redis.call('INCR', KEYS[4])
m.serial = serial
local j = cjson.encode(m)
redis.call('HSET', KEYS[1], serial, j)
redis.call('HSET', KEYS[2], ARGV[1], serial)
redis.call('HSET', KEYS[3], ARGV[2], serial)
redis.call('SADD', KEYS[5], serial)
redis.call('SADD', KEYS[6], serial)
redis.call('SADD', KEYS[7], serial)
return {1, j}
"""

# KEYS: slotmaps, by_bank; ARGV: bank key
_GET = """
local s = redis.call('HGET', KEYS[2], ARGV[1])
if not s then return false end
return redis.call('HGET', KEYS[1], s)
"""

# KEYS: slotmaps[, serial set]; returns every map (of the set) as JSON
_LIST = """
if KEYS[2] then
    local serials = redis.call('SMEMBERS', KEYS[2])
    if #serials == 0 then return {} end
    local out = {}
    for _, j in ipairs(redis.call('HMGET', KEYS[1], unpack(serials))) do
        if j then out[#out + 1] = j end
    end
    return out
end
return redis.call('HVALS', KEYS[1])
"""

# KEYS: slotmaps, by_bank, bank set prefix; ARGV: bank keys. Every map at those bank slots
# (JSON): the visible one from by_bank, the hidden ones from the bank slot sets (where a map
# made before those sets existed is missing until it is hidden, see request_removal).
_LIST_AT = """
local seen, out = {}, {}
for i = 1, #ARGV do
    local serials = redis.call('SMEMBERS', KEYS[3] .. ARGV[i])
    serials[#serials + 1] = redis.call('HGET', KEYS[2], ARGV[i])
    for _, s in ipairs(serials) do
        if s and not seen[s] then
            seen[s] = true
            local j = redis.call('HGET', KEYS[1], s)
            if j then out[#out + 1] = j end
        end
    end
end
return out
"""

# KEYS: as the other slotmap scripts (KEYS[4], KEYS[5]: the bank and client set prefixes);
# ARGV: bank key
_REQUEST_REMOVAL = (
    _LUA_COMMON
    + """
local s = redis.call('HGET', KEYS[2], ARGV[1])
if not s then return false end
local j = redis.call('HGET', KEYS[1], s)
if not j then redis.call('HDEL', KEYS[2], ARGV[1]) return false end
local m = cjson.decode(j)
if m.state == 'NEW' then
    drop(m, s)
else
    unindex(m, s, KEYS[2], KEYS[3])
    redis.call('SADD', KEYS[4] .. ARGV[1], s)
    m.state = 'DELETE_REQ'
    redis.call('HSET', KEYS[1], s, cjson.encode(m))
end
return j
"""
)

# KEYS: as the other slotmap scripts (KEYS[4], KEYS[5]: the bank and client set prefixes),
# serial counter; ARGV: serial, new bank key, new bank JSON, expected states...
# A map follows its card (Store.move_slotmap): false if map ARGV[1] is not visible in an
# expected state; {0, the map in the way}; else {1, the old map as it was, the new map}.
_MOVE = (
    _LUA_COMMON
    + """
local s = ARGV[1]
local j = redis.call('HGET', KEYS[1], s)
if not j then return false end
local m = cjson.decode(j)
if not VISIBLE[m.state] or not in_list(m.state, 4, #ARGV) then return false end
local ck = slot_key(m.client, 'client_id')
for _, k in ipairs({{KEYS[2], ARGV[2], ''}, {KEYS[3], ck, s}}) do
    local other = redis.call('HGET', k[1], k[2])
    if other and other ~= k[3] then
        local existing = redis.call('HGET', KEYS[1], other)
        if existing then return {0, existing} end
        redis.call('HDEL', k[1], k[2])
    end
end
if m.state == 'NEW' then
    drop(m, s)
else  -- as request_removal
    unindex(m, s, KEYS[2], KEYS[3])
    redis.call('SADD', KEYS[4] .. slot_key(m.bank, 'bank_id'), s)
    m.state = 'DELETE_REQ'
    redis.call('HSET', KEYS[1], s, cjson.encode(m))
end
local serial = redis.call('INCR', KEYS[6])
m.serial, m.bank, m.state, m.result = serial, cjson.decode(ARGV[3]), 'NEW', cjson.null
local created = cjson.encode(m)
redis.call('HSET', KEYS[1], serial, created)
redis.call('HSET', KEYS[2], ARGV[2], serial)
redis.call('HSET', KEYS[3], ck, serial)
redis.call('SADD', KEYS[4] .. m.bank.bank_id, serial)
redis.call('SADD', KEYS[4] .. ARGV[2], serial)
redis.call('SADD', KEYS[5] .. ck, serial)
return {1, j, created}
"""
)

# KEYS: slotmaps, by_bank, by_client
# ARGV: serial, new state, has result (0/1), result, expected states...
_UPDATE = (
    _LUA_COMMON
    + """
local j = redis.call('HGET', KEYS[1], ARGV[1])
if not j then return false end
local m = cjson.decode(j)
if not in_list(m.state, 5, #ARGV) then return false end
if VISIBLE[ARGV[2]] and not VISIBLE[m.state] then
    return redis.error_reply('HIDDEN ' .. m.state)
end
if VISIBLE[m.state] and not VISIBLE[ARGV[2]] then unindex(m, ARGV[1], KEYS[2], KEYS[3]) end
m.state = ARGV[2]
if ARGV[3] == '1' then m.result = ARGV[4] else m.result = cjson.null end
local updated = cjson.encode(m)
redis.call('HSET', KEYS[1], ARGV[1], updated)
return updated
"""
)

# KEYS: slotmaps, by_bank, by_client, bank set prefix, client set prefix
# ARGV: serial, expected states...
_REMOVE = (
    _LUA_COMMON
    + """
local j = redis.call('HGET', KEYS[1], ARGV[1])
if not j then return false end
local m = cjson.decode(j)
if not in_list(m.state, 2, #ARGV) then return false end
drop(m, ARGV[1])
return j
"""
)

# Releasing the maps of a bank whose connection is gone (see Store.release_bank).
# KEYS: slotmaps, by_bank, by_client, bank set prefix, client set prefix, banks
_LUA_RELEASE = (
    _LUA_COMMON
    + """
local function release(s, j)
    local m = cjson.decode(j)
    if m.state == 'UNACKNOWLEDGED' or m.state == 'ACTIVE' then
        m.state = 'NEW'
        m.result = cjson.null
        redis.call('HSET', KEYS[1], s, cjson.encode(m))
        return true
    elseif m.state == 'DELETE_REQ' or m.state == 'DELETING' then
        drop(m, s)
        return true
    end
    return false
end
"""
)

# ARGV: bank id, our record JSON. False if the bank's entry is not ours, else the maps
# changed (as they were).
_RELEASE_BANK = (
    _LUA_RELEASE
    + """
if redis.call('HGET', KEYS[6], ARGV[1]) ~= ARGV[2] then return false end
local out = {}
for _, s in ipairs(redis.call('SMEMBERS', KEYS[4] .. ARGV[1])) do
    local j = redis.call('HGET', KEYS[1], s)
    if j and release(s, j) then out[#out + 1] = j end
end
return out
"""
)

# ARGV: lease key prefix. Releases the maps of banks without a live entry.
_RELEASE_ORPHANS = (
    _LUA_RELEASE
    + """
local live, out = {}, {}
local h = redis.call('HGETALL', KEYS[1])
for i = 1, #h, 2 do
    local s, j = h[i], h[i + 1]
    local m = cjson.decode(j)
    if m.state ~= 'NEW' then
        local b = string.format('%d', m.bank.bank_id)
        if live[b] == nil then
            local e = redis.call('HGET', KEYS[6], b)
            live[b] = e ~= false and redis.call('EXISTS', ARGV[1] .. cjson.decode(e).core_id) == 1
        end
        if not live[b] and release(s, j) then out[#out + 1] = j end
    end
end
return out
"""
)

# KEYS: clients, client configs; ARGV: field, our record JSON
_FORGET_CONFIG = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
"""

# KEYS: client configs; ARGV: field[, config JSON]: sets it, or without one forgets it. A
# script so that it shares the round trips of the other calls (a burst of maps makes a burst
# of client acknowledgements).
_SET_CONFIG = """
if ARGV[2] then return redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end
return redis.call('HDEL', KEYS[1], ARGV[1])
"""

# KEYS: records, order, seq, lease of the record's core
# ARGV: field, record JSON, lease key prefix, lease TTL (ms)
# Returns the live record in the way, or false once registered.
_REGISTER = """
local e = redis.call('HGET', KEYS[1], ARGV[1])
if e and redis.call('EXISTS', ARGV[3] .. cjson.decode(e).core_id) == 1 then return e end
redis.call('SET', KEYS[4], '1', 'PX', ARGV[4])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[3]), ARGV[1])
return false
"""

# KEYS: records, order, seq; ARGV: field, record JSON, lease key prefix
# After a lapsed lease: put our record back unless another live core took the identity.
_REASSERT = """
local e = redis.call('HGET', KEYS[1], ARGV[1])
if e == ARGV[2] then return 1 end
if e and redis.call('EXISTS', ARGV[3] .. cjson.decode(e).core_id) == 1 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[3]), ARGV[1])
return 1
"""

# KEYS: records, order; ARGV: field, record JSON
_UNREGISTER = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""

# KEYS: banks, banks order, clients, clients order; ARGV: core id
# Drops every record of that core; returns how many.
_DROP_CORE = """
local n = 0
for i = 1, 3, 2 do
    local h = redis.call('HGETALL', KEYS[i])
    for j = 1, #h, 2 do
        if cjson.decode(h[j + 1]).core_id == ARGV[1] then
            redis.call('HDEL', KEYS[i], h[j])
            redis.call('ZREM', KEYS[i + 1], h[j])
            n = n + 1
        end
    end
end
return n
"""

# KEYS: records; ARGV: field, lease key prefix
_GET_LIVE = """
local e = redis.call('HGET', KEYS[1], ARGV[1])
if e and redis.call('EXISTS', ARGV[2] .. cjson.decode(e).core_id) == 1 then return e end
return false
"""

# KEYS: records, order; ARGV: lease key prefix. Live records in registration order.
_LIST_LIVE = """
local live, out = {}, {}
for _, f in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
    local e = redis.call('HGET', KEYS[1], f)
    if e then
        local core = cjson.decode(e).core_id
        if live[core] == nil then live[core] = redis.call('EXISTS', ARGV[1] .. core) == 1 end
        if live[core] then out[#out + 1] = e end
    end
end
return out
"""


# --- the audit log -------------------------------------------------------------------------

# KEYS: entries, seq counter, seqs, by_clock, clock, then the entries' indexes
# ARGV: per entry, in order: its JSON (without seq), its time, how many indexes it is in,
# and their positions in KEYS. Returns the seqs.
_ADD_AUDITS = """
local latest = redis.call('GET', KEYS[5])
local out, i = {}, 1
while i <= #ARGV do
    local seq = redis.call('INCR', KEYS[2])
    redis.call('HSET', KEYS[1], seq, ARGV[i])
    local clock = ARGV[i + 1]
    if latest and tonumber(latest) > tonumber(clock) then clock = latest end
    latest = clock
    redis.call('ZADD', KEYS[4], clock, seq)
    redis.call('ZADD', KEYS[3], seq, seq)
    local n = tonumber(ARGV[i + 2])
    for j = 1, n do redis.call('ZADD', KEYS[tonumber(ARGV[i + 2 + j])], seq, seq) end
    out[#out + 1] = seq
    i = i + 3 + n
end
if latest then redis.call('SET', KEYS[5], latest) end
return out
"""

# KEYS: entries, index to walk, by_clock
# ARGV: after, limit, batch, since, kind, bank id, client id ('' where no filter)
# Returns {exhausted (0/1), cursor (last seq looked at), seq, JSON, seq, JSON, ...}.
_LIST_AUDIT = """
local after = ARGV[1]  -- kept a string: a Lua number would round a seq beyond 2^53
local since = tonumber(ARGV[4])
if since then
    local first = redis.call('ZRANGEBYSCORE', KEYS[3], ARGV[4], '+inf', 'LIMIT', 0, 1)
    if #first == 0 then return {1, after} end
    local floor = tonumber(first[1]) - 1
    if floor > tonumber(after) then after = string.format('%d', floor) end
end
local limit, batch = tonumber(ARGV[2]), tonumber(ARGV[3])
local kind, bank, client = ARGV[5], tonumber(ARGV[6]), tonumber(ARGV[7])
local seqs = redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. after, '+inf', 'LIMIT', 0, batch)
local out = {#seqs < batch and 1 or 0, after}
for _, s in ipairs(seqs) do
    out[2] = s
    local j = redis.call('HGET', KEYS[1], s)
    if j then
        local e = cjson.decode(j)
        if (not since or e.time >= since) and (kind == '' or e.kind == kind)
            and (not bank or e.bank_id == bank) and (not client or e.client_id == client) then
            out[#out + 1] = s
            out[#out + 1] = j
            if #out - 2 >= 2 * limit then
                out[1] = 0
                return out
            end
        end
    end
end
return out
"""

# KEYS: entries, seqs, by_clock, index key prefix ({p}:audit:)
# ARGV: before, batch. Drops up to batch entries; returns how many.
_PRUNE_AUDIT = """
local seqs = redis.call(
    'ZRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
for _, s in ipairs(seqs) do
    local j = redis.call('HGET', KEYS[1], s)
    if j then
        local e = cjson.decode(j)
        redis.call('ZREM', KEYS[4] .. 'kind:' .. e.kind, s)
        if e.bank_id ~= cjson.null then
            redis.call('ZREM', KEYS[4] .. 'bank:' .. string.format('%d', e.bank_id), s)
        end
        if e.client_id ~= cjson.null then
            redis.call('ZREM', KEYS[4] .. 'client:' .. string.format('%d', e.client_id), s)
        end
        redis.call('HDEL', KEYS[1], s)
    end
    redis.call('ZREM', KEYS[2], s)
    redis.call('ZREM', KEYS[3], s)
end
return #seqs
"""


# --- the card inventory ----------------------------------------------------------------------

# KEYS: cards; ARGV: bank id, then the bank's new records (JSON): drops the bank's old records
# and any record elsewhere with one of the new records' ICCIDs (the card moved).
_PUT_CARDS = """
local bank_id = tonumber(ARGV[1])
local new, moved = {}, {}
for i = 2, #ARGV do
    local c = cjson.decode(ARGV[i])
    new[#new + 1] = string.format('%d:%d', c.bank_slot.bank_id, c.bank_slot.slot_nr)
    new[#new + 1] = ARGV[i]
    if c.iccid ~= cjson.null then moved[c.iccid] = true end
end
local all = redis.call('HGETALL', KEYS[1])
for i = 1, #all, 2 do
    local c = cjson.decode(all[i + 1])
    if c.bank_slot.bank_id == bank_id or (c.iccid ~= cjson.null and moved[c.iccid]) then
        redis.call('HDEL', KEYS[1], all[i])
    end
end
if #new > 0 then redis.call('HSET', KEYS[1], unpack(new)) end
return 1
"""


class _Batcher:
    """Sends the script calls made while one is on its way together, in one round trip (not
    a transaction: each script stays atomic on its own, and they run in the order called).
    With many connections acting at once (a burst of maps), a core then pays one round
    trip, one write and one read for a whole batch rather than for each call; a call alone
    goes out at once, as before."""

    def __init__(self, redis: aioredis.Redis, timeout: float) -> None:
        self._redis = redis
        self._timeout = timeout
        self._queue: list[_Call] = []
        self._sender: asyncio.Task[None] | None = None

    async def call(self, script: AsyncScript, keys: list[Any], args: list[Any]) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((script, keys, args, future))
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._send())
        return await future

    async def _send(self) -> None:
        while self._queue:
            batch, self._queue = self._queue[:BATCH_CALLS], self._queue[BATCH_CALLS:]
            try:
                results = await self._outcomes(batch)
            except asyncio.CancelledError:
                for *_, future in [*batch, *self._queue]:
                    future.cancel()
                raise
            try:
                for (*_, future), result in zip(batch, results, strict=True):
                    if future.done():  # its caller gave up
                        continue
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
            finally:  # never leave a caller waiting, whatever went wrong above
                for *_, future in batch:
                    if not future.done():
                        future.set_exception(RedisConnectionError("the batch was not sent"))

    async def _outcomes(self, batch: list[_Call]) -> list[Any]:
        """Each call's result, or the exception it ends with: the error Redis answered, or
        the broken connection's for the calls it left without an answer. Scripts Redis
        forgot (it restarted) are loaded and those calls made again; only those."""
        try:
            results = await self._exchange(batch)
        except Exception as exc:  # nothing was answered: every call of the batch
            return [exc] * len(batch)
        forgotten = [n for n, result in enumerate(results) if _forgotten(result)]
        if forgotten:
            again = [batch[n] for n in forgotten]
            try:
                await self._load({script for script, *_ in again})
                answers = await self._exchange(again)
            except Exception as exc:
                answers = [exc] * len(again)
            for n, result in zip(forgotten, answers, strict=True):
                results[n] = result
        return results

    async def _exchange(self, batch: list[_Call]) -> list[Any]:
        """The outcome of each call of ``batch`` (a result, or the error Redis answered),
        in one round trip on one connection. Rather than redis-py's pipeline, which costs
        twice the CPU a call (it arms a timer for the write and one for each answer when the
        client has a socket timeout), each answer here has one deadline, ``timeout``, so a
        long batch that makes progress is not cut off. A script call is never sent twice:
        only a batch that could not be written (a connection found broken, as after a Redis
        restart) is sent again, as the client's ``retry`` says; once written, an answer
        missing (timeout, connection lost) fails the calls without one (their scripts may
        have run: the caller decides, as for any ``BackendUnavailable``)."""
        pool = self._redis.connection_pool
        try:
            async with asyncio.timeout(self._timeout):  # it may connect, and say hello
                connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        except TimeoutError as exc:
            raise RedisTimeoutError(f"no connection within {self._timeout:g} s") from exc
        try:
            packed = [
                chunk
                for script, keys, args, _ in batch
                for chunk in connection.pack_command("EVALSHA", script.sha, len(keys), *keys, *args)
            ]

            async def write() -> None:
                try:
                    async with asyncio.timeout(self._timeout):
                        await connection.send_packed_command(packed)
                except TimeoutError as exc:
                    raise RedisTimeoutError(f"no write within {self._timeout:g} s") from exc

            async def broken(_: Exception) -> None:
                await connection.disconnect()

            await connection.retry.call_with_retry(write, broken)
            results: list[Any] = []
            try:
                for _ in batch:
                    async with asyncio.timeout(self._timeout):
                        results.append(await _answer(connection))
            except (TimeoutError, *_UNREACHABLE) as exc:
                await connection.disconnect()  # its answers are out of step now
                lost = (
                    RedisTimeoutError(f"no answer within {self._timeout:g} s")
                    if isinstance(exc, TimeoutError)
                    else exc
                )
                results += [lost] * (len(batch) - len(results))
            return results
        finally:
            await pool.release(connection)

    async def _load(self, scripts: Collection[AsyncScript]) -> None:
        async with asyncio.timeout(self._timeout):
            for script in scripts:
                await self._redis.script_load(script.script)


_Call = tuple[AsyncScript, list[Any], list[Any], "asyncio.Future[Any]"]
"""A script call waiting in a ``_Batcher``: the script, its keys and args, the caller's
future."""


async def _answer(connection: Any) -> Any:
    """The next answer on ``connection``: a result, or the error Redis answered."""
    try:
        return await connection.read_response(timeout=math.inf)  # the exchange has one
    except ResponseError as exc:
        return exc


def _forgotten(result: Any) -> bool:
    return isinstance(result, NoScriptError)


class _Script:
    """A registered script whose calls go through a ``_Batcher``."""

    def __init__(self, batcher: _Batcher, script: AsyncScript) -> None:
        self._batcher = batcher
        self._script = script

    async def __call__(self, keys: list[Any] | None = None, args: list[Any] | None = None) -> Any:
        return await self._batcher.call(self._script, list(keys or ()), list(args or ()))


@contextlib.contextmanager
def _unavailable_on_failure() -> Iterator[None]:
    try:
        yield
    except _UNREACHABLE as exc:
        raise BackendUnavailable(f"Redis unreachable: {exc}") from exc


def _packing_with_hiredis(connection_class: type[Any]) -> type[Any]:
    """``connection_class`` (plain TCP, TLS or a Unix socket, as the URL says) packing its
    commands with hiredis: redis-py's asyncio connections pack them in Python (8 µs a
    script call here, against 1 µs), though they parse answers with hiredis already. As
    it is without hiredis."""
    if hiredis is None:
        return connection_class

    def pack_command(self: Any, *args: Any) -> list[bytes]:
        # As redis-py's HiredisRespSerializer (its synchronous client's packer): a command
        # name like "SCRIPT LOAD" is sent as two words.
        if isinstance(args[0], str):
            args = (*args[0].encode().split(), *args[1:])
        elif b" " in args[0]:
            args = (*args[0].split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except TypeError as exc:  # not str, bytes, int or float (never sent here)
            raise DataError(str(exc)) from exc

    name = f"Hiredis{connection_class.__name__}"
    return type(name, (connection_class,), {"pack_command": pack_command})


def _sorted_maps(rows: list[str]) -> list[Slotmap]:
    return sorted((Slotmap.model_validate_json(row) for row in rows), key=lambda m: m.serial)


def _bank_key(bank: BankSlot) -> str:
    return f"{bank.bank_id}:{bank.slot_nr}"


def _client_key(client: ClientSlot) -> str:
    return f"{client.client_id}:{client.slot_nr}"


class RedisStore:
    """``Store`` on Redis. ``lease_ttl``: seconds a dead core's registry records stay;
    ``on_recovered``: awaited when Redis answers again after the lease refresher lost it
    (the backends factory publishes a ``ResetEvent`` then, so every core re-reads).
    ``scripts``: the client for the script calls (``redis`` if not given), best without a
    socket timeout: each exchange of script calls has its own, ``timeout`` (see
    ``_Batcher._exchange``)."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        prefix: str = DEFAULT_PREFIX,
        lease_ttl: float = DEFAULT_LEASE_TTL,
        timeout: float = 2.0,
        on_recovered: Callable[[], Awaitable[None]] | None = None,
        scripts: aioredis.Redis | None = None,
    ) -> None:
        self._redis = redis
        self._scripts = scripts
        self.lease_ttl = lease_ttl
        self.on_recovered = on_recovered
        p = "{" + prefix + "}"
        self._k_serial = f"{p}:serial"
        self._k_slotmaps = f"{p}:slotmaps"
        self._k_by_bank = f"{p}:slotmap:bank"
        self._k_by_client = f"{p}:slotmap:client"
        self._k_bank_set = f"{p}:slotmaps:bank:"
        self._k_client_set = f"{p}:slotmaps:client:"
        self._k_banks = f"{p}:banks"
        self._k_clients = f"{p}:clients"
        self._k_seq = f"{p}:seq"
        self._k_configs = f"{p}:client_configs"
        self._k_lease = f"{p}:lease:"
        self._k_cards = f"{p}:cards"
        self._k_audit = f"{p}:audit"
        self._k_audit_index = f"{p}:audit:"
        self._k_audit_seq = f"{p}:audit:seq"
        self._k_audit_seqs = f"{p}:audit:seqs"
        self._k_audit_clock = f"{p}:audit:clock"
        self._k_audit_by_clock = f"{p}:audit:by_clock"
        self.audit_scan_batch = AUDIT_SCAN_BATCH
        batcher = _Batcher(scripts or redis, timeout)

        def script(source: str) -> _Script:
            return _Script(batcher, (scripts or redis).register_script(source))

        self._create = script(_CREATE)
        self._get = script(_GET)
        self._list = script(_LIST)
        self._list_at = script(_LIST_AT)
        self._request_removal = script(_REQUEST_REMOVAL)
        self._move = script(_MOVE)
        self._update = script(_UPDATE)
        self._remove = script(_REMOVE)
        self._register = script(_REGISTER)
        self._reassert = script(_REASSERT)
        self._unregister = script(_UNREGISTER)
        self._get_live = script(_GET_LIVE)
        self._list_live = script(_LIST_LIVE)
        self._drop_core = script(_DROP_CORE)
        self._release_bank = script(_RELEASE_BANK)
        self._release_orphans = script(_RELEASE_ORPHANS)
        self._forget_config = script(_FORGET_CONFIG)
        self._set_config = script(_SET_CONFIG)
        self._put_cards = script(_PUT_CARDS)
        self._add_audits = script(_ADD_AUDITS)
        self._audit_queue: list[tuple[AuditEntry, asyncio.Future[int]]] = []
        """``add_audit`` calls not sent yet (see there)."""
        self._audit_sender: asyncio.Task[None] | None = None
        self._list_audit = script(_LIST_AUDIT)
        self._prune_audit = script(_PRUNE_AUDIT)
        # What this process registered, per core: (records hash, field) -> record JSON.
        self._held: dict[str, dict[tuple[str, str], str]] = {}
        # Unregistrations that failed while Redis was away: (records hash, field, JSON).
        self._unregisters: list[tuple[str, str, str]] = []
        self._refresher: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._reachable = True
        self._timeout = timeout

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        lease_ttl: float = DEFAULT_LEASE_TTL,
        timeout: float = 2.0,
        on_recovered: Callable[[], Awaitable[None]] | None = None,
    ) -> RedisStore:
        """A store on ``redis://host:port/db``; each command gives up (``BackendUnavailable``)
        after ``timeout`` seconds and two quick retries. Two connections: the script calls
        have a client of their own, without a socket timeout (see ``scripts``)."""
        clients = [
            aioredis.Redis.from_url(
                url,
                decode_responses=True,
                socket_connect_timeout=timeout,
                socket_timeout=socket_timeout,
                retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 2),
                retry_on_error=[RedisConnectionError, RedisTimeoutError],
            )
            for socket_timeout in (timeout, None)  # the commands; the script calls
        ]
        for client in clients:
            pool = client.connection_pool
            pool.connection_class = _packing_with_hiredis(pool.connection_class)
        redis, scripts = clients
        return cls(
            redis,
            prefix=prefix,
            lease_ttl=lease_ttl,
            timeout=timeout,
            on_recovered=on_recovered,
            scripts=scripts,
        )

    async def ping(self) -> bool:
        """True if Redis answers now (for ``/readyz``)."""
        try:
            return bool(await self._redis.ping())
        except _UNREACHABLE:
            return False

    # --- slotmaps ---------------------------------------------------------------------

    def _slotmap_keys(self) -> list[str]:
        return [self._k_slotmaps, self._k_by_bank, self._k_by_client]

    async def create_slotmap(
        self, bank: BankSlot, client: ClientSlot, iccid: str | None = None
    ) -> Slotmap:
        template = Slotmap(serial=0, bank=bank, client=client, iccid=iccid).model_dump_json()
        keys = [
            *self._slotmap_keys(),
            self._k_serial,
            f"{self._k_bank_set}{bank.bank_id}",
            f"{self._k_client_set}{_client_key(client)}",
            f"{self._k_bank_set}{_bank_key(bank)}",
        ]
        with _unavailable_on_failure():
            created, data = await self._create(
                keys=keys, args=[_bank_key(bank), _client_key(client), template]
            )
        slotmap = Slotmap.model_validate_json(data)
        if not created:
            raise SlotInUse(slotmap)
        return slotmap

    async def get_slotmap(self, slotmap_id: int) -> Slotmap | None:
        if (bank := slotmap_bank(slotmap_id)) is None:
            return None
        with _unavailable_on_failure():
            data = await self._get(keys=[self._k_slotmaps, self._k_by_bank], args=[_bank_key(bank)])
        return Slotmap.model_validate_json(data) if data else None

    async def list_slotmaps(
        self,
        *,
        bank_id: int | None = None,
        client: ClientSlot | None = None,
        bank_slots: Collection[BankSlot] | None = None,
        visible_only: bool = False,
    ) -> list[Slotmap]:
        keys = [self._k_slotmaps]
        slots = None if bank_slots is None else {_bank_key(slot) for slot in bank_slots}
        # Read the smallest index that applies; the other filters are checked here.
        if client is not None:
            keys.append(f"{self._k_client_set}{_client_key(client)}")
            with _unavailable_on_failure():
                rows = await self._list(keys=keys)
        elif slots is not None:
            rows = await self._list_at_bank_slots(sorted(slots))
        else:
            if bank_id is not None:
                keys.append(f"{self._k_bank_set}{bank_id}")
            with _unavailable_on_failure():
                rows = await self._list(keys=keys)
        slotmaps = (Slotmap.model_validate_json(row) for row in rows)
        return sorted(
            (
                slotmap
                for slotmap in slotmaps
                if (bank_id is None or slotmap.bank.bank_id == bank_id)
                and (client is None or slotmap.client == client)
                and (slots is None or _bank_key(slotmap.bank) in slots)
                and (not visible_only or slotmap.state.visible)
            ),
            key=lambda slotmap: slotmap.serial,
        )

    async def _list_at_bank_slots(self, slots: list[str]) -> list[str]:
        keys = [self._k_slotmaps, self._k_by_bank, self._k_bank_set]
        rows: list[str] = []
        for first in range(0, len(slots), SLOTS_PER_CALL):
            with _unavailable_on_failure():
                rows += await self._list_at(keys=keys, args=slots[first : first + SLOTS_PER_CALL])
        return rows

    async def request_removal(self, slotmap_id: int) -> Slotmap | None:
        if (bank := slotmap_bank(slotmap_id)) is None:
            return None
        keys = [*self._slotmap_keys(), self._k_bank_set, self._k_client_set]
        with _unavailable_on_failure():
            data = await self._request_removal(keys=keys, args=[_bank_key(bank)])
        return Slotmap.model_validate_json(data) if data else None

    async def move_slotmap(
        self, serial: int, expected: Collection[SlotmapState], bank: BankSlot
    ) -> tuple[Slotmap, Slotmap] | None:
        keys = [*self._slotmap_keys(), self._k_bank_set, self._k_client_set, self._k_serial]
        args = [str(serial), _bank_key(bank), bank.model_dump_json(), *(s.value for s in expected)]
        with _unavailable_on_failure():
            outcome = await self._move(keys=keys, args=args)
        if not outcome:
            return None
        if not outcome[0]:
            raise SlotInUse(Slotmap.model_validate_json(outcome[1]))
        return Slotmap.model_validate_json(outcome[1]), Slotmap.model_validate_json(outcome[2])

    async def update_slotmap(
        self,
        serial: int,
        expected: Collection[SlotmapState],
        state: SlotmapState,
        *,
        result: str | None = None,
    ) -> Slotmap | None:
        args: list[str] = [
            str(serial),
            state.value,
            "0" if result is None else "1",
            result or "",
            *(s.value for s in expected),
        ]
        try:
            with _unavailable_on_failure():
                data = await self._update(keys=self._slotmap_keys(), args=args)
        except ResponseError as exc:
            if "HIDDEN" in str(exc):
                raise ValueError(f"slotmap {serial} is being deleted; not {state}") from None
            raise
        return Slotmap.model_validate_json(data) if data else None

    async def remove_slotmap(
        self, serial: int, expected: Collection[SlotmapState]
    ) -> Slotmap | None:
        keys = [*self._slotmap_keys(), self._k_bank_set, self._k_client_set]
        with _unavailable_on_failure():
            data = await self._remove(keys=keys, args=[str(serial), *(s.value for s in expected)])
        return Slotmap.model_validate_json(data) if data else None

    def _release_keys(self) -> list[str]:
        return [*self._slotmap_keys(), self._k_bank_set, self._k_client_set, self._k_banks]

    async def release_bank(self, record: BankRecord) -> list[Slotmap] | None:
        args = [str(record.bank_id), record.model_dump_json()]
        with _unavailable_on_failure():
            rows = await self._release_bank(keys=self._release_keys(), args=args)
        return None if rows is None else _sorted_maps(rows)

    async def release_orphans(self) -> list[Slotmap]:
        with _unavailable_on_failure():
            rows = await self._release_orphans(keys=self._release_keys(), args=[self._k_lease])
        return _sorted_maps(rows)

    # --- registry ---------------------------------------------------------------------

    async def _register_record(
        self, records: str, field: str, record: BankRecord | ClientRecord
    ) -> str | None:
        """Register ``record``; the JSON of the live record in the way, if any."""
        data = record.model_dump_json()
        keys = [records, f"{records}:order", self._k_seq, self._k_lease + record.core_id]
        args = [field, data, self._k_lease, str(self._lease_ms)]
        with _unavailable_on_failure():
            existing: str | None = await self._register(keys=keys, args=args)
        if existing is None:
            self._held.setdefault(record.core_id, {})[(records, field)] = data
            self._ensure_refresher()
        return existing

    async def _unregister_record(
        self, records: str, field: str, record: BankRecord | ClientRecord
    ) -> bool:
        data = record.model_dump_json()
        held = self._held.get(record.core_id, {})
        if held.get((records, field)) == data:
            del held[(records, field)]
        try:
            return await self._unregister_now(records, field, data)
        except BackendUnavailable:
            # The connection is gone for good: remove its record once Redis is back, or it
            # would block the bank's or client's next connection while this core lives.
            self._unregisters.append((records, field, data))
            self._ensure_refresher()
            raise

    async def _unregister_now(self, records: str, field: str, data: str) -> bool:
        with _unavailable_on_failure():
            removed = await self._unregister(keys=[records, f"{records}:order"], args=[field, data])
        return bool(removed)

    async def _get_record(self, records: str, field: str) -> str | None:
        with _unavailable_on_failure():
            data: str | None = await self._get_live(keys=[records], args=[field, self._k_lease])
        return data

    async def _list_records(self, records: str) -> list[str]:
        with _unavailable_on_failure():
            rows: list[str] = await self._list_live(
                keys=[records, f"{records}:order"], args=[self._k_lease]
            )
        return rows

    async def register_bank(self, record: BankRecord) -> None:
        existing = await self._register_record(self._k_banks, str(record.bank_id), record)
        if existing is not None:
            raise IdentityInUse(BankRecord.model_validate_json(existing))

    async def unregister_bank(self, record: BankRecord) -> bool:
        return await self._unregister_record(self._k_banks, str(record.bank_id), record)

    async def get_bank(self, bank_id: int) -> BankRecord | None:
        data = await self._get_record(self._k_banks, str(bank_id))
        return BankRecord.model_validate_json(data) if data else None

    async def list_banks(self) -> list[BankRecord]:
        return [
            BankRecord.model_validate_json(row) for row in await self._list_records(self._k_banks)
        ]

    async def register_client(self, record: ClientRecord) -> None:
        existing = await self._register_record(self._k_clients, _client_key(record.client), record)
        if existing is not None:
            raise IdentityInUse(ClientRecord.model_validate_json(existing))

    async def unregister_client(self, record: ClientRecord) -> bool:
        return await self._unregister_record(self._k_clients, _client_key(record.client), record)

    async def get_client(self, client: ClientSlot) -> ClientRecord | None:
        data = await self._get_record(self._k_clients, _client_key(client))
        return ClientRecord.model_validate_json(data) if data else None

    async def list_clients(self) -> list[ClientRecord]:
        rows = await self._list_records(self._k_clients)
        return [ClientRecord.model_validate_json(row) for row in rows]

    # --- client configurations --------------------------------------------------------

    async def get_client_config(self, client: ClientSlot) -> ClientConfig | None:
        with _unavailable_on_failure():
            data = await self._redis.hget(self._k_configs, _client_key(client))
        return ClientConfig.model_validate_json(data) if data else None

    async def set_client_config(self, client: ClientSlot, config: ClientConfig | None) -> None:
        args = [_client_key(client)]
        if config is not None:
            args.append(config.model_dump_json())
        with _unavailable_on_failure():
            await self._set_config(keys=[self._k_configs], args=args)

    async def forget_client_config(self, record: ClientRecord) -> bool:
        field = _client_key(record.client)
        with _unavailable_on_failure():
            forgotten = await self._forget_config(
                keys=[self._k_clients, self._k_configs], args=[field, record.model_dump_json()]
            )
        return bool(forgotten)

    # --- the card inventory --------------------------------------------------------------

    async def put_cards(self, bank_id: int, cards: Collection[CardRecord]) -> None:
        check_bank_cards(bank_id, cards)
        args: list[str | int] = [bank_id, *(card.model_dump_json() for card in cards)]
        with _unavailable_on_failure():
            await self._put_cards(keys=[self._k_cards], args=args)

    async def cards(self) -> list[CardRecord]:
        with _unavailable_on_failure():
            rows = await self._redis.hvals(self._k_cards)
        return sorted((CardRecord.model_validate_json(row) for row in rows), key=card_order)

    async def card(self, iccid: str) -> CardRecord | None:
        return next((card for card in await self.cards() if card.iccid == iccid), None)

    # --- the audit log ------------------------------------------------------------------

    def _audit_index(self, what: str, value: object) -> str:
        return f"{self._k_audit_index}{what}:{value}"

    async def add_audit(self, entry: AuditEntry) -> AuditEntry:
        # The entries added while a call is on its way (or in the same event-loop iteration)
        # go out together, as one script call (up to AUDITS_PER_CALL), in the order added:
        # a burst of maps writes several entries per map.
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._audit_queue.append((entry, future))
        if self._audit_sender is None or self._audit_sender.done():
            self._audit_sender = asyncio.create_task(self._send_audits())
        return entry.model_copy(update={"seq": await future})

    async def _send_audits(self) -> None:
        while self._audit_queue:
            batch = self._audit_queue[:AUDITS_PER_CALL]
            del self._audit_queue[:AUDITS_PER_CALL]
            try:
                with _unavailable_on_failure():
                    keys, args = self._audit_call(batch)
                    seqs = await self._add_audits(keys=keys, args=args)
            except asyncio.CancelledError:
                for _, future in [*batch, *self._audit_queue]:
                    future.cancel()
                raise
            except Exception as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), seq in zip(batch, seqs, strict=True):
                if not future.done():  # its caller gave up
                    future.set_result(int(seq))

    def _audit_call(
        self, batch: list[tuple[AuditEntry, asyncio.Future[int]]]
    ) -> tuple[list[str], list[str | int]]:
        """The keys and args of the ``_ADD_AUDITS`` call that appends ``batch``."""
        keys = [
            self._k_audit,
            self._k_audit_seq,
            self._k_audit_seqs,
            self._k_audit_by_clock,
            self._k_audit_clock,
        ]
        positions: dict[str, int] = {}
        args: list[str | int] = []
        for entry, _ in batch:
            indexes = [self._audit_index("kind", entry.kind.value)]
            if entry.bank_id is not None:
                indexes.append(self._audit_index("bank", entry.bank_id))
            if entry.client_id is not None:
                indexes.append(self._audit_index("client", entry.client_id))
            args += [entry.model_dump_json(exclude={"seq"}), repr(entry.time), len(indexes)]
            for index in indexes:
                if index not in positions:
                    keys.append(index)
                    positions[index] = len(keys)  # Lua counts from 1
                args.append(positions[index])
        return keys, args

    async def list_audit(self, query: AuditQuery) -> list[AuditEntry]:
        # The index most likely the smallest; the script checks the other filters.
        if query.bank_id is not None:
            index = self._audit_index("bank", query.bank_id)
        elif query.client_id is not None:
            index = self._audit_index("client", query.client_id)
        elif query.kind is not None:
            index = self._audit_index("kind", query.kind.value)
        else:
            index = self._k_audit_seqs
        filters = [
            "" if value is None else str(value)
            for value in (
                None if query.since is None else repr(query.since),
                None if query.kind is None else query.kind.value,
                query.bank_id,
                query.client_id,
            )
        ]
        found: list[AuditEntry] = []
        after = query.after
        while True:
            args: list[str | int] = [after, query.limit - len(found), self.audit_scan_batch]
            args += filters
            with _unavailable_on_failure():
                exhausted, cursor, *rows = await self._list_audit(
                    keys=[self._k_audit, index, self._k_audit_by_clock], args=args
                )
            found += (
                AuditEntry.model_validate_json(data).model_copy(update={"seq": int(seq)})
                for seq, data in zip(rows[::2], rows[1::2], strict=True)
            )
            if exhausted or len(found) >= query.limit:
                return found
            after = int(cursor)

    async def prune_audit(self, before: float) -> int:
        keys = [self._k_audit, self._k_audit_seqs, self._k_audit_by_clock, self._k_audit_index]
        dropped = 0
        while True:
            with _unavailable_on_failure():
                n = int(
                    await self._prune_audit(keys=keys, args=[repr(before), self.audit_scan_batch])
                )
            dropped += n
            if n < self.audit_scan_batch:
                return dropped

    # --- leases -----------------------------------------------------------------------

    @property
    def _lease_ms(self) -> int:
        return max(1, round(self.lease_ttl * 1000))

    async def claim_core(self, core_id: str) -> int:
        """Start as core ``core_id``: drop the registry records left under that id (by a
        predecessor with the same id that died: they are not this process's connections)
        and hold its lease from now on. Returns how many records were dropped."""
        keys = [
            self._k_banks,
            f"{self._k_banks}:order",
            self._k_clients,
            f"{self._k_clients}:order",
        ]
        with _unavailable_on_failure():
            dropped = int(await self._drop_core(keys=keys, args=[core_id]))
            await self._redis.set(self._k_lease + core_id, "1", px=self._lease_ms)
        if dropped:
            log.warning("dropped %d registry entries of a previous core %s", dropped, core_id)
        self._held.setdefault(core_id, {})
        self._ensure_refresher()
        return dropped

    def _ensure_refresher(self) -> None:
        if self._stopping.is_set():
            return
        if self._refresher is None or self._refresher.done():
            self._refresher = asyncio.get_running_loop().create_task(
                self._refresh_leases(), name="remsim-lease-refresher"
            )

    async def _refresh_leases(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.refresh_leases()
            except BackendUnavailable as exc:
                if self._reachable:
                    log.warning("lease refresh failed, will retry: %s", exc)
                self._reachable = False
            except Exception:  # a bad record or script error must not end the refresher
                log.exception("lease refresh failed, will retry")
            else:
                if not self._reachable:
                    self._reachable = True
                    log.info("Redis reachable again")
                    if self.on_recovered is not None:
                        try:
                            await self.on_recovered()
                        except Exception:
                            log.exception("on_recovered hook failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.lease_ttl / 3)

    async def refresh_leases(self) -> None:
        """Carry out the unregistrations that failed while Redis was away, extend the lease
        of every core this store registered for, and where a lease had lapsed, put that
        core's records back (see the module doc)."""
        while self._unregisters:
            await self._unregister_now(*self._unregisters[0])
            self._unregisters.pop(0)
        for core_id, held in list(self._held.items()):
            key = self._k_lease + core_id
            with _unavailable_on_failure():
                if await self._redis.set(key, "1", px=self._lease_ms, xx=True):
                    continue
                await self._redis.set(key, "1", px=self._lease_ms)
                log.warning("lease of core %s had lapsed; re-asserting its records", core_id)
                for (records, field), data in list(held.items()):
                    ok = await self._reassert(
                        keys=[records, f"{records}:order", self._k_seq],
                        args=[field, data, self._k_lease],
                    )
                    if not ok:
                        log.warning("%s %s was taken by another core meanwhile", records, field)
                        held.pop((records, field), None)

    async def release_leases(self) -> None:
        """End the leases this store holds: the cores' remaining records vanish now rather
        than after the TTL (a clean shutdown)."""
        cores, self._held = list(self._held), {}
        if cores:
            with contextlib.suppress(*_UNREACHABLE):
                await self._redis.delete(*(self._k_lease + core for core in cores))

    async def close(self) -> None:
        # Stop the refresher between two refreshes rather than cancelling it inside a
        # Redis command (cancelling redis-py mid-command is not reliable).
        self._stopping.set()
        if self._refresher is not None:
            done, _ = await asyncio.wait({self._refresher}, timeout=self._timeout + 1)
            if not done:
                self._refresher.cancel()
            self._refresher = None
        await self.release_leases()
        await self._redis.aclose()
        if self._scripts is not None:
            await self._scripts.aclose()

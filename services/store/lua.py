"""Lua scripts for every multi-key mailbox change, so each one is atomic (docs/design.md invariants 4, 5 and 6)."""

from __future__ import annotations

from string import Template

# KEYS: dedup, account, usage, seq, index, sizes, body, wire
# ARGV: uid, body, dedup ttl (seconds), header lines stored before the body ('' or absent: none), '1' when header
# and body are in wire form (shared.dotstuff.wire_form: POP3 then sends them without a pass over the bytes)
# Returns {status, detail}: 1 stored (detail = sequence), 0 duplicate, -1 over quota, -2 no such mailbox.
# A uid still in the mailbox is a duplicate too, whether or not its dedup key expired (invariant 4): a dead letter
# requeued after the dedup TTL can never store a second copy or count its size twice. The header (Return-Path) is
# its own argument so that the caller never builds a second copy of a large body: Redis joins the two (SET, APPEND).
# $seen and $mark say how the message was recorded as stored (the delivery's dedup key, an import's hash field).
_STORE_TEMPLATE = Template("""
if $seen or redis.call('HEXISTS', KEYS[6], ARGV[1]) == 1 then return {0, 0} end
if redis.call('EXISTS', KEYS[2]) == 0 then return {-2, 0} end
local head = ARGV[4] or ''
local size = string.len(head) + string.len(ARGV[2])
local quota = tonumber(redis.call('HGET', KEYS[2], 'quota') or '0') or 0
local used = tonumber(redis.call('HGET', KEYS[3], 'bytes') or '0') or 0
if quota > 0 and used + size > quota then return {-1, used} end
local seq = redis.call('INCR', KEYS[4])
if head == '' then
  redis.call('SET', KEYS[7], ARGV[2])
else
  redis.call('SET', KEYS[7], head)
  redis.call('APPEND', KEYS[7], ARGV[2])
end
redis.call('ZADD', KEYS[5], seq, ARGV[1])
redis.call('HSET', KEYS[6], ARGV[1], size)
if ARGV[5] == '1' then redis.call('SADD', KEYS[8], ARGV[1]) else redis.call('SREM', KEYS[8], ARGV[1]) end
redis.call('HINCRBY', KEYS[3], 'bytes', size)
redis.call('HINCRBY', KEYS[3], 'messages', 1)
$mark
return {1, seq}
""")

STORE_MESSAGE = _STORE_TEMPLATE.substitute(
    seen="redis.call('EXISTS', KEYS[1]) == 1", mark="redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[3]))"
)

# The same with KEYS[1] = the mailbox's `imported` hash and ARGV[3] = what to record for the uid (the import time):
# a uid imported once is never stored again, even after POP3 deleted it (re-running an import restores nothing),
# for as long as the mailbox lives. Imported uids are the UIDLs the old server served (tests/store/test_import.py).
IMPORT_MESSAGE = _STORE_TEMPLATE.substitute(
    seen="redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1", mark="redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])"
)

# The progress step shared by RECORD_PROGRESS and the queue index scripts (queue_lua.py): `pairs` is a flat list
# recipient, state, ...; `ttl` seconds, 0 keeps the record without a TTL.
# States: stored, duplicate, relayed, bounced, deleted (final: never changed once set), or deferred:N (the retry copy
# of attempt N carries the recipient; only replaced by a final state or a later attempt). So a late or repeated
# write from an older delivery can never move a recipient backwards.
PROGRESS_STEP = """
local function record_progress(key, ttl, pairs)
  for i = 1, #pairs, 2 do
    local new = pairs[i + 1]
    local old = redis.call('HGET', key, pairs[i])
    local replace = not old
    if old and string.sub(old, 1, 9) == 'deferred:' then
      replace = string.sub(new, 1, 9) ~= 'deferred:'
        or (tonumber(string.sub(new, 10)) or 0) > (tonumber(string.sub(old, 10)) or 0)
    end
    if replace then redis.call('HSET', key, pairs[i], new) end
  end
  if redis.call('EXISTS', key) == 0 then return end
  if tonumber(ttl) > 0 then
    redis.call('EXPIRE', key, tonumber(ttl))
  else
    redis.call('PERSIST', key)
  end
end
"""

# KEYS: progress. ARGV: ttl seconds (0: keep the record without a TTL), then recipient, state pairs.
RECORD_PROGRESS = (
    PROGRESS_STEP
    + """
record_progress(KEYS[1], ARGV[1], {unpack(ARGV, 2)})
return 1
"""
)

# KEYS: one message's trace list. ARGV: the most events it keeps, its TTL in seconds, then the events to append.
# One command instead of RPUSH, LTRIM and EXPIRE (services/store/trace.py); the oldest events are kept, and the LTRIM
# runs only once the list outgrew its bound (a looping message).
APPEND_TRACE = """
local length = redis.call('RPUSH', KEYS[1], unpack(ARGV, 3))
local most = tonumber(ARGV[1])
if length > most then redis.call('LTRIM', KEYS[1], 0, most - 1) end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
return length
"""

# KEYS: index, sizes, wire. Returns a flat list uid1, size1, wire1, uid2, ... in arrival order (wire: 1 when the
# body is stored in wire form, 0 otherwise or when stored before the flag existed): a consistent snapshot.
# Three commands whatever the mailbox holds (one HGETALL, not an HGET per message: bench.scaling mailbox).
SNAPSHOT = """
local uids = redis.call('ZRANGE', KEYS[1], 0, -1)
local flat = redis.call('HGETALL', KEYS[2])
local sizes = {}
for i = 1, #flat, 2 do sizes[flat[i]] = flat[i + 1] end
local wire = {}
for _, uid in ipairs(redis.call('SMEMBERS', KEYS[3])) do wire[uid] = 1 end
local out = {}
for i, uid in ipairs(uids) do
  out[#out + 1] = uid
  out[#out + 1] = sizes[uid] or '0'
  out[#out + 1] = wire[uid] or 0
end
return out
"""

# KEYS: lock, index, sizes, usage, wire, body1..bodyN.  ARGV: token, uid1..uidN.
# Deletes only while the caller still owns the lock. Returns the number removed, or -1 when the lock is lost.
DELETE_MESSAGES = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
local removed, bytes = 0, 0
for i = 2, #ARGV do
  local uid = ARGV[i]
  if redis.call('ZREM', KEYS[2], uid) == 1 then
    bytes = bytes + (tonumber(redis.call('HGET', KEYS[3], uid) or '0') or 0)
    redis.call('HDEL', KEYS[3], uid)
    redis.call('SREM', KEYS[5], uid)
    redis.call('DEL', KEYS[i + 4])
    removed = removed + 1
  end
end
if removed > 0 then
  redis.call('HINCRBY', KEYS[4], 'messages', -removed)
  redis.call('HINCRBY', KEYS[4], 'bytes', -bytes)
end
return removed
"""

# KEYS: lock. ARGV: token, ttl ms. 1 when refreshed, 0 when the lock belongs to someone else or expired.
REFRESH_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

# KEYS: lock. ARGV: token.
RELEASE_LOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: account. ARGV: field1, value1, field2, value2, ...
# Creates the account only when it does not exist yet. 1 created, 0 already there. An account holding exactly these
# values is this very call's, repeated after its connection died (the password hash is salted): 1 again.
CREATE_ACCOUNT = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  for i = 1, #ARGV, 2 do
    if redis.call('HGET', KEYS[1], ARGV[i]) ~= ARGV[i + 1] then return 0 end
  end
  return 1
end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""

# KEYS: account. ARGV: field, value, expected ('' = any).
# Sets a field of an existing account only: a concurrent removal must not be undone by a late HSET recreating
# the hash, and a rehash after login must not overwrite a password changed meanwhile. 1 set (or already holding
# `value`: this call repeated after its connection died), 0 no account, -1 the field no longer holds `expected`.
UPDATE_ACCOUNT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current == ARGV[2] then return 1 end
if ARGV[3] ~= '' and current ~= ARGV[3] then return -1 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

# KEYS: account, lock. Closes a mailbox: without its account no delivery stores (STORE_MESSAGE checks it), and
# without its lock an open POP3 session can neither refresh nor delete (its owner-token checks fail).
# Returns 1 when the account existed.
CLOSE_MAILBOX = """
local existed = redis.call('DEL', KEYS[1])
redis.call('DEL', KEYS[2])
return existed
"""

# KEYS: lock, account. ARGV: token, ttl ms. 1 when taken; 0 when held by another session or the account is gone
# (so a session that logged in just before its user was removed cannot lock, and then delete from, a dead mailbox).
# A lock already holding this (fresh, random) token is this call's, repeated after its connection died: 1 again.
ACQUIRE_LOCK = """
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""

# GCRA (the generic cell rate algorithm): each counter keeps one number, the "theoretical arrival time" (TAT, ms),
# and allows `limit` units per `period` with a burst of the whole `limit`; a unit costs period/limit ms of it. All
# counters must allow the request or none is charged. The clock is Redis's own (TIME), so replicas of a service
# on machines whose clocks differ still share one schedule.
# KEYS: one TAT key per counter, then optionally an account hash whose `send_limit` field, when set and not empty
# ("messages,recipients/period_ms"), replaces ARGV's limits and period.
# ARGV: period (ms), then limit and cost of each counter.
# Returns {status, counter, limit, period, wait}: status 1 allowed; 0 over the limit of counter (1-based), allowed
# again in `wait` ms; -1 the cost alone is over that counter's limit (never allowed); limit and period are the ones
# applied (the override's, when there is one).
RATE_LIMIT = """
local n = (#ARGV - 1) / 2
local period = tonumber(ARGV[1])
local limits = {}
for i = 1, n do limits[i] = tonumber(ARGV[2 * i]) end
if #KEYS > n then
  local override = redis.call('HGET', KEYS[n + 1], 'send_limit')
  if override and override ~= '' then
    local m, r, p = string.match(override, '^(%d+),(%d+)/(%d+)$')
    if m then
      period = tonumber(p)
      limits[1] = tonumber(m)
      if n > 1 then limits[2] = tonumber(r) end
    end
  end
end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local tats = {}
for i = 1, n do
  local cost, limit = tonumber(ARGV[2 * i + 1]), limits[i]
  if cost > limit then return {-1, i, limit, period, 0} end
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0') or 0
  if tat < now then tat = now end
  -- A state left by a longer period (the limit changed) owes at most one whole period of the present one.
  if tat > now + period then tat = now + period end
  local new = tat + cost * period / limit
  if new - now > period then return {0, i, limit, period, math.ceil(new - now - period)} end
  tats[i] = new
end
for i = 1, n do
  redis.call('SET', KEYS[i], string.format('%.3f', tats[i]), 'PX', math.max(1, math.ceil(tats[i] - now)))
end
return {1, 0, 0, period, 0}
"""

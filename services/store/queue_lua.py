"""Lua scripts of the queue index: each changes one message's entry (and its progress record) atomically."""

from __future__ import annotations

from services.store.lua import PROGRESS_STEP

# Entry fields (a hash): queue_id, arrival, sender, recipients (JSON list), attempts, last_error, next_attempt,
# size, state (active, deferred, held, dead, deleted), bounce ("1": deleted with a report), updated.

# KEYS: progress, entry. ARGV: ttl, n, then n recipient/state pairs, then mode (defer, active, dead, idle, finish),
# then entry field/value pairs, the last pair being `attempts`. The progress step and the entry change are one step,
# so a crash leaves both or neither. `finish` deletes the entry; `idle` (a copy ended while another carries the
# message on) turns `active` back into `deferred`. Otherwise the fields are set, unless the entry already names a
# later attempt (a late write of a copy since superseded never moves it backwards); a state the operator chose
# (held, deleted) stays while the delivery under way when it was chosen records its outcome.
QUEUE_RECORD = (
    PROGRESS_STEP
    + """
local n = tonumber(ARGV[2])
record_progress(KEYS[1], ARGV[1], {unpack(ARGV, 3, 2 + 2 * n)})
local mode = ARGV[3 + 2 * n]
if mode == 'finish' then
  return redis.call('DEL', KEYS[2])
end
local e = redis.call('HMGET', KEYS[2], 'state', 'attempts')
local state = e[1]
if mode == 'idle' then
  if state == 'active' then redis.call('HSET', KEYS[2], 'state', 'deferred') end
  return 1
end
if state and mode ~= 'dead' and (tonumber(e[2]) or 0) > (tonumber(ARGV[#ARGV]) or 0) then return 0 end
if #ARGV > 3 + 2 * n then
  redis.call('HSET', KEYS[2], unpack(ARGV, 4 + 2 * n))
end
if state ~= 'held' and state ~= 'deleted' then
  redis.call('HSET', KEYS[2], 'state', (mode == 'defer' and 'deferred') or mode)
end
return 1
"""
)

# KEYS: entry. ARGV: now. A copy of the message comes to be attempted: {state before, bounce}, the entry then
# `active` unless the operator's state (held, deleted) decides what happens instead; {} without an entry.
QUEUE_CLAIM = """
local e = redis.call('HMGET', KEYS[1], 'state', 'bounce')
if not e[1] then return {} end
if e[1] ~= 'held' and e[1] ~= 'deleted' then
  redis.call('HSET', KEYS[1], 'state', 'active', 'updated', ARGV[1])
end
return {e[1], e[2] or ''}
"""

# KEYS: entry. ARGV: to state, allowed from states..., now. 1 changed (or already so), 0 no entry, -1 not allowed.
QUEUE_SET_STATE = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return 0 end
if state == ARGV[1] then return 1 end
for i = 2, #ARGV - 1 do
  if state == ARGV[i] then
    redis.call('HSET', KEYS[1], 'state', ARGV[1], 'updated', ARGV[#ARGV])
    return 1
  end
end
return -1
"""

# KEYS: progress, entry. ARGV: ttl, bounce ("1" or ""), now. Every recipient left gets the final state `deleted` in
# the progress record, so no copy of the message, wherever it is, attempts them again. Without a bounce the entry
# goes at once; with one it stays (state deleted) until the delivery has the body to compose the report from.
# 1 done, 0 no entry.
QUEUE_DELETE = (
    PROGRESS_STEP
    + """
local recipients = redis.call('HGET', KEYS[2], 'recipients')
if not recipients then return 0 end
local pairs = {}
for _, rcpt in ipairs(cjson.decode(recipients)) do
  pairs[#pairs + 1] = rcpt
  pairs[#pairs + 1] = 'deleted'
end
record_progress(KEYS[1], ARGV[2] == '1' and 0 or ARGV[1], pairs)
if ARGV[2] == '1' then
  redis.call('HSET', KEYS[2], 'state', 'deleted', 'bounce', '1', 'updated', ARGV[3])
else
  redis.call('DEL', KEYS[2])
end
return 1
"""
)

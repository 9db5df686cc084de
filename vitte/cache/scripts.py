"""The Redis cache's Lua scripts, one place, each with what it does and its KEYS/ARGV.

Each script runs atomically in Redis and does in one round trip what would otherwise take
several. `vitte.cache.redis.RedisCache` registers them; nothing else runs them.

| script      | used by                          | does |
|-------------|----------------------------------|------|
| APPEND      | `recent_append`                  | append messages to a cached list if it exists (idempotent by id) |
| RECENT      | `recent_get`                     | read a list, refresh its TTL |
| REPLACE     | `recent_replace`                 | replace the newest message with the same id |
| ENQUEUE     | `user_lock` (a waiter)           | join a player's lock queue in arrival order, or stay alive in it |
| CLAIM       | `user_lock` (polling, renewing)  | take the lock at the queue's head, or extend our own |
| ENTER       | `user_lock` (the fast path)      | join the queue and take a free lock in one call; with it the update's de-duplication and the prefetched rate count and recent list |
| LEAVE       | `user_lock` (a cancelled waiter) | leave the queue, give back a lock taken unheard |
| RELEASE     | `user_lock` (the release)        | the deferred rate hits and list appends, then compare-and-delete the lock |
| HIT         | `hit`                            | count a rate-limit hit in a fixed window |
| HIT_RECENT  | `hit_and_recent`                 | HIT and RECENT at once (a reply's two reads) |
| FIRST_SEEN  | `first_seen`                     | update de-duplication, SET NX with a token (a retry still says "first") |
| SPOOL_PUSH  | `spool_push`                     | append to the bounded spool unless it is full; count the item in its player's hold |
| SPOOL_DONE  | `spool_done`                     | one shared item of a player handled: their hold counts one less |
| SPOOL_TAKE  | `spool_pop`                      | take the spool's oldest item under the drainers' lease (one drainer at a time) |
| SPOOL_LEASE | `spool_lease`                    | renew the drainers' lease, or give it up, if it is ours |
"""

from __future__ import annotations

# Lua: `append(key, cap, ttl, first, n)` appends the n messages ARGV[first], ARGV[first + 2] …
# (each followed by its id prefix "[<id>,") in order if the list exists (a missing list stays
# missing). A message with the same id as the last item replaces it, so a retried append does
# not duplicate a message. One LTRIM after the pushes keeps the same newest `cap` items as a
# trim after each push.
APPEND_FN = """
local function append(key, cap, ttl, first, n)
  if n < 1 or redis.call('EXISTS', key) == 0 then return 0 end
  local last = redis.call('LINDEX', key, -1)
  local pushed = false
  for i = first, first + 2 * n - 1, 2 do
    local prefix = ARGV[i + 1]
    if last and string.sub(last, 1, #prefix) == prefix then
      redis.call('LSET', key, -1, ARGV[i])
    else
      redis.call('RPUSH', key, ARGV[i])
      pushed = true
    end
    last = ARGV[i]
  end
  if pushed then redis.call('LTRIM', key, -tonumber(cap), -1) end
  redis.call('PEXPIRE', key, ttl)
  return 1
end
"""

# KEYS[1] list; ARGV: cap, ttl ms, then per message: item, id prefix
APPEND = APPEND_FN + "return append(KEYS[1], ARGV[1], ARGV[2], 3, (#ARGV - 2) / 2)\n"

# Read the list and refresh its TTL. KEYS[1] list; ARGV: ttl ms
RECENT = """
local items = redis.call('LRANGE', KEYS[1], 0, -1)
if #items > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return items
"""

# Replace the newest item with the same id. KEYS[1] list; ARGV: item, id prefix, ttl ms
REPLACE = """
local items = redis.call('LRANGE', KEYS[1], 0, -1)
local n = #ARGV[2]
for i = #items, 1, -1 do
  if string.sub(items[i], 1, n) == ARGV[2] then
    redis.call('LSET', KEYS[1], i - 1, ARGV[1])
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
    return 1
  end
end
return 0
"""


def join_queue(alive_ms: str) -> str:
    """Lua: join the waiters' queue (a ticket in arrival order) or, already in it, stay alive
    for `alive_ms` more (an ARGV); sets `now`. KEYS: lock, queue, alive, counter; ARGV[1]: token."""
    return f"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = 2 * tonumber({alive_ms})
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then
  redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[4]), ARGV[1])
end
redis.call('ZADD', KEYS[3], now + tonumber({alive_ms}), ARGV[1])
for i = 2, 4 do redis.call('PEXPIRE', KEYS[i], ttl) end
"""


# Lua, after _join_queue: return 0 (wait) unless this token is at the queue's head; waiters
# ahead that stopped refreshing (a crashed process) are dropped.
AT_HEAD = """
while true do
  local head = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
  if head == ARGV[1] then break end
  local alive = redis.call('ZSCORE', KEYS[3], head)
  if alive and tonumber(alive) >= now then return 0 end
  redis.call('ZREM', KEYS[2], head)
  redis.call('ZREM', KEYS[3], head)
end
"""

# Join the waiters' queue (a ticket in arrival order) or, already in it, stay alive.
# KEYS: lock, queue, alive, counter; ARGV: token, alive ms
ENQUEUE = join_queue("ARGV[2]") + "return 1\n"

# Lua: the lock was just taken by this token (KEYS[5] the holder mark; ARGV[4] its ttl ms):
# `took()` returns 2, plus 4 when the previous holder never released the lock (it crashed or
# lost its lease: what it cached for the player may be stale, see `LockHold.suspect`), plus 8
# when KEYS[7] (an update's de-duplication key, ARGV[5] its ttl ms; ARGV[5] '': none) was
# seen before, plus 16 when KEYS[6] (the player's spool hold, `SPOOL_PUSH`) exists: the
# player has updates kept in the shared spool (`LockHold.spool_held`). With KEYS[8] (a rate
# counter) and KEYS[9] (a recent list; ARGV[6] its ttl ms) it returns {that, the counter's
# value, the list's items} (`Prefetch`). The mark lives as long as the recent lists (a crash
# is noticed however late the player returns); a clean release (`RELEASE`) empties it.
TOOK = """
local function took()
  local r = 2
  local prev = redis.call('GET', KEYS[5])
  if prev and prev ~= '' and prev ~= ARGV[1] then r = r + 4 end
  redis.call('SET', KEYS[5], ARGV[1], 'PX', ARGV[4])
  if redis.call('EXISTS', KEYS[6]) == 1 then r = r + 16 end
  if #KEYS > 6 and ARGV[5] ~= '' then
    local seen = redis.call('GET', KEYS[7])
    if not seen then
      redis.call('SET', KEYS[7], ARGV[1], 'PX', ARGV[5])
    elseif seen ~= ARGV[1] then
      r = r + 8
    end
  end
  if #KEYS > 8 then
    local items = redis.call('LRANGE', KEYS[9], 0, -1)
    if #items > 0 then redis.call('PEXPIRE', KEYS[9], ARGV[6]) end
    return {r, tonumber(redis.call('GET', KEYS[8]) or '0'), items}
  end
  return r
end
"""

# Take the lock if free, extend it if ours: 2 = taken (+4: see TOOK), 1 = extended, 0 = held
# by another. Renewing (KEYS[1] only; ARGV: token, lease ms) re-takes a lock Redis lost on
# restart. Acquiring (KEYS: lock, queue, alive, counter, holder, spool hold; ARGV: token,
# lease ms, alive ms, holder ttl ms) joins the waiters' queue and takes a free lock only at its head, so the
# processes take turns in arrival order; waiters that stopped refreshing (a crashed process)
# are dropped.
CLAIM = TOOK + """
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  if #KEYS > 1 then
    redis.call('ZREM', KEYS[2], ARGV[1])
    redis.call('ZREM', KEYS[3], ARGV[1])
  end
  return 1
end
if #KEYS > 1 then
""" + join_queue("ARGV[3]") + AT_HEAD + """  if v then return 0 end
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return took()
end
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 2
end
return 0
"""

# ENQUEUE and then CLAIM in one call, for a caller with no waiter of its own process ahead
# of it: join the waiters' queue and take the lock if it is free and this token is at the
# queue's head (dead waiters ahead are dropped, as CLAIM does): 0 = queued (poll with
# CLAIM), else taken (2, +4 +8 +16: see TOOK; with KEYS[7] the update's de-duplication is done
# in the same call). Nobody queued and the lock free: taken without touching the queue
# (joining would make this token the head and taking the lock would leave the queue again).
# A retried call that already took the lock says taken again (and "first" for its update).
# KEYS: lock, queue, alive, counter, holder, spool hold[, seen[, hit, list]]; ARGV: token, lease ms,
# alive ms, holder ttl ms[, seen ttl ms or ''[, list ttl ms]]
ENTER = TOOK + """
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[3], ARGV[1])
  return took()
end
if not v and redis.call('ZCARD', KEYS[2]) == 0 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return took()
end
""" + join_queue("ARGV[3]") + AT_HEAD + """if v then return 0 end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return took()
"""

# Leave the queue; give the lock back (the holder mark emptied) if a claim we never heard of
# took it. KEYS: lock, queue, alive, holder; ARGV: token
LEAVE = """
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
if redis.call('GET', KEYS[4]) == ARGV[1] then redis.call('SET', KEYS[4], '', 'KEEPTTL') end
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# Release: the hits (`LockHold.defer_hit`) and the appends (`LockHold.defer_append`) deferred
# while the lock was held, the holder mark emptied (a clean release), the lock deleted if still
# ours (compare-and-delete). The appends are skipped when another holder took the lock meanwhile
# (our lease ran out; the mark is not ours): it distrusted the cached lists (`took`: +4) and
# read the database, where our rows already were. No mark at all (Redis lost its data): the
# lists are gone too.
# KEYS: lock, holder, then the counters, then one list per dialog; ARGV: token, cap, ttl ms,
# the number of counters, each counter's ttl ms, then per list: n and n (item, id prefix) pairs
RELEASE = APPEND_FN + """
local hits = tonumber(ARGV[4])
for k = 3, 2 + hits do
  redis.call('INCR', KEYS[k])
  redis.call('PEXPIRE', KEYS[k], ARGV[2 + k])
end
local h = redis.call('GET', KEYS[2])
if h == ARGV[1] or not h then
  if h then redis.call('SET', KEYS[2], '', 'PX', ARGV[3]) end
  local a = 5 + hits
  for k = 3 + hits, #KEYS do
    local n = tonumber(ARGV[a])
    append(KEYS[k], ARGV[2], ARGV[3], a + 1, n)
    a = a + 1 + 2 * n
  end
end
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# Count a hit in a fixed window; the counter outlives its window. KEYS[1] counter; ARGV: ttl ms
HIT = """
local n = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return n
"""

# HIT and RECENT in one call (a reply's two reads). KEYS: hit key, list; ARGV: hit ttl ms, list ttl ms
HIT_RECENT = """
local n = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
local items = redis.call('LRANGE', KEYS[2], 0, -1)
if #items > 0 then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
return {n, items}
"""

# SET NX with a token, so a retry of our own successful call still says "first".
# KEYS[1] seen key; ARGV: token, ttl ms
FIRST_SEEN = """
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if v == ARGV[1] then return 1 end
return 0
"""

# Append to the spool unless it holds `limit` items, and count the item in its player's hold
# (read by TOOK as the player's lock is taken; it lives `ttl` ms after the player's last item:
# an older one is given up anyway). KEYS: spool list, the player's hold; ARGV: item, limit,
# ttl ms. Returns the new length, or -1 when full.
SPOOL_PUSH = """
if redis.call('LLEN', KEYS[1]) >= tonumber(ARGV[2]) then return -1 end
local n = redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('INCR', KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return n
"""

# One shared item of a player was handled (or given up): their hold counts one less, and is
# gone at none. KEYS[1] the player's hold
SPOOL_DONE = """
if redis.call('DECR', KEYS[1]) <= 0 then redis.call('DEL', KEYS[1]) end
return 1
"""

# Take the spool's oldest item, if this drainer may: one drainer at a time takes from the
# shared list (so a player's kept updates are handled in the order they were kept), the one
# holding the lease KEYS[2]. A take by the holder, or by anyone while no one holds it, takes
# (or renews) the lease with the item; a take that finds the list empty gives ours up (nothing
# is in hand: the next item may go to any drainer). KEYS: spool list, the drainers' lease;
# ARGV: token, lease ms. Returns the item, nil when the list is empty, 0 when another drainer
# holds the lease and the list is not empty.
SPOOL_TAKE = """
local holder = redis.call('GET', KEYS[2])
if holder and holder ~= ARGV[1] then
  if redis.call('LLEN', KEYS[1]) > 0 then return 0 end
  return false
end
local item = redis.call('LPOP', KEYS[1])
if item then
  redis.call('SET', KEYS[2], ARGV[1], 'PX', ARGV[2])
elseif holder then
  redis.call('DEL', KEYS[2])
end
return item
"""

# The drainers' lease, if ours (token ARGV[1]): renewed for ARGV[2] ms, or given up when
# ARGV[2] is 0 (the drainer stops). KEYS[1] the lease. Returns 1 when it was ours, else 0.
SPOOL_LEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[2]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
else
  redis.call('DEL', KEYS[1])
end
return 1
"""

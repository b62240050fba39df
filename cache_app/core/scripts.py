"""Lua scripts of the LLM cache. Every key they touch is passed in KEYS (built by cache_app.core.keys).

A lookup needs no script: one MGET of (epoch, generation, entry) and a tag comparison in
Python. Writes and reclaim need atomicity with the generation read, hence scripts.
"""

from __future__ import annotations

# The scope's current tag, from v = MGET(epoch, generation). Mirrors tags.make_tag.
TAG_LUA = (
    "local v = redis.call('MGET', KEYS[1], KEYS[2])\nlocal tag = 'e' .. (v[1] or '0') .. 'g' .. (v[2] or '0') .. '|'\n"
)

# KEYS: epoch, generation, entry. ARGV: payload, ttl seconds, expected tag ('' = whatever is current).
# The tag is read and written in one atomic step, so a write that loses a race with an
# invalidation either lands before it (and dies with it) or carries the new tag. With an
# expected tag (the write token's: the tag seen by the miss that triggered the call) an
# answer computed before an invalidation is refused instead of being stored under the new
# generation.
SET_LUA = (
    TAG_LUA
    + """if ARGV[3] ~= '' and ARGV[3] ~= tag then return 0 end
redis.call('SET', KEYS[3], tag .. ARGV[1], 'EX', ARGV[2])
return 1
"""
)

# KEYS: epoch, generation. Returns the new generation and the epoch (for the dead tag).
INVALIDATE_LUA = """local gen = redis.call('INCR', KEYS[2])
return {redis.call('GET', KEYS[1]) or '0', gen}
"""

# KEYS: epoch, generation, then candidate entries of that one scope. Deletes those whose
# tag is not current (dead); returns how many it deleted. Atomic with the tag read, so an
# entry written under the current tag after the SCAN is never touched.
RECLAIM_LUA = (
    TAG_LUA
    + """local n = string.len(tag)
local removed = 0
for i = 3, #KEYS do
  local head = redis.call('GETRANGE', KEYS[i], 0, n - 1)
  if head ~= '' and head ~= tag then
    removed = removed + redis.call('UNLINK', KEYS[i])
  end
end
return removed
"""
)

# KEYS: epoch, generation of ONE scope. ARGV: SCAN cursor, the scope's entry pattern
# (keys.llm_scope_pattern), COUNT. One SCAN step done server-side: the scope's keys never
# travel to the client, and one call blocks Redis for about COUNT keys' worth of work.
# Returns {next cursor, keys deleted}.
RECLAIM_SCAN_LUA = (
    TAG_LUA
    + """local n = string.len(tag)
local page = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[3])
local dead = {}
for _, key in ipairs(page[2]) do
  local head = redis.call('GETRANGE', key, 0, n - 1)
  if head ~= '' and head ~= tag then dead[#dead + 1] = key end
end
local removed = 0
if #dead > 0 then removed = redis.call('UNLINK', unpack(dead)) end
return {page[1], removed}
"""
)

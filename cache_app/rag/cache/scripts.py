"""Lua script of the RAG log. Entries reuse the LLM layer's SET_LUA / RECLAIM_LUA (same tag scheme).

LOG_APPEND_LUA reads the namespace's log head and appends to that segment in one atomic
step, so no record can land in a segment that readers have already left (a writer that
read the head before a rollover and appended after it). The segment key is the log base
(built by ``keys.rag_log_base``, passed in ARGV) followed by the head number: it cannot be
listed in KEYS because it depends on the head read inside the script. (mgecache runs on a
single Redis or Sentinel, never Cluster, where this would need a hash tag.)

KEYS: head, first.  ARGV: log base, record, segment size limit, ttl, first head number, retention.
Returns {segment number, segment length after the append}.
"""

from __future__ import annotations

LOG_APPEND_LUA = """local head = redis.call('GET', KEYS[1])
if not head then
  head = ARGV[5]
  redis.call('SET', KEYS[1], head)
  redis.call('SET', KEYS[2], head)
end
local segment = ARGV[1] .. head
local length = redis.call('APPEND', segment, ARGV[2])
redis.call('EXPIRE', segment, ARGV[4], 'NX')
redis.call('EXPIRE', segment, ARGV[4], 'GT')
for i = 1, 2 do
  redis.call('EXPIRE', KEYS[i], ARGV[4], 'NX')
  redis.call('EXPIRE', KEYS[i], ARGV[4], 'GT')
end
if length >= tonumber(ARGV[3]) then
  local nxt = redis.call('INCR', KEYS[1])
  redis.call('UNLINK', ARGV[1] .. string.format('%d', nxt - tonumber(ARGV[6])))
end
return {tonumber(head), length}
"""

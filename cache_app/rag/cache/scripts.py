"""Lua script of the RAG log. Entries reuse the LLM layer's SET_LUA / RECLAIM_LUA (same tag scheme).

LOG_APPEND_LUA appends one record to the segment of the head the caller read, checking in
the same atomic step that the head has not moved, so no record can land in a segment that
readers have already left (a writer that read the head before a rollover and appended after
it). Every key it touches is passed in KEYS (built by ``keys.rag_log_segment``), so it runs on
a Redis Cluster: they all carry the scope's hash tag. If the head moved, the script changes
nothing and returns ``{-1, current head}``; the caller retries with that head.

KEYS: head, first, segment <expected head>, segment <expected head + 1 - retention>
(unlinked when this append fills the segment and the head moves on).
ARGV: record, segment size limit, ttl, expected head (also the first head of a new log).
Returns {segment number, segment length after the append}, or {-1, current head}.
"""

from __future__ import annotations

LOG_APPEND_LUA = """local head = redis.call('GET', KEYS[1])
if not head then
  head = ARGV[4]
  redis.call('SET', KEYS[1], head)
  redis.call('SET', KEYS[2], head)
elseif head ~= ARGV[4] then
  return {-1, tonumber(head)}
end
local length = redis.call('APPEND', KEYS[3], ARGV[1])
redis.call('EXPIRE', KEYS[3], ARGV[3], 'NX')
redis.call('EXPIRE', KEYS[3], ARGV[3], 'GT')
for i = 1, 2 do
  redis.call('EXPIRE', KEYS[i], ARGV[3], 'NX')
  redis.call('EXPIRE', KEYS[i], ARGV[3], 'GT')
end
if length >= tonumber(ARGV[2]) then
  redis.call('INCR', KEYS[1])
  redis.call('UNLINK', KEYS[4])
end
return {tonumber(head), length}
"""

# Attempts of an append whose head moved under it (another writer rolled the segment over).
APPEND_ATTEMPTS = 5

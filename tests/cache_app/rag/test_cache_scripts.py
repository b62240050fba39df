"""LOG_APPEND_LUA: every key in KEYS; an append to a head that moved changes nothing and says where the head is."""

import pytest

from cache_app.core import keys
from cache_app.rag.cache.scripts import LOG_APPEND_LUA

pytestmark = pytest.mark.redis_server


def append(redis, base: str, head: int, record: bytes, limit: int = 8, retention: int = 3) -> list[int]:
    script_keys = [
        keys.rag_log_head(base),
        keys.rag_log_first(base),
        keys.rag_log_segment(base, head),
        keys.rag_log_segment(base, head + 1 - retention),
    ]
    return [int(v) for v in redis.eval(LOG_APPEND_LUA, 4, *script_keys, record, limit, 60, head)]


def test_a_new_log_starts_at_the_given_head_and_rolls_over(redis):
    base = keys.rag_log_base(None, "a" * 32, 4)
    assert append(redis, base, 100, b"abcd") == [100, 4]
    assert int(redis.get(keys.rag_log_first(base))) == 100
    assert append(redis, base, 100, b"efgh") == [100, 8]  # the segment is full: the head moves on
    assert int(redis.get(keys.rag_log_head(base))) == 101
    assert redis.get(keys.rag_log_segment(base, 100)) == b"abcdefgh"


def test_an_append_to_a_stale_head_is_refused_and_names_the_current_one(redis):
    base = keys.rag_log_base(None, "b" * 32, 4)
    append(redis, base, 7, b"abcdefgh")  # fills segment 7: head is 8
    assert append(redis, base, 7, b"late") == [-1, 8]
    assert redis.get(keys.rag_log_segment(base, 7)) == b"abcdefgh"  # unchanged
    assert append(redis, base, 8, b"late") == [8, 4]


def test_a_rollover_unlinks_the_segment_past_retention(redis):
    base = keys.rag_log_base(None, "c" * 32, 4)
    for head in (10, 11, 12):
        append(redis, base, head, b"12345678", retention=3)
    assert not redis.exists(keys.rag_log_segment(base, 10))  # head 13 - 3 retained segments
    assert redis.exists(keys.rag_log_segment(base, 11))

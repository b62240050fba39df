"""The bounded LRU map behind the per-process memos."""

import pytest

from cache_app.core.lru import LRU


def filled(maxsize, *keys):
    lru = LRU(maxsize)
    for key in keys:
        assert lru.put(key, key.upper()) == []
    return lru


def test_the_least_recently_used_goes_first_and_is_reported():
    lru = filled(3, "a", "b", "c")
    assert lru.put("d", "D") == [("a", "A")]
    assert list(lru) == ["b", "c", "d"]
    assert lru.put("e", "E") == [("b", "B")]


def test_get_and_touch_refresh_recency_peek_and_contains_do_not():
    lru = filled(3, "a", "b", "c")
    assert lru.get("a") == "A"
    assert lru.touch("b") is True
    assert lru.peek("c") == "C"
    assert "c" in lru
    assert list(lru) == ["c", "a", "b"]
    assert lru.put("d", "D") == [("c", "C")]


def test_missing_keys():
    lru = filled(2, "a")
    assert lru.get("x") is None
    assert lru.peek("x") is None
    assert lru.touch("x") is False
    assert "x" not in lru
    assert list(lru) == ["a"]


def test_touch_finds_a_none_value():
    lru = LRU(2)
    lru.put("a", None)
    lru.put("b", None)
    assert lru.touch("a") is True
    assert lru.put("c", None) == [("b", None)]


def test_the_bound_is_respected():
    lru = LRU(5)
    evicted = []
    for n in range(20):
        evicted += lru.put(n, n)
        assert len(lru) == min(n + 1, 5)
    assert [key for key, _ in evicted] == list(range(15))
    assert list(lru) == list(range(15, 20))


def test_replacing_a_value_moves_it_last_unless_touch_is_false():
    lru = filled(3, "a", "b", "c")
    assert lru.put("a", "A2") == []
    assert list(lru) == ["b", "c", "a"]
    assert lru.put("b", "B2", touch=False) == []
    assert list(lru) == ["b", "c", "a"]
    assert lru.put("d", "D") == [("b", "B2")]


def test_a_callable_bound_is_read_at_every_put():
    bound = [3]
    lru = LRU(lambda: bound[0])
    for key in "abc":
        lru.put(key, key)
    bound[0] = 1
    assert lru.maxsize == 1
    assert lru.put("d", "d") == [("a", "a"), ("b", "b"), ("c", "c")]
    assert list(lru) == ["d"]


def test_a_bound_of_zero_evicts_even_the_new_item():
    lru = LRU(0)
    assert lru.put("a", 1) == [("a", 1)]
    assert len(lru) == 0


def test_unbounded_until_the_caller_evicts():
    lru = filled(None, "a", "b", "c")
    assert lru.maxsize is None
    lru.get("a")
    assert lru.popoldest() == ("b", "B")
    assert lru.popoldest() == ("c", "C")
    assert list(lru.values()) == ["A"]


def test_popoldest_of_an_empty_map_raises():
    with pytest.raises(KeyError):
        LRU(1).popoldest()


def test_pop_len_contains_clear():
    lru = filled(4, "a", "b", "c")
    assert len(lru) == 3
    assert lru.pop("b") == "B"
    assert "b" not in lru
    assert len(lru) == 2
    assert lru.pop("b", None) is None
    with pytest.raises(KeyError):
        lru.pop("b")
    lru.clear()
    assert len(lru) == 0
    assert list(lru) == []
    assert "a" not in lru

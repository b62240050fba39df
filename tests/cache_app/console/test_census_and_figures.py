"""Live-entry counts (one SCAN) and the changelist's per-masterplan figures (one round trip per page)."""

import time
import uuid

import pytest
from redis.connection import AbstractConnection

from cache_app.console.census import LiveEntryCensus
from cache_app.console.figures import masterplan_figures
from cache_app.core import keys
from cache_app.core.counters import DurableCounters, get_counters
from cache_app.core.redis_client import CircuitBreaker, RedisGuard
from cache_app.llm.cache import LLMPromptCache
from cache_app.llm.pricing import SavingsLedger
from cache_app.rag.cache import RAGQueryCache
from tests.cache_app.console.conftest import dead_redis, fill

pytestmark = pytest.mark.django_db

MP_A = uuid.UUID("aaaaaaaa-0000-4000-8000-000000000001")
MP_B = uuid.UUID("bbbbbbbb-0000-4000-8000-000000000002")


def test_census_counts_live_entries_per_scope_and_layer(redis):
    fill(MP_A, llm=3, rag=2)
    fill(MP_B, llm=1, rag=0)
    fill(None, llm=2, rag=1)
    census = LiveEntryCensus(redis).run()
    assert census.complete
    assert census.count("llm", str(MP_A)) == 3
    assert census.count("rag", str(MP_A)) == 2
    assert census.count("llm", str(MP_B)) == 1
    assert census.count("rag", str(MP_B)) == 0
    assert census.count("llm", keys.GLOBAL_SCOPE) == 2
    assert census.total("llm") == 6
    assert census.total("rag") == 3


def test_invalidated_entries_are_not_live_even_before_they_are_deleted(redis):
    fill(MP_A, llm=2, rag=2)
    fill(MP_B, llm=1, rag=1)
    LLMPromptCache().invalidate_masterplan(MP_A, reclaim="none")  # dead, still in Redis
    RAGQueryCache().invalidate_all(reclaim="none")
    assert redis.exists(*[k for k in redis.scan_iter(match=keys.llm_scope_pattern(MP_A))]) == 2
    census = LiveEntryCensus(redis).run()
    assert census.count("llm", str(MP_A)) == 0
    assert census.count("llm", str(MP_B)) == 1
    assert census.total("rag") == 0


def test_census_of_chosen_scopes_only(redis):
    fill(MP_A, llm=2, rag=1)
    fill(MP_B, llm=4, rag=1)
    census = LiveEntryCensus(redis).run({str(MP_B)})
    assert census.live["llm"] == {str(MP_B): 4}


def test_census_stops_at_the_key_bound_and_says_so(redis):
    fill(MP_A, llm=5, rag=0)
    pipe = redis.pipeline()
    for i in range(3000):  # unrelated keys of this prefix to scan through
        pipe.set(f"{keys.prefix()}filler:{i}", 1)
    pipe.execute()
    census = LiveEntryCensus(redis, max_keys=1000).run()
    assert not census.complete
    assert 1000 <= census.scanned < 3005


def test_census_notes_masterplans_with_cost_counters(redis):
    counters = DurableCounters(redis, flush_seconds=60)
    SavingsLedger(counters=counters).add_saving("llm", 0.5, masterplan_id=MP_A)
    counters.flush()
    assert LiveEntryCensus(redis).run().cost_scopes == {str(MP_A)}


def _round_trips(monkeypatch) -> list[int]:
    sent = [0]
    original = AbstractConnection.send_packed_command

    def counting(self, command, check_health=True):
        sent[0] += 1
        return original(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
    return sent


def _traffic(masterplan_id, hits: int, misses: int, saved: float) -> None:
    counters = get_counters()
    counters.incr("llm", "hits", hits, masterplan_id=masterplan_id)
    counters.incr("llm", "misses", misses, masterplan_id=masterplan_id)
    SavingsLedger(counters=counters).add_saving("llm", saved, masterplan_id=masterplan_id)
    counters.flush()


def test_figures_of_a_page(redis):
    fill(MP_A, llm=2, rag=1)
    _traffic(MP_A, hits=3, misses=1, saved=0.25)
    census = LiveEntryCensus(redis)
    census.store(census.run())
    page = masterplan_figures([MP_A, MP_B], redis=redis)
    a, b = page.rows[str(MP_A)], page.rows[str(MP_B)]
    assert (a.llm_entries, a.rag_entries) == (2, 1)
    assert a.hit_rate == pytest.approx(0.75)
    assert a.saved_usd == pytest.approx(0.25)
    assert a.last_activity is not None
    assert abs(a.last_activity.timestamp() - time.time()) < 60
    assert (b.llm_entries, b.rag_entries, b.hit_rate, b.saved_usd, b.last_activity) == (0, 0, None, 0.0, None)
    assert page.census_complete
    assert page.census_at is not None


def test_without_a_census_the_entry_counts_are_unknown(redis):
    page = masterplan_figures([MP_A], redis=redis)
    assert page.rows[str(MP_A)].llm_entries is None
    assert page.census_at is None


@pytest.mark.parametrize("rows", [1, 5, 40])
def test_figures_cost_one_round_trip_whatever_the_page_size(redis, monkeypatch, rows):
    ids = [uuid.uuid4() for _ in range(rows)]
    for mp in ids:
        _traffic(mp, hits=1, misses=1, saved=0.01)
    redis.ping()  # connect outside the measurement
    sent = _round_trips(monkeypatch)
    page = masterplan_figures(ids, redis=redis)
    assert sent[0] == 1
    assert all(page.rows[str(mp)].hit_rate == pytest.approx(0.5) for mp in ids)


def test_figures_fail_open_when_redis_is_down(blackhole_port):
    dead = dead_redis(blackhole_port)
    page = masterplan_figures([MP_A], redis=dead, guard=RedisGuard(CircuitBreaker(name="t"), layer="console"))
    assert not page.available
    assert page.rows == {}

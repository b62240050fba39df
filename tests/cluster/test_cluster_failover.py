"""A Cluster primary fails over mid-traffic: callers keep getting answers, nothing raises, caching resumes.

Traffic runs in a thread (sync client) and on an event loop (the asyncio path) against
masterplans on every primary. Two failovers: a coordinated ``CLUSTER FAILOVER`` on a replica,
then a SIGKILL of a primary (its replica is promoted after ``cluster-node-timeout``). The
test waits on conditions with deadlines; it never sleeps for a window or asserts a timing.
Waves cannot fail open: a wave written to the killed primary's slots in the gap is stored once
the replica is promoted (WaveStore retries for WAVE_STORE_RETRY_SECONDS) and reads back.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import uuid
from collections import Counter
from dataclasses import dataclass, field

import pytest
from prometheus_client import REGISTRY
from redis.crc import key_slot

from batching_app import waves
from cache_app.core import keys
from cache_app.core.redis_client import get_breaker
from cache_app.llm.cache import LLMPromptCache
from tests.cluster.conftest import Cluster, masterplans_per_primary, wait_for
from tests.conftest import StaticPolicies

pytestmark = [pytest.mark.slow]
PROMPTS = [f"prompt {i}" for i in range(10)]


@dataclass
class Traffic:
    """Lookups (and a write after each miss) over every scope until stopped; counts outcomes per scope."""

    cache: LLMPromptCache
    scopes: list[str]
    stop: threading.Event = field(default_factory=threading.Event)
    hits: Counter = field(default_factory=Counter)
    calls: int = 0
    answers: int = 0
    errors: list[BaseException] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, mp: str, hit: bool) -> None:
        with self.lock:
            self.answers += 1
            if hit:
                self.hits[mp] += 1

    def run_sync(self) -> None:
        for mp, prompt in itertools.cycle(itertools.product(self.scopes, PROMPTS)):
            if self.stop.is_set():
                return
            self.calls += 1
            try:
                found = self.cache.lookup(prompt, "m", 0.0, masterplan_id=mp)
                if found.hit is None:
                    self.cache.set(prompt, "m", 0.0, "a", prompt_tokens=1, completion_tokens=1, masterplan_id=mp)
                self.record(mp, found.hit is not None)
            except BaseException as exc:  # the point of the test: nothing may reach a caller
                self.errors.append(exc)

    async def run_async(self) -> None:
        for mp, prompt in itertools.cycle(itertools.product(self.scopes, PROMPTS)):
            if self.stop.is_set():
                return
            self.calls += 1
            try:
                hit = await self.cache.aget(prompt, "m", 0.0, masterplan_id=mp)
                self.record(mp, hit is not None)
            except BaseException as exc:
                self.errors.append(exc)

    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        self.threads = [
            threading.Thread(target=self.run_sync, daemon=True),
            threading.Thread(target=lambda: asyncio.run(self.run_async()), daemon=True),
        ]
        for thread in self.threads:
            thread.start()

    def finish(self) -> None:
        """Stop and wait for the callers: every call they made has returned (or hung: then fail)."""
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)
        assert not any(thread.is_alive() for thread in self.threads), "a caller hung"

    def hits_of(self, mp: str) -> int:
        with self.lock:
            return self.hits[mp]


def outages() -> float:
    return REGISTRY.get_sample_value("mgecache_redis_outage_seconds_count", {"client": "default"}) or 0.0


def fail_opens() -> float:
    return sum(
        REGISTRY.get_sample_value(
            "mgecache_cache_fail_open_total", {"cache_layer": "llm", "operation": op, "reason": reason}
        )
        or 0.0
        for op in ("get", "set")
        for reason in ("failed", "skipped")
    )


@pytest.fixture
def traffic(on_cluster):
    spread = masterplans_per_primary(on_cluster)
    traffic = Traffic(LLMPromptCache(policies=StaticPolicies()), list(spread.values()))
    traffic.start()
    yield traffic, spread
    traffic.finish()


def resumed(cluster: Cluster, traffic: Traffic, mp: str, new_primary: int) -> None:
    """The promoted replica serves the scope: the cluster says so, and the traffic gets hits there again."""
    wait_for(lambda: new_primary in cluster.primaries(), f"{new_primary} to be a primary")
    wait_for(cluster.healthy, "the cluster to be ok")
    before = traffic.hits_of(mp)
    wait_for(lambda: traffic.hits_of(mp) > before + len(PROMPTS), "hits on the failed-over scope")
    assert get_breaker().wait_closed(timeout=30), "the breaker stayed open"


def wave_id_on(cluster: Cluster, primary: int) -> str:
    """A wave id whose state key hashes to a slot that ``primary`` serves."""
    while True:
        wave_id = str(uuid.uuid4())
        if cluster.primary_of_slot(key_slot(keys.wave(wave_id).encode())) == primary:
            return wave_id


def write_and_read_wave(wave_id: str, store: waves.WaveStore | None = None) -> dict[str, str] | None:
    """Create a 2-atom wave, mark one atom, read it back (default: on the process's client)."""
    store = store or waves.WaveStore()
    specs = waves.build_atoms({}, [{"atom_id": str(uuid.uuid4()), "prompt": p} for p in ("a", "b")])
    store.create(waves.WaveMeta(wave_id, str(uuid.uuid4()), 0.0, 10.0, len(specs)), specs)
    assert store.mark(wave_id, [(0, *waves.failure_result("marked in the gap"))]) == 1
    return store.read(wave_id)


def test_cluster_failover_on_a_replica_mid_traffic(on_cluster, traffic):
    load, spread = traffic
    primary, mp = next(iter(spread.items()))
    wait_for(lambda: load.hits_of(mp) > 2 * len(PROMPTS), "warm traffic")
    replica = on_cluster.replica_of(primary)
    on_cluster.node(replica).execute_command("CLUSTER FAILOVER")
    resumed(on_cluster, load, mp, replica)
    load.finish()
    assert load.errors == []
    assert load.answers == load.calls  # every call got an answer (a hit, or a miss in the gap)


def test_primary_killed_mid_traffic(on_cluster, traffic, caplog):
    load, spread = traffic
    outages_before, fail_opens_before = outages(), fail_opens()
    primary, mp = list(spread.items())[-1]
    wait_for(lambda: load.hits_of(mp) > 2 * len(PROMPTS), "warm traffic")
    replica = on_cluster.replica_of(primary)
    wave_id = wave_id_on(on_cluster, primary)
    on_cluster.kill(primary)
    with caplog.at_level(logging.INFO, logger="batching_app.waves"):
        fields = write_and_read_wave(wave_id)  # in the gap: no primary serves the wave's slot yet
    assert any("retrying" in r.getMessage() for r in caplog.records), "the wave was written before the kill took"
    assert fields is not None
    assert (fields["s:0"], fields["s:1"], fields["done"]) == ("failed", "pending", "1")
    resumed(on_cluster, load, mp, replica)
    assert on_cluster.primary_of_slot(key_slot(keys.wave(wave_id).encode())) == replica
    load.finish()
    assert load.errors == []
    assert load.answers == load.calls
    assert outages() > outages_before  # the gap was an outage, measured and closed
    assert fail_opens() > fail_opens_before  # calls in the gap were answered as misses, and counted
    # Every scope, on every primary, caches again without a restart.
    cache = LLMPromptCache(policies=StaticPolicies())
    for scope in spread.values():
        assert cache.set("after", "m", 0.0, "b", prompt_tokens=1, completion_tokens=1, masterplan_id=scope)
        assert cache.get("after", "m", 0.0, masterplan_id=scope).text == "b"


def test_a_wave_written_in_the_gap_alone_reaches_the_promoted_replica(on_cluster, caplog):
    """No other traffic refreshes the client's slot map: the wave store's retries must reach the new primary."""
    topology = on_cluster.topology()
    primary = next(p for p in on_cluster.primaries() if any(i["primary"] == p for i in topology.values()))
    replica = on_cluster.replica_of(primary)
    wave_id = wave_id_on(on_cluster, primary)
    assert write_and_read_wave(str(uuid.uuid4())) is not None  # the client knows the cluster before the kill
    on_cluster.kill(primary)
    with caplog.at_level(logging.INFO, logger="batching_app.waves"):
        fields = write_and_read_wave(wave_id)
    assert any("retrying" in r.getMessage() for r in caplog.records), "the wave was written before the kill took"
    assert fields is not None
    assert (fields["s:0"], fields["s:1"], fields["done"]) == ("failed", "pending", "1")
    wait_for(lambda: on_cluster.primary_of_slot(key_slot(keys.wave(wave_id).encode())) == replica, "the promotion")

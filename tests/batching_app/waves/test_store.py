"""WaveStore rides out a Redis failover's gap: bounded retries of transient errors, with injected time."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import redis as redis_lib

from batching_app import waves
from batching_app.waves import StoreOutage, WaveMeta, WaveStore, build_atoms, get_store_outage
from cache_app.core import keys
from cache_app.core.cluster import ClusterClientError
from tests.batching_app.fakes import atom

MP = uuid.UUID("44444444-4444-4444-8444-444444444444")


class FakeTime:
    """Monotonic seconds that move only when the store sleeps; records the pauses asked for."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Flaky:
    """A Redis client each of whose commands fails ``failures`` times before it reaches ``client``."""

    def __init__(self, client: Any, failures: int, error: type[Exception] = redis_lib.ConnectionError) -> None:
        self.client = client
        self.failures = failures
        self.error = error
        self.attempts = 0

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.client, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            self.attempts += 1
            if self.attempts % (self.failures + 1):
                raise self.error(f"attempt {self.attempts} of {name}")
            return method(*args, **kwargs)

        return call


class Failing:
    """A client whose every ``hgetall`` raises a new ``error`` (so the last one can be told apart)."""

    def __init__(self, error: type[Exception] = redis_lib.ConnectionError) -> None:
        self.error = error
        self.attempts = 0

    def hgetall(self, key: str) -> Any:
        self.attempts += 1
        raise self.error(f"attempt {self.attempts}")


def store_on(client: Any, retry_seconds: float | None = 5.0) -> tuple[WaveStore, FakeTime]:
    fake_time = FakeTime()
    return WaveStore(client, retry_seconds=retry_seconds, clock=fake_time, sleep=fake_time.sleep), fake_time


def test_every_operation_rides_out_failures(redis):
    flaky = Flaky(redis, failures=2)
    store, fake_time = store_on(flaky)
    specs = build_atoms({}, [atom("a"), atom("b")])
    meta = WaveMeta(str(uuid.uuid4()), str(MP), 0.0, 10.0, len(specs))
    store.create(meta, specs)
    store.set_batches(meta.wave_id, [[0, 1]])
    assert store.mark(meta.wave_id, [(0, *waves.failure_result("no"))]) == 1
    assert store.attempt(meta.wave_id, 0) == 1
    assert store.progress(meta.wave_id) == (1, 2, meta)
    loaded = store.load_batch(meta.wave_id, 0)
    assert loaded is not None
    assert loaded[1] == specs
    assert loaded[2] == {0: "failed", 1: "pending"}
    assert store.read(meta.wave_id)["s:1"] == "pending"
    commands = 8  # load_batch reads twice
    assert flaky.attempts == 3 * commands
    assert fake_time.sleeps == [0.05, 0.1] * commands  # each command: two pauses, the backoff restarting
    assert redis.ttl(keys.wave(meta.wave_id)) > 0  # create's EXPIRE landed with its HSET


def test_backoff_doubles_to_a_cap_then_the_last_error_is_raised_at_the_budget():
    client = Failing()
    store, fake_time = store_on(client, retry_seconds=2.0)
    with pytest.raises(redis_lib.ConnectionError, match="attempt 8"):
        store.read(str(uuid.uuid4()))
    assert fake_time.sleeps == [0.05, 0.1, 0.2, 0.4, 0.5, 0.5, 0.25]  # the last pause ends at the budget
    assert sum(fake_time.sleeps) == pytest.approx(2.0)
    assert client.attempts == 8


@pytest.mark.parametrize(
    "error",
    [
        redis_lib.ConnectionError,
        redis_lib.TimeoutError,
        redis_lib.exceptions.ClusterDownError,
        redis_lib.exceptions.MasterDownError,
        redis_lib.exceptions.TryAgainError,
        redis_lib.exceptions.ReadOnlyError,  # a demoted Sentinel master
        ClusterClientError,  # no node serves the slot yet
        redis_lib.exceptions.SlotNotCoveredError,
    ],
)
def test_transient_errors_are_retried(redis, error):
    flaky = Flaky(redis, failures=1, error=error)
    store, fake_time = store_on(flaky)
    assert store.read(str(uuid.uuid4())) is None
    assert flaky.attempts == 2
    assert fake_time.sleeps == [0.05]


@pytest.mark.parametrize("error", [redis_lib.ResponseError, redis_lib.exceptions.NoScriptError, ValueError])
def test_other_errors_are_raised_at_once(error):
    client = Failing(error)
    store, fake_time = store_on(client)
    with pytest.raises(error, match="attempt 1"):
        store.read(str(uuid.uuid4()))
    assert client.attempts == 1
    assert fake_time.sleeps == []


def test_a_budget_of_0_means_one_attempt(settings):
    settings.MGECACHE = {**settings.MGECACHE, "WAVE_STORE_RETRY_SECONDS": 0}
    client = Failing()
    store, fake_time = store_on(client, retry_seconds=None)
    assert store.retry_seconds == 0.0
    with pytest.raises(redis_lib.ConnectionError, match="attempt 1"):
        store.read(str(uuid.uuid4()))
    assert client.attempts == 1
    assert fake_time.sleeps == []


class Switchable:
    """A client whose ``hgetall`` fails while ``down`` and answers from ``client`` otherwise."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.down = True
        self.attempts = 0

    def hgetall(self, key: str) -> Any:
        self.attempts += 1
        if self.down:
            raise redis_lib.ConnectionError(f"attempt {self.attempts}")
        return self.client.hgetall(key)


WAVE_1, WAVE_2, WAVE_3 = (str(uuid.uuid4()) for _ in range(3))


def stores_sharing_an_outage(client: Any) -> tuple[WaveStore, WaveStore, FakeTime]:
    """Two stores (two requests) of one process: one clock, one outage."""
    fake_time, outage = FakeTime(), StoreOutage()
    first, second = (
        WaveStore(client, retry_seconds=2.0, clock=fake_time, sleep=fake_time.sleep, outage=outage) for _ in range(2)
    )
    return first, second, fake_time


def test_once_redis_has_been_down_a_whole_budget_later_calls_fail_at_once():
    client = Failing()
    first, second, fake_time = stores_sharing_an_outage(client)
    with pytest.raises(redis_lib.ConnectionError):
        first.read(WAVE_1)
    assert sum(fake_time.sleeps) == pytest.approx(2.0)
    fake_time.sleeps.clear()
    with pytest.raises(redis_lib.ConnectionError):
        second.read(WAVE_2)  # a second request in the same outage holds no thread for another budget
    assert fake_time.sleeps == []
    assert client.attempts == 9


def test_a_call_that_starts_mid_outage_gets_what_is_left_of_its_budget():
    client = Failing()
    first, second, fake_time = stores_sharing_an_outage(client)
    with pytest.raises(redis_lib.ConnectionError):
        first.read(WAVE_1)
    fake_time.now -= 1.5  # as if the second request had failed half a second into the outage
    fake_time.sleeps.clear()
    with pytest.raises(redis_lib.ConnectionError):
        second.read(WAVE_2)
    assert sum(fake_time.sleeps) == pytest.approx(1.5)


def test_a_failure_long_after_the_last_one_starts_a_new_outage_with_a_whole_budget():
    client = Failing()
    first, second, fake_time = stores_sharing_an_outage(client)
    with pytest.raises(redis_lib.ConnectionError):
        first.read(WAVE_1)
    fake_time.now += 60  # no wave traffic for a minute: the old outage tells nothing about this failure
    fake_time.sleeps.clear()
    with pytest.raises(redis_lib.ConnectionError):
        second.read(WAVE_2)
    assert sum(fake_time.sleeps) == pytest.approx(2.0)


def test_a_success_ends_the_outage(redis):
    client = Switchable(redis)
    first, second, fake_time = stores_sharing_an_outage(client)
    with pytest.raises(redis_lib.ConnectionError):
        first.read(WAVE_1)
    client.down = False
    assert second.read(WAVE_2) is None  # Redis is back: answered (an unknown wave)
    client.down = True
    fake_time.sleeps.clear()
    with pytest.raises(redis_lib.ConnectionError):
        first.read(WAVE_3)
    assert sum(fake_time.sleeps) == pytest.approx(2.0)  # a new outage, a whole budget


def test_successes_elsewhere_during_a_call_do_not_extend_its_budget():
    client, fake_time, outage = Failing(), FakeTime(), StoreOutage()

    def sleep(seconds: float) -> None:
        fake_time.sleep(seconds)
        outage.ended()  # meanwhile another request, on a Cluster node that is up, succeeded

    store = WaveStore(client, retry_seconds=2.0, clock=fake_time, sleep=sleep, outage=outage)
    with pytest.raises(redis_lib.ConnectionError):
        store.read(WAVE_1)
    assert sum(fake_time.sleeps) == pytest.approx(2.0)


def test_the_outage_is_shared_by_every_store_of_the_process():
    assert WaveStore().outage is WaveStore().outage is get_store_outage()


class Nodes:
    """A Cluster client's nodes manager: counts slot-map reloads; the first ``failures`` find no node."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.reloads = 0

    def initialize(self) -> None:
        self.reloads += 1
        if self.reloads <= self.failures:
            raise ClusterClientError("Redis Cluster cannot be connected")


class FailingCluster(Failing):
    def __init__(self, nodes: Nodes) -> None:
        super().__init__()
        self.nodes_manager = nodes


@pytest.mark.parametrize("failed_reloads", [0, 2])
def test_a_cluster_client_reloads_its_slot_map_before_each_retry(failed_reloads):
    nodes = Nodes(failures=failed_reloads)
    client = FailingCluster(nodes)
    store, fake_time = store_on(client, retry_seconds=0.3)
    with pytest.raises(redis_lib.ConnectionError, match="attempt 4"):
        store.read(str(uuid.uuid4()))
    assert fake_time.sleeps == pytest.approx([0.05, 0.1, 0.15])
    assert nodes.reloads == 3  # a failed reload is not an error of the operation: the next attempt tells

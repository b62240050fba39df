"""LLM waves through the caches: lookups, dedupe, policy-sized Celery batches, true statistics, deadlines."""

from __future__ import annotations

import uuid

import pytest

from batching_app import waves
from batching_app.batcher import StaticBatchPolicy
from batching_app.llm import TransientLLMError
from batching_app.waves import WaveBatchExecutor, WaveService, WaveStore, WaveValidationError, build_atoms
from cache_app.core import keys
from cache_app.core.counters import DurableCounters
from cache_app.core.policies import BatchSettings
from cache_app.llm import client as client_module
from cache_app.llm.client import get_llm_client
from cache_app.llm.loop import run_sync
from cache_app.models import Masterplan
from cache_app.statistics import cache_statistics, layer_statistics
from tests.batching_app.fakes import RecordingProvider, atom, cache_errors, twenty_atoms

MP = uuid.UUID("33333333-3333-4333-8333-333333333333")


class WallClock:
    """Injectable epoch seconds (deadlines are wall-clock: shared by processes)."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def precache(prompts: list[str]) -> None:
    for prompt in prompts:
        run_sync(get_llm_client().generate(prompt, temperature=0.0, masterplan_id=MP))


def check_twenty_atom_wave(report: dict, provider: RecordingProvider, atoms: list[dict], errors_before: float) -> None:
    assert cache_errors() == errors_before, "Redis failed open during the wave (host overloaded?)"
    # 20 atoms: 5 hits, 15 misses of which 10 distinct -> 2 batches of 5 -> 2 provider calls.
    assert provider.prompts_per_call() == [5, 5]
    assert report["status"] == "completed"
    assert report["counts"] == {"total": 20, "pending": 0, "hit": 5, "answered": 15, "failed": 0}
    assert report["batches"] == 2
    assert [a["atom_id"] for a in report["atoms"]] == [a["atom_id"] for a in atoms]  # input order
    assert [a["status"] for a in report["atoms"]] == ["hit"] * 5 + ["answered"] * 15
    texts = [a["text"] for a in report["atoms"]]
    assert all(texts)
    assert texts[15:] == texts[5:10]  # each duplicate got its original's answer
    assert len(set(texts[:15])) == 15
    assert all(a["saved_usd"] > 0 for a in report["atoms"][:5])  # hits are priced as saved
    assert {a["cache_layer"] for a in report["atoms"][15:]} == {"singleflight"}  # merged, not called

    stats = cache_statistics(MP)
    assert stats["batching"]["batches"] == 2
    assert stats["batching"]["total_requests_batched"] == 10 == sum(provider.prompts_per_call())
    assert stats["batching"]["avg_batch_size"] == 5.0
    assert stats["batching"]["waves"] == 1
    assert stats["batching"]["wave_atoms"] == 20
    assert stats["llm_cache"]["total_hits"] == 5
    assert stats["llm_cache"]["total_misses"] == 5 + 15  # the pre-caching misses, then the wave's
    assert stats["llm_cache"]["cost_savings_usd"] > 0
    assert layer_statistics("batching", MP) == stats["batching"]
    # The global document agrees (this test's key prefix holds nothing else).
    assert cache_statistics()["batching"] == stats["batching"]


@pytest.mark.django_db
def test_wave_of_20_with_5_duplicates_and_5_cached_makes_2_calls_in_2_batches(provider):
    errors_before = cache_errors()
    cached, atoms = twenty_atoms()
    precache(cached)
    assert len(provider.requests) == 5
    provider.requests.clear()
    report = waves.run_wave(MP, atoms, defaults={"temperature": 0.0})
    check_twenty_atom_wave(report, provider, atoms, errors_before)
    assert Masterplan.objects.get(pk=MP).name == str(MP)  # registered on first sight, named by its id
    # The answers are in the prompt cache: a second wave is all hits, no provider call.
    again = waves.run_wave(MP, atoms, defaults={"temperature": 0.0})
    assert again["counts"]["hit"] == 20
    assert len(provider.requests) == 2


@pytest.mark.redis_server
@pytest.mark.celery_worker
@pytest.mark.django_db(transaction=True)
def test_wave_on_a_real_celery_worker(celery_worker, provider, seeded_defaults):
    errors_before = cache_errors()
    cached, atoms = twenty_atoms()
    precache(cached)
    provider.requests.clear()
    report = waves.run_wave(MP, atoms, defaults={"temperature": 0.0}, task_options={"queue": celery_worker})
    check_twenty_atom_wave(report, provider, atoms, errors_before)
    # Any process reads the same report from Redis.
    assert waves.get_wave(report["wave_id"]) == report


class Dispatched:
    """A dispatch that only records (wave_id, batch_no): the test runs the batches itself."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, int]] = []

    def __call__(self, wave_id: str, batch_no: int) -> None:
        self.sent.append((wave_id, batch_no))


@pytest.fixture
def fixed_batch(monkeypatch):
    """Batch policy 5 / 500 ms without the database; cache policies stay the defaults."""
    from cache_app.core.policies import get_policy_source
    from tests.conftest import StaticPolicies

    source = StaticPolicies(batch=BatchSettings(True, 5, 500))
    get_policy_source.set(source)  # reset_process_state() forgets it after the test
    return source


def service(clock=None, dispatch=None) -> WaveService:
    return WaveService(clock=clock or WallClock(), dispatch=dispatch or Dispatched(), register=lambda mp: None)


def executor(clock=None) -> WaveBatchExecutor:
    return WaveBatchExecutor(clock=clock or WallClock())


def test_wait_false_returns_at_once_and_any_reader_sees_progress(redis, provider, fixed_batch):
    clock, dispatch = WallClock(), Dispatched()
    atoms = [atom(f"p{i}") for i in range(7)]
    report = service(clock, dispatch).submit(MP, atoms, wait=False)
    assert report["status"] == "running"
    assert report["counts"]["pending"] == 7
    assert [n for _, n in dispatch.sent] == [0, 1]  # 5 + 2
    wave_id = report["wave_id"]
    executor(clock).run(wave_id, 0)
    middle = WaveService(clock=clock).get(wave_id)  # another instance, as another process would
    assert middle["counts"] == {"total": 7, "pending": 2, "hit": 0, "answered": 5, "failed": 0}
    executor(clock).run(wave_id, 1)
    done = WaveService(clock=clock).get(wave_id)
    assert done["status"] == "completed"
    assert provider.prompts_per_call() == [5, 2]


class StatsAtMark(WaveStore):
    """A wave store that reads the shared statistics, as another process would, as each atom becomes final."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[dict[str, float]] = []

    def mark(self, wave_id, outcomes):
        if outcomes:
            other_process = DurableCounters()  # nothing buffered: it reads what is in Redis
            self.seen.append(other_process.read("cost", masterplan_id=MP))
        return super().mark(wave_id, outcomes)


def test_a_wave_is_final_only_once_its_counts_are_in_redis(redis, provider, fixed_batch):
    """A ``wait=true`` caller is answered when the last atom is final, and may read statistics at once
    from another worker (the live multi-process test did): the batch's calls must be counted by then."""
    clock, dispatch = WallClock(), Dispatched()
    wave_id = service(clock, dispatch).submit(MP, [atom("first"), atom("second")], wait=False)["wave_id"]
    store = StatsAtMark()
    WaveBatchExecutor(clock=clock, store=store).run(wave_id, 0)
    assert len(provider.requests) == 1  # one combined call for both atoms
    # The atom whose coroutine made the call counts it before it is marked; the other may finish
    # first. Either way, when the last atom (and so the wave) is final, the call is in Redis.
    assert len(store.seen) == 2
    assert store.seen[-1].get("provider_calls") == 1.0


def test_a_rerun_of_a_finished_batch_calls_nothing(redis, provider, fixed_batch):
    clock, dispatch = WallClock(), Dispatched()
    wave_id = service(clock, dispatch).submit(MP, [atom("a"), atom("b")], wait=False)["wave_id"]
    first = executor(clock).run(wave_id, 0)
    assert first.final == {"answered": 2}
    second = executor(clock).run(wave_id, 0)  # a redelivered message
    assert second.final == {}
    assert len(provider.requests) == 1


def test_a_rerun_looks_up_first_and_only_calls_for_what_is_missing(redis, provider, fixed_batch):
    clock, dispatch = WallClock(), Dispatched()
    wave_id = service(clock, dispatch).submit(MP, [atom("x"), atom("y")], defaults={"temperature": 0.0}, wait=False)[
        "wave_id"
    ]
    # A previous attempt answered "x" into the prompt cache, then died before recording it.
    run_sync(get_llm_client().generate("x", temperature=0.0, masterplan_id=MP))
    WaveStore().attempt(wave_id, 0)
    provider.requests.clear()
    outcome = executor(clock).run(wave_id, 0)
    assert outcome.final == {"hit": 1, "answered": 1}
    assert [r.prompt for r in provider.requests] == ["y"]  # a batch of one is the plain prompt


def test_one_failing_atom_never_fails_the_wave(redis, provider, fixed_batch):
    provider.fail = lambda request: ValueError("model not found") if request.model == "no-such-model" else None
    atoms = [atom("good 1"), atom("bad", model="no-such-model"), atom("good 2")]
    report = WaveService(register=lambda mp: None).submit(MP, atoms)  # eager Celery, real time
    assert [a["status"] for a in report["atoms"]] == ["answered", "failed", "answered"]
    assert "model not found" in report["atoms"][1]["error"]
    assert report["status"] == "completed"


def test_transient_errors_are_retried_within_the_deadline_then_fail(redis, provider, fixed_batch):
    clock, dispatch = WallClock(), Dispatched()
    wave_id = service(clock, dispatch).submit(MP, [atom("flaky")], wait=False, deadline_seconds=60)["wave_id"]
    provider.fail = lambda request: TransientLLMError("529 overloaded")
    first = executor(clock).run(wave_id, 0, retries=0, final=False)
    assert first.retry_after is not None
    assert 0 < first.retry_after <= 1.0
    assert WaveService(clock=clock).get(wave_id)["counts"]["pending"] == 1
    provider.fail = None
    second = executor(clock).run(wave_id, 0, retries=1, final=False)
    assert second.final == {"answered": 1}
    # A last attempt that fails transiently is final: the atom fails with the error.
    wave_id = service(clock, dispatch).submit(MP, [atom("down")], wait=False)["wave_id"]
    provider.fail = lambda request: TransientLLMError("503")
    last = executor(clock).run(wave_id, 0, retries=5, final=True)
    assert last.retry_after is None
    assert "503" in WaveService(clock=clock).get(wave_id)["atoms"][0]["error"]


def test_no_atom_stays_pending_past_the_deadline(redis, provider, fixed_batch):
    clock, dispatch = WallClock(), Dispatched()
    precache_ids = [atom("warm")]
    service(clock, dispatch).submit(MP, precache_ids, defaults={"temperature": 0.0}, wait=False)
    executor(clock).run(dispatch.sent[0][0], 0)
    report = service(clock, dispatch).submit(
        MP, [atom("warm"), atom("never run")], defaults={"temperature": 0.0}, wait=False, deadline_seconds=30
    )
    assert report["counts"]["hit"] == 1
    clock.now += 29.9
    assert WaveService(clock=clock).get(report["wave_id"])["counts"]["pending"] == 1
    clock.now += 0.1
    late = WaveService(clock=clock).get(report["wave_id"])
    assert [a["status"] for a in late["atoms"]] == ["hit", "failed"]
    assert late["atoms"][1]["error"] == "deadline exceeded"
    # The batch task arriving after the deadline calls nothing.
    calls = len(provider.requests)
    executor(clock).run(report["wave_id"], 0)
    assert len(provider.requests) == calls


def test_wait_true_returns_by_the_deadline_with_injected_time(redis, provider, fixed_batch):
    clock = WallClock()

    def sleep(seconds: float) -> None:
        clock.now += seconds

    svc = WaveService(clock=clock, sleep=sleep, dispatch=Dispatched(), register=lambda mp: None)
    report = svc.submit(MP, [atom("nobody answers")], deadline_seconds=5)
    assert report["status"] == "completed"
    assert report["atoms"][0]["error"] == "deadline exceeded"
    assert clock.now >= 1_700_000_005.0


def test_an_undispatchable_batch_fails_only_its_atoms(redis, provider, fixed_batch):
    def broken(wave_id: str, batch_no: int) -> None:
        if batch_no == 1:
            raise ConnectionError("broker down")

    clock = WallClock()
    atoms = [atom(f"p{i}") for i in range(6)]
    report = WaveService(clock=clock, dispatch=broken, register=lambda mp: None).submit(MP, atoms, wait=False)
    statuses = [a["status"] for a in report["atoms"]]
    assert statuses == ["pending"] * 5 + ["failed"]
    assert "broker down" in report["atoms"][5]["error"]


def test_a_wave_none_of_whose_batches_could_be_sent_raises_after_recording_why(redis, provider, fixed_batch):
    from cache_app.core.taskopts import BrokerUnavailableError

    def down(wave_id: str, batch_no: int) -> None:
        raise BrokerUnavailableError("OperationalError: connection refused")

    service = WaveService(clock=WallClock(), dispatch=down, register=lambda mp: None)
    with pytest.raises(BrokerUnavailableError):
        service.submit(MP, [atom(f"q{i}") for i in range(6)], wait=False)
    [wave_key] = redis.scan_iter(match="*:wave:*")
    report = service.get(wave_key.decode().rsplit(":", 1)[-1])
    assert {a["status"] for a in report["atoms"]} == {"failed"}
    assert all("batch not run" in a["error"] for a in report["atoms"])


def test_a_late_outcome_never_overwrites_a_final_one(redis):
    store = WaveStore()
    specs = build_atoms({}, [atom("a")])
    meta = waves.WaveMeta(str(uuid.uuid4()), str(MP), 0.0, 10.0, 1)
    store.create(meta, specs)
    assert store.mark(meta.wave_id, [(0, *waves.failure_result("deadline exceeded"))]) == 1
    assert store.mark(meta.wave_id, [(0, "answered", "{}")]) == 0
    assert store.read(meta.wave_id)["s:0"] == "failed"
    assert 0 < redis.ttl(keys.wave(meta.wave_id)) <= 86400
    # An expired wave is not recreated by a late task.
    redis.delete(keys.wave(meta.wave_id))
    assert store.mark(meta.wave_id, [(0, "answered", "{}")]) == 0
    assert store.attempt(meta.wave_id, 0) == 0
    assert redis.exists(keys.wave(meta.wave_id)) == 0


def test_a_wave_needs_a_masterplan_and_a_sane_deadline(redis):
    svc = WaveService(register=lambda mp: None, dispatch=Dispatched())
    with pytest.raises(WaveValidationError, match="masterplan_id"):
        svc.submit(None, [atom("a")])
    with pytest.raises(ValueError, match="UUID"):
        svc.submit("not-a-uuid", [atom("a")])
    with pytest.raises(WaveValidationError, match="deadline_seconds"):
        svc.submit(MP, [atom("a")], deadline_seconds=0)


def test_the_batch_size_is_the_number_of_distinct_prompts(redis, provider, fixed_batch):
    seen: list[BatchSettings] = []

    def factory(batch: BatchSettings):
        seen.append(batch)
        return client_module.LLMClient(policies=StaticBatchPolicy(batch))

    clock, dispatch = WallClock(), Dispatched()
    wave_id = service(clock, dispatch).submit(MP, [atom("a"), atom("a"), atom("b")], wait=False)["wave_id"]
    WaveBatchExecutor(clock=clock, client_factory=factory).run(wave_id, 0)
    assert seen == [BatchSettings(True, 2, 500)]
    assert provider.prompts_per_call() == [2]

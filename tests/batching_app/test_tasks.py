"""The Celery wave path: batching_app.tasks.run_batch is idempotent per atom and retries transient errors."""

from __future__ import annotations

import json
import uuid

import pytest
from celery.exceptions import MaxRetriesExceededError

from batching_app import tasks
from batching_app.llm import TransientLLMError, get_llm_call
from batching_app.wave import (
    BatchIncompleteError,
    BatchResultStore,
    ResultAddress,
    WaveBatchRunner,
    WaveReport,
    claim_key,
)
from cache_app.core.counters import get_counters
from cache_app.core.policies import BatchSettings, get_policy_source
from mgecache_site.celery import app as celery_app
from tests.batching_app.fakes import FakeLLM, answer_for, recording_llm_call
from tests.conftest import StaticPolicies

LLM_PATH = "tests.batching_app.fakes.recording_llm_call"


@pytest.fixture
def recorded(settings):
    """run_batch talks to the recording LLM; the batch policy is fixed (no database read).

    Eager retries only chain when eager errors are not propagated (Celery re-raises Retry
    otherwise); the final outcome is still raised by ``EagerResult.get()``.
    """
    settings.MGECACHE = {**settings.MGECACHE, "BATCH_LLM_CALL": LLM_PATH}
    propagates = celery_app.conf.task_eager_propagates
    celery_app.conf.task_eager_propagates = False
    get_policy_source.set(StaticPolicies(batch=BatchSettings(True, 5, 500)))  # reset after the test
    recording_llm_call.reset()
    yield recording_llm_call
    recording_llm_call.reset()
    celery_app.conf.task_eager_propagates = propagates


def atoms(n: int) -> tuple[list[str], list[str]]:
    ids = [str(uuid.uuid4()) for _ in range(n)]
    return ids, [f"wave prompt {i} RESPONSE {i}:" for i in range(n)]


def addresses(ids, prompts) -> list[ResultAddress]:
    """Where run_batch (global scope, default model) stores each atom's answer."""
    return [ResultAddress.for_request(a, p) for a, p in zip(ids, prompts, strict=True)]


def stored_by_atom(ids, prompts) -> dict[uuid.UUID, str]:
    return {a.atom_id: text for a, text in BatchResultStore().get_many(addresses(ids, prompts)).items()}


def test_task_options_ack_late_and_bounded_jittered_backoff():
    task = tasks.run_batch
    assert task.acks_late is True
    assert task.max_retries == tasks.MAX_RETRIES == 5
    assert task.retry_backoff is True
    assert task.retry_jitter is True
    assert task.retry_backoff_max == 60
    assert TransientLLMError in task.autoretry_for
    assert ValueError not in task.autoretry_for


def test_default_llm_call_is_the_configured_provider(settings):
    from cache_app.llm.client import provider_llm_call

    assert get_llm_call() is provider_llm_call
    settings.MGECACHE = {**settings.MGECACHE, "BATCH_LLM_CALL": LLM_PATH}
    assert get_llm_call() is recording_llm_call


def test_run_batch_stores_each_answer_under_its_own_key_and_redelivery_does_not_call_again(redis, recorded):
    ids, prompts = atoms(7)
    summary = tasks.run_batch.apply(args=(ids, prompts)).get()
    assert len(recorded.prompts) == 2  # 5 + 2
    assert sorted(summary["answered"]) == sorted(ids)
    for address, prompt in zip(addresses(ids, prompts), prompts, strict=True):
        raw = redis.get(address.key)
        assert json.loads(raw)["answer"] == answer_for(prompt)
        assert 0 < redis.ttl(address.key) <= 86400
        assert redis.get(claim_key(address)) is None  # claims released
    # Redelivery of the same message: every atom is skipped, no LLM call.
    again = tasks.run_batch.apply(args=(ids, prompts)).get()
    assert len(recorded.prompts) == 2
    assert sorted(again["skipped"]) == sorted(ids)
    assert again["upstream_calls"] == 0
    stored = stored_by_atom(ids, prompts)
    assert stored == {uuid.UUID(a): answer_for(p) for a, p in zip(ids, prompts, strict=True)}


def test_transient_failure_is_retried_and_answered_atoms_are_not_asked_again(redis, recorded, monkeypatch):
    ids, prompts = atoms(3)
    recorded.fail_single_prompts = {prompts[1]}

    # First attempt: the combined call loses atom 1's answer; its lone retry fails transiently.
    def lose_atom_1(split):
        return "".join(
            f"RESPONSE {i} [batch {split.nonce}]:\n{answer_for(text)}\n\n"
            for i, (_, text) in enumerate(split.atoms, start=1)
            if i != 2
        )

    from tests.batching_app import fakes

    original = fakes.well_behaved
    monkeypatch.setattr(fakes, "well_behaved", lose_atom_1)
    with pytest.raises(TransientLLMError):
        # Eager retries run at once (no countdown); the lone atom keeps failing until retries run out.
        tasks.run_batch.apply(args=(ids, prompts)).get()
    monkeypatch.setattr(fakes, "well_behaved", original)
    attempts = 1 + tasks.MAX_RETRIES
    assert recorded.prompts.count(prompts[1]) == attempts  # only the failing atom was re-asked
    assert sum(1 for p in recorded.prompts if p.startswith("PROMPT 1 [batch")) == 1  # one combined call
    stored = stored_by_atom(ids, prompts)
    assert set(stored) == {uuid.UUID(ids[0]), uuid.UUID(ids[2])}
    # The provider recovers: the next delivery answers the last atom with one call.
    recorded.fail_single_prompts = set()
    before = len(recorded.prompts)
    summary = tasks.run_batch.apply(args=(ids, prompts)).get()
    assert recorded.prompts[before:] == [prompts[1]]
    assert summary["answered"] == [ids[1]]


def test_transient_error_then_success_within_one_task(redis, recorded):
    ids, prompts = atoms(4)
    recorded.failures_left = 2  # a 529 on the first two attempts
    summary = tasks.run_batch.apply(args=(ids, prompts)).get()
    assert sorted(summary["answered"]) == sorted(ids)
    assert len(recorded.prompts) == 3


def test_dispatch_wave_sends_policy_sized_batches_and_answers_are_collected_per_atom(redis, recorded):
    ids, prompts = atoms(12)
    results = tasks.dispatch_wave(list(zip(ids, prompts, strict=True)))
    assert len(results) == 3  # 5 + 5 + 2 under the policy's max_batch_size of 5
    assert all(r.successful() for r in results)
    assert len(recorded.prompts) == 3
    stored = stored_by_atom(ids, prompts)
    assert stored == {uuid.UUID(a): answer_for(p) for a, p in zip(ids, prompts, strict=True)}


def test_task_retries_later_for_atoms_claimed_by_a_concurrent_run_and_never_calls_twice(redis, recorded):
    ids, prompts = atoms(2)
    store = BatchResultStore()
    first = addresses(ids, prompts)[0]
    assert store.claim(first, "a-concurrent-run", 60)
    result = tasks.run_batch.apply(args=(ids, prompts))  # eager: its retries run at once
    with pytest.raises(MaxRetriesExceededError):
        result.get()
    assert recorded.prompts == [prompts[1]]  # the free atom once, across all retries; the claimed one never
    # The concurrent run finishes; a redelivery now has nothing left to ask.
    store.put(first, "answered elsewhere")
    store.release(first, "a-concurrent-run")
    summary = tasks.run_batch.apply(args=(ids, prompts)).get()
    assert sorted(summary["skipped"]) == sorted(ids)
    assert recorded.prompts == [prompts[1]]


def test_permanent_error_is_not_retried(redis, recorded):
    with pytest.raises(ValueError, match="same length"):
        tasks.run_batch.apply(args=(["a"], [])).get()
    assert recorded.prompts == []


async def test_atoms_claimed_by_another_run_are_not_called(redis):
    llm = FakeLLM()
    store = BatchResultStore()
    busy, free = uuid.uuid4(), uuid.uuid4()
    busy_at, free_at = addresses([busy, free], ["p-busy", "p-free"])
    assert store.claim(busy_at, "other-worker", 60)
    runner = WaveBatchRunner(llm, store=store, policies=StaticPolicies(batch=BatchSettings(True, 5, 500)))
    report = await runner.run([(busy, "p-busy"), (free, "p-free")], batch_id="b1")
    assert llm.prompts == ["p-free"]
    assert report.in_progress == [busy]
    assert report.answered == [free]
    assert store.get_many([busy_at, free_at]) == {free_at: answer_for("p-free")}
    assert redis.get(claim_key(busy_at)) == b"other-worker"  # someone else's claim is left alone


@pytest.mark.redis_server
@pytest.mark.celery_worker
def test_real_worker_runs_the_batch_and_a_redelivery_never_calls_twice(celery_worker, recorded):
    ids, prompts = atoms(6)
    first = tasks.run_batch.apply_async(args=(ids, prompts), queue=celery_worker).get(timeout=30)
    calls_after_first = len(recorded.prompts)
    assert calls_after_first == 2  # 5 + 1
    assert sorted(first["answered"]) == sorted(ids)
    # The broker redelivers the same message (acks_late after a lost worker): same arguments, new run.
    second = tasks.run_batch.apply_async(args=(ids, prompts), queue=celery_worker).get(timeout=30)
    assert len(recorded.prompts) == calls_after_first
    assert sorted(second["skipped"]) == sorted(ids)
    assert get_counters().read("batch")["upstream_calls"] == 2.0  # durable, cross-process count agrees
    stored = stored_by_atom(ids, prompts)
    assert stored == {uuid.UUID(a): answer_for(p) for a, p in zip(ids, prompts, strict=True)}


def test_a_report_fails_with_its_first_permanent_error_else_a_retryable_one():
    a, b = uuid.uuid4(), uuid.uuid4()
    assert WaveReport(batch_id="x", atom_count=2).failure() is None
    permanent = ValueError("bad request")
    mixed = WaveReport(batch_id="x", atom_count=2, failed={a: TransientLLMError("429"), b: permanent})
    assert mixed.failure() is permanent
    timeout = TimeoutError("slow")
    transient = WaveReport(batch_id="x", atom_count=3, failed={a: timeout, b: TransientLLMError("429")})
    failure = transient.failure()
    assert isinstance(failure, BatchIncompleteError)
    assert isinstance(failure, tasks.TRANSIENT_ERRORS)  # retried by run_batch's autoretry_for
    assert failure.__cause__ is timeout
    assert str(failure).startswith("2 of 3 atoms failed transiently")

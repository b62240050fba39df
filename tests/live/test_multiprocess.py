"""Two gunicorn workers and a Celery worker on real Redis and Postgres agree, whichever worker answers.

A wave of 20 atoms (5 cached, 5 duplicates) goes through the HTTP API; its batches run on the Celery
worker; the LLM is a stub HTTP server in this process, so what the provider received is counted
exactly. Statistics, the wave's report and an invalidation's outcome are then read from each web
worker, and must be the same (statistics once each worker's buffer has been flushed: COUNTER_FLUSH_SECONDS).
"""

from __future__ import annotations

import uuid

import pytest

from tests.batching_app.fakes import twenty_atoms

MP = uuid.UUID("99999999-9999-4999-8999-999999999999")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.redis_server,
    pytest.mark.postgres,
    pytest.mark.celery_worker,
    pytest.mark.django_db(transaction=True),
]


def _identical(answers: dict) -> object:
    assert len(answers) == 2, f"only {list(answers)} answered"  # both web workers
    first, second = answers.values()
    assert first == second
    return first


def _agree(answers: dict) -> bool:
    """Both workers answered, the same document, and it counts the 7 provider calls made so far."""
    documents = list(answers.values())
    return len(documents) == 2 and documents[0] == documents[1] and documents[0]["cost"]["provider_calls"] == 7


@pytest.mark.timeout(300)
def test_statistics_waves_and_invalidations_agree_across_processes(live_stack, llm_stub_server):
    stack, stub = live_stack, llm_stub_server
    cached, atoms = twenty_atoms()
    for prompt in cached:
        status, _, body = stack.call(
            "POST", "/api/v2/llm/generate", {"prompt": prompt, "temperature": 0.0, "masterplan_id": str(MP)}
        )
        assert (status, body["cached"]) == (200, False), body
    assert stub.batch_sizes() == [1] * 5
    stub.reset()

    status, _, report = stack.call(
        "POST", "/api/v2/llm/waves", {"masterplan_id": str(MP), "defaults": {"temperature": 0.0}, "atoms": atoms}
    )

    assert status == 200, report
    # 5 hits; 15 misses, 10 of them distinct -> 2 batches of 5 on the Celery worker -> 2 provider calls.
    assert stub.batch_sizes() == [5, 5]
    assert report["counts"] == {"total": 20, "pending": 0, "hit": 5, "answered": 15, "failed": 0}
    assert [a["atom_id"] for a in report["atoms"]] == [a["atom_id"] for a in atoms]

    # Each web worker buffers its counts for up to COUNTER_FLUSH_SECONDS (0.5 s) before they reach Redis
    # (the precaching calls above, for one): the workers agree once that has passed, not at once.
    path = f"/api/v2/cache/statistics?masterplan_id={MP}"
    answers = stack.until(lambda: stack.from_every_worker(path), _agree, timeout=30)
    stats = _identical(answers)
    assert stats["batching"]["batches"] == 2
    assert stats["batching"]["total_requests_batched"] == 10 == sum(stub.batch_sizes())
    assert stats["batching"]["avg_batch_size"] == 5.0
    assert (stats["llm_cache"]["total_hits"], stats["llm_cache"]["total_misses"]) == (5, 5 + 15)
    assert stats["cost"]["provider_calls"] == 5 + 2
    assert _identical(stack.from_every_worker(f"/api/v2/llm/waves/{report['wave_id']}")) == report

    status, _, accepted = stack.call("POST", "/api/v2/cache/invalidate", {"masterplan_id": str(MP)})
    assert status == 202, accepted
    path = f"/api/v2/cache/invalidations/{accepted['id']}"
    final = stack.until(lambda: stack.call("GET", path)[2], lambda body: body["status"] in ("succeeded", "failed"))
    assert final["status"] == "succeeded", final
    assert final["removed_by_layer"]["llm"] == 15  # 5 cached + 10 answered prompts
    assert _identical(stack.from_every_worker(path)) == final
    after = _identical(stack.from_every_worker(f"/api/v2/cache/statistics/llm?masterplan_id={MP}"))
    assert after["invalidations"] >= 1
    # Every worker now misses: the answer is asked of the provider again.
    status, _, again = stack.call(
        "POST", "/api/v2/llm/generate", {"prompt": cached[0], "temperature": 0.0, "masterplan_id": str(MP)}
    )
    assert (status, again["cached"]) == (200, False)
    assert stub.batch_sizes()[-1] == 1

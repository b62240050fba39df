"""A small workload end to end: real Redis, real PostgreSQL, a real Celery worker.

The cached run writes real entries; the tool then drops its scopes through the operator
action, whose reclaim tasks a real worker consumes from the broker.
"""

from __future__ import annotations

import json
import uuid

import pytest

from cache_app import tasks
from cache_app.core import keys
from mgecache_site.celery import ping
from tests.cache_app.proof.test_run_masterplan import run, write_workload


@pytest.mark.redis_server
@pytest.mark.postgres
@pytest.mark.celery_worker
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_small_workload_on_real_services_with_a_celery_worker(
    tmp_path, seeded_defaults, celery_worker, redis, monkeypatch
):
    for name in ("reclaim_llm_masterplan", "reclaim_rag_masterplan"):
        task = getattr(tasks, name)
        # Through the real broker, to the queue the test's worker consumes.
        monkeypatch.setattr(task, "delay", lambda *a, _task=task, **kw: _task.apply_async(a, kw, queue=celery_worker))
    docs = tmp_path / "docs.jsonl"
    docs.write_text(
        json.dumps({"content": "Order.total sums the lines in cents", "source": "order.py"})
        + "\n"
        + json.dumps({"content": "Refunds go through PaymentService.refund", "source": "payments.py"})
        + "\n"
    )
    rows = [
        (1, 1, "a", "Implement Order.total", "How does Order.total sum the lines?"),
        (1, 1, "b", "Implement PaymentService.refund", "How are refunds made?"),
        (1, 2, "c", "Test Order.total", "How does Order.total sum the lines?"),
        (2, 1, "a", "Implement Order.total", "How does Order.total sum the lines?"),
        (2, 1, "b", "Implement PaymentService.refund, partial refunds too", "How are partial refunds made?"),
        (2, 2, "c", "Test Order.total", "How does Order.total sum the lines?"),
    ]
    result = run(write_workload(tmp_path / "w.jsonl", rows), tmp_path, mode="both", documents=str(docs))

    cached = result["cached"]
    assert cached["total"]["llm"]["hits"] == 2  # run 2 repeats two of its three prompts
    assert cached["runs"]["2"]["llm"]["hit_rate"] == pytest.approx(2 / 3)
    assert cached["total"]["rag"]["exact_hits"] == 3
    assert result["baseline"]["total"]["llm"]["hits"] == 0
    assert result["comparison"]["runs"]["2"]["cost_reduction"] > 0.5
    for mode in ("baseline", "cached"):
        assert result[mode]["agreement"]["statistics"]["ok"], result[mode]["agreement"]
        assert result[mode]["agreement"]["metrics"]["ok"], result[mode]["agreement"]
    [scope] = cached["scopes"].values()
    assert cached["statistics"][scope]["llm_cache"]["writes"] == 4
    assert cached["statistics"][scope]["rag_cache"]["writes"] >= 2

    # The worker handles tasks in order: once this ping is answered, the reclaims sent before it ran.
    assert ping.apply_async(queue=celery_worker).get(timeout=60) == "pong"
    for pattern in (keys.llm_scope_pattern(scope), keys.rag_scope_pattern(scope)):
        assert list(redis.scan_iter(match=pattern, count=1000)) == [], pattern
    assert uuid.UUID(scope)

"""A bounded stress test of both caches: processes x threads, invalidations racing writes, an empty restart.

Two worker processes (tests/cache_app/stress_worker.py) of three threads each share one
LLM and one RAG cache per process on a private redis-server, and race lookups, writes and
invalidations of the same two scopes. Once both are warm, the server is restarted empty
(same port). The oracle, from the deterministic data each answer carries:

* every hit (exact or similar) belongs to the current generation of its scope, as read
  just before the lookup, and to the same server lifetime;
* every similar hit scores at or above the threshold, recomputed from the stored vector;
* no write is refused unless its scope was invalidated between its miss and its set;
* similarity resumes in every process after the empty restart;
* nothing raises to a caller.

About 20 s (``make stress`` runs only this test). Figures are printed, not asserted.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
import uuid

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.redis_server]

PROCESSES = 2
THREADS = 3


def lines_of(proc: subprocess.Popen) -> queue.Queue:
    lines: queue.Queue = queue.Queue()

    def read() -> None:
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    return lines


def next_line(lines: queue.Queue, proc: subprocess.Popen, timeout: float) -> str:
    line = lines.get(timeout=timeout)
    if line is None:
        raise AssertionError(f"stress worker exited early ({proc.wait()}):\n{proc.stderr.read()}")
    return line


def test_no_stale_hit_no_refused_fresh_write_and_similarity_resumes_after_an_empty_restart(
    private_redis, subprocess_env, tmp_path
):
    scopes = ",".join(str(uuid.uuid4()) for _ in range(2))
    command = [sys.executable, "-m", "tests.cache_app.stress_worker", "--url", private_redis.url, "--scopes", scopes]
    procs = []
    for seed in range(PROCESSES):
        procs.append(
            subprocess.Popen(
                [*command, "--seed", str(seed), "--threads", str(THREADS)],
                env=subprocess_env,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    try:
        outputs = [lines_of(proc) for proc in procs]
        for proc, lines in zip(procs, outputs, strict=True):
            assert next_line(lines, proc, timeout=60) == "warm"
        private_redis.stop()
        private_redis.start()  # same port, empty: every counter, entry and log is gone
        restarted_at = time.time()
        reports = [json.loads(next_line(lines, proc, timeout=90)) for proc, lines in zip(procs, outputs, strict=True)]
        for proc in procs:
            assert proc.wait(timeout=30) == 0, proc.stderr.read()
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    total: dict[str, float] = {}
    for report in reports:
        for name, n in report["counts"].items():
            total[name] = total.get(name, 0) + n
    resumed = [r["first_similar_after_restart"] for r in reports]
    delays = [None if t is None else round(t - restarted_at, 3) for t in resumed]
    print(
        f"\nstress: {PROCESSES} processes x {THREADS} threads, {max(r['seconds'] for r in reports):.1f} s; "
        f"similarity resumed {delays} s after the empty restart\n" + json.dumps(total, sort_keys=True)
    )

    assert [r["exceptions"] for r in reports] == [[]] * PROCESSES
    assert all(r["restart_seen_at"] is not None for r in reports)
    # The oracle.
    for name in ("llm_stale_hits", "rag_stale_hits", "llm_wrong", "rag_wrong", "rag_below_threshold"):
        assert total.get(name, 0) == 0, name
    assert total.get("llm_refused_fresh", 0) == 0
    assert total.get("rag_refused_fresh", 0) == 0
    # Similarity resumed in every process, in scopes invalidated many times before the restart.
    assert all(t is not None for t in resumed)
    assert all(r["counts"].get("rag_similar_hits_after_restart", 0) > 0 for r in reports)
    assert total.get("rag_invalidations_before_restart", 0) > 0
    # The run exercised what it claims: hits of both kinds, and invalidations that refused racing writes.
    for name in ("llm_hits", "rag_exact_hits", "rag_similar_hits", "llm_writes", "rag_writes"):
        assert total.get(name, 0) > 0, name
    assert total.get("llm_refused", 0) + total.get("rag_refused", 0) > 0

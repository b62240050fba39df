"""Run a workload without mgecache (baseline) and with it (cached), and report the difference.

Each measured run gets fresh cache scopes: every masterplan of the workload is mapped to
a new masterplan id (a ``Masterplan`` row named after the run), so its prompt cache, RAG
cache, statistics and documents start empty and belong to that run alone. Runs 1, 2, ...
of a masterplan share their scope: run 2 re-executes run 1, as a retry would.

* **baseline**: ``use_cache=False``, no batching, and a RAG engine whose cache policy is
  read as disabled: every atom retrieves from the store and calls the provider.
* **cached**: the live policies from the database, the prompt cache, single-flight, the
  RAG cache, and batching if asked for (``BatchPolicy`` still decides).

Documents come from ``documents`` (a JSONL file or a folder of ``.txt`` files, read by
``load_documents``'s readers) and are embedded into each scope; without it, each scope gets
a copy of the documents already stored for the masterplan (or, if it has none, of the
global corpus). Afterwards the scopes are invalidated through the operator action (dead
keys reclaimed by Celery) and their rows and documents deleted, unless ``keep_scopes``.
"""

from __future__ import annotations

import asyncio
import os
import platform
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from django.db import connection, transaction

from cache_app import actions
from cache_app.core import conf
from cache_app.core.policies import get_policy_source
from cache_app.llm.cache import LLMPromptCache
from cache_app.llm.client import LLMClient
from cache_app.llm.pricing import get_ledger
from cache_app.llm.providers import build_provider
from cache_app.models import Document, Masterplan
from cache_app.proof import report
from cache_app.proof.executor import (
    CachesOff,
    ClientWaveRunner,
    MeteredProvider,
    Progress,
    StepResult,
    WaveExecutor,
    scaled_simulated_provider,
)
from cache_app.proof.workload import Step, Workload
from cache_app.rag.cache import RAGQueryCache
from cache_app.rag.documents import DocumentStore
from cache_app.rag.embedders import load_embedder
from cache_app.rag.engine import RAGEngine
from cache_app.statistics import cache_statistics

MODES = ("baseline", "cached", "both")
MAX_COPIED_DOCUMENTS = 50_000
DEFAULT_LATENCY_SCALE = 0.25
DEFAULT_OUTPUT_TOKENS = 400
DEFAULT_CONCURRENCY = 8


class DocumentsError(ValueError):
    pass


@dataclass(frozen=True)
class Options:
    mode: str = "both"
    documents: Path | None = None
    provider: str = "simulated"
    latency_scale: float = DEFAULT_LATENCY_SCALE
    output_tokens: int = DEFAULT_OUTPUT_TOKENS
    concurrency: int = DEFAULT_CONCURRENCY
    batching: bool = False
    keep_scopes: bool = False
    progress: Callable[[str, Step], Progress] | None = field(default=None, compare=False)

    def described(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("progress")
        data["documents"] = None if self.documents is None else str(self.documents)
        return data


def read_documents(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(content, metadata) pairs from a JSONL file or a folder of .txt files (``load_documents``'s format)."""
    from cache_app.rag.documents import DocumentFileError
    from cache_app.rag.documents import read_documents as read_document_files

    try:
        return read_document_files(path)
    except DocumentFileError as exc:
        raise DocumentsError(str(exc)) from exc


def run_masterplan(workload: Workload, options: Options) -> dict[str, Any]:
    """Measure ``workload`` in the chosen mode(s); return the report (JSON-able)."""
    if options.mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}")
    documents = read_documents(options.documents) if options.documents is not None else None
    modes = ("baseline", "cached") if options.mode == "both" else (options.mode,)
    result: dict[str, Any] = {
        "tool": "run_masterplan",
        "format": 1,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": _machine(),
        "workload": _describe(workload),
        "options": options.described(),
        "embedder": load_embedder().model_name,
        "llm_provider": options.provider,
        "simulated": options.provider == "simulated",
        "guard": "present" if report.guard_available() else "n/a",
    }
    for mode in modes:
        result[mode] = _run_mode(workload, mode, options, documents)
    if len(modes) == 2:
        base, cached = result["baseline"], result["cached"]
        result["comparison"] = {
            "total": report.compare(base["total"], cached["total"]),
            "runs": {run: report.compare(base["runs"][run], cached["runs"][run]) for run in cached["runs"]},
        }
    return result


def _describe(workload: Workload) -> dict[str, Any]:
    steps = workload.steps()
    return {
        "source": workload.source,
        "sha256": workload.sha256,
        "atoms": len(workload.atoms),
        "masterplans": len(workload.masterplans),
        "runs": workload.runs,
        "steps": len(steps),
        "atoms_with_rag_query": sum(1 for a in workload.atoms if a.rag_query is not None),
    }


def _machine() -> dict[str, Any]:
    return {
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


# --- one measured run ---------------------------------------------------------------------------
def _run_mode(
    workload: Workload, mode: str, options: Options, documents: list[tuple[str, dict[str, Any]]] | None
) -> dict[str, Any]:
    token = uuid.uuid4()
    scopes = {mp: str(uuid.uuid5(token, mp)) for mp in workload.masterplans}
    _create_scopes(scopes, mode, documents)
    meter = _meter(options)
    runner = _runner(mode, meter, options)
    guard = report.guard_available()
    deltas: list[dict] = []
    snapshot = [report.metrics_snapshot()]
    first = snapshot[0]

    def on_step(step: Step, result: StepResult) -> None:
        now = report.metrics_snapshot()
        deltas.append(report.metrics_delta(snapshot[0], now))
        snapshot[0] = now

    progress = options.progress
    executor = WaveExecutor(
        runner,
        meter=meter,
        progress=(lambda step: progress(mode, step)) if progress is not None else None,
        on_step=on_step,
    )
    status = Masterplan.Status.FAILED
    try:
        started = time.perf_counter()
        results = asyncio.run(executor.run(workload.steps(), scopes))
        wall = time.perf_counter() - started
        status = Masterplan.Status.COMPLETED
    finally:
        Masterplan.objects.filter(pk__in=scopes.values()).update(status=status)
    figures = report.mode_figures(results, meter.calls, deltas, guard=guard)
    figures["total"]["time"]["run_seconds_including_waits"] = wall
    statistics = {scope: cache_statistics(scope) for scope in scopes.values()}
    whole_delta = report.metrics_delta(first, report.metrics_snapshot())
    agreement = report.agreement(
        figures["total"],
        cached=mode == "cached",
        statistics=report.statistics_totals(statistics.values()),
        delta=whole_delta,
    )
    if not options.keep_scopes:
        _drop_scopes(scopes)
    return {
        "scopes": scopes,
        "kept_scopes": options.keep_scopes,
        **figures,
        "statistics": statistics,
        "agreement": agreement,
    }


def _meter(options: Options) -> MeteredProvider:
    prices = get_ledger().prices
    if options.provider == "simulated":
        provider, modelled = scaled_simulated_provider(
            scale=options.latency_scale,
            overhead_seconds=float(conf.get("SIMULATED_CALL_OVERHEAD_SECONDS")),
            seconds_per_token=float(conf.get("SIMULATED_SECONDS_PER_OUTPUT_TOKEN")),
            output_tokens=options.output_tokens,
        )
        return MeteredProvider(provider, prices=prices, modelled_seconds=modelled)
    return MeteredProvider(build_provider(options.provider), prices=prices)


def _runner(mode: str, meter: MeteredProvider, options: Options) -> ClientWaveRunner:
    model = conf.get("LLM_DEFAULT_MODEL")
    if mode == "baseline":
        off = CachesOff(get_policy_source())
        client = LLMClient(meter, prompt_cache=LLMPromptCache(policies=off), policies=off)  # type: ignore[arg-type]
        engine = RAGEngine(cache=RAGQueryCache(policies=off))
        return ClientWaveRunner(
            client, engine, concurrency=options.concurrency, use_cache=False, use_batching=False, default_model=model
        )
    client = LLMClient(meter)
    return ClientWaveRunner(
        client,
        RAGEngine(),
        concurrency=options.concurrency,
        use_cache=True,
        use_batching=options.batching,
        default_model=model,
    )


def _create_scopes(scopes: dict[str, str], mode: str, documents: list[tuple[str, dict[str, Any]]] | None) -> None:
    with transaction.atomic():
        for original, scope in scopes.items():
            Masterplan.objects.create(
                id=scope, name=f"run_masterplan {mode} of {original}"[:200], status=Masterplan.Status.RUNNING
            )
    store = DocumentStore(embedder=load_embedder())
    for original, scope in scopes.items():
        if documents is not None:
            store.add(documents, masterplan_id=scope)
        else:
            _copy_documents(original, scope)


def _copy_documents(original: str, scope: str) -> None:
    source = Document.objects.filter(masterplan_id=original)
    if not source.exists():
        source = Document.objects.filter(masterplan__isnull=True)
    rows = list(source.values_list("content", "metadata", "embedding", "embedding_model")[: MAX_COPIED_DOCUMENTS + 1])
    if len(rows) > MAX_COPIED_DOCUMENTS:
        raise DocumentsError(f"more than {MAX_COPIED_DOCUMENTS} documents to copy; pass --documents instead")
    copies = [
        Document(masterplan_id=scope, content=c, metadata=m, embedding=e, embedding_model=model)
        for c, m, e, model in rows
    ]
    with transaction.atomic():
        Document.objects.bulk_create(copies, batch_size=500)
        from cache_app.rag.documents import notify_changed

        notify_changed(scope)


def _drop_scopes(scopes: dict[str, str]) -> None:
    for scope in scopes.values():
        actions.invalidate_masterplan(scope, layers=actions.LAYERS)
    # In one statement per chunk: a cascade would send one post_delete, and so one RAG
    # invalidation and one Celery task, per document. The scopes were invalidated above.
    ids = list(Document.objects.filter(masterplan_id__in=scopes.values()).values_list("id", flat=True))
    table = connection.ops.quote_name(Document._meta.db_table)
    with transaction.atomic(), connection.cursor() as cursor:
        for start in range(0, len(ids), 1000):
            chunk = ids[start : start + 1000]
            cursor.execute(f"DELETE FROM {table} WHERE id IN ({', '.join(['%s'] * len(chunk))})", chunk)
        Masterplan.objects.filter(pk__in=scopes.values()).delete()

"""Figures of a measured run: hit rates, upstream calls, dollars, time, batching.

Three sources, which must agree (:func:`agreement` checks it):

* what each atom saw and what the metered provider received (the executor's record);
* the durable statistics of the run's masterplan scopes (``cache_app.statistics``, the
  same document ``GET .../cache/statistics?masterplan_id=`` serves);
* the Prometheus counters of this process (``/metrics``), as deltas over the run.

Definitions. An LLM *request* is an atom's generation; a *hit* was answered by the prompt
cache, a *merged* request by an identical one in flight (single-flight). A RAG *request*
is an atom's retrieval; *exact* and *similar* hits were answered by the RAG cache. The
combined hit rate is (LLM hits + merged + RAG hits) / (LLM requests + RAG requests); the
statistics' own ``combined_hit_rate`` (without merged requests) is reported next to it.
Cost reduction and time reduction compare the cached run with the baseline run of the
same workload: ``1 - cached / baseline``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client import REGISTRY

from cache_app.proof.executor import AtomOutcome, StepResult, UpstreamCall

GUARD_METRIC = "mgecache_rag_similarity_rejections_total"
_Sample = tuple[str, tuple[tuple[str, str], ...]]


# --- Prometheus ---------------------------------------------------------------------------------
def metrics_snapshot(registry: Any = REGISTRY) -> dict[_Sample, float]:
    """Every ``mgecache_*`` sample of this process (counters, histogram counts and sums)."""
    values: dict[_Sample, float] = {}
    for family in registry.collect():
        if not family.name.startswith("mgecache_"):
            continue
        for sample in family.samples:
            if sample.name.endswith(("_created", "_bucket")):
                continue
            values[(sample.name, tuple(sorted(sample.labels.items())))] = float(sample.value)
    return values


def metrics_delta(before: Mapping[_Sample, float], after: Mapping[_Sample, float]) -> dict[_Sample, float]:
    return {key: value - before.get(key, 0.0) for key, value in after.items() if value != before.get(key, 0.0)}


def metric(delta: Mapping[_Sample, float], name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(
        value for (sample, sample_labels), value in delta.items() if sample == name and wanted <= set(sample_labels)
    )


def guard_available(registry: Any = REGISTRY) -> bool:
    """Whether the similarity guard's rejection counter exists in this build."""
    return any(f.name == GUARD_METRIC.removesuffix("_total") for f in registry.collect())


# --- figures ----------------------------------------------------------------------------------------
def _rate(part: float, whole: float) -> float:
    return part / whole if whole else 0.0


def _reduction(cached: float, baseline: float) -> float | None:
    return 1.0 - cached / baseline if baseline else None


def figures(
    outcomes: Iterable[AtomOutcome],
    calls: Iterable[UpstreamCall],
    *,
    seconds: float,
    delta: Mapping[_Sample, float],
    guard: bool,
) -> dict[str, Any]:
    """The figures of a set of atoms (a wave, a run or everything) and the calls they caused."""
    outcomes, calls = list(outcomes), list(calls)
    llm_requests = sum(1 for o in outcomes if o.llm_attempted)
    llm_hits = sum(1 for o in outcomes if o.llm_layer == "llm")
    merged = sum(1 for o in outcomes if o.llm_layer == "singleflight")
    rag = [o for o in outcomes if o.rag is not None]
    exact = sum(1 for o in rag if o.rag == "exact")
    similar = sum(1 for o in rag if o.rag == "similar")
    ok_calls = [c for c in calls if c.error is None]
    batches = metric(delta, "mgecache_batch_size_count")
    batched_prompts = metric(delta, "mgecache_batch_size_sum")
    spent = sum(c.cost_usd for c in ok_calls)
    saved = sum(o.saved_usd for o in outcomes)
    return {
        "atoms": len(outcomes),
        "errors": sum(1 for o in outcomes if o.error is not None),
        "llm": {
            "requests": llm_requests,
            "hits": llm_hits,
            "merged": merged,
            "calls_made": llm_requests - llm_hits - merged,
            "hit_rate": _rate(llm_hits, llm_requests),
            "hit_rate_with_merged": _rate(llm_hits + merged, llm_requests),
        },
        "rag": {
            "requests": len(rag),
            "exact_hits": exact,
            "similar_hits": similar,
            "misses": len(rag) - exact - similar,
            "hit_rate": _rate(exact + similar, len(rag)),
            "guard_rejections": int(metric(delta, GUARD_METRIC)) if guard else "n/a",
            "documents_returned": sum(o.rag_documents for o in rag),
        },
        "combined_hit_rate": _rate(llm_hits + merged + exact + similar, llm_requests + len(rag)),
        "upstream": {
            "calls": len(ok_calls),
            "failed_calls": len(calls) - len(ok_calls),
            "combined_calls": sum(1 for c in ok_calls if c.atoms > 1),
            "prompt_tokens": sum(c.prompt_tokens for c in ok_calls),
            "completion_tokens": sum(c.completion_tokens for c in ok_calls),
        },
        "cost": {
            "spent_usd": spent,
            "saved_usd": saved,
            "saved_share": _rate(saved, saved + spent),
        },
        "time": {
            "wall_seconds": seconds,
            "modelled_llm_seconds": sum(c.modelled_seconds for c in calls),
            "measured_llm_seconds": sum(c.seconds for c in calls),
        },
        "batching": {
            "batches": int(batches),
            "prompts_batched": int(batched_prompts),
            "avg_batch_size": _rate(batched_prompts, batches),
            "deduplicated": int(metric(delta, "mgecache_batch_deduplicated_total")),
            "parse_fallbacks": int(metric(delta, "mgecache_batch_parse_fallbacks_total")),
        },
    }


def mode_figures(
    results: list[StepResult],
    calls: list[UpstreamCall],
    deltas: list[dict[_Sample, float]],
    *,
    guard: bool,
) -> dict[str, Any]:
    """Per wave, per run and in total. ``deltas[i]`` is the metrics delta over ``results[i]``."""
    waves = []
    by_run: dict[int, list[int]] = defaultdict(list)
    for index, result in enumerate(results):
        step_calls = [c for c in calls if (c.run, c.wave) == (result.run, result.wave)]
        waves.append(
            {
                "run": result.run,
                "wave": result.wave,
                **figures(result.outcomes, step_calls, seconds=result.seconds, delta=deltas[index], guard=guard),
            }
        )
        by_run[result.run].append(index)

    def over(indices: list[int]) -> dict[str, Any]:
        chosen = [results[i] for i in indices]
        keys = {(r.run, r.wave) for r in chosen}
        merged: dict[_Sample, float] = defaultdict(float)
        for i in indices:
            for key, value in deltas[i].items():
                merged[key] += value
        return figures(
            [o for r in chosen for o in r.outcomes],
            [c for c in calls if (c.run, c.wave) in keys],
            seconds=sum(r.seconds for r in chosen),
            delta=merged,
            guard=guard,
        )

    return {
        "total": over(list(range(len(results)))),
        "runs": {str(run): over(indices) for run, indices in sorted(by_run.items())},
        "waves": waves,
    }


def compare(baseline: Mapping[str, Any], cached: Mapping[str, Any]) -> dict[str, Any]:
    """Cached against baseline for the same atoms (a run, or everything)."""
    base_spent, spent = baseline["cost"]["spent_usd"], cached["cost"]["spent_usd"]
    base_wall, wall = baseline["time"]["wall_seconds"], cached["time"]["wall_seconds"]
    base_llm, llm = baseline["time"]["modelled_llm_seconds"], cached["time"]["modelled_llm_seconds"]
    return {
        "combined_hit_rate": cached["combined_hit_rate"],
        "llm_hit_rate": cached["llm"]["hit_rate"],
        "rag_hit_rate": cached["rag"]["hit_rate"],
        "baseline_combined_hit_rate": baseline["combined_hit_rate"],
        "upstream_calls": {"baseline": baseline["upstream"]["calls"], "cached": cached["upstream"]["calls"]},
        "tokens": {
            "baseline": baseline["upstream"]["prompt_tokens"] + baseline["upstream"]["completion_tokens"],
            "cached": cached["upstream"]["prompt_tokens"] + cached["upstream"]["completion_tokens"],
        },
        "spent_usd": {"baseline": base_spent, "cached": spent},
        "dollars_saved": base_spent - spent,
        "cost_reduction": _reduction(spent, base_spent),
        "wall_seconds": {"baseline": base_wall, "cached": wall},
        "time_reduction": _reduction(wall, base_wall),
        "modelled_llm_seconds": {"baseline": base_llm, "cached": llm},
        "modelled_llm_time_reduction": _reduction(llm, base_llm),
    }


# --- agreement ---------------------------------------------------------------------------------------
def statistics_totals(documents: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """The fields the report is checked against, summed over the run's scopes."""
    totals: dict[str, float] = defaultdict(float)
    for doc in documents:
        totals["llm_hits"] += doc["llm_cache"]["total_hits"]
        totals["llm_misses"] += doc["llm_cache"]["total_misses"]
        totals["rag_exact_hits"] += doc["rag_cache"]["exact_hits"]
        totals["rag_similar_hits"] += doc["rag_cache"]["similar_hits"]
        totals["rag_misses"] += doc["rag_cache"]["total_misses"]
        totals["spent_usd"] += doc["cost"]["spent_usd"]
        totals["saved_usd"] += doc["cost"]["saved_usd"]
    return dict(totals)


def agreement(
    total: Mapping[str, Any], *, cached: bool, statistics: Mapping[str, float], delta: Mapping[_Sample, float]
) -> dict[str, Any]:
    """Compare the report's totals with the statistics of its scopes and with the metrics delta."""
    llm, rag, cost = total["llm"], total["rag"], total["cost"]
    looked_up = llm["requests"] if cached else 0
    expected = {
        "llm_hits": llm["hits"],
        "llm_misses": looked_up - llm["hits"],
        "rag_exact_hits": rag["exact_hits"],
        "rag_similar_hits": rag["similar_hits"],
        "rag_misses": rag["misses"] if cached else 0,
        "spent_usd": cost["spent_usd"],
        "saved_usd": cost["saved_usd"],
    }
    from_metrics = {
        "llm_hits": metric(delta, "mgecache_cache_hits_total", cache_layer="llm"),
        "llm_misses": metric(delta, "mgecache_cache_misses_total", cache_layer="llm"),
        "llm_merged": metric(delta, "mgecache_llm_requests_total", outcome="merged"),
        "upstream_calls": metric(delta, "mgecache_llm_requests_total", outcome="miss"),
        "rag_exact_hits": metric(delta, "mgecache_cache_hits_total", cache_layer="rag"),
        "rag_similar_hits": metric(delta, "mgecache_cache_hits_total", cache_layer="rag_similarity"),
        "rag_misses": metric(delta, "mgecache_cache_misses_total", cache_layer="rag_similarity"),
        "spent_usd": metric(delta, "mgecache_llm_spend_usd_total"),
        "saved_usd": metric(delta, "mgecache_cost_saved_usd_total"),
    }
    expected_metrics = {**expected, "llm_merged": llm["merged"], "upstream_calls": total["upstream"]["calls"]}
    return {
        "statistics": _mismatches(expected, statistics),
        "metrics": _mismatches(expected_metrics, from_metrics),
    }


def _mismatches(expected: Mapping[str, float], actual: Mapping[str, float]) -> dict[str, Any]:
    # Dollar figures: the statistics document rounds to 6 decimals.
    wrong = {
        name: {"report": value, "measured": actual.get(name, 0.0)}
        for name, value in expected.items()
        if abs(value - actual.get(name, 0.0)) > (1e-5 if name.endswith("_usd") else 1e-9)
    }
    return {"ok": not wrong, "mismatches": wrong}


# --- text ----------------------------------------------------------------------------------------------
def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def summary_lines(result: Mapping[str, Any]) -> list[str]:
    """A plain-text table of a report: per run and in total, baseline against cached."""
    modes = [m for m in ("baseline", "cached") if m in result]
    lines = [
        f"run_masterplan: {result['workload']['source']} ({result['workload']['atoms']} atoms, "
        f"{result['workload']['steps']} waves over runs {result['workload']['runs']}), "
        f"provider {result['llm_provider']}"
        + (f" x{result['options']['latency_scale']:g} latency" if result.get("simulated") else "")
        + f", concurrency {result['options']['concurrency']}"
        + f", batching {'on' if result['options']['batching'] else 'off'}"
    ]
    scopes = [("total", result[modes[0]]["total"], "all runs")]
    scopes += [(run, result[modes[0]]["runs"][run], f"run {run}") for run in result[modes[0]]["runs"]]
    header = f"{'':34}" + "".join(f"{m:>14}" for m in modes)
    for key, _first, title in scopes:
        lines.append("")
        lines.append(f"{title}:")
        lines.append(header)
        rows = _rows({m: (result[m]["total"] if key == "total" else result[m]["runs"][key]) for m in modes})
        lines.extend(f"  {label:32}" + "".join(f"{v:>14}" for v in values) for label, values in rows)
        comparison = result.get("comparison", {})
        compared = comparison.get("total") if key == "total" else comparison.get("runs", {}).get(key)
        if compared:
            lines.append(
                f"  => combined hit rate {_pct(compared['combined_hit_rate'])}, cost reduction "
                f"{_pct(compared['cost_reduction'])}, time reduction {_pct(compared['time_reduction'])} "
                f"(modelled LLM time {_pct(compared['modelled_llm_time_reduction'])}), "
                f"spend cut by ${compared['dollars_saved']:.4f}"
            )
    for mode in modes:
        agree = result[mode]["agreement"]
        verdict = "agree" if agree["statistics"]["ok"] and agree["metrics"]["ok"] else "DISAGREE"
        lines.append(f"{mode}: figures {verdict} with the statistics of its scopes and with /metrics")
    return lines


def _rows(data: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, list[str]]]:
    def each(fn: Any) -> list[str]:
        return [fn(d) for d in data.values()]

    return [
        (
            "LLM hits / merged / requests",
            each(lambda d: f"{d['llm']['hits']}/{d['llm']['merged']}/{d['llm']['requests']}"),
        ),
        (
            "RAG exact / similar / requests",
            each(lambda d: f"{d['rag']['exact_hits']}/{d['rag']['similar_hits']}/{d['rag']['requests']}"),
        ),
        ("guard rejections", each(lambda d: str(d["rag"]["guard_rejections"]))),
        ("combined hit rate", each(lambda d: _pct(d["combined_hit_rate"]))),
        ("upstream calls", each(lambda d: str(d["upstream"]["calls"]))),
        (
            "upstream tokens (in+out)",
            each(lambda d: f"{d['upstream']['prompt_tokens'] + d['upstream']['completion_tokens']:,}"),
        ),
        ("spent (USD)", each(lambda d: f"{d['cost']['spent_usd']:.4f}")),
        ("saved by hits (USD)", each(lambda d: f"{d['cost']['saved_usd']:.4f}")),
        ("wall time (s)", each(lambda d: f"{d['time']['wall_seconds']:.2f}")),
        ("modelled LLM time (s)", each(lambda d: f"{d['time']['modelled_llm_seconds']:.1f}")),
        ("batches / avg size", each(lambda d: f"{d['batching']['batches']}/{d['batching']['avg_batch_size']:.2f}")),
        ("errors", each(lambda d: str(d["errors"]))),
    ]

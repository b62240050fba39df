"""manage.py run_masterplan: the tool measures, and does not flatter.

Workloads here are built so that their LLM hit rate follows from their content: which
prompts repeat exactly, at temperature 0, in a later wave (so no two copies are in flight
together). The cached run must report exactly that rate, the baseline none at all, and
every figure must match the statistics of the run's scopes and the /metrics deltas.
"""

from __future__ import annotations

import io
import json
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from prometheus_client.parser import text_string_to_metric_families

from cache_app.models import Document, Masterplan
from cache_app.proof.runner import read_documents
from cache_app.proof.workload import parse_workload
from cache_app.rag.documents import DocumentStore
from cache_app.statistics import cache_statistics

pytestmark = pytest.mark.django_db(transaction=True)
ROOT = Path(__file__).resolve().parents[3]
WORKLOADS = ROOT / "benchmarks" / "workloads"


def write_workload(path: Path, rows: list[tuple], masterplan: str | None = None) -> Path:
    """rows: (run, wave, atom name, prompt[, rag_query]); an atom name keeps its id across runs."""
    masterplan = masterplan or str(uuid.uuid4())
    ids: dict[str, str] = {}
    lines = []
    for run, wave, name, prompt, *query in rows:
        record = {
            "masterplan": masterplan,
            "run": run,
            "wave": wave,
            "atom_id": ids.setdefault(name, str(uuid.uuid4())),
            "prompt": prompt,
            "temperature": 0.0,
        }
        if query:
            record["rag_query"] = query[0]
        lines.append(json.dumps(record))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run(workload: Path, tmp_path: Path, **options) -> dict:
    report = tmp_path / "report.json"
    out = io.StringIO()
    call_command(
        "run_masterplan",
        workload=str(workload),
        report=str(report),
        latency_scale=0.0,
        output_tokens=20,
        verbosity=0,
        stdout=out,
        **options,
    )
    return json.loads(report.read_text())


# 0: eight distinct prompts.
NO_REPEATS = [(1, 1 + i // 4, f"a{i}", f"Implement step {i} of the parser.") for i in range(8)]
# 0.375: five distinct prompts in wave 1, three of them again in wave 2.
THREE_OF_EIGHT = [(1, 1, f"a{i}", f"Write tests for module {i}.") for i in range(5)] + [
    (1, 2, f"b{i}", f"Write tests for module {i}.") for i in range(3)
]
# 0.75: two prompts in wave 1, again in wave 2; then the whole run again (run 2).
SIX_OF_EIGHT = [
    (run, wave, f"{'ab'[i]}{wave}", f"Document class {'XY'[i]}.") for run in (1, 2) for wave in (1, 2) for i in range(2)
]


@pytest.mark.parametrize(
    ("rows", "expected"), [(NO_REPEATS, 0.0), (THREE_OF_EIGHT, 0.375), (SIX_OF_EIGHT, 0.75)], ids=["0", "0.375", "0.75"]
)
def test_the_reported_llm_hit_rate_is_the_one_the_workload_contains(tmp_path, seeded_defaults, rows, expected):
    result = run(write_workload(tmp_path / "w.jsonl", rows), tmp_path, mode="both")

    cached, baseline = result["cached"]["total"], result["baseline"]["total"]
    assert cached["llm"]["requests"] == 8
    assert cached["llm"]["hit_rate"] == pytest.approx(expected, abs=0.01)
    assert cached["llm"]["hits"] == round(expected * 8)
    assert cached["llm"]["merged"] == 0
    assert cached["upstream"]["calls"] == 8 - round(expected * 8)
    # The baseline shows no hits of any kind, and pays for every atom.
    assert baseline["llm"]["hits"] == baseline["llm"]["merged"] == 0
    assert baseline["rag"]["exact_hits"] == baseline["rag"]["similar_hits"] == 0
    assert baseline["combined_hit_rate"] == 0.0
    assert baseline["cost"]["saved_usd"] == 0.0
    assert baseline["upstream"]["calls"] == 8
    # Same answers bought: the cost reduction is the share of calls not made.
    assert result["comparison"]["total"]["cost_reduction"] == pytest.approx(expected, abs=0.01)
    for mode in ("baseline", "cached"):
        assert result[mode]["agreement"]["statistics"]["ok"], result[mode]["agreement"]
        assert result[mode]["agreement"]["metrics"]["ok"], result[mode]["agreement"]


METRICS_TOKEN = "proof-test-metrics-token"


def _scrape(client: Client) -> dict[tuple, float]:
    text = client.get("/metrics", HTTP_AUTHORIZATION=f"Bearer {METRICS_TOKEN}").content.decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _delta(before: dict, after: dict, name: str, **labels) -> float:
    wanted = set(labels.items())
    return sum(v - before.get(k, 0.0) for k, v in after.items() if k[0] == name and wanted <= set(k[1]))


def test_figures_agree_with_the_statistics_of_the_scope_and_with_metrics(tmp_path, seeded_defaults, settings):
    docs = tmp_path / "docs.jsonl"
    docs.write_text(
        "\n".join(
            json.dumps({"content": text, "source": name})
            for name, text in [
                ("order.py", "class Order: total() adds the lines and applies the tax"),
                ("tax.md", "Tax is applied per line, rounded half-even"),
                ("retry.py", "RetryPolicy retries PSP timeouts three times"),
            ]
        )
        + "\n"
    )
    rows = [
        (1, 1, "a", "Implement Order.total", "How does Order.total apply the tax?"),
        (1, 1, "b", "Implement RetryPolicy.run", "When does RetryPolicy retry?"),
        (1, 2, "c", "Implement Order.total", "how does order.total apply the tax"),  # LLM hit, similar RAG hit
        (1, 2, "d", "Test RetryPolicy.run", "When does RetryPolicy retry?"),  # exact RAG hit
        (1, 3, "e", "Document Order"),
    ]
    workload = write_workload(tmp_path / "w.jsonl", rows)
    settings.METRICS_TOKEN = METRICS_TOKEN  # /metrics answers only its bearer token
    client = Client()
    before = _scrape(client)
    result = run(workload, tmp_path, mode="both", documents=str(docs), keep_scopes=True)
    after = _scrape(client)

    cached = result["cached"]["total"]
    assert (cached["llm"]["hits"], cached["rag"]["exact_hits"], cached["rag"]["similar_hits"]) == (1, 1, 1)
    assert cached["rag"]["documents_returned"] > 0
    assert cached["combined_hit_rate"] == pytest.approx(3 / 9)
    [scope] = result["cached"]["scopes"].values()
    stats = cache_statistics(scope)
    assert stats["llm_cache"]["total_hits"] == cached["llm"]["hits"]
    assert stats["llm_cache"]["total_misses"] == cached["llm"]["requests"] - cached["llm"]["hits"]
    assert stats["rag_cache"]["exact_hits"] == 1
    assert stats["rag_cache"]["similar_hits"] == 1
    assert stats["rag_cache"]["total_misses"] == cached["rag"]["misses"] == 2
    assert stats["combined_hit_rate"] == pytest.approx(3 / 9)
    assert stats["cost"]["spent_usd"] == pytest.approx(cached["cost"]["spent_usd"], abs=1e-6)
    assert stats["llm_cache"]["cost_savings_usd"] == pytest.approx(cached["cost"]["saved_usd"], abs=1e-6)
    [base_scope] = result["baseline"]["scopes"].values()
    base_stats = cache_statistics(base_scope)
    assert base_stats["llm_cache"]["total_hits"] == base_stats["rag_cache"]["total_hits"] == 0
    assert base_stats["cost"]["spent_usd"] == pytest.approx(result["baseline"]["total"]["cost"]["spent_usd"], abs=1e-6)

    # /metrics moved by exactly what the two runs report (the baseline adds spend, no hits).
    both_spent = cached["cost"]["spent_usd"] + result["baseline"]["total"]["cost"]["spent_usd"]
    assert _delta(before, after, "mgecache_cache_hits_total", cache_layer="llm") == 1
    assert _delta(before, after, "mgecache_cache_hits_total", cache_layer="rag") == 1
    assert _delta(before, after, "mgecache_cache_hits_total", cache_layer="rag_similarity") == 1
    assert _delta(before, after, "mgecache_llm_requests_total", outcome="miss") == 4 + 5
    assert _delta(before, after, "mgecache_llm_spend_usd_total") == pytest.approx(both_spent)
    assert _delta(before, after, "mgecache_cost_saved_usd_total") == pytest.approx(cached["cost"]["saved_usd"])
    # Kept scopes stay inspectable: rows and documents are there.
    assert Masterplan.objects.filter(pk__in=[scope, base_scope]).count() == 2
    assert Document.objects.filter(masterplan_id=scope).count() == 3


def test_any_workload_file_is_accepted_and_its_scopes_are_dropped_afterwards(tmp_path, seeded_defaults):
    DocumentStore().add([("Order.total adds the lines", {"source": "order.py"})])  # the global corpus
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    path = tmp_path / "mine.jsonl"
    lines = [
        {"masterplan": first, "run": 3, "wave": 7, "atom_id": str(uuid.uuid4()), "prompt": "p1", "temperature": 0.7},
        {
            "masterplan": second,
            "run": 3,
            "wave": 0,
            "atom_id": str(uuid.uuid4()),
            "prompt": "p2",
            "temperature": 0,
            "model": "gpt-4o-mini",
            "max_tokens": 5,
            "rag_query": "what does Order.total add?",
            "top_k": 1,
        },
    ]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")

    result = run(path, tmp_path, mode="cached")

    assert "baseline" not in result
    assert "comparison" not in result
    assert set(result["cached"]["scopes"]) == {first, second}
    assert [(w["run"], w["wave"]) for w in result["cached"]["waves"]] == [(3, 0), (3, 7)]
    assert result["cached"]["total"]["rag"]["documents_returned"] == 1  # copied from the global corpus
    assert result["cached"]["total"]["upstream"]["calls"] == 2
    assert result["cached"]["agreement"]["statistics"]["ok"]
    scopes = list(result["cached"]["scopes"].values())
    assert not Masterplan.objects.filter(pk__in=scopes).exists()
    assert not Document.objects.filter(masterplan_id__in=scopes).exists()
    assert Document.objects.filter(masterplan__isnull=True).count() == 1


def test_a_malformed_workload_is_refused_naming_line_and_field_and_nothing_runs(tmp_path, seeded_defaults):
    rows = [(1, 1, "a", "Implement A")]
    path = write_workload(tmp_path / "w.jsonl", rows)
    good = path.read_text()
    path.write_text(good + good.replace('"temperature": 0.0', '"temperature": 9'))
    plans = Masterplan.objects.count()

    with pytest.raises(CommandError, match=r"line 2, field 'temperature': must be a number from 0 to 2"):
        run(path, tmp_path, mode="both")
    assert Masterplan.objects.count() == plans
    assert not (tmp_path / "report.json").exists()


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ({"documents": "missing-docs"}, "does not exist"),
        ({"plot": "chart.gif"}, "must be .svg or .png"),
        ({"report": "no/such/dir/r.json"}, "does not exist"),
    ],
)
def test_bad_options_are_refused_before_anything_runs(tmp_path, seeded_defaults, option, message):
    path = write_workload(tmp_path / "w.jsonl", [(1, 1, "a", "Implement A")])
    option = {k: str(tmp_path / v) for k, v in option.items()}
    with pytest.raises(CommandError, match=message):
        call_command("run_masterplan", workload=str(path), verbosity=0, **option)
    assert not Masterplan.objects.exists()


def test_the_plot_shows_both_runs_time_and_cost_per_wave(tmp_path, seeded_defaults):
    path = write_workload(tmp_path / "w.jsonl", THREE_OF_EIGHT)
    chart = tmp_path / "chart.svg"
    result = run(path, tmp_path, mode="both", plot=str(chart))

    svg = ET.parse(chart).getroot()
    titles = [el.text for el in svg.iter("{http://www.w3.org/2000/svg}title")]
    waves = len(result["cached"]["waves"])
    assert len(titles) == 2 * 2 * waves  # 2 panels x 2 runs x waves
    assert any(t.startswith("r1w2 cached") for t in titles)


def test_the_summary_names_the_targets_figures(tmp_path, seeded_defaults):
    path = write_workload(tmp_path / "w.jsonl", SIX_OF_EIGHT)
    out = io.StringIO()
    call_command("run_masterplan", workload=str(path), latency_scale=0.0, verbosity=1, stdout=out, stderr=io.StringIO())
    text = out.getvalue()
    assert "run 2:" in text
    assert "combined hit rate 100.0%, cost reduction 100.0%" in text
    assert "cached: figures agree" in text


def test_the_shipped_workloads_are_valid_and_regenerate_byte_for_byte(tmp_path):
    import subprocess
    import sys

    rerun = parse_workload(WORKLOADS / "rerun.jsonl")
    single = parse_workload(WORKLOADS / "single.jsonl")
    assert len(read_documents(WORKLOADS / "corpus.jsonl")) >= 20
    assert rerun.runs == [1, 2]
    assert len({a.wave for a in rerun.atoms}) == 10
    assert len(rerun.atoms) == 600
    assert single.runs == [1]
    # Run 2 changed 20% of the atoms: 80% of its prompts were already seen in run 1.
    first = {a.prompt for a in rerun.atoms if a.run == 1}
    second = [a for a in rerun.atoms if a.run == 2]
    assert sum(a.prompt in first for a in second) / len(second) == pytest.approx(0.8)

    subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "make_workloads.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    for name in ("rerun.jsonl", "single.jsonl", "corpus.jsonl"):
        assert (tmp_path / name).read_bytes() == (WORKLOADS / name).read_bytes(), name


def test_dropping_a_scope_invalidates_it_once_not_once_per_document(tmp_path, seeded_defaults):
    from cache_app.proof.report import metric, metrics_delta, metrics_snapshot

    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"content": f"document {i}"}) + "\n" for i in range(5)))
    path = write_workload(tmp_path / "w.jsonl", [(1, 1, "a", "Implement A", "what is document 1?")])
    before = metrics_snapshot()
    result = run(path, tmp_path, mode="cached", documents=str(docs))
    delta = metrics_delta(before, metrics_snapshot())

    # Once when its documents are loaded, once when it is dropped.
    assert metric(delta, "mgecache_cache_invalidations_total", cache_layer="rag") == 2
    assert not Document.objects.filter(masterplan_id__in=result["cached"]["scopes"].values()).exists()

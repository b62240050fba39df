"""Calibration: reading labelled pairs, the report, the command, applying a threshold."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from io import StringIO

import numpy as np
import pytest
from django.core.management import CommandError, call_command

from cache_app.models import CachePolicy
from cache_app.rag import calibration
from cache_app.rag.calibration import LabelledPair, PairsError, parse_thresholds, read_pairs
from cache_app.rag.guard import RuleGuard
from tests.conftest import ROOT

SHIPPED = ROOT / "benchmarks" / "similarity_pairs.jsonl"


def line(**row) -> str:
    return json.dumps({"a": "x", "b": "y", "same": False, "kind": "k", **row})


# --- reading ---------------------------------------------------------------------------------------


def test_read_pairs_parses_lines_and_skips_blank_ones():
    pairs = read_pairs([line(a="p", b="q", same=True, kind="near_duplicate"), "  ", line()])
    assert pairs == [LabelledPair("p", "q", True, "near_duplicate"), LabelledPair("x", "y", False, "k")]


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["{not json"], "line 1: not JSON"),
        ([line(), "[1, 2]"], "line 2: expected a JSON object"),
        ([line(a="")], "line 1: 'a' must be a non-empty string"),
        ([line(b=3)], "line 1: 'b' must be a non-empty string"),
        ([line(same="no")], "line 1: 'same' must be true or false"),
        ([line(kind="k" * 41)], "line 1: 'kind' must be a string"),
        ([line(a="q" * 2001)], "line 1: 'a' is longer than 2000"),
        ([line(same=True)], "no pair with"),
        ([], "no pair with"),
    ],
)
def test_bad_pairs_are_refused_with_the_line_and_the_reason(lines, message):
    with pytest.raises(PairsError, match=message):
        read_pairs(lines)


def test_the_number_of_pairs_is_bounded(monkeypatch):
    monkeypatch.setattr(calibration, "MAX_PAIRS", 2)
    with pytest.raises(PairsError, match="more than 2 pairs"):
        read_pairs([line()] * 3)


def test_load_pairs_refuses_missing_large_and_binary_files(tmp_path, monkeypatch):
    with pytest.raises(PairsError, match="cannot read"):
        calibration.load_pairs(tmp_path / "missing.jsonl")
    binary = tmp_path / "binary.jsonl"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(PairsError, match="not UTF-8"):
        calibration.load_pairs(binary)
    big = tmp_path / "big.jsonl"
    big.write_text(line() + "\n")
    monkeypatch.setattr(calibration, "MAX_FILE_BYTES", 10)
    with pytest.raises(PairsError, match="larger than"):
        calibration.load_pairs(big)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("0.9,0.8,0.9", (0.8, 0.9)), ("0.90:0.93:0.01", (0.9, 0.91, 0.92, 0.93)), ("1.0", (1.0,))],
)
def test_parse_thresholds(spec, expected):
    assert parse_thresholds(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("abc", "bad threshold list"),
        ("0.9:0.8", "bad threshold range"),
        ("0.8:0.9:0", "bad threshold range"),
        ("0.4", "between 0.5 and 1.0"),
        ("0.5:1.0:0.001", "at most 200"),
        (",", "give 1 to 200"),
    ],
)
def test_bad_threshold_lists_are_refused(spec, message):
    with pytest.raises(PairsError, match=message):
        parse_thresholds(spec)


# --- the report ----------------------------------------------------------------------------------


class FixedEmbedder:
    """Unit vectors with chosen cosines between the two texts of each pair."""

    model_name = "fixed-test"
    dim = 8

    def __init__(self, pairs: list[tuple[str, str, float]]) -> None:
        self.vectors: dict[str, np.ndarray] = {}
        for i, (a, b, cosine) in enumerate(pairs):
            base = np.zeros(self.dim)
            base[i] = 1.0
            other = np.zeros(self.dim)
            other[(i + 4) % self.dim] = 1.0
            self.vectors[a] = base
            self.vectors[b] = cosine * base + np.sqrt(1 - cosine**2) * other

    def embed(self, texts):
        return np.stack([self.vectors[t] for t in texts]).astype(np.float32)


CASES = [
    # a, b, cosine, same, kind
    ("Where is parse_config used?", "where is parse_config used", 0.97, True, "near_duplicate"),
    ("Why is the importer slow?", "Why is the imporetr slow?", 0.91, True, "near_duplicate"),
    ("Is the cron job retried?", "Is the cron job not retried?", 0.98, False, "negation"),
    ("How do I edit the batch window?", "How do I view the batch window?", 0.935, False, "changed_word"),
    ("How do I reset a password?", "What is the way to change a password?", 0.945, True, "paraphrase"),
]


@pytest.fixture
def report() -> calibration.CalibrationReport:
    pairs = [LabelledPair(a, b, same, kind) for a, b, _, same, kind in CASES]
    embedder = FixedEmbedder([(a, b, cos) for a, b, cos, _, _ in CASES])
    return calibration.calibrate(pairs, embedder, RuleGuard(), parse_thresholds("0.90:0.99:0.01"))


def test_calibration_counts_false_hits_and_rates_with_and_without_the_guard(report):
    plain = report.result(0.95, guarded=False)
    assert (plain.false_hits, plain.different) == (1, 2)  # the negation at 0.98
    assert plain.near_duplicate_rate == 0.5  # the typo scores 0.91
    guarded = report.result(0.95, guarded=True)
    assert guarded.false_hits == 0
    assert guarded.near_duplicate_rate == 1.0  # the typo is a lexical near-duplicate
    assert guarded.paraphrase_rate == 0.0
    assert report.result(0.93, guarded=True).false_hits == 1  # the changed word: no rule covers it
    assert report.result(0.93, guarded=True).paraphrase_rate == 1.0


def test_the_recommendation_is_the_lowest_threshold_with_no_false_hit(report):
    assert report.recommended == 0.94
    assert report.recommended_unguarded == 0.99
    assert report.highest_false_score[True] == pytest.approx(0.935, abs=1e-5)
    assert report.highest_false_score[False] == pytest.approx(0.98, abs=1e-5)
    text = calibration.format_report(report)
    assert "with the guard: lowest threshold with zero false hits 0.94" in text
    assert "without the guard: lowest threshold with zero false hits 0.99" in text
    assert json.loads(json.dumps(report.as_dict()))["recommended"] == 0.94


def test_no_recommendation_when_every_threshold_has_false_hits():
    pairs = [LabelledPair(a, b, same, kind) for a, b, _, same, kind in CASES]
    embedder = FixedEmbedder([(a, b, cos) for a, b, cos, _, _ in CASES])
    report = calibration.calibrate(pairs, embedder, RuleGuard(), (0.9, 0.92))
    assert report.recommended is None
    assert "no candidate threshold has zero false hits" in calibration.format_report(report)


# --- the command ---------------------------------------------------------------------------------


def run(*args: str) -> str:
    out = StringIO()
    call_command("calibrate_similarity", *args, stdout=out)
    return out.getvalue()


def write_pairs(tmp_path, rows) -> str:
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


SMALL = [
    {"a": "Where is parse_config used?", "b": "where is parse_config used", "same": True, "kind": "near_duplicate"},
    {
        "a": "How do I configure the logging configuration?",
        "b": "How do I not configure the logging configuration?",
        "same": False,
        "kind": "negation",
    },
]


def test_command_reports_on_the_shipped_file():
    out = run("--pairs", str(SHIPPED), "--embedder", "hashed", "--thresholds", "0.93,0.95")
    assert "labelled pairs, embedder hashed-ngram-384-v1" in out
    assert "with the guard: lowest threshold with zero false hits 0.95" in out
    data = json.loads(run("--pairs", str(SHIPPED), "--thresholds", "0.95", "--json"))
    assert data["recommended"] == 0.95
    assert data["results"][0]["kinds"]["near_duplicate"]["pairs"] >= 50


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--pairs", "/nonexistent/pairs.jsonl"], "cannot read"),
        (["--pairs", "{path}", "--thresholds", "0.2"], "between 0.5 and 1.0"),
        (["--pairs", "{path}", "--embedder", "cache_app.rag.embedders.Nope"], "cannot be imported"),
    ],
)
def test_command_bad_input_is_a_command_error(tmp_path, args, message):
    path = write_pairs(tmp_path, SMALL)
    with pytest.raises(CommandError, match=message):
        run(*[arg.format(path=path) for arg in args])


def test_command_refuses_a_bad_file(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a": "x"}\n')
    with pytest.raises(CommandError, match="line 1: 'b' must be a non-empty string"):
        run("--pairs", str(path))


@pytest.fixture
def cli_operator(monkeypatch):
    """--apply acts as a named operator (MGECACHE_CLI_USER), who may tune policies."""
    from django.contrib.auth.models import Group, User

    user = User.objects.create_user("ops")
    user.groups.add(Group.objects.get(name="operator"))
    monkeypatch.setenv("MGECACHE_CLI_USER", "ops")
    return user


@pytest.mark.django_db
def test_apply_writes_the_threshold_to_the_rag_policy_with_an_audit_row(tmp_path, cli_operator):
    from cache_app.models import PolicyChangeAudit

    path = write_pairs(tmp_path, SMALL)
    out = run("--pairs", path, "--thresholds", "0.90,0.97", "--apply")
    assert "RAG similarity threshold 0.95 -> 0.90 (policy with the hit guard)." in out
    assert CachePolicy.objects.get(layer="rag").similarity_threshold == 0.9
    audit = PolicyChangeAudit.objects.get()
    assert (audit.target, audit.source, audit.actor) == ("rag", "cli", cli_operator)
    assert (audit.old_values, audit.new_values) == ({"similarity_threshold": 0.95}, {"similarity_threshold": 0.9})


@pytest.mark.django_db
def test_apply_needs_a_user_who_may_tune_policies(tmp_path, monkeypatch):
    monkeypatch.delenv("MGECACHE_CLI_USER", raising=False)
    path = write_pairs(tmp_path, SMALL)
    with pytest.raises(CommandError, match="--user NAME"):
        run("--pairs", path, "--thresholds", "0.90,0.97", "--apply")
    assert CachePolicy.objects.get(layer="rag").similarity_threshold == 0.95


@pytest.mark.django_db
def test_apply_uses_the_unguarded_recommendation_when_the_policy_runs_without_the_guard(tmp_path, cli_operator):
    CachePolicy.objects.filter(layer="rag").update(similarity_guard=False)
    path = write_pairs(tmp_path, SMALL)
    with pytest.raises(CommandError, match="no candidate threshold had zero false hits"):
        run("--pairs", path, "--thresholds", "0.90,0.97", "--apply")
    assert CachePolicy.objects.get(layer="rag").similarity_threshold == 0.95
    out = run("--pairs", path, "--thresholds", "0.90,0.97,1.0", "--apply")
    assert "0.95 -> 1.00 (policy without the hit guard)" in out


@pytest.mark.django_db
def test_apply_refuses_a_calibration_made_with_another_embedder(tmp_path, monkeypatch, cli_operator):
    path = write_pairs(tmp_path, SMALL)
    monkeypatch.setitem(calibration.EMBEDDER_ALIASES, "other", "tests.cache_app.rag.test_calibration.OtherEmbedder")
    with pytest.raises(CommandError, match="configured embedder is hashed-ngram-384-v1"):
        run("--pairs", path, "--embedder", "other", "--thresholds", "0.9", "--apply")
    assert CachePolicy.objects.get(layer="rag").similarity_threshold == 0.95


class OtherEmbedder(FixedEmbedder):
    model_name = "other-model"

    def __init__(self) -> None:
        super().__init__([(r["a"], r["b"], 0.96) for r in SMALL])


# --- from a fresh clone ------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs git and a checkout")
def test_calibrate_similarity_runs_from_a_fresh_clone_on_the_shipped_file(tmp_path, subprocess_env):
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", "--no-checkout", str(ROOT), str(clone)], check=True)
    subprocess.run(["git", "-C", str(clone), "checkout", "--quiet", head.stdout.strip()], check=True)
    env = {k: v for k, v in subprocess_env.items() if k != "PYTHONPATH"}
    proc = subprocess.run(
        [sys.executable, "manage.py", "calibrate_similarity", "--pairs", "benchmarks/similarity_pairs.jsonl"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "with the guard: lowest threshold with zero false hits" in proc.stdout
    # The committed file is what the committed generator builds.
    check = subprocess.run(
        [sys.executable, "benchmarks/similarity_pairs.py", "--check"], cwd=clone, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stderr

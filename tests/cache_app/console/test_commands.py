"""manage.py cache_stats and tune_policy: thin, validated, with examples in --help."""

import json
import uuid

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from cache_app.core.counters import get_counters
from cache_app.llm.pricing import get_ledger
from cache_app.models import CachePolicy

pytestmark = pytest.mark.django_db

MP = uuid.UUID("dddddddd-4444-4444-8444-000000000004")


def _traffic() -> None:
    counters = get_counters()
    counters.incr("llm", "hits", 4, masterplan_id=MP)
    counters.incr("llm", "misses", 1, masterplan_id=MP)
    counters.incr("rag", "similar_hits", 2)
    get_ledger().add_saving("llm", 0.125, masterplan_id=MP)


def run(*args: str) -> str:
    from io import StringIO

    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


@pytest.mark.parametrize("masterplan", [None, str(MP)])
def test_cache_stats_json_is_the_statistics_endpoints_document(admin_user, masterplan):
    _traffic()
    api = APIClient()
    api.force_authenticate(admin_user)
    expected = api.get("/api/v2/cache/statistics", {"masterplan_id": masterplan} if masterplan else {}).json()
    args = ["cache_stats", "--json"] + (["--masterplan", masterplan] if masterplan else [])
    assert json.loads(run(*args)) == expected


def test_cache_stats_text_and_layer_filter():
    _traffic()
    text = run("cache_stats")
    assert "LLM prompt cache  hit rate 80.0%" in text
    assert "RAG query cache" in text
    assert "simulated" in text
    rag_only = json.loads(run("cache_stats", "--layer", "rag", "--json"))
    assert set(rag_only) == {"masterplan_id", "llm_provider", "llm_provider_simulated", "rag_cache"}
    assert rag_only["rag_cache"]["similar_hits"] == 2
    assert "LLM prompt cache" not in run("cache_stats", "--layer", "rag")


def test_cache_stats_rejects_a_bad_masterplan():
    with pytest.raises(CommandError, match="UUID"):
        run("cache_stats", "--masterplan", "not-a-uuid")


@pytest.fixture
def cli_operator(monkeypatch, operator):
    """The commands act as a named user with the operator's permissions (MGECACHE_CLI_USER)."""
    monkeypatch.setenv("MGECACHE_CLI_USER", operator.username)
    return operator


def test_tune_policy_changes_the_row_and_reports_old_and_new(cli_operator):
    from cache_app.models import PolicyChangeAudit

    out = run("tune_policy", "--layer", "rag", "--ttl", "7200", "--threshold", "0.96")
    policy = CachePolicy.objects.get(layer="rag")
    assert (policy.ttl_seconds, policy.similarity_threshold) == (7200, 0.96)
    assert "ttl_seconds 3600 -> 7200" in out
    assert "similarity_threshold 0.95 -> 0.96" in out
    audit = PolicyChangeAudit.objects.get()
    assert (audit.actor, audit.source, audit.target) == (cli_operator, "cli", "rag")
    assert audit.new_values == {"ttl_seconds": 7200, "similarity_threshold": 0.96}


def test_tune_policy_needs_a_user_who_may_tune(viewer, monkeypatch):
    monkeypatch.setenv("MGECACHE_CLI_USER", viewer.username)
    with pytest.raises(CommandError, match=r"lacks the permission cache_app\.tune_policy"):
        run("tune_policy", "--layer", "rag", "--ttl", "7200")
    assert CachePolicy.objects.get(layer="rag").ttl_seconds == 3600


def test_tune_policy_switches_and_store_rules(cli_operator):
    run("tune_policy", "--layer", "llm", "--disable", "--cache-truncated", "yes", "--notes", "incident 42")
    policy = CachePolicy.objects.get(layer="llm")
    assert (policy.enabled, policy.cache_truncated, policy.notes) == (False, True, "incident 42")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--layer", "rag", "--ttl", "0"], "ttl_seconds"),
        (["--layer", "rag", "--ttl", str(31 * 24 * 3600)], "ttl_seconds"),
        (["--layer", "rag", "--threshold", "1.5"], "similarity_threshold"),
        (["--layer", "llm", "--threshold", "0.9"], "does not apply to the llm layer"),
        (["--layer", "rag", "--cache-truncated", "yes"], "does not apply to the rag layer"),
        (["--layer", "rag"], "Nothing to change"),
        (["--layer", "rag", "--notes", "x" * 2001], "longer than 2000"),
        (["--layer", "gpu", "--ttl", "5"], "invalid choice"),
        (["--layer", "rag", "--ttl", "soon"], "invalid int value"),
    ],
)
def test_tune_policy_refuses_bad_input_and_changes_nothing(args, message, cli_operator):
    before = list(CachePolicy.objects.order_by("layer").values())
    with pytest.raises(CommandError, match=message):
        run("tune_policy", *args)
    assert list(CachePolicy.objects.order_by("layer").values()) == before


@pytest.mark.parametrize(
    ("command", "example"),
    [("cache_stats", "--layer rag"), ("tune_policy", "--user ops --layer rag --ttl 7200 --threshold 0.96")],
)
def test_help_gives_examples(command, example):
    from django.core.management import load_command_class

    text = load_command_class("cache_app", command).create_parser("manage.py", command).format_help()
    assert "examples:" in text
    assert f"  manage.py {command} {example}" in text  # the examples keep their own lines

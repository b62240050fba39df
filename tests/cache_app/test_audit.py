"""Invalidation as an audited operation (API, admin, CLI, Celery) and audited policy changes."""

from __future__ import annotations

import threading
import time
import uuid
from io import StringIO

import numpy as np
import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.urls import reverse
from prometheus_client import REGISTRY

from cache_app import actions, tasks
from cache_app.core.policies import DatabasePolicySource
from cache_app.core.redis_client import get_breaker
from cache_app.llm.cache import LLMPromptCache
from cache_app.models import (
    BatchPolicy,
    CachePolicy,
    InvalidationAudit,
    Masterplan,
    PolicyChangeAudit,
)
from cache_app.rag.cache import RAGQueryCache

MP_X = uuid.UUID("11111111-1111-4111-8111-111111111111")
MP_Y = uuid.UUID("22222222-2222-4222-8222-222222222222")
VEC = np.linspace(0.1, 1.0, 16, dtype=np.float32)


def fill(masterplan_id, n: int = 1) -> None:
    llm, rag = LLMPromptCache(), RAGQueryCache()
    for i in range(n):
        llm.set(
            f"write parser {i}",
            "claude-3-5-sonnet",
            0.0,
            "def parse(): ...",
            prompt_tokens=10,
            completion_tokens=5,
            masterplan_id=masterplan_id,
        )
        rag.set(
            f"how to parse {i}", VEC, [{"content": "doc"}], embedding_model="m", top_k=3, masterplan_id=masterplan_id
        )


def cached(masterplan_id) -> tuple[bool, bool]:
    llm = LLMPromptCache().get("write parser 0", "claude-3-5-sonnet", 0.0, masterplan_id=masterplan_id)
    rag = RAGQueryCache().get("how to parse 0", VEC, embedding_model="m", top_k=3, masterplan_id=masterplan_id)
    return llm is not None, rag is not None


@pytest.mark.django_db
def test_a_request_is_recorded_at_once_and_carried_out_after_commit(
    admin_user, django_capture_on_commit_callbacks, redis
):
    fill(MP_X, n=3)
    fill(MP_Y)
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        audit = actions.request_invalidation(source="api", masterplan_id=MP_X, layers="all", actor=admin_user)
        assert audit.status == "pending"
        assert cached(MP_X) == (True, True)  # nothing happens before the commit
    assert len(callbacks) == 1
    labels = {"status": "succeeded", "source": "api"}
    before = REGISTRY.get_sample_value("mgecache_invalidation_operations_total", labels) or 0.0
    callbacks[0]()  # the commit: the Celery task runs (eagerly here)
    assert REGISTRY.get_sample_value("mgecache_invalidation_operations_total", labels) == before + 1
    audit.refresh_from_db()
    assert audit.status == "succeeded"
    assert (audit.actor, audit.actor_name, audit.source) == (admin_user, admin_user.username, "api")
    assert audit.layers == ["llm", "rag"]
    assert audit.removed_by_layer == {"llm": 3, "rag": 3}
    assert audit.keys_removed == 6
    assert audit.duration_seconds is not None
    assert audit.finished_at >= audit.requested_at
    assert audit.error == ""
    assert cached(MP_X) == (False, False)
    assert cached(MP_Y) == (True, True)
    assert Masterplan.objects.filter(pk=MP_X).exists()  # registered on first sight


@pytest.mark.django_db
def test_the_operation_is_idempotent(redis):
    fill(MP_X)
    audit = actions.request_invalidation(source="cli", masterplan_id=MP_X, layers=["llm"], run_inline=True)
    assert audit.status == "succeeded"
    fill(MP_X)  # written after the invalidation
    again = tasks.perform_invalidation.apply(args=(str(audit.pk),)).get()  # a redelivered task
    assert again == {"id": str(audit.pk), "status": "succeeded", "keys_removed": 1}
    assert cached(MP_X) == (True, True)  # not invalidated a second time
    audit.refresh_from_db()
    assert audit.attempts == 1


@pytest.mark.django_db
def test_whole_layers_of_every_masterplan(redis):
    fill(MP_X)
    fill(MP_Y)
    audit = actions.request_invalidation(source="cli", all_masterplans=True, layers=["llm"], run_inline=True)
    assert audit.masterplan_id is None
    assert audit.removed_by_layer == {"llm": 2}
    assert cached(MP_X) == (False, True)
    assert cached(MP_Y) == (False, True)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"source": "api"}, "exactly one"),
        ({"source": "api", "masterplan_id": MP_X, "all_masterplans": True}, "exactly one"),
        ({"source": "api", "masterplan_id": MP_X, "layers": ["disk"]}, "layers"),
        ({"source": "api", "masterplan_id": MP_X, "layers": []}, "layers"),
        ({"source": "email", "masterplan_id": MP_X}, "source"),
        ({"source": "api", "masterplan_id": "x*"}, "UUID"),
    ],
)
def test_bad_requests_are_refused_and_record_nothing(kwargs, message):
    with pytest.raises(ValueError, match=message):
        actions.request_invalidation(**kwargs)
    assert not InvalidationAudit.objects.exists()


@pytest.mark.django_db
def test_redis_down_is_retried_then_recorded_as_failed(redis):
    get_breaker().record_failure()  # the breaker is open: Redis counts as down
    audit = InvalidationAudit.objects.create(source="api", masterplan_id=MP_X, layers=["llm"])
    with pytest.raises(actions.CacheUnavailableError):
        actions.perform_invalidation(audit.pk, final=False)  # the task will retry later
    audit.refresh_from_db()
    assert audit.status == "running"
    assert "could not invalidate" in audit.error
    actions.perform_invalidation(audit.pk, final=True)  # the last attempt
    audit.refresh_from_db()
    assert audit.status == "failed"
    assert audit.attempts == 2
    assert audit.finished_at is not None


@pytest.mark.django_db
def test_a_broker_outage_fails_the_row_instead_of_leaving_it_pending(monkeypatch, django_capture_on_commit_callbacks):
    def broken(*args, **kwargs):
        raise ConnectionError("broker down")

    monkeypatch.setattr(tasks.perform_invalidation, "apply_async", broken)
    with django_capture_on_commit_callbacks(execute=True):
        audit = actions.request_invalidation(source="api", masterplan_id=MP_X)
    audit.refresh_from_db()
    assert audit.status == "failed"
    assert "broker down" in audit.error


def test_task_options_ack_late_and_bounded_backoff():
    task = tasks.perform_invalidation
    assert task.acks_late is True
    assert task.max_retries == 6
    assert task.retry_backoff == 2
    assert task.retry_jitter is True
    assert actions.CacheUnavailableError in task.autoretry_for


@pytest.mark.redis_server
@pytest.mark.celery_worker
@pytest.mark.django_db(transaction=True)
def test_a_real_worker_carries_out_the_operation(celery_worker, redis):
    fill(MP_X, n=2)
    audit = actions.request_invalidation(
        source="api", masterplan_id=MP_X, layers="all", task_options={"queue": celery_worker}
    )  # autocommit: enqueued at once
    deadline = time.monotonic() + 30
    while audit.status in ("pending", "running") and time.monotonic() < deadline:
        threading.Event().wait(0.05)  # waiting for the worker to finish, not timing it
        audit.refresh_from_db()
    assert audit.status == "succeeded", audit.error
    assert audit.keys_removed == 4
    assert cached(MP_X) == (False, False)


# --- manage.py invalidate_cache --------------------------------------------------------------------


@pytest.fixture
def cli_operator(monkeypatch):
    """The command acts as a named operator (MGECACHE_CLI_USER)."""
    from django.contrib.auth.models import Group, User

    user = User.objects.create_user("ops")
    user.groups.add(Group.objects.get(name="operator"))
    monkeypatch.setenv("MGECACHE_CLI_USER", "ops")
    return user


@pytest.mark.django_db
def test_command_dry_run_counts_and_changes_nothing(redis, cli_operator):
    fill(MP_X, n=2)
    out = StringIO()
    call_command("invalidate_cache", "--masterplan", str(MP_X), "--dry-run", stdout=out)
    assert "llm: 2, rag: 2" in out.getvalue()
    assert "Nothing was changed" in out.getvalue()
    assert cached(MP_X) == (True, True)
    assert not InvalidationAudit.objects.exists()


@pytest.mark.django_db
def test_command_records_an_audit_row_and_prints_counts(redis, cli_operator):
    fill(MP_X, n=2)
    out = StringIO()
    call_command("invalidate_cache", "--masterplan", str(MP_X), "--layer", "rag", "--yes", stdout=out)
    audit = InvalidationAudit.objects.get()
    assert (audit.source, audit.status, audit.layers) == ("cli", "succeeded", ["rag"])
    assert (audit.actor, audit.actor_name) == (cli_operator, "ops")
    assert "rag: 2 entries removed" in out.getvalue()
    assert str(audit.pk) in out.getvalue()
    assert cached(MP_X) == (True, False)


@pytest.mark.django_db
def test_command_all_masterplans_needs_yes_off_a_terminal(redis, cli_operator):
    fill(MP_X)
    with pytest.raises(CommandError, match="--yes"):
        call_command("invalidate_cache", "--all-masterplans", "--layer", "all")
    assert cached(MP_X) == (True, True)
    call_command("invalidate_cache", "--all-masterplans", "--layer", "all", "--yes", stdout=StringIO())
    assert cached(MP_X) == (False, False)
    assert InvalidationAudit.objects.get().masterplan_id is None


@pytest.mark.django_db
def test_command_reports_a_failed_operation(redis, cli_operator):
    get_breaker().record_failure()
    with pytest.raises(CommandError, match="failed"):
        call_command("invalidate_cache", "--masterplan", str(MP_X), "--layer", "llm", "--yes", stdout=StringIO())
    assert InvalidationAudit.objects.get().status == "failed"


def test_command_help_gives_examples():
    from cache_app.management.commands.invalidate_cache import Command

    assert (
        "--all-masterplans --layer all --yes" in Command().create_parser("manage.py", "invalidate_cache").format_help()
    )


# --- admin -------------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_admin_action_confirms_with_counts_then_runs_the_audited_operation(
    admin_client, admin_user, django_capture_on_commit_callbacks, redis
):
    Masterplan.objects.create(id=MP_X, name="wave test")
    fill(MP_X, n=2)
    url = reverse("admin:cache_app_masterplan_changelist")
    data = {"action": "invalidate_all_caches", "_selected_action": [str(MP_X)]}
    page = admin_client.post(url, data)
    assert b"2 LLM entries and 2 RAG entries" in page.content
    assert not InvalidationAudit.objects.exists()
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(url, {**data, "post": "yes"}, follow=True)
    audit = InvalidationAudit.objects.get()
    assert (audit.source, audit.actor, audit.status, audit.keys_removed) == ("admin", admin_user, "succeeded", 4)
    assert reverse("admin:cache_app_invalidationaudit_change", args=[audit.pk]).encode() in response.content
    assert cached(MP_X) == (False, False)
    # The audit row is readable, not editable.
    detail = admin_client.get(reverse("admin:cache_app_invalidationaudit_change", args=[audit.pk]))
    assert detail.status_code == 200
    assert b'name="_save"' not in detail.content


# --- policies ---------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_update_policy_validates_converts_and_records_old_and_new_values(admin_user):
    result = actions.update_policy(
        "rag", {"ttl_seconds": "7200", "similarity_threshold": 0.96}, source="api", actor=admin_user
    )
    assert result.policy.ttl_seconds == 7200
    audit = result.audit
    assert (audit.target, audit.source, audit.actor) == ("rag", "api", admin_user)
    assert audit.old_values == {"ttl_seconds": 3600, "similarity_threshold": 0.95}
    assert audit.new_values == {"ttl_seconds": 7200, "similarity_threshold": 0.96}
    live = DatabasePolicySource(refresh_seconds=0).rag()
    assert (live.ttl_seconds, live.similarity_threshold) == (7200, 0.96)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("layer", "changes", "field"),
    [
        ("rag", {"ttl_seconds": 0}, "ttl_seconds"),
        ("rag", {"similarity_threshold": 1.5}, "similarity_threshold"),
        ("llm", {"enabled": "maybe"}, "enabled"),
        ("llm", {"layer": "rag"}, "layer"),
        ("batching", {"max_batch_size": 51}, "max_batch_size"),
        ("batching", {"batch_window_ms": "soon"}, "batch_window_ms"),
    ],
)
def test_update_policy_refuses_bad_values_with_field_errors_and_saves_nothing(layer, changes, field):
    before = (list(CachePolicy.objects.values()), list(BatchPolicy.objects.values()))
    with pytest.raises(ValidationError) as caught:
        actions.update_policy(layer, changes, source="cli", actor="cli:ops")
    assert field in caught.value.message_dict
    assert (list(CachePolicy.objects.values()), list(BatchPolicy.objects.values())) == before
    assert not PolicyChangeAudit.objects.exists()


@pytest.mark.django_db
def test_update_policy_without_a_change_records_nothing():
    assert actions.update_policy("llm", {"ttl_seconds": 86400}, source="cli").audit is None
    with pytest.raises(ValueError, match="layer"):
        actions.update_policy("disk", {}, source="cli")
    assert not PolicyChangeAudit.objects.exists()


@pytest.mark.django_db
def test_admin_policy_edits_go_through_the_audited_operation(admin_client, admin_user):
    row = CachePolicy.objects.get(layer="rag")
    url = reverse("admin:cache_app_cachepolicy_change", args=[row.pk])
    form = {
        "layer": "rag",
        "enabled": "on",
        "ttl_seconds": "1800",
        "notes": "fresher answers",
        "similarity_threshold": "0.95",
        "cache_nonzero_temperature": "on",
        "similarity_guard": "on",
    }
    assert admin_client.post(url, form).status_code == 302
    audit = PolicyChangeAudit.objects.get()
    assert (audit.source, audit.actor, audit.target) == ("admin", admin_user, "rag")
    assert audit.old_values == {"ttl_seconds": 3600, "notes": row.notes}
    assert audit.new_values == {"ttl_seconds": 1800, "notes": "fresher answers"}
    # The admin's own validation still answers with form errors.
    bad = admin_client.post(url, {**form, "ttl_seconds": "0"})
    assert bad.status_code == 200
    assert "ttl_seconds" in bad.context["adminform"].form.errors
    assert PolicyChangeAudit.objects.count() == 1


@pytest.mark.django_db
def test_admin_batch_policy_edits_are_audited(admin_client):
    url = reverse("admin:cache_app_batchpolicy_change", args=[1])
    response = admin_client.post(url, {"enabled": "on", "max_batch_size": "8", "batch_window_ms": "500", "notes": ""})
    assert response.status_code == 302
    audit = PolicyChangeAudit.objects.get()
    assert (audit.target, audit.old_values, audit.new_values) == (
        "batching",
        {"max_batch_size": 5},
        {"max_batch_size": 8},
    )
    assert BatchPolicy.objects.get().max_batch_size == 8


@pytest.mark.django_db
def test_a_task_for_a_deleted_row_does_nothing(redis):
    fill(MP_X)
    missing = str(uuid.uuid4())
    assert tasks.perform_invalidation.apply(args=(missing,)).get() == {
        "id": missing,
        "status": "missing",
        "keys_removed": 0,
    }
    assert cached(MP_X) == (True, True)

"""Invalidation and policy changes need the operator's permissions in the API, the admin and the commands."""

import uuid

import pytest
from django.contrib.auth.models import Group, Permission, User
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse

from cache_app.access.roles import ROLE_PERMISSIONS
from cache_app.llm.cache import LLMPromptCache
from cache_app.models import BatchPolicy, CachePolicy, Masterplan

pytestmark = pytest.mark.django_db

MP = uuid.UUID("99999999-9999-4999-8999-999999999999")


def _fill():
    LLMPromptCache().set(
        "role prompt", "claude-3-5-sonnet", 0.0, "answer", prompt_tokens=1, completion_tokens=1, masterplan_id=MP
    )


def _cached() -> bool:
    return LLMPromptCache().get("role prompt", "claude-3-5-sonnet", 0.0, masterplan_id=MP) is not None


def _user(name: str, role: str | None = None, *, staff: bool = True, perms: tuple[str, ...] = ()) -> User:
    user = User.objects.create_user(name, is_staff=staff)
    if role:
        user.groups.add(Group.objects.get(name=role))
    for perm in perms:
        app_label, codename = perm.split(".")
        user.user_permissions.add(Permission.objects.get(content_type__app_label=app_label, codename=codename))
    return user


def _session(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


def test_migration_creates_the_three_roles(roles):
    pipeline = Group.objects.get(name="pipeline")
    assert {f"cache_app.{p.codename}" for p in pipeline.permissions.all()} == {"cache_app.use_pipeline"}
    operator = Group.objects.get(name="operator")
    assert {f"{p.content_type.app_label}.{p.codename}" for p in operator.permissions.all()} == set(
        ROLE_PERMISSIONS["operator"]
    )
    admin = Group.objects.get(name="admin")
    assert admin.permissions.filter(codename="add_pipelineapikey").exists()
    assert admin.permissions.filter(codename="invalidate_cache").exists()


@pytest.mark.parametrize("role", [None, "pipeline"])
def test_invalidate_command_refuses_a_user_without_the_permission(roles, role):
    _user("someone", role)
    _fill()
    with pytest.raises(CommandError, match=r"lacks the permission cache_app\.invalidate_cache"):
        call_command("invalidate_cache", "--masterplan", str(MP), "--user", "someone")
    with pytest.raises(CommandError, match="lacks"):
        call_command("invalidate_cache", "--all", "--yes", "--user", "someone")
    assert _cached()


def test_invalidate_command_needs_a_named_active_user(roles, monkeypatch):
    _fill()
    monkeypatch.delenv("MGECACHE_CLI_USER", raising=False)
    with pytest.raises(CommandError, match="--user NAME"):
        call_command("invalidate_cache", "--masterplan", str(MP))
    with pytest.raises(CommandError, match="No active user"):
        call_command("invalidate_cache", "--masterplan", str(MP), "--user", "ghost")
    assert _cached()


def test_invalidate_command_acts_for_an_operator_also_named_in_the_environment(roles, monkeypatch, capsys):
    _user("ops", "operator")
    _fill()
    monkeypatch.setenv("MGECACHE_CLI_USER", "ops")
    call_command("invalidate_cache", "--masterplan", str(MP))
    assert "Invalidated masterplan" in capsys.readouterr().out
    assert not _cached()


def test_admin_invalidation_needs_the_invalidate_permission(roles, django_capture_on_commit_callbacks):
    Masterplan.objects.create(id=MP, name="role test")
    _fill()
    url = reverse("admin:cache_app_masterplan_changelist")
    data = {"action": "invalidate_all_caches", "_selected_action": [str(MP)], "post": "yes"}
    # Staff that may view and even change masterplans, but is no operator: the action is not offered.
    viewer = _session(_user("viewer", perms=("cache_app.view_masterplan", "cache_app.change_masterplan")))
    page = viewer.get(url)
    assert page.status_code == 200
    assert b"invalidate_all_caches" not in page.content
    viewer.post(url, data)
    assert _cached()
    operator = _session(_user("operator-1", "operator"))
    assert b"invalidate_all_caches" in operator.get(url).content
    with django_capture_on_commit_callbacks(execute=True):  # the audited operation runs after commit
        assert operator.post(url, data).status_code == 302
    assert not _cached()


def test_admin_policy_changes_need_the_tune_permission(roles):
    policy = CachePolicy.objects.get(layer="llm")
    url = reverse("admin:cache_app_cachepolicy_change", args=[policy.pk])
    form = {"layer": "llm", "enabled": "on", "ttl_seconds": "600", "notes": "", "similarity_threshold": "0.95"}
    editor = _session(_user("editor", perms=("cache_app.view_cachepolicy", "cache_app.change_cachepolicy")))
    assert editor.post(url, form).status_code == 403
    policy.refresh_from_db()
    assert policy.ttl_seconds == 86400
    operator = _session(_user("operator-2", "operator"))
    assert operator.post(url, form).status_code == 302
    policy.refresh_from_db()
    assert policy.ttl_seconds == 600

    batch_url = reverse("admin:cache_app_batchpolicy_change", args=[1])
    batch_form = {"enabled": "on", "max_batch_size": "9", "batch_window_ms": "100", "notes": ""}
    assert editor.post(batch_url, batch_form).status_code == 403
    assert operator.post(batch_url, batch_form).status_code == 302
    assert BatchPolicy.objects.get(pk=1).max_batch_size == 9


INVALIDATE = "/api/v2/cache/invalidate"


def test_api_invalidation_needs_the_operator_role(make_caller, django_capture_on_commit_callbacks):
    _fill()
    for role in ("pipeline",):
        response = make_caller(role).post(INVALIDATE, {"masterplan_id": str(MP)}, format="json")
        assert response.status_code == 403
    assert _cached()
    with django_capture_on_commit_callbacks(execute=True):
        response = make_caller("operator").post(INVALIDATE, {"masterplan_id": str(MP)}, format="json")
    assert response.status_code == 202
    assert not _cached()


def test_a_view_without_permission_classes_is_closed(rf):
    from rest_framework.response import Response
    from rest_framework.views import APIView

    class Forgetful(APIView):
        def get(self, request):
            return Response({"secret": True})

    response = Forgetful.as_view()(rf.get("/api/forgetful/"))
    assert response.status_code == 401  # the project default denies; anonymous callers are asked to log in

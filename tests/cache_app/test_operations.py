"""Invalidation and statistics from manage.py and the admin (the API's: tests/cache_app/api/)."""

import uuid

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from cache_app.llm.cache import LLMPromptCache
from cache_app.models import Masterplan
from cache_app.rag.cache import RAGQueryCache

pytestmark = pytest.mark.django_db

MP_X = uuid.UUID("11111111-1111-4111-8111-111111111111")
MP_Y = uuid.UUID("22222222-2222-4222-8222-222222222222")
VEC = np.linspace(0.1, 1.0, 16, dtype=np.float32)


def _fill(masterplan_id):
    llm, rag = LLMPromptCache(), RAGQueryCache()
    llm.set(
        "write a parser",
        "claude-3-5-sonnet",
        0.0,
        "def parse(): ...",
        prompt_tokens=10,
        completion_tokens=5,
        masterplan_id=masterplan_id,
    )
    rag.set("how to parse", VEC, [{"content": "doc"}], embedding_model="m", top_k=3, masterplan_id=masterplan_id)


def _cached(masterplan_id) -> tuple[bool, bool]:
    llm = LLMPromptCache().get("write a parser", "claude-3-5-sonnet", 0.0, masterplan_id=masterplan_id)
    rag = RAGQueryCache().get("how to parse", VEC, embedding_model="m", top_k=3, masterplan_id=masterplan_id)
    return llm is not None, rag is not None


def test_command_invalidates_masterplan(capsys, admin_user):
    _fill(MP_X)
    call_command("invalidate_cache", "--masterplan", str(MP_X), "--user", admin_user.username)
    assert "Invalidated masterplan" in capsys.readouterr().out
    assert _cached(MP_X) == (False, False)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--masterplan", "x*"], "UUID"),
        (["--all"], "--yes"),
    ],
)
def test_command_rejects_bad_input(args, message, admin_user):
    with pytest.raises(CommandError, match=message):
        call_command("invalidate_cache", *args, "--user", admin_user.username)


def test_command_all_layers(capsys, admin_user):
    _fill(MP_X)
    call_command("invalidate_cache", "--all", "--yes", "--layer", "llm", "--user", admin_user.username)
    assert _cached(MP_X) == (False, True)


def test_admin_action_asks_for_confirmation_then_invalidates(admin_client, django_capture_on_commit_callbacks):
    Masterplan.objects.create(id=MP_X, name="wave test")
    _fill(MP_X)
    url = reverse("admin:cache_app_masterplan_changelist")
    data = {"action": "invalidate_all_caches", "_selected_action": [str(MP_X)]}
    response = admin_client.post(url, data)
    assert response.status_code == 200
    assert b"Yes, invalidate" in response.content
    assert _cached(MP_X) == (True, True)  # nothing happened yet
    with django_capture_on_commit_callbacks(execute=True):  # the operation runs after commit
        response = admin_client.post(url, {**data, "post": "yes"})
    assert response.status_code == 302
    assert _cached(MP_X) == (False, False)


def test_admin_statistics_pages_are_read_only_views(admin_client):
    Masterplan.objects.create(id=MP_X, name="wave test")
    _fill(MP_X)
    _cached(MP_X)
    response = admin_client.get(reverse("admin:cache_app_masterplan_statistics", args=[MP_X]))
    assert response.status_code == 200
    assert response.context["stats"]["llm_cache"]["total_hits"] == 1
    assert b"simulated" in response.content
    assert admin_client.get(reverse("admin:cache_app_masterplan_statistics_all")).status_code == 200

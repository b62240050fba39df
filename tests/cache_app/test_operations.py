"""Invalidation and statistics from the API, manage.py and the admin."""

import uuid

import numpy as np
import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from rest_framework.test import APIClient

from cache_app.core.redis_client import get_breaker
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


@pytest.fixture
def api(admin_user):
    client = APIClient()
    client.force_authenticate(admin_user)
    return client


def test_api_requires_authentication():
    client = APIClient()
    assert client.get("/api/cache/statistics/").status_code in (401, 403)
    assert client.post(f"/api/masterplans/{MP_X}/invalidate/", {}, format="json").status_code in (401, 403)


def test_api_invalidates_only_the_target_masterplan(api):
    _fill(MP_X)
    _fill(MP_Y)
    assert _cached(MP_X) == (True, True)
    response = api.post(f"/api/masterplans/{MP_X}/invalidate/", {}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["layers"] == ["llm", "rag"]
    assert _cached(MP_X) == (False, False)
    assert _cached(MP_Y) == (True, True)


def test_api_invalidates_one_layer(api):
    _fill(MP_X)
    response = api.post(f"/api/masterplans/{MP_X}/invalidate/", {"layers": ["rag"]}, format="json")
    assert response.status_code == 200
    assert _cached(MP_X) == (True, False)


def test_api_rejects_unknown_layer_with_field_error(api):
    response = api.post(f"/api/masterplans/{MP_X}/invalidate/", {"layers": ["llm", "disk"]}, format="json")
    assert response.status_code == 400
    assert "layers" in response.json()


def test_api_whole_layer_invalidation_needs_confirm(api):
    _fill(MP_X)
    response = api.post("/api/cache/invalidate/", {"layers": ["llm"]}, format="json")
    assert response.status_code == 400
    assert "confirm" in response.json()
    assert _cached(MP_X) == (True, True)
    response = api.post("/api/cache/invalidate/", {"layers": ["llm"], "confirm": True}, format="json")
    assert response.status_code == 200
    assert _cached(MP_X) == (False, True)


def test_api_answers_503_when_redis_is_down(api):
    get_breaker().record_failure()  # the breaker is open: Redis counts as down
    response = api.post(f"/api/masterplans/{MP_X}/invalidate/", {}, format="json")
    assert response.status_code == 503


def test_statistics_reflect_hits_and_misses(api):
    _fill(MP_X)
    _cached(MP_X)  # 1 llm hit, 1 rag exact hit
    _cached(MP_Y)  # 1 llm miss, 1 rag miss
    body = api.get("/api/cache/statistics/").json()
    assert body["llm_provider_simulated"] is True  # the embedded default is labelled as simulated
    assert body["llm_cache"]["total_hits"] == 1
    assert body["llm_cache"]["total_misses"] == 1
    assert body["rag_cache"]["exact_hits"] == 1
    assert body["combined_hit_rate"] == pytest.approx(0.5)
    scoped = api.get("/api/cache/statistics/", {"masterplan_id": str(MP_Y)}).json()
    assert scoped["llm_cache"]["total_hits"] == 0
    assert scoped["llm_cache"]["total_misses"] == 1


def test_statistics_rejects_bad_masterplan_id(api):
    response = api.get("/api/cache/statistics/", {"masterplan_id": "not-a-uuid"})
    assert response.status_code == 400
    assert "masterplan_id" in response.json()


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

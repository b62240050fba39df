"""A key restricted to a set of masterplans gets 403 for any other masterplan and for the global scope."""

import uuid

import pytest

from cache_app.models import Masterplan

pytestmark = pytest.mark.django_db

MINE = uuid.UUID("11111111-1111-4111-8111-111111111111")
THEIRS = uuid.UUID("22222222-2222-4222-8222-222222222222")


def _generate(client, masterplan_id):
    body = {"prompt": "scope check", "temperature": 0, "masterplan_id": masterplan_id}
    return client.post("/api/v2/llm/generate", body, format="json")


def _rag(client, masterplan_id):
    return client.post("/api/v2/rag/query", {"query": "scope check", "masterplan_id": masterplan_id}, format="json")


def _statistics(client, masterplan_id):
    return client.get("/api/v2/cache/statistics", {} if masterplan_id is None else {"masterplan_id": masterplan_id})


def _wave(client, masterplan_id):
    atoms = [{"atom_id": str(uuid.uuid4()), "prompt": "scope check"}]
    return client.post("/api/v2/llm/waves?wait=false", {"atoms": atoms, "masterplan_id": masterplan_id}, format="json")


PIPELINE_ROUTES = {
    "generate": (_generate, 200),
    "rag": (_rag, 200),
    "statistics": (_statistics, 200),
    "wave": (_wave, 202),
}


@pytest.mark.parametrize("route", sorted(PIPELINE_ROUTES))
def test_scoped_pipeline_key_uses_its_masterplan_only(route, make_caller):
    call, ok = PIPELINE_ROUTES[route]
    scoped = make_caller("pipeline", masterplans=[MINE])
    assert call(scoped, str(MINE)).status_code == ok
    # Another masterplan, and the global scope (a wave always names its masterplan).
    for other in (str(THEIRS),) if route == "wave" else (str(THEIRS), None):
        response = call(scoped, other)
        assert response.status_code == 403, (other, response.content)
        assert response.json()["code"] == "permission_denied"


@pytest.mark.parametrize("route", ["generate", "rag", "wave"])
def test_unrestricted_pipeline_key_uses_every_masterplan_and_the_global_scope(route, make_caller):
    call, ok = PIPELINE_ROUTES[route]
    unrestricted = make_caller("pipeline")
    for masterplan_id in (str(MINE), str(THEIRS)) if route == "wave" else (str(MINE), str(THEIRS), None):
        assert call(unrestricted, masterplan_id).status_code == ok


def test_scoped_key_cannot_read_another_masterplans_wave(make_caller):
    theirs = make_caller("pipeline", masterplans=[THEIRS])
    wave_id = _wave(theirs, str(THEIRS)).json()["wave_id"]
    assert theirs.get(f"/api/v2/llm/waves/{wave_id}").status_code == 200
    mine = make_caller("pipeline", masterplans=[MINE])
    response = mine.get(f"/api/v2/llm/waves/{wave_id}")
    assert response.status_code == 403
    assert "atoms" not in response.json()


def test_scoped_operator_key_invalidates_its_masterplan_only(make_caller):
    scoped = make_caller("operator", masterplans=[MINE])
    invalidate = "/api/v2/cache/invalidate"
    assert scoped.post(invalidate, {"masterplan_id": str(MINE)}, format="json").status_code == 202
    assert scoped.post(invalidate, {"masterplan_id": str(THEIRS)}, format="json").status_code == 403
    whole = scoped.post(invalidate, {"all_masterplans": True, "layers": ["llm"]}, format="json")
    assert whole.status_code == 403  # every masterplan includes the global scope
    assert _statistics(scoped, None).status_code == 403  # global totals
    assert _statistics(scoped, str(THEIRS)).status_code == 403
    assert _statistics(scoped, str(MINE)).status_code == 200


def test_a_scoped_key_whose_masterplans_are_deleted_may_use_none(make_caller):
    scoped = make_caller("pipeline", masterplans=[MINE])
    Masterplan.objects.filter(pk=MINE).delete()
    assert _generate(scoped, str(MINE)).status_code == 403
    assert _generate(scoped, None).status_code == 403


def test_pipeline_role_reads_masterplan_statistics_but_not_the_global_totals(make_caller):
    pipeline = make_caller("pipeline")
    assert _statistics(pipeline, str(THEIRS)).status_code == 200
    assert _statistics(pipeline, None).status_code == 403
    assert _statistics(make_caller("operator"), None).status_code == 200

"""POST /api/v2/llm/waves and GET /api/v2/llm/waves/{id}: the wave path over HTTP, and its statistics."""

from __future__ import annotations

import uuid

import pytest
from rest_framework.test import APIClient

from cache_app.models import Masterplan
from tests.batching_app.fakes import atom, cache_errors, twenty_atoms

pytestmark = pytest.mark.django_db

MP = uuid.UUID("44444444-4444-4444-8444-444444444444")
WAVES = "/api/v2/llm/waves"


@pytest.fixture
def api(admin_user) -> APIClient:
    client = APIClient()
    client.force_authenticate(admin_user)
    return client


def _wave(atoms, **extra) -> dict:
    return {"masterplan_id": str(MP), "defaults": {"temperature": 0.0}, "atoms": atoms, **extra}


def test_a_wave_of_20_with_5_duplicates_and_5_cached_over_http(api, provider):
    errors_before = cache_errors()
    cached, atoms = twenty_atoms()
    for prompt in cached:
        body = {"prompt": prompt, "temperature": 0.0, "masterplan_id": str(MP)}
        assert api.post("/api/v2/llm/generate", body, format="json").status_code == 200
    assert len(provider.requests) == 5
    provider.requests.clear()

    response = api.post(WAVES, _wave(atoms), format="json")

    assert response.status_code == 200, response.content
    assert cache_errors() == errors_before, "Redis failed open during the wave (host overloaded?)"
    report = response.json()
    # 20 atoms: 5 hits; 15 misses of which 10 distinct -> 2 batches of 5 -> 2 provider calls.
    assert provider.prompts_per_call() == [5, 5]
    assert report["counts"] == {"total": 20, "pending": 0, "hit": 5, "answered": 15, "failed": 0}
    assert report["batches"] == 2
    assert [a["atom_id"] for a in report["atoms"]] == [a["atom_id"] for a in atoms]
    assert [a["status"] for a in report["atoms"]] == ["hit"] * 5 + ["answered"] * 15
    texts = [a["text"] for a in report["atoms"]]
    assert texts[15:] == texts[5:10]
    # The statistics endpoint reports what the provider received.
    stats = api.get("/api/v2/cache/statistics", {"masterplan_id": str(MP)}).json()
    assert stats["batching"]["batches"] == 2
    assert stats["batching"]["total_requests_batched"] == 10 == sum(provider.prompts_per_call())
    assert stats["batching"]["avg_batch_size"] == 5.0
    assert (stats["batching"]["waves"], stats["batching"]["wave_atoms"]) == (1, 20)
    assert stats["llm_cache"]["total_hits"] == 5
    assert stats["llm_cache"]["total_misses"] == 5 + 15
    assert stats["cost"]["provider_calls"] == 5 + 2
    layer = api.get("/api/v2/cache/statistics/batching", {"masterplan_id": str(MP)}).json()
    assert layer == {"layer": "batching", "masterplan_id": str(MP), **stats["batching"]}
    # The report can be read back by id, the same.
    assert api.get(f"{WAVES}/{report['wave_id']}").json() == report
    assert Masterplan.objects.get(pk=MP).name == str(MP)


def test_wait_false_answers_202_with_the_wave_to_follow(api, provider, monkeypatch):
    from batching_app.waves import service

    monkeypatch.setattr(service, "_dispatch_task", lambda *args: None)  # batches never run
    response = api.post(f"{WAVES}?wait=false", _wave([atom("a"), atom("b")]), format="json")
    assert response.status_code == 202, response.content
    report = response.json()
    assert (report["status"], report["counts"]["pending"]) == ("running", 2)
    assert api.get(f"{WAVES}/{report['wave_id']}").json()["counts"]["pending"] == 2


def test_an_empty_or_oversized_wave_is_refused(api, settings):
    assert api.post(WAVES, _wave([]), format="json").status_code == 400
    settings.MGECACHE = {**settings.MGECACHE, "MAX_WAVE_ATOMS": 2}
    response = api.post(WAVES, _wave([atom("a"), atom("b"), atom("c")]), format="json")
    assert response.status_code == 400
    assert "atoms" in response.json()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"atoms": [{"atom_id": str(uuid.uuid4()), "prompt": "p"}]}, "masterplan_id"),
        (_wave([{"atom_id": "x", "prompt": "p"}]), "atoms"),
        (_wave([{"atom_id": str(uuid.uuid4()), "prompt": " "}]), "atoms"),
        (_wave([{"atom_id": str(uuid.uuid4()), "prompt": "p", "extra": 1}]), "atoms"),
        (_wave([atom("p", temperature=3)]), "atoms"),
        (_wave([atom("p", model="gpt-9-ultra")]), "atoms"),
        (_wave([atom("p")], defaults={"top_p": 1}), "defaults"),
        (_wave([atom("p")], deadline_seconds=0.5), "deadline_seconds"),
        (_wave([atom("p")], deadline_seconds=3601), "deadline_seconds"),
    ],
)
def test_a_wave_takes_exactly_what_the_schema_says(api, body, field):
    response = api.post(WAVES, body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()


def test_repeated_atom_ids_are_answered_in_input_order(api, provider):
    same = str(uuid.uuid4())
    body = _wave([{"atom_id": same, "prompt": "first"}, {"atom_id": same, "prompt": "second"}])
    report = api.post(WAVES, body, format="json").json()
    assert [a["atom_id"] for a in report["atoms"]] == [same, same]
    assert report["atoms"][0]["text"] != report["atoms"][1]["text"]


def test_max_tokens_over_an_atoms_model_maximum_is_a_400_naming_the_atom_and_limit(api, provider):
    defaults = {"temperature": 0.0, "model": "claude-sonnet-4-5", "max_tokens": 50_000}
    body = _wave([atom("a"), atom("b", model="claude-3-5-sonnet")], defaults=defaults)
    refused = api.post(WAVES, body, format="json")
    assert refused.status_code == 400, refused.content
    errors = refused.json()["atoms"]
    assert errors[0] == {}
    assert "8192" in " ".join(errors[1]["defaults"]["max_tokens"])
    overridden = _wave([atom("a"), atom("b", model="claude-3-5-sonnet", max_tokens=9000)], defaults=defaults)
    assert "8192" in " ".join(api.post(WAVES, overridden, format="json").json()["atoms"][1]["overrides"]["max_tokens"])
    assert not provider.requests  # nothing ran
    within = _wave([atom("a"), atom("b", model="claude-3-5-sonnet", max_tokens=8192)], defaults=defaults)
    assert api.post(WAVES, within, format="json").status_code == 200
    assert sorted(r.max_tokens for r in provider.requests) == [8192, 50_000]


def test_wave_idempotency_key_runs_the_wave_once(api, provider):
    body = _wave([atom("once")])
    headers = {"HTTP_IDEMPOTENCY_KEY": "wave-1"}
    first = api.post(WAVES, body, format="json", **headers)
    again = api.post(WAVES, body, format="json", **headers)
    assert first.status_code == again.status_code == 200
    assert again.json()["wave_id"] == first.json()["wave_id"]
    assert len(provider.requests) == 1
    assert api.post(WAVES, _wave([atom("other")]), format="json", **headers).status_code == 422


def test_unknown_and_malformed_wave_ids_are_404(api):
    assert api.get(f"{WAVES}/{uuid.uuid4()}").status_code == 404
    response = api.get(f"{WAVES}/not-a-uuid")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/json")


def test_a_wave_of_another_masterplan_is_403_for_a_restricted_key(api, provider, make_caller):
    report = api.post(WAVES, _wave([atom("scoped")]), format="json").json()
    other = make_caller("pipeline", masterplans=[uuid.uuid4()])
    assert other.get(f"{WAVES}/{report['wave_id']}").status_code == 403
    mine = make_caller("pipeline", masterplans=[MP])
    assert mine.get(f"{WAVES}/{report['wave_id']}").status_code == 200
    assert other.post(WAVES, _wave([atom("x")]), format="json").status_code == 403

"""The pipeline's endpoints: generate, RAG query, wave dispatch and results."""

import uuid

import pytest
from rest_framework.test import APIClient

from cache_app.models import Masterplan
from cache_app.rag.embedders import load_embedder
from cache_app.rag.engine import RAGEngine

pytestmark = pytest.mark.django_db

MP = uuid.UUID("55555555-5555-4555-8555-555555555555")


@pytest.fixture
def api(admin_user, settings):
    # The simulated provider without its modelled latency.
    settings.MGECACHE = {
        **settings.MGECACHE,
        "SIMULATED_CALL_OVERHEAD_SECONDS": 0.0,
        "SIMULATED_SECONDS_PER_OUTPUT_TOKEN": 0.0,
    }
    client = APIClient()
    client.force_authenticate(admin_user)
    return client


def test_generate_miss_then_hit(api):
    body = {"prompt": "write a lexer", "model": "claude-3-5-sonnet", "temperature": 0, "masterplan_id": str(MP)}
    first = api.post("/api/llm/generate/", body, format="json")
    assert first.status_code == 200, first.content
    assert first.json()["cached"] is False
    assert first.json()["simulated"] is True
    assert first.json()["cost_usd"] > 0
    second = api.post("/api/llm/generate/", body, format="json").json()
    assert second["cached"] is True
    assert second["cache_layer"] == "llm"
    assert second["text"] == first.json()["text"]
    assert second["saved_usd"] == pytest.approx(first.json()["cost_usd"])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": "   "}, "prompt"),
        ({"prompt": "x", "temperature": 3}, "temperature"),
        ({"prompt": "x", "max_tokens": 0}, "max_tokens"),
        ({"prompt": "x", "masterplan_id": "nope"}, "masterplan_id"),
        ({"prompt": "x", "use_batching": True}, "atom_id"),
    ],
)
def test_generate_rejects_bad_input_with_field_errors(api, body, field):
    response = api.post("/api/llm/generate/", body, format="json")
    assert response.status_code == 400
    assert field in response.json()


def test_rag_query_searches_then_hits(api):
    Masterplan.objects.create(id=MP, name="api rag")
    RAGEngine().store.add([("Celery acks_late acknowledges a task after it ran.", {"n": 1})], masterplan_id=MP)
    body = {"query": "When does acks_late acknowledge a task?", "top_k": 1, "masterplan_id": str(MP)}
    first = api.post("/api/rag/query/", body, format="json")
    assert first.status_code == 200, first.content
    assert first.json()["cached"] is False
    assert first.json()["documents"][0]["metadata"] == {"n": 1}
    assert first.json()["embedding_model"] == load_embedder().model_name
    second = api.post("/api/rag/query/", body, format="json").json()
    assert (second["cached"], second["match"]) == (True, "exact")


@pytest.mark.parametrize(("body", "field"), [({"query": ""}, "query"), ({"query": "q", "top_k": 0}, "top_k")])
def test_rag_query_rejects_bad_input(api, body, field):
    response = api.post("/api/rag/query/", body, format="json")
    assert response.status_code == 400
    assert field in response.json()


def test_wave_dispatch_and_results_per_atom(api):
    atoms = [{"atom_id": str(uuid.uuid4()), "prompt": f"implement step {i}"} for i in range(7)]
    response = api.post("/api/waves/", {"atoms": atoms, "masterplan_id": str(MP)}, format="json")
    assert response.status_code == 202, response.content
    assert len(response.json()["tasks"]) == 2  # 5 + 2 with the default BatchPolicy
    results = api.get("/api/waves/", {"wave_id": response.json()["wave_id"]}).json()
    assert results["pending"] == []
    assert results["masterplan_id"] == str(MP)
    assert set(results["answers"]) == {a["atom_id"] for a in atoms}
    assert all(results["answers"].values())


def test_wave_results_list_unanswered_atoms_as_pending(api, settings):
    from batching_app.tasks import result_addresses
    from batching_app.wave import WaveStore

    atom = uuid.uuid4()
    record = WaveStore().create(None, result_addresses([(atom, "never sent")]))
    results = api.get("/api/waves/", {"wave_id": str(record.wave_id)}).json()
    assert results == {"wave_id": str(record.wave_id), "masterplan_id": None, "answers": {}, "pending": [str(atom)]}


def test_wave_results_of_an_unknown_wave_are_404(api):
    response = api.get("/api/waves/", {"wave_id": str(uuid.uuid4())})
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"


@pytest.mark.parametrize(
    "atoms",
    [[], [{"atom_id": "11111111-1111-4111-8111-111111111111", "prompt": "a"}] * 2, [{"atom_id": "x", "prompt": "a"}]],
)
def test_wave_rejects_bad_input(api, atoms):
    response = api.post("/api/waves/", {"atoms": atoms}, format="json")
    assert response.status_code == 400
    assert "atoms" in response.json()


def test_wave_results_reject_bad_ids(api):
    response = api.get("/api/waves/", {"wave_id": "not-a-uuid"})
    assert response.status_code == 400
    assert "wave_id" in response.json()

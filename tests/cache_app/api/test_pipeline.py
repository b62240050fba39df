"""POST /api/v2/llm/generate and /api/v2/rag/query: cached, priced, strict inputs, registered masterplans."""

import uuid

import pytest

from cache_app.core import keys
from cache_app.core.counters import get_counters
from cache_app.models import Masterplan
from cache_app.rag.embedders import load_embedder
from cache_app.rag.engine import RAGEngine

pytestmark = pytest.mark.django_db

MP = uuid.UUID("55555555-5555-4555-8555-555555555555")
GENERATE = "/api/v2/llm/generate"
RAG = "/api/v2/rag/query"


def test_generate_miss_then_hit(api):
    body = {"prompt": "write a lexer", "model": "claude-3-5-sonnet", "temperature": 0, "masterplan_id": str(MP)}
    first = api.post(GENERATE, body, format="json")
    assert first.status_code == 200, first.content
    assert first.json()["cached"] is False
    assert first.json()["simulated"] is True
    assert first.json()["cost_usd"] > 0
    second = api.post(GENERATE, body, format="json").json()
    assert second["cached"] is True
    assert second["cache_layer"] == "llm"
    assert second["text"] == first.json()["text"]
    assert second["saved_usd"] == pytest.approx(first.json()["cost_usd"])


def test_generate_registers_the_masterplan_named_by_its_id(api):
    assert not Masterplan.objects.filter(pk=MP).exists()
    api.post(GENERATE, {"prompt": "p", "temperature": 0, "masterplan_id": str(MP)}, format="json")
    assert Masterplan.objects.get(pk=MP).name == str(MP)


def test_rag_query_registers_the_masterplan(api):
    api.post(RAG, {"query": "q", "masterplan_id": str(MP)}, format="json")
    assert Masterplan.objects.filter(pk=MP).exists()


def test_a_request_adds_no_round_trip_and_its_counts_are_published_by_the_flusher(api, redis, settings):
    settings.MGECACHE = {**settings.MGECACHE, "COUNTER_FLUSH_SECONDS": 0.05}
    api.post(GENERATE, {"prompt": "counted", "temperature": 0, "masterplan_id": str(MP)}, format="json")
    # Another worker reads Redis, not this process's buffer: the background flusher publishes the
    # miss one interval later, with no further request here (it ends once nothing is left).
    flusher = get_counters()._flusher
    flusher.join(timeout=10)
    assert not flusher.is_alive()
    assert redis.hget(keys.stats("llm", MP), "misses") == b"1"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"prompt": "   "}, "prompt"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "a\x00b"}, "prompt"),
        ({"prompt": 7}, "prompt"),
        ({"prompt": "x", "temperature": 3}, "temperature"),
        ({"prompt": "x", "temperature": "0.5"}, "temperature"),
        ({"prompt": "x", "max_tokens": 0}, "max_tokens"),
        ({"prompt": "x", "max_tokens": "10"}, "max_tokens"),
        ({"prompt": "x", "max_tokens": 10.0}, "max_tokens"),
        ({"prompt": "x", "use_cache": "true"}, "use_cache"),
        ({"prompt": "x", "use_cache": 1}, "use_cache"),
        ({"prompt": "x", "masterplan_id": "nope"}, "masterplan_id"),
        ({"prompt": "x", "masterplan_id": "55555555555545558555555555555555"}, "masterplan_id"),
        ({"prompt": "x", "model": "gpt-9-ultra"}, "model"),
        ({"prompt": "x", "temprature": 0}, "temprature"),
    ],
)
def test_generate_takes_exactly_what_the_schema_says(api, body, field):
    response = api.post(GENERATE, body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()


def test_max_tokens_over_the_models_maximum_is_a_400_naming_the_limit(api):
    body = {"prompt": "p", "model": "claude-3-5-sonnet", "temperature": 0}
    refused = api.post(GENERATE, {**body, "max_tokens": 8193}, format="json")
    assert refused.status_code == 400, refused.content
    message = " ".join(refused.json()["max_tokens"])
    assert "8192" in message
    assert "claude-3-5-sonnet" in message
    assert api.post(GENERATE, {**body, "max_tokens": 8192}, format="json").status_code == 200


def test_the_schema_publishes_each_models_maximum_output(api):
    schema = api.get("/api/schema/?format=json").json()
    field = schema["components"]["schemas"]["GenerateRequest"]["properties"]["max_tokens"]
    assert field["x-max-output-tokens"]["claude-3-5-sonnet"] == 8192


def test_use_batching_without_an_atom_id_is_labelled_for_it(api):
    response = api.post(GENERATE, {"prompt": "batched", "temperature": 0, "use_batching": True}, format="json")
    assert response.status_code == 200, response.content


def test_generate_idempotency_key_replays_the_first_answer(api, monkeypatch):
    body = {"prompt": "once", "temperature": 0.9, "use_cache": False}
    headers = {"HTTP_IDEMPOTENCY_KEY": "gen-1"}
    first = api.post(GENERATE, body, format="json", **headers)
    again = api.post(GENERATE, body, format="json", **headers)
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()  # uncached: a second call would have been billed again
    assert again["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first
    other = api.post(GENERATE, {**body, "prompt": "twice"}, format="json", **headers)
    assert other.status_code == 422
    assert other.json()["code"] == "idempotency_key_reused"
    bad = api.post(GENERATE, body, format="json", HTTP_IDEMPOTENCY_KEY=" ")
    assert bad.status_code == 400
    assert "Idempotency-Key" in bad.json()


def test_rag_query_searches_then_hits(api):
    Masterplan.objects.create(id=MP, name="api rag")
    RAGEngine().store.add([("Celery acks_late acknowledges a task after it ran.", {"n": 1})], masterplan_id=MP)
    body = {"query": "When does acks_late acknowledge a task?", "top_k": 1, "masterplan_id": str(MP)}
    first = api.post(RAG, body, format="json")
    assert first.status_code == 200, first.content
    assert first.json()["cached"] is False
    assert first.json()["documents"][0]["metadata"] == {"n": 1}
    assert first.json()["embedding_model"] == load_embedder().model_name
    second = api.post(RAG, body, format="json").json()
    assert (second["cached"], second["match"]) == (True, "exact")


def test_rag_query_with_the_callers_embedding(api):
    Masterplan.objects.create(id=MP, name="api rag")
    RAGEngine().store.add([("alpha beta", {"n": 1}), ("gamma delta", {"n": 2})], masterplan_id=MP)
    embedding = load_embedder().embed(["gamma delta"])[0] * 1000.0  # any scale: normalised by the server
    body = {"query": "anything", "top_k": 1, "masterplan_id": str(MP), "query_embedding": embedding.tolist()}
    response = api.post(RAG, body, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["documents"][0]["metadata"] == {"n": 2}
    assert response.json()["documents"][0]["score"] == pytest.approx(1.0, abs=1e-5)


def test_a_query_without_features_matches_nothing(api):
    dim = load_embedder().dim
    zero = api.post(RAG, {"query": "q", "query_embedding": [0.0] * dim}, format="json")
    assert zero.status_code == 200, zero.content
    assert (zero.json()["documents"], zero.json()["cached"]) == ([], False)
    punctuation = api.post(RAG, {"query": "?!"}, format="json")  # no word: the embedder sees nothing
    assert punctuation.status_code == 200
    assert punctuation.json()["documents"] == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"query": ""}, "query"),
        ({"query": "q", "top_k": 0}, "top_k"),
        ({"query": "q", "top_k": 101}, "top_k"),
        ({"query": "q", "query_embedding": [0.5] * 3}, "query_embedding"),
        ({"query": "q", "query_embedding": "0.5"}, "query_embedding"),
        ({"query": "q", "query_embedding": [True] * 384}, "query_embedding"),
        ({"query": "q", "query_embedding": [1e7] * 384}, "query_embedding"),
    ],
)
def test_rag_query_rejects_bad_input(api, body, field):
    response = api.post(RAG, body, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()


def test_non_finite_embeddings_are_refused_before_the_engine(api):
    # JSON has no NaN; a number too large for a float parses to inf and is out of bounds.
    body = '{"query": "q", "query_embedding": [' + ", ".join(["1e400"] * 384) + "]}"
    response = api.generic("POST", RAG, body, content_type="application/json")
    assert response.status_code == 400
    assert "query_embedding" in response.json()


def test_a_retry_while_the_first_request_runs_is_a_409_with_retry_after(api, admin_user):
    from cache_app.idempotency import IdempotencyStore, body_digest

    body = {"prompt": "slow", "temperature": 0}
    retried = {}

    def first_request_still_running():
        retried["response"] = api.post(GENERATE, body, format="json", HTTP_IDEMPOTENCY_KEY="slow-1")
        return {"status": 200, "body": {}}

    scope = f"llm/generate|user:{admin_user.pk}"
    IdempotencyStore().run("slow-1", body_digest(body), first_request_still_running, scope=scope)
    assert retried["response"].status_code == 409
    assert retried["response"].json()["code"] == "idempotency_key_in_progress"
    assert int(retried["response"]["Retry-After"]) >= 1

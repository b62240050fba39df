"""Every input bound answers 400 naming the field (or the body) and the limit."""

import json
import uuid

import pytest

from cache_app.access.parsers import nesting_depth
from cache_app.core.counters import DurableCounters
from cache_app.llm.pricing import Price, PriceTable, SavingsLedger
from cache_app.models import ModelPricing

pytestmark = pytest.mark.django_db

MP = "66666666-6666-4666-8666-666666666666"


@pytest.fixture
def pipeline(make_caller):
    return make_caller("pipeline")


def _post(client, path, body):
    return client.post(path, json.dumps(body), content_type="application/json")


@pytest.mark.parametrize(
    ("path", "field", "setting", "body"),
    [
        ("/api/v2/llm/generate", "prompt", "MAX_PROMPT_CHARS", lambda n: {"prompt": "p" * n}),
        ("/api/v2/llm/generate", "system", "MAX_SYSTEM_CHARS", lambda n: {"prompt": "p", "system": "s" * n}),
        ("/api/v2/rag/query", "query", "MAX_RAG_QUERY_CHARS", lambda n: {"query": "q" * n}),
        (
            "/api/v2/llm/waves?wait=false",
            "atoms",
            "MAX_PROMPT_CHARS",
            lambda n: {"masterplan_id": MP, "atoms": [{"atom_id": str(uuid.uuid4()), "prompt": "p" * n}]},
        ),
    ],
)
def test_text_over_its_limit_is_a_400_naming_field_and_limit(pipeline, path, field, setting, body):
    from cache_app.core import conf

    limit = conf.get(setting)
    response = _post(pipeline, path, body(limit + 1))
    assert response.status_code == 400, response.content
    errors = response.json()[field]
    assert str(limit) in json.dumps(errors)
    # At the limit itself the field is accepted (any other error would name another field).
    at_limit = _post(pipeline, path, body(limit))
    assert field not in (at_limit.json() if at_limit.status_code == 400 else {})


def test_default_limits_are_the_documented_ones():
    from cache_app.core import conf

    assert conf.DEFAULTS["MAX_PROMPT_CHARS"] == conf.DEFAULTS["MAX_SYSTEM_CHARS"] == 200_000
    assert conf.DEFAULTS["MAX_RAG_QUERY_CHARS"] == 8_000
    assert conf.DEFAULTS["MAX_WAVE_ATOMS"] == 500
    assert conf.DEFAULTS["MAX_REQUEST_BYTES"] == 4 * 1024 * 1024
    assert conf.DEFAULTS["MAX_JSON_DEPTH"] == 32


def test_more_atoms_than_a_wave_may_hold_is_a_400(pipeline, monkeypatch):
    from batching_app.waves import service

    monkeypatch.setattr(service, "_dispatch_task", lambda *args: None)  # only the input matters here
    atoms = [{"atom_id": str(uuid.uuid4()), "prompt": "a"} for _ in range(501)]
    response = _post(pipeline, "/api/v2/llm/waves?wait=false", {"masterplan_id": MP, "atoms": atoms})
    assert response.status_code == 400
    assert "500" in json.dumps(response.json()["atoms"])
    accepted = _post(pipeline, "/api/v2/llm/waves?wait=false", {"masterplan_id": MP, "atoms": atoms[:500]})
    assert accepted.status_code == 202


def test_max_tokens_is_bounded_by_the_models_maximum_output(pipeline, settings):
    settings.MGECACHE = {**settings.MGECACHE, "SIMULATED_CALL_OVERHEAD_SECONDS": 0.0}
    limit = ModelPricing.objects.get(model="claude-3-5-sonnet").max_output_tokens
    assert limit == 8192  # seeded by migration 0004
    body = {"prompt": "p", "model": "claude-3-5-sonnet", "temperature": 0}
    response = _post(pipeline, "/api/v2/llm/generate", {**body, "max_tokens": 1_000_001})
    assert response.status_code == 400
    assert "1000000" in json.dumps(response.json()["max_tokens"])
    over = _post(pipeline, "/api/v2/llm/generate", {**body, "max_tokens": limit + 1})
    assert over.status_code == 400
    assert str(limit) in json.dumps(over.json()["max_tokens"])
    assert _post(pipeline, "/api/v2/llm/generate", {**body, "max_tokens": limit}).status_code == 200


def test_unknown_model_is_a_400_listing_the_known_ones(pipeline):
    response = _post(pipeline, "/api/v2/llm/generate", {"prompt": "p", "model": "gpt-9-ultra", "max_tokens": 10})
    assert response.status_code == 400
    message = json.dumps(response.json()["model"])
    assert "gpt-9-ultra" in message
    for known in ModelPricing.objects.values_list("model", flat=True):
        assert known in message


def test_a_model_added_in_the_admin_is_known_at_once(pipeline):
    ModelPricing.objects.create(model="house-model", input_usd_per_mtok=1, output_usd_per_mtok=1, max_output_tokens=100)
    assert _post(pipeline, "/api/v2/llm/generate", {"prompt": "p", "model": "house-model"}).status_code == 200


def test_a_body_over_the_size_limit_is_a_400(pipeline):
    from cache_app.core import conf

    limit = conf.get("MAX_REQUEST_BYTES")
    response = _post(pipeline, "/api/v2/llm/generate", {"prompt": "p" * (limit + 1)})
    assert response.status_code == 400
    assert str(limit) in response.json()["detail"]


@pytest.mark.parametrize("depth", [33, 100_000])
def test_json_nested_deeper_than_the_limit_is_a_json_400(pipeline, depth):
    nested = "[" * depth + "]" * depth
    body = '{"prompt": "p", "x": ' + nested + "}"
    response = pipeline.post("/api/v2/llm/generate", body, content_type="application/json")
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert "32" in response.json()["detail"]


def test_json_nested_exactly_to_the_limit_is_parsed(pipeline):
    nested = "[" * 31 + "]" * 31  # inside the top-level object: 32 levels
    body = '{"prompt": "p", "temperature": 0, "x": ' + nested + "}"
    response = pipeline.post("/api/v2/llm/generate", body, content_type="application/json")
    # Parsed, then refused by the serializer for the unknown field (not by the parser for its depth).
    assert response.status_code == 400
    assert response.json() == {"x": ["Unknown field."]}


def test_nesting_depth_ignores_brackets_inside_strings():
    assert nesting_depth('{"a": "[[[[{{{{"}') == 1
    assert nesting_depth(r'["\"[[["]') == 1
    assert nesting_depth("[[], [[]], {}]") == 3
    assert nesting_depth("7") == 0


def test_metric_labels_and_spend_fields_only_carry_priced_models(redis):
    from prometheus_client import REGISTRY

    table = PriceTable(loader=lambda: {"known": Price(1, 1)}, refresh_seconds=60)
    ledger = SavingsLedger(counters=DurableCounters(redis, flush_seconds=0), prices=table)
    ledger.record_spend("known", 10, 10)
    for i in range(5):
        ledger.add_spend(f"caller-invented-{i}", 0.5)
    assert set(ledger.totals().spent_by_model) == {"known", "other"}
    labels = {
        sample.labels.get("model")
        for metric in REGISTRY.collect()
        if metric.name in ("mgecache_llm_spend_usd", "mgecache_pricing_unknown_model")
        for sample in metric.samples
    }
    assert not any(str(label).startswith("caller-invented") for label in labels)
    assert table.label("known-20250101") == "known"  # a dated snapshot of a priced model
    assert table.label("caller-invented-9") == "other"

"""LeanSerializer: per-instance fields without DRF's deep copies, and no state shared between instances."""

import pytest

from cache_app.serializers.pipeline import GenerateRequestSerializer, GenerateResponseSerializer

pytestmark = pytest.mark.django_db


def test_each_instance_binds_fields_of_its_own():
    first, second = GenerateRequestSerializer(data={}), GenerateRequestSerializer(data={})
    for name in ("temperature", "use_cache", "masterplan_id", "model"):
        assert first.fields[name] is not second.fields[name]
        assert first.fields[name].parent is first
        assert second.fields[name].parent is second
    declared = GenerateRequestSerializer._declared_fields["temperature"]
    assert declared.parent is None  # the class's own field is never bound


def test_a_limit_setting_change_applies_to_the_next_serializer(settings):
    settings.MGECACHE = {**settings.MGECACHE, "MAX_PROMPT_CHARS": 5}
    assert not GenerateRequestSerializer(data={"prompt": "p" * 6, "temperature": 0}).is_valid()
    settings.MGECACHE = {**settings.MGECACHE, "MAX_PROMPT_CHARS": 10}
    assert GenerateRequestSerializer(data={"prompt": "p" * 6, "temperature": 0}).is_valid()


def test_the_model_error_message_is_not_written_into_the_declared_field():
    declared = GenerateRequestSerializer._declared_fields["model"]
    before = dict(declared.error_messages)
    serializer = GenerateRequestSerializer(data={"prompt": "p", "model": "no-such-model"})
    assert not serializer.is_valid()
    assert "no-such-model" in str(serializer.errors["model"])
    assert declared.error_messages == before


def test_responses_render_every_field():
    body = {
        "text": "t", "model": "m", "prompt_tokens": 1, "completion_tokens": 2, "cached": True, "cache_layer": "llm",
        "cost_usd": 0.0, "saved_usd": 0.5, "latency_s": 0.001, "finish_reason": "stop", "provider": "p",
        "simulated": False,
    }  # fmt: skip
    assert dict(GenerateResponseSerializer(body).data) == body

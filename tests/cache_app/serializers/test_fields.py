"""LeanSerializer: per-instance fields without DRF's deep copies, and no state shared between instances."""

from types import SimpleNamespace

import pytest
from rest_framework import serializers

from cache_app.serializers.fields import LeanSerializer
from cache_app.serializers.pipeline import (
    GenerateRequestSerializer,
    GenerateResponseSerializer,
    RAGQueryResponseSerializer,
)

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


def test_a_limited_field_is_rebuilt_only_when_its_setting_changes(settings):
    first, second = GenerateRequestSerializer(data={}), GenerateRequestSerializer(data={})
    assert first.fields["prompt"] is not second.fields["prompt"]
    # unchanged setting: shallow copies of one build (same validators), not a rebuild each
    assert first.fields["prompt"].validators is second.fields["prompt"].validators
    settings.MGECACHE = {**settings.MGECACHE, "MAX_PROMPT_CHARS": 7}
    third, fourth = GenerateRequestSerializer(data={}), GenerateRequestSerializer(data={})
    assert third.fields["prompt"].max_length == fourth.fields["prompt"].max_length == 7
    assert third.fields["prompt"].validators is not first.fields["prompt"].validators
    assert third.fields["prompt"].validators is fourth.fields["prompt"].validators


def _drf_rendering(serializer_class, instance):
    """What DRF's own Serializer.to_representation makes of ``instance``."""
    return dict(serializers.Serializer.to_representation(serializer_class(instance), instance))


def test_plain_output_matches_drfs_for_objects_and_nulls():
    response = SimpleNamespace(
        text="t", model="m", prompt_tokens=1, completion_tokens=2, cached=False, cache_layer=None, cost_usd=1,
        saved_usd=0, latency_s=0.5, finish_reason=None, provider="p", simulated=True,
    )  # fmt: skip
    serializer = GenerateResponseSerializer(response)
    rendered = dict(serializer.data)
    assert "fields" not in serializer.__dict__  # rendered without binding a copy of each field
    assert rendered == _drf_rendering(GenerateResponseSerializer, response)
    assert isinstance(rendered["cost_usd"], float)  # the field's type, not the input's
    assert rendered["cost_usd"] == 1.0
    assert rendered["cache_layer"] is None
    assert rendered["finish_reason"] is None


def test_a_missing_attribute_takes_drfs_path():
    with pytest.raises(KeyError):  # DRF names the missing required field; the fast path must not invent a value
        GenerateResponseSerializer({"text": "t"}).data


def test_nested_output_still_renders():
    result = {
        "documents": [{"id": 1, "content": "c", "metadata": {"k": "v"}, "score": 0.9}], "cached": True,
        "match": "exact", "similarity": 1.0, "latency_s": 0.1, "embedding_model": "e", "query": "q", "extra": {},
    }  # fmt: skip
    serializer = RAGQueryResponseSerializer(result)
    assert dict(serializer.data)["documents"] == [dict(result["documents"][0])]
    assert "fields" in serializer.__dict__  # nested: DRF's own path


class _Named(LeanSerializer):
    name = serializers.CharField()


def test_a_method_attribute_is_called_as_drf_does():
    instance = SimpleNamespace(name=lambda: "called")
    assert dict(_Named(instance).data) == {"name": "called"}


def test_a_serializer_choosing_its_fields_takes_drfs_path():
    class Narrowed(_Named):
        extra = serializers.CharField()

        def get_fields(self):
            fields = super().get_fields()
            del fields["extra"]
            return fields

    assert dict(Narrowed(SimpleNamespace(name="n", extra="e")).data) == {"name": "n"}

"""Bodies of the wave routes: ``POST llm/waves`` (request, query) and the wave report both routes answer."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from batching_app.waves import FAILED, MAX_DEADLINE_SECONDS, PENDING, STATUSES
from cache_app.access.limits import max_tokens_error
from cache_app.core import conf
from cache_app.serializers.fields import (
    NO_NUL,
    StrictCharField,
    StrictFloatField,
    StrictIntegerField,
    StrictSerializer,
    StrictUUIDField,
)
from cache_app.serializers.pipeline import MAX_TOKENS, MAX_TOKENS_HELP, ModelField, publish_max_output_tokens


class GenerationParamsSerializer(StrictSerializer):
    """Generation parameters of a wave's defaults or an atom's overrides (absent or null: inherited)."""

    model = ModelField(required=False, allow_null=True, help_text="A model of *Model pricing*.")
    temperature = StrictFloatField(min_value=0.0, max_value=2.0, required=False, allow_null=True)
    max_tokens = StrictIntegerField(
        min_value=1,
        max_value=MAX_TOKENS,
        required=False,
        allow_null=True,
        help_text=MAX_TOKENS_HELP,
    )
    system = StrictCharField(pattern=NO_NUL, limit_setting="MAX_SYSTEM_CHARS", required=False, allow_null=True)

    @classmethod
    def refine_schema(cls, schema: dict[str, Any]) -> dict[str, Any]:
        return publish_max_output_tokens(schema)


class WaveAtomSerializer(StrictSerializer):
    atom_id = StrictUUIDField(help_text="Labels the atom in the report (which keeps the input order).")
    prompt = StrictCharField(limit_setting="MAX_PROMPT_CHARS", help_text="Not blank; no NUL characters.")
    overrides = GenerationParamsSerializer(required=False, allow_null=True)


class WaveRequestSerializer(StrictSerializer):
    masterplan_id = StrictUUIDField(help_text="The wave's masterplan.")
    defaults = GenerationParamsSerializer(
        required=False,
        allow_null=True,
        help_text="model (default: the server's), temperature (default 0.7), max_tokens, system.",
    )
    atoms = WaveAtomSerializer(many=True, allow_empty=False)
    deadline_seconds = StrictFloatField(
        min_value=1.0,
        max_value=MAX_DEADLINE_SECONDS,
        required=False,
        allow_null=True,
        help_text="No atom stays pending longer (default: the server's WAVE_DEADLINE_SECONDS).",
    )

    def get_fields(self) -> dict[str, Any]:
        fields = super().get_fields()
        atoms = fields["atoms"]
        atoms.min_length = 1  # type: ignore[attr-defined]  # a ListSerializer
        atoms.max_length = int(conf.get("MAX_WAVE_ATOMS"))  # type: ignore[attr-defined]
        return fields

    @classmethod
    def refine_schema(cls, schema: dict[str, Any]) -> dict[str, Any]:
        schema["properties"]["atoms"].update(minItems=1, maxItems=int(conf.get("MAX_WAVE_ATOMS")))
        return schema

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        defaults = attrs.get("defaults") or {}
        atom_errors = [_max_tokens_errors(defaults, atom.get("overrides") or {}) for atom in attrs["atoms"]]
        if any(atom_errors):
            raise serializers.ValidationError({"atoms": atom_errors})
        return attrs


def _max_tokens_errors(defaults: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """The atom's field errors when its max_tokens exceeds its model's maximum output ({} when none)."""
    model = overrides.get("model") or defaults.get("model") or str(conf.get("LLM_DEFAULT_MODEL"))
    if overrides.get("max_tokens") is not None:
        error = max_tokens_error(model, overrides["max_tokens"])
        return {"overrides": {"max_tokens": [error]}} if error else {}
    error = max_tokens_error(model, defaults.get("max_tokens"))
    return {"defaults": {"max_tokens": [error]}} if error else {}


class QueryBooleanField(serializers.BooleanField):
    """``true`` or ``false`` in a query string (nothing else)."""

    def to_internal_value(self, data: Any) -> bool:
        if data not in ("true", "false"):
            self.fail("invalid", input=str(data)[:20])
        return data == "true"


class WaveQuerySerializer(serializers.Serializer):
    wait = QueryBooleanField(
        default=True,
        help_text="true: answer once every atom is final (by the deadline); false: answer 202 at once.",
    )


class WaveAtomReportSerializer(serializers.Serializer):
    atom_id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=list(STATUSES), help_text=f"{PENDING}, then hit, answered or {FAILED}")
    error = serializers.CharField(allow_null=True, help_text="Why the atom failed (failed only).")
    text = serializers.CharField(allow_null=True, allow_blank=True)
    model = serializers.CharField()
    cached = serializers.BooleanField()
    cache_layer = serializers.CharField(
        allow_null=True, help_text="llm: a cache hit; singleflight: a merged duplicate."
    )
    prompt_tokens = serializers.IntegerField(allow_null=True)
    completion_tokens = serializers.IntegerField(allow_null=True)
    cost_usd = serializers.FloatField()
    saved_usd = serializers.FloatField()
    finish_reason = serializers.CharField(allow_null=True)
    provider = serializers.CharField(allow_null=True, allow_blank=True)
    simulated = serializers.BooleanField(allow_null=True, help_text="True: the offline simulator answered.")


class WaveCountsSerializer(serializers.Serializer):
    total = serializers.IntegerField()
    pending = serializers.IntegerField()
    hit = serializers.IntegerField()
    answered = serializers.IntegerField()
    failed = serializers.IntegerField()


class WaveReportSerializer(serializers.Serializer):
    wave_id = serializers.UUIDField(help_text="Follow it at llm/waves/{wave_id}.")
    masterplan_id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=["running", "completed"])
    created_at = serializers.DateTimeField()
    deadline = serializers.DateTimeField(help_text="No atom stays pending past it.")
    counts = WaveCountsSerializer()
    batches = serializers.IntegerField(help_text="Batches the misses were sent in.")
    atoms = WaveAtomReportSerializer(many=True, help_text="One per atom, in input order.")

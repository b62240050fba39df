"""Bodies of the operations routes: statistics, invalidations, masterplans and policies."""

from __future__ import annotations

import re
from typing import Any

from drf_spectacular.utils import PolymorphicProxySerializer
from rest_framework import serializers

from cache_app.actions import ALL_LAYERS, LAYERS
from cache_app.models import THIRTY_DAYS, InvalidationAudit, Masterplan
from cache_app.serializers.fields import (
    NO_NUL,
    StrictBooleanField,
    StrictCharField,
    StrictChoiceField,
    StrictFloatField,
    StrictIntegerField,
    StrictSerializer,
    StrictUUIDField,
)

MAX_NOTES_CHARS = 2000
_DIGITS = re.compile(r"-?[0-9]{1,12}")


class QueryIntegerField(serializers.IntegerField):
    """An integer query parameter: digits only (not ``1.0``, ``1e3`` or `` 7``)."""

    def to_internal_value(self, data: Any) -> int:
        if not isinstance(data, str) or not _DIGITS.fullmatch(data):
            self.fail("invalid")
        return super().to_internal_value(data)


# --- statistics ------------------------------------------------------------------------------------


class MasterplanQuerySerializer(serializers.Serializer):
    masterplan_id = StrictUUIDField(
        required=False, help_text="Narrow every figure to this masterplan; without it, the global totals (operators)."
    )


class LLMCacheStatisticsSerializer(serializers.Serializer):
    hit_rate = serializers.FloatField()
    total_hits = serializers.IntegerField()
    total_misses = serializers.IntegerField()
    cost_savings_usd = serializers.FloatField()
    writes = serializers.IntegerField()
    invalidations = serializers.IntegerField()


class RAGCacheStatisticsSerializer(serializers.Serializer):
    hit_rate = serializers.FloatField()
    total_hits = serializers.IntegerField(help_text="exact_hits + similar_hits")
    total_misses = serializers.IntegerField()
    exact_hits = serializers.IntegerField()
    similar_hits = serializers.IntegerField()
    writes = serializers.IntegerField()
    invalidations = serializers.IntegerField()


class BatchingStatisticsSerializer(serializers.Serializer):
    avg_batch_size = serializers.FloatField(help_text="Distinct prompts per upstream batch call.")
    total_requests_batched = serializers.IntegerField(help_text="Distinct prompts the provider received in batches.")
    batches = serializers.IntegerField(help_text="Upstream batch calls (a plain call counts as a batch of 1).")
    deduplicated = serializers.IntegerField()
    parse_fallbacks = serializers.IntegerField()
    waves = serializers.IntegerField()
    wave_atoms = serializers.IntegerField()


class CostStatisticsSerializer(serializers.Serializer):
    spent_usd = serializers.FloatField()
    saved_usd = serializers.FloatField()
    cost_reduction = serializers.FloatField(help_text="saved / (saved + spent)")
    provider_calls = serializers.IntegerField()
    spent_by_model = serializers.DictField(child=serializers.FloatField())
    saved_by_layer = serializers.DictField(child=serializers.FloatField())


class StatisticsSerializer(serializers.Serializer):
    """The original plan's document (llm_cache, rag_cache, combined_hit_rate, batching) and the extras."""

    llm_cache = LLMCacheStatisticsSerializer()
    rag_cache = RAGCacheStatisticsSerializer()
    combined_hit_rate = serializers.FloatField()
    batching = BatchingStatisticsSerializer()
    masterplan_id = serializers.UUIDField(allow_null=True)
    llm_provider = serializers.CharField()
    llm_provider_simulated = serializers.BooleanField(help_text="True: spend and savings are modelled, not billed.")
    cost = CostStatisticsSerializer()


class _LayerFields(serializers.Serializer):
    masterplan_id = serializers.UUIDField(allow_null=True)


class LLMLayerStatisticsSerializer(_LayerFields, LLMCacheStatisticsSerializer):
    layer = serializers.ChoiceField(choices=["llm"])


class RAGLayerStatisticsSerializer(_LayerFields, RAGCacheStatisticsSerializer):
    layer = serializers.ChoiceField(choices=["rag"])


class BatchingLayerStatisticsSerializer(_LayerFields, BatchingStatisticsSerializer):
    layer = serializers.ChoiceField(choices=["batching"])


LAYER_STATISTICS_SERIALIZERS: dict[str, type[serializers.Serializer]] = {
    "llm": LLMLayerStatisticsSerializer,
    "rag": RAGLayerStatisticsSerializer,
    "batching": BatchingLayerStatisticsSerializer,
}
LayerStatisticsSerializer = PolymorphicProxySerializer(
    component_name="LayerStatistics",
    serializers=list(LAYER_STATISTICS_SERIALIZERS.values()),
    resource_type_field_name=None,
)


class MasterplanStatisticsSerializer(serializers.Serializer):
    llm = LLMCacheStatisticsSerializer()
    rag = RAGCacheStatisticsSerializer()
    batching = BatchingStatisticsSerializer()


# --- invalidation ----------------------------------------------------------------------------------


class InvalidateRequestSerializer(StrictSerializer):
    """One masterplan (``masterplan_id``), or every masterplan (``all_masterplans: true``), in some layers."""

    masterplan_id = StrictUUIDField(required=False, help_text="The masterplan whose cached answers go.")
    all_masterplans = StrictBooleanField(
        required=False, help_text="true: every cached answer of the layers goes (instead of one masterplan)."
    )
    layers = serializers.ListField(
        child=StrictChoiceField(choices=[*LAYERS, ALL_LAYERS]),
        min_length=1,
        max_length=len(LAYERS) + 1,
        default=[ALL_LAYERS],
        help_text='"llm", "rag" or "all" (both).',
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        one = "masterplan_id" in attrs and not attrs.get("all_masterplans", False)
        every = attrs.get("all_masterplans") is True and "masterplan_id" not in attrs
        if not (one or every):
            raise serializers.ValidationError(
                {"non_field_errors": ["Give masterplan_id, or all_masterplans: true (not both)."]}
            )
        return attrs

    @classmethod
    def refine_schema(cls, schema: dict[str, Any]) -> dict[str, Any]:
        schema["oneOf"] = [
            {"required": ["masterplan_id"], "properties": {"all_masterplans": {"type": "boolean", "enum": [False]}}},
            {
                "required": ["all_masterplans"],
                "properties": {"all_masterplans": {"type": "boolean", "enum": [True]}},
                "not": {"required": ["masterplan_id"]},
            },
        ]
        return schema


class InvalidationSerializer(serializers.Serializer):
    """One invalidation operation (an InvalidationAudit row)."""

    id = serializers.UUIDField(help_text="Follow it at cache/invalidations/{id}.")
    status = serializers.ChoiceField(choices=InvalidationAudit.Status.choices)
    source = serializers.CharField(help_text="api, admin or cli")  # type: ignore[assignment]  # a field, not Field.source
    actor = serializers.CharField(source="actor_name", allow_blank=True, help_text="Who asked.")
    masterplan_id = serializers.UUIDField(allow_null=True, help_text="null: every masterplan.")
    layers = serializers.ListField(child=serializers.ChoiceField(choices=list(LAYERS)))
    keys_removed = serializers.IntegerField()
    removed_by_layer = serializers.DictField(child=serializers.IntegerField())
    requested_at = serializers.DateTimeField()
    started_at = serializers.DateTimeField(allow_null=True)
    finished_at = serializers.DateTimeField(allow_null=True)
    duration_seconds = serializers.FloatField(allow_null=True)
    attempts = serializers.IntegerField()
    error = serializers.CharField(allow_blank=True)


# --- masterplans -----------------------------------------------------------------------------------


class MasterplanListQuerySerializer(serializers.Serializer):
    limit = QueryIntegerField(min_value=1, max_value=50, default=20)
    offset = QueryIntegerField(min_value=0, max_value=1_000_000, default=0)


class MasterplanSerializer(serializers.Serializer):
    id = serializers.UUIDField()
    name = serializers.CharField()
    status = serializers.ChoiceField(choices=Masterplan.Status.choices)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()
    statistics = MasterplanStatisticsSerializer(help_text="Per-layer figures of this masterplan.")


class MasterplanPageSerializer(serializers.Serializer):
    count = serializers.IntegerField(help_text="Masterplans in all (that this caller may see).")
    limit = serializers.IntegerField()
    offset = serializers.IntegerField()
    results = MasterplanSerializer(many=True)


class MasterplanPatchSerializer(StrictSerializer):
    name = StrictCharField(max_length=200, required=False)
    status = StrictChoiceField(choices=Masterplan.Status.choices, required=False)


# --- policies --------------------------------------------------------------------------------------


class CachePolicySerializer(serializers.Serializer):
    layer = serializers.ChoiceField(choices=list(LAYERS))
    enabled = serializers.BooleanField()
    ttl_seconds = serializers.IntegerField()
    similarity_threshold = serializers.FloatField()
    cache_nonzero_temperature = serializers.BooleanField()
    cache_truncated = serializers.BooleanField()
    notes = serializers.CharField(allow_blank=True)
    updated_at = serializers.DateTimeField(allow_null=True, help_text="null: the defaults, never saved.")


class CachePolicyPatchSerializer(StrictSerializer):
    enabled = StrictBooleanField(required=False, help_text="Off: lookups miss and nothing is stored.")
    ttl_seconds = StrictIntegerField(min_value=1, max_value=THIRTY_DAYS, required=False)
    similarity_threshold = StrictFloatField(
        min_value=0.5, max_value=1.0, required=False, help_text="RAG: minimum cosine similarity of a similar hit."
    )
    cache_nonzero_temperature = StrictBooleanField(required=False)
    cache_truncated = StrictBooleanField(required=False)
    notes = StrictCharField(pattern=NO_NUL, max_length=MAX_NOTES_CHARS, required=False)


class BatchPolicySerializer(serializers.Serializer):
    enabled = serializers.BooleanField()
    max_batch_size = serializers.IntegerField()
    batch_window_ms = serializers.IntegerField()
    notes = serializers.CharField(allow_blank=True)
    updated_at = serializers.DateTimeField(allow_null=True, help_text="null: the defaults, never saved.")


class BatchPolicyPatchSerializer(StrictSerializer):
    enabled = StrictBooleanField(required=False, help_text="Off: every request is sent on its own.")
    max_batch_size = StrictIntegerField(min_value=1, max_value=50, required=False)
    batch_window_ms = StrictIntegerField(min_value=1, max_value=10_000, required=False)
    notes = StrictCharField(pattern=NO_NUL, max_length=MAX_NOTES_CHARS, required=False)


class PolicyChangeSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    changed_at = serializers.DateTimeField()
    old_values = serializers.DictField()
    new_values = serializers.DictField()


class CachePolicyUpdateSerializer(serializers.Serializer):
    policy = CachePolicySerializer()
    change = PolicyChangeSerializer(allow_null=True, help_text="The recorded change; null when nothing changed.")


class BatchPolicyUpdateSerializer(serializers.Serializer):
    policy = BatchPolicySerializer()
    change = PolicyChangeSerializer(allow_null=True, help_text="The recorded change; null when nothing changed.")

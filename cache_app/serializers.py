from rest_framework import serializers

from cache_app.access.limits import BoundedCharField, check_model_request
from cache_app.actions import LAYERS


class InvalidateSerializer(serializers.Serializer):
    layers = serializers.ListField(
        child=serializers.ChoiceField(choices=LAYERS),
        allow_empty=False,
        max_length=len(LAYERS),
        default=list(LAYERS),
        required=False,
    )


class InvalidateLayersSerializer(InvalidateSerializer):
    confirm = serializers.BooleanField(help_text="Must be true: this drops every cached answer of the layers.")

    def validate_confirm(self, value: bool) -> bool:
        if not value:
            raise serializers.ValidationError("Set confirm to true to invalidate whole layers.")
        return value


class InvalidationResultSerializer(serializers.Serializer):
    masterplan_id = serializers.UUIDField(allow_null=True)
    layers = serializers.ListField(child=serializers.CharField())
    deleted_inline = serializers.DictField(child=serializers.IntegerField())


class StatisticsQuerySerializer(serializers.Serializer):
    masterplan_id = serializers.UUIDField(required=False, allow_null=True)


class GenerateSerializer(serializers.Serializer):
    prompt = BoundedCharField(limit_setting="MAX_PROMPT_CHARS", trim_whitespace=False)
    model = serializers.CharField(
        required=False,
        allow_null=True,
        default=None,
        max_length=100,
        help_text="A model listed in ModelPricing (default: LLM_DEFAULT_MODEL).",
    )
    temperature = serializers.FloatField(min_value=0.0, max_value=2.0, default=0.7)
    max_tokens = serializers.IntegerField(
        min_value=1,
        required=False,
        allow_null=True,
        default=None,
        help_text="At most the model's max_output_tokens (ModelPricing).",
    )
    system = BoundedCharField(
        limit_setting="MAX_SYSTEM_CHARS", required=False, allow_null=True, default=None, trim_whitespace=False
    )
    use_cache = serializers.BooleanField(default=True)
    use_batching = serializers.BooleanField(default=False)
    atom_id = serializers.UUIDField(required=False, allow_null=True, default=None)
    masterplan_id = serializers.UUIDField(required=False, allow_null=True, default=None)

    def validate_prompt(self, value: str) -> str:
        if not value.strip():
            raise serializers.ValidationError("The prompt must not be blank.")
        return value

    def validate(self, attrs: dict) -> dict:
        if attrs["use_batching"] and attrs["atom_id"] is None:
            raise serializers.ValidationError({"atom_id": "Required when use_batching is true."})
        attrs["model"] = check_model_request(attrs.get("model"), attrs.get("max_tokens"))
        return attrs


class RAGQuerySerializer(serializers.Serializer):
    query = BoundedCharField(limit_setting="MAX_RAG_QUERY_CHARS")
    top_k = serializers.IntegerField(min_value=1, max_value=100, default=5)
    masterplan_id = serializers.UUIDField(required=False, allow_null=True, default=None)

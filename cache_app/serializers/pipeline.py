"""Bodies of the pipeline's calls: ``llm/generate`` and ``rag/query``."""

from __future__ import annotations

import uuid
from typing import Any

from django.core.validators import MaxLengthValidator, MinLengthValidator
from rest_framework import serializers

from cache_app.access.limits import get_model_catalog, max_output_tokens_by_model, resolve_model
from cache_app.rag.engine import get_rag_engine
from cache_app.serializers.fields import (
    NO_NUL,
    LeanSerializer,
    StrictBooleanField,
    StrictCharField,
    StrictChoiceField,
    StrictFloatField,
    StrictIntegerField,
    StrictSerializer,
    StrictUUIDField,
)

# The largest maximum output a ModelPricing row may declare; each request is bounded by its model's.
MAX_TOKENS = 1_000_000
# Bounds a query embedding's values (finite, and far from float overflow when squared).
MAX_EMBEDDING_VALUE = 1e6


MAX_TOKENS_HELP = (
    "Upper bound on the answer's tokens: at most the model's maximum output (x-max-output-tokens lists "
    "each model's), or the request is a 400 naming the limit."
)


def publish_max_output_tokens(schema: dict[str, Any]) -> dict[str, Any]:
    """Each model's maximum output next to ``max_tokens``: the bound a schema cannot state per model."""
    schema["properties"]["max_tokens"]["x-max-output-tokens"] = max_output_tokens_by_model()
    return schema


class ModelField(StrictChoiceField):
    """A model listed in *Model pricing*; the schema's enum is that list when the schema is read."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(choices=[], **kwargs)

    def bind(self, field_name: str, parent: Any) -> None:
        # Bound once per serializer instance, never at import (no database query then).
        super().bind(field_name, parent)
        self.choices = known = get_model_catalog().known()
        listed = ", ".join(known) or "none (add ModelPricing rows in the admin)"
        # A new dict: LeanSerializer's copies share the declared field's (see cache_app.serializers.fields).
        self.error_messages = {
            **self.error_messages,
            "invalid_choice": f'Unknown model "{{input}}". Known models: {listed}.',
        }


class EmbeddingField(serializers.ListField):
    """A query embedding: exactly the configured embedder's dimension of bounded numbers."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(
            child=StrictFloatField(min_value=-MAX_EMBEDDING_VALUE, max_value=MAX_EMBEDDING_VALUE), **kwargs
        )

    def bind(self, field_name: str, parent: Any) -> None:
        # The embedder is loaded on first use, never at import.
        super().bind(field_name, parent)
        self.min_length = self.max_length = dim = int(get_rag_engine().embedder.dim)
        message = f"Ensure this field has exactly {dim} elements (the embedder's dimension)."
        self.validators += [MinLengthValidator(dim, message=message), MaxLengthValidator(dim, message=message)]


class GenerateRequestSerializer(StrictSerializer):
    prompt = StrictCharField(limit_setting="MAX_PROMPT_CHARS", help_text="Not blank; no NUL characters.")
    model = ModelField(
        required=False, allow_null=True, default=None, help_text="A model of *Model pricing* (default: the server's)."
    )
    temperature = StrictFloatField(min_value=0.0, max_value=2.0, default=0.7)
    max_tokens = StrictIntegerField(
        min_value=1,
        max_value=MAX_TOKENS,
        required=False,
        allow_null=True,
        default=None,
        help_text=MAX_TOKENS_HELP,
    )
    system = StrictCharField(
        pattern=NO_NUL, limit_setting="MAX_SYSTEM_CHARS", required=False, allow_null=True, default=None
    )
    use_cache = StrictBooleanField(default=True, help_text="Look up and store in the prompt cache.")
    use_batching = StrictBooleanField(default=False, help_text="Send a miss through the request batcher.")
    atom_id = StrictUUIDField(
        required=False, allow_null=True, default=None, help_text="Labels the prompt in a batch (default: a new id)."
    )
    masterplan_id = StrictUUIDField(
        required=False, allow_null=True, default=None, help_text="The masterplan; none: the global scope."
    )

    @classmethod
    def refine_schema(cls, schema: dict[str, Any]) -> dict[str, Any]:
        return publish_max_output_tokens(schema)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs["model"] = resolve_model(attrs["model"], attrs["max_tokens"])
        if attrs["use_batching"] and attrs["atom_id"] is None:
            attrs["atom_id"] = uuid.uuid4()  # the batcher labels each prompt; any id will do
        return attrs


class GenerateResponseSerializer(LeanSerializer):
    text = serializers.CharField()
    model = serializers.CharField()
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    cached = serializers.BooleanField()
    cache_layer = serializers.ChoiceField(
        choices=["llm", "singleflight"],
        allow_null=True,
        help_text="llm: a prompt cache hit; singleflight: an identical concurrent request made the call.",
    )
    cost_usd = serializers.FloatField(help_text="What this call cost (0 without a provider call).")
    saved_usd = serializers.FloatField(help_text="What not calling saved.")
    latency_s = serializers.FloatField()
    finish_reason = serializers.CharField(allow_null=True)
    provider = serializers.CharField(allow_blank=True)
    simulated = serializers.BooleanField(help_text="True: the offline simulator answered, not a model.")


class RAGQueryRequestSerializer(StrictSerializer):
    query = StrictCharField(limit_setting="MAX_RAG_QUERY_CHARS", help_text="Not blank; no NUL characters.")
    top_k = StrictIntegerField(min_value=1, max_value=100, default=5)
    masterplan_id = StrictUUIDField(
        required=False, allow_null=True, default=None, help_text="The masterplan; none: the global corpus."
    )
    query_embedding = EmbeddingField(
        required=False,
        allow_null=True,
        default=None,
        help_text=(
            "Optional: the query's embedding by the server's embedder (embedding_model in answers), "
            "so the server does not embed it. An all-zero vector matches nothing."
        ),
    )


class DocumentSerializer(LeanSerializer):
    id = serializers.IntegerField()
    content = serializers.CharField(allow_blank=True)
    metadata = serializers.DictField()
    score = serializers.FloatField(help_text="Cosine similarity to the query.")


class RAGQueryResponseSerializer(LeanSerializer):
    documents = DocumentSerializer(many=True)
    cached = serializers.BooleanField()
    match = serializers.ChoiceField(
        choices=["exact", "similar"], allow_null=True, help_text="How the cache answered; null: a store search."
    )
    similarity = serializers.FloatField(allow_null=True)
    latency_s = serializers.FloatField()
    embedding_model = serializers.CharField()
    query = serializers.CharField()
    extra = serializers.DictField()

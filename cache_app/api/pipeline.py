"""The pipeline's calls: ``POST llm/generate`` and ``POST rag/query``."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from cache_app.access.permissions import CanUsePipeline
from cache_app.access.scope import check_masterplan_scope
from cache_app.access.throttles import GenerateThrottle
from cache_app.api.base import V2View, idempotent
from cache_app.api.schema import BODY, IDEMPOTENCY_KEY, IDEMPOTENT, IDEMPOTENT_REPLAYED, PROVIDER, RETRY_AFTER, errors
from cache_app.llm.client import get_llm_client
from cache_app.masterplans import ensure_masterplan_registered
from cache_app.rag.engine import get_rag_engine
from cache_app.serializers.pipeline import (
    GenerateRequestSerializer,
    GenerateResponseSerializer,
    RAGQueryRequestSerializer,
    RAGQueryResponseSerializer,
)


class GenerateView(V2View):
    """One generation through the prompt cache, single-flight and (optionally) the batcher; priced."""

    permission_classes = [CanUsePipeline]
    throttle_classes = [GenerateThrottle]

    @extend_schema(
        operation_id="llm_generate",
        request=GenerateRequestSerializer,
        responses={200: GenerateResponseSerializer, **errors(*BODY, *IDEMPOTENT, *PROVIDER)},
        parameters=[IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED, RETRY_AFTER],
    )
    def post(self, request: Request) -> Response:
        serializer = GenerateRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        ensure_masterplan_registered(check_masterplan_scope(request, data["masterplan_id"]))

        def generate() -> tuple[int, dict]:
            response = get_llm_client().generate_sync(**data)
            return status.HTTP_200_OK, dict(GenerateResponseSerializer(response).data)

        return idempotent(request, "llm/generate", generate)


class RAGQueryView(V2View):
    """One retrieval: the RAG cache (exact or similar), else a document store search."""

    permission_classes = [CanUsePipeline]
    throttle_classes = [GenerateThrottle]

    @extend_schema(
        operation_id="rag_query",
        request=RAGQueryRequestSerializer,
        responses={200: RAGQueryResponseSerializer, **errors(*BODY)},
        parameters=[RETRY_AFTER],
    )
    def post(self, request: Request) -> Response:
        serializer = RAGQueryRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        masterplan_id = check_masterplan_scope(request, data["masterplan_id"])
        ensure_masterplan_registered(masterplan_id)
        try:
            result = get_rag_engine().query(
                data["query"], top_k=data["top_k"], masterplan_id=masterplan_id, query_embedding=data["query_embedding"]
            )
        except ValueError as exc:  # inputs are validated above; left: a scope whose documents it cannot search
            raise ValidationError({"query": [str(exc)]})
        return Response(RAGQueryResponseSerializer(result).data)

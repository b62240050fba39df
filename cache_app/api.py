"""DRF endpoints for operators and the pipeline. Views parse, call one function, report."""

from __future__ import annotations

from uuid import UUID

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from cache_app import actions
from cache_app.llm.cache import CacheUnavailableError
from cache_app.llm.client import get_llm_client
from cache_app.rag.engine import get_rag_engine
from cache_app.serializers import (
    GenerateSerializer,
    InvalidateLayersSerializer,
    InvalidateSerializer,
    InvalidationResultSerializer,
    RAGQuerySerializer,
    StatisticsQuerySerializer,
)
from cache_app.statistics import cache_statistics


def _unavailable(exc: Exception) -> Response:
    return Response({"detail": f"Redis is unavailable: {exc}"}, status=status.HTTP_503_SERVICE_UNAVAILABLE)


class MasterplanInvalidateView(APIView):
    @extend_schema(request=InvalidateSerializer, responses={200: InvalidationResultSerializer})
    def post(self, request: Request, masterplan_id: UUID) -> Response:
        serializer = InvalidateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        layers = serializer.validated_data["layers"]
        try:
            deleted = actions.invalidate_masterplan(masterplan_id, layers=layers)
        except CacheUnavailableError as exc:
            return _unavailable(exc)
        return Response({"masterplan_id": str(masterplan_id), "layers": list(deleted), "deleted_inline": deleted})


class LayersInvalidateView(APIView):
    @extend_schema(request=InvalidateLayersSerializer, responses={200: InvalidationResultSerializer})
    def post(self, request: Request) -> Response:
        serializer = InvalidateLayersSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        try:
            deleted = actions.invalidate_layers(serializer.validated_data["layers"])
        except CacheUnavailableError as exc:
            return _unavailable(exc)
        return Response({"masterplan_id": None, "layers": list(deleted), "deleted_inline": deleted})


class StatisticsView(APIView):
    @extend_schema(
        parameters=[OpenApiParameter("masterplan_id", UUID, required=False)],
        responses={200: dict},
    )
    def get(self, request: Request) -> Response:
        query = StatisticsQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        return Response(cache_statistics(query.validated_data.get("masterplan_id")))


class GenerateView(APIView):
    """The pipeline's LLM call: cached, single-flighted, optionally batched, priced."""

    @extend_schema(request=GenerateSerializer, responses={200: dict})
    def post(self, request: Request) -> Response:
        serializer = GenerateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        response = get_llm_client().generate_sync(**serializer.validated_data)
        return Response(response.as_dict())


class RAGQueryView(APIView):
    """The pipeline's retrieval: cached (exact or similar), else a document store search."""

    @extend_schema(request=RAGQuerySerializer, responses={200: dict})
    def post(self, request: Request) -> Response:
        serializer = RAGQuerySerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        result = get_rag_engine().query(data["query"], top_k=data["top_k"], masterplan_id=data["masterplan_id"])
        return Response(result.as_dict())

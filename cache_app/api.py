"""DRF endpoints for operators and the pipeline. Views parse, call one function, report."""

from __future__ import annotations

from uuid import UUID

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from batching_app.tasks import dispatch_wave
from batching_app.wave import BatchResultStore

from . import actions, conf
from .llm_cache import CacheUnavailableError
from .llm_client import get_llm_client, run_sync
from .rag_engine import get_rag_engine
from .serializers import (
    GenerateSerializer,
    InvalidateLayersSerializer,
    InvalidateSerializer,
    InvalidationResultSerializer,
    RAGQuerySerializer,
    StatisticsQuerySerializer,
    WaveResultsQuerySerializer,
    WaveSerializer,
)
from .statistics import cache_statistics


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
        timeout = float(conf.get("LLM_TIMEOUT_SECONDS")) * (int(conf.get("LLM_MAX_RETRIES")) + 2)
        response = run_sync(get_llm_client().generate(**serializer.validated_data), timeout=timeout)
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


class WaveView(APIView):
    """Dispatch a wave's cache misses to Celery as batches; collect answers per atom."""

    @extend_schema(request=WaveSerializer, responses={202: dict})
    def post(self, request: Request) -> Response:
        serializer = WaveSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        atoms = [(a["atom_id"], a["prompt"]) for a in serializer.validated_data["atoms"]]
        tasks = dispatch_wave(atoms)
        return Response({"tasks": [t.id for t in tasks], "atoms": len(atoms)}, status=status.HTTP_202_ACCEPTED)

    @extend_schema(
        parameters=[OpenApiParameter("atom_ids", UUID, many=True, required=True, explode=False)],
        responses={200: dict},
    )
    def get(self, request: Request) -> Response:
        raw = request.query_params.get("atom_ids", "")
        query = WaveResultsQuerySerializer(data={"atom_ids": [part for part in raw.split(",") if part]})
        query.is_valid(raise_exception=True)
        atom_ids = query.validated_data["atom_ids"]
        answers = BatchResultStore().get_many(atom_ids)
        return Response(
            {
                "answers": {str(a): answers[a] for a in atom_ids if a in answers},
                "pending": [str(a) for a in atom_ids if a not in answers],
            }
        )

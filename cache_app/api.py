"""DRF endpoints for operators and the pipeline. Views parse, call one function, report."""

from __future__ import annotations

from uuid import UUID

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from . import actions
from .llm_cache import CacheUnavailableError
from .serializers import (
    InvalidateLayersSerializer,
    InvalidateSerializer,
    InvalidationResultSerializer,
    StatisticsQuerySerializer,
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

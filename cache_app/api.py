"""DRF endpoints for operators and the pipeline. Views parse, check access, call one function, report.

Access: each view declares its permission and throttle classes (cache_app.access) and
checks the masterplan scope of what it touches. Errors (Redis down, provider failures,
timeouts) are turned into JSON answers by the project's exception handler.
"""

from __future__ import annotations

from uuid import UUID

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.exceptions import ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from cache_app import actions
from cache_app.access import roles
from cache_app.access.permissions import CanInvalidate, CanReadStatistics, CanUsePipeline, require_permission
from cache_app.access.scope import check_masterplan_scope
from cache_app.access.throttles import GenerateThrottle, InvalidateThrottle, ReadThrottle
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

# Error answers every authenticated route can give (documented in the schema).
COMMON_ERRORS = {
    400: OpenApiResponse(description="Invalid input: field errors, or a body over a limit."),
    401: OpenApiResponse(description="No or invalid credentials (Authorization: Bearer <API key>)."),
    403: OpenApiResponse(description="The role lacks the permission, or the masterplan is outside the key's set."),
    429: OpenApiResponse(description="Rate limited; see Retry-After."),
    503: OpenApiResponse(description="Redis, the broker or the database is unavailable; see Retry-After."),
}
PROVIDER_ERRORS = {
    502: OpenApiResponse(description="The LLM provider answered with an error."),
    504: OpenApiResponse(description="The LLM provider did not answer in time."),
}


class MasterplanInvalidateView(APIView):
    permission_classes = [CanInvalidate]
    throttle_classes = [InvalidateThrottle]

    @extend_schema(request=InvalidateSerializer, responses={200: InvalidationResultSerializer, **COMMON_ERRORS})
    def post(self, request: Request, masterplan_id: UUID) -> Response:
        check_masterplan_scope(request, masterplan_id)
        serializer = InvalidateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        deleted = actions.invalidate_masterplan(masterplan_id, layers=serializer.validated_data["layers"])
        return Response({"masterplan_id": str(masterplan_id), "layers": list(deleted), "deleted_inline": deleted})


class LayersInvalidateView(APIView):
    permission_classes = [CanInvalidate]
    throttle_classes = [InvalidateThrottle]

    @extend_schema(request=InvalidateLayersSerializer, responses={200: InvalidationResultSerializer, **COMMON_ERRORS})
    def post(self, request: Request) -> Response:
        check_masterplan_scope(request, None)  # whole layers: every masterplan and the global scope
        serializer = InvalidateLayersSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        deleted = actions.invalidate_layers(serializer.validated_data["layers"])
        return Response({"masterplan_id": None, "layers": list(deleted), "deleted_inline": deleted})


class StatisticsView(APIView):
    """One masterplan's figures (pipeline, within its key's set), or the global totals (operators)."""

    permission_classes = [CanReadStatistics]
    throttle_classes = [ReadThrottle]

    @extend_schema(
        parameters=[OpenApiParameter("masterplan_id", UUID, required=False)],
        responses={200: dict, **COMMON_ERRORS},
    )
    def get(self, request: Request) -> Response:
        query = StatisticsQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        masterplan_id = check_masterplan_scope(request, query.validated_data.get("masterplan_id"))
        if masterplan_id is None:
            require_permission(
                request, roles.VIEW_ALL_STATISTICS, "The global statistics need view_all_statistics; name a masterplan."
            )
        return Response(cache_statistics(masterplan_id))


class GenerateView(APIView):
    """The pipeline's LLM call: cached, single-flighted, optionally batched, priced."""

    permission_classes = [CanUsePipeline]
    throttle_classes = [GenerateThrottle]

    @extend_schema(request=GenerateSerializer, responses={200: dict, **COMMON_ERRORS, **PROVIDER_ERRORS})
    def post(self, request: Request) -> Response:
        serializer = GenerateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        check_masterplan_scope(request, serializer.validated_data["masterplan_id"])
        response = get_llm_client().generate_sync(**serializer.validated_data)
        return Response(response.as_dict())


class RAGQueryView(APIView):
    """The pipeline's retrieval: cached (exact or similar), else a document store search."""

    permission_classes = [CanUsePipeline]
    throttle_classes = [GenerateThrottle]

    @extend_schema(request=RAGQuerySerializer, responses={200: dict, **COMMON_ERRORS})
    def post(self, request: Request) -> Response:
        serializer = RAGQuerySerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        masterplan_id = check_masterplan_scope(request, data["masterplan_id"])
        try:
            result = get_rag_engine().query(data["query"], top_k=data["top_k"], masterplan_id=masterplan_id)
        except ValueError as exc:  # inputs are validated above: what is left is a query the embedder cannot use
            raise ValidationError({"query": [str(exc)]})
        return Response(result.as_dict())

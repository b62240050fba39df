"""``GET cache/statistics`` (the whole document) and ``GET cache/statistics/{layer}`` (one layer)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from cache_app.access import roles
from cache_app.access.permissions import CanReadStatistics, require_permission
from cache_app.access.scope import check_masterplan_scope
from cache_app.access.throttles import ReadThrottle
from cache_app.api.base import V2View
from cache_app.api.schema import RETRY_AFTER, errors
from cache_app.serializers.operations import (
    LAYER_STATISTICS_SERIALIZERS,
    LayerStatisticsSerializer,
    MasterplanQuerySerializer,
    StatisticsSerializer,
)
from cache_app.statistics import LAYERS, cache_statistics, layer_statistics


def _scope(request: Request) -> str | None:
    """The masterplan asked for (within the caller's set), or None: the global totals, for operators only."""
    query = MasterplanQuerySerializer(data=request.query_params.dict())
    query.is_valid(raise_exception=True)
    masterplan_id = check_masterplan_scope(request, query.validated_data.get("masterplan_id"))
    if masterplan_id is None:
        require_permission(
            request, roles.VIEW_ALL_STATISTICS, "The global statistics need view_all_statistics; name a masterplan."
        )
    return masterplan_id


class StatisticsView(V2View):
    """Hit rates, hits and misses per layer, dollars saved, batching: one masterplan's, or everything."""

    permission_classes = [CanReadStatistics]
    throttle_classes = [ReadThrottle]

    @extend_schema(
        operation_id="cache_statistics",
        parameters=[MasterplanQuerySerializer, RETRY_AFTER],
        responses={200: StatisticsSerializer, **errors(400)},
    )
    def get(self, request: Request) -> Response:
        return Response(StatisticsSerializer(cache_statistics(_scope(request))).data)


class LayerStatisticsView(V2View):
    """One layer's section of the statistics (``llm``, ``rag`` or ``batching``), with its layer name."""

    permission_classes = [CanReadStatistics]
    throttle_classes = [ReadThrottle]

    @extend_schema(
        operation_id="cache_layer_statistics",
        parameters=[
            OpenApiParameter("layer", str, OpenApiParameter.PATH, enum=list(LAYERS)),
            MasterplanQuerySerializer,
            RETRY_AFTER,
        ],
        responses={200: LayerStatisticsSerializer, **errors(400, 404)},
    )
    def get(self, request: Request, layer: str) -> Response:
        masterplan_id = _scope(request)
        figures = {"layer": layer, "masterplan_id": masterplan_id, **layer_statistics(layer, masterplan_id)}
        return Response(LAYER_STATISTICS_SERIALIZERS[layer](figures).data)

"""``GET/PATCH cache/policies/{layer}`` and ``GET/PATCH batching/policy``: read and tune, audited."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response

from cache_app import actions
from cache_app.access.permissions import CanTunePolicy
from cache_app.access.throttles import InvalidateThrottle, ReadThrottle
from cache_app.api.base import V2View, model_errors
from cache_app.api.schema import BODY, RETRY_AFTER, errors
from cache_app.serializers.operations import (
    BatchPolicyPatchSerializer,
    BatchPolicySerializer,
    BatchPolicyUpdateSerializer,
    CachePolicyPatchSerializer,
    CachePolicySerializer,
    CachePolicyUpdateSerializer,
)

LAYER_PATH = OpenApiParameter("layer", str, OpenApiParameter.PATH, enum=list(actions.LAYERS))


class _PolicyView(V2View):
    """Operators read and tune; a change takes effect in every process within POLICY_REFRESH_SECONDS."""

    permission_classes = [CanTunePolicy]
    patch_serializer: Any = None
    update_serializer: Any = None

    def get_throttles(self) -> list[Any]:
        return [InvalidateThrottle() if self.request.method == "PATCH" else ReadThrottle()]

    def _update(self, request: Request, layer: str) -> Response:
        serializer = self.patch_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        with model_errors():
            update = actions.update_policy(layer, serializer.validated_data, source="api", actor=request.user)
        return Response(self.update_serializer({"policy": update.policy, "change": update.audit}).data)


class CachePolicyView(_PolicyView):
    """A cache layer's policy: switch, TTL, similarity threshold (RAG), store rules (LLM)."""

    patch_serializer = CachePolicyPatchSerializer
    update_serializer = CachePolicyUpdateSerializer

    @extend_schema(
        operation_id="cache_policy_read",
        parameters=[LAYER_PATH, RETRY_AFTER],
        responses={200: CachePolicySerializer, **errors(404)},
    )
    def get(self, request: Request, layer: str) -> Response:
        return Response(CachePolicySerializer(actions.read_policy(layer)).data)

    @extend_schema(
        operation_id="cache_policy_update",
        parameters=[LAYER_PATH, RETRY_AFTER],
        request=CachePolicyPatchSerializer,
        responses={200: CachePolicyUpdateSerializer, **errors(*BODY, 404)},
    )
    def patch(self, request: Request, layer: str) -> Response:
        return self._update(request, layer)


class BatchPolicyView(_PolicyView):
    """The batcher's knobs: switch, batch size, window."""

    patch_serializer = BatchPolicyPatchSerializer
    update_serializer = BatchPolicyUpdateSerializer

    @extend_schema(
        operation_id="batching_policy_read",
        parameters=[RETRY_AFTER],
        responses={200: BatchPolicySerializer, **errors()},
    )
    def get(self, request: Request) -> Response:
        return Response(BatchPolicySerializer(actions.read_policy("batching")).data)

    @extend_schema(
        operation_id="batching_policy_update",
        parameters=[RETRY_AFTER],
        request=BatchPolicyPatchSerializer,
        responses={200: BatchPolicyUpdateSerializer, **errors(*BODY)},
    )
    def patch(self, request: Request) -> Response:
        return self._update(request, "batching")

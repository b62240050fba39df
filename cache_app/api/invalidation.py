"""``POST cache/invalidate`` (an audited operation, 202) and ``GET cache/invalidations/{id}`` (its outcome)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response

from cache_app import actions
from cache_app.access.errors import ServiceUnavailable
from cache_app.access.permissions import CanInvalidate
from cache_app.access.scope import check_masterplan_scope
from cache_app.access.throttles import InvalidateThrottle, ReadThrottle
from cache_app.api.base import V2View, idempotent
from cache_app.api.schema import BODY, IDEMPOTENCY_KEY, IDEMPOTENT, IDEMPOTENT_REPLAYED, RETRY_AFTER, errors
from cache_app.models import InvalidationAudit
from cache_app.serializers.operations import InvalidateRequestSerializer, InvalidationSerializer


class InvalidateView(V2View):
    """Record an invalidation and have a Celery task carry it out; 202 with the operation to follow."""

    permission_classes = [CanInvalidate]
    throttle_classes = [InvalidateThrottle]

    @extend_schema(
        operation_id="cache_invalidate",
        request=InvalidateRequestSerializer,
        responses={202: InvalidationSerializer, **errors(*BODY, *IDEMPOTENT)},
        parameters=[IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED, RETRY_AFTER],
    )
    def post(self, request: Request) -> Response:
        serializer = InvalidateRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        # Every masterplan is the global scope: a key restricted to masterplans may not.
        masterplan_id = check_masterplan_scope(request, data.get("masterplan_id"))

        def invalidate() -> tuple[int, Any]:
            audit = actions.request_invalidation(
                source="api",
                masterplan_id=masterplan_id,
                all_masterplans=masterplan_id is None,
                layers=data["layers"],
                actor=request.user,
            )
            audit.refresh_from_db()  # without a broker the task has already run
            if audit.status == InvalidationAudit.Status.FAILED and audit.error.startswith(actions.NOT_STARTED):
                # Recorded as failed; nothing is in flight: the caller retries after Retry-After.
                raise ServiceUnavailable("The task broker is unavailable; retry later.")
            return status.HTTP_202_ACCEPTED, dict(InvalidationSerializer(audit).data)

        return idempotent(request, "cache/invalidate", invalidate)


class InvalidationView(V2View):
    """The status and result of one invalidation."""

    permission_classes = [CanInvalidate]
    throttle_classes = [ReadThrottle]

    @extend_schema(
        operation_id="cache_invalidation",
        responses={200: InvalidationSerializer, **errors(404)},
        parameters=[RETRY_AFTER],
    )
    def get(self, request: Request, invalidation_id: UUID) -> Response:
        audit = InvalidationAudit.objects.filter(pk=invalidation_id).first()
        if audit is None:
            raise NotFound("No such invalidation.")
        check_masterplan_scope(request, audit.masterplan_id)
        return Response(InvalidationSerializer(audit).data)

"""The wave routes of the v2 API: ``POST llm/waves`` and ``GET llm/waves/{id}``. Parse, call one function, report."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response

from batching_app.serializers import WaveQuerySerializer, WaveReportSerializer, WaveRequestSerializer
from batching_app.waves import WaveValidationError, get_wave, run_wave
from cache_app.access.permissions import CanUsePipeline
from cache_app.access.scope import check_masterplan_scope
from cache_app.access.throttles import GenerateThrottle, ReadThrottle
from cache_app.api.base import V2View, idempotent
from cache_app.api.schema import BODY, IDEMPOTENCY_KEY, IDEMPOTENT, IDEMPOTENT_REPLAYED, RETRY_AFTER, errors


class WavesView(V2View):
    """A wave through the caches: lookups, then the misses deduplicated and batched on Celery."""

    permission_classes = [CanUsePipeline]
    throttle_classes = [GenerateThrottle]

    @extend_schema(
        operation_id="llm_waves_create",
        request=WaveRequestSerializer,
        parameters=[WaveQuerySerializer, IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED, RETRY_AFTER],
        responses={
            200: OpenApiResponse(WaveReportSerializer, description="wait=true: every atom is final."),
            202: OpenApiResponse(WaveReportSerializer, description="wait=false: the wave runs; follow its wave_id."),
            **errors(*BODY, *IDEMPOTENT),
        },
    )
    def post(self, request: Request) -> Response:
        query = WaveQuerySerializer(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        serializer = WaveRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        masterplan_id = check_masterplan_scope(request, data["masterplan_id"])
        wait = query.validated_data["wait"]

        def submit() -> tuple[int, Any]:
            try:
                report = run_wave(
                    masterplan_id,
                    data["atoms"],
                    defaults=data.get("defaults"),
                    wait=wait,
                    deadline_seconds=data.get("deadline_seconds"),
                )
            except WaveValidationError as exc:  # the serializer states the same rules: a defence
                raise ValidationError(exc.errors)
            code = status.HTTP_200_OK if wait else status.HTTP_202_ACCEPTED
            return code, dict(WaveReportSerializer(report).data)

        return idempotent(request, "llm/waves", submit)


class WaveView(V2View):
    """A wave's progress and per-atom results, from any process, for WAVE_TTL_SECONDS."""

    permission_classes = [CanUsePipeline]
    throttle_classes = [ReadThrottle]

    @extend_schema(
        operation_id="llm_wave_read",
        parameters=[OpenApiParameter("wave_id", UUID, OpenApiParameter.PATH), RETRY_AFTER],
        responses={200: WaveReportSerializer, **errors(404)},
    )
    def get(self, request: Request, wave_id: UUID) -> Response:
        report = get_wave(wave_id)
        if report is None:
            raise NotFound("No such wave (or it expired).")
        check_masterplan_scope(request, report["masterplan_id"])
        return Response(WaveReportSerializer(report).data)

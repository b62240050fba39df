"""The Celery wave endpoints. Views parse, check access, call one function, report."""

from __future__ import annotations

from uuid import UUID

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from batching_app.serializers import WaveResultsQuerySerializer, WaveSerializer
from batching_app.tasks import dispatch_wave, result_addresses
from batching_app.wave import WaveStore
from cache_app.access.permissions import CanUsePipeline
from cache_app.access.scope import check_masterplan_scope
from cache_app.access.throttles import GenerateThrottle, ReadThrottle
from cache_app.api import COMMON_ERRORS
from cache_app.core import conf


class WaveView(APIView):
    """Send a wave's atoms to Celery as batches (POST); read its answers by wave id (GET)."""

    permission_classes = [CanUsePipeline]

    def get_throttles(self) -> list:
        throttle = GenerateThrottle if self.request.method == "POST" else ReadThrottle
        return [throttle()]

    @extend_schema(request=WaveSerializer, responses={202: dict, **COMMON_ERRORS})
    def post(self, request: Request) -> Response:
        serializer = WaveSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        masterplan_id = check_masterplan_scope(request, serializer.validated_data["masterplan_id"])
        atoms = [(a["atom_id"], a["prompt"]) for a in serializer.validated_data["atoms"]]
        model = str(conf.get("LLM_DEFAULT_MODEL"))
        record = WaveStore().create(masterplan_id, result_addresses(atoms, masterplan_id=masterplan_id, model=model))
        # Answers are read by wave id, never from task results: do not wait on the result backend.
        tasks = dispatch_wave(atoms, masterplan_id=masterplan_id, model=model, ignore_result=True)
        return Response(
            {"wave_id": str(record.wave_id), "tasks": [t.id for t in tasks], "atoms": len(atoms)},
            status=status.HTTP_202_ACCEPTED,
        )

    @extend_schema(
        parameters=[OpenApiParameter("wave_id", UUID, required=True)],
        responses={200: dict, 404: OpenApiResponse(description="No such wave (or it expired)."), **COMMON_ERRORS},
    )
    def get(self, request: Request) -> Response:
        query = WaveResultsQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        store = WaveStore()
        record = store.get(query.validated_data["wave_id"])
        if record is None:
            raise NotFound("No such wave (or it expired).")
        check_masterplan_scope(request, record.masterplan_id)
        answers = store.answers(record)
        return Response(
            {
                "wave_id": str(record.wave_id),
                "masterplan_id": record.masterplan_id,
                "answers": {str(a.atom_id): answers[a] for a in record.addresses if a in answers},
                "pending": [str(a.atom_id) for a in record.addresses if a not in answers],
            }
        )

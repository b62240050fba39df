"""The Celery wave endpoints. Views parse, call one function, report."""

from __future__ import annotations

from uuid import UUID

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from batching_app.serializers import WaveResultsQuerySerializer, WaveSerializer
from batching_app.tasks import dispatch_wave
from batching_app.wave import BatchResultStore


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

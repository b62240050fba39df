"""``GET masterplans`` (a bounded page) and ``GET/PATCH masterplans/{id}``: name, status, per-layer figures."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework.exceptions import NotFound
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response

from cache_app import actions
from cache_app.access.permissions import CanReadStatistics, HasPermissions
from cache_app.access.scope import allowed_masterplans, check_masterplan_scope
from cache_app.access.throttles import InvalidateThrottle, ReadThrottle
from cache_app.api.base import V2View, model_errors
from cache_app.api.schema import BODY, RETRY_AFTER, errors
from cache_app.models import Masterplan
from cache_app.serializers.operations import (
    MasterplanListQuerySerializer,
    MasterplanPageSerializer,
    MasterplanPatchSerializer,
    MasterplanSerializer,
)
from cache_app.statistics import masterplan_statistics

MASTERPLAN_PATH = OpenApiParameter("masterplan_id", UUID, OpenApiParameter.PATH)


class CanChangeMasterplan(HasPermissions):
    required = ("cache_app.change_masterplan",)


class MasterplanAccess(BasePermission):
    """Reading: the pipeline and operators (CanReadStatistics); changing: change_masterplan (operators)."""

    def has_permission(self, request: Request, view: Any) -> bool:
        rule = CanChangeMasterplan if request.method == "PATCH" else CanReadStatistics
        return rule().has_permission(request, view)


def _visible(request: Request) -> QuerySet[Masterplan]:
    allowed = allowed_masterplans(request)
    masterplans = Masterplan.objects.order_by("-created_at", "id")
    return masterplans if allowed is None else masterplans.filter(pk__in=allowed)


def _represent(masterplan: Masterplan) -> dict[str, Any]:
    data = {
        "id": masterplan.pk,
        "name": masterplan.name,
        "status": masterplan.status,
        "created_at": masterplan.created_at,
        "updated_at": masterplan.updated_at,
        "statistics": masterplan_statistics(masterplan.pk),
    }
    return dict(MasterplanSerializer(data).data)


class MasterplanListView(V2View):
    """The masterplans this caller may use, newest first, a page at a time."""

    permission_classes = [CanReadStatistics]
    throttle_classes = [ReadThrottle]

    @extend_schema(
        operation_id="masterplans_list",
        parameters=[MasterplanListQuerySerializer, RETRY_AFTER],
        responses={200: MasterplanPageSerializer, **errors(400)},
    )
    def get(self, request: Request) -> Response:
        query = MasterplanListQuerySerializer(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        limit, offset = query.validated_data["limit"], query.validated_data["offset"]
        masterplans = _visible(request)
        page = [_represent(m) for m in masterplans[offset : offset + limit]]
        return Response({"count": masterplans.count(), "limit": limit, "offset": offset, "results": page})


class MasterplanDetailView(V2View):
    """One masterplan (GET: pipeline and operators); rename it or set its status (PATCH: operators)."""

    permission_classes = [MasterplanAccess]

    def get_throttles(self) -> list[Any]:
        return [InvalidateThrottle() if self.request.method == "PATCH" else ReadThrottle()]

    def _get(self, request: Request, masterplan_id: UUID) -> Masterplan:
        check_masterplan_scope(request, masterplan_id)
        masterplan = Masterplan.objects.filter(pk=masterplan_id).first()
        if masterplan is None:
            raise NotFound("No such masterplan.")
        return masterplan

    @extend_schema(
        operation_id="masterplan_read",
        parameters=[MASTERPLAN_PATH, RETRY_AFTER],
        responses={200: MasterplanSerializer, **errors(404)},
    )
    def get(self, request: Request, masterplan_id: UUID) -> Response:
        return Response(_represent(self._get(request, masterplan_id)))

    @extend_schema(
        operation_id="masterplan_update",
        parameters=[MASTERPLAN_PATH, RETRY_AFTER],
        request=MasterplanPatchSerializer,
        responses={200: MasterplanSerializer, **errors(*BODY, 404)},
    )
    def patch(self, request: Request, masterplan_id: UUID) -> Response:
        serializer = MasterplanPatchSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        check_masterplan_scope(request, masterplan_id)
        with model_errors():
            masterplan = actions.update_masterplan(masterplan_id, serializer.validated_data)
        if masterplan is None:
            raise NotFound("No such masterplan.")
        return Response(_represent(masterplan))

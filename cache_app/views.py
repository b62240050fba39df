"""Internal endpoints: /healthz (anyone: up or down; operators: details) and /metrics (a bearer token)."""

from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django_prometheus.exports import ExportToDjangoView
from drf_spectacular.utils import extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from cache_app.access import roles
from cache_app.access.authentication import bearer_token
from cache_app.access.errors import json_error
from cache_app.access.permissions import has_permission
from cache_app.health import run_checks


class HealthView(APIView):
    """Up or down for anyone (load balancers); which dependency failed, for operators only."""

    permission_classes = [AllowAny]
    throttle_classes: list = []  # answered from a 1 s cache; probes must never be refused

    @extend_schema(exclude=True)
    def get(self, request: Request) -> Response:
        ok, body = run_checks(details=has_permission(request, roles.VIEW_ALL_STATISTICS))
        response = Response(body, status=200 if ok else 503)
        response["Cache-Control"] = "no-store"
        return response


healthz = HealthView.as_view()


@never_cache
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus exposition, only with ``Authorization: Bearer $METRICS_TOKEN``.

    Without a configured token the endpoint is closed (there is no default token).
    """
    expected = getattr(settings, "METRICS_TOKEN", "")
    given = bearer_token(request)
    if not given:
        response = json_error(401, "Send the metrics token as Authorization: Bearer <token>.", "not_authenticated")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    if not expected or not hmac.compare_digest(given.encode(), expected.encode()):
        return json_error(403, "Invalid metrics token.", "permission_denied")
    return ExportToDjangoView(request)

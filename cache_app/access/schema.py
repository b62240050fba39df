"""The OpenAPI schema and its Swagger UI, for logged-in callers only; errors as JSON like every API route."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

from cache_app.access.permissions import IsAuthenticated


class APIKeyScheme(OpenApiAuthenticationExtension):
    """Documents ``Authorization: Bearer <API key>`` in the schema's security schemes."""

    target_class = "cache_app.access.authentication.APIKeyAuthentication"
    name = "apiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer", "description": "An mgecache API key (manage.py create_api_key)."}


class _JSONErrors:
    def handle_exception(self, exc: Exception) -> Response:
        response = super().handle_exception(exc)  # type: ignore[misc]
        # The schema renders YAML and the docs HTML; an error is JSON instead.
        self.request.accepted_renderer = JSONRenderer()  # type: ignore[attr-defined]
        self.request.accepted_media_type = JSONRenderer.media_type  # type: ignore[attr-defined]
        return response


class SchemaView(_JSONErrors, SpectacularAPIView):
    permission_classes = [IsAuthenticated]


class DocsView(_JSONErrors, SpectacularSwaggerView):
    permission_classes = [IsAuthenticated]

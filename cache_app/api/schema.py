"""What the v2 views tell the OpenAPI schema: error bodies, status codes, headers, strict request bodies.

Every v2 view documents each status it can answer with :func:`errors`, whose bodies are one
shared :class:`ErrorSerializer` (the shape of ``cache_app.access.errors``). Request bodies of
:class:`~cache_app.serializers.fields.StrictSerializer` are closed objects
(``additionalProperties: false``), and a serializer may refine its schema further (for rules
that span fields) with a ``refine_schema(schema) -> schema`` classmethod.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse
from rest_framework import serializers

from cache_app.idempotency import MAX_KEY_CHARS
from cache_app.serializers.fields import StrictCharField, StrictSerializer


class ErrorSerializer(serializers.Serializer):
    """``{"detail", "code"}``, or field errors: each invalid field (or path) with its messages."""

    detail = serializers.CharField(required=False, help_text="What went wrong.")
    code = serializers.CharField(required=False, help_text="A stable, machine-readable code.")

    @classmethod
    def refine_schema(cls, schema: dict[str, Any]) -> dict[str, Any]:
        # Field errors: {"prompt": ["..."]}, nested ones as objects or lists of objects.
        schema["additionalProperties"] = {"anyOf": [{"type": "array"}, {"type": "object"}]}
        schema["description"] = (
            '`{"detail": ..., "code": ...}`, or for invalid input the field errors '
            '(`{"field": ["message", ...]}`, nested for nested fields).'
        )
        return schema


DESCRIPTIONS = {
    400: "Invalid input: field errors, malformed JSON, or a body over a limit.",
    401: "No or invalid credentials (Authorization: Bearer <API key>).",
    403: "The role lacks the permission, or the masterplan is outside the key's set.",
    404: "No such resource (or it expired).",
    406: "The Accept header asks for something other than JSON.",
    409: "A request with this Idempotency-Key is still running; retry after Retry-After seconds.",
    415: "The body is not JSON (Content-Type: application/json).",
    422: "This Idempotency-Key was used with a different request body.",
    429: "Rate limited; retry after Retry-After seconds.",
    502: "The LLM provider answered with an error.",
    503: "Redis, the broker or the database is unavailable; retry after Retry-After seconds.",
    504: "The LLM provider did not answer in time.",
}
# Every authenticated route can answer these.
COMMON = (401, 403, 406, 429, 503)
# Routes with a JSON body, or with validated query parameters.
BODY = (400, 415)
IDEMPOTENT = (409, 422)
PROVIDER = (502, 504)


def errors(*codes: int) -> dict[int, OpenApiResponse]:
    """Documented error responses for ``codes`` (plus :data:`COMMON`), all with the shared error body."""
    return {
        code: OpenApiResponse(ErrorSerializer, description=DESCRIPTIONS[code]) for code in sorted({*COMMON, *codes})
    }


RETRY_AFTER = OpenApiParameter(
    "Retry-After",
    OpenApiTypes.INT,
    OpenApiParameter.HEADER,
    response=[409, 429, 503],
    description="Seconds to wait before retrying.",
)
# Printable ASCII without leading or trailing space (HTTP servers strip those from header values).
IDEMPOTENCY_KEY_PATTERN = r"^[!-~]([ -~]*[!-~])?$"
IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key",
    {"type": "string", "minLength": 1, "maxLength": MAX_KEY_CHARS, "pattern": IDEMPOTENCY_KEY_PATTERN},
    OpenApiParameter.HEADER,
    required=False,
    description=(
        "Optional. A retry with the same key and body gets the first response, and no second piece of work "
        "is done; the same key with another body is a 422. Keys are kept 24 h, per route and caller. "
        "Printable ASCII, no leading or trailing space."
    ),
)
IDEMPOTENT_REPLAYED = OpenApiParameter(
    "Idempotent-Replayed",
    {"type": "string", "enum": ["true"]},
    OpenApiParameter.HEADER,
    response=[200, 202],
    description="Present on a replayed response (the first response to this Idempotency-Key).",
)


class V2AutoSchema(AutoSchema):
    """Closed request objects for strict serializers, and each serializer's own refinements."""

    def _get_request_body(self, direction: Any = "request") -> dict[str, Any] | None:
        body: dict[str, Any] | None = super()._get_request_body(direction)
        if body is not None and self.method == "POST":
            body["required"] = True  # every v2 POST needs its JSON object, even when no field is required alone
        return body

    def _insert_field_validators(self, field: Any, schema: dict[str, Any]) -> None:
        super()._insert_field_validators(field, schema)
        if isinstance(field, StrictCharField) and "oneOf" in schema:
            # A blank-allowed string with a pattern: the pattern already admits "" (the generator
            # adds a second "maxLength: 0" branch, and "" would match both branches of oneOf).
            schema.update(schema.pop("oneOf")[0])

    def _map_basic_serializer(self, serializer: Any, direction: Any) -> dict[str, Any]:
        schema: dict[str, Any] = super()._map_basic_serializer(serializer, direction)
        if direction == "request" and isinstance(serializer, StrictSerializer):
            schema["additionalProperties"] = False
        refine = getattr(serializer, "refine_schema", None)
        return refine(schema) if refine is not None else schema

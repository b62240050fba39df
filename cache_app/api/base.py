"""The base of every v2 view: counters published before answering, Idempotency-Key, the schema class."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import status
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from cache_app.api.schema import IDEMPOTENCY_KEY_PATTERN, V2AutoSchema
from cache_app.idempotency import (
    MAX_KEY_CHARS,
    IdempotencyConflictError,
    IdempotencyInProgressError,
    IdempotencyStore,
    body_digest,
    check_key,
)
from cache_app.models import PipelineAPIKey

IDEMPOTENCY_HEADER = "Idempotency-Key"
_KEY = re.compile(IDEMPOTENCY_KEY_PATTERN)


class IdempotencyKeyReused(APIException):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    default_detail = "This Idempotency-Key was already used with a different request body."
    default_code = "idempotency_key_reused"


class IdempotencyKeyInProgress(APIException):
    status_code = status.HTTP_409_CONFLICT
    default_detail = "A request with this Idempotency-Key is still in progress; retry later."
    default_code = "idempotency_key_in_progress"

    def __init__(self, wait: float) -> None:
        super().__init__()
        self.wait = max(1, round(wait))  # DRF's handler turns this into Retry-After


class V2View(APIView):
    """Every v2 view: parse, call one function, report.

    Statistics counters are buffered per process and published within ``COUNTER_FLUSH_SECONDS``
    (cache_app.core.counters), not per request: a flush per request was a round trip on every
    hit, a quarter of the hits' throughput under load.
    """

    schema = V2AutoSchema()


def _check_key(key: str) -> None:
    """The schema's rule for a key (printable ASCII, no outer spaces, at most 255 characters), else a 400."""
    try:
        check_key(key)
        if not _KEY.match(key):
            raise ValueError(key)
    except ValueError:
        message = f"1 to {MAX_KEY_CHARS} printable ASCII characters, without leading or trailing spaces."
        raise ValidationError({IDEMPOTENCY_HEADER: [message]})


@contextmanager
def model_errors() -> Iterator[None]:
    """A model's own validation (Django's ValidationError) as a 400 with its field errors."""
    try:
        yield
    except DjangoValidationError as exc:
        raise ValidationError(exc.message_dict if hasattr(exc, "error_dict") else {"non_field_errors": exc.messages})


def caller_ident(request: Request) -> str:
    """The caller, as throttles count it: the API key, else the user."""
    if isinstance(request.auth, PipelineAPIKey):
        return f"key:{request.auth.prefix}"
    return f"user:{request.user.pk}"


def idempotent(request: Request, route: str, work: Callable[[], tuple[int, Any]]) -> Response:
    """``work()`` -> (status, body) as a response, run at most once per ``Idempotency-Key`` (if sent).

    A replay returns the first response with ``Idempotent-Replayed: true``. A bad key is a 400,
    a key reused with another body a 422, a key whose first request is still running a 409.
    """
    key = request.headers.get(IDEMPOTENCY_HEADER)
    if key is None:
        code, body = work()
        return Response(body, status=code)
    _check_key(key)

    def recorded() -> dict[str, Any]:
        code, body = work()
        return {"status": code, "body": body}

    try:
        result = IdempotencyStore().run(
            key, body_digest(request.data), recorded, scope=f"{route}|{caller_ident(request)}"
        )
    except IdempotencyConflictError:
        raise IdempotencyKeyReused()
    except IdempotencyInProgressError as exc:
        raise IdempotencyKeyInProgress(exc.retry_after)
    response = Response(result.value["body"], status=result.value["status"])
    if result.replayed:
        response["Idempotent-Replayed"] = "true"
    return response

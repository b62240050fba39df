"""JSON errors, always, on API routes.

* :func:`api_exception_handler` (REST_FRAMEWORK's EXCEPTION_HANDLER) maps what a
  dependency raises to an HTTP answer: Redis or the broker down -> 503 with
  ``Retry-After``; Postgres down -> 503; a provider error -> 502; a provider timeout ->
  504; anything unexpected -> a logged JSON 500. Bodies never carry addresses or
  exception text: ``{"detail": ..., "code": ...}``.
* :class:`JSONErrorMiddleware` and the ``handler4xx/500`` views do the same for what
  happens outside DRF (an unknown ``/api/`` path, an oversized form body, a crash in
  middleware): an API path never gets an HTML page.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.db import InterfaceError as DatabaseInterfaceError
from django.db import OperationalError as DatabaseOperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import status
from rest_framework.exceptions import APIException, ParseError
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from cache_app.core.cluster import FAILOVER_ERRORS
from cache_app.core.layer import CacheUnavailableError
from cache_app.core.taskopts import BrokerUnavailableError

logger = logging.getLogger(__name__)

# Paths whose errors are JSON. (/api/docs/ is an HTML page when it succeeds: the Swagger UI.)
API_PREFIXES = ("/api/", "/healthz", "/metrics")
DOCS_PATH = "/api/docs/"
RETRY_AFTER_SECONDS = 5


class ServiceUnavailable(APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "A dependency is unavailable; retry later."
    default_code = "service_unavailable"
    wait = RETRY_AFTER_SECONDS  # DRF's handler turns this into Retry-After


class BadGateway(APIException):
    status_code = status.HTTP_502_BAD_GATEWAY
    default_detail = "The LLM provider answered with an error."
    default_code = "bad_gateway"


class GatewayTimeout(APIException):
    status_code = status.HTTP_504_GATEWAY_TIMEOUT
    default_detail = "The LLM provider did not answer in time."
    default_code = "gateway_timeout"


def _sdk_errors(*names: str) -> tuple[type[BaseException], ...]:
    found: list[type[BaseException]] = []
    for module_name in ("anthropic", "openai"):
        module = sys.modules.get(module_name)
        if module is None:
            try:
                module = __import__(module_name)
            except ImportError:  # pragma: no cover - both are pinned
                continue
        for name in names:
            error = getattr(module, name, None)
            if isinstance(error, type) and issubclass(error, BaseException):
                found.append(error)
    return tuple(found)


def _broker_errors() -> tuple[type[BaseException], ...]:
    from kombu.exceptions import OperationalError as KombuOperationalError

    return (KombuOperationalError,)


def translate(exc: BaseException) -> BaseException:
    """The APIException a dependency's error stands for, or ``exc`` itself."""
    if isinstance(exc, APIException):
        return exc
    if isinstance(exc, RequestDataTooBig):
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        return ParseError(f"The request body is larger than the limit of {limit} bytes.")
    if isinstance(exc, SuspiciousOperation):
        return ParseError("Bad request.")
    if isinstance(exc, (DatabaseOperationalError, DatabaseInterfaceError)):
        return ServiceUnavailable("The database is unavailable; retry later.")
    # FAILOVER_ERRORS include a failover still in progress past the callers' retries.
    if isinstance(exc, (CacheUnavailableError, *FAILOVER_ERRORS)):
        return ServiceUnavailable("Redis is unavailable; retry later.")
    if isinstance(exc, (BrokerUnavailableError, *_broker_errors())):
        return ServiceUnavailable("The task broker is unavailable; retry later.")
    if isinstance(exc, (TimeoutError, *_sdk_errors("APITimeoutError"))):
        return GatewayTimeout()
    if isinstance(exc, _sdk_errors("APIError")) or _is_provider_failure(exc):
        return BadGateway()
    return exc


def _is_provider_failure(exc: BaseException) -> bool:
    from cache_app.llm.singleflight import LeaderFailedError

    return isinstance(exc, LeaderFailedError)


def api_exception_handler(exc: Exception, context: dict[str, Any]) -> Response:
    """REST_FRAMEWORK['EXCEPTION_HANDLER']: every error as JSON ``{"detail", "code"}`` (or field errors)."""
    translated = translate(exc)
    if translated is not exc:
        logger.warning("API request failed: %s: %s", type(exc).__name__, exc)
    response = drf_exception_handler(translated, context)  # type: ignore[arg-type]
    if response is None:
        view = context.get("view")
        logger.error("Unhandled error in %s", type(view).__name__, exc_info=exc)
        return Response({"detail": "Internal server error.", "code": "server_error"}, status=500)
    if isinstance(translated, APIException) and isinstance(response.data, dict) and "detail" in response.data:
        codes = translated.get_codes()
        response.data["code"] = codes if isinstance(codes, str) else translated.default_code
    return response


# --- outside DRF -------------------------------------------------------------------------------


def is_api_path(path: str) -> bool:
    return path.startswith(API_PREFIXES)


def json_error(status_code: int, detail: str, code: str, *, retry_after: int | None = None) -> JsonResponse:
    response = JsonResponse({"detail": detail, "code": code}, status=status_code)
    if retry_after is not None:
        response["Retry-After"] = str(retry_after)
    return response


def response_for_exception(exc: BaseException) -> JsonResponse:
    translated = translate(exc)
    if isinstance(translated, APIException):
        wait = getattr(translated, "wait", None)
        return json_error(
            translated.status_code,
            str(translated.detail),
            translated.default_code,
            retry_after=int(wait) if wait else None,
        )
    return json_error(500, "Internal server error.", "server_error")


class JSONErrorMiddleware:
    """On API paths, turn any HTML error page (Django's 404/500, a debug page) into JSON."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if response.status_code >= 400 and is_api_path(request.path) and _is_html(response):
            detail = _reason(response)
            if request.path.startswith(DOCS_PATH) and response.status_code in (401, 403):
                detail = "Log in at /admin/ first, or send Authorization: Bearer <API key>."
            converted = json_error(response.status_code, detail, "error")
            for header in ("WWW-Authenticate", "Retry-After"):
                if header in response:
                    converted[header] = response[header]
            return converted
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not is_api_path(request.path):
            return None
        logger.error("Unhandled error on %s", request.path, exc_info=exception)
        return response_for_exception(exception)


def _is_html(response: HttpResponse) -> bool:
    return response.get("Content-Type", "").startswith("text/html")


def _reason(response: HttpResponse) -> str:
    return getattr(response, "reason_phrase", "") or "Error"


# handler400/403/404/500 (mgecache_site.urls): JSON on API paths, Django's pages elsewhere.
def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    if is_api_path(request.path):
        return json_error(400, "Bad request.", "bad_request")
    return defaults.bad_request(request, exception)


def permission_denied(request: HttpRequest, exception: Exception) -> HttpResponse:
    if is_api_path(request.path):
        return json_error(403, "You do not have permission to perform this action.", "permission_denied")
    return defaults.permission_denied(request, exception)


def page_not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if is_api_path(request.path):
        return json_error(404, "Not found.", "not_found")
    return defaults.page_not_found(request, exception)


def server_error(request: HttpRequest) -> HttpResponse:
    if is_api_path(request.path):
        exc = sys.exc_info()[1]
        return (
            response_for_exception(exc)
            if exc is not None
            else json_error(500, "Internal server error.", "server_error")
        )
    return defaults.server_error(request)

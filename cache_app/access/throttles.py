"""DRF scoped throttles on the shared Django cache (Redis), counted per API key (else user, else IP).

Rates are ``MGECACHE['THROTTLE_RATES']``; over a rate DRF answers 429 with ``Retry-After``.
The history is DRF's sliding window (a list of timestamps in one cache entry): concurrent
requests may overshoot a rate slightly, never by much. If Redis is down the throttle lets
requests through (the Django cache ignores its errors), like the caches themselves.
"""

from __future__ import annotations

from typing import Any

from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from cache_app.core import conf
from cache_app.models import PipelineAPIKey


class MgecacheThrottle(SimpleRateThrottle):
    scope = ""

    def get_rate(self) -> str:
        return conf.get("THROTTLE_RATES")[self.scope]

    def get_cache_key(self, request: Request, view: Any) -> str:
        if isinstance(request.auth, PipelineAPIKey):
            ident = f"key:{request.auth.prefix}"
        elif request.user and request.user.is_authenticated:
            ident = f"user:{request.user.pk}"
        else:
            ident = f"ip:{self.get_ident(request)}"
        return f"{conf.get('KEY_PREFIX')}:throttle:{self.scope}:{ident}"


class GenerateThrottle(MgecacheThrottle):
    """Generation, retrieval and waves."""

    scope = "generate"


class ReadThrottle(MgecacheThrottle):
    """Statistics and wave results."""

    scope = "read"


class InvalidateThrottle(MgecacheThrottle):
    scope = "invalidate"

"""Who is calling, what they may touch, and how often: the gateway's one access-control seam.

* :func:`authenticate` takes the bearer token (``Authorization: Bearer <key>``, or the
  ``x-api-key`` header the Anthropic SDK has used) and resolves it to a :class:`GatewayCaller`.
  The key is an mgecache API key (``manage.py create_api_key`` or the admin): its user's role
  must allow the pipeline (``cache_app.use_pipeline``), and a restricted key carries its
  masterplans.
* :func:`check_scope` refuses a masterplan outside the caller's scope (403).
* :func:`throttle` applies :class:`GatewayThrottle`, a DRF throttle (a sliding-window counter) with scope
  ``gateway`` and rate ``MGECACHE['GATEWAY_THROTTLE_RATE']`` per user (429 with Retry-After).

Every refusal is a :class:`~cache_app.gateway.errors.GatewayError`, rendered by the view in
the provider's error format.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, cast

from django.http import HttpRequest

from cache_app.access.throttles import CounterRateThrottle
from cache_app.core import conf
from cache_app.gateway.errors import GatewayError, Kind

MAX_KEY_LENGTH = 256  # longer than any key we issue; bounds the lookup


@dataclass(frozen=True)
class GatewayCaller:
    user: Any
    # Canonical masterplan ids the caller may use; None means every masterplan (and the global scope).
    allowed_masterplans: frozenset[str] | None = None


def bearer_key(request: HttpRequest) -> str | None:
    """The API key the client sent: ``Authorization: Bearer <key>``, else ``x-api-key``."""
    authorization = request.headers.get("Authorization", "")
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    api_key = request.headers.get("X-Api-Key", "").strip()
    return api_key or None


def authenticate(request: HttpRequest) -> GatewayCaller:
    """The caller of ``request``: a 401 GatewayError without a live key, a 403 one without the pipeline role."""
    from rest_framework.exceptions import AuthenticationFailed

    from cache_app.access.authentication import resolve_api_key
    from cache_app.access.roles import USE_PIPELINE

    key = bearer_key(request)
    if key is None:
        raise GatewayError(
            Kind.AUTHENTICATION,
            "Missing API key: send 'Authorization: Bearer <key>' (or 'x-api-key: <key>').",
            code="missing_api_key",
        )
    if len(key) > MAX_KEY_LENGTH:
        raise GatewayError(Kind.AUTHENTICATION, "Invalid API key.", code="invalid_api_key")
    try:
        api_key = resolve_api_key(key)
    except AuthenticationFailed as exc:
        raise GatewayError(Kind.AUTHENTICATION, str(exc.detail), code="invalid_api_key") from None
    if not api_key.user.has_perm(USE_PIPELINE):
        raise GatewayError(Kind.PERMISSION, "This API key's role may not use the pipeline.", code="permission_denied")
    return GatewayCaller(user=api_key.user, allowed_masterplans=api_key.allowed_masterplans())


def check_scope(caller: GatewayCaller, masterplan_id: str | None) -> None:
    """Raise a 403 GatewayError if ``masterplan_id`` (canonical, None = global) is outside the caller's scope."""
    allowed = caller.allowed_masterplans
    if allowed is None:
        return
    if masterplan_id is None:
        raise GatewayError(
            Kind.PERMISSION,
            "This API key is restricted to masterplans: send the X-Mgecache-Masterplan header.",
            code="masterplan_required",
        )
    if masterplan_id not in allowed:
        raise GatewayError(
            Kind.PERMISSION,
            f"This API key may not use masterplan {masterplan_id}.",
            code="masterplan_forbidden",
        )


class GatewayThrottle(CounterRateThrottle):
    """Requests per user through the gateway, counted in Redis (cache_app.access.throttles)."""

    scope = "gateway"

    def get_rate(self) -> str | None:
        return conf.get("GATEWAY_THROTTLE_RATE")

    def ident(self, request: Any, view: Any) -> str | None:
        user = getattr(request, "user", None)
        return None if user is None or user.pk is None else f"user:{user.pk}"


class _Throttled:
    """The minimal request a DRF throttle reads: the authenticated user."""

    def __init__(self, caller: GatewayCaller) -> None:
        self.user = caller.user


def throttle(caller: GatewayCaller) -> None:
    """Count one request of ``caller``; raise a 429 GatewayError (with Retry-After) over the rate."""
    limiter = GatewayThrottle()
    # DRF's throttle reads only request.user and ignores the view.
    if limiter.allow_request(cast(Any, _Throttled(caller)), cast(Any, None)):
        return
    wait = limiter.wait()
    retry_after = max(1, math.ceil(wait)) if wait is not None else 1
    raise GatewayError(
        Kind.RATE_LIMIT,
        f"Rate limit exceeded ({limiter.rate}); retry in {retry_after} s.",
        code="rate_limit_exceeded",
        headers={"Retry-After": str(retry_after)},
    )

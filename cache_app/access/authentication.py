"""``Authorization: Bearer <key>``: an API key stands for its user (and may narrow the masterplans)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, cast

from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request

from cache_app.core import conf
from cache_app.models import PipelineAPIKey

KEYWORD = "Bearer"
_MAX_KEY_CHARS = 200  # generated keys are 41 characters


def bearer_token(request: Any) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None when there is none."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    keyword, _, token = header.partition(" ")
    if keyword.lower() != KEYWORD.lower():
        return None
    return token.strip()


def resolve_api_key(token: str) -> PipelineAPIKey:
    """The live key ``token`` names (stamped as used), else AuthenticationFailed: unknown, revoked,
    expired, or its user inactive. Shared by the API's authentication and the gateway."""
    if not token or len(token) > _MAX_KEY_CHARS:
        raise exceptions.AuthenticationFailed("Invalid API key.")
    try:
        key = cast(PipelineAPIKey, PipelineAPIKey.objects.get_from_key(token))
    except PipelineAPIKey.DoesNotExist:
        raise exceptions.AuthenticationFailed("Invalid API key.")
    if key.has_expired:
        raise exceptions.AuthenticationFailed("This API key has expired.")
    if not key.user.is_active:
        raise exceptions.AuthenticationFailed("The API key's user is inactive.")
    _stamp_last_used(key)
    return key


class APIKeyAuthentication(BaseAuthentication):
    """Authenticates a :class:`PipelineAPIKey`; ``request.auth`` is the key, ``request.user`` its user.

    No Bearer header: not this scheme (the session may still authenticate). A Bearer header
    with an unknown, revoked or expired key, or one whose user is inactive: 401.
    """

    def authenticate(self, request: Request) -> tuple[Any, PipelineAPIKey] | None:
        token = bearer_token(request)
        if token is None:
            return None
        key = resolve_api_key(token)
        return key.user, key

    def authenticate_header(self, request: Request) -> str:
        # Makes DRF answer 401 (not 403) to a request without credentials.
        return f'{KEYWORD} realm="api"'


def _stamp_last_used(key: PipelineAPIKey) -> None:
    """One UPDATE per key per resolution period, not one per request."""
    now = timezone.now()
    resolution = timedelta(seconds=int(conf.get("API_KEY_LAST_USED_RESOLUTION_SECONDS")))
    if key.last_used_at is not None and now - key.last_used_at < resolution:
        return
    PipelineAPIKey.objects.filter(pk=key.pk).update(last_used_at=now)
    key.last_used_at = now

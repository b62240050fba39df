"""``Authorization: Bearer <key>``: an API key stands for its user (and may narrow the masterplans)."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any, cast

from django.utils import timezone
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request

from cache_app.core import conf
from cache_app.core.lru import LRU
from cache_app.core.state import process_wide
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


class ResolvedKeys:
    """API keys resolved in the last ``API_KEY_CACHE_SECONDS``, by the SHA-256 of their token.

    Resolving a key costs four queries (the key, its user, the user's permissions, its
    masterplans): most of a cached answer's server time. A resolved key is kept with its user
    (whose permission cache Django fills on first use) and its masterplans for a few seconds.
    A change to a key, a user, a group or a permission in this process forgets every entry at
    once (``cache_app.signals``); other processes see it within ``API_KEY_CACHE_SECONDS``.
    Unknown tokens are never kept. At most ``MAX_ENTRIES`` keys, least recently used out first.
    """

    MAX_ENTRIES = 4096  # live keys in use at once; each entry is a few KB

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        # Read at every put: MAX_ENTRIES may be set per instance (tests do).
        self._entries: LRU[str, tuple[float, PipelineAPIKey]] = LRU(lambda: self.MAX_ENTRIES)
        self._lock = threading.Lock()

    @staticmethod
    def _digest(token: str) -> str:
        return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()

    def get(self, token: str) -> PipelineAPIKey | None:
        digest = self._digest(token)
        with self._lock:
            entry = self._entries.get(digest)
            if entry is None:
                return None
            if entry[0] <= self._clock():
                self._entries.pop(digest)
                return None
            return entry[1]

    def put(self, token: str, key: PipelineAPIKey, seconds: float) -> None:
        with self._lock:
            # touch=False, as the plain assignment before: a key two threads resolve at once keeps its place.
            self._entries.put(self._digest(token), (self._clock() + seconds, key), touch=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


@process_wide
def get_resolved_keys() -> ResolvedKeys:
    return ResolvedKeys()


def _load_api_key(token: str) -> PipelineAPIKey:
    try:
        key = cast(PipelineAPIKey, PipelineAPIKey.objects.get_from_key(token))
    except PipelineAPIKey.DoesNotExist:
        raise exceptions.AuthenticationFailed("Invalid API key.")
    if not key.user.is_active:
        raise exceptions.AuthenticationFailed("The API key's user is inactive.")
    key.user.get_all_permissions()  # fills the user's permission cache, kept with the key
    key.allowed_masterplans()  # memoized on the key
    return key


def resolve_api_key(token: str) -> PipelineAPIKey:
    """The live key ``token`` names (stamped as used), else AuthenticationFailed: unknown, revoked,
    expired, or its user inactive. Shared by the API's authentication and the gateway."""
    if not token or len(token) > _MAX_KEY_CHARS:
        raise exceptions.AuthenticationFailed("Invalid API key.")
    seconds = float(conf.get("API_KEY_CACHE_SECONDS"))
    resolved = get_resolved_keys()
    key = resolved.get(token) if seconds > 0 else None
    if key is None:
        key = _load_api_key(token)
        if seconds > 0:
            resolved.put(token, key, seconds)
    if key.has_expired:  # checked on every use: an expiry needs no query
        raise exceptions.AuthenticationFailed("This API key has expired.")
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

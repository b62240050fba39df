"""Masterplan scope: a restricted API key may only touch its masterplans, never the global scope.

Callers: every view that reads or writes something of a masterplan (or of the global
scope, ``masterplan_id`` None) calls :func:`check_masterplan_scope` once per masterplan.
Unrestricted keys and session users may use every masterplan their role allows.
"""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request

from cache_app.core import keys
from cache_app.models import PipelineAPIKey

_UNSET = object()


def allowed_masterplans(request: Request) -> frozenset[str] | None:
    """None when the caller is not restricted, else the canonical UUIDs it may use (memoised per request)."""
    cached = getattr(request, "_mgecache_allowed_masterplans", _UNSET)
    if cached is not _UNSET:
        return cached  # type: ignore[return-value]
    key = request.auth if isinstance(request.auth, PipelineAPIKey) else None
    allowed = None if key is None else key.allowed_masterplans()
    request._mgecache_allowed_masterplans = allowed  # type: ignore[attr-defined]
    return allowed


def check_masterplan_scope(request: Request, masterplan_id: Any) -> str | None:
    """The canonical masterplan id (None: the global scope), or 403 when the caller may not use it.

    ``masterplan_id`` must already be validated as a UUID (or None) by a serializer.
    """
    normalized = keys.normalize_masterplan_id(masterplan_id)
    allowed = allowed_masterplans(request)
    if allowed is None:
        return normalized
    if normalized is None:
        raise PermissionDenied(
            "This API key is restricted to its masterplans: the global scope (no masterplan_id) is not allowed."
        )
    if normalized not in allowed:
        raise PermissionDenied(f"This API key may not use masterplan {normalized}.")
    return normalized

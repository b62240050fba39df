"""DRF permission classes. Every view declares one; the project default denies.

Unauthenticated callers get 401 (the Bearer scheme is announced), authenticated callers
without the permission 403. Masterplan scope is checked separately, per masterplan, by
:func:`cache_app.access.scope.check_masterplan_scope`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from rest_framework.exceptions import PermissionDenied
from rest_framework.permissions import AllowAny, BasePermission
from rest_framework.request import Request

from cache_app.access import roles

__all__ = [
    "AllowAny",
    "CanInvalidate",
    "CanReadStatistics",
    "CanTunePolicy",
    "CanUsePipeline",
    "CanViewAllStatistics",
    "DenyAll",
    "HasPermissions",
    "IsAuthenticated",
    "has_permission",
    "require_permission",
]


class DenyAll(BasePermission):
    """The project default (REST_FRAMEWORK's DEFAULT_PERMISSION_CLASSES): a view that declares nothing is closed."""

    message = "This endpoint declares no access rule."

    def has_permission(self, request: Request, view: Any) -> bool:
        return False


class HasPermissions(BasePermission):
    """Authenticated, active, and holding every permission in ``required`` (any of ``any_of``, if set)."""

    required: ClassVar[tuple[str, ...]] = ()
    any_of: ClassVar[tuple[str, ...]] = ()

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        if not (user and user.is_authenticated and user.is_active):
            return False
        if self.any_of and not any(user.has_perm(perm) for perm in self.any_of):
            return False
        return user.has_perms(self.required)


class IsAuthenticated(HasPermissions):
    """Any authenticated, active user (the schema and its docs)."""


class CanUsePipeline(HasPermissions):
    required = (roles.USE_PIPELINE,)


class CanInvalidate(HasPermissions):
    required = (roles.INVALIDATE_CACHE,)


class CanTunePolicy(HasPermissions):
    required = (roles.TUNE_POLICY,)


class CanViewAllStatistics(HasPermissions):
    required = (roles.VIEW_ALL_STATISTICS,)


class CanReadStatistics(HasPermissions):
    """The pipeline (its masterplans' figures) or an operator (everything)."""

    any_of = (roles.USE_PIPELINE, roles.VIEW_ALL_STATISTICS)


def has_permission(request: Request, perm: str) -> bool:
    user = request.user
    return bool(user and user.is_authenticated and user.has_perm(perm))


def require_permission(request: Request, perm: str, message: str | None = None) -> None:
    """403 unless the caller holds ``perm`` (for rules that depend on the request's content)."""
    if not has_permission(request, perm):
        raise PermissionDenied(message or f"This needs the permission {perm}.")

"""Admin for API keys: created here (the key is shown once), named, scoped, expiring, revocable."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from rest_framework_api_key.admin import APIKeyModelAdmin
from rest_framework_api_key.models import APIKey

from cache_app.models import PipelineAPIKey

# The library's own key model is installed but unused: keys here belong to a user.
if admin.site.is_registered(APIKey):
    admin.site.unregister(APIKey)


@admin.register(PipelineAPIKey)
class PipelineAPIKeyAdmin(APIKeyModelAdmin):
    list_display: tuple[str, ...] = (  # type: ignore[assignment]
        "prefix",
        "name",
        "user",
        "restricted",
        "created",
        "expiry_date",
        "_has_expired",
        "revoked",
        "last_used_at",
    )
    list_filter = ("revoked", "restricted", "created")  # type: ignore[assignment]
    list_select_related = ("user",)
    search_fields = ("name", "prefix", "user__username")  # type: ignore[assignment]
    autocomplete_fields = ("user",)
    filter_horizontal = ("masterplans",)
    fields = ("name", "user", "expiry_date", "restricted", "masterplans", "revoked", "prefix", "last_used_at")
    actions = ["revoke"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple[str, ...]:
        fields = (*super().get_readonly_fields(request, obj), "last_used_at")
        if obj is not None:
            fields = (*fields, "user")  # a key never changes hands
        return fields

    @admin.action(description="Revoke the selected API keys (cannot be undone)", permissions=["change"])
    def revoke(self, request: HttpRequest, queryset: Any) -> None:
        count = queryset.filter(revoked=False).update(revoked=True)
        self.message_user(request, f"Revoked {count} API key(s).")

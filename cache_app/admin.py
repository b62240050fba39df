from __future__ import annotations

from typing import Any
from uuid import UUID

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import QuerySet
from django.forms import ModelForm
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join

from cache_app import actions
from cache_app.access import admin as access_admin  # noqa: F401  (registers the API key admin)
from cache_app.access import roles
from cache_app.models import (
    BatchPolicy,
    CachePolicy,
    Document,
    InvalidationAudit,
    Masterplan,
    ModelPricing,
    PolicyChangeAudit,
    SimilarityShadowRecord,
)
from cache_app.rag.documents import embed_document
from cache_app.statistics import cache_statistics


@admin.register(Masterplan)
class MasterplanAdmin(admin.ModelAdmin):
    list_display = ("name", "id", "status", "created_at", "updated_at", "statistics_link")
    list_filter = ("status",)
    search_fields = ("name", "id")
    readonly_fields = ("created_at", "updated_at")
    actions = ["invalidate_cached_answers"]

    @admin.display(description="Statistics")
    def statistics_link(self, obj: Masterplan) -> str:
        url = reverse("admin:cache_app_masterplan_statistics", args=[obj.pk])
        return format_html('<a href="{}">view</a>', url)

    def has_invalidate_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(roles.INVALIDATE_CACHE)

    @admin.action(description="Invalidate cached LLM and RAG answers", permissions=["invalidate"])
    def invalidate_cached_answers(self, request: HttpRequest, queryset: QuerySet[Masterplan]) -> HttpResponse | None:
        # Destructive: the first submission shows a confirmation page, like "delete selected".
        if request.POST.get("post") != "yes":
            context = {
                **self.admin_site.each_context(request),
                "title": "Invalidate cached answers?",
                "masterplans": [(mp, _stored_entries(mp.pk)) for mp in queryset],
                "queryset": queryset,
                "opts": self.model._meta,
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
                "action_name": "invalidate_cached_answers",
                "media": self.media,
            }
            return TemplateResponse(request, "admin/cache_app/masterplan/invalidate_confirmation.html", context)
        # The audited operation: a row per masterplan, the work in Celery after commit.
        audits = [
            actions.request_invalidation(source="admin", masterplan_id=mp.pk, actor=request.user) for mp in queryset
        ]
        links = format_html_join(
            ", ",
            '<a href="{}">{}</a>',
            ((reverse("admin:cache_app_invalidationaudit_change", args=[a.pk]), a.masterplan_id) for a in audits),
        )
        self.message_user(
            request, format_html("Invalidation of {} masterplan(s) started: {}.", len(audits), links), messages.SUCCESS
        )
        return None

    def get_urls(self) -> list[URLPattern]:
        custom = [
            path(
                "statistics/",
                self.admin_site.admin_view(self.statistics_view),
                name="cache_app_masterplan_statistics_all",
            ),
            path(
                "<uuid:masterplan_id>/statistics/",
                self.admin_site.admin_view(self.statistics_view),
                name="cache_app_masterplan_statistics",
            ),
        ]
        return custom + super().get_urls()

    def statistics_view(self, request: HttpRequest, masterplan_id: UUID | None = None) -> HttpResponse:
        """Read-only: durable counters across every process."""
        if not (self.has_view_permission(request) and request.user.has_perm(roles.VIEW_ALL_STATISTICS)):
            from django.core.exceptions import PermissionDenied

            raise PermissionDenied
        masterplan = Masterplan.objects.filter(pk=masterplan_id).first() if masterplan_id else None
        context = {
            **self.admin_site.each_context(request),
            "title": f"Cache statistics: {masterplan}" if masterplan_id else "Cache statistics: all masterplans",
            "opts": self.model._meta,
            "masterplan": masterplan,
            "stats": cache_statistics(masterplan_id),
        }
        return TemplateResponse(request, "admin/cache_app/statistics.html", context)


@admin.register(CachePolicy)
class CachePolicyAdmin(admin.ModelAdmin):
    list_display = (
        "layer",
        "enabled",
        "ttl_seconds",
        "similarity_threshold",
        "cache_nonzero_temperature",
        "cache_truncated",
        "updated_at",
    )
    list_editable = ("enabled", "ttl_seconds", "similarity_threshold")
    readonly_fields = ("updated_at",)
    fieldsets = (
        (None, {"fields": ("layer", "enabled", "ttl_seconds", "notes")}),
        ("RAG", {"fields": ("similarity_threshold", "similarity_guard", "similarity_shadow")}),
        ("LLM store rules", {"fields": ("cache_nonzero_temperature", "cache_truncated")}),
        (None, {"fields": ("updated_at",)}),
    )

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Tuning a policy is an operator's act, whatever the model permissions say.
        return super().has_change_permission(request, obj) and request.user.has_perm(roles.TUNE_POLICY)

    def save_model(self, request: HttpRequest, obj: CachePolicy, form: ModelForm, change: bool) -> None:
        # The audited operation (old and new values recorded), with the same validation rules.
        _save_policy(request, obj, form, obj.layer)


@admin.register(BatchPolicy)
class BatchPolicyAdmin(admin.ModelAdmin):
    list_display = ("__str__", "enabled", "max_batch_size", "batch_window_ms", "updated_at")
    readonly_fields = ("updated_at",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        # A single row, seeded by migration.
        return not BatchPolicy.objects.exists()

    def has_delete_permission(self, request: HttpRequest, obj: BatchPolicy | None = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return super().has_change_permission(request, obj) and request.user.has_perm(roles.TUNE_POLICY)

    def save_model(self, request: HttpRequest, obj: BatchPolicy, form: ModelForm, change: bool) -> None:
        _save_policy(request, obj, form, "batching")


def _save_policy(request: HttpRequest, obj: CachePolicy | BatchPolicy, form: ModelForm, layer: str) -> None:
    changes = {name: form.cleaned_data[name] for name in form.changed_data if name in actions.POLICY_FIELDS[layer]}
    saved = actions.update_policy(layer, changes, source="admin", actor=request.user).policy
    obj.pk = saved.pk  # the admin logs and redirects to the row update_policy saved


def _stored_entries(masterplan_id: Any) -> dict[str, int] | None:
    try:
        return actions.count_entries(masterplan_id)
    except Exception:  # a preview must not block the confirmation page
        return None


class _ReadOnlyAuditAdmin(admin.ModelAdmin):
    """Audit rows are written by the operations only."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(InvalidationAudit)
class InvalidationAuditAdmin(_ReadOnlyAuditAdmin):
    list_display = (
        "requested_at",
        "actor_name",
        "source",
        "masterplan_id",
        "layers",
        "status",
        "keys_removed",
        "duration_seconds",
    )
    list_filter = ("status", "source", "actor_name")
    search_fields = ("masterplan_id", "actor_name")


@admin.register(PolicyChangeAudit)
class PolicyChangeAuditAdmin(_ReadOnlyAuditAdmin):
    list_display = ("changed_at", "actor_name", "source", "target", "old_values", "new_values")
    list_filter = ("target", "source", "actor_name")


@admin.register(ModelPricing)
class ModelPricingAdmin(admin.ModelAdmin):
    list_display = (
        "model",
        "provider",
        "input_usd_per_mtok",
        "output_usd_per_mtok",
        "max_output_tokens",
        "source",
        "updated_at",
    )
    list_filter = ("provider",)
    search_fields = ("model",)
    readonly_fields = ("updated_at",)


@admin.register(Document)
class DocumentAdmin(admin.ModelAdmin):
    list_display = ("__str__", "masterplan", "embedding_model", "updated_at")
    list_filter = ("embedding_model",)
    list_select_related = ("masterplan",)
    search_fields = ("content",)
    autocomplete_fields = ("masterplan",)
    fields = ("masterplan", "content", "metadata", "embedding_model", "created_at", "updated_at")
    readonly_fields = ("embedding_model", "created_at", "updated_at")

    def save_model(self, request: HttpRequest, obj: Document, form: ModelForm[Document], change: bool) -> None:
        embed_document(obj, content_changed=not change or "content" in form.changed_data)
        super().save_model(request, obj, form, change)


@admin.register(SimilarityShadowRecord)
class SimilarityShadowRecordAdmin(admin.ModelAdmin):
    """Read-only: similarity hits that shadow mode withheld (the newest first)."""

    list_display = ("created_at", "similarity", "query", "cached_query", "embedding_model", "scope")
    list_filter = ("embedding_model",)
    search_fields = ("query", "cached_query")
    date_hierarchy = "created_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

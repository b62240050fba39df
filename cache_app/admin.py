from __future__ import annotations

from typing import Any
from uuid import UUID

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.forms import ModelForm
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.timesince import timesince
from django.utils.timezone import localtime, now
from django.views.decorators.http import require_POST

from cache_app import actions
from cache_app.access import admin as access_admin  # noqa: F401  (registers the API key admin)
from cache_app.access import roles
from cache_app.console import charts, dashboard
from cache_app.console.figures import masterplan_figures
from cache_app.console.invalidation import count_removal
from cache_app.console.snapshots import take_snapshot_now
from cache_app.core.policies import get_policy_source
from cache_app.models import (
    BatchPolicy,
    CachePolicy,
    Document,
    InvalidationAudit,
    Masterplan,
    ModelPricing,
    PolicyChangeAudit,
    SimilarityShadowRecord,
    StatsSnapshot,
)
from cache_app.rag.documents import embed_document
from cache_app.statistics import cache_statistics

# The admin index shows the caches' state above the model list (templates/admin/console/).
admin.site.index_template = "admin/console/index.html"

# Admin actions that invalidate: (layers, what the message calls them).
INVALIDATIONS = {
    "invalidate_llm_cache": (("llm",), "the LLM cache"),
    "invalidate_rag_cache": (("rag",), "the RAG cache"),
    "invalidate_all_caches": (("llm", "rag"), "the LLM and RAG caches"),
}


class FiguresChangeList(ChangeList):
    """Attaches each row's cache figures, read for the whole page in one Redis round trip."""

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        self.console_figures = masterplan_figures(obj.pk for obj in self.result_list)
        for obj in self.result_list:
            obj.console_figures = self.console_figures.rows.get(str(obj.pk))


def _figure(obj: Masterplan, name: str) -> Any:
    figures = getattr(obj, "console_figures", None)
    return None if figures is None else getattr(figures, name)


@admin.register(Masterplan)
class MasterplanAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "short_id",
        "status",
        "llm_entries",
        "rag_entries",
        "hit_rate",
        "saved_usd",
        "last_activity",
        "statistics_link",
    )
    list_filter = ("status",)
    search_fields = ("name", "id")
    readonly_fields = ("created_at", "updated_at")
    actions = ["invalidate_llm_cache", "invalidate_rag_cache", "invalidate_all_caches"]

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return FiguresChangeList

    @admin.display(description="Id", ordering="id")
    def short_id(self, obj: Masterplan) -> str:
        return format_html('<code title="{}">{}&hellip;</code>', obj.pk, str(obj.pk)[:8])

    @admin.display(description="LLM entries")
    def llm_entries(self, obj: Masterplan) -> int | None:
        return _figure(obj, "llm_entries")

    @admin.display(description="RAG entries")
    def rag_entries(self, obj: Masterplan) -> int | None:
        return _figure(obj, "rag_entries")

    @admin.display(description="Hit rate")
    def hit_rate(self, obj: Masterplan) -> str | None:
        rate = _figure(obj, "hit_rate")
        return None if rate is None else f"{rate:.0%}"

    @admin.display(description="Saved (USD)")
    def saved_usd(self, obj: Masterplan) -> str | None:
        saved = _figure(obj, "saved_usd")
        return None if saved is None else charts.dollars(saved)

    @admin.display(description="Last activity")
    def last_activity(self, obj: Masterplan) -> str | None:
        when = _figure(obj, "last_activity")
        if when is None:
            return None
        ago = "just now" if (now() - when).total_seconds() < 60 else f"{timesince(when)} ago"
        return format_html('<span title="{}">{}</span>', f"{localtime(when):%Y-%m-%d %H:%M:%S %Z}", ago)

    @admin.display(description="Statistics")
    def statistics_link(self, obj: Masterplan) -> str:
        url = reverse("admin:cache_app_masterplan_statistics", args=[obj.pk])
        return format_html('<a href="{}">view</a>', url)

    def has_invalidate_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(roles.INVALIDATE_CACHE)

    @admin.action(description="Invalidate LLM cache", permissions=["invalidate"])
    def invalidate_llm_cache(self, request: HttpRequest, queryset: QuerySet[Masterplan]) -> HttpResponse | None:
        return self._invalidate(request, queryset, "invalidate_llm_cache")

    @admin.action(description="Invalidate RAG cache", permissions=["invalidate"])
    def invalidate_rag_cache(self, request: HttpRequest, queryset: QuerySet[Masterplan]) -> HttpResponse | None:
        return self._invalidate(request, queryset, "invalidate_rag_cache")

    @admin.action(description="Invalidate all caches", permissions=["invalidate"])
    def invalidate_all_caches(self, request: HttpRequest, queryset: QuerySet[Masterplan]) -> HttpResponse | None:
        return self._invalidate(request, queryset, "invalidate_all_caches")

    def _invalidate(
        self, request: HttpRequest, queryset: QuerySet[Masterplan], action_name: str
    ) -> HttpResponse | None:
        layers, what = INVALIDATIONS[action_name]
        # Destructive: the first submission shows what would go, like "delete selected".
        if request.POST.get("post") != "yes":
            return self._confirm_invalidation(request, queryset, action_name, layers, what)
        # The audited operation: a row per masterplan, the work in Celery after commit.
        audits = [
            actions.request_invalidation(source="admin", masterplan_id=mp.pk, layers=layers, actor=request.user)
            for mp in queryset
        ]
        links = format_html_join(
            ", ",
            '{} (<a href="{}">audit</a>)',
            (
                (mp.name, reverse("admin:cache_app_invalidationaudit_change", args=[audit.pk]))
                for mp, audit in zip(queryset, audits, strict=True)
            ),
        )
        self.message_user(
            request,
            format_html("Invalidating {} of {} masterplan(s): {}.", what, len(audits), links),
            messages.SUCCESS,
        )
        return None

    def _confirm_invalidation(
        self,
        request: HttpRequest,
        queryset: QuerySet[Masterplan],
        action_name: str,
        layers: tuple[str, ...],
        what: str,
    ) -> HttpResponse:
        context = {
            **self.admin_site.each_context(request),
            "title": f"Invalidate {what}?",
            "what": what,
            "removal": count_removal(list(queryset), layers),
            "queryset": queryset,
            "opts": self.model._meta,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "action_name": action_name,
            "select_across": request.POST.get("select_across", "0"),
            "media": self.media,
        }
        return TemplateResponse(request, "admin/cache_app/masterplan/invalidate_confirmation.html", context)

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

    # Tuning a policy is an operator's act: tune_policy decides, whatever the model permissions say.
    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return _may_tune(request)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return super().has_view_permission(request, obj) or _may_tune(request)

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
        return _may_tune(request)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return super().has_view_permission(request, obj) or _may_tune(request)

    def save_model(self, request: HttpRequest, obj: BatchPolicy, form: ModelForm, change: bool) -> None:
        _save_policy(request, obj, form, "batching")


def _save_policy(request: HttpRequest, obj: CachePolicy | BatchPolicy, form: ModelForm, layer: str) -> None:
    changes = {name: form.cleaned_data[name] for name in form.changed_data if name in actions.POLICY_FIELDS[layer]}
    saved = actions.update_policy(layer, changes, source="admin", actor=request.user).policy
    obj.pk = saved.pk  # the admin logs and redirects to the row update_policy saved


def _may_tune(request: HttpRequest) -> bool:
    return request.user.is_active and request.user.has_perm(roles.TUNE_POLICY)


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


@admin.register(StatsSnapshot)
class StatsSnapshotAdmin(admin.ModelAdmin):
    """Read-only snapshot rows, and the dashboard drawn from them."""

    list_display = (
        "taken_at",
        "llm_hits",
        "llm_misses",
        "rag_exact_hits",
        "rag_similar_hits",
        "saved_usd",
        "spent_usd",
    )
    date_hierarchy = "taken_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # written by the snapshot task

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # the retention cleanup deletes

    def get_urls(self) -> list[URLPattern]:
        custom = [
            path(
                "dashboard/", self.admin_site.admin_view(self.dashboard_view), name="cache_app_statssnapshot_dashboard"
            ),
            path(
                "snapshot-now/",
                self.admin_site.admin_view(require_POST(self.snapshot_now_view)),
                name="cache_app_statssnapshot_snapshot_now",
            ),
        ]
        return custom + super().get_urls()

    def dashboard_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        key = request.GET.get("range", dashboard.DEFAULT_RANGE)
        if key not in dashboard.RANGES:
            self.message_user(request, f"Unknown range {key[:20]!r}; showing the last 24 hours.", messages.WARNING)
            key = dashboard.DEFAULT_RANGE
        board = dashboard.build(dashboard.RANGES[key], threshold=get_policy_source().rag().similarity_threshold)
        context = {
            **self.admin_site.each_context(request),
            "title": "Cache dashboard",
            "opts": self.model._meta,
            "board": board,
            "ranges": dashboard.RANGES.values(),
        }
        return TemplateResponse(request, "admin/console/dashboard.html", context)

    def snapshot_now_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        snapshot = take_snapshot_now()
        if snapshot is None:
            self.message_user(
                request, "No snapshot: Redis is unreachable, or one was taken seconds ago.", messages.WARNING
            )
        else:
            self.message_user(request, f"Snapshot taken at {snapshot.taken_at:%H:%M:%S}.", messages.SUCCESS)
        url = reverse("admin:cache_app_statssnapshot_dashboard")
        return HttpResponseRedirect(f"{url}?range={request.POST.get('range', dashboard.DEFAULT_RANGE)[:8]}")

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from cache_app import actions
from cache_app.llm.cache import CacheUnavailableError
from cache_app.models import BatchPolicy, CachePolicy, Document, Masterplan, ModelPricing, SimilarityShadowRecord
from cache_app.rag.embedders import load_embedder
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

    @admin.action(description="Invalidate cached LLM and RAG answers", permissions=["change"])
    def invalidate_cached_answers(self, request: HttpRequest, queryset) -> HttpResponse | None:
        # Destructive: the first submission shows a confirmation page, like "delete selected".
        if request.POST.get("post") != "yes":
            context = {
                **self.admin_site.each_context(request),
                "title": "Invalidate cached answers?",
                "masterplans": list(queryset),
                "queryset": queryset,
                "opts": self.model._meta,
                "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
                "action_name": "invalidate_cached_answers",
                "media": self.media,
            }
            return TemplateResponse(request, "admin/cache_app/masterplan/invalidate_confirmation.html", context)
        done = 0
        for masterplan in queryset:
            try:
                actions.invalidate_masterplan(masterplan.pk)
            except CacheUnavailableError as exc:
                self.message_user(
                    request, f"{masterplan}: not invalidated, Redis is unavailable ({exc}).", messages.ERROR
                )
                continue
            done += 1
        if done:
            self.message_user(request, f"Invalidated the cached answers of {done} masterplan(s).", messages.SUCCESS)
        return None

    def get_urls(self):
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

    def statistics_view(self, request: HttpRequest, masterplan_id=None) -> HttpResponse:
        """Read-only: durable counters across every process."""
        if not self.has_view_permission(request):
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


@admin.register(BatchPolicy)
class BatchPolicyAdmin(admin.ModelAdmin):
    list_display = ("__str__", "enabled", "max_batch_size", "batch_window_ms", "updated_at")
    readonly_fields = ("updated_at",)

    def has_add_permission(self, request) -> bool:
        # A single row, seeded by migration.
        return not BatchPolicy.objects.exists()

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(ModelPricing)
class ModelPricingAdmin(admin.ModelAdmin):
    list_display = ("model", "provider", "input_usd_per_mtok", "output_usd_per_mtok", "source", "updated_at")
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

    def save_model(self, request, obj: Document, form, change: bool) -> None:
        # The vector follows the text: (re-)embed with the configured embedder when content changes.
        if not change or "content" in form.changed_data or not obj.embedding:
            embedder = load_embedder()
            obj.set_embedding(embedder.embed([obj.content])[0])
            obj.embedding_model = embedder.model_name
        super().save_model(request, obj, form, change)


@admin.register(SimilarityShadowRecord)
class SimilarityShadowRecordAdmin(admin.ModelAdmin):
    """Read-only: similarity hits that shadow mode withheld (the newest first)."""

    list_display = ("created_at", "similarity", "query", "cached_query", "embedding_model", "scope")
    list_filter = ("embedding_model",)
    search_fields = ("query", "cached_query")
    date_hierarchy = "created_at"

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
